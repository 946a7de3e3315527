// W4Ax GEMM (DESIGN.md §3.4): Y[m][n] = sum over B-blocks b ascending of f32(acc_b) * (sa[m][b] * sw[n][b]).
// Kernel lab notes: cuda/NOTES-gemm.md. Weight layout: gemm_w4ax.cuh (TS twin: simulator/layouts/w4_tiled.ts).
//
// Kernels
//   gemm_decode<TT>  M <= 64. GEMV-style, memory-bound. The weight is the mma's A operand (16 rows of n per
//                    warp), the tokens its N operand (TT tiles of 8): M = 1 wastes 7/8 of an m16n8k32, not 15/16.
//                    Each weight byte is read once, 16 bytes per load, 4 k-tiles in flight per warp. A CTA is
//                    8 warps = RG row groups x KS k-slices; the KS partial sums meet in shared memory and are
//                    added in slice order (the schedule comet_gemm_w4ax_schedule reports).
//   gemm_prefill<S4> M > 64. 128x128 CTA tile, 8 warps of 32x64, k-tile 128, 4-stage cp.async pipeline.
//                    S4 = false: every chunk on mma.m16n8k32.s8 (sm_90: Hopper has no int4 tensor cores).
//                    S4 = true (sm_80 path): INT4 blocks on mma.m16n8k64.s4 when B >= 64, INT8 blocks on s8.
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

// ---------------------------------------------------------------------------------------------------------
// decode: M <= 64. Grid (Npad/128, KS): a CTA = 8 warps x 16 weight rows = 128 rows, over k-slice blockIdx.y.
// The slice's activations (rows padded to 160 / 80 bytes: conflict-free 8 / 4-byte fragment reads), its
// activation scales (f32, pre-multiplied by 2^-4 / 2^-8) and weight scales go to shared memory once; the
// weights stream from global memory through a register ring, DEC_DEPTH k-tiles ahead.
// KS > 1: each CTA writes its f32 partial to the workspace; the last CTA of an n-tile (ticket) adds the KS
// partials in slice order from +0 (the reported schedule) and writes Y.
constexpr int DEC_THREADS = 256, DEC_DEPTH = 4, DEC_SMEM_BUDGET = 96 * 1024;
constexpr int A8_ROW = 160, A4_ROW = 80;  // shared-memory row strides of one k-tile of activations

struct DecPlan {
  int KS, tiles_max, smem, occ;  // occ: CTAs per SM at this plan's shared memory
};
static int dec_smem(int MT, int B, int tiles) {
  int blocks = tiles * (KT / B);
  return tiles * MT * A8_ROW + blocks * (MT * 4 + 128 * 2);
}
static int num_sms() {
  static int n = 0;
  if (!n) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      n = 0;
    if (n <= 0) n = 132;
  }
  return n;
}
constexpr int dec_min_blocks_rt(int TT) { return TT == 1 ? 4 : TT == 2 ? 3 : TT == 4 ? 2 : 1; }

/** One wave: the most k-slices for which all CTAs are resident at once (registers and shared memory), and
 *  at least as many as the shared-memory budget needs. */
static DecPlan decode_plan(const WDesc& w, int M) {
  const int TT = M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8, MT = 8 * TT;
  const int ntile = w.Npad / 128;
  int best = 0;
  for (int ks = 1; ks <= w.T; ks++) {
    int smem = dec_smem(MT, w.B, (w.T + ks - 1) / ks);
    if (smem > DEC_SMEM_BUDGET) continue;
    int occ = std::min(dec_min_blocks_rt(TT), 227 * 1024 / (smem + 1024));
    if (best && ntile * ks > occ * num_sms()) break;
    best = ks;
    if (ntile * ks > occ * num_sms()) break;  // even the first fitting split is more than one wave
  }
  if (!best) best = w.T;
  int tmax = 0;
  for (int k = 0; k < best; k++) tmax = std::max(tmax, (k + 1) * w.T / best - k * w.T / best);
  const int smem = dec_smem(MT, w.B, tmax);
  return DecPlan{best, tmax, smem, std::min(dec_min_blocks_rt(TT), 227 * 1024 / (smem + 1024))};
}

template <int TT>
constexpr int dec_min_blocks() { return dec_min_blocks_rt(TT); }

/** One CTA of the decode kernel: n-tile `ntile` (rows [128*ntile, +128) of W) and k-slice ks of KS of one problem.
 *  ws: this problem's workspace [KS][M][Npad] f32; tickets: its [Npad/128] counters. Shared by the single-weight
 *  kernel (gemm_decode: ntile = blockIdx.x, ks = blockIdx.y) and the grouped one (gemm_decode_group), so a problem
 *  computes the same partial sums, in the same order, whichever launch it is in. */
