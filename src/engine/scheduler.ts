// Continuous batching over the paged KV pool. Every step is ONE model.forward over a flat varlen batch
// (StepLayout): the decode token of every running sequence, then prefill chunks, up to `maxStepTokens`.
//
//   step:  sweep cancelled sequences (pages back to the pool)
//          running sequences, oldest first: each gets its pending tokens (1 when decoding, the rest of its
//            prompt when prefilling), pages for them; if the pool is dry the NEWEST running sequence is
//            preempted (pages freed, recomputed from its tokens later) until the older one fits
//          waiting sequences, strictly FIFO (the head blocks the rest): admitted while the batch has room,
//            the step has token budget, and the pool has pages for the sequence's whole prompt (none in a
//            step that preempted, or a victim would be readmitted at once and recompute in a loop); the
//            leading full pages of its tokens that are in the prefix cache (kv-pages.ts) are taken, not computed
//          after the forward, every page that became full is registered in the prefix cache
//          forward once; sample one token for each sequence whose pending tokens are all in
//          (a decode-only step on a backend that can capture: a CUDA graph replay, graphs.ts)
//
// Sampling per sequence is generate()'s (same RNG, same order of draws), and each row of the batch is
// computed as it is alone, so a request's tokens do not depend on what else runs (test/engine.test.ts).
import type { KVCache } from '../../backends/backend.ts';
import type { Llama } from '../model/llama.ts';
import { Rng, type SamplingParams } from './sampler.ts';
import type { PagePool } from './kv-pages.ts';
import { decodeWant, drawToken, readOut, type DecodeGraphs, type DecodeOut } from './graphs.ts';

export type FinishReason = 'stop' | 'length';

export interface SeqParams extends SamplingParams {
  maxTokens: number;
  seed: number;
  stop: number[]; // token ids that end the sequence (not emitted)
}

/** What a sequence reports to its owner (the engine's request). */
export interface SeqSink {
  /** present when the owner shapes the distribution (penalties, logit_bias, a grammar's mask) or reads it
   *  (logprobs): called with the sequence's row of logits (V,) before sampling, may change it in place */
  logits?(row: Float32Array): void | Promise<void>;
  /** work for this step's sample that needs no logits (a grammar's token mask): called after the forward is
   *  launched and before its result is awaited, so on a GPU it runs while the device computes */
  prepare?(): void | Promise<void>;
  /** the sampled token; `row` is the (adjusted) logits it was drawn from when logits() is present */
  token(id: number, row?: Float32Array): void;
  /** exactly once; `error` set when the step failed; not called after cancel() */
  finish(reason: FinishReason, error?: Error): void;
}

export class Sequence {
  readonly tokens: number[]; // prompt, then generated tokens
  computed = 0; // tokens whose K/V are in the cache
  generated = 0;
  pages: number[] = [];
  serials: number[] = []; // prefix-cache serial of each leading full page registered or hit (kv-pages.ts)
  state: 'waiting' | 'running' | 'done' = 'waiting';
  cancelled = false;
  readonly rng: Rng;
  constructor(readonly id: number, prompt: readonly number[], readonly params: SeqParams, readonly sink: SeqSink) {
    this.tokens = [...prompt];
    this.rng = new Rng(params.seed);
  }
}

export interface SchedulerOptions {
  maxBatch: number; // sequences running at once
  maxStepTokens: number; // tokens per forward (decode + prefill chunks)
  pageSize: number;
  prefixCache?: boolean; // share full KV pages of equal token prefixes (kv-pages.ts); default on
}

export interface SchedulerStats {
  running: number;
  waiting: number;
  steps: number;
  preemptions: number;
  computedTokens: number; // tokens fed to forward (prefill, decode and recomputation)
  generatedTokens: number;
  maxStepSequences: number; // the most sequences one step carried
  maxStepPrefills: number; // the most sequences one step carried prefill chunks of (batched prefill)
  time: { decode: StepTime; mixed: StepTime }; // decode-only steps (graph replays) and steps with prefill chunks
}

/** Where a kind of step spends its wall time (ms, summed over steps): `host` is the scheduler's own serial work
 *  (sweep, planning, block tables, sampling, handing tokens to the sinks); `launch` the forward's op launches
 *  from TypeScript (eager steps; the GPU runs meanwhile); `wait` waiting for the device's result. */
export interface StepTime { steps: number; wallMs: number; hostMs: number; launchMs: number; waitMs: number }

interface Slot { seq: Sequence; start: number; n: number }

