// W4Ax GEMM, decode family (M <= 16; M <= 64 for B = 32 / 64): GEMV-style mma.sync kernels, solo and grouped.
// Included once by gemm_w4ax.cu (one translation unit: its launchers instantiate these templates). Lab notes:
// cuda/NOTES-gemm.md. Layout and helpers: gemm_w4ax.cuh.
#pragma once
#include "gemm_w4ax.cuh"

namespace comet_gemm {

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
  int KS, tiles_max, chunk, smem, occ;  // chunk: k-tiles per shared-memory fill; occ: CTAs per SM at this smem
};
static int dec_smem(int MT, int B, int tiles) {
  int blocks = tiles * (KT / B);
  return tiles * MT * A8_ROW + blocks * (MT * 4 + 128 * 2);
}
// CTAs per SM each M class is compiled for (__launch_bounds__). M <= 8 was 4 (64 registers) until the lean B = 128 loop
// (below): at 64 registers its ring is copied every k-tile; at 3 (85 registers) the solo and grouped kernels hold it
// without spills, and 8B gate_up at M = 1 ran 22.7 us against 29.9 at 4 (H200, 2026-12-03, same call).
constexpr int dec_min_blocks_rt(int TT) { return TT <= 2 ? 3 : TT == 4 ? 2 : 1; }
constexpr int dec_tt(int M) { return M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8; }

/** THE W4Ax schedule (DESIGN 3.4, comet_gemm_w4ax_schedule): the number of k-tile-aligned K slices, slice k = k-tiles
 *  [k*T/KS, (k+1)*T/KS). A function of the weight's shape and the SM count only, never of M, so a row's output bits do
 *  not depend on how many tokens share the GEMM (a request alone or batched, prefix-cache hit or not). Every kernel
 *  (decode, v7, v4, sm_80) sums each slice from +0 and adds the slices in order from +0. The rule: the decode kernel's
 *  one-wave split at 9 <= M <= 16 (3 CTAs of 128 rows per SM: its register-bound occupancy), i.e. the most slices for
 *  which all CTAs are resident at once, and at least as many as its shared-memory budget needs, so both decode classes
 *  of sm_90 run a slice in one pass and in one wave. (M <= 8 had up to 4 CTAs per SM until 2026-12-03, so filled ~3/4 of its slots: on
 *  the H200 (2026-12-02, bench/results/gemm-2026-12-02-h200-s4-steps.md) M = 1 ran 0.96-1.07x its time under the
 *  M <= 8 wave on 7 of the 8 LLaMA shapes and 1.15x on L3-70B down, while the M <= 8 rule ran M = 16 up to 1.38x
 *  slower (8B qkv) and left 8B gate_up two slices (one now: no in-CTA total in v7); now M <= 8 has 3 as well.) */
static int schedule_slices(const WDesc& w) {
  const int ntile = w.Npad / 128;
  int best = 0;
  for (int ks = 1; ks <= w.T; ks++) {
    if (dec_smem(16, w.B, (w.T + ks - 1) / ks) > DEC_SMEM_BUDGET) continue;
    int occ = std::min(dec_min_blocks_rt(2), 227 * 1024 / (dec_smem(16, w.B, (w.T + ks - 1) / ks) + 1024));
    if (best && ntile * ks > occ * sm_count()) break;
    best = ks;
    if (ntile * ks > occ * sm_count()) break;  // even the first fitting split is more than one wave
  }
  return best ? best : w.T;
}

/** The decode launch for M tokens: the schedule's slices (one CTA per n-tile and slice); a slice whose activations do
 *  not fit the shared-memory budget at this M class runs in chunks of `chunk` k-tiles (the running sums stay in
 *  registers across chunks, so the bits are those of one pass). */
