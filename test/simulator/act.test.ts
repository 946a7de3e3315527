import { describe, expect, it } from 'vitest';
import { actSpec, dequantizeAct, quantizeAct } from '../../simulator/act.ts';
import { fromF16Bits, toF16 } from '../../simulator/f16.ts';
import { unpackInt4 } from '../../simulator/int4.ts';
import { activations, permutation, rng } from '../../testing/rng.ts';

const row = (K: number, head: number[]) => { const x = new Float32Array(K); x.set(head); return x; };

describe('actSpec', () => {
  it('pads K up to a multiple of B', () => {
    expect(actSpec(172, 32, 0).Kp).toBe(192);
    expect(actSpec(172, 64, 64).Kp).toBe(192);
    expect(actSpec(172, 128, 0).Kp).toBe(256);
    expect(actSpec(512, 128, 128)).toEqual({ K: 512, B: 128, Kp: 512, K8: 128 });
  });
  it('validates', () => {
    expect(() => actSpec(64, 48, 0)).toThrow(/B = 48/);
    expect(() => actSpec(64, 32, 16)).toThrow(/K8 = 16/);
    expect(() => actSpec(64, 32, 96)).toThrow(/K8 = 96/);
    expect(() => actSpec(4, 32, 0, Int32Array.of(0, 1, 1, 3))).toThrow(/not a permutation/);
    expect(() => actSpec(4, 32, 0, Int32Array.of(0, 1, 2))).toThrow(/length 3/);
    expect(() => actSpec(0, 32, 0)).toThrow(/K = 0/);
  });
});

describe('quantizeAct by hand (DESIGN §3.2)', () => {
  it('INT4 block: s = f16(amax/7), ties to even, f32 inputs rounded to f16 first', () => {
    // amax 7 -> s = 1. 0.5+2^-12 is f32 but rounds to f16 0.5 (a tie, to even), whose code is 0 (tie, to even):
    // without the f16 step it would be 1.
    const q = quantizeAct(row(32, [7, -3.5, 0.5 + 2 ** -12, 0.26, -7]), 1, actSpec(32, 32, 0));
    expect([...q.sa]).toEqual([0x3c00]);
    expect(q.a8.length).toBe(0);
    // codes 7, -4, 0, 0, -7, 0...: bytes 0xC7, 0x00, 0x09, then zeros
    expect([...q.a4]).toEqual([0xc7, 0x00, 0x09, ...new Array(13).fill(0)]);
  });
  it('INT8 block then INT4 block', () => {
    const x = new Float32Array(64);
    x.set([127, -254, 3, 1], 0); // amax 254 -> s = 2: codes 63.5->64, -127, 1.5->2, 0.5->0
    x.set([-14, 14, 3, 5], 32); // amax 14 -> s = 2: codes -7, 7, 1.5->2, 2.5->2
    const q = quantizeAct(x, 1, actSpec(64, 32, 32));
    expect([...q.sa]).toEqual([0x4000, 0x4000]);
    expect([...q.a8]).toEqual([64, -127, 2, 0, ...new Array(28).fill(0)]);
    expect([...q.a4]).toEqual([0x79, 0x22, ...new Array(14).fill(0)]);
  });
  it('a zero block has s = 0 and codes 0', () => {
    const x = new Float32Array(64);
    x[40] = 1;
    const q = quantizeAct(x, 1, actSpec(64, 32, 0));
    // 1/7 = 1.142857·2^-3 -> mantissa round(0.142857·1024) = 146 = 0x92, exponent -3+15 = 12: 0x3092
    expect([...q.sa]).toEqual([0, 0x3092]);
    const c = unpackInt4(q.a4, 64);
    expect(c.every((v, k) => v === (k === 40 ? 7 : 0))).toBe(true);
  });
  it('gathers channel j from input channel perm[j]', () => {
    const q = quantizeAct(Float32Array.of(0, 0, 7, -7), 1, actSpec(4, 32, 0, Int32Array.of(2, 0, 3, 1)));
    expect([...unpackInt4(q.a4, 4)]).toEqual([7, 0, -7, 0]);
  });
  it('rejects values beyond f16 range and wrong sizes', () => {
    expect(() => quantizeAct(Float32Array.of(1, 70000), 1, actSpec(2, 32, 0))).toThrow(/channel 1 = 70000/);
    expect(() => quantizeAct(new Float32Array(5), 1, actSpec(4, 32, 0))).toThrow(/M·K/);
  });
});

describe('quantizeAct properties', () => {
  it('f16(amax/qmax) equals f16(f32(amax/qmax)) for every f16 amax (CUDA may divide in f32)', () => {
    for (let b = 1; b < 0x7c00; b++) {
      const a = fromF16Bits(b);
      for (const qmax of [7, 127]) if (toF16(a / qmax) !== toF16(Math.fround(a / qmax))) throw new Error(`amax ${a} / ${qmax}`);
    }
  });
  for (const [K, B, K8] of [[172, 32, 64], [172, 64, 0], [172, 64, 192], [512, 128, 128], [96, 32, 96]]) {
    it(`K=${K} B=${B} K8=${K8}: codes in range, max |code| = qmax, error ≤ s/2, padding is 0`, () => {
      const r = rng(K * 7 + B + K8), M = 9;
      const spec = actSpec(K, B, K8, permutation(r, K));
      const x = activations(r, M, K, [3, 50, 100], 40);
      for (let k = 0; k < K; k++) x[4 * K + k] = 0; // one all-zero token
      const q = quantizeAct(x, M, spec);
      const { Kp } = spec, nb = Kp / B;
      expect([q.a8.length, q.a4.length, q.sa.length]).toEqual([M * K8, (M * (Kp - K8)) / 2, M * nb]);
      const d = dequantizeAct(q), q4 = unpackInt4(q.a4, M * (Kp - K8));
      for (let m = 0; m < M; m++)
        for (let b = 0; b < nb; b++) {
          const s = fromF16Bits(q.sa[m * nb + b]), qmax = b * B < K8 ? 127 : 7;
          let maxc = 0;
          for (let k = b * B; k < (b + 1) * B; k++) {
            const c = k < K8 ? q.a8[m * K8 + k] : q4[m * (Kp - K8) + k - K8];
            expect(c >= -qmax && c <= qmax).toBe(true); // -qmax-1 is never produced
            maxc = Math.max(maxc, Math.abs(c));
            const x16 = k < K ? toF16(x[m * K + spec.perm![k]]) : 0;
            if (k >= K) expect(c).toBe(0); // padding
            expect(d[m * Kp + k]).toBe(c * s);
            expect(Math.abs(x16 - c * s)).toBeLessThanOrEqual((s / 2) * (1 + 2 ** -20));
          }
          expect(maxc).toBe(m === 4 || s === 0 ? 0 : qmax); // amax/s rounds to qmax: the scale is used fully
        }
    });
  }
});
