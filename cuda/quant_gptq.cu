// GPTQ on the GPU (src/quant/gptq.ts and calibrate.ts are the reference): the Hessian accumulation, the
// permuted damped Hessian, the inverse's upper Cholesky factor U, and the column-by-column quantization with
// error feedback. Everything is f64, and every element is computed with the reference's operations in the
// reference's order (mul and add/sub rounded separately: __dmul_rn/__dsub_rn, never a contracted FMA except
// where the product is exact), so given the same activations the codes and scales are the host's, bit for bit.
// The parallelism comes from what the reference leaves independent:
//   hessian_add     one thread per 4×4 outputs; each output's even-t and odd-t sums run in ascending t, as
//                   simulator/kernels/float.ts matmul sums X^T X; the f32 rounding of their sum is added to H.
//   chol (left-looking, 64-column panels)   M = lower Cholesky factor of J P J (J the reversal). Element
//                   (i, j) is (P' - Σ_{k<j} M[i][k] M[j][k]) / M[j][j], the sum in ascending k: per panel a
//                   tiled kernel (tri_tile_kernel: 64 rows × 64 columns a CTA, k in 32-wide shared-memory
//                   chunks, each thread 4×4 outputs with its k loop ascending) takes every row's k < j0 terms,
//                   a one-CTA kernel finishes the 64×64 diagonal block, a third the rows below (k in [j0, j)).
//                   M is stored transposed (Mt[k][i] = M[i][k]) so tiles of rows load coalesced.
//   inverse         Mi = M⁻¹ (each column of a triangular inverse is its own forward substitution), rows in
//                   blocks of 64: the same tiled kernel sums each row's terms k < i0 (k ascending from the
//                   element's own column j, zero c = M[i][k] skipped, as gptq.ts), then one thread per column runs
//                   the block's 64 rows in order. (The kernels before read Mi's columns once per 16 rows from
//                   memory: 12 s for n = 14336; these read each tile once per 64×64 outputs.)
//   quantize        GPTQ's lazy batch updates (Frantar et al. §3 step 2), which reorder work across elements but
//                   not within one: W[n][j] still receives e_k·U[k][j] for k ascending, each product and
//                   difference rounded as the reference's. Per B-block b (host loop): gptq_block_kernel, one warp
//                   per weight row, takes the block's B columns (already updated by every earlier block) into
//                   shared memory, runs the clip search (grid point g on lane g, its error summed in k order),
//                   quantizes the B columns one by one with the in-block updates, and writes the errors
//                   E[n][k - k0]; gptq_update_kernel then applies the block's B errors to the columns right of
//                   it as a tiled product (64 rows × 64 columns a CTA, k in 32-wide smem chunks, each thread
//                   4×4 outputs and its k loop in ascending order). The old one-CTA-per-row kernel read all of U
//                   once per row (N·Kp²/2 f64 from L2: minutes a layer at the 8B shape); here U and E are read
//                   once per 64×64 tile.
// Layouts: x [T][K] f32 · H, P, U [n][n] f64 row-major · w [N][K] f32 (original column order) · perm [K] int32
// (quantized column j reads column perm[j]) · codes [N][Kp] int8 · scales [N][Kp/B] f16 bits.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "capi.h"
#include "ops.cuh"

using comet_ops::cdiv;
using comet_ops::S;
using comet_ops::set_error;

