// The closed op set every backend implements (DESIGN.md §2).
//
// The model (src/model/llama.ts) only ever calls these ops, through src/graph/. Quantization enters through
// dtypes: a linear layer whose weight is `w4` gets an FMPQ-quantized activation (`qact`), a KV cache made
// with `kv4` stores 4-bit pages. A backend declares which ops it runs, on which dtypes, and how closely each
// matches the simulator (`ops`: an OpSet); the graph refuses a model whose ops a backend does not declare,
// and the tests, written once against this interface, read each backend's tier from it (test/ops.test.ts).
//
// Shapes: T = tokens in the step (all sequences of the batch, flattened, vLLM-style "varlen"),
// D = model dim, N = output features, K = input features (reduction), V = vocab.
// Ops enqueue work and return at once; only `read` waits for the device.
import { CometError } from './errors.ts';

import type { ActQuantSpec, KVCacheSpec, KVDType, StepLayout, W4Weight } from '../simulator/formats.ts';
import type { RopeScaling } from '../simulator/kernels/float.ts';
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
  /** kernel launches one replay runs, where the backend counts them (CUDA: the graph's kernel nodes) */
  readonly kernels?: number;
  /** Run the step again on `inputs` (absent: the data it last ran on); the argmax of each logit row [R]. */
  replay(inputs?: StepInputs): Promise<Int32Array>;
  /** Same, returning the logit rows [R][V] (for sampling at a temperature). */
  replayLogits(inputs?: StepInputs): Promise<Float32Array>;
  /** Same, returning each logit row's top k (Backend.topk): sampling with top_k copies back k values and ids a row. */
  replayTopK(inputs: StepInputs | undefined, k: number): Promise<{ values: Float32Array; indices: Int32Array }>;
  /** Greedy chaining (where the backend can): the step on `inputs` with its token ids taken on the device from the
   *  argmax of this step's previous replay (replay or replayChained), so that it can be submitted before that
   *  result is read back (src/engine/graphs.ts). `inputs.tokens` gives the shape only. The previous replay must
   *  have been submitted; its ids are the ones a greedy engine would feed. */
  replayChained?(inputs: StepInputs): Promise<Int32Array>;
  /** false once the backend changed under the capture (weights uploaded since may have moved shared workspaces,
   *  or the backend was disposed): destroy it and capture again. Absent = always valid. */
  valid?(): boolean;
  destroy(): void;
}

/** A paged KV cache owned by a backend; its storage layout is the backend's (DESIGN §3.5). */
export interface KVCache {
  readonly spec: KVCacheSpec;
  /** The bytes of one layer as DESIGN §3.5 lays them out (kv4: the pages; f32: every K row, then every V row),
   *  for exactness tests and cross-backend diffs. Waits for the device. */
  readLayer(layer: number): Promise<Uint8Array>;
}

export interface RopeSpec {
  nHeads: number;
  headDim: number;
  theta: number;
  scaling?: RopeScaling; // Llama-3.1 frequency scaling (simulator/kernels/float.ts ropeFreqs)
}

/** GPTQ's device half: src/quant/gptq.ts and calibrate.ts are the reference, and these follow their f64
 *  arithmetic in the same order (cuda/quant_gptq.cu), so given the same activations they give the same codes. */
export interface GptqOps {
  /** A zeroed Hessian accumulator H [K][K] (f64) on the device. */
  hessian(K: number): DeviceHessian;
}

export interface DeviceHessian {
  readonly K: number;
  /** H += f32(Xᵀ X) for x [T, K] f32 on this backend, as calibrate.ts accumulates one window. */
  add(x: Tensor): void;
  /** H [K][K] on the host (tests). */
  read(): Promise<Float64Array>;
  /** U = invCholUpper(permutedHessian(H', {K, Kp, perm}, damp)) (gptq.ts), kept on the device; H' = H, or with
   *  SmoothQuant's per-channel scales s the Hessian of x / s: H[i][j] / (s[i]·s[j]) (quant/smooth.ts scaleStats). */
  factor(perm: Int32Array | undefined, Kp: number, damp: number, scale?: Float64Array): DeviceGptqFactor;
  free(): void;
}

