// The browser side of test/browser/webgpu-browser.test.ts: the WebGPU backend over navigator.gpu, its WGSL
// bundled by Vite, running the shared cases. window.cometCases() resolves to the results (or throws).
import { createWebGPUBackend } from '../../../backends/webgpu/webgpu.ts';
import { shaderSourcesFromGlob } from '../../../backends/webgpu/shaders.ts';
import { runCases } from '../webgpu-cases.ts';

const SHADERS: Record<string, string> = import.meta.glob('../../../shaders/*.wgsl', { query: '?raw', import: 'default', eager: true });

(window as unknown as { cometCases: () => Promise<{ adapter: string; results: Record<string, string> }> }).cometCases = async () => {
  const be = await createWebGPUBackend({ shaders: shaderSourcesFromGlob(SHADERS) });
  return { adapter: be.adapterName, results: await runCases(be) };
};
document.body.dataset.state = 'ready';