namespace {

// ---- Hessian: H += f32(X^T X) ------------------------------------------------------------------------------
constexpr int HT = 64, HTT = 16;  // 64×64 outputs per CTA, 16 tokens per shared-memory stage, 256 threads

__global__ void hessian_add_kernel(const float* __restrict__ x, int T, int K, double* __restrict__ H) {
  __shared__ double xi[HTT][HT], xj[HTT][HT];
  const int i0 = blockIdx.y * HT, j0 = blockIdx.x * HT, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  double a[4][4], b[4][4];  // even-t and odd-t sums (float.ts matmul: a += ..k even, b += ..k odd; out = a + b)
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int s = 0; s < 4; s++) a[r][s] = b[r][s] = 0.0;
  for (int t0 = 0; t0 < T; t0 += HTT) {
    for (int idx = threadIdx.x; idx < HTT * HT; idx += blockDim.x) {
      const int tt = idx / HT, c = idx % HT, t = t0 + tt;
      xi[tt][c] = (t < T && i0 + c < K) ? (double)x[(size_t)t * K + i0 + c] : 0.0;
      xj[tt][c] = (t < T && j0 + c < K) ? (double)x[(size_t)t * K + j0 + c] : 0.0;
    }
    __syncthreads();
    const int tn = min(HTT, T - t0);  // t0 is even (HTT is), so tt's parity is t's
    for (int tt = 0; tt < tn; tt++) {
      double vi[4], vj[4];
#pragma unroll
      for (int r = 0; r < 4; r++) { vi[r] = xi[tt][ty * 4 + r]; vj[r] = xj[tt][tx * 4 + r]; }
      // an f32·f32 product is exact in f64, so the FMA rounds exactly as the reference's add of the product
      if ((tt & 1) == 0) {
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
          for (int s = 0; s < 4; s++) a[r][s] = fma(vi[r], vj[s], a[r][s]);
      } else {
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
          for (int s = 0; s < 4; s++) b[r][s] = fma(vi[r], vj[s], b[r][s]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const int i = i0 + ty * 4 + r, j = j0 + tx * 4 + s;
      if (i < K && j < K) {
        const size_t o = (size_t)i * K + j;
        H[o] = __dadd_rn(H[o], (double)__double2float_rn(__dadd_rn(a[r][s], b[r][s])));
      }
    }
}

// ---- permuted, padded, damped Hessian (gptq.ts permutedHessian) -------------------------------------------
// scale (SmoothQuant, src/quant/smooth.ts scaleStats): the Hessian of x / s, H[i][j] / (s[i]·s[j]), as the host
// divides it before permuting
__device__ __forceinline__ double hs(const double* H, int K, const double* scale, int i, int j) {
  const double h = H[(size_t)i * K + j];
  return scale ? __ddiv_rn(h, __dmul_rn(scale[i], scale[j])) : h;
}

__global__ void diag_mean_kernel(const double* __restrict__ H, int K, const int32_t* __restrict__ perm, const double* __restrict__ scale, double* mean) {
  double m = 0.0;  // one thread: the reference's sequential sum over the permuted diagonal
  for (int k = 0; k < K; k++) {
    const int p = perm ? perm[k] : k;
    m = __dadd_rn(m, hs(H, K, scale, p, p));
  }
  *mean = __ddiv_rn(m, (double)K);
}

__global__ void permute_kernel(const double* __restrict__ H, int K, int Kp, const int32_t* __restrict__ perm,
                               const double* __restrict__ scale, const double* __restrict__ mean, double damp, double* __restrict__ P) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)Kp * Kp) return;
  const int i = (int)(idx / Kp), j = (int)(idx % Kp);
  double v = 0.0;
  if (i < K && j < K) v = hs(H, K, scale, perm ? perm[i] : i, perm ? perm[j] : j);
  if (i == j) {
    if (i >= K || v == 0.0) v = 1.0;  // padding and dead channels: unconstrained
    v = __dadd_rn(v, __dmul_rn(damp, *mean));
  }
  P[idx] = v;
}

// ---- M = chol(J P J) (lower), stored transposed: Mt[k][i] = M[i][k]; Mi = M⁻¹ --------------------------------
constexpr int JB = 64;   // panel width (Cholesky) and row block (inverse)
constexpr int TK = 32;   // k chunk of the tiled kernel
// P' = J P J: P'[i][j] = P[n-1-i][n-1-j]
__device__ __forceinline__ double prev(const double* P, int n, int i, int j) { return P[(size_t)(n - 1 - i) * n + (n - 1 - j)]; }

/** The two reference sums that are GEMM-shaped, 64×64 outputs a CTA (256 threads, 4×4 each), k ascending:
 *  CHOL  rows i = r0 + .., columns jj of the panel j0 = c0: out[(i - r0)·JB + jj] = P'[i][c0+jj] − Σ_{k<kEnd} M[i][k]·M[c0+jj][k]
 *  !CHOL rows i = r0 + .. (the inverse's row block), columns j = blockIdx.x·64 + ..: out[(i - r0)·n + j] =
 *        Σ_{k = j}^{kEnd-1} M[i][k]·Mi[k][j], terms with M[i][k] = 0 skipped (k starts at the tile's first column; the
 *        terms k < j are predicated off, so each element's chain is exactly the reference's). */
