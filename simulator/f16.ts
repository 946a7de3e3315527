// IEEE binary16 helpers. Values are carried as JS numbers holding an exact f16 value; storage is the 16-bit
// pattern (Uint16Array). Rounding goes from f64 straight to f16 (round to nearest, ties to even), never
// through f32 first: f64 -> f32 -> f16 can round twice (DESIGN §7).
import { f16round } from '@petamoriken/float16';

/** Nearest-even f16 value of x (an f64), as a number. |x| >= 65520 -> ±Inf; NaN stays NaN; -0 stays -0. */
export const toF16: (x: number) => number = f16round;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Bit pattern of toF16(x). NaN -> 0x7e00 (the one quiet NaN we emit). */
export function f16Bits(x: number): number {
  const v = toF16(x);
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | (a * 2 ** 24); // subnormal (or 0): a is a multiple of 2^-24, exactly
  f32[0] = a; // exact: every f16 value is an f32 value
  const e = ((u32[0] >>> 23) & 0xff) - 127;
  return sign | ((e + 15) << 10) | ((u32[0] >>> 13) & 0x3ff);
}

/** The f16 value with bit pattern b (0..0xffff), as a number. */
export function fromF16Bits(b: number): number {
  const sign = b & 0x8000 ? -1 : 1;
  const e = (b >>> 10) & 0x1f, m = b & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** x rounded to an integer, ties to even (IEEE roundTiesToEven; Math.round rounds ties up).
 *  (A zero result is +0, whatever the sign of x: codes have no signed zero.)
 *  Exact for every finite double: x - floor(x) is exact below 2^52, and above it x is already an integer. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** Every element of an f32 array rounded to f16 (nearest even) and back: the exact f32 values f16BitsArray encodes. */
export function f16RoundArray(src: Float32Array): Float32Array {
  return f16ArrayToF32(f16BitsArray(src));
}

/** f16 bits -> f32 array (scales are read as f32 in every kernel; the conversion is exact). */
export function f16ArrayToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = fromF16Bits(bits[i]);
  return out;
}

/** f16Bits of every element of an f32 array (round to nearest even; NaN -> 0x7e00), by integer ops on the f32
 *  bits: equal to f16Bits element by element (test/simulator/f16.test.ts), ~50× faster (a 0.5 G-element
 *  classifier in seconds). An f32 value is exact in f64, so rounding it once to f16 is the same either way. */
export function f16BitsArray(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length), out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i], sign = (x >>> 16) & 0x8000, a = x & 0x7fffffff;
    let h: number;
    if (a > 0x7f800000) h = 0x7e00; // NaN
    else if (a >= 0x477ff000) h = 0x7c00; // >= 65520: rounds to infinity
    else if (a >= 0x38800000) h = (a + 0xfff + ((a >>> 13) & 1) - 0x38000000) >>> 13; // normal f16 (carry into the exponent is right)
    else h = roundHalfEven(Math.abs(src[i]) * 2 ** 24); // subnormal f16 (or 0): a multiple of 2^-24
    out[i] = a > 0x7f800000 ? h : sign | h;
  }
  return out;
}
