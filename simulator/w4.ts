// W4 weights (DESIGN §3.3): W[N][K] ([out, in]) int4 symmetric, one f16 scale per output row per B-block,
// columns in the permuted order of the input activation (folded offline), zero-padded to Kp.
// Layout of W4Weight (formats.ts): codes int4x2 [N][Kp/2] canonical | scales f16 bits [N][Kp/B].
import type { ActQuantSpec, W4Weight } from './formats.ts';
import { f16Bits, fromF16Bits, roundHalfEven, toF16 } from './f16.ts';
import { packInt4, unpackInt4 } from './int4.ts';

export interface W4QuantOpts {
  clipSearch?: boolean; // default true: per row-block, pick the clip ratio of least squared error
  grid?: number; // clip ratios 1, 1 - 1/grid·0.5, ..., down to 0.5 + 0.5/grid (grid points); default 20
}

/** Codes of one block for scale s: the nearest code in -8..7 to f32(w/s), ties to even, i.e.
 *  clamp(roundHalfEven(f32(w / s)), -8, 7). So -8 is used exactly when it is the nearest code (w/s < -7.5):
 *  with clip 1 that only happens when f16 rounding made s smaller than amax/7; with clip < 1 for clipped
 *  negative values. Returns the squared error Σ (w - q·s)² in f64. */
function roundBlock(w: Float32Array, o: number, n: number, s: number, q: Int8Array, qo: number): number {
  let err = 0;
  for (let k = 0; k < n; k++) {
    const c = s === 0 ? 0 : Math.min(7, Math.max(-8, roundHalfEven(Math.fround(w[o + k] / s))));
    q[qo + k] = c;
    err += (w[o + k] - c * s) ** 2;
  }
  return err;
}

/** w [N][K] f32 in ORIGINAL column order -> W4Weight. Column j <- column spec.perm[j]; [K, Kp) = 0.
 *  Per row per block: s = f16(amax·clip/7) (f64 product and quotient, one rounding to f16), RTN codes as above. */
export function quantizeW4(w: Float32Array, N: number, spec: ActQuantSpec, opts: W4QuantOpts = {}): W4Weight {
  const { K, B, Kp, perm } = spec, nb = Kp / B;
  if (w.length !== N * K) throw new RangeError(`quantizeW4: w has ${w.length} elements, expected N·K = ${N}·${K}`);
  const grid = opts.clipSearch === false ? 1 : (opts.grid ?? 20);
  if (!(Number.isInteger(grid) && grid >= 1)) throw new RangeError(`quantizeW4: grid = ${grid} must be a positive integer`);
  const codes = new Int8Array(N * Kp), scales = new Uint16Array(N * nb);
  const row = new Float32Array(Kp), trial = new Int8Array(B);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < K; j++) row[j] = w[n * K + (perm ? perm[j] : j)];
    for (let b = 0; b < nb; b++) {
      const k0 = b * B;
      let amax = 0;
      for (let k = k0; k < k0 + B; k++) amax = Math.max(amax, Math.abs(row[k]));
      let best = Infinity, bestS = 0;
      for (let g = 0; g < grid; g++) {
        const s = toF16((amax * (1 - (0.5 * g) / grid)) / 7);
        if (!Number.isFinite(s)) throw new RangeError(`quantizeW4: row ${n} block ${b}: scale ${amax}/7 overflows f16`);
        const err = roundBlock(row, k0, B, s, trial, 0);
        if (err < best) { best = err; bestS = s; codes.set(trial, n * Kp + k0); } // ties keep the larger clip
      }
      scales[n * nb + b] = f16Bits(bestS);
    }
  }
  return { N, codes: packInt4(codes), scales, act: spec };
}

/** Build a W4Weight from unpacked codes [N][Kp] (-8..7, padding columns 0) and f16 scale bits [N][Kp/B]. */
export function w4FromCodes(N: number, codes: Int8Array, scales: Uint16Array, spec: ActQuantSpec): W4Weight {
  const { K, B, Kp } = spec;
  if (codes.length !== N * Kp) throw new RangeError(`w4FromCodes: codes has ${codes.length} elements, expected N·Kp = ${N}·${Kp}`);
  if (scales.length !== (N * Kp) / B) throw new RangeError(`w4FromCodes: scales has ${scales.length} elements, expected N·Kp/B = ${(N * Kp) / B}`);
  for (let n = 0; n < N; n++)
    for (let k = K; k < Kp; k++)
      if (codes[n * Kp + k] !== 0) throw new RangeError(`w4FromCodes: padding code [${n}][${k}] = ${codes[n * Kp + k]} must be 0`);
  return { N, codes: packInt4(codes), scales, act: spec };
}

/** W4Weight -> [N][Kp] f32 (permuted column order): q·s, exact in f32. */
export function dequantizeW4(w: W4Weight): Float32Array {
  const { B, Kp } = w.act, nb = Kp / B;
  const q = unpackInt4(w.codes, w.N * Kp), out = new Float32Array(w.N * Kp);
  for (let n = 0; n < w.N; n++)
    for (let b = 0; b < nb; b++) {
      const s = fromF16Bits(w.scales[n * nb + b]);
      for (let k = b * B; k < (b + 1) * B; k++) out[n * Kp + k] = q[n * Kp + k] * s;
    }
  return out;
}

/** Check a W4Weight's array sizes against its spec. */
export function checkW4(w: W4Weight): void {
  const { B, Kp } = w.act;
  if (w.codes.length !== (w.N * Kp) / 2) throw new RangeError(`W4Weight: codes has ${w.codes.length} bytes, expected N·Kp/2 = ${(w.N * Kp) / 2}`);
  if (w.scales.length !== (w.N * Kp) / B) throw new RangeError(`W4Weight: scales has ${w.scales.length} elements, expected N·Kp/B = ${(w.N * Kp) / B}`);
}