template <bool CHOL>
__global__ void __launch_bounds__(256) tri_tile_kernel(const double* __restrict__ Mt, const double* __restrict__ Mi, const double* __restrict__ P,
                                                       int n, int r0, int c0, int kEnd, double* __restrict__ out) {
  __shared__ double as[TK][JB], bs[TK][JB];
  const int rt = r0 + blockIdx.y * JB, ct = CHOL ? c0 : blockIdx.x * JB, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  double acc[4][4];
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int i = rt + ty + 16 * a, j = ct + tx + 16 * c;
      acc[a][c] = CHOL && i < n && j < n ? prev(P, n, i, j) : 0.0;
    }
  for (int k0 = CHOL ? 0 : ct; k0 < kEnd; k0 += TK) {
    for (int idx = threadIdx.x; idx < TK * JB; idx += 256) {
      const int kk = idx / JB, c = idx % JB;
      as[kk][c] = rt + c < n ? Mt[(size_t)(k0 + kk) * n + rt + c] : 0.0;                  // M[rt+c][k]
      bs[kk][c] = ct + c < n ? (CHOL ? Mt : Mi)[(size_t)(k0 + kk) * n + ct + c] : 0.0;  // M[ct+c][k] | Mi[k][ct+c]
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < TK; kk++) {
      double x[4], y[4];
#pragma unroll
      for (int a = 0; a < 4; a++) x[a] = as[kk][ty + 16 * a];
#pragma unroll
      for (int c = 0; c < 4; c++) y[c] = bs[kk][tx + 16 * c];
#pragma unroll
      for (int a = 0; a < 4; a++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          if (CHOL) acc[a][c] = __dsub_rn(acc[a][c], __dmul_rn(x[a], y[c]));
          else {
            const double t = __dadd_rn(acc[a][c], __dmul_rn(x[a], y[c]));
            acc[a][c] = (x[a] != 0.0 && k0 + kk >= ct + tx + 16 * c) ? t : acc[a][c];
          }
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int i = rt + ty + 16 * a, j = ct + tx + 16 * c;
      if (i < n && j < (CHOL ? min(n, c0 + JB) : kEnd)) out[CHOL ? (size_t)(i - r0) * JB + (j - c0) : (size_t)(i - r0) * n + j] = acc[a][c];
    }
}

/** the diagonal block: thread ii owns row j0+ii; columns jj in order, the pivot (thread jj) first, then the rows
 *  below it, each finishing its k in [j0, j) terms from the block's rows kept in shared memory */
__global__ void __launch_bounds__(JB) chol_diag_kernel(double* __restrict__ Mt, int n, int j0, const double* __restrict__ pan, int* __restrict__ status) {
  __shared__ double m[JB][JB + 1];  // m[ii][kk] = M[j0+ii][j0+kk]
  const int nb = min(JB, n - j0), ii = threadIdx.x, i = j0 + ii;
  for (int jj = 0; jj < nb; jj++) {
    const int j = j0 + jj;
    double s = 0.0;
    if (ii >= jj && ii < nb) {
      s = pan[(size_t)ii * JB + jj];
      for (int kk = 0; kk < jj; kk++) s = __dsub_rn(s, __dmul_rn(m[ii][kk], m[jj][kk]));
    }
    if (ii == jj) {
      if (!(s > 0.0) && *status == 0) *status = n - i;  // gptq.ts reports pivot n-1-i, +1 so 0 means none
      m[jj][jj] = __dsqrt_rn(s);
      Mt[(size_t)j * n + i] = m[jj][jj];
    }
    __syncthreads();
    if (ii > jj && ii < nb) {
      m[ii][jj] = __ddiv_rn(s, m[jj][jj]);
      Mt[(size_t)j * n + i] = m[ii][jj];
    }
    __syncthreads();
  }
}

/** rows i >= j0+JB: finish the panel's columns (k in [j0, j)) in order; launched only for a full diagonal block */
constexpr int RT = 32;  // threads (rows or columns) per CTA of the two sequential kernels: 32 KB + 16 KB of shared memory
__global__ void __launch_bounds__(RT) chol_rows_kernel(double* __restrict__ Mt, int n, int j0, const double* __restrict__ pan) {
  __shared__ double d[JB][JB];  // d[kk][jj] = M[j0+jj][j0+kk]
  __shared__ double m[JB][RT];  // m[jj][thread] = M[i][j0+jj], computed in this loop
  for (int e = threadIdx.x; e < JB * JB; e += blockDim.x) d[e / JB][e % JB] = Mt[(size_t)(j0 + e / JB) * n + j0 + e % JB];
  __syncthreads();
  const int i = j0 + JB + blockIdx.x * blockDim.x + threadIdx.x, t = threadIdx.x;
  if (i >= n) return;
  for (int jj = 0; jj < JB; jj++) {
    double s = pan[(size_t)(i - j0) * JB + jj];
    for (int kk = 0; kk < jj; kk++) s = __dsub_rn(s, __dmul_rn(m[kk][t], d[kk][jj]));
    m[jj][t] = __ddiv_rn(s, d[jj][jj]);
    Mt[(size_t)(j0 + jj) * n + i] = m[jj][t];
  }
}

/** the inverse's row block [i0, i0 + JB): thread = column j < i0 + JB; acc from tri_tile_kernel<false> (j < i0),
 *  then the block's own rows in order: terms k in [max(j, i0), i), then the division */
__global__ void __launch_bounds__(RT) inverse_rows_kernel(const double* __restrict__ Mt, int n, int i0, const double* __restrict__ accIn, double* __restrict__ Mi) {
  __shared__ double c[JB][JB];   // c[kk][r] = M[i0+r][i0+kk]
  __shared__ double x[JB][RT];   // x[r][thread] = Mi[i0+r][j]
  const int nb = min(JB, n - i0);
  for (int e = threadIdx.x; e < JB * JB; e += blockDim.x) {
    const int kk = e / JB, r = e % JB;
    c[kk][r] = kk < nb && r < nb ? Mt[(size_t)(i0 + kk) * n + i0 + r] : 0.0;
  }
  __syncthreads();
  const int j = blockIdx.x * blockDim.x + threadIdx.x, t = threadIdx.x;
  if (j >= i0 + nb) return;
  for (int r = 0; r < nb; r++) {
    const int i = i0 + r;
    x[r][t] = 0.0;
    if (i < j) continue;
    const double d = c[r][r];
    if (i == j) { x[r][t] = __ddiv_rn(1.0, d); Mi[(size_t)i * n + j] = x[r][t]; continue; }
    double acc = j < i0 ? accIn[(size_t)r * n + j] : 0.0;
    for (int rr = j < i0 ? 0 : j - i0; rr < r; rr++) {
      const double cv = c[rr][r];  // M[i][i0+rr]
      if (cv != 0.0) acc = __dadd_rn(acc, __dmul_rn(cv, x[rr][t]));
    }
    x[r][t] = __ddiv_rn(-acc, d);
    Mi[(size_t)i * n + j] = x[r][t];
  }
}

/** U[i][j] = Mi[n-1-i][n-1-j] for j >= i, 0 below */
__global__ void reverse_kernel(const double* __restrict__ Mi, int n, double* __restrict__ U) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)n * n) return;
  const int i = (int)(idx / n), j = (int)(idx % n);
  U[idx] = j >= i ? Mi[(size_t)(n - 1 - i) * n + (n - 1 - j)] : 0.0;
}

