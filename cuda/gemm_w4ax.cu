// W4Ax GEMM (DESIGN.md §3.4): Y[m][n] = sum over B-blocks b ascending of f32(acc_b) * (sa[m][b] * sw[n][b]).
// This file: the C ABI (capi.h), the weight repack, the workspaces and the dispatcher. Kernel families, one file each:
//   gemm_w4ax_decode.cuh  decode (GEMV-style mma.sync, solo and grouped): M <= 16 (M <= 64 when B != 128)
//   gemm_w4ax_mma.cuh     v4 mma.sync tiles: M > 64 when B != 128 on sm_90; the sm_80 path (int4 tensor cores)
//   gemm_w4ax_sm90.cu     v8 warp-specialized wgmma: M >= 17 with B = 128 on sm_90a
// Superseded versions (v5, v6) live in cuda/lab/; the lab notebook with every version's prediction and measurement
// is cuda/NOTES-gemm.md. Weight layout: gemm_w4ax.cuh (TS twin: simulator/layouts/w4_tiled.ts).
// Exactness: int32 accumulators are exact; values read as 16*q make raw = 16*acc (W4A8) or 256*acc (W4A4 on
// s8); the 2^-4 / 2^-8 goes into the f32 activation scale (sa * 2^-k is exact, so is sa*sw*2^-k: a product of
// two f16 and a power of two), hence f32(raw) * p' = f32(acc) * (sa*sw) bit for bit. Every product and sum is
// __fmul_rn / __fadd_rn (no FMA contraction).
#include "capi.h"
#include "gemm_w4ax.cuh"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <climits>

using namespace comet_gemm;

struct comet_w4_weight {
  WDesc d;
  uint8_t* q;
  __half* swT;
};

// ---------------------------------------------------------------------------------------------------------
// errors: through comet_ops::set_error (cuda/ops_runtime.cu, which owns comet_last_error) when it is linked
// in; else a weak fallback here, so this file also builds into a library of its own.
namespace comet_ops {
__attribute__((weak)) int set_error(int code, const char* fmt, ...);
}
static thread_local char g_err[512];
static int set_err(int code, const char* fmt, const char* what) {
  if (comet_ops::set_error) return comet_ops::set_error(code, fmt, what), code;
  snprintf(g_err, sizeof g_err, fmt, what);
  return code;
}
extern "C" __attribute__((weak)) const char* comet_last_error(void) { return g_err; }

#define CUDA_TRY(call)                                                                          \
  do {                                                                                          \
    cudaError_t e_ = (call);                                                                    \
    if (e_ != cudaSuccess) return set_err((int)e_, "gemm_w4ax: %s", cudaGetErrorString(e_)); \
  } while (0)

static int g_force = 0;       // comet_gemm_w4ax_force
static int g_group_mode = 0;  // comet_gemm_w4ax_group_mode

// ---------------------------------------------------------------------------------------------------------
// repack (comet_w4_create): canonical codes [N][Kp/2] -> q [T][Npad][64]; scales [N][nb] -> swT [nb][Npad]
__device__ inline uint32_t nib(const uint8_t* row, int k) { return (row[k >> 1] >> ((k & 1) * 4)) & 15u; }

__global__ void repack_codes(const uint8_t* __restrict__ codes, WDesc w, uint8_t* __restrict__ q) {
  long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;  // one thread per (tile, n, t)
  if (idx >= (long long)w.T * w.Npad * 4) return;
  int t = (int)(idx & 3);
  long long r = idx >> 2;
  int n = (int)(r % w.Npad), i = (int)(r / w.Npad);
  uint32_t word[4] = {0, 0, 0, 0};
  if (n < w.N) {
    const uint8_t* row = codes + (size_t)n * (w.Kp / 2);
    for (int c = 0; c < 4; c++) {
      if (i < w.T8) {
        int kc = i * KT + 32 * c;
        if (kc >= w.K8) continue;
        for (int j = 0; j < 4; j++)
          word[c] |= nib(row, kc + 8 * t + j) << (8 * j) | nib(row, kc + 8 * t + 4 + j) << (8 * j + 4);
      } else {
        int kc = w.K8 + (i - w.T8) * KT + 32 * c;
        if (kc >= w.Kp) continue;
        const uint8_t* p = row + (kc + 8 * t) / 2;
        word[c] = p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
      }
    }
  }
  *(uint4*)(q + ((size_t)i * w.Npad + n) * ROW_BYTES + 16 * t) = make_uint4(word[0], word[1], word[2], word[3]);
}

