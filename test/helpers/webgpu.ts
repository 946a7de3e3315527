// The WebGPU backend for tests: created once per test file. No adapter is a failure, never a skip: the
// message says why and how (SwiftShader's env vars; .ci/webgpu-env.sh sets them on CI).
import { createWebGPUBackend, type WebGPUBackend } from '../../backends/webgpu/webgpu.ts';

let be: Promise<WebGPUBackend> | undefined;
export function webgpu(): Promise<WebGPUBackend> {
  be ??= createWebGPUBackend().catch((e) => {
    throw new Error(`WebGPU tests need an adapter and have none: ${(e as Error).message}`);
  });
  return be;
}