// ---- quantize ----------------------------------------------------------------------------------------------
/** f64 -> the nearest f16 value (ties to even), rounded once from f64 as @petamoriken/float16 (toF16) does */
__device__ double f16_round(double x) {
  const double a = fabs(x);
  if (a != a) return x;
  if (a >= 65520.0) return copysign(INFINITY, x);
  double q;
  if (a < 6.103515625e-05) {
    q = rint(a * 16777216.0) / 16777216.0;  // subnormal: quantum 2^-24 (scalings by powers of two are exact)
  } else {
    int e;
    frexp(a, &e);  // a in [2^(e-1), 2^e): 11 significant bits, quantum 2^(e-11)
    const double sc = ldexp(1.0, 11 - e);
    q = rint(a * sc) / sc;
  }
  return copysign(q, x);
}

__device__ __forceinline__ int q4(double x, double s) {
  if (s == 0.0) return 0;
  const float f = __double2float_rn(__ddiv_rn(x, s));  // Math.fround(x / s)
  return (int)fminf(7.f, fmaxf(-8.f, rintf(f)));       // roundHalfEven, clamp
}

constexpr int GRID_MAX = 32;  // clip-search points: one lane each
constexpr int QW = 8;         // warps (rows) per gptq_block_kernel CTA

/** W [N][Kp] f64 = w [N][K] with its columns gathered by perm, zero padding (gptq.ts gptqW4's first loop) */
__global__ void gptq_gather_kernel(const float* __restrict__ w, int N, int K, int Kp, const int32_t* __restrict__ perm, double* __restrict__ W) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * Kp) return;
  const int n = (int)(idx / Kp), j = (int)(idx % Kp);
  W[idx] = j < K ? (double)w[(size_t)n * K + (perm ? perm[j] : j)] : 0.0;
}

