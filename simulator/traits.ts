// The packed formats as data (ggml style: `block_q4_0 { d; qs[QK4_0/2]; }`). Each entry is one block of one
// format: its element count, code width, bytes of codes and of scales, code range, and the functions that
// define it. Backends derive their layout constants from here instead of retyping them; the size
// assertions at the bottom run at import, so a wrong edit fails everywhere at once.
import type { ActQuantSpec, KVCacheSpec } from './formats.ts';
import { dequantizeAct, quantizeAct } from './act.ts';
import { packInt4, packUint4, unpackInt4, unpackUint4 } from './int4.ts';
import { kv4DequantizeGroup, kv4Layout, kv4QuantizeGroup } from './kv4.ts';
import { dequantizeW4, quantizeW4 } from './w4.ts';

export interface BlockTraits {
  name: string;
  elems: number; // elements per block (B for act/w4, G for kv4)
  bits: number; // code width
  codeBytes: number; // bytes of codes per block
  scaleBytes: number; // bytes of f16 scale data per block (s, or s and z)
  qmin: number;
  qmax: number;
  symmetric: boolean; // x' = q·s (symmetric) or q·s + z (asymmetric)
  pack: (vals: ArrayLike<number>) => Uint8Array;
  unpack: (bytes: Uint8Array, n: number) => Int8Array | Uint8Array;
  quantize: (...args: never[]) => unknown;
  dequantize: (...args: never[]) => unknown;
}

const int8Pack = (v: ArrayLike<number>) => new Uint8Array(Int8Array.from(v).buffer);
const int8Unpack = (b: Uint8Array, n: number) => new Int8Array(b.buffer, b.byteOffset, n).slice();

/** block_q8a: one INT8 activation block. { f16 s; int8 q[B]; } scale in sa, codes in a8 */
export const actQ8 = (B: number): BlockTraits => ({
  name: `act_q8_b${B}`, elems: B, bits: 8, codeBytes: B, scaleBytes: 2, qmin: -128, qmax: 127, symmetric: true,
  pack: int8Pack, unpack: int8Unpack, quantize: quantizeAct, dequantize: dequantizeAct,
});
/** block_q4a: one INT4 activation block. { f16 s; int4x2 q[B/2]; } */
export const actQ4 = (B: number): BlockTraits => ({
  name: `act_q4_b${B}`, elems: B, bits: 4, codeBytes: B / 2, scaleBytes: 2, qmin: -8, qmax: 7, symmetric: true,
  pack: packInt4, unpack: unpackInt4, quantize: quantizeAct, dequantize: dequantizeAct,
});
/** block_w4: one weight row-block. { f16 s; int4x2 q[B/2]; } codes -8..7 */
export const w4Block = (B: number): BlockTraits => ({
  name: `w4_b${B}`, elems: B, bits: 4, codeBytes: B / 2, scaleBytes: 2, qmin: -8, qmax: 7, symmetric: true,
  pack: packInt4, unpack: unpackInt4, quantize: quantizeW4, dequantize: dequantizeW4,
});
/** block_kv4: one (token, head, group). { f16 s; f16 z; uint4x2 q[G/2]; } */
export const kv4Block = (G: number): BlockTraits => ({
  name: `kv4_g${G}`, elems: G, bits: 4, codeBytes: G / 2, scaleBytes: 4, qmin: 0, qmax: 15, symmetric: false,
  pack: packUint4, unpack: unpackUint4, quantize: kv4QuantizeGroup, dequantize: kv4DequantizeGroup,
});

/** Bytes of a QAct of M tokens: a8 | a4 | sa. */
export const qactBytes = (spec: ActQuantSpec, M: number) => {
  const nb8 = spec.K8 / spec.B, nb4 = (spec.Kp - spec.K8) / spec.B;
  return { a8: M * nb8 * actQ8(spec.B).codeBytes, a4: M * nb4 * actQ4(spec.B).codeBytes, sa: M * (nb8 + nb4) * 2 };
};
/** Bytes of a W4Weight of N rows: codes | scales. */
export const w4Bytes = (spec: ActQuantSpec, N: number) => {
  const nb = spec.Kp / spec.B, t = w4Block(spec.B);
  return { codes: N * nb * t.codeBytes, scales: N * nb * t.scaleBytes };
};
/** Bytes of one KV4 page for all heads of one layer (K and V). */
export const kv4PageBytes = (spec: KVCacheSpec) => {
  const t = kv4Block(spec.group), perHead = 2 * spec.pageSize * (spec.headDim / spec.group) * (t.codeBytes + t.scaleBytes);
  return spec.nKvHeads * perHead;
};

// ---- size assertions (like ggml's static_assert(sizeof(block_q4_0) == sizeof(ggml_half) + QK4_0/2)) ----
function assert(cond: boolean, what: string): void {
  if (!cond) throw new Error(`simulator/traits.ts: size assertion failed: ${what}`);
}
for (const B of [32, 64, 128]) {
  assert(actQ8(B).codeBytes + actQ8(B).scaleBytes === B + 2, `act_q8_b${B} is B + 2 bytes`);
  assert(actQ4(B).codeBytes + actQ4(B).scaleBytes === B / 2 + 2, `act_q4_b${B} is B/2 + 2 bytes`);
  assert(w4Block(B).codeBytes * 8 === B * w4Block(B).bits, `w4_b${B} codes are B·4 bits`);
}
for (const G of [32, 64, 128]) assert(kv4Block(G).codeBytes + kv4Block(G).scaleBytes === G / 2 + 4, `kv4_g${G} is G/2 + 4 bytes`);
{
  const spec: KVCacheSpec = { nLayers: 1, nKvHeads: 4, headDim: 64, pageSize: 16, numPages: 1, dtype: 'kv4', group: 32 };
  assert(kv4PageBytes(spec) === kv4Layout(spec).pageBytes, 'kv4 page bytes agree with kv4Layout');
  assert(kv4PageBytes(spec) === 4 * (2 * 16 * 32 + 2 * 16 * 2 * 4), 'kv4 page of 4 heads × 64 dims × 16 tokens, G = 32');
}