static DecPlan decode_plan(const WDesc& w, int M) {
  const int TT = dec_tt(M), MT = 8 * TT, KS = schedule_slices(w);
  int tmax = 0;
  for (int k = 0; k < KS; k++) tmax = std::max(tmax, (k + 1) * w.T / KS - k * w.T / KS);
  int nch = 1;  // chunks per slice, balanced
  while ((tmax + nch - 1) / nch > 1 && dec_smem(MT, w.B, (tmax + nch - 1) / nch) > DEC_SMEM_BUDGET) nch++;
  const int chunk = (tmax + nch - 1) / nch;
  const int smem = dec_smem(MT, w.B, chunk);
  return DecPlan{KS, tmax, chunk, smem, std::min(dec_min_blocks_rt(TT), 227 * 1024 / (smem + 1024))};
}

template <int TT>
constexpr int dec_min_blocks() { return dec_min_blocks_rt(TT); }

/** The f32 epilogue of one B-block (DESIGN 3.4) for the TT token tiles of a warp's 16 rows: sum += t_b, with sw0 / sw1
 *  the weight scales of rows g / g + 8 and Sa the block's [MT] activation scales (times 2^-4 / 2^-8). Fragment:
 *  acc[j][0]: (row g, token 8j + 2t), [1]: (g, 8j + 2t + 1), [2]: (g + 8, 8j + 2t), [3]: (g + 8, 8j + 2t + 1). */
template <int TT>
__device__ __forceinline__ void block_epilogue(float (&sum)[TT][4], const int (&acc)[TT][4], const float* Sa, int t,
                                               float sw0, float sw1, bool int8) {
  if (int8) {
#pragma unroll
    for (int j = 0; j < TT; j++) {
      const float2 s = *(const float2*)(Sa + j * 8 + 2 * t);
      const float p[4] = {__fmul_rn(s.x, sw0), __fmul_rn(s.y, sw0), __fmul_rn(s.x, sw1), __fmul_rn(s.y, sw1)};
#pragma unroll
      for (int e = 0; e < 4; e++) sum[j][e] = __fadd_rn(sum[j][e], __fmul_rn(magic_to_f32(acc[j][e]), p[e]));
    }
  } else {
    const float C0 = magic_c(sw0), C1 = magic_c(sw1);
#pragma unroll
    for (int j = 0; j < TT; j++) {
      const float2 s = *(const float2*)(Sa + j * 8 + 2 * t);
      sum[j][0] = __fadd_rn(sum[j][0], w4a4_term(acc[j][0], sw0, C0, s.x));
      sum[j][1] = __fadd_rn(sum[j][1], w4a4_term(acc[j][1], sw0, C0, s.y));
      sum[j][2] = __fadd_rn(sum[j][2], w4a4_term(acc[j][2], sw1, C1, s.x));
      sum[j][3] = __fadd_rn(sum[j][3], w4a4_term(acc[j][3], sw1, C1, s.y));
    }
  }
}

/** One CTA of the decode kernel: n-tile `ntile` (rows [128*ntile, +128) of W) and k-slice ks of KS of one problem.
 *  ws: this problem's workspace [KS][M][Npad] f32; tickets: its [Npad/128] counters. Shared by the single-weight
 *  kernel (gemm_decode: ntile = blockIdx.x, ks = blockIdx.y) and the grouped one (gemm_decode_group), so a problem
 *  computes the same partial sums, in the same order, whichever launch it is in. */
