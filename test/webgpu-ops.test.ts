// Every WebGPU op against the simulator's definition, on the same seeded inputs (DESIGN §3.7):
//   tier 1 (bit-exact): W4Ax GEMM (matvec, 4-token matvec and tiled kernels, dot4I8Packed and the integer
//     fallback), activation codes and scales given the same f32 inputs (quantize_act; rmsnorm_quant and
//     silu_mul_quant given the backend's own rmsnorm / silu_mul output), embed, rows, argmax, add.
//   tier 2 (bounded): KV4 codes; the simulator rounds f32(x - z)/s to f32 before rounding to an integer, the
//     shader rounds the exact quotient: they can differ by 1 where that f32 rounding lands on a half.
//   tier 3 (relative error): rmsnorm, silu_mul, rope, gemm_f32, attention (f32 and KV4 pages).
// Runs on SwiftShader on CI (slow: ~30 MB/s), so shapes are small but cover every branch: both precisions,
// padding (K not a multiple of B), permutations, several K chunks, GQA, several pages and sequences.
import { beforeAll, describe, expect, it } from 'vitest';
import type { KVCacheSpec, QAct, StepLayout } from '../simulator/formats.ts';
import { actSpec, quantizeAct } from '../simulator/act.ts';
import { quantizeW4 } from '../simulator/w4.ts';
import { gemmW4Ax } from '../simulator/kernels/gemm_w4ax.ts';
import { KVStoreKV4, kv4Layout } from '../simulator/kv4.ts';
import { KVStoreF32 } from '../simulator/kv.ts';
import { attention, kvAppend } from '../simulator/kernels/attention.ts';
import * as F from '../simulator/kernels/float.ts';
import { createWebGPUBackend, WebGPUBackend, type WTensor } from '../backends/webgpu/webgpu.ts';
import { loadShaderSources } from '../backends/webgpu/shaders.ts';
import { activations, normal, permutation, rng } from '../testing/rng.ts';

/** The WebGPU backend, once per file. No adapter is a failure, never a skip: the message says why and how
 *  (SwiftShader's env vars; .ci/webgpu-env.sh sets them on CI). */
let shared: Promise<WebGPUBackend> | undefined;
const webgpu = (): Promise<WebGPUBackend> =>
  (shared ??= createWebGPUBackend().catch((e) => { throw new Error(`WebGPU tests need an adapter and have none: ${(e as Error).message}`); }));

let be: WebGPUBackend;
beforeAll(async () => { be = await webgpu(); });

const raw = (q: QAct) => {
  const out = new Uint8Array(q.a8.length + q.a4.length + q.sa.byteLength);
  out.set(new Uint8Array(q.a8.buffer, q.a8.byteOffset, q.a8.length), 0);
  out.set(q.a4, q.a8.length);
  out.set(new Uint8Array(q.sa.buffer, q.sa.byteOffset, q.sa.byteLength), q.a8.length + q.a4.length);
  return out;
};
const sameBits = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let bad = 0, first = -1;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) { bad++; if (first < 0) first = i; }
  expect(bad, `first mismatch at ${first}: ${a[first]} vs ${b[first]}`).toBe(0);
};
const relErr = (a: Float32Array, b: Float32Array) => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
};
const randn = (seed: number, n: number, scale = 1) => { const r = rng(seed); return Float32Array.from({ length: n }, () => normal(r) * scale); };

function problem(seed: number, M: number, N: number, K: number, B: number, K8: number) {
  const r = rng(seed), spec = actSpec(K, B, K8, permutation(r, K));
  const x = activations(r, M, K, [1, 17, K - 1], 25);
  const w = quantizeW4(activations(r, N, K, [], 1).map((v) => v * 0.05), N, spec, { clipSearch: false });
  return { x, spec, w };
}

