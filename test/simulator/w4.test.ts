import { describe, expect, it } from 'vitest';
import { actSpec } from '../../simulator/act.ts';
import { fromF16Bits } from '../../simulator/f16.ts';
import { unpackInt4 } from '../../simulator/int4.ts';
import { dequantizeW4, quantizeW4, w4FromCodes } from '../../simulator/w4.ts';
import { activations, permutation, rng } from '../../testing/rng.ts';

const blockErr = (w: Float32Array, d: Float32Array, o: number, od: number, B: number) => {
  let e = 0;
  for (let k = 0; k < B; k++) e += (w[o + k] - d[od + k]) ** 2;
  return e;
};

describe('W4 weights by hand (DESIGN §3.3)', () => {
  it('RTN without clip search: s = f16(amax/7), nearest code, ties to even', () => {
    const w = new Float32Array(64);
    w.set([7, -7, 3.5, 1, 0.2]); // row 0: s = 1, codes 7, -7, 4 (3.5 tie -> even), 1, 0; row 1 all zero: s = 0
    const q = quantizeW4(w, 2, actSpec(32, 32, 0), { clipSearch: false });
    expect([...q.scales]).toEqual([0x3c00, 0]);
    expect([...q.codes.subarray(0, 3)]).toEqual([0x97, 0x14, 0x00]); // 7|(-7)<<4, 4|1<<4
    expect(q.codes.every((b, i) => i < 3 || b === 0)).toBe(true);
  });
  it('w4FromCodes and dequantize by hand', () => {
    const codes = new Int8Array(32);
    codes.set([1, -2, 7, -8]);
    const q = w4FromCodes(1, codes, Uint16Array.of(0x3800), actSpec(32, 32, 0)); // s = 0.5
    expect([...q.codes.subarray(0, 2)]).toEqual([0xe1, 0x87]);
    expect([...dequantizeW4(q).subarray(0, 5)]).toEqual([0.5, -1, 3.5, -4, 0]);
  });
  it('clip search trades the outlier for the bulk, and uses -8 only as the nearest code', () => {
    // one outlier of -14 among 31 ones: clip 1 gives s = 2, every 1 -> code 0 (0.5 ties to even), error 31
    const w = new Float32Array(32).fill(1);
    w[0] = -14;
    const spec = actSpec(32, 32, 0);
    const plain = quantizeW4(w, 1, spec, { clipSearch: false }), clipped = quantizeW4(w, 1, spec);
    expect(fromF16Bits(plain.scales[0])).toBe(2);
    expect(blockErr(w, dequantizeW4(plain), 0, 0, 32)).toBe(31);
    const s = fromF16Bits(clipped.scales[0]), c = unpackInt4(clipped.codes, 32);
    expect(s).toBeLessThan(2);
    expect(blockErr(w, dequantizeW4(clipped), 0, 0, 32)).toBeLessThan(20);
    expect(c[0]).toBe(-8); // -14/s < -7.5: -8 is the nearest code
    expect(-14 / s).toBeLessThan(-7.5);
    expect(c.subarray(1).every((v) => v === 1)).toBe(true);
  });
  it('validates', () => {
    const spec = actSpec(30, 32, 0);
    const codes = new Int8Array(32);
    codes[31] = 1;
    expect(() => w4FromCodes(1, codes, new Uint16Array(1), spec)).toThrow(/padding code \[0\]\[31\]/);
    expect(() => w4FromCodes(1, new Int8Array(30), new Uint16Array(1), spec)).toThrow(/N·Kp/);
    expect(() => w4FromCodes(1, Int8Array.of(9, ...new Array(31).fill(0)), new Uint16Array(1), spec)).toThrow(/not an int4/);
    expect(() => quantizeW4(new Float32Array(31), 1, spec)).toThrow(/N·K/);
  });
});

describe('W4 properties', () => {
  for (const [K, B] of [[172, 32], [172, 64], [256, 128]]) {
    it(`K=${K} B=${B}: permutation, padding, range, half-step error, clip search never worse`, () => {
      const r = rng(K + B), N = 6, perm = permutation(r, K);
      const spec = actSpec(K, B, 0, perm), { Kp } = spec, nb = Kp / B;
      const w = activations(r, N, K, [5, 77], 8); // heavy-tailed rows
      const plain = quantizeW4(w, N, spec, { clipSearch: false }), clip = quantizeW4(w, N, spec);
      // same as quantizing the column-permuted matrix with the identity permutation
      const wp = new Float32Array(N * K);
      for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) wp[n * K + j] = w[n * K + perm[j]];
      expect(quantizeW4(wp, N, actSpec(K, B, 0))).toEqual({ ...clip, act: actSpec(K, B, 0) });
      const dp = dequantizeW4(plain), dc = dequantizeW4(clip);
      const cp = unpackInt4(plain.codes, N * Kp), cc = unpackInt4(clip.codes, N * Kp);
      for (let n = 0; n < N; n++)
        for (let b = 0; b < nb; b++) {
          const sp = fromF16Bits(plain.scales[n * nb + b]), sc = fromF16Bits(clip.scales[n * nb + b]);
          for (let k = b * B; k < (b + 1) * B; k++) {
            const i = n * Kp + k, x = k < K ? wp[n * K + k] : 0;
            if (k >= K) expect(cp[i] === 0 && cc[i] === 0).toBe(true);
            expect(cp[i] >= -7 && cp[i] <= 7).toBe(true); // with clip 1, -8 is never the nearest code
            expect(Math.abs(x - dp[i])).toBeLessThanOrEqual((sp / 2) * (1 + 2 ** -20));
            expect(cc[i] >= -8 && cc[i] <= 7).toBe(true);
            if (cc[i] === -8) expect(x / sc).toBeLessThan(-7.5);
          }
          const wrow = new Float32Array(Kp);
          wrow.set(wp.subarray(n * K, (n + 1) * K));
          expect(blockErr(wrow, dc, b * B, n * Kp + b * B, B)).toBeLessThanOrEqual(blockErr(wrow, dp, b * B, n * Kp + b * B, B));
        }
      // round trip through unpacked codes
      expect(w4FromCodes(N, cc, clip.scales, spec)).toEqual(clip);
    });
  }
});