template <int TT, int B, int DEPTH = DEC_DEPTH>
__device__ __forceinline__ void decode_cta(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4,
                                           const __half* __restrict__ sa, int M, const WDesc& w, void* y, int out_f16,
                                           int KS, int chunk, int ntile, int ks, float* __restrict__ ws,
                                           int* __restrict__ tickets) {
  constexpr int MT = TT * 8, CPB = B / 32;
  extern __shared__ __align__(16) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int ncta0 = ntile * 128, n0 = ncta0 + warp * 16;
  const int slice_a = ks * w.T / KS, slice_b = (ks + 1) * w.T / KS;  // this CTA's slice: k-tiles [slice_a, slice_b)

  int acc[TT][4];
  float sum[TT][4];

  // the slice in chunks of at most `chunk` k-tiles (one chunk unless its activations overflow shared memory; always one
  // at TT <= 2, the classes the schedule is sized for: no loop there. At 3 CTAs per SM the solo kernels do not spill;
  // the grouped one at 9 <= M <= 16 spills 132 B on sm_90a and measured no slower: 8B q/k/v at M = 16 22.2 us either
  // way, H200 2026-12-03)
  auto run_chunk = [&](const int ta, const int nt) {
  const int tb = ta + nt;
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
  // weights depend on no kernel: the ring above is in flight while the previous kernel finishes (launch.cuh, PDL);
  // the activations, scales, workspace and tickets below are another kernel's, so wait for it here
  pdl_wait();

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
  if (ta == slice_a) {  // here, not before the prologue: fewer live registers under the weight ring at TT = 1
#pragma unroll
    for (int j = 0; j < TT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = MAGIC, sum[j][e] = 0.f;
  }

  if constexpr (B == 128 && TT <= 2) {
  // B = 128 at M <= 16 (every FMPQ model's decode): a k-tile is exactly one block (K8 and Kp are multiples of B), so
  // a tile is four k32 MMAs and one epilogue, INT8 or INT4 by a warp-uniform test, with no per-c or per-block
  // conditions; the ring slot's refill is written after its words are converted. The general loop below ran 206
  // instructions per warp and k-tile on 8B gate_up at M = 1, this one 138 (ncu, 2026-12-03; ptxas still copies
  // part of the ring around the predicated refill: cuda/NOTES-gemm.md, "decode, session 10"): with one CTA of 128
  // rows per ~1.7 SMs the decode GEMM is bound by its instruction stream and its loads' latency, not by DRAM.
  for (int base = 0; base < nt; base += DEPTH) {
#pragma unroll
    for (int u = 0; u < DEPTH; u++) {
      const int li = base + u, i = ta + li;
      if (li < nt) {
        const uint32_t* wa_ = (const uint32_t*)&ra[u];
        const uint32_t* wb_ = (const uint32_t*)&rb[u];
        uint32_t A[4][4];
#pragma unroll
        for (int c = 0; c < 4; c++) A[c][0] = lo16x(wa_[c]), A[c][1] = lo16x(wb_[c]), A[c][2] = hi16x(wa_[c]), A[c][3] = hi16x(wb_[c]);
        if (li + DEPTH < nt)
          ra[u] = ldg_stream(wq + (i + DEPTH) * tstride), rb[u] = ldg_stream(wq + (i + DEPTH) * tstride + row8);
        const int bl = i - bA;  // B = 128: block i is tile i
        const char* At = Act + li * MT * A8_ROW;
        const __half2 swp = __halves2half2(Sw[bl * 128 + warp * 16 + g], Sw[bl * 128 + warp * 16 + g + 8]);
        const float sw0 = __low2float(swp), sw1 = __high2float(swp);
        if (i < w.T8) {
#pragma unroll
          for (int c = 0; c < 4; c++)
#pragma unroll
            for (int j = 0; j < TT; j++) {
              const uint2 v = *(const uint2*)(At + (j * 8 + g) * A8_ROW + 32 * c + 8 * t);
              if (c == 0) mma_s8_first(acc[j], A[c][0], A[c][1], A[c][2], A[c][3], v.x, v.y);
              else mma_s8(acc[j], A[c][0], A[c][1], A[c][2], A[c][3], v.x, v.y);
            }
          block_epilogue<TT>(sum, acc, Sa + bl * MT, t, sw0, sw1, true);
        } else {
#pragma unroll
          for (int c = 0; c < 4; c++)
#pragma unroll
            for (int j = 0; j < TT; j++) {
              const uint32_t v = *(const uint32_t*)(At + (j * 8 + g) * A4_ROW + 16 * c + 4 * t);
              if (c == 0) mma_s8_first(acc[j], A[c][0], A[c][1], A[c][2], A[c][3], lo16x(v), hi16x(v));
              else mma_s8(acc[j], A[c][0], A[c][1], A[c][2], A[c][3], lo16x(v), hi16x(v));
            }
          block_epilogue<TT>(sum, acc, Sa + bl * MT, t, sw0, sw1, false);
        }
      }
    }
  }
  } else {
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
            block_epilogue<TT>(sum, acc, Sa + bl * MT, t, sw0, sw1, int8);
          }
        }
      }
    }
  }
  }
  };
  if (TT <= 2) {
    run_chunk(slice_a, slice_b - slice_a);
  } else {
    for (int ta = slice_a; ta < slice_b; ta += chunk) {
      if (ta != slice_a) __syncthreads();  // every thread is done with the previous chunk's shared memory
      run_chunk(ta, min(chunk, slice_b - ta));
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
    const float s = sum_slices(ws + (size_t)tok * w.Npad + n, (size_t)M * w.Npad, KS);
    __half h = __float2half_rn(s);
    if (out_f16) ((__half*)y)[(size_t)tok * w.N + n] = h;
    else ((float*)y)[(size_t)tok * w.N + n] = __half2float(h);
  }
  if (tid == 0) tickets[ntile] = 0;  // ready for the next launch
}

