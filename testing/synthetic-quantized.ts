// Synthetic W4A4KV4 models of any LLaMA shape (the e2e benchmark's, bench/e2e/e2e.ts, and the engine tests'):
// synthetic weights with realistic activation outliers, quantized by the real FMPQ path (src/quant: plan ->
// permutation + INT8 blocks -> fold -> RTN) from synthetic calibration statistics. ONE layer is made and
// quantized and shared by every layer (quantizing every layer of an 8B model in TS would take an hour).
import { f16BitsArray } from '../simulator/f16.ts';
import type { HostWeight } from '../backends/backend.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { quantizeModel } from '../src/quant/quantize.ts';
import type { SiteStats } from '../src/quant/calibrate.ts';
import { sites } from '../src/quant/sites.ts';

/** A fast seeded uniform generator (xorshift32) filling big arrays. */
function fillUniform(a: Float32Array, scale: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296 - 0.5) * 2 * scale;
  }
  return a;
}

/** fillUniform over the first 4M values, then copies of them: the embedding and classifier tables (10^9 values
 *  at 8B) in a second instead of tens; their values do not matter for speed. */
function fillTiled(a: Float32Array, scale: number, seed: number): Float32Array {
  const n = Math.min(a.length, 1 << 22);
  fillUniform(a.subarray(0, n), scale, seed);
  for (let o = n; o < a.length; o += n) a.copyWithin(o, 0, Math.min(n, a.length - o));
  return a;
}

/** Calibration statistics as a real LLaMA shows them: most channels ~N(0,1), a few residual-stream channels
 *  ~20× larger at the norm outputs (attn_in, ffn_in), a couple of ~50× spikes at down_proj's input. */
function syntheticStats(c: LlamaConfig, rows = 64): Map<string, SiteStats> {
  const out = new Map<string, SiteStats>();
  const residualOutliers = Array.from({ length: Math.max(2, Math.round(c.dim / 256)) }, (_, i) => (i * 2654435761) % c.dim);
  for (const s of sites(c)) {
    const gain = new Float32Array(s.K).fill(1);
    if (s.kind === 'attn_in' || s.kind === 'ffn_in') for (const ch of residualOutliers) gain[ch] = 20;
    if (s.kind === 'down_in') for (let i = 0; i < 4; i++) gain[(i * 40503 + 7) % s.K] = 50;
    if (s.kind === 'o_in') for (let i = 0; i < 8; i++) gain[(i * 977) % s.K] = 4;
    const sample = fillUniform(new Float32Array(rows * s.K), 1.7, 1000 + s.layer * 4 + s.K);
    const absmax = new Float32Array(s.K), sumsq = new Float64Array(s.K);
    for (let r = 0; r < rows; r++)
      for (let k = 0; k < s.K; k++) {
        const v = (sample[r * s.K + k] *= gain[k]);
        absmax[k] = Math.max(absmax[k], Math.abs(v));
        sumsq[k] += v * v;
      }
    out.set(s.name, { K: s.K, count: rows, absmax, sumsq, sample, sampleRows: rows });
  }
  return out;
}

/** Host weights of the whole model: one layer quantized by the real FMPQ path, shared by every layer. */
export function syntheticQuantizedModel(c: LlamaConfig, o: { block: number; int8Fraction: number; clipSearch?: boolean }, log: (s: string) => void = () => {}): { weights: Map<string, HostWeight>; int8MacFraction: number } {
  const one: LlamaConfig = { ...c, nLayers: 1 };
  const f = new Map<string, HostWeight>();
  const w = (name: string, shape: number[], scale: number, seed: number) => f.set(name, { kind: 'f32', name, shape, data: fillUniform(new Float32Array(shape.reduce((a, b) => a * b)), scale, seed) });
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const std = 1 / Math.sqrt(c.dim); // weights of a trained LLaMA are ~N(0, 1/sqrt(fan-in))
  w('l0.wq', [q, c.dim], std * 1.7, 1); w('l0.wk', [kv, c.dim], std * 1.7, 2); w('l0.wv', [kv, c.dim], std * 1.7, 3);
  w('l0.wo', [c.dim, q], std * 1.7, 4); w('l0.w_gate', [c.hiddenDim, c.dim], std * 1.7, 5); w('l0.w_up', [c.hiddenDim, c.dim], std * 1.7, 6);
  w('l0.w_down', [c.dim, c.hiddenDim], 1.7 / Math.sqrt(c.hiddenDim), 7);
  const t0 = performance.now();
  const clipSearch = o.clipSearch ?? true; // false: plain RTN, minutes less on a slow host, same bytes and speed
  const r = quantizeModel(one, f, syntheticStats(one), { B: o.block, order: 'absmax', int8Fraction: o.int8Fraction, weights: 'rtn', kv: 'kv4', clipSearch, weightError: false });
  log(`quantized one layer${clipSearch ? '' : ' (RTN without clip search)'} (${[...f.values()].reduce((a, x) => a + (x.kind === 'f32' ? x.data.length : 0), 0).toLocaleString('en')} weights) in ${((performance.now() - t0) / 1000).toFixed(1)} s; INT8 MAC fraction ${(r.plan.int8MacFraction * 100).toFixed(1)}%`);
  const out = new Map<string, HostWeight>();
  const ones = { kind: 'f32' as const, shape: [c.dim], data: new Float32Array(c.dim).fill(1) };
  for (let l = 0; l < c.nLayers; l++) {
    for (const n of ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down']) out.set(`l${l}.${n}`, { ...r.weights.get(`l0.${n}`)!, name: `l${l}.${n}` });
    out.set(`l${l}.attn_norm`, { ...ones, name: `l${l}.attn_norm` });
    out.set(`l${l}.ffn_norm`, { ...ones, name: `l${l}.ffn_norm` });
  }
  out.set('norm', { ...ones, name: 'norm' });
  // the classifier and embedding in f16, as quantizeModel writes them to a .comet
  out.set('tok_embed', { kind: 'f16', name: 'tok_embed', shape: [c.vocabSize, c.dim], data: f16BitsArray(fillTiled(new Float32Array(c.vocabSize * c.dim), 0.05, 11)) });
  if (!c.tiedEmbeddings) out.set('output', { kind: 'f16', name: 'output', shape: [c.vocabSize, c.dim], data: f16BitsArray(fillTiled(new Float32Array(c.vocabSize * c.dim), std * 1.7, 12)) });
  return { weights: out, int8MacFraction: r.plan.int8MacFraction };
}
