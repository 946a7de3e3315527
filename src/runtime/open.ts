// Open a model for running: load its weights (any supported format), its tokenizer, and upload to a backend.
import { fileURLToPath } from 'node:url';
import type { Backend } from '../../backends/backend.ts';
import { loadModel, findTokenizerPath, type LoadedModel } from '../loaders/index.ts';
import { loadTokenizer } from '../tokenizer/index.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { Llama } from '../model/llama.ts';
import { weightNames } from '../model/config.ts';
import { checkFits } from './fits.ts';
import { CometError } from '../errors.ts';

/** The embedded default model (stories260K, MIT, ~1 MB), shipped in the package's models/ folder. */
export const defaultModelPath = fileURLToPath(new URL('../../models/stories260K.bin', import.meta.url));

export interface OpenModel {
  loaded: LoadedModel;
  model: Llama;
  tokenizer: Tokenizer;
  /** token ids that end a generation: llama2.c stops at BOS (run.c), HF models at their EOS ids */
  stop: number[];
}

export async function openModel(be: Backend, modelPath = defaultModelPath, tokenizerPath?: string): Promise<OpenModel> {
  const loaded = await loadModel(modelPath);
  const tokPath = tokenizerPath ?? loaded.tokenizerPath ?? findTokenizerPath(modelPath);
  if (!tokPath) throw new CometError(`${modelPath}: no tokenizer found beside the model; pass --tokenizer`);
  const tokenizer = await loadTokenizer(tokPath);
  if (tokenizer.vocabSize > loaded.config.vocabSize)
    throw new CometError(`${tokPath}: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${loaded.config.vocabSize}`);
  const kv = (loaded.meta?.kvDType as 'f32' | 'kv4' | undefined) ?? 'f32';
  checkFits(be, weightNames(loaded.config).map((n) => loaded.weights.get(n)));
  const model = new Llama(be, loaded.config, loaded.weights, kv, loaded.meta?.kvGroup as number | undefined);
  const stop = loaded.format === 'llama2c' ? [loaded.config.bos] : loaded.config.eos;
  return { loaded, model, tokenizer, stop };
}
