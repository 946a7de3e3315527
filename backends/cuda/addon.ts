// The N-API addon (cuda/binding.cc) as the TS side sees it: device pointers are numbers, all work goes to the
// addon's one stream. loadAddon() turns every failure (not built, no driver, no GPU) into a CometError.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CometError } from '../errors.ts';

export type Ptr = number;

export interface DeviceFacts {
  name: string; count: number; major: number; minor: number; sms: number;
  freeBytes: number; totalBytes: number; driverVersion: number; runtimeVersion: number;
}

export interface CudaAddon {
  init(device?: number): DeviceFacts;
  deviceInfo(device?: number): DeviceFacts;
  malloc(bytes: number): Ptr;
  free(p: Ptr): void;
  upload(dst: Ptr, src: ArrayBufferView): void;
  download(src: Ptr, bytes: number): ArrayBuffer;
  copy(dst: Ptr, src: Ptr, bytes: number): void;
  memset(p: Ptr, value: number, bytes: number): void;
  sync(): void;
  graphBegin(): void;
  graphEnd(): Ptr;
  /** kernel launches of the graph graphEnd last made (optional: older addons) */
  graphKernels?(): number;
  graphLaunch(exec: Ptr): void;
  graphDestroy(exec: Ptr): void;
  // W4Ax GEMM (cuda/gemm_w4ax*.cu)
  w4Create(codes: Ptr, scales: Ptr, N: number, Kp: number, B: number, K8: number): Ptr;
  w4Destroy(w: Ptr): void;
  gemmW4ax(a8: Ptr, a4: Ptr, sa: Ptr, M: number, w: Ptr, y: Ptr, outF16: number): void;
  /** up to 4 weights (same K, Kp, B, K8) against one activation; y[i] = gemmW4ax(.., w[i], ..) bit for bit. One
   *  launch where the decode kernel serves (cuda/capi.h comet_gemm_w4ax_many says when), else one per weight.
   *  Optional: an addon built before it has none, and the backend loops. */
  gemmW4axMany?(a8: Ptr, a4: Ptr, sa: Ptr, M: number, ws: Ptr[], ys: Ptr[], outF16: number): void;
  /** the W4Ax partial-sum schedule of an (N, Kp, B, K8) weight: [b0, b1) pairs (capi.h comet_gemm_w4ax_schedule) */
  gemmSchedule(N: number, Kp: number, B: number, K8: number): Int32Array;
  gemmForce(variant: number): void;
  // ops (cuda/ops_*.cu); argument order as capi.h
  embed(table: Ptr, D: number, tokens: Ptr, T: number, out: Ptr): void;
  embedF16(table: Ptr, D: number, tokens: Ptr, T: number, out: Ptr): void;  // table f16 [V][D]
  rmsnorm(x: Ptr, w: Ptr, T: number, C: number, eps: number, out: Ptr): void;
  add(a: Ptr, b: Ptr, n: number, out: Ptr): void;
  siluMul(g: Ptr, u: Ptr, n: number, out: Ptr): void;
  rope(x: Ptr, T: number, nHeads: number, headDim: number, pos: Ptr, freqs: Ptr, out: Ptr): void;
  gemmF32(x: Ptr, T: number, K: number, w: Ptr, N: number, y: Ptr): void;
  /** y = x·w^T with f16 weights [N][K]: tensor cores (x rounded to f16: matmulF16w; f32 sums), a row's result independent of T */
  gemmF16w(x: Ptr, T: number, K: number, w: Ptr, N: number, y: Ptr): void;
  rows(x: Ptr, C: number, rows: Ptr, R: number, out: Ptr): void;
  argmax(x: Ptr, R: number, C: number, out: Ptr): void;
  topk(x: Ptr, R: number, C: number, k: number, vals: Ptr, idx: Ptr): void;
  quantizeAct(x: Ptr, T: number, K: number, B: number, Kp: number, K8: number, perm: Ptr, a8: Ptr, a4: Ptr, sa: Ptr): void;
  rmsnormQuant(x: Ptr, w: Ptr, T: number, eps: number, K: number, B: number, Kp: number, K8: number, perm: Ptr, a8: Ptr, a4: Ptr, sa: Ptr): void;
  /** the residual add folded into the norm: sum = x + y, then rmsnorm / rmsnormQuant of it (capi.h) */
  addRmsnorm(x: Ptr, y: Ptr, w: Ptr, T: number, C: number, eps: number, sum: Ptr, out: Ptr): void;
  addRmsnormQuant(x: Ptr, y: Ptr, w: Ptr, T: number, eps: number, K: number, B: number, Kp: number, K8: number, perm: Ptr, sum: Ptr, a8: Ptr, a4: Ptr, sa: Ptr): void;
  siluMulQuant(g: Ptr, u: Ptr, T: number, K: number, B: number, Kp: number, K8: number, perm: Ptr, a8: Ptr, a4: Ptr, sa: Ptr): void;
  kvAppendF32(kc: Ptr, vc: Ptr, k: Ptr, v: Ptr, ...stepAndGeom: number[]): void;
  kvAppendKv4(cache: Ptr, k: Ptr, v: Ptr, ...stepAndGeom: number[]): void;
  /** RoPE folded into the append: qOut = rope(q); rope(k), v appended (capi.h comet_rope_kv_append_*) */
  ropeKvAppendF32(kc: Ptr, vc: Ptr, q: Ptr, k: Ptr, v: Ptr, nHeads: number, freqs: Ptr, qOut: Ptr, ...stepAndGeom: number[]): void;
  ropeKvAppendKv4(cache: Ptr, q: Ptr, k: Ptr, v: Ptr, nHeads: number, freqs: Ptr, qOut: Ptr, ...stepAndGeom: number[]): void;
  attentionF32(q: Ptr, kc: Ptr, vc: Ptr, ...rest: number[]): void;
  attentionKv4(q: Ptr, cache: Ptr, ...rest: number[]): void;
  attentionWorkspace(T: number, nHeads: number, headDim: number, maxLen: number): number;
  // op profiler (cuda/ops_float.cu): spin kernel, event marks, mark-pair times in ms
  profSpin(us: number): void;
  profMark(): void;
  profRead(): Float32Array;
  /** page-locked host memory as an ArrayBuffer (never freed) */
  hostAlloc(bytes: number): ArrayBuffer;
  // GPTQ (cuda/quant_gptq.cu; the quantizer's device half). Optional: an addon built before it has none, and the
  // quantizer runs src/quant/gptq.ts on the host.
  gptqHessianAdd?(x: Ptr, T: number, K: number, H: Ptr): void;
  gptqPermute?(H: Ptr, K: number, Kp: number, perm: Ptr, scale: Ptr, damp: number, P: Ptr): void;
  gptqInvCholUpper?(P: Ptr, n: number, U: Ptr): void;
  gptqQuantize?(w: Ptr, N: number, K: number, Kp: number, B: number, perm: Ptr, U: Ptr, grid: number, codes: Ptr, scales: Ptr): void;
}

