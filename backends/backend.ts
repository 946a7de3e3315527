// The closed op set every backend implements (DESIGN.md §2).
//
// The model (src/model/llama.ts) only ever calls these ops, through src/graph/. Quantization enters through
// dtypes: a linear layer whose weight is `w4` gets an FMPQ-quantized activation (`qact`), a KV cache made
// with `kv4` stores 4-bit pages. A backend says which ops and dtypes it supports; tests are written once
// against this interface and run on every backend (test/ops.test.ts, `describe.each(backends)`).
//
// Shapes: T = tokens in the step (all sequences of the batch, flattened, vLLM-style "varlen"),
// D = model dim, N = output features, K = input features (reduction), V = vocab.
// Ops enqueue work and return at once; only `read` waits for the device.

import type { ActQuantSpec, KVCacheSpec, KVDType, StepLayout, W4Weight } from '../simulator/formats.ts';
export type { ActQuantSpec, KVCacheSpec, KVDType, StepLayout, W4Weight };

export type DType =
  | 'f32' // dense float activations / float weights, row-major
  | 'f16' // float weights stored as f16 (classifier, embedding), read as f32, f32 (or wider) accumulation
  | 'i32'
  | 'qact' // FMPQ activation: a8 int8 [M][K8], a4 int4x2 [M][(Kp-K8)/2], sa f16 [M][Kp/B]  (DESIGN §3.2)
  | 'w4'; // W4 weight: codes int4x2 [N][Kp/2], sw f16 [N][Kp/B]  (DESIGN §3.3)

/** A backend-owned tensor. Only the backend that made it can read its storage. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** A weight as the host holds it before upload. Float weights are [N][K] (PyTorch [out, in]), f32 or f16 (bits:
 *  the classifier and embedding of a .comet, half the bytes of the largest float tensors; a matmul against one
 *  reads each weight as the f32 it is exactly and accumulates as for f32 weights). */
export type HostWeight =
  | { kind: 'f32'; name: string; shape: readonly number[]; data: Float32Array }
  | { kind: 'f16'; name: string; shape: readonly number[]; data: Uint16Array }
  | ({ kind: 'w4'; name: string } & W4Weight);

/** Bytes a host weight occupies (float data, or W4 codes + f16 scales). */
export const hostWeightBytes = (w: HostWeight): number => (w.kind === 'w4' ? w.codes.byteLength + w.scales.byteLength : w.data.byteLength);

/** A weight on the device; `act` says how its input activation is quantized (w4 only). */
export interface Weight extends Tensor {
  readonly name: string;
  readonly act?: ActQuantSpec;
}

/** The host data of one step: what Llama.forward(tokens, layout, cache, rows) uploads. */
export interface StepInputs {
  tokens: Int32Array; // [T]
  layout: StepLayout;
  rows: Int32Array; // [R] token rows that get logits
}

/** One step recorded once and replayed (Backend.captureStep). A replay's inputs must have the captured shape:
 *  the same T, R, number of sequences and block-table lengths; only the values change. */
export interface CapturedStep {
  /** device memory this capture holds besides the backend's shared step memory (bytes) */
  readonly bytes: number;
  /** Run the step again on `inputs` (absent: the data it last ran on); the argmax of each logit row [R]. */
  replay(inputs?: StepInputs): Promise<Int32Array>;
  /** Same, returning the logit rows [R][V] (for sampling at a temperature). */
  replayLogits(inputs?: StepInputs): Promise<Float32Array>;
  /** false once the backend changed under the capture (weights uploaded since may have moved shared workspaces,
   *  or the backend was disposed): destroy it and capture again. Absent = always valid. */
  valid?(): boolean;
  destroy(): void;
}

/** A paged KV cache owned by a backend; its storage layout is the backend's (DESIGN §3.5). */
export interface KVCache {
  readonly spec: KVCacheSpec;
}

export interface RopeSpec {
  nHeads: number;
  headDim: number;
  theta: number;
}

export type OpName =
  | 'embed'
  | 'rmsnorm'
  | 'rmsnorm_quant'
  | 'quantize_act'
  | 'gemm_f32'
  | 'gemm_w4ax'
  | 'rope'
  | 'kv_append'
  | 'attention'
  | 'silu_mul'
  | 'silu_mul_quant'
  | 'add'
  | 'argmax';