template <int TT, int B, int DEPTH = DEC_DEPTH>
__device__ __forceinline__ void decode_cta(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4,
                                           const __half* __restrict__ sa, int M, const WDesc& w, void* y, int out_f16,
                                           int KS, int ntile, int ks, float* __restrict__ ws, int* __restrict__ tickets) {
  constexpr int MT = TT * 8, CPB = B / 32;
  extern __shared__ __align__(16) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int ncta0 = ntile * 128, n0 = ncta0 + warp * 16;
  const int ta = ks * w.T / KS, tb = (ks + 1) * w.T / KS, nt = tb - ta;
  const int bA = tile_block0<B>(w, ta), bB = tile_block0<B>(w, tb), nbs = bB - bA;
  char* Act = smem;                                            // [nt][MT][160 or 80]
  float* Sa = (float*)(smem + nt * MT * A8_ROW);               // [nbs][MT]
  __half* Sw = (__half*)(smem + nt * MT * A8_ROW + nbs * MT * 4);  // [nbs][128]

  // 1. the weight ring first: the longest latency
  const uint8_t* wq = w.q + ((size_t)n0 + g) * ROW_BYTES + 16 * t;
  const size_t tstride = (size_t)w.Npad * ROW_BYTES, row8 = 8 * ROW_BYTES;
  uint4 ra[DEPTH], rb[DEPTH];
#pragma unroll
  for (int u = 0; u < DEPTH; u++)
    if (u < nt) ra[u] = ldg_stream(wq + (ta + u) * tstride), rb[u] = ldg_stream(wq + (ta + u) * tstride + row8);

  // 2. activations, their scales and the weight scales of the slice -> shared memory
  const int rowb4 = (w.Kp - w.K8) / 2;
  for (int idx = tid; idx < nt * MT * 8; idx += DEC_THREADS) {
    int li = idx / (MT * 8), r = (idx / 8) % MT, pc = idx % 8, i = ta + li;
    if (i < w.T8) {
      int gk = i * KT + pc * 16;
      bool ok = r < M && gk < w.K8;
      cp_async16(Act + (li * MT + r) * A8_ROW + pc * 16, ok ? (const void*)(a8 + (size_t)r * w.K8 + gk) : (const void*)w.q,
                 ok ? 16 : 0);
    } else if (pc < 4) {
      int gb = (i - w.T8) * (KT / 2) + pc * 16;
      bool ok = r < M && gb < rowb4;
      cp_async16(Act + li * MT * A8_ROW + r * A4_ROW + pc * 16, ok ? (const void*)(a4 + (size_t)r * rowb4 + gb) : (const void*)w.q,
                 ok ? 16 : 0);
    }
  }
  for (int idx = tid; idx < nbs * 16; idx += DEC_THREADS)
    cp_async16(Sw + (idx >> 4) * 128 + (idx & 15) * 8, w.swT + (size_t)(bA + (idx >> 4)) * w.Npad + ncta0 + (idx & 15) * 8, 16);
  cp_async_commit();
  const int nb8 = w.K8 / B;
  for (int idx = tid; idx < nbs * MT; idx += DEC_THREADS) {
    int blk = idx / MT, r = idx % MT, b = bA + blk;
    Sa[idx] = r < M ? __fmul_rn(__half2float(sa[(size_t)r * w.nb + b]), b < nb8 ? 0.0625f : 0.00390625f) : 0.f;
  }
  cp_async_wait<0>();
  __syncthreads();

  int acc[TT][4];
  float sum[TT][4];
#pragma unroll
  for (int j = 0; j < TT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = MAGIC, sum[j][e] = 0.f;

  for (int base = 0; base < nt; base += DEPTH) {
#pragma unroll
    for (int u = 0; u < DEPTH; u++) {
      const int li = base + u, i = ta + li;
      if (li < nt) {
        const uint4 xa = ra[u], xb = rb[u];
        if (li + DEPTH < nt)
          ra[u] = ldg_stream(wq + (i + DEPTH) * tstride), rb[u] = ldg_stream(wq + (i + DEPTH) * tstride + row8);
        const bool int8 = i < w.T8;
        const int seglen = int8 ? w.K8 : w.Kp - w.K8, kbase = int8 ? i * KT : (i - w.T8) * KT;
        const int blk0 = tile_block0<B>(w, i) - bA, nblk = tile_nblocks<B>(w, i);
        const char* At = Act + li * MT * A8_ROW;
        const uint32_t* wa_ = (const uint32_t*)&xa;
        const uint32_t* wb_ = (const uint32_t*)&xb;
#pragma unroll
        for (int c = 0; c < 4; c++) {
          if (kbase + 32 * c < seglen) {
            const uint32_t A0 = lo16x(wa_[c]), A1 = lo16x(wb_[c]), A2 = hi16x(wa_[c]), A3 = hi16x(wb_[c]);
#pragma unroll
            for (int j = 0; j < TT; j++) {
              uint32_t b0v, b1v;
              if (int8) {
                uint2 v = *(const uint2*)(At + (j * 8 + g) * A8_ROW + 32 * c + 8 * t);
                b0v = v.x, b1v = v.y;
              } else {
                uint32_t v = *(const uint32_t*)(At + (j * 8 + g) * A4_ROW + 16 * c + 4 * t);
                b0v = lo16x(v), b1v = hi16x(v);
              }
              if (c % CPB == 0) mma_s8_first(acc[j], A0, A1, A2, A3, b0v, b1v);
              else mma_s8(acc[j], A0, A1, A2, A3, b0v, b1v);
            }
          }
          if ((c + 1) % CPB == 0 && (c + 1) / CPB - 1 < nblk) {  // end of a B-block: the f32 epilogue
            const int bl = blk0 + (c + 1) / CPB - 1;
            const float sw0 = __half2float(Sw[bl * 128 + warp * 16 + g]), sw1 = __half2float(Sw[bl * 128 + warp * 16 + g + 8]);
            // c0: (row g, tok 2t) c1: (g, 2t+1) c2: (g+8, 2t) c3: (g+8, 2t+1)
            if (int8) {
#pragma unroll
              for (int j = 0; j < TT; j++) {
                const float2 s = *(const float2*)(Sa + bl * MT + j * 8 + 2 * t);
                const float p[4] = {__fmul_rn(s.x, sw0), __fmul_rn(s.y, sw0), __fmul_rn(s.x, sw1), __fmul_rn(s.y, sw1)};
#pragma unroll
                for (int e = 0; e < 4; e++) sum[j][e] = __fadd_rn(sum[j][e], __fmul_rn(magic_to_f32(acc[j][e]), p[e]));
              }
            } else {
              const float C0 = magic_c(sw0), C1 = magic_c(sw1);
#pragma unroll
              for (int j = 0; j < TT; j++) {
                const float2 s = *(const float2*)(Sa + bl * MT + j * 8 + 2 * t);
                sum[j][0] = __fadd_rn(sum[j][0], w4a4_term(acc[j][0], sw0, C0, s.x));
                sum[j][1] = __fadd_rn(sum[j][1], w4a4_term(acc[j][1], sw0, C0, s.y));
                sum[j][2] = __fadd_rn(sum[j][2], w4a4_term(acc[j][2], sw1, C1, s.x));
                sum[j][3] = __fadd_rn(sum[j][3], w4a4_term(acc[j][3], sw1, C1, s.y));
              }
            }
          }
        }
      }
    }
  }

  // 3. out: directly (KS == 1) or through the workspace and the last CTA of this n-tile
#pragma unroll
  for (int j = 0; j < TT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      int n = n0 + g + 8 * (e >> 1), tok = j * 8 + 2 * t + (e & 1);
      if (tok < M && n < w.N) {
        if (KS == 1) {
          __half h = __float2half_rn(sum[j][e]);
          if (out_f16) ((__half*)y)[(size_t)tok * w.N + n] = h;
          else ((float*)y)[(size_t)tok * w.N + n] = __half2float(h);
        } else {
          ws[((size_t)ks * M + tok) * w.Npad + n] = sum[j][e];
        }
      }
    }
  if (KS == 1) return;
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&tickets[ntile], 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int idx = tid; idx < M * 128; idx += DEC_THREADS) {
    int tok = idx / 128, n = ncta0 + idx % 128;
    if (n >= w.N) continue;
    float s = 0.f;
    for (int k = 0; k < KS; k++) s = __fadd_rn(s, __ldcg(ws + ((size_t)k * M + tok) * w.Npad + n));
    __half h = __float2half_rn(s);
    if (out_f16) ((__half*)y)[(size_t)tok * w.N + n] = h;
    else ((float*)y)[(size_t)tok * w.N + n] = __half2float(h);
  }
  if (tid == 0) tickets[ntile] = 0;  // ready for the next launch
}

template <int TT, int B>
__global__ void __launch_bounds__(DEC_THREADS, dec_min_blocks<TT>()) gemm_decode(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4,
                                                           const __half* __restrict__ sa, int M, WDesc w, void* y,
                                                           int out_f16, int KS, float* __restrict__ ws,
                                                           int* __restrict__ tickets) {
  decode_cta<TT, B>(a8, a4, sa, M, w, y, out_f16, KS, blockIdx.x, blockIdx.y, ws, tickets);
}

// Grouped decode (comet_gemm_w4ax_many): up to GROUP_MAX weights of the same K layout against one activation in
// ONE launch. The 1-D grid is the concatenation of each problem's solo grid (n-tile fastest, then k-slice, as
// blockIdx.x / .y of the solo launch); each problem keeps its solo split (decode_plan), so its outputs and the
// reported schedule are those of comet_gemm_w4ax. Workspaces and tickets are disjoint regions, one per problem.
// The problem's descriptor is picked at run time, so it lives in registers rather than the parameter bank: at the
// 64-register cap of M <= 8 (4 CTAs per SM) ptxas spills 64 B (B = 128) inside the k-loop. Measured on the H100
// (2026-11-24): no slower than a 3-deep weight ring (no fewer spills on sm_90a) and faster than 3 CTAs per SM
// without spills, except for groups of large weights, which comet_gemm_w4ax_many launches one by one anyway.
constexpr int GROUP_MAX = 4;
struct DecGroup {
  WDesc w[GROUP_MAX];
  void* y[GROUP_MAX];
  float* ws[GROUP_MAX];
  int* tickets[GROUP_MAX];
  int KS[GROUP_MAX];
  int cta0[GROUP_MAX];  // first CTA of each problem; unused entries INT_MAX
};

template <int TT, int B>
__global__ void __launch_bounds__(DEC_THREADS, dec_min_blocks<TT>())
    gemm_decode_group(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa,
                      int M, const __grid_constant__ DecGroup gr, int out_f16) {
  const int c = blockIdx.x;
  int p = 0;
#pragma unroll
  for (int i = 1; i < GROUP_MAX; i++) p += c >= gr.cta0[i];
  const int local = c - gr.cta0[p], ntiles = gr.w[p].Npad / 128;
  decode_cta<TT, B>(a8, a4, sa, M, gr.w[p], gr.y[p], out_f16, gr.KS[p], local % ntiles, local / ntiles, gr.ws[p],
                    gr.tickets[p]);
}

// ---------------------------------------------------------------------------------------------------------
// prefill: M > 64
constexpr int PF_THREADS = 512, PF_STAGES = 4;  // 16 warps: 4 (M) x 4 (N) of 32x32
constexpr int PF_A = 128 * 128, PF_W = 128 * ROW_BYTES, PF_SW = 4 * 128 * 2, PF_SA = 128 * 4 * 4;
constexpr int PF_STAGE = PF_A + PF_W + PF_SW + PF_SA;  // 27,648 bytes
constexpr int PF_SMEM = PF_STAGES * PF_STAGE;          // 110,592 bytes

