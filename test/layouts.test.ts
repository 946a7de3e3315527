// Physical layouts of the CUDA kernels (simulator/layouts/): round trips, and the properties the kernels rely on.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { QAct, W4Weight } from '../simulator/formats.ts';
import { actSpec } from '../simulator/act.ts';
import { f16Bits, fromF16Bits, toF16 } from '../simulator/f16.ts';
import { packInt4 } from '../simulator/int4.ts';
import { gemmW4Ax, type Schedule } from '../simulator/kernels/gemm_w4ax.ts';
import { w4FromCodes } from '../simulator/w4.ts';
import { rng } from '../testing/rng.ts';
import { int4At } from '../simulator/int4.ts';
import {
  KT, NPAD, ROW_BYTES, convertWord, repackW4Tiled, tiledWord, transposeW4Scales, unrepackW4Tiled, v6ActStep,
  v6WeightStep, v7WeightFragment, w4TiledDims,
} from '../simulator/layouts/w4_tiled.ts';
import { actTiledPlace, packActTiled, unpackActTiled } from '../simulator/layouts/act_tiled.ts';

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

  it('gives the v6 (wgmma) kernel operand rows whose k32 dot products are 16x / 256x the canonical ones', () => {
    const s = { N: 8, Kp: 384, B: 128, K8: 128 };
    const codes = randomBytes((s.N * s.Kp) / 2, 11);
    const q = repackW4Tiled(codes, s);
    const d = w4TiledDims(s);
    const W = (n: number, k: number) => int4At(codes, n * s.Kp + k);
    const a4 = randomBytes((s.Kp - s.K8) / 2, 12); // one activation row of the INT4 segment
    const A4 = (k: number) => int4At(a4, k);
    for (let n = 0; n < s.N; n++)
      for (let c = 0; c < 4; c++) {
        const w8 = v6WeightStep(q, d, 0, n, c); // W4A8 tile: canonical order, 16*W
        for (let p = 0; p < 32; p++) expect(w8[p]).toBe(16 * W(n, 32 * c + p));
        for (const i of [1, 2]) { // W4A4 tiles: both operands in the lo/hi order
          const w4 = v6WeightStep(q, d, i, n, c), a = v6ActStep(a4, (i - d.T8) * ROW_BYTES, c);
          let dot = 0, ref = 0;
          for (let p = 0; p < 32; p++) dot += w4[p] * a[p];
          for (let p = 0; p < 32; p++) {
            const k = (i - d.T8) * KT + 32 * c + p;
            ref += W(n, s.K8 + k) * A4(k);
          }
          expect(dot).toBe(256 * ref);
          for (let t = 0; t < 4; t++)
            for (let j = 0; j < 4; j++) expect(w4[4 * t + j]).toBe(16 * W(n, s.K8 + (i - d.T8) * KT + 32 * c + 8 * t + 2 * j));
        }
      }
  });

  it('gives the v7 kernel register fragments (weights as wgmma A) the operand rows of v6, in every tile and step', () => {
    for (const s of [{ N: 16, Kp: 512, B: 128, K8: 256 }, { N: 9, Kp: 384, B: 128, K8: 0 }, { N: 9, Kp: 256, B: 128, K8: 256 }]) {
      const codes = randomBytes((s.N * s.Kp) / 2, 13 + s.K8);
      const q = repackW4Tiled(codes, s), d = w4TiledDims(s);
      for (let i = 0; i < d.T; i++)
        for (let n = 0; n < s.N; n++)
          for (let c = 0; c < 4; c++) {
            const v7 = v7WeightFragment(q, d, i, n, c);
            expect(Array.from(v7)).toEqual(Array.from(v6WeightStep(q, d, i, n, c)));
            if (i < d.T8) // W4A8 tiles: 16*W in canonical channel order, as the int8 activation rows land in smem
              for (let p = 0; p < 32; p++) expect(v7[p]).toBe(16 * int4At(codes, n * s.Kp + i * KT + 32 * c + p));
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

// The CUDA kernels' arithmetic, emulated on the repacked weights: per 32-channel chunk and mma thread t, the two
// int8x4 halves of the weight word (16*q) times the activation halves (int8 run [kc+8t, +8) or the converted int4
// word), accumulated from MAGIC; per block the f32 epilogue of gemm_w4ax.cu (2^-4 / 2^-8 folded into sa; the FMA
// form for W4A4 blocks, emulated exactly in f64). Must equal the simulator's gemmW4Ax bit for bit.
const MAGIC = 0x4b400000, MAGIC_F = 12582912;
const bits = new Int32Array(1), asF32 = new Float32Array(bits.buffer);

function emulateKernel(a: QAct, w: W4Weight, schedule: Schedule): Float32Array {
  const { Kp, B, K8 } = a.spec, nb = Kp / B, s = { N: w.N, Kp, B, K8 }, d = w4TiledDims(s);
  const q = repackW4Tiled(w.codes, s), fr = Math.fround, rowb = (Kp - K8) / 2;
  const out = new Float32Array(a.M * w.N);
  for (let m = 0; m < a.M; m++)
    for (let n = 0; n < w.N; n++) {
      let sum = 0;
      for (const [b0, b1] of schedule) {
        let part = 0;
        for (let b = b0; b < b1; b++) {
          const int8 = b * B < K8;
          let raw = 0;
          for (let kc = b * B; kc < (b + 1) * B; kc += 32) {
            const seg = int8 ? kc : kc - K8, tile = (int8 ? 0 : d.T8) + Math.floor(seg / KT), c = (seg % KT) >> 5;
            for (let t = 0; t < 4; t++) {
              const [lw, hw] = convertWord(tiledWord(q, d, tile, n, t, c));
              let la: ArrayLike<number>, ha: ArrayLike<number>;
              if (int8) {
                const o = m * K8 + kc + 8 * t;
                la = a.a8.subarray(o, o + 4);
                ha = a.a8.subarray(o + 4, o + 8);
              } else {
                const o = m * rowb + seg / 2 + 4 * t;
                [la, ha] = convertWord((a.a4[o] | (a.a4[o + 1] << 8) | (a.a4[o + 2] << 16) | (a.a4[o + 3] << 24)) >>> 0);
              }
              for (let j = 0; j < 4; j++) raw += lw[j] * la[j] + hw[j] * ha[j];
            }
          }
          bits[0] = MAGIC + raw;
          const x = asF32[0];
          const sa = fromF16Bits(a.sa[m * nb + b]), sw = fromF16Bits(w.scales[n * nb + b]);
          let t: number;
          if (int8) t = fr(fr(x - MAGIC_F) * fr(fr(sa * 2 ** -4) * sw));
          else t = fr(fr(x * sw - fr(sw * MAGIC_F)) * fr(sa * 2 ** -8)); // x*sw - C is exact in f64: one rounding, as the FMA
          part = fr(part + t);
        }
        sum = fr(sum + part);
      }
      out[m * w.N + n] = toF16(sum);
    }
  return out;
}

/** The CUDA schedule's k-slices (every kernel, every M; KS from the weight's shape: gemm_w4ax_decode.cuh
 *  schedule_slices, reported by comet_gemm_w4ax_schedule): KS tile-aligned ranges of blocks, slice k = tiles
 *  [k*T/KS, (k+1)*T/KS). */
function sliceSchedule(Kp: number, B: number, K8: number, KS: number): Schedule {
  const T8 = Math.ceil(K8 / KT), T = T8 + Math.ceil((Kp - K8) / KT), nb = Kp / B, nbt = KT / B;
  const block0 = (i: number) => (i < T8 ? i * nbt : Math.min(K8 / B + (i - T8) * nbt, nb));
  const ks = Math.min(KS, T);
  return Array.from({ length: ks }, (_, k) => [block0(Math.floor((k * T) / ks)), block0(Math.floor(((k + 1) * T) / ks))]);
}

describe('the CUDA kernels arithmetic on the tiled layout', () => {
  const cases = [
    { M: 3, N: 20, K: 172, B: 32, K8: 64, extreme: false },
    { M: 2, N: 9, K: 384, B: 128, K8: 128, extreme: false },
    { M: 2, N: 8, K: 256, B: 64, K8: 64, extreme: true }, // every code at its most negative value: |acc| = 2^13 / 2^17
    { M: 2, N: 8, K: 512, B: 128, K8: 256, extreme: true },
    { M: 3, N: 5, K: 1152, B: 128, K8: 384, extreme: false }, // v5/v6 shape: one block per k-tile, 9 tiles
  ];
  it.each(cases)('equals gemmW4Ax %o', ({ M, N, K, B, K8, extreme }) => {
    const r = rng(M * 1000 + N * 10 + B);
    const spec = actSpec(K, B, K8), { Kp } = spec, nb = Kp / B;
    const code = (lo: number, hi: number) => (extreme ? lo : lo + Math.floor(r() * (hi - lo + 1)));
    const a8 = Int8Array.from({ length: M * K8 }, (_, i) => (i % K8 < K ? code(-128, 127) : 0));
    const q4 = Int8Array.from({ length: M * (Kp - K8) }, (_, i) => (K8 + (i % (Kp - K8)) < K ? code(-8, 7) : 0));
    const wq = Int8Array.from({ length: N * Kp }, (_, i) => (i % Kp < K ? code(-8, 7) : 0));
    // scales: ordinary magnitudes, plus a few tiny (f16-subnormal) and large ones
    const scale = (i: number, base: number) => f16Bits(i % 7 === 3 ? 2 ** -22 * (1 + (i % 5)) : i % 11 === 5 ? 900 + i : base * (0.5 + r()));
    const a: QAct = { M, spec, a8, a4: packInt4(q4), sa: Uint16Array.from({ length: M * nb }, (_, i) => scale(i, 0.05)) };
    const w: W4Weight = w4FromCodes(N, wq, Uint16Array.from({ length: N * nb }, (_, i) => scale(i + 1, 0.002)), spec);
    for (const sched of [[[0, nb]] as Schedule, sliceSchedule(Kp, B, K8, 2), sliceSchedule(Kp, B, K8, 3),
      sliceSchedule(Kp, B, K8, 4)]) {
      const want = gemmW4Ax(a, w, sched), got = emulateKernel(a, w, sched);
      expect(got.every((v, i) => Object.is(v, want[i]))).toBe(true);
    }
  });
});

describe('act_tiled (the activations the CUDA GEMM v8 copies, v8_pack)', () => {
  const shapes = [
    { M: 1, Kp: 128, K8: 0 }, // one row, one INT4 tile
    { M: 37, Kp: 512, K8: 128 }, // rows not a multiple of 8, both segments
    { M: 130, Kp: 384, K8: 384 }, // all INT8, Mpad = 256
    { M: 200, Kp: 640, K8: 256 },
  ];
  it.each(shapes)('round-trips codes and scales, every channel at its own byte %o', (s) => {
    const K4 = s.Kp - s.K8, T = s.Kp / KT;
    const a8 = Int8Array.from(randomBytes(s.M * s.K8, 11 + s.M));
    const a4 = randomBytes((s.M * K4) / 2, 13 + s.M);
    const sa = Uint16Array.from({ length: s.M * T }, (_, i) => f16Bits(((i % 13) - 6) * 0.37 + (i % 5 === 0 ? 2 ** -20 : 0)));
    const p = packActTiled(a8, a4, sa, s);
    expect(p.Mpad % 128).toBe(0);
    expect(p.X.length).toBe(T * p.Mpad * KT);
    const back = unpackActTiled(p, s);
    expect(Array.from(back.a8)).toEqual(Array.from(a8));
    expect(Array.from(back.a4)).toEqual(Array.from(a4));
    expect(Array.from(back.sa)).toEqual(Array.from(sa));
    const seen = new Uint8Array(p.X.length);
    for (let m = 0; m < s.M; m++) for (let k = 0; k < s.Kp; k++) seen[actTiledPlace(s, p.Mpad, m, k).byte]++;
    let wrong = 0; // every byte of a real row written once, none of a padding row (zero: the kernel reads whole tiles)
    for (let i = 0; i < T; i++)
      for (let m = 0; m < p.Mpad; m++) {
        for (let b = 0; b < KT; b++) if (seen[(i * p.Mpad + m) * KT + b] !== (m < s.M ? 1 : 0)) wrong++;
        if (m >= s.M && p.SA[i * p.Mpad + m] !== 0) wrong++;
      }
    expect(wrong).toBe(0);
  });

  it('lays a tile of NT rows out as the swizzled wgmma B operand, INT4 tiles in the order of v6ActStep', () => {
    const s = { M: 64, Kp: 512, K8: 128 }, K4 = s.Kp - s.K8;
    const a8 = Int8Array.from(randomBytes(s.M * s.K8, 5)), a4 = randomBytes((s.M * K4) / 2, 6);
    const p = packActTiled(a8, a4, new Uint16Array(s.M * 4), s);
    for (const m0 of [0, 32]) // NT = 32 tiles at m0 = 0 and 32: row r of the tile at r * 128, piece c at (c ^ (r & 7)) * 16
      for (let i = 0; i < 4; i++)
        for (let r = 0; r < 32; r++) {
          const base = (i * p.Mpad + m0) * KT + r * KT, m = m0 + r;
          const plain = new Int8Array(KT);
          for (let c = 0; c < 8; c++) for (let j = 0; j < 16; j++) plain[16 * c + j] = p.X[base + ((c ^ (r & 7)) << 4) + j];
          if (i === 0) expect(Array.from(plain)).toEqual(Array.from(a8.subarray(m * s.K8, (m + 1) * s.K8)));
          else
            for (let c = 0; c < 4; c++) // k32 step c of the INT4 tile: the operand bytes the W4A4 wgmma reads
              expect(Array.from(plain.subarray(32 * c, 32 * c + 32))).toEqual(
                Array.from(v6ActStep(a4.subarray((m * K4) / 2, ((m + 1) * K4) / 2), (i - 1) * ROW_BYTES, c)));
        }
  });

  it('refuses shapes the kernel cannot run', () => {
    expect(() => packActTiled(new Int8Array(0), new Uint8Array(0), new Uint16Array(0), { M: 1, Kp: 96, K8: 0 })).toThrow(RangeError);
  });
});
