// Every op of backends/backend.ts, written once and run on every backend (test/helpers/backends.ts), against
// the simulator's pure kernels (simulator/), with the DESIGN §3.7 tiers:
//   exact   embed, add, rows, argmax, quantize_act codes + scales, the W4Ax GEMM output, KV bytes (f32, KV4)
//   tier 3  rmsnorm, rope, silu_mul, f32 GEMM, attention: relative error ‖a−b‖/‖b‖ (these backends compute
//           them in f64 as the simulator does, so the bounds are tight); rmsnorm_quant and silu_mul_quant:
//           codes may differ by 1 where the f32 input moved by an ulp, in a small measured fraction.
// Inputs are seeded random (a failure names its seed through the test title).
import { f16ArrayToF32, f16Bits } from '../simulator/f16.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ActQuantSpec, Backend, KVCacheSpec, StepLayout, Tensor } from '../backends/backend.ts';
import * as F from '../simulator/kernels/float.ts';
import { attention as simAttention, kvAppend as simKvAppend } from '../simulator/kernels/attention.ts';
import { KVStoreF32, type KVStore } from '../simulator/kv.ts';
import { KVStoreKV4 } from '../simulator/kv4.ts';
import { actSpec, dequantizeAct, quantizeAct } from '../simulator/act.ts';
import { rmsnormQuant, siluMulQuant } from '../simulator/kernels/quant.ts';
import { quantizeW4 } from '../simulator/w4.ts';
import { gemmW4Ax } from '../simulator/kernels/gemm_w4ax.ts';
import type { QAct } from '../simulator/formats.ts';
import { fromF16Bits } from '../simulator/f16.ts';
import { activations, permutation, randn, relErr, rng } from './simulator/rng.ts';
import { backends, kvLayerBytes } from './helpers/backends.ts';

/** a8 | a4 | sa bytes of a simulator QAct (the order readRaw returns) */
function qactRaw(q: QAct): Uint8Array {
  const out = new Uint8Array(q.a8.length + q.a4.length + q.sa.byteLength);
  out.set(new Uint8Array(q.a8.buffer, q.a8.byteOffset, q.a8.length), 0);
  out.set(q.a4, q.a8.length);
  out.set(new Uint8Array(q.sa.buffer, q.sa.byteOffset, q.sa.byteLength), q.a8.length + q.a4.length);
  return out;
}

/** index of the first differing byte, or -1 (a readable failure instead of a 100k-element diff) */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Codes of two quantized activations of the same spec: where a block's scales agree, the fraction of codes
 *  that differ and the largest difference; and the fraction of scales that agree. */
function codeDiff(a: QAct, b: QAct): { frac: number; max: number; scalesEqual: number } {
  const da = dequantizeAct(a), db = dequantizeAct(b);
  const { B, Kp } = a.spec, nb = Kp / B;
  let diff = 0, max = 0, same = 0;
  for (let i = 0; i < a.sa.length; i++) if (a.sa[i] === b.sa[i]) same++;
  for (let m = 0; m < a.M; m++)
    for (let k = 0; k < Kp; k++) {
      const i = m * Kp + k, blk = m * nb + Math.floor(k / B);
      if (a.sa[blk] !== b.sa[blk] || da[i] === db[i]) continue;
      diff++;
      max = Math.max(max, Math.round(Math.abs(da[i] - db[i]) / fromF16Bits(a.sa[blk])));
    }
  return { frac: diff / (a.M * Kp), max, scalesEqual: same / a.sa.length };
}

/** QAct from a backend's raw bytes */
async function readQAct(be: Backend, t: Tensor, spec: ActQuantSpec): Promise<QAct> {
  const raw = await be.readRaw!(t), M = t.shape[0];
  const n8 = M * spec.K8, n4 = (M * (spec.Kp - spec.K8)) / 2;
  return { M, spec, a8: new Int8Array(raw.buffer, raw.byteOffset, n8), a4: raw.slice(n8, n8 + n4), sa: new Uint16Array(raw.slice(n8 + n4).buffer) };
}

