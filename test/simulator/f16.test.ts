import { describe, expect, it } from 'vitest';
import { f16Bits, f16BitsArray, fromF16Bits, roundHalfEven, toF16 } from '../../simulator/f16.ts';

describe('f16 rounding', () => {
  it('rounds ties to even (normal range)', () => {
    expect(toF16(1 + 2 ** -11)).toBe(1); // halfway between 1 and 1+2^-10: even is 1
    expect(toF16(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9); // halfway between 1+2^-10 (odd) and 1+2^-9 (even)
    expect(toF16(1 + 2 ** -11 + 2 ** -30)).toBe(1 + 2 ** -10); // just above the tie
    expect(toF16(-(1 + 2 ** -11))).toBe(-1);
  });
  it('rounds from f64 directly, never through f32 (no double rounding)', () => {
    const x = 1 + 2 ** -11 + 2 ** -40; // f32 would drop 2^-40, making a tie that goes down to 1
    expect(Math.fround(x)).toBe(1 + 2 ** -11);
    expect(toF16(x)).toBe(1 + 2 ** -10);
  });
  it('handles subnormals', () => {
    expect(toF16(2 ** -24)).toBe(2 ** -24); // smallest subnormal
    expect(toF16(2 ** -25)).toBe(0); // tie between 0 and 2^-24: even is 0
    expect(toF16(3 * 2 ** -25)).toBe(2 ** -23); // tie between 1 and 2 units: even is 2
    expect(toF16(2 ** -25 + 2 ** -40)).toBe(2 ** -24);
    expect(toF16(2 ** -14 - 2 ** -25)).toBe(2 ** -14); // tie between largest subnormal (odd) and min normal
    expect(Object.is(toF16(-(2 ** -26)), -0)).toBe(true);
    expect(f16Bits(2 ** -24)).toBe(0x0001);
    expect(f16Bits(1023 * 2 ** -24)).toBe(0x03ff);
    expect(f16Bits(2 ** -14)).toBe(0x0400);
  });
  it('overflows to ±Inf as IEEE: 65520 and above', () => {
    expect(toF16(65504)).toBe(65504);
    expect(toF16(65519.999)).toBe(65504);
    expect(toF16(65520)).toBe(Infinity); // tie between 65504 (odd) and 65536 (even, not finite)
    expect(toF16(-70000)).toBe(-Infinity);
    expect(f16Bits(65520)).toBe(0x7c00);
    expect(f16Bits(-Infinity)).toBe(0xfc00);
    expect(f16Bits(NaN)).toBe(0x7e00);
  });
  it('bit patterns by hand', () => {
    expect(f16Bits(1)).toBe(0x3c00);
    expect(f16Bits(-2)).toBe(0xc000);
    expect(f16Bits(0.5)).toBe(0x3800);
    expect(f16Bits(65504)).toBe(0x7bff);
    expect(f16Bits(-0)).toBe(0x8000);
    expect(f16Bits(0.1)).toBe(0x2e66);
    expect(fromF16Bits(0x2e66)).toBe(0.0999755859375);
    expect(Number.isNaN(fromF16Bits(0x7e01))).toBe(true);
  });
  it('every finite f16: bits round trip, value is a fixed point, both neighbours of each midpoint', () => {
    for (let b = 0; b < 0x7c00; b++) {
      for (const sb of [b, b | 0x8000]) {
        const v = fromF16Bits(sb);
        if (f16Bits(v) !== sb || toF16(v) !== v) throw new Error(`bits ${sb.toString(16)}`);
      }
      // midpoint between b and b+1 (b+1 = 0x7c00 is the "next" value 65536 for overflow): goes to the even one
      const lo = fromF16Bits(b), hi = b + 1 === 0x7c00 ? 65536 : fromF16Bits(b + 1);
      const mid = (lo + hi) / 2, d = (hi - lo) * 2 ** -20;
      const even = b % 2 === 0 ? lo : b + 1 === 0x7c00 ? Infinity : hi;
      if (toF16(mid) !== even) throw new Error(`tie at ${mid}: ${toF16(mid)} (want ${even})`);
      if (toF16(mid - d) !== lo) throw new Error(`below tie ${mid}`);
      if (toF16(mid + d) !== (b + 1 === 0x7c00 ? Infinity : hi)) throw new Error(`above tie ${mid}`);
      if (toF16(-mid) !== -even) throw new Error(`negative tie ${mid}`);
    }
  });
});

describe('roundHalfEven', () => {
  it('ties go to the even integer', () => {
    expect([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, 127.5].map(roundHalfEven)).toEqual([0, 2, 2, 4, 0, -2, -2, 126, 128]);
  });
  it('non-ties go to the nearest', () => {
    expect([0.49999999999999994, 0.5000000000000001, -2.5000001, 7.4, -7.6, 0, 2 ** 53].map(roundHalfEven)).toEqual([0, 1, -3, 7, -8, 0, 2 ** 53]);
  });
});

describe('f16BitsArray (the fast f32 -> f16 of the classifier and embedding)', () => {
  it('equals f16Bits on every kind of f32: random bits, normals, subnormals, ties, the overflow edge, NaN', () => {
    const n = 300_000, f = new Float32Array(n), u = new Uint32Array(f.buffer);
    let s = 7;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      u[i] = i % 3 === 0 ? s : ((((s >>> 9) % 40) + 100) << 23) | (s & 0x807fffff); // exponents 2^-27..2^12
    }
    f.set([65519.99, 65520, -65504, 2 ** -25, 3 * 2 ** -26, NaN, Infinity, -0, 2 ** -14 - 2 ** -30, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);
    const b = f16BitsArray(f);
    let bad = -1;
    for (let i = 0; i < n && bad < 0; i++) if (b[i] !== f16Bits(f[i])) bad = i;
    expect(bad, bad >= 0 ? `${f[bad]}: ${b[bad]} vs ${f16Bits(f[bad])}` : '').toBe(-1);
  });
});
