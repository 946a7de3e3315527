// The backends the cross-backend tests run on (test/ops.test.ts, describe.each): the simulator always; CUDA
// with COMET_TEST_CUDA=1; WebGPU with COMET_TEST_WEBGPU=1. A backend that is asked for but cannot be created
// fails every test of its block (create() throws in beforeAll): it never skips.
import type { ActQuantSpec, Backend, KVCache } from '../../backends/backend.ts';
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

/** Raw bytes of one layer of a backend's KV cache, in the simulator's layout (kv4: KVStoreKV4.data[layer];
 *  f32: K pages then V pages). A GPU backend's cache exposes readLayer(layer); the simulator's, its store. */
export async function kvLayerBytes(cache: KVCache, layer: number): Promise<Uint8Array> {
  const c = cache as KVCache & { readLayer?: (l: number) => Promise<Uint8Array>; store?: { data?: Uint8Array[]; k?: Float32Array[]; v?: Float32Array[] } };
  if (c.readLayer) return c.readLayer(layer);
  const s = c.store;
  if (s?.data) return s.data[layer];
  if (s?.k && s.v) {
    const k = s.k[layer], v = s.v[layer], out = new Uint8Array(k.byteLength + v.byteLength);
    out.set(new Uint8Array(k.buffer, k.byteOffset, k.byteLength), 0);
    out.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), k.byteLength);
    return out;
  }
  throw new Error('kvLayerBytes: this backend exposes no KV bytes (readLayer)');
}

/** A backend's W4Ax partial-sum order for M tokens against an N x spec weight (Backend.gemmSchedule). */
export type ScheduleOf = (M: number, N: number, spec: ActQuantSpec) => Array<[number, number]>;

/** The simulator summing the W4Ax GEMM in another backend's reported order (DESIGN §3.4): the reference when
 *  comparing a whole model with that backend: `new ScheduledSim(cuda.gemmSchedule.bind(cuda))`. */
export class ScheduledSim extends SimBackend {
  constructor(schedule: ScheduleOf) {
    super({ gemmSchedule: schedule });
  }
}
