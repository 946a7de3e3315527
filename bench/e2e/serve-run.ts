// Max throughput as a run (issue 16): the real engine (scheduler with batched chunked prefill, the KV4 page pool,
// decode-step CUDA graphs, the sampler, OpenAI-shaped streaming) serves a request set submitted all at once, and
// the client side times every streamed token.
//
//   requests   n prompts of inLen random token ids, outLen greedy tokens each (no stop token: every request
//              runs to max_tokens), or a mixed-length set (prompt and output lengths drawn per request, seeded)
//   measured   output tokens / wall time from the first submission to the last token; TTFT per request (from
//              its submission, i.e. the start, to its first streamed token); inter-token latency (gaps between
//              a request's consecutive tokens); the most sequences in one step and in one prefill; KV pages in
//              use at the peak; where the step time went (scheduler.ts StepTime) and the loop's gaps
// Used by `comet bench e2e --throughput N` (bench/e2e/e2e.ts) on the synthetic model, and by
// test/bench-e2e.test.ts on the simulator.
import type { LlamaConfig } from '../../src/model/config.ts';
import type { Llama } from '../../src/model/llama.ts';
import type { OpenModel } from '../../src/runtime/open.ts';
import type { LoadedModel } from '../../src/loaders/index.ts';
import type { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { Engine, type EngineStats } from '../../src/engine/engine.ts';

export interface RequestSpec { prompt: number[]; maxTokens: number }

export interface ServeRunOptions {
  maxBatch: number;
  kvMemory: number; // bytes for the page pool
  maxStepTokens: number;
  prefixCache?: boolean; // default on, as the engine's
  log?: (s: string) => void;
}

export interface ServeRunResult {
  requests: number;
  prompt_tokens: number;
  output_tokens: number;
  wall_s: number;
  output_tok_s: number;
  total_tok_s: number; // (prompt + output) tokens / wall
  ttft_ms: Pct;
  itl_ms: Pct;
  e2e_ms: Pct; // request latency
  peak_batch: number; // most sequences in one step
  peak_prefills: number; // most prompts prefilled in one step
  kv_pages_total: number;
  kv_pages_peak: number;
  kv_pages_leaked: number;
  max_batch: number;
  max_step_tokens: number;
  steps: number;
  computed_tokens: number; // tokens through the model (prefill + decode + recompute)
  prefix_hit_pages: number;
  preemptions: number;
  step_time: EngineStats['time'];
  loop_gap_ms: number;
  graphs?: { captures: number; replays: number; eager: number; failures: number };
  errors: string[];
}

export interface Pct { p50: number; p90: number; p99: number; mean: number; max: number }

export function pct(xs: number[]): Pct {
  if (!xs.length) return { p50: NaN, p90: NaN, p99: NaN, mean: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b), at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length, max: s[s.length - 1] };
}

/** n requests sharing one `prefixLen`-token prefix (a system prompt), each with `suffixLen` tokens of its own. */
export function sharedPrefixSet(c: LlamaConfig, n: number, prefixLen: number, suffixLen: number, outLen: number, seed = 3): RequestSpec[] {
  const [shared] = requestSet(c, 1, prefixLen, outLen, false, seed);
  return requestSet(c, n, suffixLen, outLen, false, seed + 1).map((r) => ({ prompt: [...shared.prompt, ...r.prompt], maxTokens: outLen }));
}

/** A seeded request set: n × (inLen prompt, outLen out), or, with `mixed`, prompt lengths uniform in
 *  [inLen/8, 2·inLen] and outputs in [outLen/8, 2·outLen] (clamped to the context). */
export function requestSet(c: LlamaConfig, n: number, inLen: number, outLen: number, mixed: boolean, seed = 1): RequestSpec[] {
  let s = seed >>> 0 || 1;
  const rnd = () => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  const range = (lo: number, hi: number) => Math.max(1, Math.floor(lo + rnd() * (hi - lo + 1)));
  return Array.from({ length: n }, () => {
    let p = mixed ? range(inLen / 8, 2 * inLen) : inLen, o = mixed ? range(outLen / 8, 2 * outLen) : outLen;
    p = Math.min(p, c.seqLen - 2);
    o = Math.min(o, c.seqLen - p);
    return { prompt: Array.from({ length: p }, () => 1 + Math.floor(rnd() * (c.vocabSize - 1))), maxTokens: o };
  });
}

