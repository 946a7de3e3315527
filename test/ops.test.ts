// Every op of backends/backend.ts, written once and run on every backend (test/helpers/backends.ts) and on each
// of a backend's forced kernel variants, against the simulator's pure kernels (simulator/). The tier each
// backend is held to is the one it declares for that op and dtype (Backend.ops, DESIGN §3.7):
//   exact      bytes / codes / f32 values equal the simulator's
//   bounded    KV4 codes within 1 of the simulator's in a fraction < 1e-3; scales and zero points exact
//   tolerance  relative error ‖a−b‖/‖b‖ (the bounds are tight where a backend computes in f64 as the simulator
//              does); quantizers fed by a reduction: scales almost all equal, codes within 1 in a fraction < 1e-3
// Besides: the quantizers' codes of equal f32 inputs are exact on every backend (DESIGN §3.7 tier 1), so a
// fused rmsnorm_quant / silu_mul_quant equals quantize_act of the backend's own rmsnorm / silu_mul output.
// Inputs are seeded random (a failure names its case through the test title). Shapes are small (WebGPU runs on
// SwiftShader on CI) but cover every branch: both precisions, padding (K not a multiple of B), permutations,
// split-K and several K chunks, GQA groups 1-16, head dims 8-256, several pages and sequences, LLaMA-3 heads.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ActQuantSpec, type Backend, type Weight, type KVCache, type KVCacheSpec, type OpDType, type OpName, opTier, type StepLayout, type Tensor, type Tier } from '../backends/backend.ts';
import { f16ArrayToF32, f16Bits } from '../simulator/f16.ts';
import * as F from '../simulator/kernels/float.ts';
import { attention as simAttention, kvAppend as simKvAppend } from '../simulator/kernels/attention.ts';
import { KVStoreF32, type KVStore } from '../simulator/kv.ts';
import { KVStoreKV4, kv4Layout } from '../simulator/kv4.ts';
import { actSpec, dequantizeAct, quantizeAct } from '../simulator/act.ts';
import { rmsnormQuant, siluMulQuant } from '../simulator/kernels/quant.ts';
import { quantizeW4 } from '../simulator/w4.ts';
import { gemmW4Ax } from '../simulator/kernels/gemm_w4ax.ts';
import type { QAct } from '../simulator/formats.ts';
import { fromF16Bits } from '../simulator/f16.ts';
import { activations, permutation, randn, relErr, rng } from '../testing/rng.ts';
import { expectCometError } from './helpers/errors.ts';
import { eachBackend, type Variant } from './helpers/backends.ts';
import { composed } from '../backends/composed.ts';

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

/** f32 outputs equal bit for bit (-0 and NaN included), with the first mismatch in the message */
function expectSameBits(got: Float32Array, want: Float32Array, what = ''): void {
  expect(got.length, what).toBe(want.length);
  let bad = 0, first = -1;
  for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) { bad++; if (first < 0) first = i; }
  expect(bad, `${what} ${bad} of ${want.length} differ, first at ${first}: ${got[first]} vs ${want[first]}`).toBe(0);
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

/** A quantizer's output against the simulator's, at `tier`. */
function expectQAct(got: QAct, want: QAct, tier: Tier | undefined, what = ''): void {
  if (tier === 'exact') {
    expect(firstDiff(qactRaw(got), qactRaw(want)), what).toBe(-1);
    return;
  }
  const d = codeDiff(got, want);
  expect(d.scalesEqual, what).toBeGreaterThan(0.98);
  expect(d.frac, what).toBeLessThan(1e-3);
  expect(d.max, what).toBeLessThanOrEqual(1);
  expect(relErr(dequantizeAct(got), dequantizeAct(want)), what).toBeLessThan(1e-3);
}

/** A float op's output against the simulator's, at `tier` (tolerance: relative error below `tol`). */
function expectF32(got: Float32Array, want: Float32Array, tier: Tier | undefined, tol: number, what = ''): void {
  if (tier === 'exact') expectSameBits(got, want, what);
  else expect(relErr(got, want), what).toBeLessThan(tol);
}

const SPECS: Array<[string, ActQuantSpec]> = [
  ['K=128 B=128 K8=0', actSpec(128, 128, 0)],
  ['K=256 B=64 K8=64 perm', actSpec(256, 64, 64, permutation(rng(7), 256))],
  ['K=200 B=32 K8=32 perm (padded)', actSpec(200, 32, 32, permutation(rng(8), 200))],
  ['K=384 B=128 K8=128', actSpec(384, 128, 128)],
  ['K=96 B=32 K8=96 (all int8)', actSpec(96, 32, 96)],
  ['K=300 B=128 K8=128 perm (padded)', actSpec(300, 128, 128, permutation(rng(9), 300))],
  ['K=700 B=64 K8=0 perm', actSpec(700, 64, 0, permutation(rng(10), 700))],
];

/** KV cache geometries: stories260K-like (hd 8), G < hd, larger heads (wikillama, LLaMA-3), GQA 1..16 */
type Geom = { nKv: number; nH: number; hd: number; P: number; G: number };
const GEOMS: Array<[string, Geom]> = [
  ['hd=8 P=4 GQA 8/4', { nKv: 4, nH: 8, hd: 8, P: 4, G: 8 }],
  ['hd=64 G=32 P=16 GQA 8/2', { nKv: 2, nH: 8, hd: 64, P: 16, G: 32 }],
  ['hd=128 P=16 MHA 2/2', { nKv: 2, nH: 2, hd: 128, P: 16, G: 128 }],
  ['hd=128 G=64 P=16 GQA 8/2', { nKv: 2, nH: 8, hd: 128, P: 16, G: 64 }],
];
/** The shapes the fast decode kernels are tuned for (G = head_dim, pages of 16/32, GQA up to 16), with V scales
 *  that exercise the per-tile power-of-two scaling of P·s_v, over a ragged batch (sequences of 1..1025). */
