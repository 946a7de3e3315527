// What the Node loaders return (index.ts loadModel, comet.ts loadComet, gguf.ts): one type, so the loaders
// import it from here rather than from the dispatcher that imports them.
import type { HostWeight } from '../../backends/backend.ts';
import type { LlamaConfig } from '../model/config.ts';

export interface LoadedModel {
  config: LlamaConfig;
  weights: Map<string, HostWeight>; // internal names (src/model/config.ts weightNames)
  format: 'llama2c' | 'hf' | 'comet' | 'gguf';
  path: string;
  tokenizerPath?: string;
  meta?: Record<string, unknown>;
}
