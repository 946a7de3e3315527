// The packed formats of DESIGN.md §3, as types. Each format's pack/unpack/quantize functions live in their
// own file beside this one (int4.ts, act.ts, w4.ts, kv4.ts); traits.ts tabulates their constants.

/** How one linear layer's input activation is quantized (FMPQ, DESIGN §3.2). Static, from calibration. */
export interface ActQuantSpec {
  K: number; // logical input features
  B: number; // block size along K (32 | 64 | 128)
  Kp: number; // K rounded up to a multiple of B; channels [K, Kp) are zero padding
  K8: number; // channels [0, K8) are INT8, [K8, Kp) INT4; a multiple of B
  /** gather: quantized channel j reads input channel perm[j] (length K); absent = identity */
  perm?: Int32Array;
}

/** An FMPQ-quantized activation, M tokens. */
export interface QAct {
  M: number;
  spec: ActQuantSpec;
  a8: Int8Array; // [M][K8]
  a4: Uint8Array; // [M][(Kp-K8)/2] int4 canonical packing (element 2i low nibble)
  sa: Uint16Array; // [M][Kp/B] f16 bits
}

/** W4 weight (DESIGN §3.3): W[N][K] ([out, in]), int4 symmetric, one f16 scale per row per B-block.
 *  Its columns are already in the order of its input activation's permutation (folded offline). */
export interface W4Weight {
  N: number;
  codes: Uint8Array; // [N][Kp/2] int4 canonical packing
  scales: Uint16Array; // [N][Kp/B] f16 bits
  act: ActQuantSpec; // how the input activation is quantized (K, Kp, B, K8, perm)
}

export type KVDType = 'f32' | 'kv4';

/** Paged KV cache geometry (DESIGN §3.5). */
export interface KVCacheSpec {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
  pageSize: number; // P tokens per page
  numPages: number; // pool size
  dtype: KVDType;
  group: number; // G channels per (s, z) pair; kv4 only (default headDim)
}

/** Where each token of a step belongs. Token t is at position `pos[t]` of sequence `seq[t]`; attention for
 *  t reads positions 0..pos[t] of that sequence (so a prefill chunk is causal by construction). */
export interface StepLayout {
  pos: Int32Array; // [T]
  seq: Int32Array; // [T] index into blockTables
  blockTables: Int32Array[]; // per sequence: page ids in order, covering at least max(pos)+1 tokens
}

