// The FMPQ quantizer: calibration statistics + float weights -> W4Ax weights (DESIGN §3.2-3.3).
//   0. optionally SmoothQuant-scale channels into the weights (smooth.ts; function-preserving)
//   1. plan (plan.ts): per site, the channel permutation and the INT8 blocks
//   2. fold down_proj's permutation into gate/up rows and down columns (fold.ts); its runtime perm is identity
//   3. quantize every linear: RTN with a clip search (simulator/w4.ts) or GPTQ (gptq.ts), columns in the
//      site's permuted order, one f16 scale per row per B-block
//   4. measure each linear's weight error: the relative output error of its rounding on calibration inputs
import { f16BitsArray } from '../../simulator/f16.ts';
import type { HostWeight } from '../../backends/backend.ts';
import type { ActQuantSpec, KVDType, W4Weight } from '../../simulator/formats.ts';
import { actSpec } from '../../simulator/act.ts';
import { dequantizeW4, quantizeW4 } from '../../simulator/w4.ts';
import { matmul } from '../../simulator/kernels/float.ts';
import type { LlamaConfig } from '../model/config.ts';
import { CometError } from '../errors.ts';
import type { SiteStats } from './calibrate.ts';
import { foldDownPerm } from './fold.ts';
import { gptqW4, invCholUpper, permutedHessian } from './gptq.ts';
import { smoothModel } from './smooth.ts';
import { planFMPQ, type ChannelOrder, type Plan, type SitePlan } from './plan.ts';

export type WeightMethod = 'rtn' | 'gptq';

export interface QuantizeOptions {
  B: number;
  order: ChannelOrder;
  int8Fraction?: number;
  int8Blocks?: number;
  weights: WeightMethod;
  clipSearch?: boolean; // RTN clip search (default true)
  weightError?: boolean; // measure each linear's output error on the calibration sample (default true; two f32
  //                        GEMMs per weight: half the time of an RTN quantization, skipped by synthetic benchmarks)
  smooth?: number; // SmoothQuant β (smooth.ts); absent = off
  kv: KVDType;
  kvGroup?: number; // default headDim
  head?: 'f16' | 'f32'; // the classifier and embedding: f16 (default; half their bytes, read as f32) or f32
  onLinear?: (done: number, total: number, name: string) => void;
}

/** What a .comet file records about its quantization (src/loaders/comet.ts writes it as JSON). */
export interface QuantMeta {
  B: number;
  order: ChannelOrder;
  int8Policy: { fraction?: number; blocks?: number };
  int8MacFraction: number;
  weights: WeightMethod;
  smooth?: number;
  kv: KVDType;
  kvGroup: number;
  sites: Record<string, { K: number; Kp: number; K8: number; int8Gain?: number[] }>;
  calib?: { file: string; sha256: string; tokens: number; slice: string };
}

export interface QuantizeResult {
  weights: Map<string, HostWeight>;
  plan: Plan;
  meta: QuantMeta;
  weightError: Record<string, number>;
}

export function quantizeModel(c: LlamaConfig, floatWeights: Map<string, HostWeight>, stats: Map<string, SiteStats>, o: QuantizeOptions): QuantizeResult {
  if (o.smooth !== undefined) ({ weights: floatWeights, stats } = smoothModel(c, floatWeights, stats, o.smooth));
  if (o.weights === 'gptq' && [...stats.values()].some((s) => !s.H)) throw new CometError('quantize: --weights gptq needs calibration with the Hessian (calibrate({ hessian: true }))');
  const plan = planFMPQ(c, floatWeights, stats, o);
  const total = plan.sites.reduce((a, p) => a + p.site.consumers.length, 0);
  let done = 0;
  const q = quantizeSites(c, floatWeights, plan.sites, stats, o, hostGptq, (name) => o.onLinear?.(++done, total, name));
  const weights = new Map([...floatWeights, ...q.weights]);
  if ((o.head ?? 'f16') === 'f16') for (const n of HEAD) { const w = weights.get(n); if (w?.kind === 'f32') weights.set(n, headF16(w)); }
  return { weights, plan, meta: quantMeta(plan, o, c), weightError: q.weightError };
}

/** The float weights a .comet stores in f16 (QuantizeOptions.head): the classifier and the embedding, the largest
 *  float tensors (LLaMA-3-8B: 2 × 1 GB in f32); every backend reads them back as the f32 values they round to. */
export const HEAD = ['tok_embed', 'output'] as const;
export function headF16(w: { name: string; shape: readonly number[]; data: Float32Array }): HostWeight {
  const bad = w.data.findIndex((x) => !(Math.abs(x) <= 65504));
  if (bad >= 0) throw new CometError(`quantize: '${w.name}' holds ${w.data[bad]} at element ${bad}, outside f16's range: quantize with the f32 head`);
  return { kind: 'f16', name: w.name, shape: w.shape, data: f16BitsArray(w.data) };
}

/** GPTQ's factor of a site, then its weights: on the host (gptq.ts) or on a device (the layer-by-layer
 *  quantizer passes the backend's). `plan.spec` has the site's original permutation; `spec` and `st` are the
 *  effective ones (down_in's permutation folded: no perm, statistics permuted). */
export type GptqFactor = (plan: SitePlan, st: SiteStats, spec: ActQuantSpec) => { quantize(w: Float32Array, N: number): W4Weight; free?(): void };