describe('webgpu: W4Ax GEMM is bit-exact (DESIGN §3.4)', () => {
  // [M, N, K, B, K8]: matvec (M = 1), matvec of 4 tokens (M = 2..8), tiled (M > 8); K beyond one 2048 chunk
  const shapes: Array<[number, number, number, number, number]> = [
    [1, 37, 300, 128, 128], [1, 19, 4200, 128, 256], [3, 21, 200, 32, 64], [6, 9, 2100, 64, 0], [37, 70, 260, 64, 128], [9, 5, 96, 32, 96],
  ];
  const kernels = {
    matvec: { gemm: 'matvec' }, 'matvec 4x4096': { gemm: 'matvec', matvec: { teams: 4, chunk: 4096 } }, 'matvec 2x1024': { gemm: 'matvec', matvec: { teams: 2, chunk: 1024 } }, 'matvec 8x1024': { gemm: 'matvec', matvec: { teams: 8, chunk: 1024 } },
    rowwise: { gemm: 'rowwise' }, tiled: { gemm: 'tiled' },
  } as const;
  let forced: Record<string, WebGPUBackend>;
  beforeAll(async () => {
    const src = await loadShaderSources();
    forced = Object.fromEntries(Object.entries(kernels).map(([k, o]) => [k, new WebGPUBackend(be.gpu, src, o)]));
  });
  it.each(shapes)('M=%i N=%i K=%i B=%i K8=%i: every kernel (matvec variants, rowwise, tiled)', async (M, N, K, B, K8) => {
    const { x, spec, w } = problem(M * 1000 + N, M, N, K, B, K8);
    const want = gemmW4Ax(quantizeAct(x, M, spec), w);
    for (const b of Object.values(forced)) {
      const got = await b.read(b.matmul(b.quantizeAct(b.fromHost(x, [M, K]), spec), b.uploadWeight({ kind: 'w4', name: 'w', ...w })));
      b.endStep();
      sameBits(got, want);
    }
  });
  it('the integer fallback of dot4I8Packed gives the same bits', async () => {
    const plain = new WebGPUBackend({ ...be.gpu, dot4: false }, await loadShaderSources(), { gemm: 'matvec' });
    for (const [M, N, K, B, K8] of [[1, 13, 300, 128, 128], [2, 7, 200, 32, 32]]) {
      const { x, spec, w } = problem(7 + M, M, N, K, B, K8);
      const got = await plain.read(plain.matmul(plain.quantizeAct(plain.fromHost(x, [M, K]), spec), plain.uploadWeight({ kind: 'w4', name: 'w', ...w })));
      plain.endStep();
      sameBits(got, gemmW4Ax(quantizeAct(x, M, spec), w));
    }
    plain.dispose();
  });
});

describe('webgpu: FMPQ activation quantizers (DESIGN §3.2)', () => {
  it.each([[5, 300, 128, 128], [3, 96, 32, 32], [2, 700, 64, 0], [4, 256, 128, 256]])('quantize_act codes and scales are exact: M=%i K=%i B=%i K8=%i', async (M, K, B, K8) => {
    const r = rng(M * 31 + K), spec = actSpec(K, B, K8, permutation(r, K));
    const x = activations(r, M, K, [0, 5, K - 2], 40);
    x[3] = 0; // a zero and a block of zeros (s = 0)
    const got = await be.readRaw(be.quantizeAct(be.fromHost(x, [M, K]), spec));
    be.endStep();
    expect(got).toEqual(raw(quantizeAct(x, M, spec)));
  });
  it('f16 amax values across the whole f16 range round like the simulator (one-element blocks)', async () => {
    // every 3rd positive finite f16 as the only nonzero of a block, in INT8 (qmax 127) and INT4 (qmax 7) blocks:
    // s = f16(amax/qmax) from the exact quotient, and the code of amax itself
    const { fromF16Bits } = await import('../simulator/f16.ts');
    const vals: number[] = [];
    for (let h = 1; h < 0x7c00; h += 3) vals.push(fromF16Bits(h));
    const K = 2048, B = 32, spec = actSpec(K, B, K / 2), perRow = K / B / 2, M = Math.ceil(vals.length / perRow);
    const x = new Float32Array(M * K);
    vals.forEach((v, i) => {
      const m = Math.floor(i / perRow), b = i % perRow;
      x[m * K + b * B + (i % B)] = i % 2 ? -v : v; // INT8 block b
      x[m * K + K / 2 + b * B + ((i * 7) % B)] = v; // INT4 block b
    });
    const got = await be.readRaw(be.quantizeAct(be.fromHost(x, [M, K]), spec));
    be.endStep();
    expect(got).toEqual(raw(quantizeAct(x, M, spec)));
  });
  it('rmsnorm_quant = quantize_act(rmsnorm) and silu_mul_quant = quantize_act(silu_mul), exactly', async () => {
    const M = 3, K = 200, r = rng(5), spec = actSpec(K, 64, 64, permutation(r, K));
    const x = be.fromHost(activations(r, M, K, [7], 20), [M, K]), w = be.fromHost(randn(6, K, 0.3).map((v) => 1 + v), [K]);
    const normed = await be.read(be.rmsnorm(x, w, 1e-5));
    const q1 = await be.readRaw(be.rmsnormQuant(x, w, 1e-5, spec));
    const g = be.fromHost(randn(8, M * K, 3), [M, K]), u = be.fromHost(randn(9, M * K, 2), [M, K]);
    const sm = await be.read(be.siluMul(g, u));
    const q2 = await be.readRaw(be.siluMulQuant(g, u, spec));
    be.endStep();
    expect(q1).toEqual(raw(quantizeAct(normed, M, spec)));
    expect(q2).toEqual(raw(quantizeAct(sm, M, spec)));
  });
});

