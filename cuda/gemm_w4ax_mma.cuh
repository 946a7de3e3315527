// W4Ax GEMM, mma.sync tiled family (v4): the prefill kernel for sm_80 (S4 = true: W4A4 blocks on the int4 tensor
// cores when B >= 64) and for B = 32 / 64 on sm_90 (S4 = false: everything on s8). Included once by gemm_w4ax.cu (one
// translation unit: its launchers instantiate these templates). Lab notes: cuda/NOTES-gemm.md.
#pragma once
#include "gemm_w4ax.cuh"

namespace comet_gemm {

// ---------------------------------------------------------------------------------------------------------
// prefill: M > 64
constexpr int PF_THREADS = 512, PF_STAGES = 3;  // 16 warps: 4 (M) x 4 (N) of 32x32
constexpr int PF_A = 128 * 128, PF_W = 128 * ROW_BYTES, PF_SW = 4 * 128 * 2, PF_SA = 128 * 4 * 4;
constexpr int PF_STAGE = PF_A + PF_W + PF_SW + PF_SA;  // 27,648 bytes
// + the running total of the schedule's finished slices, f32 [32][512] (value v of thread tid at [v][tid]: conflict
// free): a third set of 32 registers would not fit the 128 of 16 warps. 3 stages keep it under sm_80's 163 KB.
constexpr int PF_TOTAL = 32 * PF_THREADS * 4;              // 65,536 bytes
constexpr int PF_SMEM = PF_STAGES * PF_STAGE + PF_TOTAL;   // 148,480 bytes

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
                 WDesc w, void* y, int out_f16, int S) {
  pdl_enter();  // launch.cuh
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

  // the schedule (DESIGN 3.4): S k-tile-aligned slices, each summed from +0; the finished ones' running total in Tot
  float* Tot = (float*)(smem + PF_STAGES * PF_STAGE) + tid;
  int slice = 0, slice_end = w.T / S;  // slice `slice` ends before k-tile slice_end

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
    if (i + 1 == slice_end && i + 1 < w.T) {  // a slice (not the last) ends: total = total + sum (+0 + sum at the first)
#pragma unroll
      for (int v = 0; v < 32; v++) {
        float& x = sum[v >> 4][(v >> 2) & 3][v & 3];
        Tot[v * PF_THREADS] = slice ? __fadd_rn(Tot[v * PF_THREADS], x) : x;
        x = 0.f;
      }
      slice++, slice_end = (slice + 1) * w.T / S;
    }
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
          __half h = __float2half_rn(S > 1 ? __fadd_rn(Tot[(mt * 16 + nt * 4 + e) * PF_THREADS], sum[mt][nt][e]) : sum[mt][nt][e]);
          if (out_f16)
            ((__half*)y)[(size_t)m * w.N + n] = h;
          else
            ((float*)y)[(size_t)m * w.N + n] = __half2float(h);
        }
      }
}


}  // namespace comet_gemm
