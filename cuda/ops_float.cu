// Float ops: embed, rmsnorm, add, silu·mul, rope, the f32 GEMM (float path and classifier), rows, argmax, topk.
// Float weights (the GEMM's and the embedding's) are f32 or f16 (W = float | __half: a .comet's classifier and
// embedding, half the bytes), read as the f32 they are exactly; every sum is the same for both.
// The simulator (simulator/kernels/float.ts) computes these in f64 and stores f32; so do we. The f32 GEMM follows
// its summation order too and is bit-exact; rmsnorm's sum of squares (a tree here) and the transcendentals
// (exp, cos, sin: CUDA's f64 routines, not V8's) differ from it only in the last f64 bit, which the f32 result
// almost never shows (DESIGN §3.7 tier 3 for those).
#include <stdlib.h>
#include <string.h>

#include "ops.cuh"

using namespace comet_ops;

// weight loads: one element, or 4 consecutive ones (16 bytes of f32, 8 of f16) as a float4; the 4-wide streaming
// loads of weights read once per step (__ldcs: do not keep them in L2)
__device__ __forceinline__ float ldw(const float* p) { return *p; }
__device__ __forceinline__ float ldw(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float4 ldw4(const float* p) { return __ldcs((const float4*)p); }
__device__ __forceinline__ float4 ldw4(const __half* p) {
  const uint2 u = __ldcs((const uint2*)p);
  const float2 a = __half22float2(*(const __half2*)&u.x), b = __half22float2(*(const __half2*)&u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}

// ---- embed: out [T][D] = table [V][D] rows -------------------------------------------------------------------
template <class W>
__global__ void embed_kernel(const W* __restrict__ table, int D, const int32_t* __restrict__ tokens,
                             float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  const int t = blockIdx.y;
  const W* src = table + (size_t)tokens[t] * D;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < D; i += gridDim.x * blockDim.x) out[(size_t)t * D + i] = ldw(src + i);
}

template <class W>
static int embed(const W* table, int D, const int32_t* tokens, int T, float* out, void* stream) {
  if (T == 0) return 0;
  pdl_launch(embed_kernel<W>, dim3(cdiv(D, 256), T), 256, 0, S(stream), table, D, tokens, out);
  return check_launch("embed");
}
extern "C" int comet_embed_f32(const float* table, int D, const int32_t* tokens, int T, float* out, void* stream) {
  return embed(table, D, tokens, T, out, stream);
}
extern "C" int comet_embed_f16(const uint16_t* table, int D, const int32_t* tokens, int T, float* out, void* stream) {
  return embed((const __half*)table, D, tokens, T, out, stream);
}

// ---- rmsnorm: one block per row; ss in f64 (tree order), scaling in f64 as llama2.c-in-JS does -----------------
// ADD: the residual add folded in (add_rmsnorm): the row is s = f32(x + y), written to `sum` and normalized, the
// same arithmetic in the same order as add then rmsnorm (so the two agree bit for bit).
template <bool ADD>
__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ w,
                               int C, double eps, float* __restrict__ sum, float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  const size_t r = (size_t)blockIdx.x * C;
  auto ld = [&](int i) { return ADD ? __fadd_rn(x[r + i], y[r + i]) : x[r + i]; };
  double ss = 0;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    const float v = ld(i);
    if (ADD) sum[r + i] = v;
    ss += (double)v * v;
  }
  ss = block_sum(ss);
  const double inv = 1.0 / sqrt(ss / C + eps);
  for (int i = threadIdx.x; i < C; i += blockDim.x) out[r + i] = (float)__dmul_rn((double)w[i], __dmul_rn((double)ld(i), inv));
}

extern "C" int comet_rmsnorm_f32(const float* x, const float* w, int T, int C, double eps, float* out, void* stream) {
  if (T == 0) return 0;
  pdl_launch(rmsnorm_kernel<false>, T, 256, 0, S(stream), x, nullptr, w, C, eps, nullptr, out);
  return check_launch("rmsnorm");
}

extern "C" int comet_add_rmsnorm_f32(const float* x, const float* y, const float* w, int T, int C, double eps, float* sum,
                                     float* out, void* stream) {
  if (T == 0) return 0;
  pdl_launch(rmsnorm_kernel<true>, T, 256, 0, S(stream), x, y, w, C, eps, sum, out);
  return check_launch("add_rmsnorm");
}

