// Perplexity under the protocol of DESIGN.md §8: the whole text tokenized with no special tokens, cut into
// non-overlapping windows of `ctx` tokens (the last partial one dropped); in each window tokens 1..ctx-1 are
// scored given those before them in the window; ppl = exp(mean NLL). NLL in f64 from the f32 logits.
import type { Llama } from '../model/llama.ts';
import { singleSequenceCache } from '../engine/generate.ts';
import { CometError } from '../errors.ts';

export interface PplResult { ppl: number; nll: number; scored: number; windows: number; ctx: number; totalWindows: number }

/** Windows [start, start + maxWindows) of the text (start lets a benchmark shard the text across processes). */
export async function perplexity(model: Llama, tokens: number[], ctx: number, maxWindows = Infinity, onWindow?: (done: number, total: number) => void, start = 0): Promise<PplResult> {
  if (ctx < 2) throw new CometError(`eval ppl: --ctx ${ctx} is too small (at least 2)`);
  if (ctx > model.config.seqLen) throw new CometError(`eval ppl: --ctx ${ctx} is longer than the model's context ${model.config.seqLen}`);
  const totalWindows = Math.floor(tokens.length / ctx);
  if (totalWindows === 0) throw new CometError(`eval ppl: the text has ${tokens.length} tokens, fewer than one window of ${ctx}`);
  if (start < 0 || start >= totalWindows) throw new CometError(`eval ppl: start window ${start} is outside the text's ${totalWindows} windows`);
  const windows = Math.min(totalWindows - start, maxWindows);
  const { cache, blockTable } = singleSequenceCache(model, ctx);
  const layout = { pos: Int32Array.from({ length: ctx }, (_, i) => i), seq: new Int32Array(ctx), blockTables: [blockTable] };
  const rows = Int32Array.from({ length: ctx - 1 }, (_, i) => i);
  const V = model.config.vocabSize;
  let nll = 0, scored = 0;
  for (let w = 0; w < windows; w++) {
    const win = Int32Array.from(tokens.slice((start + w) * ctx, (start + w + 1) * ctx));
    const logits = await model.be.read(model.forward(win, layout, cache, rows));
    model.be.endStep();
    for (let i = 0; i < ctx - 1; i++) {
      const row = logits.subarray(i * V, (i + 1) * V);
      let max = -Infinity;
      for (let j = 0; j < V; j++) if (row[j] > max) max = row[j];
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(row[j] - max);
      nll += Math.log(sum) + max - row[win[i + 1]];
      scored++;
    }
    onWindow?.(w + 1, windows);
  }
  return { ppl: Math.exp(nll / scored), nll: nll / scored, scored, windows, ctx, totalWindows };
}
