// Sampling as llama2.c run.c does it (greedy at temperature 0; else softmax(logits / T), then top-p nucleus
// or plain multinomial), plus top-k, with run.c's xorshift64* generator so a seed reproduces run.c's draws.
import { siftDown, topk } from '../../simulator/kernels/float.ts';

/** run.c's RNG: xorshift64*, random_u32 = (state * 0x2545F4914F6CDD1D) >> 32, random_f32 = (u32 >> 8) / 2^24. */
export class Rng {
  private state: bigint;
  constructor(seed: number | bigint) {
    this.state = BigInt.asUintN(64, BigInt(seed));
    if (this.state === 0n) this.state = 0x9e3779b97f4a7c15n; // xorshift must not start at 0
  }
  u32(): number {
    let s = this.state;
    s ^= s >> 12n;
    s = BigInt.asUintN(64, s ^ (s << 25n));
    s ^= s >> 27n;
    this.state = s;
    return Number(BigInt.asUintN(64, s * 0x2545f4914f6cdd1dn) >> 32n);
  }
  f32(): number {
    return (this.u32() >>> 8) / 16777216;
  }
}

export interface SamplingParams {
  temperature: number; // 0 = greedy
  topP: number; // (0, 1) enables nucleus sampling; 0 or 1 disables it (run.c)
  topK: number; // 0 = off
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

export function sample(logits: Float32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature === 0) return argmax(logits);
  const n = logits.length;
  if (p.topK > 0 && p.topK < n) {
    const t = topk(logits, 1, n, p.topK);
    return sampleFrom(t.values, t.indices, p, rng);
  }
  return sampleFrom(logits, undefined, p, rng);
}

/** sample() of a row whose top-k list (simulator/kernels/float.ts topk: value descending, index ascending; a device's
 *  Backend.topk) is `values`, `indices`, k = p.topK: the same token as sample() of the whole row. */
export function sampleTopK(values: Float32Array, indices: Int32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature === 0) return indices[0];
  return sampleFrom(values, indices, p, rng);
}

/** softmax(values / T) over the candidates in their order (f64), then top-p nucleus or plain multinomial; `idx` the
 *  candidates' token ids (absent: the whole row, ids 0..n-1). Typed arrays and a heap instead of arrays of objects
 *  and a sort: at a 128K vocabulary a top-p draw took 62 ms, a plain one 20 ms (2026-12-03, this 2-core machine);
 *  the arithmetic and its order are unchanged (test/sampler.test.ts checks the tokens against the former code). */
function sampleFrom(values: Float32Array, idx: Int32Array | undefined, p: SamplingParams, rng: Rng): number {
  const m = values.length, T = p.temperature, id = (j: number) => (idx ? idx[j] : j);
  let max = -Infinity;
  for (let j = 0; j < m; j++) max = Math.max(max, values[j] / T);
  const prob = new Float64Array(m);
  let sum = 0;
  for (let j = 0; j < m; j++) sum += (prob[j] = Math.exp(values[j] / T - max));
  for (let j = 0; j < m; j++) prob[j] /= sum;
  const coin = rng.f32();
  // one candidate (top_k 1): it (the nucleus cutoff below would divide by zero and keep nothing)
  if (p.topP <= 0 || p.topP >= 1 || m === 1) {
    let cdf = 0;
    for (let j = 0; j < m; j++) {
      cdf += prob[j];
      if (coin < cdf) return id(j);
    }
    return id(m - 1);
  }
  // nucleus: drop what cannot be in the nucleus, then take candidates by probability descending (id ascending on
  // ties) from a heap until their mass passes topP: the shortest such prefix of the sorted list
  const cutoff = (1 - p.topP) / (m - 1);
  const heap = new Int32Array(m);
  let c = 0;
  for (let j = 0; j < m; j++) if (prob[j] >= cutoff) heap[c++] = j;
  const before = (a: number, b: number) => prob[a] > prob[b] || (prob[a] === prob[b] && id(a) < id(b));
  if (c === 0) { // a flat few (e.g. two equal candidates at top_p 0.3: cutoff 0.7) keep nothing: the most probable
    for (let j = 1; j < m; j++) if (before(j, heap[0])) heap[0] = j;
    c = 1;
  }
  const down = (i: number, n: number) => siftDown(heap, i, n, before);
  for (let i = (c >> 1) - 1; i >= 0; i--) down(i, c);
  const taken: number[] = [];
  let cum = 0;
  for (let n = c; n > 0; ) {
    const j = heap[0];
    taken.push(j);
    cum += prob[j];
    if (cum > p.topP) break;
    heap[0] = heap[--n];
    down(0, n);
  }
  const r = coin * cum;
  let cdf = 0;
  for (const j of taken) {
    cdf += prob[j];
    if (r < cdf) return id(j);
  }
  return id(taken[taken.length - 1]);
}

/** OpenAI's penalties and logit_bias, in place on one row of logits (V,): for each token j generated so far
 *  `count[j]` times, logit -= count·frequency + (count > 0)·presence; then logit += bias[j]. */
export function adjustLogits(logits: Float32Array, counts: Map<number, number>, frequency: number, presence: number, bias: Map<number, number>): void {
  if (frequency !== 0 || presence !== 0) for (const [j, c] of counts) logits[j] -= c * frequency + presence;
  for (const [j, b] of bias) logits[j] += b;
}

export interface TokenLogprob { id: number; logprob: number }

/** log-softmax of one row at `id`, and the `top` most likely tokens (logprob descending, then id), in f64.
 *  -Infinity logits (masked by a grammar) have logprob -Infinity and are never among the top. */
export function logprobs(logits: Float32Array, id: number, top: number): { logprob: number; top: TokenLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const best: TokenLogprob[] = [];
  if (top > 0) {
    // a running top-k (k ≤ 20): insert into a short sorted list; most tokens fail the first comparison
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i];
      if (x === -Infinity || (best.length === top && x <= best[top - 1].logprob)) continue;
      let at = best.length;
      while (at > 0 && best[at - 1].logprob < x) at--;
      best.splice(at, 0, { id: i, logprob: x });
      if (best.length > top) best.pop();
    }
    for (const b of best) b.logprob -= lse;
  }
  return { logprob: logits[id] - lse, top: best };
}
