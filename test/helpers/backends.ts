// The backends every cross-backend test runs on, one row each: the simulator always; CUDA with COMET_TEST_CUDA=1
// (a GPU machine); WebGPU with COMET_TEST_WEBGPU=1 (`npm test` sets it: SwiftShader on CI). A row that cannot run
// here is still there: eachBackend() makes its suite skipped, with the reason in its title, so the count of
// skipped tests says what did not run. A row that is asked for but cannot be created fails every test of its
// suite (create() throws in beforeAll): it never skips.
//
// What a backend runs, and the tier each test holds it to, come from its declared op set (Backend.ops; read with
// opTier/supports): the tests never branch on a backend's name.
import { describe } from 'vitest';
import type { Backend } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';

export interface BackendCase {
  name: 'sim' | 'cuda' | 'webgpu';
  /** why this row does not run here (the skipped suite's title says it); undefined when it runs */
  skip?: string;
  create: () => Promise<Backend>;
  /** The backend's other kernels for an op, each forced (the default picks among them by shape): tests that
   *  cover an op run every shape on each, so a kernel the default path does not pick at these sizes is checked
   *  too. Created from the row's backend, after it. */
  variants?: (be: Backend) => Promise<Variant[]>;
}

export interface Variant {
  name: string;
  /** the ops this variant forces a kernel for (the tests of other ops skip it) */
  ops: readonly ('gemm_w4ax' | 'attention' | 'kv_append' | 'gemm_f32')[];
  /** the most tokens (rows) the kernel is meant for (a decode kernel forced onto a prefill is only slow) */
  maxTokens?: number;
  be: Backend;
}

const cuda: BackendCase = {
  name: 'cuda',
  skip: process.env.COMET_TEST_CUDA === '1' ? undefined : 'needs an NVIDIA GPU and COMET_TEST_CUDA=1 (npm run test:cuda on the GPU machine)',
  create: async () => (await import('../../backends/cuda/cuda.ts')).createCudaBackend(),
};

const webgpu: BackendCase = {
  name: 'webgpu',
  skip: process.env.COMET_TEST_WEBGPU === '1' ? undefined : 'needs COMET_TEST_WEBGPU=1 and an adapter (npm test sets it; .ci/webgpu-env.sh installs SwiftShader)',
  create: async () => {
    const { createWebGPUBackend } = await import('../../backends/webgpu/webgpu.ts');
    return createWebGPUBackend().catch((e) => { throw new Error(`WebGPU tests need an adapter and have none: ${(e as Error).message}`); });
  },
  variants: async (base) => {
    const { WebGPUBackend } = await import('../../backends/webgpu/webgpu.ts');
    const { loadShaderSources } = await import('../../backends/webgpu/shaders.ts');
    const b = base as InstanceType<typeof WebGPUBackend>, src = await loadShaderSources();
    const make = (name: string, ops: Variant['ops'], o: ConstructorParameters<typeof WebGPUBackend>[2], maxTokens?: number, gpu = b.gpu): Variant =>
      ({ name, ops, maxTokens, be: new WebGPUBackend(gpu, src, o) });
    // the W4Ax kernels: matvec (1 token; 2..8 tokens as a 4-token matvec) and rowwise for decode, tiled for more
    return [
      // the one-token matvec's two chunkings forced (the default picks by K): 2048-channel chunks at K > 2048 (several
      // chunks), 4096-channel ones at small K (lanes with no segment)
      make('matvec 1 segment per lane', ['gemm_w4ax'], { gemm: 'matvec', matvec: { segs: 1 } }, 8),
      make('matvec 2 segments per lane', ['gemm_w4ax'], { gemm: 'matvec', matvec: { segs: 2 } }, 8),
      make('rowwise', ['gemm_w4ax'], { gemm: 'rowwise' }, 8),
      make('tiled', ['gemm_w4ax'], { gemm: 'tiled' }),
      make('matvec without dot4I8Packed', ['gemm_w4ax'], { gemm: 'matvec' }, 8, { ...b.gpu, dot4: false }),
      // the kernels of the other kind of adapter: attention, KV4 append (with its rope), the f16-weight GEMM
      make(`${b.cpu ? 'workgroup' : 'serial'} kernels`, ['attention', 'kv_append', 'gemm_f32'], { kernels: b.cpu ? 'workgroup' : 'serial' }),
      // the workgroup KV4 attention's other mode: the default splits a decode step (and the tests' prefill chunks:
      // T·nHeads <= 1024) into a workgroup per 64-key chunk and a combine; unsplit walks the chunks (prefill)
      make('workgroup attention, unsplit', ['attention'], { kernels: 'workgroup', attentionSplit: false }),
      // its lane reductions without subgroups (lanes.wgsl); the variants above take lanes_sg.wgsl where the device has
      // subgroups (SwiftShader: size 4; test/webgpu-dispatches.test.ts fails where it has none)
      make('workgroup attention without subgroups', ['attention'], { kernels: 'workgroup' }, undefined, { ...b.gpu, subgroups: false }),
    ];
  },
};

export const BACKENDS: BackendCase[] = [{ name: 'sim', create: async () => new SimBackend() }, cuda, webgpu];

/** The rows that run here. */
export const backends: BackendCase[] = BACKENDS.filter((b) => !b.skip);

/** `describe(`${title} on ${name}`)` for every backend row; a row that cannot run here is a skipped suite whose
 *  title gives the reason. `only` keeps some rows (e.g. the GPU ones for a GPU-only file). */
export function eachBackend(title: string, body: (c: BackendCase) => void, only: (c: BackendCase) => boolean = () => true): void {
  for (const c of BACKENDS.filter(only)) {
    if (c.skip) describe.skip(`${title} on ${c.name} (skipped: ${c.skip})`, () => body(c));
    else describe(`${title} on ${c.name}`, () => body(c));
  }
}

export { kvLayerBytes } from '../../src/eval/verify.ts';