const SPECS: Array<[string, ActQuantSpec]> = [
  ['K=128 B=128 K8=0', actSpec(128, 128, 0)],
  ['K=256 B=64 K8=64 perm', actSpec(256, 64, 64, permutation(rng(7), 256))],
  ['K=200 B=32 K8=32 perm (padded)', actSpec(200, 32, 32, permutation(rng(8), 200))],
  ['K=384 B=128 K8=128', actSpec(384, 128, 128)],
  ['K=96 B=32 K8=96 (all int8)', actSpec(96, 32, 96)],
];

/** Two sequences with shuffled, interleaved pages: A has `la` positions, B has `lb`. */
function twoSeqs(la: number, lb: number, P: number): { tablesA: Int32Array; tablesB: Int32Array; numPages: number } {
  const na = Math.ceil(la / P), nb = Math.ceil(lb / P), numPages = na + nb + 3;
  const ids = permutation(rng(99 + la + lb), numPages);
  return { tablesA: ids.slice(0, na), tablesB: ids.slice(na, na + nb), numPages };
}

/** One step: seq A positions [a0, a1), seq B positions [b0, b1), concatenated A then B. */
function stepLayout(a0: number, a1: number, b0: number, b1: number, tA: Int32Array, tB: Int32Array): StepLayout {
  const pos: number[] = [], seq: number[] = [];
  for (let p = a0; p < a1; p++) pos.push(p), seq.push(0);
  for (let p = b0; p < b1; p++) pos.push(p), seq.push(1);
  return { pos: Int32Array.from(pos), seq: Int32Array.from(seq), blockTables: [tA, tB] };
}

