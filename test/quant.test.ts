// FMPQ quantizer (src/quant/): the float function is preserved by every offline transform (down_proj permutation
// folding, outlier stress), the plan respects its INT8 budget, GPTQ's algebra is right and beats RTN where it
// is fitted, and the fast fake-quant evaluator agrees with the bit-exact simulator.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { HostWeight } from '../backends/backend.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { loadModel } from '../src/loaders/index.ts';
import { loadTokenizer } from '../src/tokenizer/index.ts';
import { Llama } from '../src/model/llama.ts';
import { singleSequenceCache } from '../src/engine/generate.ts';
import { calibrate, type SiteStats } from '../src/quant/calibrate.ts';
import { foldDownPerm, outlierStress, stressChannels } from '../src/quant/fold.ts';
import { absmaxOrder, planFMPQ } from '../src/quant/plan.ts';
import { gptqW4, invCholUpper, permutedHessian } from '../src/quant/gptq.ts';
import { quantizeModel, weightErrorOf } from '../src/quant/quantize.ts';
import { FakeQuantBackend } from '../src/quant/fake.ts';
import { smoothModel } from '../src/quant/smooth.ts';
import { actSpec } from '../simulator/act.ts';
import { quantizeW4 } from '../simulator/w4.ts';
import { rng } from '../testing/rng.ts';
import { readFileSync } from 'node:fs';

const MODELS = fileURLToPath(new URL('../../shared/models/', import.meta.url));
if (!existsSync(MODELS)) throw new Error(`test data missing: ${MODELS} (DESIGN.md §8); these tests never skip`);
const S260K = join(MODELS, 'tinyllamas/stories260K.bin');

const lm = await loadModel(S260K);
const c = lm.config;
const tok = await loadTokenizer(lm.tokenizerPath!);
const text = readFileSync(join(MODELS, 'texts/tinystories_valid_head.txt'), 'utf8');
const tokens = tok.encode(text.slice(0, 20000), { bos: false });

/** logits of every position of `toks`, on the float path (or a given backend) */
async function logits(w: Map<string, HostWeight>, toks: number[], be = new SimBackend(), kv: 'f32' | 'kv4' = 'f32'): Promise<Float32Array> {
  const m = new Llama(be, c, w, kv);
  const { cache, blockTable } = singleSequenceCache(m, toks.length, kv);
  const layout = { pos: Int32Array.from(toks, (_, i) => i), seq: new Int32Array(toks.length), blockTables: [blockTable] };
  return m.be.read(m.forward(Int32Array.from(toks), layout, cache, Int32Array.from(toks, (_, i) => i)));
}
const relDiff = (a: Float32Array, b: Float32Array) => {
  let n = 0, d = 0;
  for (let i = 0; i < a.length; i++) { n += (a[i] - b[i]) ** 2; d += b[i] ** 2; }
  return Math.sqrt(n / d);
};
const prompt = tokens.slice(0, 48);

describe('function-preserving transforms', () => {
  it('folding down_proj permutations into gate/up rows and down columns keeps the float logits', async () => {
    const rnd = rng(7), perms = new Map<number, Int32Array>();
    for (let l = 0; l < c.nLayers; l++) {
      const p = Int32Array.from({ length: c.hiddenDim }, (_, i) => i);
      for (let i = p.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [p[i], p[j]] = [p[j], p[i]]; }
      perms.set(l, p);
    }
    const folded = foldDownPerm(c, lm.weights, perms);
    expect(folded.get('l0.w_down')).not.toBe(lm.weights.get('l0.w_down'));
    expect(relDiff(await logits(folded, prompt), await logits(lm.weights, prompt))).toBeLessThan(1e-5);
  });

  it.each([16, 128])('outlier stress α=%i keeps the float logits and makes outliers', async (alpha) => {
    const chans = stressChannels(c.dim);
    const w = outlierStress(c, lm.weights, chans, alpha);
    expect(relDiff(await logits(w, prompt), await logits(lm.weights, prompt))).toBeLessThan(1e-5);
    const st = await calibrate(new Llama(new SimBackend(), c, w), prompt, { ctx: prompt.length });
    const am = st.get('l1.attn_in')!.absmax, order = absmaxOrder(am);
    expect([...order.slice(0, chans.length)].sort((a, b) => a - b)).toEqual([...chans].sort((a, b) => a - b));
  });
});

describe('SmoothQuant folding', () => {
  it('keeps the float logits and undoes the outlier stress', async () => {
    const stressed = outlierStress(c, lm.weights, stressChannels(c.dim), 128);
    const st = await calibrate(new Llama(new SimBackend(), c, stressed), prompt, { ctx: prompt.length });
    const { weights, stats } = smoothModel(c, stressed, st, 0.5);
    expect(relDiff(await logits(weights, prompt), await logits(lm.weights, prompt))).toBeLessThan(1e-5);
    const am = (m: Map<string, SiteStats>) => { const a = m.get('l1.attn_in')!.absmax; return Math.max(...a) / (a.reduce((x, y) => x + y, 0) / a.length); };
    expect(am(stats)).toBeLessThan(am(st) / 4); // the α=128 outliers are gone from the activation
  });
});

