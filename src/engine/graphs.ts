// Decode steps as replays of captured steps (CUDA graphs), for backends that can capture (Backend.captureStep).
//
// A decode-only step (every sequence of the batch feeds its one newest token) of B sequences is keyed by
// (B, bucket), bucket = the next power of two of the longest sequence's page count (clamped to a full context).
// Its block tables are padded to `bucket` pages (page 0 past the sequence's own: never read, the kernels stop
// at pos + 1), so every step of a key has one shape: tokens [B], pos/seq [B], B tables of `bucket` pages,
// rows 0..B-1. The backend sizes its launches from that shape alone (CUDA: attention's key range =
// bucket · pageSize), which is why a graph captured at one step replays right at later positions.
// The padding is applied whenever the backend can capture, graphs on or off (the engine option `graphs: 0`), so both
// run the same launches on the same shapes and give the same bits.
//
// Per key: the first step runs eagerly (it warms the backend's step memory for that shape: nothing may be
// allocated while capturing), the second is captured and replayed, later ones replay with their data written
// into the graph's input buffer. At most `max` graphs (least recently used evicted); a key whose capture
// failed runs eagerly from then on. Greedy rows take the argmax computed on the device; a batch whose sampled
// rows all use top_k (<= TOPK_MAX) copies back each row's top-k list (Backend.topk: k values and ids, the exact
// candidates sample() ranks); any other sampled row reads the logit rows (one copy).
// Greedy chaining: where a captured step can take its token ids from its own last argmax on the device
// (CapturedStep.replayChained: WebGPU), a greedy decode step's replay is followed at once by the next step's, on the
// inputs the engine will give it if every row goes on (positions + 1, the same pages, the argmax's tokens), before
// the first one's ids are read back: the host's encoding, submit and readback of one step overlap the GPU's run of
// the other. The next run() takes that result if its inputs are those (tokens equal to the ids fed); otherwise the
// speculated step is dropped. What it wrote is harmless: each row's KV at its next position, inside the row's own
// pages (a prediction past them is not made), which that row's next step writes again before anything reads it,
// or which nobody reads if the row ended (a page handed to another sequence is written by it before it is read).
// Measured (H100, test/engine-graphs-timing.test.ts: 32 layers of LLaMA-3-8B shape, W4A4KV4, vocab 512, context
// ~150-200, the whole engine step): batch 1 4.48-4.69 -> 3.71-3.83 ms, batch 16 6.10-6.51 -> 5.55-5.57 ms (two runs).
import { TOPK_MAX, type Backend, type CapturedStep, type KVCache, type StepInputs, type StepLayout, type Tensor } from '../../backends/backend.ts';
import type { Llama } from '../model/llama.ts';
import { sample, sampleTopK, type Rng, type SamplingParams } from './sampler.ts';

export interface GraphStats {
  enabled: boolean;
  live: number; // graphs held
  bytes: number; // device memory they hold besides the shared step memory
  captures: number;
  replays: number;
  eager: number; // decode-only steps run eagerly (first sight of a key, failed key, graphs off)
  evictions: number;
  failures: number; // captures that threw (the key then runs eagerly)
  stale: number; // graphs dropped because the backend changed under them (CapturedStep.valid), then recaptured
  chained: number; // greedy steps submitted before the previous step's ids were read back, and used (replayChained)
  dropped: number; // such steps whose inputs were not the next step's (a row ended, the batch or its key changed)
  keys: string[]; // held keys "B x bucket pages", least recent first
}

/** The decode step's result: device argmax per row (greedy batches), each row's top k (Backend.topk: batches
 *  sampled with top_k), or the logit rows. */
export type DecodeOut = { argmax: Int32Array } | { topk: { values: Float32Array; indices: Int32Array }; k: number } | { logits: Float32Array };
/** What a step copies back: 'argmax', a top-k list of k per row, or the 'logits'. */
export type DecodeWant = 'argmax' | 'logits' | { topk: number };

/** What a step copies back for rows sampled with `params` (temperature 0: greedy): the argmax when every row is
 *  greedy; each row's top-k list when every row is greedy or samples with a top_k below V and at most TOPK_MAX
 *  (k: the largest); else the rows. `readsRows`: some row hands its logits on (logprobs, penalties, logit_bias, a
 *  grammar), so the rows come back. */
export function decodeWant(params: readonly SamplingParams[], V: number, readsRows = false): DecodeWant {
  if (readsRows) return 'logits';
  if (params.every((p) => p.temperature === 0)) return 'argmax';
  const ks = params.map(rowK);
  return ks.every((k) => k > 0 && k < V && k <= TOPK_MAX) ? { topk: Math.max(...ks) } : 'logits';
}