const LLAMA_GEOMS: Array<[string, Geom & { vScale: number }]> = [
  ['llama3-8b heads (32/8, hd 128)', { nKv: 8, nH: 32, hd: 128, P: 16, G: 128, vScale: 1 }],
  ['GQA 8 hd 128, tiny V scale', { nKv: 2, nH: 16, hd: 128, P: 16, G: 128, vScale: 1e-3 }],
  ['GQA 16 hd 64, pages of 32', { nKv: 1, nH: 16, hd: 64, P: 32, G: 64, vScale: 3 }],
  ['GQA 2 hd 256', { nKv: 2, nH: 4, hd: 256, P: 16, G: 256, vScale: 1 }],
];

/** Sequences with shuffled, interleaved pages: sequence i holds up to lens[i] positions. */
function pageTables(lens: number[], P: number, seed: number): { tables: Int32Array[]; numPages: number } {
  const counts = lens.map((n) => Math.ceil(n / P)), numPages = counts.reduce((a, b) => a + b, 0) + 3;
  const ids = permutation(rng(seed), numPages);
  let o = 0;
  return { tables: counts.map((c) => ids.slice(o, (o += c))), numPages };
}

/** One step: for each sequence i, positions [from[i], to[i]), concatenated in sequence order. */
function stepLayout(from: number[], to: number[], tables: Int32Array[]): StepLayout {
  const pos: number[] = [], seq: number[] = [];
  from.forEach((a, s) => { for (let p = a; p < to[s]; p++) pos.push(p), seq.push(s); });
  return { pos: Int32Array.from(pos), seq: Int32Array.from(seq), blockTables: tables };
}

/** The simulator's store holding a backend's own KV bytes of `layer` (to check attention apart from the codes). */
function storeFromBytes(spec: KVCacheSpec, layer: number, bytes: Uint8Array): KVStore {
  if (spec.dtype === 'kv4') {
    const s = new KVStoreKV4(spec);
    s.data[layer].set(bytes);
    return s;
  }
  const s = new KVStoreF32(spec), f = new Float32Array(bytes.slice().buffer);
  s.k[layer].set(f.subarray(0, f.length / 2));
  s.v[layer].set(f.subarray(f.length / 2));
  return s;
}

/** A backend's KV bytes of one layer against the simulator's store, at `tier`. */
function expectKVBytes(got: Uint8Array, ref: KVStore, spec: KVCacheSpec, layer: number, tier: Tier | undefined): void {
  let want: Uint8Array;
  if (ref instanceof KVStoreKV4) want = ref.data[layer];
  else {
    const { k, v } = ref as KVStoreF32;
    want = new Uint8Array(k[layer].byteLength + v[layer].byteLength);
    want.set(new Uint8Array(k[layer].buffer, k[layer].byteOffset, k[layer].byteLength), 0);
    want.set(new Uint8Array(v[layer].buffer, v[layer].byteOffset, v[layer].byteLength), k[layer].byteLength);
  }
  if (tier === 'exact' || !(ref instanceof KVStoreKV4)) {
    expect(firstDiff(got, want)).toBe(-1);
    return;
  }
  // bounded: per (page, KV head) chunk, the (s, z) pairs exact and each 4-bit code within 1
  const L = kv4Layout(spec);
  let diff = 0, codes = 0;
  for (let c = 0; c < spec.numPages * spec.nKvHeads; c++) {
    const o = c * L.headBytes;
    expect(firstDiff(got.subarray(o + L.kSZ, o + L.headBytes), want.subarray(o + L.kSZ, o + L.headBytes)), `chunk ${c}: scales and zero points`).toBe(-1);
    for (let i = 0; i < 2 * L.codeBytes; i++)
      for (const sh of [0, 4]) {
        const a = (got[o + i] >> sh) & 15, b = (want[o + i] >> sh) & 15;
        codes++;
        if (a !== b) { diff++; expect(Math.abs(a - b)).toBe(1); }
      }
  }
  expect(diff / codes, `${diff} of ${codes} KV4 codes differ by 1`).toBeLessThan(1e-3);
}

