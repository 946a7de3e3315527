// GPTQ (Frantar et al., 2022) for the W4 format of DESIGN §3.3: int4 symmetric codes, one f16 scale per output
// row per B-block, columns in the activation's permuted order.
//
// Columns are quantized one at a time, in the permuted order (absmax-sorted, so the outlier channels, which
// carry the largest Hessian diagonal, go first: GPTQ's "act order" comes for free). The rounding error of each
// column is pushed onto the columns not yet quantized through the inverse Hessian's upper Cholesky factor U:
//   e = (w_k − ŵ_k) / U[k][k];   w_j −= e·U[k][j]   (j > k)
// The scale of a row-block is chosen when the block is reached, from the weights as updated so far, by the same
// clip search as RTN (simulator/w4.ts): the scale grid is aligned with the activation blocks, so the GEMM
// epilogue of §3.4 is unchanged.
// H = Σ x xᵀ over the calibration tokens (calibrate.ts), damped by `damp`·mean(diag H).
import type { ActQuantSpec, W4Weight } from '../../simulator/formats.ts';
import { roundHalfEven, toF16, f16Bits } from '../../simulator/f16.ts';
import { w4FromCodes } from '../../simulator/w4.ts';
import { CometError } from '../errors.ts';

export interface GptqOptions {
  grid?: number; // clip search points (default 20, as RTN)
}

/** Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U), H [n][n] symmetric positive definite (f64).
 *  With J the reversal: J H J = M Mᵀ (lower Cholesky), so H = R Rᵀ with R = J M J upper, and
 *  H⁻¹ = R⁻ᵀ R⁻¹: U = R⁻¹ = J M⁻¹ J. One factorization and one triangular inverse, all loops row-contiguous. */
export function invCholUpper(H: Float64Array, n: number): Float64Array {
  const M = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n, hi = (n - 1 - i) * n + n - 1;
    for (let j = 0; j <= i; j++) {
      const rj = j * n;
      let s = H[hi - j];
      for (let k = 0; k < j; k++) s -= M[ri + k] * M[rj + k];
      if (j < i) M[ri + j] = s / M[rj + j];
      else {
        if (!(s > 0)) throw new CometError(`gptq: Hessian is not positive definite (pivot ${n - 1 - i}); raise the damping`);
        M[ri + i] = Math.sqrt(s);
      }
    }
  }
  const Mi = new Float64Array(n * n), acc = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    acc.fill(0, 0, i);
    for (let k = 0; k < i; k++) {
      const c = M[i * n + k];
      if (c === 0) continue;
      for (let j = 0; j <= k; j++) acc[j] += c * Mi[k * n + j];
    }
    const d = M[i * n + i];
    for (let j = 0; j < i; j++) Mi[i * n + j] = -acc[j] / d;
    Mi[i * n + i] = 1 / d;
  }
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = Mi[(n - 1 - i) * n + (n - 1 - j)];
  return U;
}

/** Damping, relative to mean(diag H). GPTQ's paper uses 0.01 with 128×2048 calibration tokens; with the few
 *  thousand tokens a CPU calibrates on, the Hessian of a 1408-wide input is barely full rank and 0.01 overfits:
 *  on wikillama-28M (2048 calibration tokens, layer 3) the output error on held-out tokens was, relative to RTN,
 *  +30% (w_down) at 0.01, +4% at 0.1 and -8% at 1.0 (wq -20%, wo -19%, w_gate -7% at 1.0). So 1.0 by default. */
export const GPTQ_DAMP = 1.0;

/** The permuted, padded, damped Hessian [Kp][Kp] for a spec, from H [K][K] in original order. */
export function permutedHessian(H: Float64Array, spec: ActQuantSpec, damp = GPTQ_DAMP): Float64Array {
  const { K, Kp, perm } = spec;
  const P = new Float64Array(Kp * Kp);
  for (let i = 0; i < K; i++) {
    const pi = perm ? perm[i] : i;
    for (let j = 0; j < K; j++) P[i * Kp + j] = H[pi * K + (perm ? perm[j] : j)];
  }
  // summed in the permuted order, so that a Hessian permuted beforehand (down_in, whose permutation is folded
  // into the weights: quantize.ts permuteStats) gives the same bits, and the GPU's factor (cuda/quant_gptq.cu)
  // sums it in that order too
  let mean = 0;
  for (let k = 0; k < K; k++) mean += P[k * Kp + k];
  mean /= K;
  for (let i = 0; i < Kp; i++) {
    if (i >= K || P[i * Kp + i] === 0) P[i * Kp + i] = 1; // padding and dead channels: unconstrained
    P[i * Kp + i] += damp * mean;
  }
  return P;
}

/** w [N][K] f32 in ORIGINAL column order; U = invCholUpper(permutedHessian(H, spec)) -> W4Weight. */
export function gptqW4(w: Float32Array, N: number, spec: ActQuantSpec, U: Float64Array, o: GptqOptions = {}): W4Weight {
  const { K, B, Kp, perm } = spec, nb = Kp / B, grid = o.grid ?? 20;
  if (w.length !== N * K) throw new CometError(`gptq: weight has ${w.length} elements, expected ${N}×${K}`);
  if (U.length !== Kp * Kp) throw new CometError(`gptq: U has ${U.length} elements, expected ${Kp}×${Kp}`);
  const W = new Float64Array(N * Kp);
  for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) W[n * Kp + j] = w[n * K + (perm ? perm[j] : j)];
  const codes = new Int8Array(N * Kp), scales = new Uint16Array(N * nb), s = new Float64Array(N);
  for (let b = 0; b < nb; b++) {
    const k0 = b * B;
    for (let n = 0; n < N; n++) {
      s[n] = clipScale(W, n * Kp + k0, B, grid);
      scales[n * nb + b] = f16Bits(s[n]);
    }
    for (let k = k0; k < k0 + B; k++) {
      const d = U[k * Kp + k], urow = k * Kp;
      for (let n = 0; n < N; n++) {
        const o = n * Kp, x = W[o + k], sn = s[n];
        const q = sn === 0 ? 0 : Math.min(7, Math.max(-8, roundHalfEven(Math.fround(x / sn))));
        codes[o + k] = k < K ? q : 0;
        const e = (x - q * sn) / d;
        if (e !== 0) for (let j = k + 1; j < Kp; j++) W[o + j] -= e * U[urow + j];
      }
    }
  }
  return w4FromCodes(N, codes, scales, spec);
}

/** f16 scale of least squared error among clip ratios 1 .. 0.5 (as simulator/w4.ts quantizeW4). */
function clipScale(W: Float64Array, o: number, B: number, grid: number): number {
  let amax = 0;
  for (let k = 0; k < B; k++) amax = Math.max(amax, Math.abs(W[o + k]));
  let best = Infinity, bestS = 0;
  for (let g = 0; g < grid; g++) {
    const s = toF16((amax * (1 - (0.5 * g) / grid)) / 7);
    if (s === 0) return 0;
    let err = 0;
    for (let k = 0; k < B; k++) {
      const q = Math.min(7, Math.max(-8, roundHalfEven(Math.fround(W[o + k] / s))));
      err += (W[o + k] - q * s) ** 2;
    }
    if (err < best) { best = err; bestS = s; }
  }
  return bestS;
}
