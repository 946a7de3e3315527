// Attention over KV4 pages and the f32 classifier GEMM at LLaMA shapes, on the GPU backends only (the simulator is the
// reference). KV4 attention (cuda/ops_attention.cu, the contract of simulator/kernels/attention_kv4.ts) at GQA groups
// of 1..16, head_dim 64..256, which test/ops.test.ts's small geometries barely reach: ragged batches (sequences of
// 1..1025 positions, so some segments of a block are empty), a 136-token prefill chunk (at 8 KV heads: T · n_kv >=
// 1024, the one-block-per-(token, KV head) mode; the decode steps take the one-block-per-segment mode), V with a
// tiny scale. CUDA: bit-equal to the simulator; WebGPU (no FMA control): tier 2, relative error < 1e-5.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, KVCacheSpec, StepLayout } from '../backends/backend.ts';
import { attention as simAttention, kvAppend as simKvAppend } from '../simulator/kernels/attention.ts';
import { KVStoreKV4 } from '../simulator/kv4.ts';
import * as F from '../simulator/kernels/float.ts';
import { permutation, randn, relErr, rng } from './simulator/rng.ts';
import { backends } from './helpers/backends.ts';

const gpu = backends.filter((b) => b.name !== 'sim');
// without a GPU backend one skipped placeholder suite (an empty describe.each would leave the file with no suite)
const cases = gpu.length ? gpu : [{ name: 'no GPU backend (COMET_TEST_CUDA=1)', create: async (): Promise<Backend> => { throw new Error('no GPU backend'); } }];

const GEOMS: Array<[string, { nKv: number; nH: number; hd: number; P: number; vScale: number }]> = [
  ['llama3-8b heads (32/8, hd 128)', { nKv: 8, nH: 32, hd: 128, P: 16, vScale: 1 }],
  ['GQA 8 hd 128, tiny V scale', { nKv: 2, nH: 16, hd: 128, P: 16, vScale: 1e-3 }],
  ['GQA 16 hd 64, pages of 32', { nKv: 1, nH: 16, hd: 64, P: 32, vScale: 3 }],
  ['GQA 2 hd 256', { nKv: 2, nH: 4, hd: 256, P: 16, vScale: 1 }],
];

describe.skipIf(!gpu.length).each(cases)('KV4 attention at LLaMA shapes on $name', ({ create }) => {
  let be: Backend;
  beforeAll(async () => {
    be = await create();
  });
  afterAll(() => be?.dispose());
  /** CUDA: every output bit equals the simulator's; other GPU backends: relative error < 1e-5 */
  const same = (got: Float32Array, want: Float32Array, what: string) => {
    if (be.name !== 'cuda') return expect(relErr(got, want), what).toBeLessThan(1e-5);
    const gb = new Uint32Array(got.buffer, got.byteOffset, got.length), wb = new Uint32Array(want.buffer, want.byteOffset, want.length);
    let nd = 0, first = -1;
    for (let j = 0; j < wb.length; j++) if (gb[j] !== wb[j]) { nd++; if (first < 0) first = j; }
    expect(nd, `${what}: ${nd} of ${wb.length} differ, first at ${first} (${got[first]} vs ${want[first]})`).toBe(0);
  };

  it.each(GEOMS)('%s: ragged decode batch and a prefill chunk', async (_, g) => {
    const lens = [1025, 700, 64, 17, 1];  // positions already in the cache before the step, per sequence
    const pagesOf = (n: number) => Math.ceil(n / g.P);
    const total = lens.reduce((a, n) => a + pagesOf(n + 2), 0);
    const ids = permutation(rng(5 + g.hd), total + 4);
    let o = 0;
    const tables = lens.map((n) => ids.slice(o, (o += pagesOf(n + 2))));
    const spec: KVCacheSpec = { nLayers: 1, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages: total + 4, dtype: 'kv4', group: g.hd };
    const cache = be.createKVCache(spec), ref = new KVStoreKV4(spec);
    const C = g.nKv * g.hd, Q = g.nH * g.hd;
    // fill: every sequence's first lens[i] positions in one append
    const fill: StepLayout = { pos: Int32Array.from(lens.flatMap((n) => Array.from({ length: n }, (_, p) => p))), seq: Int32Array.from(lens.flatMap((n, i) => new Array(n).fill(i))), blockTables: tables };
    const T0 = fill.pos.length;
    const k0 = randn(1 + g.hd, T0 * C, 2), v0 = randn(2 + g.hd, T0 * C, g.vScale);
    be.kvAppend(cache, 0, be.fromHost(k0, [T0, C]), be.fromHost(v0, [T0, C]), fill);
    simKvAppend(ref, 0, k0, v0, fill);
    be.endStep();
    // decode: one token per sequence at position lens[i]; then one for the first three (a batch small enough
    // for one block per (token, KV head) at llama3-8b heads); then a prefill chunk
    const steps: StepLayout[] = [
      { pos: Int32Array.from(lens), seq: Int32Array.from(lens.map((_, i) => i)), blockTables: tables },
      { pos: Int32Array.from(lens.slice(0, 3), (n) => n + 1), seq: Int32Array.of(0, 1, 2), blockTables: tables },
    ];
    for (const [i, l] of steps.entries()) {
      const T = l.pos.length;
      const k = randn(10 + i, T * C, 2), v = randn(20 + i, T * C, g.vScale), q = randn(30 + i, T * Q, 0.7);
      be.kvAppend(cache, 0, be.fromHost(k, [T, C]), be.fromHost(v, [T, C]), l);
      simKvAppend(ref, 0, k, v, l);
      const got = await be.read(be.attention(be.fromHost(q, [T, Q]), cache, 0, l, g.nH));
      same(got, simAttention(ref, 0, q, l, g.nH), `step ${i}`);
      be.endStep();
    }
    // prefill chunk: 136 new positions laid over sequence 0's pages from position 880
    const T = 136, pre: StepLayout = { pos: Int32Array.from({ length: T }, (_, i) => 880 + i), seq: new Int32Array(T), blockTables: tables };
    const k = randn(40, T * C, 2), v = randn(41, T * C, g.vScale), q = randn(42, T * Q, 0.7);
    be.kvAppend(cache, 0, be.fromHost(k, [T, C]), be.fromHost(v, [T, C]), pre);
    simKvAppend(ref, 0, k, v, pre);
    const got = await be.read(be.attention(be.fromHost(q, [T, Q]), cache, 0, pre, g.nH));
    same(got, simAttention(ref, 0, q, pre, g.nH), 'prefill chunk');
    be.endStep();
  });

  // the classifier's f32 GEMM at 8 < T <= 32 (the chunked streaming GEMV: x staged in K-chunks) and above; sizes
  // past 2^27 multiply-adds, where the f32 kernels take over from the f64 ones
  it.each([[12, 4096, 2800], [20, 2052, 3300], [32, 4096, 1100], [40, 4096, 900], [256, 1024, 600]])('matmul f32 T=%i K=%i N=%i (tier 3)', async (T, K, N) => {
    const x = randn(T + K, T * K), w = randn(N + 1, N * K, 0.05);
    const W = be.uploadWeight({ kind: 'f32', name: 'w', shape: [N, K], data: w });
    const got = await be.read(be.matmul(be.fromHost(x, [T, K]), W));
    expect(relErr(got, F.matmul(x, T, K, w, N))).toBeLessThan(5e-6);
  });
});
