// FMPQ activations (DESIGN §3.2): per token, per B-block along the channel dimension, one f16 scale.
// Channels are first gathered by the layer's permutation (channel j <- input channel perm[j]), so that
// blocks [0, K8) hold the outlier channels and are INT8; blocks [K8, Kp) are INT4. [K, Kp) is zero padding.
// Layout of QAct (formats.ts): a8 int8 [M][K8] | a4 int4x2 [M][(Kp-K8)/2] canonical | sa f16 bits [M][Kp/B].
import type { ActQuantSpec, QAct } from './formats.ts';
import { f16Bits, fromF16Bits, roundHalfEven, toF16 } from './f16.ts';
import { packInt4, unpackInt4 } from './int4.ts';

export const ACT_BLOCKS = [32, 64, 128] as const;

/** Validated spec: B in 32/64/128, Kp = ceil(K/B)·B, K8 a multiple of B in [0, Kp], perm a permutation of 0..K-1. */
export function actSpec(K: number, B: number, K8: number, perm?: Int32Array): ActQuantSpec {
  if (!Number.isInteger(K) || K <= 0) throw new RangeError(`actSpec: K = ${K} must be a positive integer`);
  if (!(ACT_BLOCKS as readonly number[]).includes(B)) throw new RangeError(`actSpec: B = ${B} must be 32, 64 or 128`);
  const Kp = Math.ceil(K / B) * B;
  if (!Number.isInteger(K8) || K8 < 0 || K8 % B !== 0 || K8 > Kp)
    throw new RangeError(`actSpec: K8 = ${K8} must be a multiple of B = ${B} in [0, Kp = ${Kp}]`);
  if (perm) {
    if (perm.length !== K) throw new RangeError(`actSpec: perm has length ${perm.length}, expected K = ${K}`);
    const seen = new Uint8Array(K);
    for (let j = 0; j < K; j++) {
      const p = perm[j];
      if (!(p >= 0 && p < K) || seen[p]) throw new RangeError(`actSpec: perm is not a permutation of 0..${K - 1} (perm[${j}] = ${p})`);
      seen[p] = 1;
    }
  }
  return perm ? { K, B, Kp, K8, perm } : { K, B, Kp, K8 };
}

/** qmax of the block starting at channel k0 (permuted order): 127 (INT8) below K8, else 7 (INT4). */
export const actQmax = (spec: ActQuantSpec, k0: number): number => (k0 < spec.K8 ? 127 : 7);

/** Gather + f16 rounding of one token: row[j] = f16(x[xo + perm[j]]) for j < K, 0 for j in [K, Kp).
 *  The contract's inputs are f16: an f32 input is rounded to f16 (nearest even) first, here. */
export function gatherF16(x: Float32Array, xo: number, spec: ActQuantSpec, row: Float64Array): void {
  const { K, Kp, perm } = spec;
  for (let j = 0; j < K; j++) {
    const v = toF16(x[xo + (perm ? perm[j] : j)]);
    if (!Number.isFinite(v)) throw new RangeError(`quantizeAct: channel ${perm ? perm[j] : j} = ${x[xo + (perm ? perm[j] : j)]} is not a finite f16`);
    row[j] = v;
  }
  row.fill(0, K, Kp);
}

/** x [M][K] f32 (original channel order) -> QAct. The contract's inputs are f16: each f32 input is first
 *  rounded to f16 (nearest even, from its exact value) after the gather; a value beyond f16 range is an error.
 *  Per block: amax = max|x| (exact: x are f16 values); s = f16(amax/qmax) (f64 division rounded once to f16;
 *  equal to f16(__fdiv_rn(amax, qmax)) since an f16 amax over 7 or 127 never lands on an f16 tie after f32
 *  rounding — test/simulator/act.test.ts checks every f16 amax); s == 0 -> codes 0; else
 *  q = clamp(roundHalfEven(f32(x / s)), -qmax-1, qmax), f32(x / s) = Math.fround of the f64 quotient, which is
 *  the correctly rounded f32 division (f64 has more than 2·24+2 bits). The low code -qmax-1 never occurs:
 *  |x|/s ≤ qmax·(1 + 2^-11) < qmax + 1/2, so codes are symmetric in [-qmax, qmax]. */
export function quantizeAct(x: Float32Array, M: number, spec: ActQuantSpec): QAct {
  const { K, B, Kp, K8 } = spec;
  if (x.length !== M * K) throw new RangeError(`quantizeAct: x has ${x.length} elements, expected M·K = ${M}·${K}`);
  const nb = Kp / B, K4 = Kp - K8;
  const a8 = new Int8Array(M * K8), sa = new Uint16Array(M * nb);
  const q4 = new Int8Array(M * K4); // unpacked int4 codes, packed at the end
  const row = new Float64Array(Kp);
  for (let m = 0; m < M; m++) {
    gatherF16(x, m * K, spec, row);
    for (let b = 0; b < nb; b++) {
      const k0 = b * B, qmax = actQmax(spec, k0);
      let amax = 0;
      for (let k = k0; k < k0 + B; k++) amax = Math.max(amax, Math.abs(row[k]));
      const s = toF16(amax / qmax);
      sa[m * nb + b] = f16Bits(s);
      if (s === 0) continue; // codes stay 0
      const dst = qmax === 127 ? a8 : q4, o = qmax === 127 ? m * K8 : m * K4 - K8;
      for (let k = k0; k < k0 + B; k++) dst[o + k] = Math.min(qmax, Math.max(-qmax - 1, roundHalfEven(Math.fround(row[k] / s))));
    }
  }
  return { M, spec, a8, a4: packInt4(q4), sa };
}

/** QAct -> [M][Kp] f32 in permuted order: q·s (exact in f32: an 8-bit code times an 11-bit significand). */
export function dequantizeAct(q: QAct): Float32Array {
  const { B, Kp, K8 } = q.spec, nb = Kp / B, K4 = Kp - K8;
  const out = new Float32Array(q.M * Kp);
  const q4 = unpackInt4(q.a4, q.M * K4);
  for (let m = 0; m < q.M; m++)
    for (let k = 0; k < Kp; k++) {
      const code = k < K8 ? q.a8[m * K8 + k] : q4[m * K4 + k - K8];
      out[m * Kp + k] = code * fromF16Bits(q.sa[m * nb + Math.floor(k / B)]);
    }
  return out;
}

/** Check a QAct's array sizes against its spec (for data that arrives from a backend or a file). */
export function checkQAct(q: QAct): void {
  const { B, Kp, K8 } = q.spec;
  const want = { a8: q.M * K8, a4: (q.M * (Kp - K8)) / 2, sa: (q.M * Kp) / B };
  for (const [k, n] of Object.entries(want))
    if (q[k as keyof typeof want].length !== n) throw new RangeError(`QAct: ${k} has ${q[k as keyof typeof want].length} elements, expected ${n} (M = ${q.M}, Kp = ${Kp}, K8 = ${K8}, B = ${B})`);
}