// ---- elementwise -------------------------------------------------------------------------------------------
__global__ void add_kernel(const float* __restrict__ a, const float* __restrict__ b, size_t n, float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __fadd_rn(a[i], b[i]);
}

__device__ __forceinline__ float silu_mul(float g, float u) {
  const double gd = g;
  return (float)__dmul_rn(__ddiv_rn(gd, 1.0 + exp(-gd)), (double)u);
}

__global__ void silu_mul_kernel(const float* __restrict__ g, const float* __restrict__ u, size_t n, float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = silu_mul(g[i], u[i]);
}

static unsigned grid_for(size_t n) {
  const size_t b = (n + 255) / 256;
  return (unsigned)(b < 65535 ? (b ? b : 1) : 65535);
}

extern "C" int comet_add_f32(const float* a, const float* b, size_t n, float* out, void* stream) {
  if (n == 0) return 0;
  pdl_launch(add_kernel, grid_for(n), 256, 0, S(stream), a, b, n, out);
  return check_launch("add");
}

extern "C" int comet_silu_mul_f32(const float* g, const float* u, size_t n, float* out, void* stream) {
  if (n == 0) return 0;
  pdl_launch(silu_mul_kernel, grid_for(n), 256, 0, S(stream), g, u, n, out);
  return check_launch("silu_mul");
}

// ---- rope: one thread per (token, pair i, head), rope_pair (ops.cuh) ----------------------------------------------
__global__ void rope_kernel(const float* __restrict__ x, int T, int nH, int hd, const int32_t* __restrict__ pos,
                            const float* __restrict__ freqs, float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  const int half = hd / 2;
  const size_t n = (size_t)T * nH * half;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
    const int i = (int)(idx % half);
    const size_t th = idx / half;  // t * nH + h
    const size_t o = th * hd + 2 * i;
    const float2 r = rope_pair(x[o], x[o + 1], pos[th / nH], freqs[i]);
    out[o] = r.x;
    out[o + 1] = r.y;
  }
}

extern "C" int comet_rope_f32(const float* x, int T, int n_heads, int head_dim, const int32_t* pos, const float* freqs,
                              float* out, void* stream) {
  if (T == 0) return 0;
  if (head_dim % 2) return set_error(COMET_EINVAL, "rope: head_dim %d is odd", head_dim);
  pdl_launch(rope_kernel, grid_for((size_t)T * n_heads * head_dim / 2), 256, 0, S(stream), x, T, n_heads, head_dim, pos, freqs, out);
  return check_launch("rope");
}

// ---- f32 GEMM: the simulator's sums (simulator/kernels/float.ts matmul), bit for bit -------------------------------
// Every output y[t][n] is f32(a + b) with a = Σ_{k even} w·x and b = Σ_{k odd} w·x, each summed in f64 over k
// ascending: an f32 · f32 product is exact in f64, so an f64 FMA rounds exactly as the simulator's `a += w * x`.
// The order is per output, so the result does not depend on T, on tiling or on the other tokens (batch
// invariance), and the quantizer's calibration (src/quant/layered.ts) sees the simulator's activations.
// Tiles: TN = 64 weight rows x 16·MI tokens per block of 256 threads, 16-deep k tiles in shared memory, a thread
// MI tokens x 4 rows (MI = 4 from T = 17; MI = 1 for decode sizes, where a 64-token tile would be mostly empty).
// The price is f64 FMA throughput: this is the float path (the accuracy reference and the calibration), not
// the W4A4 product path, whose classifier is f16 (gemm_f16w below).
constexpr int TN = 64, TK = 16;

/** The GEMM's input value: x itself against f32 weights, x rounded to f16 against f16 weights (matmulF16w). */
template <class W>
__device__ __forceinline__ float xin(float v) { return v; }
template <>
__device__ __forceinline__ float xin<__half>(float v) { return f16r(v); }