// Shared-memory swizzles (16-byte granularity), chosen so the fragment reads are conflict-free:
//   a8 tile row r (128 B): a thread reads 8 bytes at 32c+8t; piece p -> p ^ ((r&3)<<1) spreads 4 rows x 32 B.
//   a4 tile row r (64 B):  a thread reads 4 bytes at 16c+4t; piece p -> p ^ ((r>>1)&3) spreads 8 rows x 16 B.
//   w tile: [n][t][c] words, a thread reads 16 bytes at 16t: conflict-free as is.
__device__ __forceinline__ int swz8(int r, int p) { return p ^ ((r & 3) << 1); }
__device__ __forceinline__ int swz4(int r, int p) { return p ^ ((r >> 1) & 3); }

/** Issue the cp.async copies of k-tile i into stage st (activation scales go separately: pf_load_sa). */
template <int B>
__device__ __forceinline__ void pf_load(const WDesc& w, int i, char* st, const int8_t* __restrict__ a8,
                                        const uint8_t* __restrict__ a4, int M, int m0, int n0, int tid) {
  char* As = st;
  char* Ws = st + PF_A;
  char* Ss = Ws + PF_W;
  if (i < w.T8) {
#pragma unroll
    for (int p = 0; p < 2; p++) {
      int piece = tid + PF_THREADS * p, r = piece >> 3, pc = piece & 7;
      int gk = i * KT + pc * 16;
      bool ok = m0 + r < M && gk < w.K8;
      const void* src = ok ? (const void*)(a8 + (size_t)(m0 + r) * w.K8 + gk) : (const void*)w.q;
      cp_async16(As + r * 128 + swz8(r, pc) * 16, src, ok ? 16 : 0);
    }
  } else {
    const int rowb = (w.Kp - w.K8) / 2;
    {
      int piece = tid, r = piece >> 2, pc = piece & 3;
      int gb = (i - w.T8) * (KT / 2) + pc * 16;
      bool ok = m0 + r < M && gb < rowb;
      const void* src = ok ? (const void*)(a4 + (size_t)(m0 + r) * rowb + gb) : (const void*)w.q;
      cp_async16(As + r * 64 + swz4(r, pc) * 16, src, ok ? 16 : 0);
    }
  }
  const uint8_t* wsrc = w.q + ((size_t)i * w.Npad + n0) * ROW_BYTES;
  cp_async16(Ws + tid * 16, wsrc + tid * 16, 16);
  int nblk = tile_nblocks<B>(w, i), b0 = tile_block0<B>(w, i);
  if (tid < nblk * 16) {
    int blk = tid >> 4, pc = tid & 15;
    cp_async16(Ss + blk * 256 + pc * 16, w.swT + (size_t)(b0 + blk) * w.Npad + n0 + pc * 8, 16);
  }
}

/** This thread's share of the tile's activation scales: row tid/4, block tid%4, times 2^-shift. */
template <int B>
__device__ __forceinline__ float pf_load_sa(const WDesc& w, int i, const __half* __restrict__ sa, int M, int m0,
                                            int tid, bool s4) {
  int nblk = tile_nblocks<B>(w, i), b0 = tile_block0<B>(w, i), r = tid >> 2, blk = tid & 3;
  float shift = i < w.T8 ? 0.0625f : (s4 ? 1.0f : 0.00390625f);
  return (m0 + r < M && blk < nblk) ? __fmul_rn(__half2float(sa[(size_t)(m0 + r) * w.nb + b0 + blk]), shift) : 0.f;
}
__device__ __forceinline__ void pf_store_sa(char* st, int tid, float v) {
  float* Sa = (float*)(st + PF_A + PF_W + PF_SW);
  Sa[tid] = v;  // [row][4]
}

constexpr int PF_NT = 4;  // n8 tiles per warp

/** The f32 epilogue of one B-block for a warp tile of MT m16 tiles x 4 n8 tiles (v4: MT = 2, 32x32; v5: MT = 4,
 *  64x32): sum += f32(acc) * (sa' * sw), or w4a4_term for W4A4 blocks. s[mt][h]: the activation scale (times
 *  2^-shift) of row g + 8h of m-tile mt; Sw32: this block's f16 weight scales of the warp's 32 columns. The next
 *  block's first mma restarts the accumulators at MAGIC. */
template <int MT>
__device__ __forceinline__ void tile_epilogue(const int (&acc)[MT][4][4], float (&sum)[MT][4][4],
                                              const float (&s)[MT][2], const __half* Sw32, int t, bool int8) {
#pragma unroll
  for (int nt = 0; nt < 4; nt++) {
    const float2 swf = __half22float2(*(const __half2*)(Sw32 + nt * 8 + 2 * t));
    if (int8) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float p = __fmul_rn(s[mt][e >> 1], (e & 1) ? swf.y : swf.x);
          sum[mt][nt][e] = __fadd_rn(sum[mt][nt][e], __fmul_rn(magic_to_f32(acc[mt][nt][e]), p));
        }
    } else {
      const float Cx = magic_c(swf.x), Cy = magic_c(swf.y);
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          sum[mt][nt][e] = __fadd_rn(sum[mt][nt][e], w4a4_term(acc[mt][nt][e], (e & 1) ? swf.y : swf.x,
                                                                (e & 1) ? Cy : Cx, s[mt][e >> 1]));
    }
  }
}

/** v4: the epilogue of B-block blk of this warp's 32x32 tile (Sa: [row][4] f32 per stage, Sw: [4][128] f16). */
__device__ __forceinline__ void pf_epilogue(const int (&acc)[2][PF_NT][4], float (&sum)[2][PF_NT][4], const float* Sa,
                                            const __half* Sw, int blk, int wm, int wn, int g, int t, bool int8) {
  float s[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) s[mt][h] = Sa[(wm * 32 + mt * 16 + g + 8 * h) * 4 + blk];
  tile_epilogue<2>(acc, sum, s, Sw + blk * 128 + wn * 32, t, int8);
}