/** A slot that feeds one sequence its newest generated token (else it carries a prefill or recompute chunk). */
const isDecode = (s: Slot) => s.n === 1 && s.seq.generated > 0 && s.start === s.seq.tokens.length - 1;
const stepTime = (): StepTime => ({ steps: 0, wallMs: 0, hostMs: 0, launchMs: 0, waitMs: 0 });

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  private stats_ = { steps: 0, preemptions: 0, computedTokens: 0, generatedTokens: 0, maxStepSequences: 0, maxStepPrefills: 0 };
  private readonly time_ = { decode: stepTime(), mixed: stepTime() };

  /** graphs: decode steps in a capturable shape, replayed as graphs (graphs.ts); absent: every step eager */
  constructor(readonly model: Llama, readonly pool: PagePool, readonly cache: KVCache, readonly o: SchedulerOptions, readonly graphs?: DecodeGraphs) {}

  get busy(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  stats(): SchedulerStats {
    return { running: this.running.length, waiting: this.waiting.length, ...this.stats_, time: { decode: { ...this.time_.decode }, mixed: { ...this.time_.mixed } } };
  }

  add(seq: Sequence): void {
    this.waiting.push(seq);
  }

  /** Marks the sequence; it leaves (and frees its pages) at the next sweep. Call sweep() when no step runs. */
  cancel(seq: Sequence): void {
    if (seq.state !== 'done') seq.cancelled = true;
  }

  /** Drop cancelled sequences and return their pages. */
  sweep(): void {
    for (const list of [this.waiting, this.running])
      for (let i = list.length - 1; i >= 0; i--) if (list[i].cancelled) this.retire(list[i]);
  }

  /** One step. Returns false when there was nothing to run. */
  async step(): Promise<boolean> {
    const t0 = performance.now();
    this.sweep();
    const batch = this.plan();
    if (batch.length === 0) return false;
    const T = batch.reduce((a, s) => a + s.n, 0);
    const tokens = new Int32Array(T), pos = new Int32Array(T), seqIdx = new Int32Array(T);
    const rows: number[] = [], sampled: Sequence[] = [];
    let t = 0;
    batch.forEach(({ seq, start, n }, i) => {
      for (let j = 0; j < n; j++, t++) {
        tokens[t] = seq.tokens[start + j];
        pos[t] = start + j;
        seqIdx[t] = i;
      }
      if (start + n === seq.tokens.length) { rows.push(t - 1); sampled.push(seq); }
    });
    // a decode-only step (every sequence feeds its newest token) goes through the decode graphs when the
    // backend can capture (graphs.ts): its key's shape, and a replay once captured
    const allDecode = sampled.length === batch.length && T === batch.length;
    const decodeOnly = this.graphs !== undefined && allDecode;
    let out: DecodeOut;
    const be = this.model.be;
    let t1 = 0, t2 = 0, prepareMs = 0;
    // what comes back (graphs.ts decodeWant): every row greedy and unshaped, the device's argmax instead of R x V
    // logits (at batch 256, 128K vocabulary: 131 MB a step); every row greedy or with top_k, each row's top-k list
    const V = this.model.config.vocabSize;
    const want = decodeWant(sampled.map((s) => s.params), V, sampled.some((s) => s.sink.logits));
    try {
      if (decodeOnly) {
        const d = this.graphs!.inputs(tokens, pos, batch.map((s) => s.seq.pages));
        t1 = t2 = performance.now();
        // the next step chained on the device where every row may go on (graphs.ts): not past a row's max_tokens
        const more = batch.every(({ seq }) => seq.generated + 1 < seq.params.maxTokens);
        const run = this.graphs!.run(d.key, d.inputs, want, more ? d.next : undefined);
        run.catch(() => {}); // awaited below; not an unhandled rejection while prepare() runs
        prepareMs = await this.prepare(sampled);
        out = await run;
      } else {
        const layout = { pos, seq: seqIdx, blockTables: batch.map((s) => Int32Array.from(s.seq.pages)) };
        try {
          t1 = performance.now();
          const logits = this.model.forward(tokens, layout, this.cache, Int32Array.from(rows));
          t2 = performance.now();
          prepareMs = await this.prepare(sampled);
          out = await readOut(be, logits, want);
        } finally {
          be.endStep();
        }
      }
    } catch (e) {
      for (const { seq } of batch) this.finish(seq, 'stop', e instanceof Error ? e : new Error(String(e)));
      return true;
    }
    const t3 = performance.now();
    this.stats_.steps++;
    this.stats_.computedTokens += T;
    this.stats_.maxStepSequences = Math.max(this.stats_.maxStepSequences, batch.length);
    this.stats_.maxStepPrefills = Math.max(this.stats_.maxStepPrefills, batch.reduce((a, s) => a + (isDecode(s) ? 0 : 1), 0));
    for (const { seq, n } of batch) {
      seq.computed += n;
      if (this.o.prefixCache !== false) this.registerFull(seq);
    }
    const logits = 'logits' in out ? out.logits : undefined;
    for (let r = 0; r < sampled.length; r++) {
      const seq = sampled[r];
      if (seq.cancelled) continue;
      const p = seq.params;
      const row = logits?.subarray(r * V, (r + 1) * V);
      if (row && seq.sink.logits) await seq.sink.logits(row); // in place: drawToken reads the same memory
      const next = drawToken(out, r, V, p, seq.rng);
      if (p.stop.includes(next)) { this.finish(seq, 'stop'); continue; }
      seq.tokens.push(next);
      seq.generated++;
      this.stats_.generatedTokens++;
      seq.sink.token(next, row);
      if (seq.cancelled) continue; // the sink cancelled it (a stop string)
      if (seq.generated >= p.maxTokens || seq.computed >= this.model.config.seqLen) this.finish(seq, 'length');
    }
    this.sweep();
    const t4 = performance.now(), k = this.time_[allDecode ? 'decode' : 'mixed'];
    k.steps++;
    k.wallMs += t4 - t0;
    k.hostMs += t1 - t0 + (t4 - t3) + prepareMs;
    k.launchMs += t2 - t1;
    k.waitMs += t3 - t2 - prepareMs;
    return true;
  }

  /** The sinks' prepare() for the sequences this step samples; returns the ms it took. */
  private async prepare(sampled: Sequence[]): Promise<number> {
    const t = performance.now();
    for (const seq of sampled) if (!seq.cancelled && seq.sink.prepare) await seq.sink.prepare();
    return performance.now() - t;
  }

  /** Finish every sequence with `error` (their pages return to the pool). */
  failAll(error: Error): void {
    for (const seq of [...this.running, ...this.waiting]) {
      if (seq.cancelled) this.retire(seq);
      else this.finish(seq, 'stop', error);
    }
  }

  private plan(): Slot[] {
    const batch: Slot[] = [];
    let budget = this.o.maxStepTokens, preempted = false;
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i];
      const n = Math.min(seq.tokens.length - seq.computed, budget);
      while (!this.reserve(seq, seq.computed + n)) {
        // preempt the newest running sequence (possibly seq itself: then nothing older needs its pages)
        const victim = this.running[this.running.length - 1];
        this.preempt(victim);
        preempted = true;
        if (victim === seq) break;
      }
      if (seq.state !== 'running') break; // seq was the newest and got preempted
      batch.push({ seq, start: seq.computed, n });
      budget -= n;
    }
    // no admission in a step that had to preempt: the pages it freed are for the older sequences' next tokens
    while (!preempted && this.waiting.length > 0 && this.running.length < this.o.maxBatch && budget > 0) {
      const seq = this.waiting[0];
      // prefix cache: the leading full pages computed before (by any sequence) are taken as they are; at least
      // the last token is computed, for its logits
      if (this.o.prefixCache !== false && seq.pages.length === 0) {
        const hit = this.pool.match(seq.tokens, this.o.pageSize, Math.floor((seq.tokens.length - 1) / this.o.pageSize));
        seq.pages = hit.pages;
        seq.serials = hit.serials;
        seq.computed = hit.pages.length * this.o.pageSize;
      }
      if (!this.reserve(seq, seq.tokens.length)) { // FIFO: the head waits for pages, nobody overtakes it
        this.drop(seq);
        break;
      }
      if (this.o.prefixCache !== false) this.pool.countLookup(Math.floor((seq.tokens.length - 1) / this.o.pageSize), seq.serials.length);
      this.waiting.shift();
      seq.state = 'running';
      this.running.push(seq);
      const n = Math.min(seq.tokens.length - seq.computed, budget);
      batch.push({ seq, start: seq.computed, n });
      budget -= n;
    }
    return batch;
  }

  /** Make seq own pages for its first `tokens` positions; false (nothing taken) when the pool is short. */
  private reserve(seq: Sequence, tokens: number): boolean {
    const need = Math.ceil(tokens / this.o.pageSize) - seq.pages.length;
    if (need <= 0) return true;
    const got = this.pool.alloc(need);
    if (!got) return false;
    seq.pages.push(...got);
    return true;
  }

  /** Register the sequence's newly full pages in the prefix cache, chained from its previous ones. */
  private registerFull(seq: Sequence): void {
    const P = this.o.pageSize;
    for (let i = seq.serials.length; i < Math.floor(seq.computed / P); i++)
      seq.serials.push(this.pool.register(seq.pages[i], i === 0 ? 0 : seq.serials[i - 1], seq.tokens, i, P));
  }

  /** Give back every page the sequence holds; it computes from scratch (or from a prefix-cache hit) later. */
  private drop(seq: Sequence): void {
    this.pool.release(seq.pages);
    seq.pages = [];
    seq.serials = [];
    seq.computed = 0;
  }

  private preempt(seq: Sequence): void {
    this.drop(seq); // recomputed from seq.tokens (prompt + generated so far) when readmitted
    seq.state = 'waiting';
    this.running.splice(this.running.indexOf(seq), 1);
    // back in the queue at its arrival place: it is older than everything that waits behind it
    const at = this.waiting.findIndex((w) => w.id > seq.id);
    this.waiting.splice(at < 0 ? this.waiting.length : at, 0, seq);
    this.stats_.preemptions++;
  }

  private finish(seq: Sequence, reason: FinishReason, error?: Error): void {
    if (seq.state === 'done') return;
    this.retire(seq);
    seq.sink.finish(reason, error);
  }

  private retire(seq: Sequence): void {
    const list = seq.state === 'waiting' ? this.waiting : this.running;
    const i = list.indexOf(seq);
    if (i >= 0) list.splice(i, 1);
    this.drop(seq);
    seq.state = 'done';
  }
}