/** Row r's token from what its step copied back: the device's argmax (first maximum, as sample() at temperature
 *  0), a draw from the first top_k of its top-k list, or a draw from its logit row (already shaped by its sink). */
export function drawToken(out: DecodeOut, r: number, V: number, p: SamplingParams, rng: Rng): number {
  if ('argmax' in out) return out.argmax[r];
  if ('topk' in out) {
    const o = r * out.k, k = rowK(p);
    return sampleTopK(out.topk.values.subarray(o, o + k), out.topk.indices.subarray(o, o + k), p, rng);
  }
  return sample(out.logits.subarray(r * V, (r + 1) * V), p, rng);
}

/** the top-k list length a row reads: its top_k, 1 when greedy */
const rowK = (p: SamplingParams) => (p.temperature === 0 ? 1 : p.topK);

/** The step's result read from its logits [R][V] as `want` says (an eager step's). */
export async function readOut(be: Backend, logits: Tensor, want: DecodeWant): Promise<DecodeOut> {
  if (want === 'argmax') return { argmax: await be.argmax(logits) };
  if (want === 'logits') return { logits: await be.read(logits) };
  return { topk: await be.topk(logits, want.topk), k: want.topk };
}

const DEFAULT_MAX = 16;

/** How many graphs an engine keeps: the option (EngineOptions.graphs, `comet serve --graphs`; 0 turns them off),
 *  else 16. */
export function graphLimit(option?: number): number {
  return option ?? DEFAULT_MAX;
}

const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.prototype.every.call(a, (v: number, i: number) => v === b[i]);
/** Whether `inp` is the speculated step's inputs `a` with the tokens it was fed. */
function sameInputs(a: StepInputs, inp: StepInputs, fed: Int32Array): boolean {
  const x = a.layout, y = inp.layout;
  return same(inp.tokens, fed) && same(a.rows, inp.rows) && same(x.pos, y.pos) && same(x.seq, y.seq)
    && x.blockTables.length === y.blockTables.length && x.blockTables.every((t, i) => same(t, y.blockTables[i]));
}

export class DecodeGraphs {
  private readonly graphs = new Map<string, CapturedStep>(); // insertion order = recency (oldest first)
  private readonly seen = new Set<string>();
  private readonly failed = new Set<string>();
  private readonly counts = { captures: 0, replays: 0, eager: 0, evictions: 0, failures: 0, stale: 0, chained: 0, dropped: 0 };
  /** the greedy step submitted ahead (replayChained): its key, graph, inputs, the tokens fed to it (the ids of the
   *  step before it, once read) and its result */
  private ahead?: { key: string; g: CapturedStep; inputs: StepInputs; fed?: Int32Array; result: Promise<Int32Array> };
  private closed = false;

  /** `max` = 0: graphs off, decode steps still padded to their bucket's shape (see the file comment). */
  constructor(readonly model: Llama, readonly cache: KVCache, readonly pageSize: number, readonly max: number) {}

  /** A backend that can capture gets the bucketed decode shape (graphs on or off); others nothing at all. */
  static for(be: Backend, model: Llama, cache: KVCache, pageSize: number, max: number): DecodeGraphs | undefined {
    return typeof be.captureStep === 'function' ? new DecodeGraphs(model, cache, pageSize, max) : undefined;
  }

  /** Pages per block table for a longest context of `ctx` tokens. */
  bucket(ctx: number): number {
    const full = Math.ceil(this.model.config.seqLen / this.pageSize);
    return Math.min(full, nextPow2(Math.ceil(ctx / this.pageSize)));
  }

  /** The step's inputs in the key's shape: each sequence's pages, padded with page 0 to the bucket; and `next`, the
   *  inputs of the step after it if every row goes on greedily (tokens: zeros, fed on the device), where every row's
   *  next position lies in its own pages and the context and the key stays the same (else undefined). */
  inputs(tokens: Int32Array, pos: Int32Array, pages: readonly (readonly number[])[]): { key: string; inputs: StepInputs; next?: { key: string; inputs: StepInputs } } {
    const d = this.shape(tokens, pos, pages);
    const pos1 = pos.map((p) => p + 1);
    if (!pos1.every((p, i) => p < pages[i].length * this.pageSize && p < this.model.config.seqLen)) return d;
    const n = this.shape(new Int32Array(tokens.length), pos1, pages);
    return n.key === d.key ? { ...d, next: n } : d;
  }
  private shape(tokens: Int32Array, pos: Int32Array, pages: readonly (readonly number[])[]): { key: string; inputs: StepInputs } {
    const B = tokens.length;
    let ctx = 0;
    for (const p of pos) ctx = Math.max(ctx, p + 1);
    const n = this.bucket(ctx);
    const blockTables = pages.map((ps) => {
      const bt = new Int32Array(Math.max(n, ps.length));
      bt.set(ps);
      return bt;
    });
    const layout: StepLayout = { pos, seq: Int32Array.from({ length: B }, (_, i) => i), blockTables };
    return { key: `${B}x${n}`, inputs: { tokens, layout, rows: Int32Array.from({ length: B }, (_, i) => i) } };
  }