eachBackend('ops', ({ name, create, variants }) => {
  let be: Backend;
  let vs: Variant[] = [];
  /** the backend itself and its forced kernels for `op` at `tokens` rows */
  const kernels = (op: Variant['ops'][number], tokens: number): Array<[string, Backend]> =>
    [['default', be], ...vs.filter((v) => v.ops.includes(op) && tokens <= (v.maxTokens ?? Infinity)).map((v): [string, Backend] => [v.name, v.be])];
  beforeAll(async () => {
    be = await create();
    vs = (await variants?.(be)) ?? [];
  });
  afterAll(() => {
    for (const v of vs) v.be.dispose();
    be?.dispose();
  });
  const up = (x: Float32Array, shape: number[]) => be.fromHost(x, shape);
  const tier = (op: OpName, dt?: OpDType) => {
    const t = opTier(be, op, dt);
    if (!t) throw new Error(`${be.name} does not declare ${op} on ${dt ?? 'f32'} (Backend.ops)`);
    return t;
  };

  it('embed: rows of the table', async () => {
    const V = 50, D = 300, table = randn(16, V * D);
    const w = be.uploadWeight({ kind: 'f32', name: 'tok_embed', shape: [V, D], data: table });
    const tokens = Int32Array.from([3, 0, 49, 3, 17]);
    expectF32(await be.read(be.embed(w, tokens)), F.embed(table, D, tokens), tier('embed'), 0);
    expect(() => be.embed(w, Int32Array.of(V))).toThrow(/outside the vocabulary/);
  });

  // f16 float weights (a .comet's classifier and embedding): the embedding reads the f32 values they are; the
  // matmul is the simulator's matmulF16w (x rounded to f16, the exact products summed) at the backend's gemm_f32 f16
  // tier (CUDA: tensor cores, f32 accumulation). The large shapes only where they are fast.
  it.each(name === 'cuda' ? [[3, 64, 200], [3, 4096, 11000], [12, 4096, 2800], [24, 4096, 1400], [70, 4096, 600]] : [[3, 64, 200]])('f16 weights T=%i K=%i N=%i: embed equals that of their f32 values; matmul the simulator\'s', async (T, K, N) => {
    const w = randn(N + K, N * K, 0.1), bits = Uint16Array.from(w, f16Bits), wv = f16ArrayToF32(bits);
    const tokens = Int32Array.from([0, 7, N - 1]), xs = randn(T + K, T * K);
    for (const [kernel, b] of kernels('gemm_f32', Infinity)) {
      const W16 = b.uploadWeight({ kind: 'f16', name: 'output', shape: [N, K], data: bits });
      expect(await b.read(b.embed(W16, tokens)), kernel).toEqual(F.embed(wv, K, tokens));
      expectF32(await b.read(b.matmul(b.fromHost(xs, [T, K]), W16)), F.matmulF16w(xs, T, K, wv, N), tier('gemm_f32', 'f16'), 1e-5, kernel);
    }
  });

  // Batched serving equals requests run alone: a row's f16-weight logits do not depend on how many rows share the
  // call (CUDA: one kernel for every T, each output summed over k in the same k16 steps, no split-K).
  // (the other kernels, WebGPU's workgroup GEMM on SwiftShader, at fewer rows and tokens: barriers are slow there)
  it('f16 weights: rows of a T=1 matmul equal the same rows inside T=37 and T=300 calls, bit for bit', async () => {
    const K = 512, rows = [0, 5, 36];
    const w = randn(91, 700 * K, 0.1), xs = randn(92, 300 * K);
    for (const [kernel, b] of kernels('gemm_f32', Infinity)) {
      const N = kernel === 'default' ? 700 : 24;
      const W16 = b.uploadWeight({ kind: 'f16', name: 'output', shape: [N, K], data: Uint16Array.from(w.subarray(0, N * K), f16Bits) });
      for (const T of kernel === 'default' ? [37, 300] : [37]) {
        const all = await b.read(b.matmul(b.fromHost(xs.subarray(0, T * K), [T, K]), W16));
        for (const r of rows) {
          const one = await b.read(b.matmul(b.fromHost(xs.subarray(r * K, (r + 1) * K), [1, K]), W16));
          expectSameBits(all.subarray(r * N, (r + 1) * N), one, `${kernel}: row ${r} alone vs in T=${T}`);
        }
        b.endStep();
      }
    }
  });

  it('add', async () => {
    const a = randn(2, 5 * 77), b = randn(3, 5 * 77);
    expectF32(await be.read(be.add(up(a, [5, 77]), up(b, [5, 77]))), F.add(a, b), tier('add'), 1e-7);
  });

  it.each([[1, 64], [7, 288], [3, 1000], [5, 96]])('rmsnorm T=%i C=%i', async (T, C) => {
    const x = randn(4 + C, T * C, 3), w = randn(5 + C, C, 0.2).map((v) => v + 1);
    expectF32(await be.read(be.rmsnorm(up(x, [T, C]), up(w, [C]), 1e-5)), F.rmsnorm(x, T, C, w, 1e-5), tier('rmsnorm'), 1e-6);
  });

  // and rows without a perm where CUDA loads a lane's E channels at once (8 bytes at B = 64) or, with K % E != 0
  // (rows not 8/16-byte aligned), one at a time (ops_quant.cu load_channels)
  it.each([
    ...SPECS,
    ['K=320 B=64 K8=64', actSpec(320, 64, 64)],
    ['K=298 B=128 K8=128 (padded, K % 4 = 2)', actSpec(298, 128, 128)],
    ['K=201 B=64 K8=0 (padded, K odd)', actSpec(201, 64, 0)],
  ] as Array<[string, ActQuantSpec]>)('quantize_act %s', async (_, spec) => {
    for (const T of [1, 5, 33]) {
      const x = activations(rng(T * 31 + spec.K), T, spec.K, [3, spec.K - 1], 40);
      x.fill(0, 0, Math.min(spec.K, 40)); // zeros: a block of zeros (s = 0) where the gather keeps them together
      const got = await readQAct(be, be.quantizeAct(up(x, [T, spec.K]), spec), spec);
      expectQAct(got, quantizeAct(x, T, spec), tier('quantize_act', 'qact'), `T=${T}`);
    }
  });

  it('quantize_act: f16 amax values across the whole f16 range round like the simulator (one-element blocks)', async () => {
    // every 3rd positive finite f16 as the only nonzero of a block, in INT8 (qmax 127) and INT4 (qmax 7) blocks:
    // s = f16(amax/qmax) from the exact quotient, and the code of amax itself
    const vals: number[] = [];
    for (let h = 1; h < 0x7c00; h += 3) vals.push(fromF16Bits(h));
    const K = 2048, B = 32, spec = actSpec(K, B, K / 2), perRow = K / B / 2, M = Math.ceil(vals.length / perRow);
    const x = new Float32Array(M * K);
    vals.forEach((v, i) => {
      const m = Math.floor(i / perRow), b = i % perRow;
      x[m * K + b * B + (i % B)] = i % 2 ? -v : v; // INT8 block b
      x[m * K + K / 2 + b * B + ((i * 7) % B)] = v; // INT4 block b
    });
    const got = await readQAct(be, be.quantizeAct(up(x, [M, K]), spec), spec);
    expectQAct(got, quantizeAct(x, M, spec), tier('quantize_act', 'qact'));
  });

  it.each(SPECS)('rmsnorm_quant %s', async (_, spec) => {
    const T = 9, C = spec.K;
    const x = activations(rng(11 + C), T, C, [1, 2], 20), w = randn(12 + C, C, 0.3).map((v) => v + 1);
    const got = await readQAct(be, be.rmsnormQuant(up(x, [T, C]), up(w, [C]), 1e-5, spec), spec);
    expectQAct(got, rmsnormQuant(x, T, C, w, 1e-5, spec), tier('rmsnorm_quant', 'qact'));
    // codes of equal f32 inputs are exact: the fused op is quantize_act of this backend's own rmsnorm
    const normed = await be.read(be.rmsnorm(up(x, [T, C]), up(w, [C]), 1e-5));
    expect(firstDiff(qactRaw(got), qactRaw(quantizeAct(normed, T, spec)))).toBe(-1);
  });

  // The fused decode ops (backends/composed.ts): bit for bit this backend's own composition of the ops they replace
  // (CUDA: one fused kernel against the unfused ones), and against the simulator at the tiers of those ops. Row
  // widths where a row's quantizer spans several thread blocks (CUDA: each writes its share of the sum).
  // CUDA adds a batch of 300 rows: from ~SMs rows up one block per row quantizes several B-blocks per warp (ops_quant.cu
  // row_splits), a path small T never takes (too slow for SwiftShader)
  const bigNorm = actSpec(4096, 128, 256, permutation(rng(16), 4096));
  it.each([
    ['K=4096 B=128 K8=256 perm', bigNorm, 5],
    [SPECS[2][0], SPECS[2][1], 5], [SPECS[6][0], SPECS[6][1], 5],
    ...(name === 'cuda' ? [['K=4096 B=128 K8=256 perm, 300 rows', bigNorm, 300]] : []),
  ] as Array<[string, ActQuantSpec, number]>)('add_rmsnorm and add_rmsnorm_quant %s: x + y and the norm in one op, exactly add then the norm', async (_, spec, T) => {
    const C = spec.K, eps = 1e-5;
    const x = activations(rng(17 + C), T, C, [1, 2], 20), y = randn(18 + C, T * C, 2), w = randn(19 + C, C, 0.3).map((v) => v + 1);
    const sum = F.add(x, y);
    const [s1, h1] = be.addRmsnorm(up(x, [T, C]), up(y, [T, C]), up(w, [C]), eps);
    const [s0, h0] = composed.addRmsnorm(be, up(x, [T, C]), up(y, [T, C]), up(w, [C]), eps);
    expectSameBits(await be.read(s1), await be.read(s0), 'add_rmsnorm sum vs add');
    expectSameBits(await be.read(h1), await be.read(h0), 'add_rmsnorm vs add then rmsnorm');
    expectF32(await be.read(s1), sum, tier('add_rmsnorm'), 1e-7, 'sum vs the simulator');
    expectF32(await be.read(h1), F.rmsnorm(sum, T, C, w, eps), tier('add_rmsnorm'), 1e-6, 'norm vs the simulator');
    const [s2, q2] = be.addRmsnormQuant(up(x, [T, C]), up(y, [T, C]), up(w, [C]), eps, spec);
    const [s3, q3] = composed.addRmsnormQuant(be, up(x, [T, C]), up(y, [T, C]), up(w, [C]), eps, spec);
    expectSameBits(await be.read(s2), await be.read(s3), 'add_rmsnorm_quant sum vs add');
    expect(firstDiff(await be.readRaw!(q2), await be.readRaw!(q3)), 'add_rmsnorm_quant vs add then rmsnorm_quant').toBe(-1);
    expectQAct(await readQAct(be, q2, spec), rmsnormQuant(sum, T, C, w, eps, spec), tier('add_rmsnorm_quant', 'qact'), 'vs the simulator');
    be.endStep();
  });

  for (const dtype of ['f32', 'kv4'] as const) {
    it.each([...GEOMS, ['llama3-8b heads (32/8, hd 128)', LLAMA_GEOMS[0][1]] as [string, Geom]])(`rope_kv_append ${dtype} %s: exactly rope(q), rope(k), kv_append; a prefill chunk and a decode step; every kernel`, async (_, g) => {
      for (const [kernel, b] of kernels('kv_append', Infinity)) {
        const { tables, numPages } = pageTables([23, 9], g.P, 98 + g.hd);
        const spec: KVCacheSpec = { nLayers: 2, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype, group: g.G };
        const rope = { nHeads: g.nH, headDim: g.hd, theta: 500000 }, freqs = F.ropeFreqs(g.hd, rope.theta);
        const fused = b.createKVCache(spec), parts = b.createKVCache(spec);
        const ref: KVStore = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
        const C = g.nKv * g.hd, Q = g.nH * g.hd, t = opTier(b, 'rope_kv_append', dtype), on = (x: Float32Array, shape: number[]) => b.fromHost(x, shape);
        for (const [i, l] of [stepLayout([0, 0], [16, 9], tables), stepLayout([16, 9], [23, 9], tables)].entries()) {
          const T = l.pos.length, q = randn(40 + i, T * Q), k = randn(50 + i, T * C, 2), v = randn(60 + i, T * C);
          const q1 = await b.read(b.ropeKvAppend(on(q, [T, Q]), on(k, [T, C]), on(v, [T, C]), fused, 1, l, rope));
          const q0 = await b.read(composed.ropeKvAppend(b, on(q, [T, Q]), on(k, [T, C]), on(v, [T, C]), parts, 1, l, rope));
          expectSameBits(q1, q0, `${kernel}, step ${i}: rope(q)`);
          expectF32(q1, F.rope(q, T, g.nH, g.hd, l.pos, freqs), t, 1e-6, `${kernel}, step ${i}: rope(q) vs the simulator`);
          simKvAppend(ref, 1, F.rope(k, T, g.nKv, g.hd, l.pos, freqs), v, l);
          b.endStep();
        }
        const bytes = await fused.readLayer(1);
        expect(firstDiff(bytes, await parts.readLayer(1)), `${kernel}: KV bytes vs rope then kv_append`).toBe(-1);
        // against the simulator: exact tiers byte for byte; f32 pages by relative error; a KV4 cache at tolerance
        // follows from the exact composition above and rope's and kv_append's own tests
        if (t === 'exact') expectKVBytes(bytes, ref, spec, 1, t);
        else if (ref instanceof KVStoreF32) {
          const want = new Float32Array(2 * ref.k[1].length);
          want.set(ref.k[1]), want.set(ref.v[1], ref.k[1].length);
          expect(relErr(new Float32Array(bytes.slice().buffer), want)).toBeLessThan(1e-6);
        }
        expect((await fused.readLayer(0)).every((x) => x === 0)).toBe(true); // layer 0 untouched
      }
    });
  }

  // CUDA: 64 rows of LLaMA-3-8B's 14336 too (7,168 warps, more than fit on the GPU at once). Without a perm, CUDA
  // loads a lane's E channels of g and u at once (16 bytes at B = 128, 8 at B = 64) where K % E == 0, one at a
  // time otherwise (K = 298 at B = 128)
  it.each([[6, 352], [3, 200], [2, 298], ...(name === 'cuda' ? [[64, 14336]] : [])])('silu_mul and silu_mul_quant T=%i K=%i', async (T, K) => {
    const g = randn(13 + K, T * K, 2), u = randn(14 + K, T * K, 2);
    const sm = await be.read(be.siluMul(up(g, [T, K]), up(u, [T, K])));
    expectF32(sm, F.siluMul(g, u), tier('silu_mul'), 1e-6);
    for (const spec of [actSpec(K, 32, 64, permutation(rng(15), K)), actSpec(K, 128, 0), actSpec(K, 64, 64)]) {
      const q = await readQAct(be, be.siluMulQuant(up(g, [T, K]), up(u, [T, K]), spec), spec);
      expectQAct(q, siluMulQuant(g, u, T, spec), tier('silu_mul_quant', 'qact'));
      expect(firstDiff(qactRaw(q), qactRaw(quantizeAct(sm, T, spec)))).toBe(-1); // = quantize_act(silu_mul), exactly
    }
  });

  it.each([
    [1, 64, 512], [2, 288, 17], [5, 100, 130], [16, 64, 64], [37, 130, 67], [70, 129, 65], [128, 256, 96], [5, 96, 45],
  ])('matmul f32 T=%i K=%i N=%i', async (T, K, N) => {
    const x = randn(T * 7 + K, T * K), w = randn(N * 3 + K, N * K, 0.1);
    const W = be.uploadWeight({ kind: 'f32', name: 'w', shape: [N, K], data: w });
    expectF32(await be.read(be.matmul(up(x, [T, K]), W)), F.matmul(x, T, K, w, N), tier('gemm_f32'), 1e-6);
  });

  // the classifier's f32 GEMM at 8 < T <= 32 (a streaming GEMV staging x in K-chunks) and above, at sizes past
  // 2^27 multiply-adds (where CUDA's f32 kernels take over from the f64 ones)
  it.each([[12, 4096, 2800], [20, 2052, 3300], [40, 4096, 900]])('matmul f32 at classifier sizes T=%i K=%i N=%i', async (T, K, N) => {
    const x = randn(T + K, T * K), w = randn(N + 1, N * K, 0.05);
    const W = be.uploadWeight({ kind: 'f32', name: 'w', shape: [N, K], data: w });
    expectF32(await be.read(be.matmul(up(x, [T, K]), W)), F.matmul(x, T, K, w, N), tier('gemm_f32'), 5e-6);
  });

  it.each([
    // [M, N, K, B, K8]
    [1, 64, 128, 128, 0],
    [1, 37, 300, 128, 128],
    [1, 19, 4200, 128, 256], // K beyond one 2048-channel chunk
    [3, 100, 200, 32, 32],
    [3, 21, 200, 32, 64],
    [6, 9, 2100, 64, 0],
    [9, 5, 96, 32, 96],
    [17, 257, 512, 128, 128],
    [37, 70, 260, 64, 128],
    [65, 96, 384, 64, 128],
    [130, 136, 256, 128, 0],
    [200, 128, 1000, 128, 256],
    [1, 512, 2048, 128, 256], // decode shapes with many k-tiles: split-K schedules
    [4, 384, 1408, 128, 128],
    [1, 64, 192, 32, 32], // stories260K's down_proj shape (K = 172 -> Kp = 192 at B = 32)
  ])('matmul w4 M=%i N=%i K=%i B=%i K8=%i, every kernel (DESIGN §3.4)', async (M, N, K, B, K8) => {
    const spec = actSpec(K, B, K8, permutation(rng(M + N), K));
    const w4 = quantizeW4(randn(N + K, N * K, 0.05), N, spec, { clipSearch: false });
    const x = activations(rng(M * 5 + K), M, K, [0, 9], 30);
    for (const [kernel, b] of kernels('gemm_w4ax', M)) {
      const W = b.uploadWeight({ kind: 'w4', name: 'w4', ...w4 });
      // the GEMM of quantize_act's qact as it comes (a backend may fold the quantizer into the GEMM: WebGPU's matvec,
      // QIN = 1) and of a qact read first, so recorded on its own (the GEMM reads the codes: the matvec's QIN = 0, a
      // decode step's q/k/v, gate/up and classifier path). Only WebGPU folds, and only in its matvec (M <= 4): the
      // second pass runs there alone (SwiftShader time)
      for (const read of name === 'webgpu' && M <= 4 ? [false, true] : [false]) {
        const q = b.quantizeAct(b.fromHost(x, [M, K]), spec);
        if (read) await b.readRaw!(q);
        const got = await b.read(b.matmul(q, W));
        b.endStep();
        // a kernel that splits K reports its partial-sum order; the simulator reproduces it (DESIGN §3.4)
        const want = gemmW4Ax(quantizeAct(x, M, spec), w4, b.gemmSchedule?.(N, spec));
        const what = `${kernel}, ${read ? 'qact read first' : 'qact as it comes'}`;
        if (opTier(b, 'gemm_w4ax', 'w4') === 'exact') expectSameBits(got, want, what);
        else expect(relErr(got, want), what).toBeLessThan(1e-6);
      }
    }
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
    for (let i = 0; i < ws.length; i++) expectSameBits(await be.read(many[i]), await be.read(be.matmul(q, ws[i])), `weight ${i}`);
  });

  // DESIGN §3.4: the partial-sum schedule is a function of the weight only (Backend.gemmSchedule(N, spec)), so the
  // engine's "batched == alone" and prefix-cache outputs hold: a row's bits do not depend on how many rows share the
  // GEMM, on which kernel the backend picks for that many rows, or on a grouped (matmulMany) launch.
  it.each([
    // [N, K, B, K8]: many one-k-tile slices (N = 64: one n-tile), K8 = 0 / Kp / between, padding (K = 300, B = 32)
    [64, 1024, 128, 0],
    [96, 384, 64, 384],
    [136, 300, 32, 64],
  ])('matmul w4 N=%i K=%i B=%i K8=%i: a row\'s bits do not depend on M, the kernel or grouping', async (N, K, B, K8) => {
    const spec = actSpec(K, B, K8, permutation(rng(N + K), K)), Mx = 300;
    const w4 = quantizeW4(randn(N * 7 + K, N * K, 0.05), N, spec, { clipSearch: false });
    const w4b = quantizeW4(randn(N * 5 + K, 40 * K, 0.05), 40, spec, { clipSearch: false });
    const x = activations(rng(N * 3 + K), Mx, K, [0, 9], 30);
    const pick = (rows: number[]) => {
      const out = new Float32Array(rows.length * K);
      rows.forEach((r, i) => out.set(x.subarray(r * K, (r + 1) * K), i * K));
      return out;
    };
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
    const all = await be.read(be.matmul(be.quantizeAct(up(x, [Mx, K]), spec), be.uploadWeight({ kind: 'w4', name: 'w', ...w4 })));
    be.endStep();
    const want = gemmW4Ax(quantizeAct(x, Mx, spec), w4, be.gemmSchedule?.(N, spec));
    if (tier('gemm_w4ax', 'w4') === 'exact') expectSameBits(all, want, `M=${Mx}`);
    else expect(relErr(all, want)).toBeLessThan(1e-6);
    /** each output row equals its row in `all` (row r of the batch of Mx) */
    const expectRows = (got: Float32Array, rows: number[], what: string) => {
      expect(got.length, what).toBe(rows.length * N);
      const ref = new Float32Array(rows.length * N);
      rows.forEach((r, i) => ref.set(all.subarray(r * N, (r + 1) * N), i * N));
      expectSameBits(got, ref, what);
    };
    // (a few batches, the lone row on the default kernel only: every kernel also equals the simulator at every M in the
    // tests above, and the simulator is M-independent)
    const batches: number[][] = [17, 40, 65].map((M) => range(0, M));
    batches.push([299, 3, 150, 7, 0, 298, 41, 42, 200, 17, 18, 19, 64, 65, 66, 100, 101, 250]); // another mix
    batches.push([150]); // alone
    const weights = new Map<Backend, [Weight, Weight]>();
    for (const rows of batches) {
      const M = rows.length;
      for (const [kernel, b] of M > 1 ? kernels('gemm_w4ax', M) : [['default', be] as [string, Backend]]) {
        if (!weights.has(b)) weights.set(b, [b.uploadWeight({ kind: 'w4', name: 'w', ...w4 }), b.uploadWeight({ kind: 'w4', name: 'w2', ...w4b })]);
        const [W, W2] = weights.get(b)!;
        const q = b.quantizeAct(b.fromHost(pick(rows), [M, K]), spec);
        expectRows(await b.read(b.matmul(q, W)), rows, `${kernel} rows ${rows.slice(0, 4).join()}.. (M = ${M})`);
        const many = b.matmulMany ? b.matmulMany(q, [W, W2]) : [b.matmul(q, W)];
        expectRows(await b.read(many[0]), rows, `${kernel} matmulMany rows ${rows.slice(0, 4).join()}.. (M = ${M})`);
        b.endStep();
      }
    }
  });

  it.each([[8, 4, 8], [4, 2, 64], [6, 6, 48], [3, 3, 32]])('rope nHeads=%i (q) / %i (k) headDim=%i', async (nH, nKv, hd) => {
    const T = 11, layout = { pos: Int32Array.from({ length: T }, (_, i) => (i * 377) % 4096), seq: new Int32Array(T), blockTables: [new Int32Array(20)] };
    const freqs = F.ropeFreqs(hd, 10000);
    for (const h of [nH, nKv]) {
      const x = randn(h * hd, T * h * hd);
      const got = await be.read(be.rope(up(x, [T, h * hd]), layout, { nHeads: h, headDim: hd, theta: 10000 }));
      expectF32(got, F.rope(x, T, h, hd, layout.pos, freqs), tier('rope'), 1e-6);
    }
  });

  for (const dtype of ['f32', 'kv4'] as const) {
    it.each(GEOMS)(`kv_append ${dtype} %s: a prefill chunk and a decode step, two sequences`, async (_, g) => {
      const { tables, numPages } = pageTables([23, 9], g.P, 99 + g.hd);
      const spec: KVCacheSpec = { nLayers: 2, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype, group: g.G };
      const cache = be.createKVCache(spec);
      const ref: KVStore = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
      const C = g.nKv * g.hd;
      for (const [i, l] of [stepLayout([0, 0], [16, 9], tables), stepLayout([16, 9], [23, 9], tables)].entries()) {
        const T = l.pos.length, k = randn(50 + i, T * C, 2), v = randn(60 + i, T * C);
        be.kvAppend(cache, 1, up(k, [T, C]), up(v, [T, C]), l);
        simKvAppend(ref, 1, k, v, l);
      }
      expectKVBytes(await cache.readLayer(1), ref, spec, 1, tier('kv_append', dtype));
      expect((await cache.readLayer(0)).every((b) => b === 0)).toBe(true); // layer 0 untouched
    });

    it.each(GEOMS)(`attention ${dtype} %s: two prefill chunks through the cache, then a split decode step; every kernel`, async (_, g) => {
      for (const [kernel, b] of kernels('attention', Infinity)) {
        const LA = 200, LB = 40;
        const { tables, numPages } = pageTables([LA + 1, LB + 1], g.P, 7 + g.hd);
        const steps = [stepLayout([0, 0], [120, 30], tables), stepLayout([120, 30], [200, 40], tables), stepLayout([200, 40], [201, 41], tables)];
        // KV4's other kernels (WebGPU's workgroup ones on SwiftShader, slow there): one step only appends, then a
        // decode step over 201 and 41 keys (chunks and segments crossed); their prefill is the LLaMA-shape test's
        if (dtype === 'kv4' && kernel !== 'default') await attentionSteps(b, kernel, dtype, g, [stepLayout([0, 0], [200, 40], tables), steps[2]], numPages, 70, 1, 1);
        else await attentionSteps(b, kernel, dtype, g, steps, numPages, 70);
      }
    });
  }

  // every kernel at the first shape, the default one at the others (the GEOMS above run every kernel): WebGPU's
  // workgroup kernels, the GPU's, cost SwiftShader (CI) several seconds a shape in barriers
  it.each(LLAMA_GEOMS)('attention kv4 at LLaMA shapes, %s: a ragged decode batch and a prefill chunk; every kernel at the first', async (_, g) => {
    for (const [kernel, b] of kernels('attention', Infinity).slice(0, g === LLAMA_GEOMS[0][1] ? undefined : 1)) {
      const lens = [1025, 650, 64, 17, 1]; // positions in the cache before the decode steps, per sequence
      const { tables, numPages } = pageTables(lens.map((n) => n + 2), g.P, 5 + g.hd);
      const steps = [
        stepLayout(lens.map(() => 0), lens, tables), // fill
        stepLayout(lens, lens.map((n) => n + 1), tables), // decode: one token per sequence
        stepLayout(lens.slice(0, 3).map((n) => n + 1), lens.slice(0, 3).map((n) => n + 2), tables), // three of them
        stepLayout([0, 600], [0, 616], tables), // a prefill chunk over sequence 1's pages after position 600
        // CUDA: 136 tokens over sequence 0's pages from 880: at 8 KV heads T·n_kv >= 1024, its one-block-per-(token,
        // KV head) mode (the steps above take its one-block-per-128-key-segment mode); too slow for SwiftShader
        ...(name === 'cuda' ? [stepLayout([880], [1016], tables)] : []),
      ];
      await attentionSteps(b, kernel, 'kv4', g, steps, numPages, 170, g.vScale, 1);
    }
  }, 300_000); // SwiftShader: several seconds per kernel

  /** Run `steps` through one paged cache on backend `b` and the simulator: kv_append, then (after the first
   *  `fillSteps`, which only append) attention, whose output is checked (at b's attention tier) against the simulator reading b's own cache bytes, so a KV code
   *  a bounded backend rounded the other way does not count against its attention. The KV bytes themselves are
   *  checked at b's kv_append tier. */
  async function attentionSteps(b: Backend, kernel: string, dtype: 'f32' | 'kv4', g: Geom, steps: StepLayout[], numPages: number, seed: number, vScale = 1, fillSteps = 0): Promise<void> {
    const spec: KVCacheSpec = { nLayers: 1, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype, group: g.G };
    const cache: KVCache = b.createKVCache(spec);
    const ref: KVStore = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
    const C = g.nKv * g.hd, Q = g.nH * g.hd, t = opTier(b, 'attention', dtype);
    for (const [i, l] of steps.entries()) {
      const T = l.pos.length;
      const k = randn(seed + i, T * C, 2), v = randn(seed + 10 + i, T * C, vScale), q = randn(seed + 20 + i, T * Q, 0.5);
      b.kvAppend(cache, 0, b.fromHost(k, [T, C]), b.fromHost(v, [T, C]), l);
      simKvAppend(ref, 0, k, v, l);
      const bytes = await cache.readLayer(0);
      expectKVBytes(bytes, ref, spec, 0, opTier(b, 'kv_append', dtype));
      if (i < fillSteps) continue;
      const got = await b.read(b.attention(b.fromHost(q, [T, Q]), cache, 0, l, g.nH));
      expectF32(got, simAttention(storeFromBytes(spec, 0, bytes), 0, q, l, g.nH), t, 1e-5, `${kernel}, step ${i}`);
      b.endStep();
    }
  }

  // (5000 and 130000 columns: WebGPU cuts rows past 4096 into parts, a workgroup each, then reduces the parts)
  it.each([1000, 5000, 130000])('argmax: first maximum wins (%i columns)', async (C) => {
    const R = 6, x = randn(21, R * C);
    x[1 * C + 10] = 9; x[1 * C + 500] = 9; // a tie: 10 wins
    x[3 * C + C - 1] = 50;
    x.fill(-2, 4 * C, 5 * C); // an all-equal row: 0 wins
    x[5 * C + 300 + 512] = 7; x[5 * C + 300 + 256] = 7; x[5 * C + C - 3] = 7; // ties read by one invocation in one go: 556 wins
    x[2 * C + (C >> 1)] = 20; x[2 * C + C - 1] = 20; // a tie across the parts where there are parts: C / 2 wins
    const got = Array.from(await be.argmax(up(x, [R, C])));
    expect(tier('argmax')).toBe('exact'); // the engine's greedy tokens depend on it
    expect(got).toEqual(Array.from(F.argmax(x, R, C)));
  });

  it.each([[1000, 1], [1000, 40], [5000, 1024], [128256, 40]])('topk: %i columns, k %i: value descending, ties by index, -0 = +0', async (C, k) => {
    const R = 3, x = randn(23, R * C).map((v) => Math.round(v * 16) / 16); // many ties
    x[C + 7] = 30; x[C + 3] = 30; x[C + C - 1] = 30; // a tie at the top: 3, 7, C-1
    x[2 * C + 5] = -0; x[2 * C + 2] = 0;
    x.fill(-2, 2 * C + 10, 2 * C + Math.min(C, 2 * C)); // long runs of equal values around the k-th
    const got = await be.topk(up(x, [R, C]), k);
    expect(tier('topk')).toBe('exact'); // the sampler's candidates depend on it
    const want = F.topk(x, R, C, k);
    expect(Array.from(got.indices)).toEqual(Array.from(want.indices));
    expect(Buffer.from(got.values.buffer, got.values.byteOffset, got.values.byteLength).equals(Buffer.from(want.values.buffer))).toBe(true);
  });

  it.each([[2000, 1024, 2, 8], [10000, 1000, 12, 50]])('topk: %i columns, k %i: hundreds of ties at the k-th value (every %i-th column), subnormals', async (C, k, tieEvery, aboveEvery) => {
    const R = 3, x = randn(24, R * C).map((v) => -4 - Math.abs(v));
    for (let c = 0; c < C; c += tieEvery) x[c] = 1.5; // row 0: the k-th value, hundreds of times (past the first 4096 columns)
    for (let c = 1; c < C; c += aboveEvery) x[c] = 2 + c / C; // with fewer than k values above it
    const tiny = [1e-40, -0, 0, -1e-40, 1e-45]; // row 1: subnormals above and below ±0, which tie at the k-th
    for (let c = 0; c < C; c++) x[C + c] = tiny[c % 5];
    x.fill(0.25, 2 * C, 3 * C); // row 2: one value: the first k columns
    const got = await be.topk(up(x, [R, C]), k), want = F.topk(x, R, C, k);
    expect(Array.from(got.indices)).toEqual(Array.from(want.indices));
    expect(Buffer.from(got.values.buffer, got.values.byteOffset, got.values.byteLength).equals(Buffer.from(want.values.buffer))).toBe(true);
  });

  it('a captured step\'s replays return the top-k of their logits (the k asked for changes between replays)', async ({ skip }) => {
    if (!be.captureStep) return skip('no captureStep on this backend');
    const C = 3000, x = randn(25, 4 * C).map((v) => Math.round(v * 16) / 16), xt = up(x, [4, C]);
    const inp = (rows: number[]) => ({ tokens: new Int32Array(4), layout: stepLayout([0], [4], [Int32Array.of(0)]), rows: Int32Array.from(rows) });
    const first = inp([0, 1, 2]);
    const g = be.captureStep(() => be.rows(xt, first.rows), first); // logits [3][C]: rows of x picked by the inputs
    try {
      for (const [rows, k] of [[[0, 1, 2], 40], [[3, 0, 2], 40], [[1, 1, 3], 1024], [[2, 3, 0], 1]] as const) {
        const sel = Float32Array.from(rows.flatMap((r) => Array.from(x.subarray(r * C, (r + 1) * C))));
        const got = await g.replayTopK(inp([...rows]), k), want = F.topk(sel, 3, C, k);
        expect(Array.from(got.indices), `rows ${rows}, k ${k}`).toEqual(Array.from(want.indices));
        expect(Array.from(got.values)).toEqual(Array.from(want.values));
        expect(Array.from(await g.replay())).toEqual(Array.from(F.argmax(sel, 3, C))); // the greedy replay is unchanged
      }
    } finally {
      g.destroy();
      be.endStep();
    }
  });

  it('topk: k outside [1, min(C, 1024)] is a CometError', async () => {
    const x = up(randn(24, 2 * 2000), [2, 2000]);
    for (const k of [0, 1.5, 1025]) await expectCometError(() => be.topk(x, k), `topk: k = ${k}`);
    const small = up(randn(25, 2 * 8), [2, 8]);
    await expectCometError(() => be.topk(small, 9), 'topk: k = 9', 'row of 8');
  });

  it('rows: gathers rows', async () => {
    const x = randn(22, 9 * 33);
    const want = Float32Array.from([...x.subarray(8 * 33, 9 * 33), ...x.subarray(0, 33), ...x.subarray(4 * 33, 5 * 33)]);
    expectF32(await be.read(be.rows(up(x, [9, 33]), Int32Array.of(8, 0, 4))), want, tier('rows'), 0);
  });
});
