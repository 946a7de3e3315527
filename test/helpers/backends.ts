// The backends the cross-backend tests run on (test/ops.test.ts, describe.each): the simulator always; CUDA
// with COMET_TEST_CUDA=1; WebGPU with COMET_TEST_WEBGPU=1. A backend that is asked for but cannot be created
// fails every test of its block (create() throws in beforeAll): it never skips.
import type { ActQuantSpec, Backend } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';

export interface BackendCase {
  name: string;
  create: () => Promise<Backend>;
}

export const backends: BackendCase[] = [{ name: 'sim', create: async () => new SimBackend() }];

if (process.env.COMET_TEST_CUDA === '1')
  backends.push({ name: 'cuda', create: async () => (await import('../../backends/cuda/cuda.ts')).createCudaBackend() });

if (process.env.COMET_TEST_WEBGPU === '1')
  backends.push({
    name: 'webgpu',
    // a path held in a variable: the module is the WebGPU work's and may not exist yet in this checkout
    create: async () => {
      const path = '../../backends/webgpu/webgpu.ts';
      const m = (await import(/* @vite-ignore */ path)) as { createWebGPUBackend: () => Promise<Backend> };
      return m.createWebGPUBackend();
    },
  });

export { kvLayerBytes } from '../../src/eval/verify.ts';

/** A backend's W4Ax partial-sum order for M tokens against an N x spec weight (Backend.gemmSchedule). */
export type ScheduleOf = (M: number, N: number, spec: ActQuantSpec) => Array<[number, number]>;

/** The simulator summing the W4Ax GEMM in another backend's reported order (DESIGN §3.4): the reference when
 *  comparing a whole model with that backend: `new ScheduledSim(cuda.gemmSchedule.bind(cuda))`. */
export class ScheduledSim extends SimBackend {
  constructor(schedule: ScheduleOf) {
    super({ gemmSchedule: schedule });
  }
}