__global__ void repack_scales(const uint16_t* __restrict__ sw, WDesc w, uint16_t* __restrict__ swT) {
  long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;  // over [nb][Npad]
  if (idx >= (long long)w.nb * w.Npad) return;
  int n = (int)(idx % w.Npad), b = (int)(idx / w.Npad);
  swT[idx] = n < w.N ? sw[(size_t)n * w.nb + b] : 0;
}


#include "gemm_w4ax_decode.cuh"
#include "gemm_w4ax_mma.cuh"

// ---------------------------------------------------------------------------------------------------------
// C ABI
static int device_major() {
  static int major = -1;
  if (major < 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      major = 0;
  }
  return major;
}

/** Variants (comet_gemm_w4ax_force): 1 decode, 2 v4 mma.sync tiles (s8), 3 v4 sm_80 path (s4 mma for W4A4 blocks when
 *  B >= 64), 6 v8 wgmma (sm_90a, B = 128; v7 until 2026-12-03). (4 and 5 were v5 and v6: cuda/lab/.) The auto choice,
 *  from an explicit list:
 *    M <= 16                        decode (memory-bound GEMV)
 *    sm_90, B = 128, M >= 17        v8 (v7 on the H200, 2026-12-02: 1.1-1.9x the decode kernel at M = 33..64 on
 *                                   the 8 LLaMA shapes, 0.88-1.12x at M = 32; 0.92-1.49x v5 at M >= 64, faster on 28
 *                                   of 32 rows; measured before the M-independent schedule, the crossover not
 *                                   re-measured since; v8 is 0.80-0.88x v7's time at M >= 64: NOTES-gemm.md)
 *    B != 128 or not sm_90          decode for M <= 64, else v4 (s8 on sm_90+, the s4 path on sm_80)
 *  A forced variant that cannot run falls back: 6 off sm_90 or with B != 128 runs 2; 1 with M > 64 is an error. */
static int pick_variant(int M, int B) {
  int v = g_force;
  if (!v) {
    if (M <= 16) v = 1;
    else if (device_major() == 9 && B == 128) v = 6;
    else if (M <= 64) v = 1;
    else v = device_major() >= 9 ? 2 : 3;
  }
  if (v == 6 && (device_major() != 9 || B != 128)) v = 2;
  return v;
}

static int check_shape(int N, int Kp, int B, int K8) {
  if (N <= 0 || Kp <= 0 || (B != 32 && B != 64 && B != 128) || Kp % B || K8 < 0 || K8 > Kp || K8 % B)
    return set_err(-1, "gemm_w4ax: bad shape (%s): need B in {32,64,128}, Kp and K8 multiples of B, 0 <= K8 <= Kp",
                   "N, Kp, B, K8");
  return 0;
}

static WDesc make_desc(int N, int Kp, int B, int K8) {
  WDesc d{};
  d.N = N, d.Kp = Kp, d.B = B, d.K8 = K8;
  d.Npad = (N + NPAD - 1) / NPAD * NPAD;
  d.T8 = tiles_of(K8);
  d.T = d.T8 + tiles_of(Kp - K8);
  d.nb = Kp / B;
  return d;
}

// The decode kernel's split-K workspace and tickets: one for the library, grown by comet_w4_create (never
// during a launch, so launches can be captured in CUDA graphs). One GEMM at a time uses it: the library
// assumes one stream per process for the decode GEMM.
static float* g_ws = nullptr;
static size_t g_ws_bytes = 0;
static int* g_tickets = nullptr;
static int g_tickets_n = 0;

// v8 split-K (output tiles < SMs): one f32 partial per output tile and schedule slice, so a launch splits only when
// tiles x slices x its tile fit this fixed workspace of V8_WS_TILES x SMs 128x128 f32 tiles (and tiles < SMs tickets);
// allocated once by comet_w4_create.
static float* g_ws5 = nullptr;
static int* g_tickets5 = nullptr;
// v8's packed activations and scales (launch_v8, v8_pack), allocated by the first comet_w4_create of a weight v8 can run
static int8_t* g_x8 = nullptr;

