// Single-sequence generation, as llama2.c run.c does it: the prompt is prefilled in one step (run.c feeds it
// token by token; the math per position is the same), then one token per step until `maxTokens` new tokens,
// a stop token, or the end of the context. The engine (src/engine/engine.ts) batches many of these.
// On a backend that captures steps (CUDA), each decode step is the engine's: a replay of the captured step of its
// (1 sequence, context bucket) key (graphs.ts); greedy takes the argmax computed on the device and copies back
// one token id; sampling with top_k copies back the row's top-k list (k values and ids, ranked on the device), and
// the seeded sampler draws from it on the host: the token sample() draws from the whole row. Other sampling copies
// back the logit row.
import type { KVCache } from '../../backends/backend.ts';
import type { Llama } from '../model/llama.ts';
import { CometError } from '../errors.ts';
import { Rng, type SamplingParams } from './sampler.ts';
import { DecodeGraphs, decodeWant, drawToken, graphLimit, readOut } from './graphs.ts';

export interface GenerateOptions extends SamplingParams {
  maxTokens: number;
  seed: number;
  stop: number[]; // token ids that end generation (not emitted)
  pageSize?: number;
  kv?: 'f32' | 'kv4';
  kvGroup?: number;
}

/** One sequence's paged cache, sized for `tokens` positions; the model's own KV dtype and group unless given. */
export function singleSequenceCache(model: Llama, tokens: number, kv: 'f32' | 'kv4' = model.kvDType, pageSize = 16, group = model.kvGroup): { cache: KVCache; blockTable: Int32Array } {
  const c = model.config;
  const numPages = Math.ceil(tokens / pageSize);
  const cache = model.be.createKVCache({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize, numPages, dtype: kv, group });
  return { cache, blockTable: Int32Array.from({ length: numPages }, (_, i) => i) };
}

/** Yields generated token ids. */
export async function* generate(model: Llama, prompt: number[], o: GenerateOptions): AsyncGenerator<number> {
  const c = model.config;
  if (prompt.length === 0) throw new CometError('generate: the prompt has no tokens (not even BOS)');
  if (prompt.length >= c.seqLen)
    throw new CometError(`generate: the prompt has ${prompt.length} tokens, the model's context is ${c.seqLen}`, 'context_length_exceeded');
  const total = Math.min(c.seqLen, prompt.length + o.maxTokens);
  const { cache, blockTable } = singleSequenceCache(model, total, o.kv ?? model.kvDType, o.pageSize, o.kvGroup ?? model.kvGroup);
  const rng = new Rng(o.seed);
  const P = o.pageSize ?? 16, graphs = DecodeGraphs.for(model.be, model, cache, P, graphLimit());
  let tokens = Int32Array.from(prompt), pos = 0, produced = 0;
  const V = c.vocabSize, want = decodeWant([o], V);
  try {
    for (;;) {
      const T = tokens.length;
      let next: number;
      if (graphs && T === 1) {
        const { key, inputs, next: ahead } = graphs.inputs(tokens, Int32Array.of(pos), [Array.from(blockTable.subarray(0, Math.ceil((pos + 1) / P)))]);
        next = drawToken(await graphs.run(key, inputs, want, produced + 1 < o.maxTokens ? ahead : undefined), 0, V, o, rng);
      } else {
        const layout = { pos: Int32Array.from({ length: T }, (_, i) => pos + i), seq: new Int32Array(T), blockTables: [blockTable] };
        try {
          next = drawToken(await readOut(model.be, model.forward(tokens, layout, cache, Int32Array.of(T - 1)), want), 0, V, o, rng);
        } finally {
          model.be.endStep();
        }
      }
      pos += T;
      if (o.stop.includes(next)) return;
      yield next;
      if (++produced >= o.maxTokens || pos >= c.seqLen) return;
      tokens = Int32Array.of(next);
    }
  } finally {
    graphs?.dispose();
  }
}