/** Characters a synthetic token prints: its id in base 36, 4 digits (every token one streamed chunk, and the
 *  ids readable back from the text). */
export const PIECE = 4;
const pieceText = (id: number) => id.toString(36).padStart(PIECE, '0');
/** Token ids back from a synthetic model's streamed text. */
export const idsOf = (text: string) => Array.from({ length: text.length / PIECE }, (_, i) => parseInt(text.slice(i * PIECE, (i + 1) * PIECE), 36));

/** The engine over a synthetic model: token-id prompts, a tokenizer that prints each token as PIECE characters,
 *  no stop token. */
export function syntheticOpenModel(model: Llama): OpenModel {
  const c = model.config, enc = new TextEncoder(), pieces = new Map<number, Uint8Array>();
  const piece = (id: number) => { let p = pieces.get(id); if (!p) pieces.set(id, (p = enc.encode(pieceText(id)))); return p; };
  const tokenizer: Tokenizer = {
    vocabSize: c.vocabSize, bos: c.bos, eos: [], encode: () => { throw new Error('synthetic model: prompts are token ids'); },
    decode: (ids) => ids.map(pieceText).join(''), tokenText: pieceText, pieceBytes: (_prev, tok) => piece(tok),
  };
  const loaded = { config: c, weights: new Map(), format: 'synthetic' } as unknown as LoadedModel;
  return { loaded, model, tokenizer, stop: [] };
}

export async function serveRun(opened: OpenModel, reqs: RequestSpec[], o: ServeRunOptions): Promise<ServeRunResult> {
  const engine = new Engine(opened, 'synthetic', { maxBatch: o.maxBatch, kvMemory: o.kvMemory, maxStepTokens: o.maxStepTokens, maxQueue: reqs.length + 1, prefixCache: o.prefixCache });
  const errors: string[] = [];
  let peakPages = 0, outTokens = 0;
  const ttft: number[] = [], itl: number[] = [], e2e: number[] = [];
  const t0 = performance.now();
  await Promise.all(reqs.map(async (r, i) => {
    try {
      const stream = await engine.completions.create({ prompt: r.prompt, max_tokens: r.maxTokens, temperature: 0, stream: true });
      let last = -1, n = 0;
      for await (const ch of stream) {
        const text = ch.choices[0]?.text ?? '';
        if (!text) continue;
        const now = performance.now();
        const k = text.length / PIECE; // a chunk may carry several tokens when the client lags
        if (last < 0) ttft.push(now - t0);
        else itl.push((now - last) / k);
        last = now;
        n += k;
        const used = engine.pool.total - engine.pool.free;
        if (used > peakPages) peakPages = used;
      }
      outTokens += n;
      e2e.push(performance.now() - t0);
      if (n !== r.maxTokens) errors.push(`request ${i}: ${n} tokens, asked for ${r.maxTokens}`);
    } catch (e) {
      errors.push(`request ${i}: ${(e as Error).message}`);
    }
  }));
  const wall = (performance.now() - t0) / 1e3;
  const st = engine.stats();
  engine.close();
  const promptTokens = reqs.reduce((a, r) => a + r.prompt.length, 0);
  const g = st.graphs;
  const res: ServeRunResult = {
    requests: reqs.length, prompt_tokens: promptTokens, output_tokens: outTokens, wall_s: wall,
    output_tok_s: outTokens / wall, total_tok_s: (promptTokens + outTokens) / wall,
    ttft_ms: pct(ttft), itl_ms: pct(itl), e2e_ms: pct(e2e),
    peak_batch: st.maxStepSequences, peak_prefills: st.maxStepPrefills,
    kv_pages_total: st.kv.total, kv_pages_peak: peakPages, kv_pages_leaked: st.kv.used,
    max_batch: o.maxBatch, max_step_tokens: o.maxStepTokens, steps: st.steps, computed_tokens: st.computedTokens, prefix_hit_pages: st.kv.hitPages, preemptions: st.preemptions,
    step_time: st.time, loop_gap_ms: st.loopGapMs,
    ...(g ? { graphs: { captures: g.captures, replays: g.replays, eager: g.eager, failures: g.failures } } : {}),
    errors: errors.slice(0, 10),
  };
  o.log?.(`serve run: ${reqs.length} requests, ${outTokens} output tokens in ${wall.toFixed(1)} s: ${res.output_tok_s.toFixed(0)} output tok/s; ` +
    `TTFT p50 ${res.ttft_ms.p50.toFixed(0)} p99 ${res.ttft_ms.p99.toFixed(0)} ms; ITL p50 ${res.itl_ms.p50.toFixed(1)} p99 ${res.itl_ms.p99.toFixed(1)} ms; ` +
    `peak batch ${res.peak_batch}, peak prefills/step ${res.peak_prefills}; KV pages peak ${peakPages}/${st.kv.total}, leaked ${st.kv.used}; ${hostShare(st.time.decode)} (decode), ${hostShare(st.time.mixed)} (mixed)`);
  return res;
}