template <int TT, int B>
__global__ void __launch_bounds__(DEC_THREADS, dec_min_blocks<TT>()) gemm_decode(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4,
                                                           const __half* __restrict__ sa, int M, WDesc w, void* y,
                                                           int out_f16, int KS, int chunk, float* __restrict__ ws,
                                                           int* __restrict__ tickets) {
  pdl_trigger();  // launch.cuh; decode_cta waits after its first weight loads
  decode_cta<TT, B>(a8, a4, sa, M, w, y, out_f16, KS, chunk, blockIdx.x, blockIdx.y, ws, tickets);
}

// Grouped decode (comet_gemm_w4ax_many): up to GROUP_MAX weights of the same K layout against one activation in
// ONE launch. The 1-D grid is the concatenation of each problem's solo grid (n-tile fastest, then k-slice, as
// blockIdx.x / .y of the solo launch); each problem keeps its solo split (decode_plan), so its outputs and the
// reported schedule are those of comet_gemm_w4ax. Workspaces and tickets are disjoint regions, one per problem.
// The problem's descriptor is picked at run time, so it lives in registers rather than the parameter bank (at the
// former 64-register cap of M <= 8, 4 CTAs per SM, ptxas spilled inside the k-loop; at 3 CTAs per SM, 85 registers,
// the lean B = 128 loop has no spills: 8B q/k/v at M = 1 in one launch 11.5 us, H200 2026-12-03).
constexpr int GROUP_MAX = 4;
struct DecGroup {
  WDesc w[GROUP_MAX];
  void* y[GROUP_MAX];
  float* ws[GROUP_MAX];
  int* tickets[GROUP_MAX];
  int KS[GROUP_MAX];
  int chunk[GROUP_MAX];
  int cta0[GROUP_MAX];  // first CTA of each problem; unused entries INT_MAX
};

template <int TT, int B>
__global__ void __launch_bounds__(DEC_THREADS, dec_min_blocks<TT>())
    gemm_decode_group(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa,
                      int M, const __grid_constant__ DecGroup gr, int out_f16) {
  pdl_trigger();  // launch.cuh; decode_cta waits after its first weight loads
  const int c = blockIdx.x;
  int p = 0;
#pragma unroll
  for (int i = 1; i < GROUP_MAX; i++) p += c >= gr.cta0[i];
  const int local = c - gr.cta0[p], ntiles = gr.w[p].Npad / 128;
  decode_cta<TT, B>(a8, a4, sa, M, gr.w[p], gr.y[p], out_f16, gr.KS[p], gr.chunk[p], local % ntiles, local / ntiles, gr.ws[p],
                    gr.tickets[p]);
}


}  // namespace comet_gemm