template <bool S4, int B>
__global__ void __launch_bounds__(PF_THREADS, 1)
    gemm_prefill(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa, int M,
                 WDesc w, void* y, int out_f16) {
  constexpr int CPB = B / 32;
  constexpr bool S4B = S4 && B >= 64;  // W4A4 blocks on the s4 mma (a k64 mma must not straddle two B-blocks)
  extern __shared__ __align__(16) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp & 3, wn = warp >> 2;  // warp tile: rows wm*32 .. +32, cols wn*32 .. +32
  const int m0 = blockIdx.x * 128, n0 = blockIdx.y * 128;

  int acc[2][PF_NT][4];
  float sum[2][PF_NT][4];
#pragma unroll
  for (int a = 0; a < 2; a++)
#pragma unroll
    for (int b = 0; b < PF_NT; b++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[a][b][e] = MAGIC, sum[a][b][e] = 0.f;

  float sav = 0.f;
#pragma unroll
  for (int s = 0; s < PF_STAGES - 1; s++) {
    if (s < w.T) {
      pf_load<B>(w, s, smem + s * PF_STAGE, a8, a4, M, m0, n0, tid);
      pf_store_sa(smem + s * PF_STAGE, tid, pf_load_sa<B>(w, s, sa, M, m0, tid, S4B));
    }
    cp_async_commit();
  }

  for (int i = 0; i < w.T; i++) {
    cp_async_wait<PF_STAGES - 2>();
    __syncthreads();
    const int inext = i + PF_STAGES - 1;
    char* stn = smem + (inext % PF_STAGES) * PF_STAGE;
    if (inext < w.T) {
      pf_load<B>(w, inext, stn, a8, a4, M, m0, n0, tid);
      sav = pf_load_sa<B>(w, inext, sa, M, m0, tid, S4B);
    }
    cp_async_commit();

    const char* st = smem + (i % PF_STAGES) * PF_STAGE;
    const char* As = st;
    const char* Ws = st + PF_A;
    const __half* Sw = (const __half*)(Ws + PF_W);
    const float* Sa = (const float*)(Ws + PF_W + PF_SW);
    const bool int8 = i < w.T8;
    const int nblk = tile_nblocks<B>(w, i);
    const int seglen = int8 ? w.K8 : w.Kp - w.K8, kbase = int8 ? i * KT : (i - w.T8) * KT;

    uint4 wv[PF_NT];
#pragma unroll
    for (int nt = 0; nt < PF_NT; nt++) wv[nt] = *(const uint4*)(Ws + (wn * 32 + nt * 8 + g) * ROW_BYTES + 16 * t);

    if (S4B && !int8) {
      // W4A4 on mma.m16n8k64.s4: chunk pairs (c, c+1), raw int4 words for both operands
#pragma unroll
      for (int c = 0; c < 4; c += 2) {
        if (kbase + 32 * c < seglen) {
          uint32_t a[2][4];
#pragma unroll
          for (int mt = 0; mt < 2; mt++) {
            int r0 = wm * 32 + mt * 16 + g, r1 = r0 + 8;
            a[mt][0] = *(const uint32_t*)(As + r0 * 64 + swz4(r0, c) * 16 + 4 * t);
            a[mt][1] = *(const uint32_t*)(As + r1 * 64 + swz4(r1, c) * 16 + 4 * t);
            a[mt][2] = *(const uint32_t*)(As + r0 * 64 + swz4(r0, c + 1) * 16 + 4 * t);
            a[mt][3] = *(const uint32_t*)(As + r1 * 64 + swz4(r1, c + 1) * 16 + 4 * t);
          }
#pragma unroll
          for (int nt = 0; nt < PF_NT; nt++) {
            const uint32_t* x = (const uint32_t*)&wv[nt];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
              if (c % CPB == 0) mma_s4_first(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], x[c], x[c + 1]);
              else mma_s4(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], x[c], x[c + 1]);
            }
          }
        }
        if ((c + 2) % CPB == 0 && (c + 2) / CPB - 1 < nblk) pf_epilogue(acc, sum, Sa, Sw, (c + 2) / CPB - 1, wm, wn, g, t, false);
      }
    } else {
#pragma unroll
      for (int c = 0; c < 4; c++) {
        if (kbase + 32 * c < seglen) {
          uint32_t a[2][4];
#pragma unroll
          for (int mt = 0; mt < 2; mt++) {
            int r0 = wm * 32 + mt * 16 + g, r1 = r0 + 8;
            if (int8) {
              int pc = 2 * c + (t >> 1);
              uint2 v0 = *(const uint2*)(As + r0 * 128 + swz8(r0, pc) * 16 + (t & 1) * 8);
              uint2 v1 = *(const uint2*)(As + r1 * 128 + swz8(r1, pc) * 16 + (t & 1) * 8);
              a[mt][0] = v0.x, a[mt][1] = v1.x, a[mt][2] = v0.y, a[mt][3] = v1.y;
            } else {
              uint32_t v0 = *(const uint32_t*)(As + r0 * 64 + swz4(r0, c) * 16 + 4 * t);
              uint32_t v1 = *(const uint32_t*)(As + r1 * 64 + swz4(r1, c) * 16 + 4 * t);
              a[mt][0] = lo16x(v0), a[mt][1] = lo16x(v1), a[mt][2] = hi16x(v0), a[mt][3] = hi16x(v1);
            }
          }
#pragma unroll
          for (int nt = 0; nt < PF_NT; nt++) {
            uint32_t x = ((const uint32_t*)&wv[nt])[c];
            uint32_t b0 = lo16x(x), b1 = hi16x(x);
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
              if (c % CPB == 0) mma_s8_first(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
              else mma_s8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
            }
          }
        }
        if ((c + 1) % CPB == 0 && (c + 1) / CPB - 1 < nblk) pf_epilogue(acc, sum, Sa, Sw, (c + 1) / CPB - 1, wm, wn, g, t, int8);
      }
    }
    if (inext < w.T) pf_store_sa(stn, tid, sav);  // its stage was last read before this iteration's barrier
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < PF_NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int m = m0 + wm * 32 + mt * 16 + g + 8 * (e >> 1), n = n0 + wn * 32 + nt * 8 + 2 * t + (e & 1);
        if (m < M && n < w.N) {
          __half h = __float2half_rn(sum[mt][nt][e]);
          if (out_f16)
            ((__half*)y)[(size_t)m * w.N + n] = h;
          else
            ((float*)y)[(size_t)m * w.N + n] = __half2float(h);
        }
      }
}

// ---------------------------------------------------------------------------------------------------------
// v5 tiled kernel (sm_80+ s8 mma; the sm_90 path for B = 128 and M > 32): 128x128 CTA tile, 8 warps of 64x32
// (half the per-mma fragment work of v4's 32x32 warps: each weight word is converted by 2 warps, not 4),
// 4-stage cp.async ring, one B-block per k-tile (B = 128: every tile is full, no bounds logic in the loop),
// per-thread load addresses computed once. Warps whose 64 rows are all >= M skip the math (M = 64).
// Split-K when the grid is less than one wave: blockIdx.z = k-slice [z*T/KS, (z+1)*T/KS) (tile i = block i),
// each slice summed from +0 ascending; the last CTA of a tile (ticket) adds the KS partials in slice order from
// +0 (the schedule comet_gemm_w4ax_schedule reports).
constexpr int V5_THREADS = 256, V5_STAGES = 4, V5_MIN_M = 33;  // auto: v5 for M >= 33 (B = 128, sm_90+)
constexpr int V5_A = 128 * 128, V5_W = 128 * ROW_BYTES, V5_SW = 128 * 2, V5_SA = 128 * 4;
constexpr int V5_STAGE = V5_A + V5_W + V5_SW + V5_SA;  // 25,344 bytes
constexpr int V5_SMEM = V5_STAGES * V5_STAGE;          // 101,376 bytes

