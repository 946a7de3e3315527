// FMPQ plan: for every site, the channel permutation and the number of INT8 blocks (DESIGN §3.2).
//
// Permutation ('absmax' order): channels sorted by calibration absmax, largest first. The outliers land in the
// first blocks, which become INT8; the INT4 blocks behind them also hold channels of like magnitude, so their
// per-token absmax scales are tighter than in the original order. 'identity' keeps the model's order (the
// "plain W4A4" baseline).
//
// INT8 blocks, two policies:
//   blocks N    every site gets min(N, Kp/B) INT8 blocks (uniform; simple, but one 128-block of a K = 512
//               input is already 25% of its MACs)
//   fraction F  a global budget: at most F of all quantized GEMM multiply-accumulates (per token:
//               Σ_sites Kp·ΣN_consumers) read INT8 activations. Blocks are handed out greedily, each site's in
//               order, to the block with the largest error reduction per MAC. The error of a block is measured
//               on the calibration sample: Σ_tokens Σ_k (x_k − Q(x)_k)²·‖W[:,k]‖² with Q the real FMPQ quantizer
//               at INT4 or INT8 (this is the output error of the consumers, up to cross terms), divided by the
//               site's output energy Σ x_k²·‖W[:,k]‖², so that layers compare on a relative scale.
import type { ActQuantSpec } from '../../simulator/formats.ts';
import type { HostWeight } from '../../backends/backend.ts';
import { actSpec } from '../../simulator/act.ts';
import { toF16, roundHalfEven } from '../../simulator/f16.ts';
import type { LlamaConfig } from '../model/config.ts';
import { CometError } from '../errors.ts';
import type { SiteStats } from './calibrate.ts';
import { sites, type Site } from './sites.ts';

export type ChannelOrder = 'identity' | 'absmax';

export interface PlanOptions {
  B: number;
  order: ChannelOrder;
  int8Fraction?: number; // global MAC budget in [0, 1]
  int8Blocks?: number; // per site
}

export interface SitePlan {
  site: Site;
  spec: ActQuantSpec; // perm in ORIGINAL channel order (down_in is folded later: fold.ts)
  macs: number; // per token: Kp · Σ N
  int8Macs: number;
  blockGain: number[]; // relative error reduction of each block made INT8 (diagnostic)
}

export interface Plan {
  sites: SitePlan[];
  int8MacFraction: number; // achieved
}

const f32 = (w: HostWeight): Float32Array => {
  if (w.kind !== 'f32') throw new CometError(`plan: weight '${w.name}' is already quantized`);
  return w.data;
};

/** One site's share of the plan, before the global INT8 budget is handed out: its permutation, MACs and the
 *  gain of each block made INT8. Needs only this site's statistics and weights (the layer-by-layer quantizer
 *  computes it layer by layer, then allocates once). */
export interface SiteInput extends SitePlan {
  N: number; // Σ consumer rows
}

export function checkPlanOptions(o: PlanOptions): void {
  if (o.int8Fraction !== undefined && o.int8Blocks !== undefined) throw new CometError('quantize: give --int8-fraction or --int8-blocks, not both');
  if (o.int8Fraction !== undefined && !(o.int8Fraction >= 0 && o.int8Fraction <= 1)) throw new CometError(`quantize: --int8-fraction ${o.int8Fraction} must be in [0, 1]`);
}

export function planFMPQ(c: LlamaConfig, weights: Map<string, HostWeight>, stats: Map<string, SiteStats>, o: PlanOptions): Plan {
  checkPlanOptions(o);
  return allocateInt8(sites(c).map((site) => planSite(site, stats.get(site.name) ?? fail(`plan: no calibration statistics for ${site.name}`), weights, o)), o);
}

export function planSite(site: Site, st: SiteStats, weights: Map<string, HostWeight>, o: PlanOptions): SiteInput {
  const perm = o.order === 'absmax' ? absmaxOrder(st.absmax) : undefined;
  const base = actSpec(site.K, o.B, 0, perm);
  const N = site.consumers.reduce((a, n) => a + f32(weights.get(n) ?? fail(`plan: weight '${n}' is missing`)).length / site.K, 0);
  const gain = o.int8Fraction !== undefined ? blockGains(site, base, st, weights) : [];
  return { site, spec: base, macs: base.Kp * N, int8Macs: 0, blockGain: gain, N };
}