template <class W, int MI>
__global__ void __launch_bounds__(256) gemm_exact_kernel(const float* __restrict__ x, int T, int K,
                                                         const W* __restrict__ w, int N, float* __restrict__ y) {
  pdl_enter();  // launch.cuh
  constexpr int TM = 16 * MI;
  __shared__ float xs[TK][TM + 1];
  __shared__ float ws[TK][TN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;
  double ea[MI][4] = {}, ob[MI][4] = {};  // even-k and odd-k sums (k0 is a multiple of TK, so c's parity is k's)
  for (int k0 = 0; k0 < K; k0 += TK) {
    for (int i = threadIdx.x; i < TN * TK; i += 256) {
      const int r = i / TK, c = i % TK, k = k0 + c;  // consecutive threads read consecutive k of one row
      if (r < TM) xs[c][r] = (m0 + r < T && k < K) ? xin<W>(x[(size_t)(m0 + r) * K + k]) : 0.f;
      ws[c][r] = (n0 + r < N && k < K) ? ldw(w + (size_t)(n0 + r) * K + k) : 0.f;
    }
    __syncthreads();
    const int kn = min(TK, K - k0);  // past K nothing is added (the simulator stops at K)
#pragma unroll
    for (int c = 0; c < TK; c += 2) {
      if (c >= kn) break;
      double a0[MI], b0[4], a1[MI], b1[4];
#pragma unroll
      for (int i = 0; i < MI; i++) a0[i] = xs[c][ty + 16 * i], a1[i] = xs[c + 1][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b0[j] = ws[c][tx + 16 * j], b1[j] = ws[c + 1][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) ea[i][j] = fma(a0[i], b0[j], ea[i][j]);
      if (c + 1 < kn)
#pragma unroll
        for (int i = 0; i < MI; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) ob[i][j] = fma(a1[i], b1[j], ob[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < T && n < N) y[(size_t)m * N + n] = (float)__dadd_rn(ea[i][j], ob[i][j]);
    }
}

template <class W>
static int gemm(const float* x, int T, int K, const W* w, int N, float* y, void* stream) {
  if (T == 0 || N == 0) return 0;
  if (T <= 16) pdl_launch(gemm_exact_kernel<W, 1>, dim3(cdiv(N, TN), cdiv(T, 16)), 256, 0, S(stream), x, T, K, w, N, y);
  else pdl_launch(gemm_exact_kernel<W, 4>, dim3(cdiv(N, TN), cdiv(T, 64)), 256, 0, S(stream), x, T, K, w, N, y);
  return check_launch("gemm_f32");
}

// ---- f16 weights on tensor cores (the classifier of a .comet: 128256 x 4096 f16, 1 GB a step) ------------------
// y [T][N] = f16(x) [T][K] · w [N][K]^T (f16), mma.sync m16n8k16 f16 x f16 -> f32: A = 16 weight rows, B = 8 tokens.
// The contract (simulator/kernels/float.ts matmulF16w) reads x rounded to f16, as an FP16 model's classifier does:
// one tensor-core pass per k16 step (until session 9, x was split into f16 hi + lo and each step took two, twice
// the MMAs and the staging from batch 64 up). Products of two f16 values are exact in f32; the f32 sums in the
// MMA's order are tier 3 against the simulator's f64 sums.
// A row's result does not depend on T or on where the row sits in a tile: each output is accumulated over k
// ascending, in the same k16 steps (the same fixed permutation of k inside a step), with no split-K; one kernel
// for every T (no T-dependent dispatch), so a batched step's logits equal each request run alone, bit for bit.
// Block: 8 warps x 32 weight rows (two m16 tiles per warp), TT tokens (TT/8 n-tiles); grid (token tiles, row
// blocks), token tiles fastest so blocks sharing weight rows run together (the weights come from L2 after the
// first). Weights stream from global straight into A fragments: a lane's 16-byte load W[row][k0 + 8tq, +8) covers
// two k16 steps (pairs 0,1 | 2,3 the first, 4,5 | 6,7 the second) and x in shared memory is read in the same
// order. x is staged a chunk of hm_kc(TT) channels at a time as f16 (16-66 KiB a block).
constexpr int HM_WARPS = 8, HM_BN = HM_WARPS * 32, HM_XS = 64 << 10;
/** Channels of x staged per chunk at TT tokens: at most 64 KiB of f16, and at most 1024 channels. With the whole K in
 *  one chunk at TT = 8 / 16 (4096 / 2048 channels) the single-pass kernel ran 1.65-1.95x the two-pass kernel's time at
 *  batch 1 / 16 (H200, 2026-12-03, e2e per-op table: 0.479 / 0.633 ms a step against 0.290 / 0.322), while at 32 / 64
 *  tokens (1024 / 512 channels) it ran 0.57 / 0.87x. */
__host__ __device__ constexpr int hm_kc(int TT) { return HM_XS / (TT * 2) < 1024 ? HM_XS / (TT * 2) : 1024; }
__host__ __device__ constexpr int hm_smem(int TT) { return TT * (hm_kc(TT) + 8) * 2; }

__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int TT>
__global__ void __launch_bounds__(HM_WARPS * 32) gemm_f16w_mma(const float* __restrict__ x, int T, int K, const __half* __restrict__ w,
                                                              int N, float* __restrict__ y) {
  pdl_enter();  // launch.cuh
  constexpr int KC = hm_kc(TT), KS = KC + 8, NTT = TT / 8;  // KS: row stride in halves (16-byte skew)
  extern __shared__ __align__(16) uint8_t smraw[];
  __half* xh = (__half*)smraw;  // [TT][KS]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tq = lane & 3;
  const int t0 = blockIdx.x * TT, n0 = blockIdx.y * HM_BN + warp * 32;
  const __half* wr[4];  // rows n0 + 16(i / 2) + 8(i % 2) + gid (clamped; stores are guarded)
#pragma unroll
  for (int i = 0; i < 4; i++) wr[i] = w + (size_t)min(n0 + 16 * (i >> 1) + 8 * (i & 1) + gid, N - 1) * K + 8 * tq;
  float acc[2][NTT][4];
#pragma unroll
  for (int mi = 0; mi < 2; mi++)
#pragma unroll
    for (int nt = 0; nt < NTT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mi][nt][e] = 0.f;
  for (int kc0 = 0; kc0 < K; kc0 += KC) {
    const int kn = min(KC, K - kc0);  // a multiple of 32
    __syncthreads();  // the previous chunk is consumed
    for (int i = tid * 4; i < TT * kn; i += HM_WARPS * 32 * 4) {
      const int tt = i / kn, k = i - tt * kn;
      const float4 v = t0 + tt < T ? __ldg((const float4*)(x + (size_t)(t0 + tt) * K + kc0 + k)) : make_float4(0, 0, 0, 0);
      __half* ph = xh + tt * KS + k;
      *(__half2*)ph = __floats2half2_rn(v.x, v.y), *(__half2*)(ph + 2) = __floats2half2_rn(v.z, v.w);
    }
    __syncthreads();
    // two k32 steps of weights in flight per lane (128 bytes): the stream needs ~40 KB in flight per SM
    auto step = [&](const uint4 (&cu)[4], int k) {
#pragma unroll
      for (int nt = 0; nt < NTT; nt++) {
        const uint4 bh = *(const uint4*)(xh + (8 * nt + gid) * KS + k + 8 * tq);
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
          const uint4 r0 = cu[2 * mi], r1 = cu[2 * mi + 1];
          mma_f16(acc[mi][nt], r0.x, r1.x, r0.y, r1.y, bh.x, bh.y);  // k16 step 1: pairs (0,1 | 2,3)
          mma_f16(acc[mi][nt], r0.z, r1.z, r0.w, r1.w, bh.z, bh.w);  // k16 step 2: pairs (4,5 | 6,7)
        }
      }
    };
    uint4 na[4], nb[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      na[i] = __ldcs((const uint4*)(wr[i] + kc0));
      if (32 < kn) nb[i] = __ldcs((const uint4*)(wr[i] + kc0 + 32));
    }
    for (int k = 0; k < kn; k += 64) {
      uint4 cu[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        cu[i] = na[i];
        if (k + 64 < kn) na[i] = __ldcs((const uint4*)(wr[i] + kc0 + k + 64));
      }
      step(cu, k);
      if (k + 32 < kn) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
          cu[i] = nb[i];
          if (k + 96 < kn) nb[i] = __ldcs((const uint4*)(wr[i] + kc0 + k + 96));
        }
        step(cu, k + 32);
      }
    }
  }
  // d0: (row gid, token 2tq) d1: (gid, 2tq + 1) d2: (gid + 8, 2tq) d3: (gid + 8, 2tq + 1)
#pragma unroll
  for (int mi = 0; mi < 2; mi++)
#pragma unroll
    for (int nt = 0; nt < NTT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int n = n0 + 16 * mi + gid + 8 * (e >> 1), t = t0 + 8 * nt + 2 * tq + (e & 1);
        if (n < N && t < T) y[(size_t)t * N + n] = acc[mi][nt][e];
      }
}

template <int TT>
static int launch_f16w_mma(const float* x, int T, int K, const __half* w, int N, float* y, void* stream) {
  static bool attr = false;
  if (!attr) {
    COMET_TRY("gemm_f16w (mma) smem", cudaFuncSetAttribute(gemm_f16w_mma<TT>, cudaFuncAttributeMaxDynamicSharedMemorySize, hm_smem(TT)));
    attr = true;
  }
  const dim3 grid(cdiv(T, TT), cdiv(N, HM_BN));
  pdl_launch(gemm_f16w_mma<TT>, grid, HM_WARPS * 32, hm_smem(TT), S(stream), x, T, K, w, N, y);
  return check_launch("gemm_f16w (mma)");
}

/** f16 weights: the tensor-core kernel for every T when K % 32 == 0 (rows 16-byte aligned), else the exact f32 GEMM above for
 *  every T; never a T-dependent choice, so a row's logits are the same in any batch. */
static int gemm_f16w(const float* x, int T, int K, const __half* w, int N, float* y, void* stream) {
  if (T == 0 || N == 0) return 0;
  if (K % 32 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)w & 15) == 0) {
    if (T <= 8) return launch_f16w_mma<8>(x, T, K, w, N, y, stream);
    if (T <= 16) return launch_f16w_mma<16>(x, T, K, w, N, y, stream);
    if (T <= 64) return launch_f16w_mma<32>(x, T, K, w, N, y, stream);
    return launch_f16w_mma<64>(x, T, K, w, N, y, stream);
  }
  return gemm<__half>(x, T, K, w, N, y, stream);
}

