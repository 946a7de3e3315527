// Open a model sharded over N ranks in one process (`comet serve --tensor-parallel N`): runtime/open.ts's model,
// tokenizer and stop ids, with a ShardedLlama in place of the Llama (one backend per rank).
import type { Llama } from '../model/llama.ts';
import { loadModel, findTokenizerPath } from '../loaders/index.ts';
import { loadTokenizer } from '../tokenizer/index.ts';
import { createBackend } from '../runtime/backends.ts';
import { defaultModelPath, type OpenModel } from '../runtime/open.ts';
import { CometError } from '../errors.ts';
import { shardModel } from './shard.ts';
import { ShardedLlama, TP_BACKENDS } from './sharded.ts';

export async function openSharded(n: number, backend: string, modelPath = defaultModelPath, tokenizerPath?: string): Promise<OpenModel> {
  if (!TP_BACKENDS.includes(backend))
    throw new CometError(`--tensor-parallel ${n}: tensor parallelism is not supported on the ${backend} backend yet (it runs on ${TP_BACKENDS.join(', ')}; CUDA needs the f32-partial GEMM and an NCCL all-reduce: issue 22)`, 'unsupported');
  const loaded = await loadModel(modelPath);
  const tokPath = tokenizerPath ?? loaded.tokenizerPath ?? findTokenizerPath(modelPath);
  if (!tokPath) throw new CometError(`${modelPath}: no tokenizer found beside the model; pass --tokenizer`);
  const tokenizer = await loadTokenizer(tokPath);
  const plan = shardModel(loaded.config, loaded.weights, n);
  const bes = await Promise.all(Array.from({ length: n }, () => createBackend(backend)));
  const kv = (loaded.meta?.kvDType as 'f32' | 'kv4' | undefined) ?? 'f32';
  // ShardedLlama has Llama's public surface (forward, be, config, kvDType, kvGroup): the engine runs it as one
  const model: Llama = new ShardedLlama(plan, bes, kv, loaded.meta?.kvGroup as number | undefined);
  return { loaded, model, tokenizer, stop: loaded.format === 'llama2c' ? [loaded.config.bos] : loaded.config.eos };
}