describe('webgpu: float ops (tier 3 unless exact)', () => {
  it('rmsnorm, silu_mul, add, rope, gemm_f32 against the simulator', async () => {
    const T = 5, C = 96, r = rng(11);
    const xs = activations(r, T, C), ws = randn(12, C, 0.2).map((v) => 1 + v), gs = randn(13, T * C, 2), us = randn(14, T * C);
    const x = be.fromHost(xs, [T, C]);
    expect(relErr(await be.read(be.rmsnorm(x, be.fromHost(ws, [C]), 1e-5)), F.rmsnorm(xs, T, C, ws, 1e-5))).toBeLessThan(1e-6);
    expect(relErr(await be.read(be.siluMul(be.fromHost(gs, [T, C]), be.fromHost(us, [T, C]))), F.siluMul(gs, us))).toBeLessThan(1e-6);
    sameBits(await be.read(be.add(be.fromHost(gs, [T, C]), be.fromHost(us, [T, C]))), F.add(gs, us));
    const pos = Int32Array.of(0, 1, 7, 300, 4095), layout: StepLayout = { pos, seq: new Int32Array(T), blockTables: [new Int32Array(1)] };
    const got = await be.read(be.rope(x, layout, { nHeads: 3, headDim: 32, theta: 10000 }));
    expect(relErr(got, F.rope(xs, T, 3, 32, pos, F.ropeFreqs(32, 10000)))).toBeLessThan(1e-6);
    const N = 45, wm = randn(15, N * C, 0.1);
    const y = await be.read(be.matmul(x, be.uploadWeight({ kind: 'f32', name: 'w', shape: [N, C], data: wm })));
    expect(relErr(y, F.matmul(xs, T, C, wm, N))).toBeLessThan(1e-6);
    be.endStep();
  });
  it('embed, rows and argmax are exact (argmax: first maximum wins)', async () => {
    const V = 50, D = 300, table = randn(16, V * D);
    const ids = Int32Array.of(3, 0, 49, 3);
    const e = be.embed(be.uploadWeight({ kind: 'f32', name: 'tok', shape: [V, D], data: table }), ids);
    sameBits(await be.read(e), F.embed(table, D, ids));
    sameBits(await be.read(be.rows(e, Int32Array.of(3, 1))), F.embed(table, D, Int32Array.of(3, 0)));
    const R = 4, C = 1000, x = randn(17, R * C);
    x[2 * C + 10] = 50; x[2 * C + 900] = 50; x[3 * C + 999] = 60; x[1 * C + 0] = 70;
    expect([...(await be.argmax(be.fromHost(x, [R, C])))]).toEqual([...F.argmax(x, R, C)]);
    expect(() => be.embed(be.uploadWeight({ kind: 'f32', name: 't', shape: [V, D], data: table }), Int32Array.of(V))).toThrow(/outside the vocabulary/);
    be.endStep();
  });
});