describe('plan', () => {
  let stats: Map<string, SiteStats>;
  it('calibrates every site', async () => {
    stats = await calibrate(new Llama(new SimBackend(), c, lm.weights), tokens.slice(0, 1024), { ctx: 512, hessian: true });
    expect(stats.size).toBe(4 * c.nLayers);
    for (const s of stats.values()) { expect(s.count).toBe(1024); expect(s.sampleRows).toBe(128); }
  });
  it('absmax order puts the largest channels first', () => {
    const am = stats.get('l2.down_in')!.absmax, p = absmaxOrder(am);
    for (let j = 1; j < p.length; j++) expect(am[p[j - 1]]).toBeGreaterThanOrEqual(am[p[j]]);
  });
  it.each([0, 0.05, 0.15, 0.3])('--int8-fraction %f stays within its MAC budget', (f) => {
    const plan = planFMPQ(c, lm.weights, stats, { B: 32, order: 'absmax', int8Fraction: f });
    expect(plan.int8MacFraction).toBeLessThanOrEqual(f + 1e-9);
    if (f >= 0.15) expect(plan.int8MacFraction).toBeGreaterThan(f - 0.05); // greedy fills the budget
  });
  it('--int8-blocks N gives every site N INT8 blocks (or all it has)', () => {
    const plan = planFMPQ(c, lm.weights, stats, { B: 32, order: 'identity', int8Blocks: 1 });
    for (const p of plan.sites) { expect(p.spec.K8).toBe(32); expect(p.spec.perm).toBeUndefined(); }
  });
  it('quantizeModel folds down_in (identity perm at run time) and keeps perms elsewhere', () => {
    const r = quantizeModel(c, lm.weights, stats, { B: 32, order: 'absmax', int8Fraction: 0.15, weights: 'rtn', kv: 'kv4' });
    const down = r.weights.get('l0.w_down')!, wq = r.weights.get('l0.wq')!, wk = r.weights.get('l0.wk')!;
    if (down.kind !== 'w4' || wq.kind !== 'w4' || wk.kind !== 'w4') throw new Error('expected w4');
    expect(down.act.perm).toBeUndefined();
    expect(wq.act.perm).toBeDefined();
    expect(wk.act).toEqual(wq.act); // q/k/v share one quantizer
    for (const e of Object.values(r.weightError)) expect(e).toBeLessThan(0.25);
    expect(Object.keys(r.weightError)).toHaveLength(c.nLayers * 7);
    // weightError: false (synthetic benchmarks) skips the measurement only: the same bytes
    const q = quantizeModel(c, lm.weights, stats, { B: 32, order: 'absmax', int8Fraction: 0.15, weights: 'rtn', kv: 'kv4', weightError: false });
    expect(q.weightError).toEqual({});
    for (const [n, w] of r.weights) {
      const v = q.weights.get(n)!;
      if (w.kind === 'w4' && v.kind === 'w4') { expect(Buffer.compare(Buffer.from(w.codes), Buffer.from(v.codes)), n).toBe(0); expect(Buffer.compare(Buffer.from(w.scales.buffer), Buffer.from(v.scales.buffer)), n).toBe(0); }
      else expect(v.kind).toBe(w.kind);
    }
  });
  it('GPTQ lowers the calibration output error below RTN', () => {
    for (const site of ['l1.ffn_in', 'l3.down_in']) {
      const st = stats.get(site)!, name = site.endsWith('ffn_in') ? 'l1.w_gate' : 'l3.w_down';
      const w = lm.weights.get(name) as Extract<HostWeight, { kind: 'f32' }>, [N, K] = w.shape;
      const spec = actSpec(K, 32, 0, absmaxOrder(st.absmax));
      const g = gptqW4(w.data, N, spec, invCholUpper(permutedHessian(st.H!, spec), spec.Kp));
      expect(weightErrorOf(w.data, g, st)).toBeLessThan(weightErrorOf(w.data, quantizeW4(w.data, N, spec), st));
    }
  });
});

describe('GPTQ algebra', () => {
  it('invCholUpper gives U with Uᵀ U = H⁻¹', () => {
    const n = 24, rnd = rng(3), A = new Float64Array(n * n), H = new Float64Array(n * n);
    for (let i = 0; i < A.length; i++) A[i] = rnd() - 0.5;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = i === j ? 0.5 : 0; for (let k = 0; k < n; k++) s += A[i * n + k] * A[j * n + k]; H[i * n + j] = s; }
    const U = invCholUpper(H, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(U[i * n + j]).toBe(0);
    // (Uᵀ U) H = I
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) { let m = 0; for (let l = 0; l < n; l++) m += U[l * n + i] * U[l * n + k]; s += m * H[k * n + j]; }
        expect(s).toBeCloseTo(i === j ? 1 : 0, 8);
      }
  });
});

describe('fake quant vs the bit-exact simulator', () => {
  it('stories260K FMPQ W4AxKV4: logits within f16-level tolerance', async () => {
    const stats = await calibrate(new Llama(new SimBackend(), c, lm.weights), tokens.slice(-1024), { ctx: 512 });
    const r = quantizeModel(c, lm.weights, stats, { B: 32, order: 'absmax', int8Fraction: 0.15, weights: 'rtn', kv: 'kv4' });
    const exact = await logits(r.weights, prompt, new SimBackend(), 'kv4');
    const fake = await logits(r.weights, prompt, new FakeQuantBackend(), 'kv4');
    expect(relDiff(fake, exact)).toBeLessThan(2e-3);
  });
});