extern "C" int comet_gemm_f32(const float* x, int T, int K, const float* w, int N, float* y, void* stream) {
  return gemm(x, T, K, w, N, y, stream);
}
extern "C" int comet_gemm_f16w(const float* x, int T, int K, const uint16_t* w, int N, float* y, void* stream) {
  return gemm_f16w(x, T, K, (const __half*)w, N, y, stream);
}

// ---- rows, argmax ----------------------------------------------------------------------------------------------
__global__ void rows_kernel(const float* __restrict__ x, int C, const int32_t* __restrict__ rows, float* __restrict__ out) {
  pdl_enter();  // launch.cuh
  const float* src = x + (size_t)rows[blockIdx.y] * C;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < C; i += gridDim.x * blockDim.x) out[(size_t)blockIdx.y * C + i] = src[i];
}

extern "C" int comet_rows_f32(const float* x, int C, const int32_t* rows, int R, float* out, void* stream) {
  if (R == 0) return 0;
  pdl_launch(rows_kernel, dim3(cdiv(C, 256), R), 256, 0, S(stream), x, C, rows, out);
  return check_launch("rows");
}

/** first max wins: a strict > while scanning, and the smaller index on ties when merging */
__device__ __forceinline__ void better(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

// One block of ARGMAX_THREADS per row. A decode step's logits row (V = 128256 at LLaMA-3) used to be scanned by
// 256 threads a float at a time: ~500 dependent iterations, ~110 µs. Now 1024 threads, 16-byte loads, four in
// flight per thread before any compare (~8 rounds). better() makes the result independent of the scan order.
constexpr int ARGMAX_THREADS = 1024;

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float* __restrict__ x, int C, int32_t* __restrict__ out) {
  pdl_enter();  // launch.cuh
  const float* r = x + (size_t)blockIdx.x * C;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  int c0 = 0;
  if ((C & 3) == 0 && ((uintptr_t)x & 15) == 0) {  // rows 16-byte aligned: float4 loads, 4 per thread in flight
    const float4* r4 = (const float4*)r;
    const int C4 = C >> 2;
    for (int i = threadIdx.x; i < C4; i += 4 * ARGMAX_THREADS) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int k = i + u * ARGMAX_THREADS;
        v[u] = k < C4 ? __ldcs(r4 + k) : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int k = 4 * (i + u * ARGMAX_THREADS);
        if (k < C) better(bv, bi, v[u].x, k), better(bv, bi, v[u].y, k + 1), better(bv, bi, v[u].z, k + 2), better(bv, bi, v[u].w, k + 3);
      }
    }
    c0 = C;
  }
  for (int c = c0 + threadIdx.x; c < C; c += blockDim.x) better(bv, bi, r[c], c);
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, bv, o);
    const int i = __shfl_xor_sync(0xffffffffu, bi, o);
    better(bv, bi, v, i);
  }
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
    bi = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, bv, o);
      const int i = __shfl_xor_sync(0xffffffffu, bi, o);
      better(bv, bi, v, i);
    }
    if (lane == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;  // an all-NaN (or all -inf) row gives 0, as the simulator
  }
}