/** One B-block [k0, k0 + B) of every row: clip search, then column by column code, error, in-block update.
 *  E [N][B] f64: the errors e = (x − q·s) / U[k][k], the trailing update's left operand. */
__global__ void __launch_bounds__(QW * 32) gptq_block_kernel(double* __restrict__ W, int N, int K, int Kp, int B, int k0,
                                                             const double* __restrict__ U, int grid, double* __restrict__ E,
                                                             int8_t* __restrict__ codes, uint16_t* __restrict__ scales) {
  __shared__ double rows[QW][128];
  const int wi = threadIdx.x / 32, lane = threadIdx.x % 32, n = blockIdx.x * QW + wi;
  if (n >= N) return;  // whole warps only: no block-wide barrier below
  double* r = rows[wi];
  double* Wr = W + (size_t)n * Kp + k0;
  double amax = 0.0;
  for (int k = lane; k < B; k += 32) { r[k] = Wr[k]; amax = fmax(amax, fabs(r[k])); }
  for (int o = 16; o; o >>= 1) amax = fmax(amax, __shfl_xor_sync(0xffffffffu, amax, o));  // max: any order
  __syncwarp();
  // clip search (gptq.ts clipScale): grid point g on lane g, its squared error summed in k order
  double s = 0.0, err = INFINITY;
  if (lane < grid) {
    s = f16_round(__ddiv_rn(__dmul_rn(amax, __dsub_rn(1.0, __ddiv_rn(0.5 * lane, (double)grid))), 7.0));
    if (s != 0.0) {
      err = 0.0;
      for (int k = 0; k < B; k++) {
        const double d = __dsub_rn(r[k], __dmul_rn((double)q4(r[k], s), s));
        err = __dadd_rn(err, __dmul_rn(d, d));
      }
    }
  }
  // the reference walks g ascending: the first zero scale returns 0, else the first strictly smallest error wins
  double best = INFINITY, sn = 0.0;
  for (int g = 0; g < grid; g++) {
    const double sg = __shfl_sync(0xffffffffu, s, g), eg = __shfl_sync(0xffffffffu, err, g);
    if (sg == 0.0) { sn = 0.0; break; }
    if (eg < best) { best = eg; sn = sg; }
  }
  if (lane == 0) scales[(size_t)n * (Kp / B) + k0 / B] = __half_as_ushort(__float2half_rn((float)sn));  // exact: an f16 value
  for (int i = 0; i < B; i++) {
    const int k = k0 + i;
    const double x = r[i], d = U[(size_t)k * Kp + k];
    const int q = q4(x, sn);
    const double e = __ddiv_rn(__dsub_rn(x, __dmul_rn((double)q, sn)), d);
    if (lane == 0) {
      codes[(size_t)n * Kp + k] = k < K ? (int8_t)q : 0;
      E[(size_t)n * B + i] = e;
    }
    __syncwarp();  // r[i] read by every lane before the update below writes r[j > i]
    if (e != 0.0)
      for (int j = i + 1 + lane; j < B; j += 32) r[j] = __dsub_rn(r[j], __dmul_rn(e, U[(size_t)k * Kp + k0 + j]));
    __syncwarp();
  }
}

constexpr int UT = 64, UK = 32;  // trailing update: 64 rows × 64 columns a CTA, k in chunks of 32, 256 threads

