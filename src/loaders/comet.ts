// .comet model files (DESIGN §3.6): a safetensors file whose __metadata__ has format 'comet'.
// Stub: the quantization work owns this file and replaces it.
import { CometError } from '../errors.ts';
import type { LoadedModel } from './index.ts';

export async function loadComet(path: string): Promise<LoadedModel> {
  throw new CometError(`${path}: .comet loading not implemented yet`, 'not_implemented');
}
