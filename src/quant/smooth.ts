// SmoothQuant-style channel scaling (Xiao et al., 2023), folded offline so the float model computes the same
// function: at a site, activation channel c is divided by s_c and the consumers' input column c multiplied by s_c.
//   attn_in, ffn_in   s folds into the RMSNorm weight (attn_norm / ffn_norm) ÷ s, and wq/wk/wv resp. w_gate/w_up
//                     columns × s
//   down_in           s folds into w_up ROWS ÷ s (silu(g)·u is linear in u) and w_down columns × s
//   o_in              left alone: v rows feed GQA heads and the KV4 cache, so its scale would be shared and
//                     interact with KV4 groups
// s_c = max|x_c|^β / max_n |W[n][c]|^(1−β) over all consumers (β = 0.5 by default), from calibration absmax.
// It moves part of an activation outlier into the weight column, where W4's per-row-per-block scale absorbs
// it: exactly the inverse of the outlier stress transform (fold.ts), which it undoes when β makes it so.
import type { HostWeight } from '../../backends/backend.ts';
import type { LlamaConfig } from '../model/config.ts';
import { CometError } from '../errors.ts';
import type { SiteStats } from './calibrate.ts';
import { sites } from './sites.ts';

type F32 = Extract<HostWeight, { kind: 'f32' }>;

/** `layer`: only that layer's sites (the layer-by-layer quantizer; its maps hold one layer). `scales`: each smoothed
 *  site's s (a Hessian kept on a device is divided by s·sᵀ there: backends/backend.ts DeviceHessian.factor). */
export function smoothModel(c: LlamaConfig, weights: Map<string, HostWeight>, stats: Map<string, SiteStats>, beta: number, layer?: number):
  { weights: Map<string, HostWeight>; stats: Map<string, SiteStats>; scales: Map<string, Float64Array> } {
  if (!(beta >= 0 && beta <= 1)) throw new CometError(`smooth: β = ${beta} must be in [0, 1]`);
  const out = new Map(weights), st2 = new Map(stats), scales = new Map<string, Float64Array>();
  const get = (n: string): F32 => {
    const w = out.get(n);
    if (!w || w.kind !== 'f32') throw new CometError(`smooth: '${n}' is missing or not float`);
    return w;
  };
  const put = (w: F32, f: (d: Float32Array) => void) => { const d = w.data.slice(); f(d); out.set(w.name, { ...w, data: d }); };
  for (const site of sites(c)) {
    if (site.kind === 'o_in' || (layer !== undefined && site.layer !== layer)) continue;
    const st = stats.get(site.name)!, K = site.K, wmax = new Float64Array(K);
    for (const n of site.consumers) {
      const w = get(n).data, N = w.length / K;
      for (let r = 0; r < N; r++) for (let k = 0; k < K; k++) wmax[k] = Math.max(wmax[k], Math.abs(w[r * K + k]));
    }
    const s = new Float64Array(K);
    for (let k = 0; k < K; k++) s[k] = st.absmax[k] > 0 && wmax[k] > 0 ? Math.max(1e-5, st.absmax[k] ** beta / wmax[k] ** (1 - beta)) : 1;
    for (const n of site.consumers) put(get(n), (d) => { const N = d.length / K; for (let r = 0; r < N; r++) for (let k = 0; k < K; k++) d[r * K + k] *= s[k]; });
    if (site.kind === 'down_in') put(get(`l${site.layer}.w_up`), (d) => { const D = d.length / K; for (let k = 0; k < K; k++) for (let j = 0; j < D; j++) d[k * D + j] /= s[k]; });
    else put(get(`l${site.layer}.${site.kind === 'attn_in' ? 'attn_norm' : 'ffn_norm'}`), (d) => { for (let k = 0; k < K; k++) d[k] /= s[k]; });
    st2.set(site.name, scaleStats(st, s));
    scales.set(site.name, s);
  }
  return { weights: out, stats: st2, scales };
}

/** Statistics of x / s (exact up to float rounding, since the transform is linear per channel). */
function scaleStats(st: SiteStats, s: Float64Array): SiteStats {
  const K = st.K, o: SiteStats = { ...st, absmax: new Float32Array(K), sumsq: new Float64Array(K), sample: new Float32Array(st.sample.length) };
  for (let k = 0; k < K; k++) { o.absmax[k] = st.absmax[k] / s[k]; o.sumsq[k] = st.sumsq[k] / s[k] ** 2; }
  for (let r = 0; r < st.sampleRows; r++) for (let k = 0; k < K; k++) o.sample[r * K + k] = st.sample[r * K + k] / s[k];
  if (st.H) { o.H = new Float64Array(K * K); for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) o.H[i * K + j] = st.H[i * K + j] / (s[i] * s[j]); }
  return o;
}