static cudaError_t reserve_workspace(const WDesc& d) {
  if (!g_ws5) {
    cudaError_t e = cudaMalloc(&g_ws5, v8_ws_floats(sm_count()) * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&g_tickets5, sm_count() * sizeof(int));
    if (e == cudaSuccess) e = cudaMemset(g_tickets5, 0, sm_count() * sizeof(int));
    if (e != cudaSuccess) {
      cudaFree(g_ws5), cudaFree(g_tickets5);
      g_ws5 = nullptr, g_tickets5 = nullptr;
      return e;
    }
  }
  if (!g_x8 && d.B == 128 && device_major() == 9) {
    cudaError_t e = cudaMalloc(&g_x8, V8_X8_BYTES);
    if (e != cudaSuccess) return g_x8 = nullptr, e;
  }
  // Solo: this shape's largest workspace over the decode M classes. Grouped (comet_gemm_w4ax_many, up to GROUP_MAX
  // problems side by side): GROUP_MAX x the largest at M <= 32 (the auto decode range), so any group of created
  // weights fits there; a group at M = 33..64 that does not fit runs its problems one after another (same result).
  size_t need = 0;
  for (int M : {8, 16, 32, 64}) {
    DecPlan p = decode_plan(d, M);
    size_t one = p.KS > 1 ? (size_t)p.KS * M * d.Npad * sizeof(float) : 0;
    need = std::max(need, M <= 32 ? GROUP_MAX * one : one);
  }
  if (need > g_ws_bytes) {
    cudaError_t e = cudaDeviceSynchronize();  // the old workspace may be in use
    if (e != cudaSuccess) return e;
    cudaFree(g_ws);
    g_ws = nullptr, g_ws_bytes = 0;
    if ((e = cudaMalloc(&g_ws, need)) != cudaSuccess) return e;
    g_ws_bytes = need;
  }
  if (GROUP_MAX * d.Npad / 128 > g_tickets_n) {  // one counter per n-tile, for up to GROUP_MAX problems at once
    const int n = GROUP_MAX * d.Npad / 128;
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) return e;
    cudaFree(g_tickets);
    g_tickets = nullptr, g_tickets_n = 0;
    if ((e = cudaMalloc(&g_tickets, n * sizeof(int))) != cudaSuccess) return e;
    if ((e = cudaMemset(g_tickets, 0, n * sizeof(int))) != cudaSuccess) return e;
    g_tickets_n = n;
  }
  return cudaSuccess;
}

extern "C" int comet_w4_create(const uint8_t* codes, const uint16_t* scales, int N, int Kp, int B, int K8,
                               comet_w4_weight** out, void* stream) {
  if (int e = check_shape(N, Kp, B, K8)) return e;
  if (!codes || !scales || !out) return set_err(-1, "gemm_w4ax: %s", "null pointer");
  cudaStream_t s = (cudaStream_t)stream;
  WDesc d = make_desc(N, Kp, B, K8);
  comet_w4_weight* w = new comet_w4_weight{};
  size_t qbytes = (size_t)d.T * d.Npad * ROW_BYTES, sbytes = (size_t)d.nb * d.Npad * 2;
  cudaError_t e = reserve_workspace(d);
  if (e == cudaSuccess) e = cudaMalloc(&w->q, qbytes);
  if (e == cudaSuccess) e = cudaMalloc(&w->swT, sbytes);
  if (e == cudaSuccess) {
    long long n1 = (long long)d.T * d.Npad * 4, n2 = (long long)d.nb * d.Npad;
    w->d = d;
    w->d.q = w->q;
    w->d.swT = w->swT;
    repack_codes<<<(unsigned)((n1 + 255) / 256), 256, 0, s>>>(codes, w->d, w->q);
    repack_scales<<<(unsigned)((n2 + 255) / 256), 256, 0, s>>>(scales, w->d, (uint16_t*)w->swT);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess) {
    comet_w4_destroy(w);
    return set_err((int)e, "gemm_w4ax: create: %s", cudaGetErrorString(e));
  }
  *out = w;
  return 0;
}

extern "C" void comet_w4_destroy(comet_w4_weight* w) {
  if (!w) return;
  cudaFree(w->q);
  cudaFree(w->swT);
  delete w;
}