export interface Backend {
  readonly name: string;
  /** Can this backend run `op` on data of `dtype` (e.g. supports('kv_append', 'kv4'))? */
  supports(op: OpName, dtype?: DType | KVDType): boolean;

  // ---- memory ----
  uploadWeight(w: HostWeight): Weight;
  /** Host f32 data to a device tensor (norm weights, test inputs). */
  fromHost(data: Float32Array, shape: readonly number[]): Tensor;
  read(t: Tensor): Promise<Float32Array>;
  /** Raw bytes of a quantized tensor (qact: a8 | a4 | sa concatenated) for exactness tests. */
  readRaw?(t: Tensor): Promise<Uint8Array>;
  createKVCache(spec: KVCacheSpec): KVCache;
  /** Device memory, for backends that have a bounded one (GPU): a model too large is refused before any upload. */
  memory?(): { free: number; total: number };
  /** Release step temporaries (tensors not returned by uploadWeight/fromHost). */
  endStep(): void;
  /** Optional (CUDA: a CUDA graph): record the ops `fn` enqueues (one step, returning logits [R][V]) without
   *  running them, for replays on new data of the same shape. `inputs` names every host array the step
   *  uploads (fn must upload no other); launch sizes may depend only on their shapes (T, R, block-table
   *  lengths), never on their values, so a replay of positions other than the captured ones is right. Needs
   *  the same step shape to have run eagerly once (no allocation may happen while recording). Throws when the
   *  step cannot be recorded; the caller runs it eagerly then. Absent: no capture (the engine runs eagerly). */
  captureStep?(fn: () => Tensor, inputs?: StepInputs): CapturedStep;
  dispose(): void;

  // ---- ops ----
  /** table [V, D] (float or w4: rows dequantized), tokens [T] -> [T, D] f32 */
  embed(table: Weight, tokens: Int32Array): Tensor;
  /** x [T, D] -> x / rms(x) * w, f32 (llama2.c order: ss = sum x^2; 1/sqrt(ss/D + eps)) */
  rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor;
  /** rmsnorm, then gather channels by spec.perm, round to f16 and quantize (FMPQ) -> qact */
  rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): Tensor;
  /** [T, K] f32 -> gather by spec.perm, f16, FMPQ quantize -> qact */
  quantizeAct(x: Tensor, spec: ActQuantSpec): Tensor;
  /** x [T, K] f32 or qact, w [N, K] -> [T, N] f32. f32 x f32 ('gemm_f32') or qact x w4 ('gemm_w4ax', DESIGN §3.4) */
  matmul(x: Tensor, w: Weight): Tensor;
  /** Several weights against one input in one launch (q/k/v, gate/up: the same input site, so the same act
   *  spec). Output i equals matmul(x, ws[i]) bit for bit (each weight keeps its own split schedule); the
   *  point is that small-N GEMMs share the GPU instead of running one after another. Absent = a loop. */
  matmulMany?(x: Tensor, ws: readonly Weight[]): Tensor[];
  /** x [T, nHeads*headDim]: rotate pairs (2i, 2i+1) of each head by pos * theta^(-2i/headDim) (llama2.c order) */
  rope(x: Tensor, layout: StepLayout, spec: RopeSpec): Tensor;
  /** k, v [T, nKvHeads*headDim] -> written (quantized for kv4) into the pages of layer `layer` */
  kvAppend(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout): void;
  /** q [T, nHeads*headDim] -> [T, nHeads*headDim]: softmax(q k^T / sqrt(headDim)) v over the paged cache, GQA */
  attention(q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor;
  /** silu(g) * u, elementwise, [T, H] */
  siluMul(g: Tensor, u: Tensor): Tensor;
  siluMulQuant(g: Tensor, u: Tensor, spec: ActQuantSpec): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  /** The W4Ax partial-sum order this backend's GEMM uses for M tokens against an N-row weight: block ranges
   *  summed from +0 in ascending order, then added in list order (DESIGN §3.4). Absent = one range (plain
   *  order). The simulator reproduces it: `new SimBackend({ gemmSchedule: be.gemmSchedule.bind(be) })`. */
  gemmSchedule?(M: number, N: number, spec: ActQuantSpec): Array<[number, number]>;
  /** rows of x [R, C] -> argmax per row (first max wins) */
  argmax(x: Tensor): Promise<Int32Array>;
  /** keep only the given rows: x [T, C] -> [rows.length, C] (last token of each sequence before the classifier) */
  rows(x: Tensor, rows: Int32Array): Tensor;
}
