// Physical layouts of the CUDA kernels (simulator/layouts/): round trips, and the properties the kernels rely on.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { int4At } from '../simulator/int4.ts';
import {
  KT, NPAD, ROW_BYTES, convertWord, repackW4Tiled, tiledWord, transposeW4Scales, unrepackW4Tiled, w4TiledDims,
} from '../simulator/layouts/w4_tiled.ts';

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const shapes = [
  { N: 172, Kp: 192, B: 32, K8: 0 }, // K = 172 padded with B = 32, all INT4
  { N: 172, Kp: 192, B: 32, K8: 96 }, // partial tiles in both segments
  { N: 1000, Kp: 256, B: 64, K8: 256 }, // all INT8
  { N: 8, Kp: 384, B: 128, K8: 128 },
  { N: 130, Kp: 1024, B: 32, K8: 512 },
];

describe('w4 tiled layout (cuda/gemm_w4ax.cuh)', () => {
  it('matches the constants of the CUDA header', () => {
    const h = readFileSync(new URL('../cuda/gemm_w4ax.cuh', import.meta.url), 'utf8');
    expect(h).toContain(`constexpr int KT = ${KT};`);
    expect(h).toContain(`constexpr int ROW_BYTES = ${ROW_BYTES};`);
    expect(h).toContain(`constexpr int NPAD = ${NPAD};`);
  });

  it.each(shapes)('round-trips canonical codes %o', (s) => {
    const codes = randomBytes((s.N * s.Kp) / 2, s.N * 31 + s.Kp);
    const q = repackW4Tiled(codes, s);
    const d = w4TiledDims(s);
    expect(q.length).toBe(d.qBytes);
    expect(unrepackW4Tiled(q, s)).toEqual(codes);
  });

  it.each(shapes)('puts zeros in the padding %o', (s) => {
    const codes = new Uint8Array((s.N * s.Kp) / 2).fill(0xff); // every code -1: padding is the only 0 nibble
    const q = repackW4Tiled(codes, s);
    const d = w4TiledDims(s);
    let zeros = 0;
    for (const b of q) zeros += (b & 0xf ? 0 : 1) + (b >> 4 ? 0 : 1);
    expect(zeros).toBe(q.length * 2 - s.N * s.Kp);
    expect(q.length * 2).toBe(d.T * d.Npad * KT);
  });

  it('gives the mma the k-runs the activations are read in (two-instruction conversion)', () => {
    const s = { N: 16, Kp: 256, B: 64, K8: 128 };
    const codes = randomBytes((s.N * s.Kp) / 2, 7);
    const q = repackW4Tiled(codes, s);
    const d = w4TiledDims(s);
    const W = (n: number, k: number) => int4At(codes, n * s.Kp + k);
    for (let n = 0; n < s.N; n++)
      for (let t = 0; t < 4; t++)
        for (let c = 0; c < 4; c++) {
          // INT8 tile 0: lo = channels kc+8t .. +3, hi = kc+8t+4 .. +7, each times 16
          const [lo8, hi8] = convertWord(tiledWord(q, d, 0, n, t, c));
          const kc = 32 * c;
          for (let j = 0; j < 4; j++) {
            expect(lo8[j]).toBe(16 * W(n, kc + 8 * t + j));
            expect(hi8[j]).toBe(16 * W(n, kc + 8 * t + 4 + j));
          }
          // INT4 tile 1: lo = even channels of the run kc+8t .. +7, hi = odd ones (as the activation word converts)
          const [lo4, hi4] = convertWord(tiledWord(q, d, 1, n, t, c));
          const kc4 = s.K8 + 32 * c;
          for (let j = 0; j < 4; j++) {
            expect(lo4[j]).toBe(16 * W(n, kc4 + 8 * t + 2 * j));
            expect(hi4[j]).toBe(16 * W(n, kc4 + 8 * t + 2 * j + 1));
          }
        }
  });

  it('transposes the weight scales with zero padding', () => {
    const s = { N: 3, Kp: 128, B: 64, K8: 0 };
    const sc = Uint16Array.from([1, 2, 3, 4, 5, 6]); // [N=3][nb=2]
    const t = transposeW4Scales(sc, s);
    expect(t.length).toBe(2 * 128);
    expect([t[0], t[1], t[2], t[3], t[128], t[129], t[130], t[131]]).toEqual([1, 3, 5, 0, 2, 4, 6, 0]);
  });
});