template <bool INT8>
__device__ __forceinline__ void v5_tile(int (&acc)[4][4][4], float (&sum)[4][4][4], const char* st, int wm, int wn,
                                        int g, int t) {
  const char* As = st;
  const char* Ws = st + V5_A;
  const __half* Sw = (const __half*)(Ws + V5_W);
  const float* Sa = (const float*)(Ws + V5_W + V5_SW);
  uint4 wv[4];
#pragma unroll
  for (int nt = 0; nt < 4; nt++) wv[nt] = *(const uint4*)(Ws + (wn * 32 + nt * 8 + g) * ROW_BYTES + 16 * t);
#pragma unroll
  for (int c = 0; c < 4; c++) {
    uint32_t a[4][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
      const int r0 = wm * 64 + mt * 16 + g, r1 = r0 + 8;
      if (INT8) {
        const int pc = 2 * c + (t >> 1);
        const uint2 v0 = *(const uint2*)(As + r0 * 128 + swz8(r0, pc) * 16 + (t & 1) * 8);
        const uint2 v1 = *(const uint2*)(As + r1 * 128 + swz8(r1, pc) * 16 + (t & 1) * 8);
        a[mt][0] = v0.x, a[mt][1] = v1.x, a[mt][2] = v0.y, a[mt][3] = v1.y;
      } else {
        const uint32_t v0 = *(const uint32_t*)(As + r0 * 64 + swz4(r0, c) * 16 + 4 * t);
        const uint32_t v1 = *(const uint32_t*)(As + r1 * 64 + swz4(r1, c) * 16 + 4 * t);
        a[mt][0] = lo16x(v0), a[mt][1] = lo16x(v1), a[mt][2] = hi16x(v0), a[mt][3] = hi16x(v1);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
      const uint32_t x = ((const uint32_t*)&wv[nt])[c];
      const uint32_t b0 = lo16x(x), b1 = hi16x(x);
#pragma unroll
      for (int mt = 0; mt < 4; mt++) {
        if (c == 0) mma_s8_first(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
        else mma_s8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
      }
    }
  }
  // the block's f32 epilogue (B = 128: one block per k-tile)
  float s[4][2];
#pragma unroll
  for (int mt = 0; mt < 4; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) s[mt][h] = Sa[wm * 64 + mt * 16 + g + 8 * h];
  tile_epilogue<4>(acc, sum, s, Sw + wn * 32, t, INT8);
}

__device__ __forceinline__ void v5_store(void* y, int out_f16, int N, int m, int n, float v) {
  __half h = __float2half_rn(v);
  if (out_f16) ((__half*)y)[(size_t)m * N + n] = h;
  else ((float*)y)[(size_t)m * N + n] = __half2float(h);
}

__global__ void __launch_bounds__(V5_THREADS, 1)
    gemm_v5(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa, int M,
            WDesc w, void* y, int out_f16, int KS, float* __restrict__ ws, int* __restrict__ tickets) {
  extern __shared__ __align__(16) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp & 1, wn = warp >> 1;  // warp tile: rows wm*64 .. +64, cols wn*32 .. +32
  const int m0 = blockIdx.x * 128, n0 = blockIdx.y * 128, ks = blockIdx.z;
  const int ta = ks * w.T / KS, nt_ = (ks + 1) * w.T / KS - ta;
  const bool active = m0 + wm * 64 < M;

  // per-thread copy plan (k-tile i: a8 column i*128, a4 byte column (i-T8)*64, weight tile i)
  const int rowb4 = (w.Kp - w.K8) / 2;
  const int8_t* a8p[4];
  const uint8_t* a4p[2];
  int a8d[4], a4d[2];
  bool a8ok[4], a4ok[2];
#pragma unroll
  for (int p = 0; p < 4; p++) {
    const int r = (tid >> 3) + 32 * p, pc = tid & 7;
    a8ok[p] = m0 + r < M;
    a8p[p] = a8ok[p] ? a8 + (size_t)(m0 + r) * w.K8 + pc * 16 : a8;
    a8d[p] = r * 128 + swz8(r, pc) * 16;
  }
#pragma unroll
  for (int p = 0; p < 2; p++) {
    const int r = (tid >> 2) + 64 * p, pc = tid & 3;
    a4ok[p] = m0 + r < M;
    a4p[p] = a4ok[p] ? a4 + (size_t)(m0 + r) * rowb4 + pc * 16 : a4;
    a4d[p] = r * 64 + swz4(r, pc) * 16;
  }
  const uint8_t* wsrc = w.q + (size_t)n0 * ROW_BYTES + tid * 16;
  const size_t wstride = (size_t)w.Npad * ROW_BYTES;
  const bool sa_ok = tid < 128 && m0 + tid < M;
  const __half* sap = sa + (size_t)(sa_ok ? m0 + tid : 0) * w.nb;

  auto load = [&](int i, char* st) {
    if (i < w.T8) {
#pragma unroll
      for (int p = 0; p < 4; p++)
        cp_async16(st + a8d[p], a8ok[p] ? (const void*)(a8p[p] + (size_t)i * KT) : (const void*)w.q, a8ok[p] ? 16 : 0);
    } else {
#pragma unroll
      for (int p = 0; p < 2; p++)
        cp_async16(st + a4d[p], a4ok[p] ? (const void*)(a4p[p] + (size_t)(i - w.T8) * (KT / 2)) : (const void*)w.q,
                   a4ok[p] ? 16 : 0);
    }
    const uint8_t* src = wsrc + i * wstride;
    cp_async16(st + V5_A + tid * 16, src, 16);
    cp_async16(st + V5_A + 4096 + tid * 16, src + 4096, 16);
    if (tid < 16) cp_async16(st + V5_A + V5_W + tid * 16, w.swT + (size_t)i * w.Npad + n0 + tid * 8, 16);
  };
  auto load_sa = [&](int i) -> float {
    return sa_ok ? __fmul_rn(__half2float(sap[i]), i < w.T8 ? 0.0625f : 0.00390625f) : 0.f;
  };
  auto store_sa = [&](char* st, float v) {
    if (tid < 128) ((float*)(st + V5_A + V5_W + V5_SW))[tid] = v;
  };

  int acc[4][4][4];
  float sum[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int b = 0; b < 4; b++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[a][b][e] = MAGIC, sum[a][b][e] = 0.f;

#pragma unroll
  for (int s = 0; s < V5_STAGES - 1; s++) {
    if (s < nt_) {
      load(ta + s, smem + s * V5_STAGE);
      store_sa(smem + s * V5_STAGE, load_sa(ta + s));
    }
    cp_async_commit();
  }
  float sav = 0.f;
  for (int li = 0; li < nt_; li++) {
    cp_async_wait<V5_STAGES - 2>();
    __syncthreads();
    const int lnext = li + V5_STAGES - 1;
    char* stn = smem + (lnext % V5_STAGES) * V5_STAGE;
    if (lnext < nt_) {
      load(ta + lnext, stn);
      sav = load_sa(ta + lnext);
    }
    cp_async_commit();
    const char* st = smem + (li % V5_STAGES) * V5_STAGE;
    if (active) {
      if (ta + li < w.T8) v5_tile<true>(acc, sum, st, wm, wn, g, t);
      else v5_tile<false>(acc, sum, st, wm, wn, g, t);
    }
    if (lnext < nt_) store_sa(stn, sav);  // its stage was last read before this iteration's barrier
  }
  cp_async_wait<0>();

  if (KS == 1) {
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int m = m0 + wm * 64 + mt * 16 + g + 8 * (e >> 1), n = n0 + wn * 32 + nt * 8 + 2 * t + (e & 1);
          if (m < M && n < w.N) v5_store(y, out_f16, w.N, m, n, sum[mt][nt][e]);
        }
    return;
  }
  // split-K: partial of this slice -> workspace [tile][ks][128][128]; the last CTA of the tile adds them
  const int tile = blockIdx.x * gridDim.y + blockIdx.y;
  float* part = ws + ((size_t)tile * KS + ks) * (128 * 128);
  if (active) {
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = wm * 64 + mt * 16 + g + 8 * h, cl = wn * 32 + nt * 8 + 2 * t;
          *(float2*)(part + r * 128 + cl) = make_float2(sum[mt][nt][2 * h], sum[mt][nt][2 * h + 1]);
        }
  }
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&tickets[tile], 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = min(128, M - m0), cols = min(128, w.N - n0);
  for (int idx = tid; idx < rows * 128; idx += V5_THREADS) {
    const int r = idx >> 7, cl = idx & 127;
    if (cl >= cols) continue;
    const float* p0 = ws + (size_t)tile * KS * (128 * 128) + idx;
    float s = 0.f;
    for (int k = 0; k < KS; k++) s = __fadd_rn(s, __ldcg(p0 + (size_t)k * (128 * 128)));
    v5_store(y, out_f16, w.N, m0 + r, n0 + cl, s);
  }
  if (tid == 0) tickets[tile] = 0;  // ready for the next launch
}

// ---------------------------------------------------------------------------------------------------------
// v6 (sm_90a, B = 128): wgmma. CTA 128x128 = 2 warpgroups of 64x128 (m64n128k32 s8, both operands from shared
// memory, K-major, 128-byte swizzle). Per k-tile (= one B-block):
//   one barrier: tiles li and li+1 have landed (5-stage cp.async ring, 4 tiles ahead; int8 activation rows land
//       directly in the swizzled layout wgmma reads) and tile li was converted in the previous iteration;
//   each warpgroup issues the 4 wgmma of tile li (accumulators MAGIC-initialized);
//   meanwhile all 256 threads convert tile li+1: int4 weights once into int8 (16*q) (and, for W4A4 tiles, the int4
//       activations the same way) into double-buffered swizzled buffers, the weight scales into f32 (sw,
//       1.5*2^23*sw) pairs; fence.proxy.async. The k order inside each k32 step: canonical for W4A8 tiles (as the
//       int8 activations), lo/hi-nibble order of each 8-channel run for W4A4 tiles (both operands alike);
//   each warpgroup waits for its wgmma and runs the block's f32 epilogue (resetting the accumulators to MAGIC); the
//       tensor cores meanwhile run the other warpgroup's wgmma. (Two accumulator sets, epilogue of tile i-1 under the wgmma of tile i, do not survive
//       ptxas 13.0: a wgmma group in flight across the loop's back edge, or a read of the other set while one is
//       in flight, makes it serialize the wgmma (C7514) or inject waits (C7517).)
// Arithmetic per element and block is the one of v4/v5 (same raw = 16*acc or 256*acc, same epilogue formulas).
// Split-K exactly as v5 (same slices, same workspace and tickets).
constexpr int V6_THREADS = 256, V6_STAGES = 5, V6_AHEAD = 4;
constexpr int V6_T8 = 128 * 128;                       // one int8 operand tile (128 rows x 128 bytes, swizzled)
constexpr int V6_FIXED = 4 * V6_T8 + 2 * 1024;         // B8[2], A8[2], SWC[2] (padded): 67,584 bytes
constexpr int V6_STAGE = 25 * 1024;                    // A 16 KB | W int4 8 KB | Sw f16 | Sa f32 (1024-aligned)
constexpr int V6_SMEM = 1024 + V6_FIXED + V6_STAGES * V6_STAGE;  // + alignment slack: 196,608 bytes

/** wgmma m64n128k32 s8.s8 -> s32, A and B from shared memory (descriptors), D += A*B (scale-d = 1: the accumulators
 *  start at MAGIC). */
__device__ __forceinline__ void wgmma_s8_ss(int (&d)[64], uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 1;\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "l"(da), "l"(db));
#else
  __trap();
#endif
}