template <int TT, int B>
static cudaError_t launch_decode(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d,
                                 void* y, int out_f16, cudaStream_t s) {
  static int attr = 0;  // the largest dynamic shared memory this instance has been allowed
  DecPlan p = decode_plan(d, M);
  if (p.smem > attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_decode<TT, B>, cudaFuncAttributeMaxDynamicSharedMemorySize, p.smem);
    if (e != cudaSuccess) return e;
    attr = p.smem;
  }
  if (p.KS > 1 && ((size_t)p.KS * M * d.Npad * sizeof(float) > g_ws_bytes || d.Npad / 128 > g_tickets_n))
    return cudaErrorInvalidValue;  // cannot happen: comet_w4_create reserved it
  dim3 grid(d.Npad / 128, p.KS);
  pdl_launch(gemm_decode<TT, B>, grid, DEC_THREADS, p.smem, s, a8, a4, (const __half*)sa, M, d, y, out_f16, p.KS, p.chunk, g_ws,
                                                       g_tickets);
  return cudaSuccess;
}

template <int TT>
static cudaError_t launch_decode_b(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d,
                                   void* y, int out_f16, cudaStream_t s) {
  switch (d.B) {
    case 32: return launch_decode<TT, 32>(a8, a4, sa, M, d, y, out_f16, s);
    case 64: return launch_decode<TT, 64>(a8, a4, sa, M, d, y, out_f16, s);
    default: return launch_decode<TT, 128>(a8, a4, sa, M, d, y, out_f16, s);
  }
}

/** The grouped decode launch. Returns cudaErrorNotSupported (nothing launched) when the problems' workspaces do
 *  not fit side by side in the reserved one: the caller then launches them one by one. */
template <int TT, int B>
static cudaError_t launch_decode_many(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                                      const comet_w4_weight* const* ws, void* const* ys, int n, int out_f16,
                                      cudaStream_t s) {
  static int attr = 0;
  DecGroup gr;
  int ctas = 0, smem = 0, tk = 0;
  size_t off = 0;  // floats of workspace used so far
  for (int i = 0; i < GROUP_MAX; i++) {
    if (i >= n) {
      gr.w[i] = gr.w[0], gr.y[i] = nullptr, gr.ws[i] = nullptr, gr.tickets[i] = nullptr, gr.KS[i] = 1, gr.chunk[i] = 1;
      gr.cta0[i] = INT_MAX;
      continue;
    }
    const WDesc& d = ws[i]->d;
    const DecPlan p = decode_plan(d, M);
    gr.w[i] = d, gr.y[i] = ys[i], gr.KS[i] = p.KS, gr.chunk[i] = p.chunk, gr.cta0[i] = ctas;
    gr.ws[i] = g_ws ? g_ws + off : nullptr, gr.tickets[i] = g_tickets ? g_tickets + tk : nullptr;
    if (p.KS > 1) off += (size_t)p.KS * M * d.Npad;
    tk += d.Npad / 128;
    ctas += d.Npad / 128 * p.KS;
    smem = std::max(smem, p.smem);
  }
  if ((off && off * sizeof(float) > g_ws_bytes) || tk > g_tickets_n) return cudaErrorNotSupported;
  if (smem > attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_decode_group<TT, B>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    attr = smem;
  }
  pdl_launch(gemm_decode_group<TT, B>, ctas, DEC_THREADS, smem, s, a8, a4, (const __half*)sa, M, gr, out_f16);
  return cudaSuccess;
}

template <int TT>
static cudaError_t launch_decode_many_b(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                                        const comet_w4_weight* const* ws, void* const* ys, int n, int out_f16,
                                        cudaStream_t s) {
  switch (ws[0]->d.B) {
    case 32: return launch_decode_many<TT, 32>(a8, a4, sa, M, ws, ys, n, out_f16, s);
    case 64: return launch_decode_many<TT, 64>(a8, a4, sa, M, ws, ys, n, out_f16, s);
    default: return launch_decode_many<TT, 128>(a8, a4, sa, M, ws, ys, n, out_f16, s);
  }
}

template <bool S4, int B>
static cudaError_t launch_prefill(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d,
                                  void* y, int out_f16, cudaStream_t s) {
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_prefill<S4, B>, cudaFuncAttributeMaxDynamicSharedMemorySize, PF_SMEM);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  dim3 grid((M + 127) / 128, d.Npad / 128);
  pdl_launch(gemm_prefill<S4, B>, grid, PF_THREADS, PF_SMEM, s, a8, a4, (const __half*)sa, M, d, y, out_f16, schedule_slices(d));
  return cudaSuccess;
}

