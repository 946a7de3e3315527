// The tensor-core KV4 attention's index math (cuda/ops_attention_kv4_mma.cu attn_kv4_mma, ported lane by lane in
// testing/kv4-mma-lanes.ts) computes the contract (simulator/kernels/attention_kv4.ts) bit for bit, on a machine
// without a GPU: both of its modes, the shapes it serves (head_dim 64 / 128 / 256, GQA 1-16, G 64 / 128, pages of
// 4-128), ragged lengths. The CUDA kernel itself is checked on the GPU by test/ops.test.ts.
import { expect, it } from 'vitest';
import { KVStoreKV4 } from '../simulator/kv4.ts';
import { attention, kvAppend } from '../simulator/kernels/attention.ts';
import { emulateAttnKv4Mma } from '../testing/kv4-mma-lanes.ts';
import { permutation, randn, rng } from '../testing/rng.ts';

type G = { nKv: number; nH: number; hd: number; P: number; G: number };
const CASES: Array<[string, G, number[], boolean]> = [
  ['hd 128 GQA 4 (llama3-8b heads), split', { nKv: 1, nH: 4, hd: 128, P: 16, G: 128 }, [300, 64, 0], true],
  ['hd 128 G 64 GQA 4, one block per (token, KV head)', { nKv: 1, nH: 4, hd: 128, P: 16, G: 64 }, [600, 17], false],
  ['hd 64 GQA 16, pages of 32, one block', { nKv: 1, nH: 16, hd: 64, P: 32, G: 64 }, [129, 5], false],
  ['hd 256 GQA 2, pages of 4, split', { nKv: 1, nH: 2, hd: 256, P: 4, G: 256 }, [200, 1], true],
];

it.each(CASES)('attn_kv4_mma lane port == the KV4 attention contract: %s', (_, g, lens, split) => {
  const counts = lens.map((n) => Math.ceil((n + 1) / g.P)), numPages = counts.reduce((a, b) => a + b, 0) + 3;
  const ids = permutation(rng(5 + g.hd), numPages);
  let o = 0;
  const tables = counts.map((c) => ids.slice(o, (o += c)));
  const store = new KVStoreKV4({ nLayers: 1, nKvHeads: g.nKv, headDim: g.hd, pageSize: g.P, numPages, dtype: 'kv4', group: g.G });
  const C = g.nKv * g.hd, pos: number[] = [], seq: number[] = [];
  lens.forEach((n, s) => { for (let p = 0; p <= n; p++) pos.push(p), seq.push(s); });
  kvAppend(store, 0, randn(1, pos.length * C, 2), randn(2, pos.length * C, 1), { pos: Int32Array.from(pos), seq: Int32Array.from(seq), blockTables: tables });
  const step = { pos: Int32Array.from(lens), seq: Int32Array.from(lens.map((_, i) => i)), blockTables: tables };
  const q = randn(3, lens.length * g.nH * g.hd, 0.5);
  const want = attention(store, 0, q, step, g.nH), got = emulateAttnKv4Mma(store, q, step, g.nH, split, Math.max(...lens) + 1);
  let bad = 0;
  for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) bad++;
  expect(bad, `${bad} of ${want.length} outputs differ`).toBe(0);
}, 60_000);
