import { describe, expect, it } from 'vitest';
import { getFloat16 } from '@petamoriken/float16';
import type { ActQuantSpec, QAct, W4Weight } from '../../simulator/formats.ts';
import { actSpec, quantizeAct } from '../../simulator/act.ts';
import { f16Bits } from '../../simulator/f16.ts';
import { int4At, packInt4, unpackInt4 } from '../../simulator/int4.ts';
import { gemmW4Ax, type Schedule } from '../../simulator/kernels/gemm_w4ax.ts';
import { quantizeW4, w4FromCodes } from '../../simulator/w4.ts';
import { activations, permutation, rng } from '../../testing/rng.ts';

// The slow reference, written from the contract (DESIGN §3.4) without the simulator's helpers: BigInt dot
// products over the packed bytes, f16 scales decoded by the float16 library, Math.fround after every operation.
function f16At(bits: Uint16Array, i: number): number {
  return getFloat16(new DataView(Uint16Array.of(bits[i]).buffer), 0, true);
}
/** Y[m][n] for one output, in the order of `schedule` (default: one ascending range). */
function refAt(a: QAct, w: W4Weight, m: number, n: number, schedule?: Schedule): number {
  const { B, Kp, K8 } = a.spec, nb = Kp / B, K4 = Kp - K8, fr = Math.fround;
  let sum = 0;
  for (const [b0, b1] of schedule ?? [[0, nb]]) {
    let part = 0;
    for (let b = b0; b < b1; b++) {
      let acc = 0n;
      for (let k = b * B; k < (b + 1) * B; k++) {
        const qa = k < K8 ? a.a8[m * K8 + k] : int4At(a.a4, m * K4 + k - K8);
        acc += BigInt(qa) * BigInt(int4At(w.codes, n * Kp + k));
      }
      const scale = fr(f16At(a.sa, m * nb + b) * f16At(w.scales, n * nb + b));
      part = fr(part + fr(Number(acc) * scale));
    }
    sum = fr(sum + part);
  }
  return getFloat16(new DataView(Uint16Array.of(f16Bits(sum)).buffer), 0, true);
}
function reference(a: QAct, w: W4Weight, schedule?: Schedule): Float32Array {
  const out = new Float32Array(a.M * w.N);
  for (let m = 0; m < a.M; m++) for (let n = 0; n < w.N; n++) out[m * w.N + n] = refAt(a, w, m, n, schedule);
  return out;
}
const same = (x: Float32Array, y: Float32Array) => x.length === y.length && x.every((v, i) => Object.is(v, y[i]));

function problem(seed: number, M: number, N: number, K: number, B: number, K8: number) {
  const r = rng(seed), spec = actSpec(K, B, K8, permutation(r, K));
  const a = quantizeAct(activations(r, M, K, [1, 17, K - 1], 25), M, spec);
  return { a, w: quantizeW4(activations(r, N, K, [], 1).map((x) => x * 0.05), N, spec), r, nb: spec.Kp / B };
}

/** A QAct from unpacked codes [M][Kp] and scale values [M][Kp/B]. */
function qact(M: number, spec: ActQuantSpec, codes: number[], scales: number[]): QAct {
  const { Kp, K8 } = spec, a8: number[] = [], a4: number[] = [];
  for (let m = 0; m < M; m++) for (let k = 0; k < Kp; k++) (k < K8 ? a8 : a4).push(codes[m * Kp + k]);
  return { M, spec, a8: Int8Array.from(a8), a4: packInt4(a4), sa: Uint16Array.from(scales, f16Bits) };
}
const pad = (head: number[][], B: number) => head.flatMap((h) => [...h, ...new Array(B - h.length).fill(0)]);

describe('gemmW4Ax by hand (DESIGN §3.4)', () => {
  it('one INT8 block and one INT4 block', () => {
    const spec = actSpec(64, 32, 32);
    // block 0 (W4A8): acc = 127·7 + (-128)·(-8) = 1913, scale 0.5·0.25 -> t0 = 239.125
    // block 1 (W4A4): acc = 3·5 + (-2)·5 = 5, scale 2·1 -> t1 = 10;  Y = f16(249.125) = 249.125
    const a = qact(1, spec, pad([[127, -128], [3, -2]], 32), [0.5, 2]);
    const w = w4FromCodes(1, Int8Array.from(pad([[7, -8], [5, 5]], 32)), Uint16Array.from([0.25, 1], f16Bits), spec);
    expect([...gemmW4Ax(a, w)]).toEqual([249.125]);
    expect([...reference(a, w)]).toEqual([249.125]);
  });
  it('the order of the additions is pinned: t = 4096, -4096, 2^-14', () => {
    // t0 = 4·4·16·16 = 4096, t1 = -4096, t2 = 1·1·2^-7·2^-7 = 2^-14 (f32 ulp at 4096 is 2^-11: 4096 ± 2^-14 = 4096)
    const spec = actSpec(96, 32, 0);
    const a = qact(1, spec, pad([[4], [-4], [1]], 32), [16, 16, 2 ** -7]);
    const w = w4FromCodes(1, Int8Array.from(pad([[4], [4], [1]], 32)), Uint16Array.from([16, 16, 2 ** -7], f16Bits), spec);
    expect([...gemmW4Ax(a, w)]).toEqual([2 ** -14]); // (4096 - 4096) + 2^-14
    expect([...gemmW4Ax(a, w, [[0, 3]])]).toEqual([2 ** -14]);
    expect([...gemmW4Ax(a, w, [[2, 3], [1, 2], [0, 1]])]).toEqual([0]); // (2^-14 - 4096) + 4096
    expect([...gemmW4Ax(a, w, [[0, 1], [1, 3]])]).toEqual([0]); // 4096 + (-4096 + 2^-14)
    expect([...gemmW4Ax(a, w, [[0, 2], [2, 3]])]).toEqual([2 ** -14]); // (4096 - 4096) + 2^-14
    expect([...gemmW4Ax(a, w, [[2, 3], [0, 2]])]).toEqual([2 ** -14]); // 2^-14 + (4096 - 4096)
  });
  it('validates shapes and schedules', () => {
    const { a, w } = problem(1, 2, 3, 96, 32, 32);
    const w0 = quantizeW4(new Float32Array(3 * 96), 3, actSpec(96, 32, 0));
    expect(() => gemmW4Ax(a, w0)).toThrow(/activation K8 = 32 but weight expects K8 = 0/);
    expect(() => gemmW4Ax(a, quantizeW4(new Float32Array(3 * 64), 3, actSpec(64, 32, 32)))).toThrow(/activation K = 96 but weight expects K = 64/);
    expect(() => gemmW4Ax({ ...a, sa: a.sa.subarray(1) }, w)).toThrow(/sa has 5 elements, expected 6/);
    expect(() => gemmW4Ax(a, w, [[0, 2]])).toThrow(/misses block 2/);
    expect(() => gemmW4Ax(a, w, [[0, 2], [1, 3]])).toThrow(/block 1 twice/);
    expect(() => gemmW4Ax(a, w, [[0, 4]])).toThrow(/\[0, 4\)/);
    expect(() => gemmW4Ax(a, w, [[1, 1], [0, 3]])).toThrow(/\[1, 1\)/);
  });
});