template <bool S4>
static cudaError_t launch_prefill_b(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d,
                                    void* y, int out_f16, cudaStream_t s) {
  switch (d.B) {
    case 32: return launch_prefill<S4, 32>(a8, a4, sa, M, d, y, out_f16, s);
    case 64: return launch_prefill<S4, 64>(a8, a4, sa, M, d, y, out_f16, s);
    default: return launch_prefill<S4, 128>(a8, a4, sa, M, d, y, out_f16, s);
  }
}

extern "C" int comet_gemm_w4ax(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                               const comet_w4_weight* w, void* y, int out_f16, void* stream) {
  if (!w || !y || !sa || M < 0) return set_err(-1, "gemm_w4ax: %s", "bad argument");
  if (M == 0) return 0;
  if ((w->d.K8 > 0 && !a8) || (w->d.K8 < w->d.Kp && !a4)) return set_err(-1, "gemm_w4ax: %s", "missing activations");
  if (((uintptr_t)a8 | (uintptr_t)a4) & 15)  // cp.async copies 16-byte pieces of the activation rows
    return set_err(-1, "gemm_w4ax: %s", "a8 and a4 must be 16-byte aligned");
  if ((uintptr_t)sa & 3)  // capi.h's contract (v7 copied the activation scales in 4-byte words)
    return set_err(-1, "gemm_w4ax: %s", "sa must be 4-byte aligned");
  cudaStream_t s = (cudaStream_t)stream;
  const int v = pick_variant(M, w->d.B);
  if (v == 6) {
    const WDesc* d = &w->d;
    const int S = schedule_slices(w->d);
    CUDA_TRY(launch_v8(a8, a4, sa, M, &d, &S, &y, 1, out_f16, sm_count(), g_ws5, g_tickets5, g_x8,
                       g_x8 ? V8_X8_BYTES : 0, s));
  } else if (v == 1) {
    if (M > 64) return set_err(-1, "gemm_w4ax: %s", "decode kernel needs M <= 64");
    if (M <= 8) CUDA_TRY(launch_decode_b<1>(a8, a4, sa, M, w->d, y, out_f16, s));
    else if (M <= 16) CUDA_TRY(launch_decode_b<2>(a8, a4, sa, M, w->d, y, out_f16, s));
    else if (M <= 32) CUDA_TRY(launch_decode_b<4>(a8, a4, sa, M, w->d, y, out_f16, s));
    else CUDA_TRY(launch_decode_b<8>(a8, a4, sa, M, w->d, y, out_f16, s));
  } else if (v == 2) {
    CUDA_TRY(launch_prefill_b<false>(a8, a4, sa, M, w->d, y, out_f16, s));
  } else {
    CUDA_TRY(launch_prefill_b<true>(a8, a4, sa, M, w->d, y, out_f16, s));
  }
  CUDA_TRY(cudaGetLastError());
  return 0;
}