describe.each(backends)('ops on $name', ({ name, create }) => {
  let be: Backend;
  beforeAll(async () => {
    be = await create();
  });
  afterAll(() => be?.dispose());
  const up = (x: Float32Array, shape: number[]) => be.fromHost(x, shape);

  it('embed: rows of the table, exactly', async () => {
    const V = 37, D = 72, table = randn(1, V * D);
    const w = be.uploadWeight({ kind: 'f32', name: 'tok_embed', shape: [V, D], data: table });
    const tokens = Int32Array.from([0, 5, 36, 5, 17]);
    expect(await be.read(be.embed(w, tokens))).toEqual(F.embed(table, D, tokens));
    expect(() => be.embed(w, Int32Array.of(37))).toThrow(/outside the vocabulary/);
  });

  // f16 float weights (a .comet's classifier and embedding): read as the f32 values they are, so every op on
  // them equals the same op on f32 weights holding those values, bit for bit (same kernels' sums). The large
  // shape (T·K·N > 2^27: CUDA's f32 streaming GEMV; the small one its f64 kernel) only where it is fast.
  it.each(name === 'cuda' ? [[3, 64, 200], [3, 4096, 11000], [12, 4096, 2800], [24, 4096, 1400]] : [[3, 64, 200]])('f16 weights T=%i K=%i N=%i: embed and matmul equal those of their f32 values', async (T, K, N) => {
    const w = randn(N + K, N * K, 0.1), bits = Uint16Array.from(w, f16Bits), wv = f16ArrayToF32(bits);
    const W16 = be.uploadWeight({ kind: 'f16', name: 'output', shape: [N, K], data: bits });
    const W32 = be.uploadWeight({ kind: 'f32', name: 'output32', shape: [N, K], data: wv });
    const tokens = Int32Array.from([0, 7, N - 1]);
    expect(await be.read(be.embed(W16, tokens))).toEqual(F.embed(wv, K, tokens));
    const x = up(randn(T + K, T * K), [T, K]);
    const a = await be.read(be.matmul(x, W16)), b = await be.read(be.matmul(x, W32));
    expect(firstDiff(new Uint8Array(a.buffer), new Uint8Array(b.buffer))).toBe(-1);
  });

  it('add: exactly', async () => {
    const a = randn(2, 5 * 77), b = randn(3, 5 * 77);
    expect(await be.read(be.add(up(a, [5, 77]), up(b, [5, 77])))).toEqual(F.add(a, b));
  });

  it.each([[1, 64], [7, 288], [3, 1000]])('rmsnorm T=%i C=%i (tier 3)', async (T, C) => {
    const x = randn(4 + C, T * C, 3), w = randn(5 + C, C, 0.2).map((v) => v + 1);
    const got = await be.read(be.rmsnorm(up(x, [T, C]), up(w, [C]), 1e-5));
    expect(relErr(got, F.rmsnorm(x, T, C, w, 1e-5))).toBeLessThan(1e-6);
  });

  it.each(SPECS)('quantize_act %s: codes and scales exact', async (_, spec) => {
    for (const T of [1, 5, 33]) {
      const x = activations(rng(T * 31 + spec.K), T, spec.K, [3, spec.K - 1], 40);
      const got = await be.readRaw!(be.quantizeAct(up(x, [T, spec.K]), spec));
      const want = qactRaw(quantizeAct(x, T, spec));
      expect(firstDiff(got, want), `T=${T}`).toBe(-1);
    }
  });

  it.each(SPECS)('rmsnorm_quant %s: tier 3 (codes of equal f32 inputs are exact)', async (_, spec) => {
    const T = 9, C = spec.K;
    const x = activations(rng(11 + C), T, C, [1, 2], 20), w = randn(12 + C, C, 0.3).map((v) => v + 1);
    const got = await readQAct(be, be.rmsnormQuant(up(x, [T, C]), up(w, [C]), 1e-5, spec), spec);
    const want = rmsnormQuant(x, T, C, w, 1e-5, spec);
    const d = codeDiff(got, want);
    expect(d.scalesEqual).toBeGreaterThan(0.98);
    expect(d.frac).toBeLessThan(1e-3);
    expect(d.max).toBeLessThanOrEqual(1);
    expect(relErr(dequantizeAct(got), dequantizeAct(want))).toBeLessThan(1e-3);
  });

  it('silu_mul (tier 3) and silu_mul_quant (codes of equal inputs exact)', async () => {
    const T = 6, K = 352;
    const g = randn(13, T * K, 2), u = randn(14, T * K, 2);
    const got = await be.read(be.siluMul(up(g, [T, K]), up(u, [T, K])));
    expect(relErr(got, F.siluMul(g, u))).toBeLessThan(1e-6);
    for (const [, spec] of [['', actSpec(K, 32, 64, permutation(rng(15), K))], ['', actSpec(K, 128, 0)]] as const) {
      const q = await readQAct(be, be.siluMulQuant(up(g, [T, K]), up(u, [T, K]), spec), spec);
      const want = siluMulQuant(g, u, T, spec);
      const d = codeDiff(q, want);
      expect(d.scalesEqual).toBeGreaterThan(0.98);
      expect(d.frac).toBeLessThan(1e-3);
      expect(d.max).toBeLessThanOrEqual(1);
    }
  });

  it.each([
    [1, 64, 512], [2, 288, 17], [5, 100, 130], [16, 64, 64], [37, 130, 67], [70, 129, 65], [128, 256, 96],
  ])('matmul f32 T=%i K=%i N=%i (tier 3, f64 sums)', async (T, K, N) => {
    const x = randn(T * 7 + K, T * K), w = randn(N * 3 + K, N * K, 0.1);
    const W = be.uploadWeight({ kind: 'f32', name: 'w', shape: [N, K], data: w });
    const got = await be.read(be.matmul(up(x, [T, K]), W));
    expect(relErr(got, F.matmul(x, T, K, w, N))).toBeLessThan(1e-6);
  });

  it.each([
    // [M, N, K, B, K8]
    [1, 64, 128, 128, 0],
    [3, 100, 200, 32, 32],
    [17, 257, 512, 128, 128],
    [65, 96, 384, 64, 128],
    [130, 136, 256, 128, 0],
    [200, 128, 1000, 128, 256],
    [1, 512, 2048, 128, 256], // decode shapes with many k-tiles: split-K schedules
    [4, 384, 1408, 128, 128],
    [1, 64, 192, 32, 32], // stories260K's down_proj shape (K = 172 -> Kp = 192 at B = 32)
  ])('matmul w4 M=%i N=%i K=%i B=%i K8=%i: exact (DESIGN §3.4)', async (M, N, K, B, K8) => {
    const spec = actSpec(K, B, K8, permutation(rng(M + N), K));
    const wf = randn(N + K, N * K, 0.05);
    const w4 = quantizeW4(wf, N, spec, { clipSearch: false });
    const W = be.uploadWeight({ kind: 'w4', name: 'w4', ...w4 });
    const x = activations(rng(M * 5 + K), M, K, [0, 9], 30);
    const got = await be.read(be.matmul(be.quantizeAct(up(x, [M, K]), spec), W));
    // a kernel that splits K reports its partial-sum order; the simulator reproduces it (DESIGN §3.4)
    const schedule = (be as Backend & { gemmSchedule?: (M: number, N: number, s: ActQuantSpec) => Array<[number, number]> }).gemmSchedule?.(M, N, spec);
    const want = gemmW4Ax(quantizeAct(x, M, spec), w4, schedule);
    let bad = -1;
    for (let i = 0; i < want.length && bad < 0; i++) if (!Object.is(got[i], want[i])) bad = i;
    expect(bad, bad >= 0 ? `first mismatch at ${bad}: ${got[bad]} vs ${want[bad]}` : '').toBe(-1);
  });

  it.each([
    // [M, [N...], K, B, K8]: q/k/v and gate/up groups; decode and prefill sizes, split-K shapes
    [1, [512, 128, 128], 512, 128, 128],
    [5, [100, 36, 36], 200, 32, 32],
    [1, [1408, 1408], 512, 128, 0],
    [16, [1408, 1408], 512, 64, 128],
    [40, [256, 64, 64], 1000, 128, 256],
    [64, [384, 384], 2048, 128, 128],
    [100, [136, 72], 256, 128, 0],
  ] as Array<[number, number[], number, number, number]>)('matmulMany M=%i N=%j K=%i B=%i K8=%i: output i = matmul(x, w_i) exactly', async (M, Ns, K, B, K8) => {
    const spec = actSpec(K, B, K8, permutation(rng(M + K), K));
    const ws = Ns.map((N, i) => be.uploadWeight({ kind: 'w4', name: `w${i}`, ...quantizeW4(randn(N + K + i, N * K, 0.05), N, spec, { clipSearch: false }) }));
    const q = be.quantizeAct(up(activations(rng(M * 7 + K), M, K, [0, 9], 30), [M, K]), spec);
    const many = be.matmulMany ? be.matmulMany(q, ws) : ws.map((w) => be.matmul(q, w));
    expect(many.map((t) => t.shape.join())).toEqual(Ns.map((N) => `${M},${N}`));
    for (let i = 0; i < ws.length; i++) {
      const got = await be.read(many[i]), want = await be.read(be.matmul(q, ws[i]));
      let bad = -1;
      for (let j = 0; j < want.length && bad < 0; j++) if (!Object.is(got[j], want[j])) bad = j;
      expect(bad, bad >= 0 ? `weight ${i}: first mismatch at ${bad}: ${got[bad]} vs ${want[bad]}` : '').toBe(-1);
    }
  });

  it.each([[8, 4, 8], [4, 2, 64], [6, 6, 48]])('rope nHeads=%i (q) / %i (k) headDim=%i (tier 3)', async (nH, nKv, hd) => {
    const T = 11, layout = { pos: Int32Array.from({ length: T }, (_, i) => (i * 37) % 300), seq: new Int32Array(T), blockTables: [new Int32Array(20)] };
    const freqs = F.ropeFreqs(hd, 10000);
    for (const h of [nH, nKv]) {
      const x = randn(h * hd, T * h * hd);
      const got = await be.read(be.rope(up(x, [T, h * hd]), layout, { nHeads: h, headDim: hd, theta: 10000 }));
      expect(relErr(got, F.rope(x, T, h, hd, layout.pos, freqs))).toBeLessThan(1e-6);
    }
  });

  // KV cache geometries: stories260K-like (hd 8), a G < hd case, a larger head
  const GEOMS: Array<[string, { nKv: number; nH: number; hd: number; P: number; G: number }]> = [
    ['hd=8 P=4 GQA 8/4', { nKv: 4, nH: 8, hd: 8, P: 4, G: 8 }],
    ['hd=64 G=32 P=16 GQA 8/2', { nKv: 2, nH: 8, hd: 64, P: 16, G: 32 }],
    ['hd=128 P=16 MHA 2/2', { nKv: 2, nH: 2, hd: 128, P: 16, G: 128 }],
  ];

  for (const dtype of ['f32', 'kv4'] as const) {
    it.each(GEOMS)(`kv_append ${dtype} %s: bytes equal the simulator's`, async (_, g) => {
      const { tablesA, tablesB, numPages } = twoSeqs(23, 9, g.P);
      const spec: KVCacheSpec = { nLayers: 2, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype, group: g.G };
      const cache = be.createKVCache(spec);
      const ref: KVStore = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
      const C = g.nKv * g.hd;
      // prefill chunk (A 0..15, B 0..8), then one decode token each
      for (const [i, l] of [stepLayout(0, 16, 0, 9, tablesA, tablesB), stepLayout(16, 23, 9, 9, tablesA, tablesB)].entries()) {
        const T = l.pos.length, k = randn(50 + i, T * C, 2), v = randn(60 + i, T * C);
        be.kvAppend(cache, 1, up(k, [T, C]), up(v, [T, C]), l);
        simKvAppend(ref, 1, k, v, l);
      }
      const want = dtype === 'kv4' ? (ref as KVStoreKV4).data[1] : await kvLayerBytes({ spec, store: ref } as never, 1);
      const got = await kvLayerBytes(cache, 1);
      expect(firstDiff(got, want)).toBe(-1);
      expect(firstDiff(await kvLayerBytes(cache, 0), new Uint8Array(want.length))).toBe(-1); // layer 0 untouched
    });

    it.each(GEOMS)(`attention ${dtype} %s: prefill chunk + decode, two sequences (tier 3)`, async (_, g) => {
      await attentionSteps(dtype, g, 70, (got, want, i) => expect(relErr(got, want), `step ${i}`).toBeLessThan(1e-5));
    });
  }

  // KV4 attention bit for bit (DESIGN §3.5.1: integer q·k and P·V, f32 ops in a fixed order, a specified exp2;
  // simulator/kernels/attention_kv4.ts is the definition, CUDA's kernel computes it exactly). Head dims of the test
  // models (8: stories260K, 64, 128), GQA groups 1, 2 and 4, KV4 groups G < 8, G < hd and G = hd; a prefill chunk,
  // a second chunk through the cache, a decode step over three 128-key segments. WebGPU has no FMA control: the
  // tier-3 test above bounds it.
  const EXACT_GEOMS: Array<[string, { nKv: number; nH: number; hd: number; P: number; G: number }]> = [
    ['hd=8 GQA 8/4 (stories260K)', { nKv: 4, nH: 8, hd: 8, P: 4, G: 8 }],
    ['hd=8 G=4 MHA 4/4', { nKv: 4, nH: 4, hd: 8, P: 16, G: 4 }],
    ['hd=64 G=32 GQA 8/4', { nKv: 4, nH: 8, hd: 64, P: 16, G: 32 }],
    ['hd=64 GQA 8/2', { nKv: 2, nH: 8, hd: 64, P: 16, G: 64 }],
    ['hd=128 GQA 4/2', { nKv: 2, nH: 4, hd: 128, P: 16, G: 128 }],
    ['hd=128 G=64 GQA 8/2', { nKv: 2, nH: 8, hd: 128, P: 16, G: 64 }],
  ];
  const exactAttn = name !== 'webgpu';
  if (!exactAttn) console.warn(`NOT RUN on ${name}: the bit-equal KV4 attention tests (WGSL has no FMA control; tier 3 is asserted instead)`);
  it.skipIf(!exactAttn).each(EXACT_GEOMS)('attention kv4 %s: prefill chunk + decode, bit-equal to the simulator', async (_, g) => {
    await attentionSteps('kv4', g, 170, (got, want, i) => {
      const gb = new Uint32Array(got.buffer, got.byteOffset, got.length), wb = new Uint32Array(want.buffer, want.byteOffset, want.length);
      let nd = 0, first = -1;
      for (let j = 0; j < wb.length; j++) if (gb[j] !== wb[j]) { nd++; if (first < 0) first = j; }
      expect(got.length).toBe(want.length);
      expect(nd, `step ${i}: ${nd} of ${wb.length} differ, first at ${first} (${got[first]} vs ${want[first]})`).toBe(0);
    });
  });

  /** Two sequences through one paged cache: a prefill chunk of both, a second chunk that attends to the first
   *  through the cache, then a decode step (A long enough to split the decode over the sequence); `check` gets
   *  the backend's and the simulator's attention outputs of each step. Seeds from `seed`. */
  async function attentionSteps(dtype: 'f32' | 'kv4', g: { nKv: number; nH: number; hd: number; P: number; G: number }, seed: number, check: (got: Float32Array, want: Float32Array, step: number) => void): Promise<void> {
    const LA = 300, LB = 40;
    const { tablesA, tablesB, numPages } = twoSeqs(LA + 1, LB + 1, g.P);
    const spec: KVCacheSpec = { nLayers: 1, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype, group: g.G };
    const cache = be.createKVCache(spec);
    const ref: KVStore = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
    const C = g.nKv * g.hd, Q = g.nH * g.hd;
    const steps = [stepLayout(0, 200, 0, 30, tablesA, tablesB), stepLayout(200, 300, 30, 40, tablesA, tablesB), stepLayout(300, 301, 40, 41, tablesA, tablesB)];
    for (const [i, l] of steps.entries()) {
      const T = l.pos.length;
      const k = randn(seed + i, T * C, 2), v = randn(seed + 10 + i, T * C), q = randn(seed + 20 + i, T * Q, 0.5);
      be.kvAppend(cache, 0, up(k, [T, C]), up(v, [T, C]), l);
      simKvAppend(ref, 0, k, v, l);
      check(await be.read(be.attention(up(q, [T, Q]), cache, 0, l, g.nH)), simAttention(ref, 0, q, l, g.nH), i);
      be.endStep();
    }
  }

  it('argmax: first maximum wins, exactly', async () => {
    const R = 5, C = 1000, x = randn(21, R * C);
    x[1 * C + 10] = 9; x[1 * C + 500] = 9; // a tie: 10 wins
    x[3 * C + 999] = 50;
    x.fill(-2, 4 * C, 5 * C); // an all-equal row: 0 wins
    expect(Array.from(await be.argmax(up(x, [R, C])))).toEqual(Array.from(F.argmax(x, R, C)));
  });

  it('rows: gathers rows exactly', async () => {
    const x = randn(22, 9 * 33);
    const got = await be.read(be.rows(up(x, [9, 33]), Int32Array.of(8, 0, 4)));
    expect(got).toEqual(Float32Array.from([...x.subarray(8 * 33, 9 * 33), ...x.subarray(0, 33), ...x.subarray(4 * 33, 5 * 33)]));
  });
});