export interface DeviceGptqFactor {
  readonly Kp: number;
  /** gptq.ts gptqW4's codes [N][Kp] (int8, -8..7) and scales [N][Kp/B] (f16 bits) for w [N][K] f32, its
   *  columns gathered by spec.perm. */
  quantize(w: Float32Array, N: number, spec: ActQuantSpec, grid: number): { codes: Int8Array; scales: Uint16Array };
  /** U [Kp][Kp] on the host (tests). */
  read(): Promise<Float64Array>;
  free(): void;
}

export type OpName =
  | 'embed'
  | 'rmsnorm'
  | 'rmsnorm_quant'
  | 'add_rmsnorm' // the residual add and the next norm in one launch: exactly add, then rmsnorm
  | 'add_rmsnorm_quant' // exactly add, then rmsnorm_quant
  | 'quantize_act'
  | 'gemm_f32'
  | 'gemm_w4ax'
  | 'rope'
  | 'kv_append'
  | 'rope_kv_append' // exactly rope(q), rope(k), then kv_append of rope(k), v (dtype: the cache's)
  | 'attention'
  | 'silu_mul'
  | 'silu_mul_quant'
  | 'add'
  | 'argmax'
  | 'topk'
  | 'rows';

/** The dtype an op is declared for: embed's table (f32, w4), a GEMM's weight (gemm_f32: f32, gemm_w4ax: w4), the
 *  cache of kv_append / attention (f32, kv4), the output of the quantizers (qact), f32 for the float ops. */
export type OpDType = DType | KVDType;

/** How closely a backend's op matches the simulator's definition (DESIGN §3.7):
 *   exact      tier 1: bit for bit (bytes, codes, f32 values)
 *   bounded    tier 2: codes may differ by 1 in a small measured fraction; scales and everything else exact
 *   tolerance  tier 3: relative error ‖a−b‖/‖b‖ (reductions, transcendentals whose order is the kernel's);
 *              for a quantizer fed by such a reduction: codes of equal f32 inputs exact, so the codes differ
 *              by at most 1 in a small fraction. */
export type Tier = 'exact' | 'bounded' | 'tolerance';

/** What a backend runs: for each op, the dtypes it takes and the tier of each. An op or dtype left out is not
 *  run by that backend. */
export type OpSet = { readonly [op in OpName]?: { readonly [dt in OpDType]?: Tier } };

/** The largest k a backend's topk takes (a device sorts the k candidates of a row in one CTA); the sampler's
 *  larger top_k values sample from the whole row. */
export const TOPK_MAX = 1024;
export const checkTopK = (k: number, C: number): void => {
  if (!(Number.isInteger(k) && k >= 1 && k <= Math.min(C, TOPK_MAX))) throw new CometError(`topk: k = ${k} must be an integer in [1, ${Math.min(C, TOPK_MAX)}] (row of ${C}, at most ${TOPK_MAX})`);
};

/** The tier `be` declares for `op` on `dtype` (f32 when absent), undefined when it does not run it. */
export const opTier = (be: { readonly ops: OpSet }, op: OpName, dtype: OpDType = 'f32'): Tier | undefined => be.ops[op]?.[dtype];

/** Does `be` run `op` on `dtype` (e.g. supports(be, 'kv_append', 'kv4'))? */
export const supports = (be: { readonly ops: OpSet }, op: OpName, dtype: OpDType = 'f32'): boolean => opTier(be, op, dtype) !== undefined;

/** Per-op GPU timing (CUDA: a spin kernel before each launch, events around it), for benchmarks. */
export interface OpProfiler {
  /** Timing on or off (off costs one flag test per launch); on again starts new totals. */
  setOpTiming(on: boolean): void;
  /** Totals per op name (GEMMs also by weight and M) since timing went on: ms summed, and launch counts. */
  opTimings(): Map<string, { ms: number; n: number }>;
}

