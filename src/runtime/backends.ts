// Backend by name. The GPU backends are imported lazily: the simulator needs neither an addon nor a GPU.
import type { Backend } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';

export const backendNames = ['sim', 'cuda', 'webgpu'] as const;
export type BackendName = (typeof backendNames)[number];

export async function createBackend(name: string): Promise<Backend> {
  switch (name) {
    case 'sim': {
      const { SimBackend } = await import('../../backends/sim/sim.ts');
      return new SimBackend();
    }
    case 'cuda': {
      const { createCudaBackend } = await import('../../backends/cuda/cuda.ts');
      return createCudaBackend();
    }
    case 'webgpu': {
      const { createWebGPUBackend } = await import('../../backends/webgpu/webgpu.ts');
      return createWebGPUBackend();
    }
    default:
      throw new CometError(`unknown backend '${name}' (supported: ${backendNames.join(', ')})`);
  }
}