__device__ __forceinline__ uint64_t v6_desc(uint32_t saddr) {
  return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
__device__ __forceinline__ void v6_fence_acc(int (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}

/** The f32 epilogue of one tile (one B-block) from accumulator set d (this warp's rows r0 = row g, r0 + 8). */
template <bool INT8>
__device__ __forceinline__ void v6_epilogue(int (&d)[64], float (&sum)[64], const float* Sa, const float* swc, int rw,
                                            int g, int t) {
  const float s0 = Sa[rw + g], s1 = Sa[rw + g + 8];
#pragma unroll
  for (int j = 0; j < 16; j++) {
    const float4 q = *(const float4*)(swc + 4 * (4 * j + t));  // (sw, C) of columns 8j+2t, 8j+2t+1
    if (INT8) {
      const float p00 = __fmul_rn(s0, q.x), p01 = __fmul_rn(s0, q.z), p10 = __fmul_rn(s1, q.x), p11 = __fmul_rn(s1, q.z);
      sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], __fmul_rn(magic_to_f32(d[4 * j + 0]), p00));
      sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], __fmul_rn(magic_to_f32(d[4 * j + 1]), p01));
      sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], __fmul_rn(magic_to_f32(d[4 * j + 2]), p10));
      sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], __fmul_rn(magic_to_f32(d[4 * j + 3]), p11));
    } else {
      sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], w4a4_term(d[4 * j + 0], q.x, q.y, s0));
      sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], w4a4_term(d[4 * j + 1], q.z, q.w, s0));
      sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], w4a4_term(d[4 * j + 2], q.x, q.y, s1));
      sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], w4a4_term(d[4 * j + 3], q.z, q.w, s1));
    }
  }
#pragma unroll
  for (int i = 0; i < 64; i++) d[i] = MAGIC;
}

template <bool OVL>
__global__ void __launch_bounds__(V6_THREADS, 1)
    gemm_v6(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa, int M,
            WDesc w, void* y, int out_f16, int KS, float* __restrict__ ws, int* __restrict__ tickets) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) char smem_raw[];
  char* smem = (char*)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  char* B8 = smem;                                   // [2][128 rows n][128 bytes], swizzled
  char* A8 = smem + 2 * V6_T8;                       // [2][128 rows m][128 bytes], swizzled (W4A4 tiles)
  float* SWC = (float*)(smem + 4 * V6_T8);           // [2][128][2] (each padded to 1 KB)
  char* stages = smem + V6_FIXED;                    // [5][V6_STAGE]: A | W int4 | Sw f16 | Sa f32
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wg = warp >> 2, rw = wg * 64 + (warp & 3) * 16;  // this warp's first row in the tile
  const int m0 = blockIdx.x * 128, n0 = blockIdx.y * 128, ks = blockIdx.z;
  const int ta = ks * w.T / KS, nt_ = (ks + 1) * w.T / KS - ta;
  const bool active = m0 + wg * 64 < M;  // rows of this warpgroup exist (M = 64: the second one idles)

  const int rowb4 = (w.Kp - w.K8) / 2;
  const uint8_t* wsrc = w.q + (size_t)n0 * ROW_BYTES + tid * 16;
  const size_t wstride = (size_t)w.Npad * ROW_BYTES;
  const bool sa_ok = tid < 128 && m0 + tid < M;
  const __half* sap = sa + (size_t)(sa_ok ? m0 + tid : 0) * w.nb;

  auto stage = [&](int li) { return stages + (li % V6_STAGES) * V6_STAGE; };
  // cp.async of k-tile i into stage st: int8 activation rows straight into the 128-byte-swizzled layout wgmma
  // reads; int4 activation rows and int4 weights with 16-byte swizzles that keep the conversion reads conflict-free
  auto load = [&](int i, char* st) {
    if (i < w.T8) {
#pragma unroll
      for (int p = 0; p < 4; p++) {
        const int r = (tid >> 3) + 32 * p, pc = tid & 7;
        const bool ok = m0 + r < M;
        cp_async16(st + r * 128 + ((pc ^ (r & 7)) * 16),
                   ok ? (const void*)(a8 + (size_t)(m0 + r) * w.K8 + (size_t)i * KT + pc * 16) : (const void*)w.q, ok ? 16 : 0);
      }
    } else {
#pragma unroll
      for (int p = 0; p < 2; p++) {
        const int r = (tid >> 2) + 64 * p, pc = tid & 3;
        const bool ok = m0 + r < M;
        cp_async16(st + r * 64 + swz4(r, pc) * 16,
                   ok ? (const void*)(a4 + (size_t)(m0 + r) * rowb4 + (size_t)(i - w.T8) * (KT / 2) + pc * 16)
                      : (const void*)w.q, ok ? 16 : 0);
      }
    }
    const uint8_t* src = wsrc + i * wstride;
#pragma unroll
    for (int p = 0; p < 2; p++) {
      const int piece = tid + 256 * p, n = piece >> 2, tt = piece & 3;
      cp_async16(st + V5_A + n * ROW_BYTES + (tt ^ ((n >> 1) & 3)) * 16, src + 4096 * p, 16);
    }
    if (tid < 16) cp_async16(st + V5_A + V5_W + tid * 16, w.swT + (size_t)i * w.Npad + n0 + tid * 8, 16);
  };
  auto load_sa = [&](int i) -> float {
    return sa_ok ? __fmul_rn(__half2float(sap[i]), i < w.T8 ? 0.0625f : 0.00390625f) : 0.f;
  };
  auto store_sa = [&](char* st, float v) {
    if (tid < 128) ((float*)(st + V5_A + V5_W + V5_SW))[tid] = v;
  };
  // the conversions of the tile in stage st into buffer set b
  auto convert = [&](const char* st, int b, bool int8) {
    {  // weights: row n = tid/2, k32 steps c = 2h, 2h+1; word (tt, c) = 8-channel run tt of step c
      const int n = tid >> 1, h = tid & 1;
      uint2 v[4];
#pragma unroll
      for (int tt = 0; tt < 4; tt++)
        v[tt] = *(const uint2*)(st + V5_A + n * ROW_BYTES + ((tt ^ ((n >> 1) & 3)) * 16) + 8 * h);
      char* dst = B8 + b * V6_T8 + n * 128;
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int c = 2 * h + j;
        const uint32_t x0 = j ? v[0].y : v[0].x, x1 = j ? v[1].y : v[1].x, x2 = j ? v[2].y : v[2].x,
                       x3 = j ? v[3].y : v[3].x;
        uint4 u0, u1;
        if (int8) {  // canonical order: run tt = channels 8tt..8tt+7 = lo16x (8tt..+3), hi16x (8tt+4..+7)
          u0 = make_uint4(lo16x(x0), hi16x(x0), lo16x(x1), hi16x(x1));
          u1 = make_uint4(lo16x(x2), hi16x(x2), lo16x(x3), hi16x(x3));
        } else {  // lo/hi order: positions 4tt+j = channel 8tt+2j, 16+4tt+j = channel 8tt+2j+1
          u0 = make_uint4(lo16x(x0), lo16x(x1), lo16x(x2), lo16x(x3));
          u1 = make_uint4(hi16x(x0), hi16x(x1), hi16x(x2), hi16x(x3));
        }
        *(uint4*)(dst + (((2 * c) ^ (n & 7)) * 16)) = u0;
        *(uint4*)(dst + (((2 * c + 1) ^ (n & 7)) * 16)) = u1;
      }
    }
    if (!int8) {  // int4 activations, the same lo/hi order: row r, step c (one 16-byte piece = 4 runs)
#pragma unroll
      for (int p = 0; p < 2; p++) {
        const int task = tid + 256 * p, r = task >> 2, c = task & 3;
        const uint4 x = *(const uint4*)(st + r * 64 + swz4(r, c) * 16);
        char* dst = A8 + b * V6_T8 + r * 128;
        *(uint4*)(dst + (((2 * c) ^ (r & 7)) * 16)) = make_uint4(lo16x(x.x), lo16x(x.y), lo16x(x.z), lo16x(x.w));
        *(uint4*)(dst + (((2 * c + 1) ^ (r & 7)) * 16)) = make_uint4(hi16x(x.x), hi16x(x.y), hi16x(x.z), hi16x(x.w));
      }
    }
    if (tid < 64) {
      const float2 s = __half22float2(*(const __half2*)(st + V5_A + V5_W + 4 * tid));
      *(float4*)(SWC + b * 256 + 4 * tid) = make_float4(s.x, magic_c(s.x), s.y, magic_c(s.y));
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  };

  int acc[64];
  float sum[64];