extern "C" int comet_gemm_w4ax_many(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                                    const comet_w4_weight* const* ws, void* const* ys, int n, int out_f16,
                                    void* stream) {
  if (!ws || !ys || n < 1 || n > GROUP_MAX) return set_err(-1, "gemm_w4ax_many: %s", "need 1..4 weights and outputs");
  for (int i = 0; i < n; i++) {
    if (!ws[i] || !ys[i]) return set_err(-1, "gemm_w4ax_many: %s", "null weight or output");
    const WDesc &d = ws[i]->d, &d0 = ws[0]->d;
    if (d.Kp != d0.Kp || d.B != d0.B || d.K8 != d0.K8)
      return set_err(-1, "gemm_w4ax_many: %s", "weights differ in Kp, B or K8 (one activation serves them all)");
  }
  if (!sa || M < 0) return set_err(-1, "gemm_w4ax_many: %s", "bad argument");
  if (M == 0) return 0;
  const WDesc& d0 = ws[0]->d;
  if ((d0.K8 > 0 && !a8) || (d0.K8 < d0.Kp && !a4)) return set_err(-1, "gemm_w4ax_many: %s", "missing activations");
  if (((uintptr_t)a8 | (uintptr_t)a4) & 15) return set_err(-1, "gemm_w4ax_many: %s", "a8 and a4 must be 16-byte aligned");
  if ((uintptr_t)sa & 3) return set_err(-1, "gemm_w4ax_many: %s", "sa must be 4-byte aligned");
  cudaStream_t s = (cudaStream_t)stream;
  // Only the decode kernel groups (the variant and the split are those each weight gets alone); the tiled kernels
  // run one launch per weight (v8 after one shared activation pack).
  bool group = n > 1 && g_group_mode != 2 && M <= 64;
  for (int i = 0; i < n && group; i++) group = pick_variant(M, d0.B) == 1;
  if (group && g_group_mode == 0) {
    // One launch pays when a problem leaves its solo launch part-empty (k/v beside q: 0.5 wave each) or its CTAs
    // are short (k/v at 2-4 k-tiles each). Weights that each fill >= 3/4 of a wave alone with long CTAs (>= 16
    // k-tiles), or >= 2 waves, gain nothing: the bandwidth is already saturated, and the grouped grid's part-full
    // last wave costs (H100, 2026-11-24, bench/results/gemm-grouped-*: L3-70B gate_up M = 1: 97 us separate, 109
    // one launch; L3-8B gate_up M = 16: 46 separate, 40 one launch; L3-70B qkv M = 32: 76 separate, 55 one launch).
    bool all_big = true;
    for (int i = 0; i < n; i++) {
      const WDesc& d = ws[i]->d;
      const DecPlan p = decode_plan(d, M);
      const int ctas = d.Npad / 128 * p.KS, wave = p.occ * sm_count();
      all_big = all_big && 4 * ctas >= 3 * wave && (ctas >= 2 * wave || p.tiles_max >= 16);
    }
    group = !all_big;
  }
  if (group) {
    cudaError_t e = M <= 8    ? launch_decode_many_b<1>(a8, a4, sa, M, ws, ys, n, out_f16, s)
                    : M <= 16 ? launch_decode_many_b<2>(a8, a4, sa, M, ws, ys, n, out_f16, s)
                    : M <= 32 ? launch_decode_many_b<4>(a8, a4, sa, M, ws, ys, n, out_f16, s)
                              : launch_decode_many_b<8>(a8, a4, sa, M, ws, ys, n, out_f16, s);
    if (e == cudaSuccess) {
      CUDA_TRY(cudaGetLastError());
      return 0;
    }
    if (e != cudaErrorNotSupported) return set_err((int)e, "gemm_w4ax_many: %s", cudaGetErrorString(e));
  }
  if (n > 1 && pick_variant(M, d0.B) == 6) {  // v8: one activation pack serves every weight (same K layout)
    const WDesc* ds[GROUP_MAX];
    int S[GROUP_MAX];
    for (int i = 0; i < n; i++) ds[i] = &ws[i]->d, S[i] = schedule_slices(ws[i]->d);
    CUDA_TRY(launch_v8(a8, a4, sa, M, ds, S, ys, n, out_f16, sm_count(), g_ws5, g_tickets5, g_x8, g_x8 ? V8_X8_BYTES : 0,
                       s));
    CUDA_TRY(cudaGetLastError());
    return 0;
  }
  for (int i = 0; i < n; i++)
    if (int e = comet_gemm_w4ax(a8, a4, sa, M, ws[i], ys[i], out_f16, stream)) return e;
  return 0;
}

extern "C" int comet_gemm_w4ax_schedule(int N, int Kp, int B, int K8, int* ranges_host, int max_splits) {
  if (int e = check_shape(N, Kp, B, K8)) return e;
  if (!ranges_host) return set_err(-1, "gemm_w4ax: %s", "bad argument");
  WDesc d = make_desc(N, Kp, B, K8);
  const int KS = schedule_slices(d);  // every variant, every M
  if (KS > max_splits) return set_err(-2, "gemm_w4ax: %s", "max_splits too small");
  for (int k = 0; k < KS; k++) {
    ranges_host[2 * k] = tile_block0(d, k * d.T / KS);
    ranges_host[2 * k + 1] = tile_block0(d, (k + 1) * d.T / KS);
  }
  return KS;
}

extern "C" int comet_gemm_w4ax_force(int variant) {
  if (variant < 0 || variant > 6 || variant == 4 || variant == 5)
    return set_err(-1, "gemm_w4ax: %s", "variant must be 0 (auto), 1 decode, 2 v4, 3 sm_80 path or 6 v8 (4, 5: cuda/lab)");
  g_force = variant;
  return 0;
}

extern "C" int comet_gemm_w4ax_group_mode(int mode) {
  if (mode < 0 || mode > 2) return set_err(-1, "gemm_w4ax: %s", "group mode must be 0..2");
  g_group_mode = mode;
  return 0;
}