  /** Run one decode-only step: replay its key's graph, capture it (second sight), or run eagerly. `next` (inputs()'s):
   *  a greedy replay is followed at once by the next step's on those inputs where the graph can chain (file comment). */
  async run(key: string, inp: StepInputs, want: DecodeWant, next?: { key: string; inputs: StepInputs }): Promise<DecodeOut> {
    const be = this.model.be;
    const a = this.ahead;
    this.ahead = undefined;
    if (a && a.key === key && want === 'argmax' && a.g === this.graphs.get(key) && (!a.g.valid || a.g.valid()) && a.fed && sameInputs(a.inputs, inp, a.fed)) {
      this.touch(key, a.g);
      this.chain(key, a.g, next);
      try {
        const ids = await a.result;
        this.counts.replays++;
        this.counts.chained++;
        return { argmax: this.fed(ids) };
      } catch {
        this.ahead = undefined; // a failed speculation (a lost device says so again below): run the step plainly
      } finally {
        be.endStep();
      }
    } else if (a) this.counts.dropped++;
    let g = this.graphs.get(key);
    if (g && g.valid && !g.valid()) { // the backend changed under it (new weights): capture again
      g.destroy();
      this.graphs.delete(key);
      this.counts.stale++;
      g = undefined;
    }
    if (!g && this.max > 0 && !this.closed && this.seen.has(key) && !this.failed.has(key)) g = this.capture(key, inp);
    if (!g) {
      if (this.max > 0) this.remember(key);
      this.counts.eager++;
      try {
        return await readOut(be, this.model.forward(inp.tokens, inp.layout, this.cache, inp.rows), want);
      } finally {
        be.endStep();
      }
    }
    this.touch(key, g);
    this.counts.replays++;
    try {
      if (want === 'argmax') {
        const r = g.replay(inp);
        this.chain(key, g, next);
        return { argmax: this.fed(await r) };
      }
      if (want === 'logits') return { logits: await g.replayLogits(inp) };
      return { topk: await g.replayTopK(inp, want.topk), k: want.topk };
    } finally {
      be.endStep();
    }
  }

  /** `g` the most recently used graph (the map's insertion order is its recency) */
  private touch(key: string, g: CapturedStep): void {
    this.graphs.delete(key);
    this.graphs.set(key, g);
  }
  /** Submit the step after the one just submitted on `g`, on `next`'s inputs with its tokens fed on the device. */
  private chain(key: string, g: CapturedStep, next?: { key: string; inputs: StepInputs }): void {
    if (!next || next.key !== key || !g.replayChained || this.closed) return;
    const result = g.replayChained(next.inputs);
    result.catch(() => {}); // read (or dropped) by the next run
    this.ahead = { key, g, inputs: next.inputs, result };
  }
  /** The ids a step read back are the tokens its speculated successor was fed. */
  private fed(ids: Int32Array): Int32Array {
    if (this.ahead) this.ahead.fed = ids;
    return ids;
  }

  private capture(key: string, inp: StepInputs): CapturedStep | undefined {
    const be = this.model.be;
    let g: CapturedStep;
    try {
      g = be.captureStep!(() => this.model.forward(inp.tokens, inp.layout, this.cache, inp.rows), inp);
    } catch {
      this.failed.add(key);
      this.counts.failures++;
      return undefined;
    }
    this.counts.captures++;
    while (this.graphs.size >= this.max) {
      const [oldest, og] = this.graphs.entries().next().value!;
      og.destroy();
      this.graphs.delete(oldest);
      this.counts.evictions++;
    }
    this.graphs.set(key, g);
    return g;
  }

  /** Keys seen once (a bounded set: a key forgotten is only warmed up again). */
  private remember(key: string): void {
    if (this.seen.size >= 1024) this.seen.clear();
    this.seen.add(key);
  }

  stats(): GraphStats {
    let bytes = 0;
    for (const g of this.graphs.values()) bytes += g.bytes;
    return { enabled: this.max > 0, live: this.graphs.size, bytes, ...this.counts, keys: [...this.graphs.keys()] };
  }

  /** Free every graph (engine close). */
  dispose(): void {
    this.closed = true;
    this.ahead = undefined;
    for (const g of this.graphs.values()) g.destroy();
    this.graphs.clear();
  }
}
