// Attention over a paged KV store (prefill and decode are the same loop: token t attends to positions
// 0..pos[t] of its sequence, read through that sequence's block table). GQA: query head h reads KV head
// h / (nHeads/nKvHeads). A KV4 store runs the KV4 contract (attention_kv4.ts: integer dot products, chunks of 64
// keys, a specified exp2); an f32 store (the float reference path) runs llama2.c's order in f64: scores
// q·k/sqrt(hd), softmax with max subtraction, then Σ a_j v_j.
import type { StepLayout } from '../formats.ts';
import type { KVStore } from '../kv.ts';
import { KVStoreKV4 } from '../kv4.ts';
import { attentionKV4 } from './attention_kv4.ts';

/** k, v [T][nKvHeads*headDim] -> written into the pages of `layer` at each token's position. */
export function kvAppend(store: KVStore, layer: number, k: Float32Array, v: Float32Array, layout: StepLayout): void {
  const { pageSize, nKvHeads, headDim } = store.spec;
  const C = nKvHeads * headDim;
  for (let t = 0; t < layout.pos.length; t++) {
    const p = layout.pos[t], bt = layout.blockTables[layout.seq[t]];
    const pi = Math.floor(p / pageSize);
    if (pi >= bt.length) throw new Error(`kvAppend: position ${p} is past the sequence's ${bt.length} pages`);
    store.write(layer, bt[pi], p % pageSize, k, t * C, v, t * C);
  }
}

/** q [T][nHeads*headDim] -> [T][nHeads*headDim] */
export function attention(store: KVStore, layer: number, q: Float32Array, layout: StepLayout, nHeads: number): Float32Array {
  if (store instanceof KVStoreKV4) return attentionKV4(store, layer, q, layout, nHeads);
  const { pageSize, nKvHeads, headDim: hd } = store.spec;
  const T = layout.pos.length, C = nHeads * hd, group = nHeads / nKvHeads;
  const out = new Float32Array(T * C);
  const row = new Float32Array(hd);
  const scale = 1 / Math.sqrt(hd);
  let scores = new Float64Array(0);
  for (let t = 0; t < T; t++) {
    const n = layout.pos[t] + 1, bt = layout.blockTables[layout.seq[t]];
    if (scores.length < n) scores = new Float64Array(n);
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group), qo = t * C + h * hd;
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        store.readK(layer, bt[Math.floor(j / pageSize)], kvh, j % pageSize, row);
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[qo + i] * row[i];
        scores[j] = s * scale;
        if (scores[j] > max) max = scores[j];
      }
      let sum = 0;
      for (let j = 0; j < n; j++) sum += (scores[j] = Math.exp(scores[j] - max));
      const acc = new Float64Array(hd);
      for (let j = 0; j < n; j++) {
        store.readV(layer, bt[Math.floor(j / pageSize)], kvh, j % pageSize, row);
        const a = scores[j] / sum;
        for (let i = 0; i < hd; i++) acc[i] += a * row[i];
      }
      for (let i = 0; i < hd; i++) out[qo + i] = acc[i];
    }
  }
  return out;
}