/** "host x% of y steps of z ms" for one kind of step. */
export function hostShare(t: EngineStats['time']['decode']): string {
  if (!t.steps) return 'no steps';
  return `host ${((100 * t.hostMs) / t.wallMs).toFixed(1)}% + launch ${((100 * t.launchMs) / t.wallMs).toFixed(1)}% of ${t.steps} steps of ${(t.wallMs / t.steps).toFixed(2)} ms`;
}

export interface PrefixRun { requests: number; ttft_ms: Pct; prefill_tokens: number; hit_pages: number; tokens: number[][] }
export interface PrefixRuns { on: PrefixRun; off: PrefixRun; equal: boolean }

/** Requests one after another (each submitted when the previous finished, as a chat's turns arrive) on an
 *  engine with the prefix cache on and one with it off: TTFT, tokens prefilled, hits, and whether every
 *  request streamed the same tokens both ways (greedy). */
export async function prefixRuns(opened: OpenModel, reqs: RequestSpec[], o: ServeRunOptions): Promise<PrefixRuns> {
  const one = async (on: boolean): Promise<PrefixRun> => {
    const e = new Engine(opened, 'synthetic', { maxBatch: o.maxBatch, kvMemory: o.kvMemory, maxStepTokens: o.maxStepTokens, prefixCache: on });
    const ttft: number[] = [], tokens: number[][] = [];
    let prefill = 0;
    for (const r of reqs) {
      const before = e.stats().computedTokens, t0 = performance.now();
      let first = -1;
      const out = await e.completions.create({ prompt: r.prompt, max_tokens: r.maxTokens, temperature: 0, stream: true });
      const ids: number[] = [];
      for await (const ch of out) {
        if (!ch.choices[0]?.text) continue;
        if (first < 0) first = performance.now() - t0;
        ids.push(...idsOf(ch.choices[0].text));
      }
      ttft.push(first);
      tokens.push(ids);
      prefill += e.stats().computedTokens - before - (r.maxTokens - 1); // the rest were decodes
    }
    const st = e.stats();
    e.close();
    return { requests: reqs.length, ttft_ms: pct(ttft), prefill_tokens: prefill, hit_pages: st.kv.hitPages, tokens };
  };
  const on = await one(true), off = await one(false);
  o.log?.(`prefix cache on/off: TTFT p50 ${on.ttft_ms.p50.toFixed(1)} / ${off.ttft_ms.p50.toFixed(1)} ms, prefill tokens ${on.prefill_tokens} / ${off.prefill_tokens}`);
  return { on, off, equal: JSON.stringify(on.tokens) === JSON.stringify(off.tokens) };
}