/** Where the addon is: $COMET_CUDA_ADDON, else build/Release/comet_cuda.node of this package. */
export const addonPath = (): string =>
  process.env.COMET_CUDA_ADDON ?? fileURLToPath(new URL('../../build/Release/comet_cuda.node', import.meta.url));

/** Every addon error becomes a CometError: 'out_of_memory' for a full GPU, 'cuda_error' otherwise. */
function wrap(raw: CudaAddon): CudaAddon {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(raw)) {
    if (typeof f !== 'function') continue;
    out[k] = (...args: unknown[]) => {
      try {
        return (f as (...a: unknown[]) => unknown)(...args);
      } catch (e) {
        const err = e as Error & { code?: string };
        if (err.code === 'COMET_ENOMEM') throw new CometError(`cuda: ${err.message}`, 'out_of_memory');
        throw new CometError(`cuda: ${err.message}`, 'cuda_error');
      }
    };
  }
  return out as unknown as CudaAddon;
}

let cached: CudaAddon | undefined;

export function loadAddon(): CudaAddon {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path))
    throw new CometError(`cuda: the CUDA addon is not built (${path} is missing); build it with \`npm run build:cuda\` (needs nvcc and CMake)`, 'backend_unavailable');
  let raw: CudaAddon;
  try {
    raw = createRequire(import.meta.url)(path) as CudaAddon;
  } catch (e) {
    throw new CometError(`cuda: cannot load the CUDA addon ${path}: ${(e as Error).message}`, 'backend_unavailable');
  }
  return (cached = wrap(raw));
}