describe('webgpu: paged KV cache and attention (DESIGN §3.5)', () => {
  let other: WebGPUBackend | undefined;
  /** the attention kernel the default backend does not use here (workgroup on CPU adapters, else serial) */
  const wgAttention = async () => (other ??= new WebGPUBackend(be.gpu, await loadShaderSources(), { attention: be.cpu ? 'workgroup' : 'serial' }));
  // two sequences, GQA 4 query heads over 2 KV heads, pages of 4, a shuffled page pool
  const nKv = 2, nH = 4, hd = 32, P = 4;
  const layoutFor = (lens: number[], start: number[], tables: Int32Array[]): StepLayout => {
    const pos: number[] = [], seq: number[] = [];
    lens.forEach((n, s) => { for (let i = 0; i < n; i++) { pos.push(start[s] + i); seq.push(s); } });
    return { pos: Int32Array.from(pos), seq: Int32Array.from(seq), blockTables: tables };
  };
  const tables = [Int32Array.of(5, 1, 7, 2), Int32Array.of(0, 6, 3)];

  it.each(['kv4', 'f32'] as const)('%s: kv_append bytes and attention over two steps', async (dtype) => {
    const spec: KVCacheSpec = { nLayers: 2, nKvHeads: nKv, headDim: hd, pageSize: P, numPages: 8, dtype, group: dtype === 'kv4' ? 16 : hd };
    const sim = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
    const cache = be.createKVCache(spec);
    let codeDiff = 0, codes = 0;
    for (const [step, lay] of [[0, layoutFor([9, 6], [0, 0], tables)], [1, layoutFor([1, 1], [9, 6], tables)]] as const) {
      const T = lay.pos.length, k = randn(20 + step, T * nKv * hd, 2), v = randn(30 + step, T * nKv * hd), q = randn(40 + step, T * nH * hd);
      kvAppend(sim, 1, k, v, lay);
      be.kvAppend(cache, 1, be.fromHost(k, [T, nKv * hd]), be.fromHost(v, [T, nKv * hd]), lay);
      const qt = be.fromHost(q, [T, nH * hd]);
      const got = await be.read(be.attention(qt, cache, 1, lay, nH));
      be.endStep();
      const wgAttn = await wgAttention();
      const got2 = await wgAttn.read(wgAttn.attention(qt, cache, 1, lay, nH)); // the other attention kernel
      wgAttn.endStep();
      // attention is checked against the simulator reading the backend's own cache bytes (tier 3)
      const bytes = await (cache as unknown as { readLayer(l: number): Promise<Uint8Array> }).readLayer(1);
      const mine = dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec);
      if (mine instanceof KVStoreKV4) mine.data[1].set(bytes);
      else { const f = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4); mine.k[1].set(f.subarray(0, f.length / 2)); mine.v[1].set(f.subarray(f.length / 2)); }
      expect(relErr(got, attention(mine, 1, q, lay, nH))).toBeLessThan(1e-5);
      expect(relErr(got2, attention(mine, 1, q, lay, nH))).toBeLessThan(1e-5);
      if (sim instanceof KVStoreKV4) {
        const L = kv4Layout(spec), want = sim.data[1];
        for (let c = 0; c < spec.numPages * nKv; c++) {
          const o = c * L.headBytes;
          expect(bytes.subarray(o + L.kSZ, o + L.headBytes)).toEqual(want.subarray(o + L.kSZ, o + L.headBytes)); // (s, z) exact
          for (let i = 0; i < 2 * L.codeBytes; i++) for (const sh of [0, 4]) {
            const a = (bytes[o + i] >> sh) & 15, b = (want[o + i] >> sh) & 15;
            codes++;
            if (a !== b) { codeDiff++; expect(Math.abs(a - b)).toBe(1); }
          }
        }
      } else {
        const want = new Uint8Array(spec.numPages * nKv * P * hd * 8);
        want.set(new Uint8Array((sim as KVStoreF32).k[1].buffer), 0);
        want.set(new Uint8Array((sim as KVStoreF32).v[1].buffer), want.length / 2);
        expect(bytes).toEqual(want);
        expect(relErr(got, attention(sim, 1, q, lay, nH))).toBeLessThan(1e-5);
      }
    }
    if (dtype === 'kv4') {
      console.log(`webgpu KV4 codes differing from the simulator by 1: ${codeDiff} of ${codes}`);
      expect(codeDiff / codes).toBeLessThan(1e-3);
    }
  });
});

void ({} as WTensor);