export const hostGptq: GptqFactor = (_p, st, spec) => {
  const U = invCholUpper(permutedHessian(st.H!, spec), spec.Kp);
  return { quantize: (w, N) => gptqW4(w, N, spec, U) };
};

/** Quantize the consumers of `plans` (any subset of the model's sites; the weights map needs only theirs):
 *  down_in's permutation folded into gate/up rows and down columns, then RTN or GPTQ per linear. Returns the
 *  W4 weights and, when o.weightError, each one's relative output error on the calibration sample. */
export function quantizeSites(c: LlamaConfig, floatWeights: Map<string, HostWeight>, plans: readonly SitePlan[], stats: Map<string, SiteStats>, o: QuantizeOptions,
  gptq: GptqFactor, onLinear?: (name: string) => void): { weights: Map<string, HostWeight>; weightError: Record<string, number> } {
  // fold down_proj's permutation offline; its spec and statistics move to the folded order
  const downPerms = new Map<number, Int32Array>();
  const specs = new Map<string, ActQuantSpec>(), effStats = new Map<string, SiteStats>();
  for (const p of plans) {
    const st = stats.get(p.site.name) ?? fail(`quantize: no calibration statistics for ${p.site.name}`);
    if (p.site.kind === 'down_in' && p.spec.perm) {
      downPerms.set(p.site.layer, p.spec.perm);
      specs.set(p.site.name, actSpec(p.spec.K, p.spec.B, p.spec.K8));
      effStats.set(p.site.name, permuteStats(st, p.spec.perm));
    } else {
      specs.set(p.site.name, p.spec);
      effStats.set(p.site.name, st);
    }
  }
  const folded = foldDownPerm(c, floatWeights, downPerms);
  const out = new Map<string, HostWeight>(), weightError: Record<string, number> = {};
  for (const p of plans) {
    const spec = specs.get(p.site.name)!, st = effStats.get(p.site.name)!;
    const g = o.weights === 'gptq' ? gptq(p, st, spec) : undefined;
    try {
      for (const name of p.site.consumers) {
        const w = folded.get(name) ?? fail(`quantize: weight '${name}' is missing`);
        if (w.kind !== 'f32') throw new CometError(`quantize: '${name}' is already quantized`);
        const N = w.shape[0];
        const q = g ? g.quantize(w.data, N) : quantizeW4(w.data, N, spec, { clipSearch: o.clipSearch ?? true });
        out.set(name, { kind: 'w4', name, ...q });
        if (o.weightError ?? true) weightError[name] = weightErrorOf(w.data, q, st);
        onLinear?.(name);
      }
    } finally {
      g?.free?.();
    }
  }
  return { weights: out, weightError };
}

/** The quantization record of a plan (the .comet file's `quant` metadata, less the calibration source). */
export function quantMeta(plan: Plan, o: QuantizeOptions, c: LlamaConfig): QuantMeta {
  return {
    B: o.B, order: o.order, int8Policy: { fraction: o.int8Fraction, blocks: o.int8Blocks }, int8MacFraction: plan.int8MacFraction,
    weights: o.weights, smooth: o.smooth, kv: o.kv, kvGroup: o.kvGroup ?? c.headDim,
    sites: Object.fromEntries(plan.sites.map((p) => [p.site.name, { K: p.spec.K, Kp: p.spec.Kp, K8: p.spec.K8 }])),
  };
}

const fail = (msg: string): never => { throw new CometError(msg); };

/** Statistics of a site whose channels were re-ordered (new channel j = old channel perm[j]). */
export function permuteStats(st: SiteStats, perm: Int32Array): SiteStats {
  const K = st.K, out: SiteStats = { ...st, absmax: new Float32Array(K), sumsq: new Float64Array(K), sample: new Float32Array(st.sample.length) };
  for (let j = 0; j < K; j++) { out.absmax[j] = st.absmax[perm[j]]; out.sumsq[j] = st.sumsq[perm[j]]; }
  for (let r = 0; r < st.sampleRows; r++) for (let j = 0; j < K; j++) out.sample[r * K + j] = st.sample[r * K + perm[j]];
  if (st.H) {
    const H = new Float64Array(K * K);
    for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) H[i * K + j] = st.H[perm[i] * K + perm[j]];
    out.H = H;
  }
  return out;
}

/** Relative output error of the weight rounding alone on the calibration sample rows X (float inputs):
 *  ‖X (W − Ŵ)ᵀ‖_F / ‖X Wᵀ‖_F. The same measure for RTN and GPTQ (GPTQ lowers this, not ‖W − Ŵ‖). */
export function weightErrorOf(w: Float32Array, q: W4Weight, st: SiteStats): number {
  const { K, Kp, perm } = q.act, N = q.N, R = st.sampleRows;
  const x = new Float32Array(R * Kp), d = dequantizeW4(q), wp = new Float32Array(N * Kp);
  for (let r = 0; r < R; r++) for (let j = 0; j < K; j++) x[r * Kp + j] = st.sample[r * K + (perm ? perm[j] : j)];
  for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) wp[n * Kp + j] = w[n * K + (perm ? perm[j] : j)];
  const y = matmul(x, R, Kp, wp, N), yq = matmul(x, R, Kp, d, N);
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) { num += (y[i] - yq[i]) ** 2; den += y[i] ** 2; }
  return Math.sqrt(num / (den || 1));
}