describe('gemmW4Ax against the slow reference', () => {
  const cases: Array<[number, number, number, number, number]> = [
    // M, N, K, B, K8
    [5, 7, 172, 32, 64], // padding: K = 172 in 6 blocks of 32
    [5, 7, 172, 64, 0], // padding: K = 172 in 3 blocks of 64, all INT4
    [5, 7, 172, 64, 192], // K8 = Kp: all INT8
    [3, 9, 512, 128, 128],
    [4, 4, 1024, 32, 256], // 32 blocks
  ];
  it.each(cases)('M=%i N=%i K=%i B=%i K8=%i: bit-identical, outputs are f16 values', (M, N, K, B, K8) => {
    const { a, w } = problem(M * N + K + B + K8, M, N, K, B, K8);
    const y = gemmW4Ax(a, w);
    expect(same(y, reference(a, w))).toBe(true);
    expect(y.every((v) => getFloat16(new DataView(Uint16Array.of(f16Bits(v)).buffer), 0, true) === v)).toBe(true);
    expect(y.some((v) => v !== 0)).toBe(true);
  });
  it('padding channels are exactly 0 in both operands (K = 172)', () => {
    for (const B of [32, 64]) {
      const { a, w } = problem(B, 3, 4, 172, B, 64), { Kp, K8 } = a.spec;
      const qa4 = unpackInt4(a.a4, 3 * (Kp - K8)), qw = unpackInt4(w.codes, 4 * Kp);
      for (let k = 172; k < Kp; k++) {
        for (let m = 0; m < 3; m++) expect(qa4[m * (Kp - K8) + k - K8]).toBe(0);
        for (let n = 0; n < 4; n++) expect(qw[n * Kp + k]).toBe(0);
      }
    }
  });
  // f32 order changes are rarely visible after the f16 output rounding (about 1 output in 4000 here), so these
  // use 16k outputs and check the reference at every output where the orders disagree, plus a random sample.
  const big = problem(5, 64, 256, 1024, 32, 64);
  function checkSchedule(sched: Schedule): number {
    const { a, w, r } = big, y = gemmW4Ax(a, w, sched), plain = gemmW4Ax(a, w);
    const idx = Array.from({ length: 40 }, () => Math.floor(r() * y.length));
    for (let i = 0; i < y.length; i++) if (!Object.is(y[i], plain[i])) idx.push(i);
    for (const i of idx) expect(y[i]).toBe(refAt(a, w, Math.floor(i / w.N), i % w.N, sched));
    return y.filter((v, i) => !Object.is(v, plain[i])).length;
  }
  it('a different order (descending blocks) gives a different result, and the reference agrees', () => {
    const nb = big.nb, desc: Schedule = Array.from({ length: nb }, (_, i) => [nb - 1 - i, nb - i]);
    expect(checkSchedule(desc)).toBeGreaterThan(0);
  });
  it('schedules: one range equals the plain result; splits match the reference with that schedule', () => {
    const nb = big.nb;
    expect(checkSchedule([[0, nb]])).toBe(0);
    let differs = 0;
    for (const cuts of [[0, 16, 32], [0, 5, 6, 20, 32], [0, 1, 2, 3, 31, 32], [0, 8, 16, 24, 32]]) {
      const sched: Schedule = cuts.slice(1).map((c, i) => [cuts[i], c]);
      differs += checkSchedule(sched) + checkSchedule([...sched].reverse()); // partials added in list order
    }
    expect(differs).toBeGreaterThan(0); // the schedule is observable: modelling it is not optional
  });
  it('is fast enough for whole models on CPU (M=512, N=1408, K=512; measured ~0.35 s)', () => {
    const { a, w } = problem(9, 512, 1408, 512, 128, 128);
    const t = performance.now();
    gemmW4Ax(a, w);
    expect(performance.now() - t).toBeLessThan(3000); // loose: only catches a pathological slowdown
  });
});