extern "C" int comet_argmax_f32(const float* x, int R, int C, int32_t* out, void* stream) {
  if (R == 0) return 0;
  pdl_launch(argmax_kernel, R, ARGMAX_THREADS, 0, S(stream), x, C, out);
  return check_launch("argmax");
}

// ---- per-op timing (COMET's op profiler: backends/cuda/cuda.ts setOpTiming) --------------------------------------
// Before each profiled op the host enqueues a spin kernel (a few tens of µs) and then an event, the op, an event:
// the op's launches queue up behind the spin, so the event pair times the op's own GPU work, not the host's
// launch gaps. Events come from a fixed pool; comet_prof_read waits and returns the pairs' elapsed times.
__global__ void prof_spin_kernel(long long ns) {
  long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

constexpr int PROF_EVENTS = 1 << 14;
static cudaEvent_t g_prof_ev[PROF_EVENTS];
static int g_prof_n = 0, g_prof_created = 0;

extern "C" int comet_prof_spin(void* stream, int us) {
  prof_spin_kernel<<<1, 1, 0, S(stream)>>>((long long)us * 1000);
  return check_launch("prof spin");
}

extern "C" int comet_prof_mark(void* stream) {
  if (g_prof_n >= PROF_EVENTS) return set_error(COMET_EINVAL, "prof: more than %d marks before a read", PROF_EVENTS);
  if (g_prof_n >= g_prof_created) {
    COMET_TRY("prof event", cudaEventCreate(&g_prof_ev[g_prof_n]));
    g_prof_created++;
  }
  COMET_TRY("prof mark", cudaEventRecord(g_prof_ev[g_prof_n++], S(stream)));
  return 0;
}

/** Waits for the last mark; ms[i] = elapsed time between marks 2i and 2i+1; returns the pair count (at most
 *  max) and forgets the marks. */
extern "C" int comet_prof_read(float* ms, int max) {
  const int n = g_prof_n / 2;
  if (g_prof_n) COMET_TRY("prof sync", cudaEventSynchronize(g_prof_ev[g_prof_n - 1]));
  for (int i = 0; i < n && i < max; i++) COMET_TRY("prof elapsed", cudaEventElapsedTime(&ms[i], g_prof_ev[2 * i], g_prof_ev[2 * i + 1]));
  g_prof_n = 0;
  return n < max ? n : max;
}

/** Page-locked host memory (cudaHostAlloc): the step buffers a captured CUDA graph copies from on each replay. */
extern "C" int comet_host_alloc(void** p, size_t bytes) {
  *p = nullptr;
  COMET_TRY("host alloc (pinned)", cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault));
  return 0;
}

