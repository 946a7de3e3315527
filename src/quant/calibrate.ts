// Calibration: run the float model over a calibration token stream and collect, at every site (sites.ts),
// per-channel statistics of the linear input in ORIGINAL channel order:
//   absmax [K]      max |x| over all tokens          -> outlier ranking (the FMPQ permutation)
//   sumsq  [K] f64  Σ x²                             -> channel energy (error weights, weight-error metric)
//   sample [S][K]   a few token rows per window       -> INT8 block allocation (plan.ts measures real errors)
//   H      [K][K] f64  Σ xᵀx  (only for GPTQ)        -> the layer-wise Hessian 2·XᵀX of GPTQ
// Tokens are cut into windows of `ctx` (the last partial window is dropped unless it is the only one).
import type { Tensor } from '../../backends/backend.ts';
import type { Llama } from '../model/llama.ts';
import { matmul } from '../../simulator/kernels/float.ts';
import { singleSequenceCache } from '../engine/generate.ts';
import { CometError } from '../errors.ts';
import { sites } from './sites.ts';

export interface SiteStats {
  K: number;
  count: number; // tokens seen
  absmax: Float32Array;
  sumsq: Float64Array;
  sample: Float32Array; // [rows][K]
  sampleRows: number;
  H?: Float64Array; // [K][K], Σ over tokens of x xᵀ
}

export interface CalibOptions {
  ctx: number;
  hessian?: boolean;
  samplePerWindow?: number; // rows kept per window for plan.ts (default 64)
  onWindow?: (done: number, total: number) => void;
}

export async function calibrate(model: Llama, tokens: number[], o: CalibOptions): Promise<Map<string, SiteStats>> {
  const ctx = Math.min(o.ctx, tokens.length);
  if (ctx < 2) throw new CometError(`calibrate: ${tokens.length} calibration tokens are too few`);
  const windows = Math.floor(tokens.length / ctx);
  const perWin = Math.min(o.samplePerWindow ?? 64, ctx);
  const ss = sites(model.config);
  const stats = new Map<string, SiteStats>();
  for (const s of ss) stats.set(s.name, newSiteStats(s.K, windows * perWin, !!o.hessian));
  const byTap = new Map(ss.map((s) => [s.tap, s.name]));
  const { cache, blockTable } = singleSequenceCache(model, ctx);
  const layout = { pos: Int32Array.from({ length: ctx }, (_, i) => i), seq: new Int32Array(ctx), blockTables: [blockTable] };
  for (let w = 0; w < windows; w++) {
    const seen = new Map<string, Tensor>();
    const win = Int32Array.from(tokens.slice(w * ctx, (w + 1) * ctx));
    model.forward(win, layout, cache, Int32Array.of(ctx - 1), (name, t) => { if (byTap.has(name)) seen.set(byTap.get(name)!, t); });
    for (const [site, t] of seen) accumulate(stats.get(site)!, await model.be.read(t), ctx, perWin);
    model.be.endStep();
    o.onWindow?.(w + 1, windows);
  }
  for (const [name, s] of stats) if (s.count === 0) throw new CometError(`calibrate: site ${name} was never seen (is the model float?)`);
  return stats;
}

/** Empty statistics of a K-channel site that keeps `rows` sample rows (and H when `hessian`). */
export function newSiteStats(K: number, rows: number, hessian: boolean): SiteStats {
  return { K, count: 0, absmax: new Float32Array(K), sumsq: new Float64Array(K), sample: new Float32Array(rows * K), sampleRows: 0, H: hessian ? new Float64Array(K * K) : undefined };
}

/** Add one window's tapped input x [T][K] (perWin of its rows to the sample; H += f32(Xᵀ X) when kept). */
export function accumulate(s: SiteStats, x: Float32Array, T: number, perWin: number): void {
  const K = s.K;
  if (x.length !== T * K) throw new CometError(`calibrate: tapped tensor has ${x.length} elements, expected ${T}×${K}`);
  for (let t = 0; t < T; t++)
    for (let k = 0; k < K; k++) {
      const v = x[t * K + k], a = Math.abs(v);
      if (a > s.absmax[k]) s.absmax[k] = a;
      s.sumsq[k] += v * v;
    }
  const stride = T / perWin;
  for (let i = 0; i < perWin; i++) {
    const t = Math.floor(i * stride);
    s.sample.set(x.subarray(t * K, (t + 1) * K), s.sampleRows++ * K);
  }
  s.count += T;
  if (s.H) {
    const xt = new Float32Array(K * T); // [K][T]
    for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) xt[k * T + t] = x[t * K + k];
    const h = matmul(xt, K, T, xt, K); // [K][K] = Xᵀ X
    for (let i = 0; i < h.length; i++) s.H[i] += h[i];
  }
}
