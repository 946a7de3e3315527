// The CUDA backend's failures are clear CometErrors, never crashes: no addon (runs everywhere, CI included),
// and with COMET_TEST_CUDA=1 on a GPU machine, out of GPU memory (after which the backend still works).
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CometError } from '../src/errors.ts';

describe('cuda backend errors', () => {
  it('a missing addon is a CometError that says how to build it', async () => {
    const saved = process.env.COMET_CUDA_ADDON;
    process.env.COMET_CUDA_ADDON = '/nonexistent/comet_cuda.node';
    try {
      const { createCudaBackend } = await import('../backends/cuda/cuda.ts');
      const e = await createCudaBackend().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(CometError);
      expect((e as CometError).code).toBe('backend_unavailable');
      expect((e as Error).message).toMatch(/not built.*build:cuda/);
    } finally {
      if (saved === undefined) delete process.env.COMET_CUDA_ADDON;
      else process.env.COMET_CUDA_ADDON = saved;
    }
  });

  // CI builds the addon (nvcc, no GPU) and sets COMET_TEST_CUDA_ADDON=1: then it must load and say plainly
  // that there is no GPU. Elsewhere a built addon on a GPU-less machine is checked the same way.
  const built = existsSync(fileURLToPath(new URL('../build/Release/comet_cuda.node', import.meta.url)));
  const noGpuCheck = process.env.COMET_TEST_CUDA_ADDON === '1' || (built && process.env.COMET_TEST_CUDA !== '1' && !existsSync('/dev/nvidiactl'));
  it.skipIf(!noGpuCheck)(
    `the built addon on a machine without a GPU is a CometError, not a crash${noGpuCheck ? '' : ' (skipped: no built addon, or a GPU is present; COMET_TEST_CUDA_ADDON=1 forces it)'}`, async () => {
      expect(built, 'build/Release/comet_cuda.node was not built (npm run build:cuda)').toBe(true);
      const { createCudaBackend } = await import('../backends/cuda/cuda.ts');
      const e = await createCudaBackend().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(CometError);
      expect((e as CometError).code).toBe('backend_unavailable');
      expect((e as Error).message).toMatch(/GPU|driver/i);
    });

  const gpu = process.env.COMET_TEST_CUDA === '1';
  it.skipIf(!gpu)(`out of GPU memory is a CometError; the backend goes on working${gpu ? '' : ' (skipped: needs an NVIDIA GPU and COMET_TEST_CUDA=1)'}`, async () => {
    const { createCudaBackend } = await import('../backends/cuda/cuda.ts');
    const be = await createCudaBackend();
    // 2^20 pages x 8 heads x 16 tokens x 128 dims x 4 bytes x 2 (K, V) x 32 layers = 16 TiB
    const spec = { nLayers: 32, nKvHeads: 8, headDim: 128, pageSize: 16, numPages: 1 << 20, dtype: 'f32' as const, group: 128 };
    let err: unknown;
    try { be.createKVCache(spec); } catch (x) { err = x; }
    expect(err).toBeInstanceOf(CometError);
    expect((err as CometError).code).toBe('out_of_memory');
    expect((err as Error).message).toMatch(/out of GPU memory: asked for .* MiB free/);
    const x = be.fromHost(Float32Array.of(1, 2, 3), [1, 3]);
    expect(Array.from(await be.read(be.add(x, x)))).toEqual([2, 4, 6]);
    be.dispose();
  });
});