/** W[n][j] -= E[n][i]·U[k0 + i][j] for i ascending (skipped where E is 0, as the reference skips the row), j >= k0 + B */
__global__ void __launch_bounds__(256) gptq_update_kernel(double* __restrict__ W, int N, int Kp, int B, int k0,
                                                          const double* __restrict__ U, const double* __restrict__ E) {
  __shared__ double es[UK][UT + 1], us[UK][UT];
  const int j0 = k0 + B + blockIdx.x * UT, n0 = blockIdx.y * UT, tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  double acc[4][4];
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int n = n0 + ty + 16 * a, j = j0 + tx + 16 * c;
      acc[a][c] = (n < N && j < Kp) ? W[(size_t)n * Kp + j] : 0.0;
    }
  for (int i0 = 0; i0 < B; i0 += UK) {
    for (int idx = threadIdx.x; idx < UK * UT; idx += 256) {
      const int kk = idx % UK, rr = idx / UK;  // es: rows of E, read along k (coalesced in i)
      es[kk][rr] = n0 + rr < N ? E[(size_t)(n0 + rr) * B + i0 + kk] : 0.0;
      const int cc = idx % UT, k2 = idx / UT;  // us: rows of U, read along j
      us[k2][cc] = j0 + cc < Kp ? U[(size_t)(k0 + i0 + k2) * Kp + j0 + cc] : 0.0;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < UK; kk++) {
      double e[4], u[4];
#pragma unroll
      for (int a = 0; a < 4; a++) e[a] = es[kk][ty + 16 * a];
#pragma unroll
      for (int c = 0; c < 4; c++) u[c] = us[kk][tx + 16 * c];
#pragma unroll
      for (int a = 0; a < 4; a++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const double t = __dsub_rn(acc[a][c], __dmul_rn(e[a], u[c]));
          acc[a][c] = e[a] != 0.0 ? t : acc[a][c];
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const int n = n0 + ty + 16 * a, j = j0 + tx + 16 * c;
      if (n < N && j < Kp) W[(size_t)n * Kp + j] = acc[a][c];
    }
}

int check(const char* op) { return comet_ops::check_launch(op); }

}  // namespace