#pragma unroll
  for (int i = 0; i < 64; i++) acc[i] = MAGIC, sum[i] = 0.f;

#pragma unroll
  for (int s = 0; s < V6_AHEAD; s++) {
    if (s < nt_) {
      load(ta + s, stage(s));
      store_sa(stage(s), load_sa(ta + s));
    }
    cp_async_commit();
  }
  const uint32_t b8addr = (uint32_t)__cvta_generic_to_shared(B8), a8addr = (uint32_t)__cvta_generic_to_shared(A8);

  if constexpr (OVL) {  // M > 64: the next tile's conversion overlaps this tile's wgmma
    // tile 0's conversion; then per tile li: B1 (tile li+1 landed, tile li converted and fenced), wgmma li issued,
    // tile li+1 converted while the tensor cores run, wait, epilogue li
    if (nt_ > 0) {
      cp_async_wait<V6_AHEAD - 1>();
      __syncthreads();
      convert(stage(0), 0, ta < w.T8);
    }
    for (int li = 0; li < nt_; li++) {
      cp_async_wait<V6_AHEAD - 2>();
      __syncthreads();  // B1: tiles li, li+1 landed; tile li converted; everyone is done with tile li-1
      const int lnext = li + V6_AHEAD;
      float sav = 0.f;
      if (lnext < nt_) {
        load(ta + lnext, stage(lnext));
        sav = load_sa(ta + lnext);
      }
      cp_async_commit();
      const char* st = stage(li);
      const bool int8 = ta + li < w.T8;
      const uint32_t abase = (int8 ? (uint32_t)__cvta_generic_to_shared(st) : a8addr + (li & 1) * V6_T8) + wg * 64 * 128;
      const uint32_t bbase = b8addr + (li & 1) * V6_T8;
      {
        v6_fence_acc(acc);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int c = 0; c < 4; c++) wgmma_s8_ss(acc, v6_desc(abase + 32 * c), v6_desc(bbase + 32 * c));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      }
      // the next tile's conversion into the other buffers (last read by wgmma li-1, which has completed)
      if (li + 1 < nt_) convert(stage(li + 1), (li + 1) & 1, ta + li + 1 < w.T8);
      {  // (no 'if (active)' here: a wgmma in flight across a branch makes ptxas serialize it, C7518)
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        v6_fence_acc(acc);
        // the block's epilogue; the other warpgroup's wgmma keep the tensor cores busy meanwhile
        const float* Sa = (const float*)(st + V5_A + V5_W + V5_SW);
        const float* swc = SWC + (li & 1) * 256;
        if (int8) v6_epilogue<true>(acc, sum, Sa, swc, rw, g, t);
        else v6_epilogue<false>(acc, sum, Sa, swc, rw, g, t);
      }
      if (lnext < nt_) store_sa(stage(lnext), sav);
    }
  } else {  // M <= 64: the second warpgroup idles; convert, barrier, wgmma + epilogue (warpgroup 0 only)
    for (int li = 0; li < nt_; li++) {
      cp_async_wait<V6_AHEAD - 1>();
      __syncthreads();  // B1: tile li landed; everyone is done with tile li-1 (its stage is refilled now) and li-2
      const int lnext = li + V6_AHEAD;
      float sav = 0.f;
      if (lnext < nt_) {
        load(ta + lnext, stage(lnext));
        sav = load_sa(ta + lnext);
      }
      cp_async_commit();
      const char* st = stage(li);
      const bool int8 = ta + li < w.T8;
      convert(st, li & 1, int8);
      __syncthreads();  // B2: the converted operands and scales are written (and fenced for the async proxy)
      const uint32_t abase = (int8 ? (uint32_t)__cvta_generic_to_shared(st) : a8addr + (li & 1) * V6_T8) + wg * 64 * 128;
      const uint32_t bbase = b8addr + (li & 1) * V6_T8;
      if (active) {  // warpgroup-uniform
        v6_fence_acc(acc);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int c = 0; c < 4; c++) wgmma_s8_ss(acc, v6_desc(abase + 32 * c), v6_desc(bbase + 32 * c));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        v6_fence_acc(acc);
        // the block's epilogue; the other warpgroup's wgmma keep the tensor cores busy meanwhile
        const float* Sa = (const float*)(st + V5_A + V5_W + V5_SW);
        const float* swc = SWC + (li & 1) * 256;
        if (int8) v6_epilogue<true>(acc, sum, Sa, swc, rw, g, t);
        else v6_epilogue<false>(acc, sum, Sa, swc, rw, g, t);
      }
      if (lnext < nt_) store_sa(stage(lnext), sav);
    }
  }
  cp_async_wait<0>();

  // out: row rw+g (+8), columns 8j + 2t (+1)
  if (KS == 1) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = m0 + rw + g + 8 * (e >> 1), n = n0 + 8 * j + 2 * t + (e & 1);
        if (m < M && n < w.N) v5_store(y, out_f16, w.N, m, n, sum[4 * j + e]);
      }
    return;
  }
  const int tile = blockIdx.x * gridDim.y + blockIdx.y;
  float* part = ws + ((size_t)tile * KS + ks) * (128 * 128);
  if (active) {
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        *(float2*)(part + (rw + g + 8 * h) * 128 + 8 * j + 2 * t) = make_float2(sum[4 * j + 2 * h], sum[4 * j + 2 * h + 1]);
  }
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&tickets[tile], 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = min(128, M - m0), cols = min(128, w.N - n0);
  for (int idx = tid; idx < rows * 128; idx += V6_THREADS) {
    const int r = idx >> 7, cl = idx & 127;
    if (cl >= cols) continue;
    const float* p0 = ws + (size_t)tile * KS * (128 * 128) + idx;
    float s = 0.f;
    for (int k = 0; k < KS; k++) s = __fadd_rn(s, __ldcg(p0 + (size_t)k * (128 * 128)));
    v5_store(y, out_f16, w.N, m0 + r, n0 + cl, s);
  }
  if (tid == 0) tickets[tile] = 0;
#else
  __trap();
#endif
}

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