// ---- topk ----------------------------------------------------------------------------------------------------
// simulator/kernels/float.ts topk: the k largest of each row, value descending then index ascending. One CTA of
// 1024 threads a row (a decode step's logits, V = 128256 at LLaMA-3): the k-th largest key by a 4-pass radix
// select (8 bits a pass, shared-memory histogram, warp-aggregated increments), then every key above it (any
// order) and the first ties by index (an ordered scan in tiles of 1024 columns), then a bitonic sort of the k
// candidates as 64-bit (key, ~index) words. Keys: f32 bits made monotone, -0 read as +0 (the reference's -0 == +0).
constexpr int TOPK_THREADS = 1024, TOPK_MAX = 1024;

__device__ __forceinline__ uint32_t topk_key(float f) {
  const uint32_t b = __float_as_uint(f == 0.f ? 0.f : f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(TOPK_THREADS) topk_kernel(const float* __restrict__ x, int C, int k, float* __restrict__ vals, int32_t* __restrict__ idx) {
  pdl_enter();  // launch.cuh
  __shared__ uint32_t hist[256];
  __shared__ unsigned long long cand[TOPK_MAX];
  __shared__ uint32_t s_prefix;
  __shared__ int s_need, s_above, warpTies[TOPK_THREADS / 32];
  const float* r = x + (size_t)blockIdx.x * C;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t prefix = 0, mask = 0;
  int need = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int c0 = 0; c0 < C; c0 += blockDim.x) {  // whole warps in every iteration (match_any below)
      const int c = c0 + threadIdx.x;
      const uint32_t key = c < C ? topk_key(r[c]) : 0u;
      const bool in = c < C && (key & mask) == prefix;
      const uint32_t bin = in ? (key >> shift) & 255u : 256u;
      const uint32_t peers = __match_any_sync(0xffffffffu, bin);
      if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (uint32_t)__popc(peers));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0, b = 255;
      for (; b > 0; b--) {
        if (cum + (int)hist[b] >= need) break;
        cum += hist[b];
      }
      s_prefix = prefix | ((uint32_t)b << shift);
      s_need = need - cum;
    }
    __syncthreads();
    prefix = s_prefix, need = s_need, mask |= 255u << shift;
  }
  // prefix = the k-th largest key t; k - need keys lie above it; the first `need` ties by index complete the list
  if (threadIdx.x == 0) s_above = 0;
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const uint32_t key = topk_key(r[c]);
    if (key > prefix) cand[atomicAdd(&s_above, 1)] = ((unsigned long long)key << 32) | (0xffffffffu - (uint32_t)c);
  }
  int taken = 0;
  for (int c0 = 0; c0 < C && taken < need; c0 += blockDim.x) {
    const int c = c0 + threadIdx.x;
    const bool tie = c < C && topk_key(r[c]) == prefix;
    const uint32_t ballot = __ballot_sync(0xffffffffu, tie);
    if (lane == 0) warpTies[warp] = __popc(ballot);
    __syncthreads();
    int before = taken, total = taken;
    for (int w = 0; w < TOPK_THREADS / 32; w++) {
      before += w < warp ? warpTies[w] : 0;
      total += warpTies[w];
    }
    const int rank = before + __popc(ballot & ((1u << lane) - 1u));
    if (tie && rank < need) cand[k - need + rank] = ((unsigned long long)prefix << 32) | (0xffffffffu - (uint32_t)c);
    taken = total;
    __syncthreads();  // warpTies is rewritten next tile
  }
  int P = 1;
  while (P < k) P <<= 1;
  for (int i = k + threadIdx.x; i < P; i += blockDim.x) cand[i] = 0ull;  // below every real key
  for (int size = 2; size <= P; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const unsigned long long a = cand[i], b = cand[j];
          if ((a < b) == ((i & size) == 0)) cand[i] = b, cand[j] = a;  // descending where (i & size) == 0
        }
      }
    }
  __syncthreads();
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    const int c = (int)(0xffffffffu - (uint32_t)cand[j]);
    idx[(size_t)blockIdx.x * k + j] = c;
    vals[(size_t)blockIdx.x * k + j] = r[c];
  }
}

extern "C" int comet_topk_f32(const float* x, int R, int C, int k, float* vals, int32_t* idx, void* stream) {
  if (k < 1 || k > C || k > TOPK_MAX) return set_error(COMET_EINVAL, "topk: k = %d must be in [1, min(C = %d, %d)]", k, C, TOPK_MAX);
  if (R == 0) return 0;
  pdl_launch(topk_kernel, R, TOPK_THREADS, 0, S(stream), x, C, k, vals, idx);
  return check_launch("topk");
}