extern "C" {

int comet_gptq_hessian_add(const float* x, int T, int K, double* H, void* stream) {
  if (T <= 0 || K <= 0) return set_error(COMET_EINVAL, "gptq_hessian_add: T = %d, K = %d must be positive", T, K);
  dim3 grid(cdiv(K, HT), cdiv(K, HT));
  hessian_add_kernel<<<grid, 256, 0, S(stream)>>>(x, T, K, H);
  return check("gptq_hessian_add");
}

int comet_gptq_permute(const double* H, int K, int Kp, const int32_t* perm, const double* scale, double damp, double* P, void* stream) {
  if (K <= 0 || Kp < K) return set_error(COMET_EINVAL, "gptq_permute: K = %d, Kp = %d", K, Kp);
  double* mean = nullptr;
  COMET_TRY("gptq_permute", cudaMallocAsync((void**)&mean, sizeof(double), S(stream)));
  diag_mean_kernel<<<1, 1, 0, S(stream)>>>(H, K, perm, scale, mean);
  permute_kernel<<<cdiv((size_t)Kp * Kp, 256), 256, 0, S(stream)>>>(H, K, Kp, perm, scale, mean, damp, P);
  int rc = check("gptq_permute");
  cudaFreeAsync(mean, S(stream));
  return rc;
}

int comet_gptq_inv_chol_upper(const double* P, int n, double* U, void* stream) {
  if (n <= 0) return set_error(COMET_EINVAL, "gptq_inv_chol_upper: n = %d", n);
  double *Mt = nullptr, *Mi = nullptr, *pan = nullptr;
  int* status = nullptr;
  const size_t nn = (size_t)n * n * sizeof(double);
  // pan: the Cholesky panel [n][JB], and the inverse's row-block sums [JB][n]
  if (cudaMalloc((void**)&Mt, nn) != cudaSuccess || cudaMalloc((void**)&Mi, nn) != cudaSuccess ||
      cudaMalloc((void**)&pan, (size_t)n * JB * sizeof(double)) != cudaSuccess || cudaMalloc((void**)&status, sizeof(int)) != cudaSuccess) {
    cudaFree(Mt), cudaFree(Mi), cudaFree(pan), cudaFree(status);
    cudaGetLastError();
    return set_error(COMET_ENOMEM, "gptq_inv_chol_upper: %zu bytes of f64 workspace for n = %d do not fit", 2 * nn, n);
  }
  int rc = 0;
  cudaMemsetAsync(Mt, 0, nn, S(stream));
  cudaMemsetAsync(Mi, 0, nn, S(stream));
  cudaMemsetAsync(status, 0, sizeof(int), S(stream));
  for (int j0 = 0; j0 < n && rc == 0; j0 += JB) {
    tri_tile_kernel<true><<<dim3(1, cdiv(n - j0, JB)), 256, 0, S(stream)>>>(Mt, nullptr, P, n, j0, j0, j0, pan);
    chol_diag_kernel<<<1, JB, 0, S(stream)>>>(Mt, n, j0, pan, status);
    if (n - j0 - JB > 0) chol_rows_kernel<<<cdiv(n - j0 - JB, RT), RT, 0, S(stream)>>>(Mt, n, j0, pan);
    rc = check("gptq_inv_chol_upper");
  }
  int bad = 0;
  if (rc == 0) {
    cudaMemcpyAsync(&bad, status, sizeof(int), cudaMemcpyDeviceToHost, S(stream));
    cudaStreamSynchronize(S(stream));
    if (bad) rc = set_error(COMET_EINVAL, "gptq: Hessian is not positive definite (pivot %d); raise the damping", bad - 1);
  }
  for (int i0 = 0; i0 < n && rc == 0; i0 += JB) {
    if (i0 > 0) tri_tile_kernel<false><<<dim3(i0 / JB, 1), 256, 0, S(stream)>>>(Mt, Mi, nullptr, n, i0, 0, i0, pan);
    inverse_rows_kernel<<<cdiv(min(n, i0 + JB), RT), RT, 0, S(stream)>>>(Mt, n, i0, pan, Mi);
    rc = check("gptq_inv_chol_upper");
  }
  if (rc == 0) {
    reverse_kernel<<<cdiv((size_t)n * n, 256), 256, 0, S(stream)>>>(Mi, n, U);
    rc = check("gptq_inv_chol_upper");
  }
  cudaStreamSynchronize(S(stream));
  cudaFree(Mt), cudaFree(Mi), cudaFree(pan), cudaFree(status);
  return rc;
}

int comet_gptq_quantize(const float* w, int N, int K, int Kp, int B, const int32_t* perm, const double* U, int grid,
                        int8_t* codes, uint16_t* scales, void* stream) {
  if (N <= 0 || K <= 0 || Kp < K || (B != 32 && B != 64 && B != 128) || Kp % B != 0 || grid < 1 || grid > GRID_MAX)
    return set_error(COMET_EINVAL, "gptq_quantize: N %d, K %d, Kp %d, B %d, grid %d (B in {32, 64, 128} dividing Kp, grid <= %d)", N, K, Kp, B, grid, GRID_MAX);
  double *W = nullptr, *E = nullptr;  // the rows being updated [N][Kp] and one block's errors [N][B], f64
  if (cudaMalloc((void**)&W, (size_t)N * Kp * sizeof(double)) != cudaSuccess || cudaMalloc((void**)&E, (size_t)N * B * sizeof(double)) != cudaSuccess) {
    cudaFree(W), cudaFree(E);
    cudaGetLastError();
    return set_error(COMET_ENOMEM, "gptq_quantize: %zu bytes of f64 rows for N = %d, Kp = %d do not fit", (size_t)N * (Kp + B) * sizeof(double), N, Kp);
  }
  gptq_gather_kernel<<<cdiv((size_t)N * Kp, 256), 256, 0, S(stream)>>>(w, N, K, Kp, perm, W);
  int rc = check("gptq_quantize");
  for (int k0 = 0; k0 < Kp && rc == 0; k0 += B) {
    gptq_block_kernel<<<cdiv(N, QW), QW * 32, 0, S(stream)>>>(W, N, K, Kp, B, k0, U, grid, E, codes, scales);
    if (Kp - k0 - B > 0) gptq_update_kernel<<<dim3(cdiv(Kp - k0 - B, UT), cdiv(N, UT)), 256, 0, S(stream)>>>(W, N, Kp, B, k0, U, E);
    rc = check("gptq_quantize");
  }
  cudaStreamSynchronize(S(stream));
  cudaFree(W), cudaFree(E);
  return rc;
}

}  // extern "C"