export interface Backend {
  readonly name: string;
  /** The ops, dtypes and tiers this backend runs (supports(), opTier() read it). */
  readonly ops: OpSet;
  /** Per-op timing, where the backend can measure it (CUDA). */
  readonly profiler?: OpProfiler;

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
  /** Optional: release a weight, fromHost tensor or KV cache now rather than when it is garbage-collected (the
   *  layer-by-layer quantizer keeps device memory to one layer). Using it afterwards is an error. */
  release?(t: Tensor | KVCache): void;
  /** Optional: GPTQ on the device (the quantizer runs src/quant/gptq.ts on the host without it). */
  readonly gptq?: GptqOps;
  dispose(): void;

  // ---- ops ----
  /** table [V, D] (float or w4: rows dequantized), tokens [T] -> [T, D] f32 */
  embed(table: Weight, tokens: Int32Array): Tensor;
  /** x [T, D] -> x / rms(x) * w, f32 (llama2.c order: ss = sum x^2; 1/sqrt(ss/D + eps)) */
  rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor;
  /** rmsnorm, then gather channels by spec.perm, round to f16 and quantize (FMPQ) -> qact */
  rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): Tensor;
  /** The residual add folded into the next norm (one launch): [x + y, rmsnorm(x + y)], bit for bit add() then
   *  rmsnorm() of this backend. The sum is the new residual stream (a new tensor; x is not written). */
  addRmsnorm(x: Tensor, y: Tensor, w: Tensor, eps: number): [Tensor, Tensor];
  /** [x + y, rmsnormQuant(x + y)], bit for bit add() then rmsnormQuant() of this backend. */
  addRmsnormQuant(x: Tensor, y: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): [Tensor, Tensor];
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
  /** RoPE folded into the KV append (one launch): q [T, spec.nHeads*headDim], k, v [T, nKvHeads*headDim] (the
   *  cache's); writes rope(k) (nKvHeads heads) and v into layer `layer`, returns rope(q). Bit for bit rope(q),
   *  rope(k), then kvAppend(rope(k), v) of this backend. */
  ropeKvAppend(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor;
  /** q [T, nHeads*headDim] -> [T, nHeads*headDim]: softmax(q k^T / sqrt(headDim)) v over the paged cache, GQA */
  attention(q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor;
  /** silu(g) * u, elementwise, [T, H] */
  siluMul(g: Tensor, u: Tensor): Tensor;
  siluMulQuant(g: Tensor, u: Tensor, spec: ActQuantSpec): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  /** The W4Ax partial-sum order this backend's GEMM uses against an N-row weight of this activation spec: block
   *  ranges summed from +0 in ascending order, then added in list order (DESIGN §3.4). A function of the weight's
   *  shape only, never of the token count M, so a row's outputs are the same bits whether it is computed alone or
   *  batched (prefill alone vs with others, decode at batch 1 vs 64, prefix-cache hit or not). Absent = one range
   *  (plain order). The simulator reproduces it: `new SimBackend({ gemmSchedule: be.gemmSchedule.bind(be) })`. */
  gemmSchedule?(N: number, spec: ActQuantSpec): Array<[number, number]>;
  /** rows of x [R, C] -> argmax per row (first max wins) */
  argmax(x: Tensor): Promise<Int32Array>;
  /** rows of x [R, C] -> the k largest of each row, value descending then index ascending (simulator/kernels/float.ts
   *  topk; 1 <= k <= min(C, TOPK_MAX)): what the sampler's top-k reads, without copying rows */
  topk(x: Tensor, k: number): Promise<{ values: Float32Array; indices: Int32Array }>;
  /** keep only the given rows: x [T, C] -> [rows.length, C] (last token of each sequence before the classifier) */
  rows(x: Tensor, rows: Int32Array): Tensor;
}
