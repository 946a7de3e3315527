// The sampler (src/engine/sampler.ts) draws the same tokens as before its top-k became a selection
// (simulator/kernels/float.ts topk) instead of a sort of the whole row, and a device's top-k list (Backend.topk,
// checked against the same definition in ops.test.ts) gives the token the whole row gives.
import { describe, expect, it } from 'vitest';
import { topk } from '../simulator/kernels/float.ts';
import { Rng, sample, sampleTopK, type SamplingParams } from '../src/engine/sampler.ts';
import { rng as prng } from '../testing/rng.ts';

/** The sampler as it was (2026-12-02): top-k by sorting every index. The reference for "tokens equal to today's". */
function before(logits: Float32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature === 0) { let b = 0; for (let i = 1; i < logits.length; i++) if (logits[i] > logits[b]) b = i; return b; }
  const n = logits.length;
  let idx = Array.from({ length: n }, (_, i) => i);
  if (p.topK > 0 && p.topK < n) idx = idx.sort((a, b) => logits[b] - logits[a] || a - b).slice(0, p.topK);
  let max = -Infinity;
  for (const i of idx) max = Math.max(max, logits[i] / p.temperature);
  const prob = idx.map((i) => Math.exp(logits[i] / p.temperature - max));
  const sum = prob.reduce((a, b) => a + b, 0);
  for (let j = 0; j < prob.length; j++) prob[j] /= sum;
  const coin = rng.f32();
  if (p.topP <= 0 || p.topP >= 1 || prob.length === 1) { // (the one-candidate case threw a TypeError before: fixed in both)
    let cdf = 0;
    for (let j = 0; j < prob.length; j++) { cdf += prob[j]; if (coin < cdf) return idx[j]; }
    return idx[idx.length - 1];
  }
  const cutoff = (1 - p.topP) / (prob.length - 1);
  const cand = prob.map((q, j) => ({ q, i: idx[j] })).filter((c) => c.q >= cutoff).sort((a, b) => b.q - a.q || a.i - b.i);
  let cum = 0, last = cand.length - 1;
  for (let j = 0; j < cand.length; j++) { cum += cand[j].q; if (cum > p.topP) { last = j; break; } }
  const r = coin * cum;
  let cdf = 0;
  for (let j = 0; j <= last; j++) { cdf += cand[j].q; if (r < cdf) return cand[j].i; }
  return cand[last].i;
}

/** rows with ties, a -0 beside +0 and a few large logits, as real ones have */
function row(seed: number, n: number): Float32Array {
  const r = prng(seed), x = Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * 64) / 8);
  for (let i = 0; i < 6; i++) x[Math.floor(r() * n)] = 6 + Math.floor(r() * 3);
  x[Math.floor(r() * n)] = -0;
  x[Math.floor(r() * n)] = 0;
  return x;
}

describe('topk', () => {
  it.each([[1, 512], [5, 512], [40, 5000], [511, 512], [512, 512]])('k %i of %i: the sort-based list, ties by index, -0 = +0', (k, n) => {
    const R = 3, x = new Float32Array(R * n);
    for (let r = 0; r < R; r++) x.set(row(100 + r, n), r * n);
    const got = topk(x, R, n, k);
    for (let r = 0; r < R; r++) {
      const o = r * n, want = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[o + b] - x[o + a] || a - b).slice(0, k);
      expect(Array.from(got.indices.subarray(r * k, (r + 1) * k))).toEqual(want);
      expect(Array.from(got.values.subarray(r * k, (r + 1) * k))).toEqual(want.map((i) => x[o + i]));
    }
  });
  it('refuses k outside [1, C]', () => {
    expect(() => topk(new Float32Array(8), 1, 8, 0)).toThrow(RangeError);
    expect(() => topk(new Float32Array(8), 1, 8, 9)).toThrow(RangeError);
  });
});

describe('sampler', () => {
  const params: SamplingParams[] = [];
  for (const temperature of [0, 0.5, 1, 1.3]) for (const topK of [0, 1, 5, 40, 511, 512, 600]) for (const topP of [0, 0.5, 0.9, 1]) params.push({ temperature, topK, topP });
  it(`tokens and RNG draws equal the sort-based sampler (${params.length} parameter sets × 12 rows)`, () => {
    for (const [pi, p] of params.entries())
      for (let s = 0; s < 12; s++) {
        const x = row(1000 + s, 512), a = new Rng(pi * 31 + s + 1), b = new Rng(pi * 31 + s + 1);
        expect(sample(x, p, a), `params ${JSON.stringify(p)}, row ${s}`).toBe(before(x, p, b));
        expect(a.u32()).toBe(b.u32());
      }
  });
  it('a row\'s top-k list (what a device copies back) draws the token of the whole row', () => {
    for (const p of params.filter((q) => q.topK > 0 && q.topK < 512))
      for (let s = 0; s < 12; s++) {
        const x = row(2000 + s, 512), t = topk(x, 1, 512, p.topK);
        expect(sampleTopK(t.values, t.indices, p, new Rng(s + 9))).toBe(sample(x, p, new Rng(s + 9)));
      }
  });
});