/** 1 decode, 2 prefill s8 (v4), 3 prefill s4 (sm_80 path), 4 v5 mma.sync tiles, 5 v6 wgmma tiles (sm_90 only).
 *  4 and 5 need B = 128 (other B run variant 2); 5 on a device other than sm_90 runs 4. Auto picks v5, not v6: on
 *  the H100 (2026-11-24) v5 measured 0-11% faster than v6 at every M >= 64 point compared (NOTES-gemm.md).
 *  M = 33..64 with B = 128: the decode kernel for weights up to N = 10240 x Kp = 8192 (0.74-0.97x v5's time on
 *  every such shape measured: few 128x128 output tiles leave v5's grid part-empty), v5 above (N = 14336+ or
 *  K = 14336+: v5 0.74-0.92x the decode kernel's time). */
static int pick_variant(int M, int N, int Kp, int B) {
  int v = g_force;
  if (!v) {
    if (M <= 16) v = 1;
    else if (device_major() == 9 && B == 128) v = 6;
    else if (M < V5_MIN_M) v = 1;
    else if (device_major() >= 9) v = B == 128 ? (M <= 64 && N <= 10240 && Kp <= 8192 ? 1 : 4) : M <= 64 ? 1 : 2;
    else v = M <= 64 ? 1 : 3;
  }
  if ((v == 5 || v == 6) && device_major() != 9) v = 4;
  if ((v == 4 || v == 5 || v == 6) && B != 128) v = 2;
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

// v5 split-K: at most one wave of CTAs (tiles * KS <= SMs), so a fixed workspace of SMs 128x128 f32 tiles and
// SMs tickets serves every shape; allocated once by comet_w4_create.
static float* g_ws5 = nullptr;
static int* g_tickets5 = nullptr;

/** v5 k-slices: only when the output tiles are less than one wave; >= 4 k-tiles per slice. */
static int v5_splits(const WDesc& d, int M) {
  const int tiles = (M + 127) / 128 * (d.Npad / 128);
  if (tiles >= num_sms()) return 1;
  int ks = std::min(num_sms() / tiles, d.T / 4);
  return std::max(ks, 1);
}

static cudaError_t reserve_workspace(const WDesc& d) {
  if (!g_ws5) {
    cudaError_t e = cudaMalloc(&g_ws5, (size_t)num_sms() * 128 * 128 * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc(&g_tickets5, num_sms() * sizeof(int));
    if (e == cudaSuccess) e = cudaMemset(g_tickets5, 0, num_sms() * sizeof(int));
    if (e != cudaSuccess) {
      cudaFree(g_ws5), cudaFree(g_tickets5);
      g_ws5 = nullptr, g_tickets5 = nullptr;
      return e;
    }
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
  gemm_decode<TT, B><<<grid, DEC_THREADS, p.smem, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, p.KS, g_ws, g_tickets);
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
      gr.w[i] = gr.w[0], gr.y[i] = nullptr, gr.ws[i] = nullptr, gr.tickets[i] = nullptr, gr.KS[i] = 1;
      gr.cta0[i] = INT_MAX;
      continue;
    }
    const WDesc& d = ws[i]->d;
    const DecPlan p = decode_plan(d, M);
    gr.w[i] = d, gr.y[i] = ys[i], gr.KS[i] = p.KS, gr.cta0[i] = ctas;
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
  gemm_decode_group<TT, B><<<ctas, DEC_THREADS, smem, s>>>(a8, a4, (const __half*)sa, M, gr, out_f16);
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
  gemm_prefill<S4, B><<<grid, PF_THREADS, PF_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16);
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

static cudaError_t launch_v5(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d, void* y,
                             int out_f16, cudaStream_t s) {
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_v5, cudaFuncAttributeMaxDynamicSharedMemorySize, V5_SMEM);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  const int KS = v5_splits(d, M);
  if (KS > 1 && !g_ws5) return cudaErrorInvalidValue;  // cannot happen: comet_w4_create reserved it
  dim3 grid((M + 127) / 128, d.Npad / 128, KS);
  gemm_v5<<<grid, V5_THREADS, V5_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  return cudaSuccess;
}

static cudaError_t launch_v6(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d, void* y,
                             int out_f16, cudaStream_t s) {
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_v6<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, V6_SMEM);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(gemm_v6<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, V6_SMEM);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  const int KS = v5_splits(d, M);
  if (KS > 1 && !g_ws5) return cudaErrorInvalidValue;  // cannot happen: comet_w4_create reserved it
  dim3 grid((M + 127) / 128, d.Npad / 128, KS);
  if (M > 64)
    gemm_v6<true><<<grid, V6_THREADS, V6_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  else
    gemm_v6<false><<<grid, V6_THREADS, V6_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  return cudaSuccess;
}

extern "C" int comet_gemm_w4ax(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                               const comet_w4_weight* w, void* y, int out_f16, void* stream) {
  if (!w || !y || !sa || M < 0) return set_err(-1, "gemm_w4ax: %s", "bad argument");
  if (M == 0) return 0;
  if ((w->d.K8 > 0 && !a8) || (w->d.K8 < w->d.Kp && !a4)) return set_err(-1, "gemm_w4ax: %s", "missing activations");
  if (((uintptr_t)a8 | (uintptr_t)a4) & 15)  // cp.async copies 16-byte pieces of the activation rows
    return set_err(-1, "gemm_w4ax: %s", "a8 and a4 must be 16-byte aligned");
  if ((uintptr_t)sa & 3)  // v7 copies the activation scales in 4-byte words
    return set_err(-1, "gemm_w4ax: %s", "sa must be 4-byte aligned");
  cudaStream_t s = (cudaStream_t)stream;
  int v = pick_variant(M, w->d.N, w->d.Kp, w->d.B);
  if (v == 6) {
    CUDA_TRY(launch_v7(a8, a4, sa, M, w->d, y, out_f16, num_sms(), g_ws5, g_tickets5, s));
  } else if (v == 5) {
    CUDA_TRY(launch_v6(a8, a4, sa, M, w->d, y, out_f16, s));
  } else if (v == 4) {
    CUDA_TRY(launch_v5(a8, a4, sa, M, w->d, y, out_f16, s));
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
  // run one launch per weight.
  bool group = n > 1 && g_group_mode != 2 && M <= 64;
  for (int i = 0; i < n && group; i++) group = pick_variant(M, ws[i]->d.N, d0.Kp, d0.B) == 1;
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
      const int ctas = d.Npad / 128 * p.KS, wave = p.occ * num_sms();
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
  for (int i = 0; i < n; i++)
    if (int e = comet_gemm_w4ax(a8, a4, sa, M, ws[i], ys[i], out_f16, stream)) return e;
  return 0;
}

extern "C" int comet_gemm_w4ax_schedule(int M, int N, int Kp, int B, int K8, int* ranges_host, int max_splits) {
  if (int e = check_shape(N, Kp, B, K8)) return e;
  if (M <= 0 || !ranges_host) return set_err(-1, "gemm_w4ax: %s", "bad argument");
  WDesc d = make_desc(N, Kp, B, K8);
  int KS = 1;
  const int v = pick_variant(M, N, Kp, B);
  if (v == 1 && M <= 64) KS = decode_plan(d, M).KS;
  else if (v == 4 || v == 5) KS = v5_splits(d, M);
  else if (v == 6) KS = v7_splits(d, M, num_sms());
  if (KS > max_splits) return set_err(-2, "gemm_w4ax: %s", "max_splits too small");
  for (int k = 0; k < KS; k++) {
    ranges_host[2 * k] = tile_block0(d, k * d.T / KS);
    ranges_host[2 * k + 1] = tile_block0(d, (k + 1) * d.T / KS);
  }
  return KS;
}

extern "C" int comet_gemm_w4ax_force(int variant) {
  if (variant < 0 || variant > 6) return set_err(-1, "gemm_w4ax: %s", "variant must be 0..6");
  g_force = variant;
  return 0;
}

extern "C" int comet_gemm_w4ax_group_mode(int mode) {
  if (mode < 0 || mode > 2) return set_err(-1, "gemm_w4ax: %s", "group mode must be 0..2");
  g_group_mode = mode;
  return 0;
}