/** INT8 blocks for every site (DESIGN §3.2 policies, header comment), given all sites' inputs. */
export function allocateInt8(inputs: SiteInput[], o: PlanOptions): Plan {
  const plans = inputs.map((p) => ({ ...p }));
  const setK8 = (p: SiteInput, blocks: number) => {
    p.spec = actSpec(p.site.K, o.B, blocks * o.B, p.spec.perm);
    p.int8Macs = p.spec.K8 * p.N;
  };
  if (o.int8Blocks !== undefined) for (const p of plans) setK8(p, Math.min(o.int8Blocks, p.spec.Kp / o.B));
  else if (o.int8Fraction !== undefined && o.int8Fraction > 0) {
    const total = plans.reduce((a, p) => a + p.macs, 0);
    let budget = o.int8Fraction * total;
    const next = plans.map(() => 0), closed = plans.map(() => false);
    for (;;) {
      let best = -1, bestRatio = 0;
      plans.forEach((p, i) => {
        if (closed[i] || next[i] >= p.blockGain.length) return;
        const cost = o.B * p.N;
        if (cost > budget + 1e-6) { closed[i] = true; return; }
        // a site's blocks are taken in order; look ahead to the best average over its remaining blocks so a
        // small first gain does not hide large ones behind it (blocks are sorted, so this rarely matters)
        let g = 0, bestAvg = -Infinity;
        for (let j = next[i]; j < p.blockGain.length; j++) { g += p.blockGain[j]; bestAvg = Math.max(bestAvg, g / (j - next[i] + 1)); }
        const ratio = bestAvg / cost;
        if (ratio > bestRatio) { bestRatio = ratio; best = i; }
      });
      if (best < 0) break;
      next[best]++;
      budget -= o.B * plans[best].N;
    }
    plans.forEach((p, i) => setK8(p, next[i]));
  }
  const total = plans.reduce((a, p) => a + p.macs, 0), int8 = plans.reduce((a, p) => a + p.int8Macs, 0);
  return { sites: plans.map(({ N: _n, ...p }) => p), int8MacFraction: int8 / total };
}

/** Channels by absmax, descending; ties by index (deterministic). */
export function absmaxOrder(absmax: Float32Array): Int32Array {
  const idx = Array.from({ length: absmax.length }, (_, i) => i);
  idx.sort((a, b) => absmax[b] - absmax[a] || a - b);
  return Int32Array.from(idx);
}

/** Per block (in permuted order): relative output-error reduction when it is INT8 instead of INT4. */
function blockGains(site: Site, spec: ActQuantSpec, st: SiteStats, weights: Map<string, HostWeight>): number[] {
  const { K, B, Kp, perm } = spec, nb = Kp / B;
  const colEnergy = new Float64Array(K); // ‖W[:,k]‖² summed over consumers, original order
  for (const name of site.consumers) {
    const w = f32(weights.get(name)!), N = w.length / K;
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) colEnergy[k] += w[n * K + k] ** 2;
  }
  const e4 = new Float64Array(nb), e8 = new Float64Array(nb);
  let energy = 0;
  const row = new Float64Array(Kp), wk = new Float64Array(Kp);
  for (let j = 0; j < K; j++) wk[j] = colEnergy[perm ? perm[j] : j];
  for (let r = 0; r < st.sampleRows; r++) {
    for (let j = 0; j < K; j++) row[j] = toF16(st.sample[r * K + (perm ? perm[j] : j)]);
    for (let b = 0; b < nb; b++) {
      let amax = 0;
      for (let k = b * B; k < (b + 1) * B; k++) amax = Math.max(amax, Math.abs(row[k]));
      for (const [qmax, e] of [[7, e4], [127, e8]] as const) {
        const s = toF16(amax / qmax);
        if (s === 0) continue;
        let err = 0;
        for (let k = b * B; k < (b + 1) * B; k++) {
          const q = Math.min(qmax, Math.max(-qmax - 1, roundHalfEven(Math.fround(row[k] / s))));
          err += (row[k] - q * s) ** 2 * wk[k];
        }
        e[b] += err;
      }
    }
    for (let k = 0; k < K; k++) energy += row[k] ** 2 * wk[k];
  }
  return Array.from(e4, (v, b) => (v - e8[b]) / (energy || 1));
}

function fail(msg: string): never {
  throw new CometError(msg);
}
