// FMPQ activation quantizers (DESIGN §3.2), blocks of QUANT_THREADS (8 warps), each warp quantizing whole B-blocks:
//   quantize_act      x [T][K] f32                  -> gather by perm, f16, quantize
//   rmsnorm_quant     rmsnorm(x)·w rounded to f32   -> the same (fused: the normalized row never hits memory)
//   add_rmsnorm_quant the residual add too: x + y written back as the new residual, then rmsnorm_quant of it
//   silu_mul_quant    silu(g)·u rounded to f32      -> the same
// Codes are exact against simulator/act.ts given the same f32 values (quantize_block in ops.cuh); the f32 values
// of the fused ops are the float ops' own (f64 math, as ops_float.cu), so they agree up to f64 sum order.
#include <stdlib.h>

#include <type_traits>

#include "ops.cuh"

using namespace comet_ops;

constexpr int QW = QUANT_THREADS / 32;  // warps per block
constexpr int QNW = 4;                  // B-blocks per warp at most in row_quant_kernel (its perm registers)

enum RowOp { ACT, NORM, ADD_NORM };

/** Lane `lane`'s E channels of B-block b, k = b·B + lane·E + e: the input channel each reads (sp.perm[k], or k
 *  without a perm), -1 for padding (k >= K). */
template <int E>
__device__ __forceinline__ void block_channels(const ActSpec& sp, int b, int lane, int (&c)[E]) {
  const int k0 = b * sp.B + lane * E;
#pragma unroll
  for (int e = 0; e < E; e++) c[e] = k0 + e < sp.K ? (sp.perm ? sp.perm[k0 + e] : k0 + e) : -1;
}

/** One row's values at channels c (0 where c < 0). vec (no perm, K % E == 0, row pointers 4E-byte aligned): the
 *  E consecutive channels of a lane in one 4E-byte load where all are real (c[E-1] >= 0: not the padded tail), the
 *  same values as E 4-byte loads, one load instruction instead of E. */
template <int E>
__device__ __forceinline__ void load_channels(const float* __restrict__ row, const int (&c)[E], bool vec, float (&v)[E]) {
  if (E > 1 && vec && c[E - 1] >= 0) {
    if constexpr (E == 4) {
      const float4 t = *reinterpret_cast<const float4*>(row + c[0]);
      v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
    } else if constexpr (E == 2) {
      const float2 t = *reinterpret_cast<const float2*>(row + c[0]);
      v[0] = t.x, v[1] = t.y;
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < E; e++) v[e] = c[e] >= 0 ? row[c[e]] : 0.f;
}

/** Whether load_channels may load E channels at once for rows of K floats starting at p and q (warp-uniform). */
template <int E>
__device__ __forceinline__ bool vec_rows(const ActSpec& sp, const float* p, const float* q) {
  return E > 1 && !sp.perm && sp.K % E == 0 && ((reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(q)) & (4 * E - 1)) == 0;
}

// quantize_act, rmsnorm_quant and add_rmsnorm_quant.
// quantize_act (ACT) stages nothing (NOTES-ops §14): grid (ceil(nb / 8), tokens), warp w of block (j, .) quantizes
// B-block j·8 + w of rows blockIdx.y, blockIdx.y + gridDim.y, ..., loading its channels x[perm[k]] straight from
// global memory (the perm once, in registers; without a perm, a lane's E consecutive channels in one load). Staged,
// it was slower at every T measured (1 to 256; the rows at o_proj's input are permuted and sit in L2): a row has no
// sum to share, so staging only added a barrier and a shared-memory pass, and at T >= 132 (one block a row) it left
// ~2 blocks per SM with 4 B-blocks a warp in series.
// The norms: grid (splits, tokens). The blocks of a row (grid.x = splits) each stage the whole row in shared memory
// with coalesced loads (xs = x, or s = f32(x + y)) and rmsnorm's f64 sum of squares with rmsnorm_kernel's tree
// (ops_float.cu: thread t of 256 sums channels t, t + 256, ... in ascending order, then block_sum), so every block
// of a row, and the unfused rmsnorm, get the same sum bit for bit whatever the split. Then warp w of split j
// quantizes B-blocks j·8 + w + i·splits·8 (i < QNW), reading its gathered channels perm[k] from shared memory (a
// gather of x, y and w from global memory cost a 32-byte sector per 4-byte value: at T = 256, K = 4096 that was
// ~100 MB of L2 traffic a call against 12 MB of row bytes). The perm of those B-blocks is loaded into registers
// first, w is staged with the row: one memory latency before the sum.
// ADD_NORM: the block of split j writes s to `sum` over channels [j·K/splits, (j+1)·K/splits), every channel once.
// splits (row_splits) only changes which block does what, never a value.
template <int E, RowOp OP>
__global__ void __launch_bounds__(QUANT_THREADS) row_quant_kernel(const float* __restrict__ x, const float* __restrict__ y,
                                                                  const float* __restrict__ w, double eps, int T,
                                                                  ActSpec sp, float* __restrict__ sum, int8_t* a8,
                                                                  uint8_t* a4, uint16_t* sa) {
  pdl_enter();  // launch.cuh
  constexpr bool ADD = OP == ADD_NORM;
  constexpr int U = 16;  // row values loaded per thread before they are summed (all of a 4096-channel row)
  if constexpr (OP == ACT) {  // quantize_act: no staging, grid (ceil(nb / 8), tokens), one B-block per warp
    const int lane = threadIdx.x & 31, b = blockIdx.x * QW + (threadIdx.x >> 5);
    if (b >= sp.Kp / sp.B) return;  // warp-uniform, and this path has no barrier
    int c[E];
    block_channels<E>(sp, b, lane, c);
    const bool vec = vec_rows<E>(sp, x, x);
    for (int m = blockIdx.y; m < T; m += gridDim.y) {
      float v[E];
      load_channels<E>(x + (size_t)m * sp.K, c, vec, v);
#pragma unroll
      for (int e = 0; e < E; e++) v[e] = f16r(v[e]);
      quantize_block<E>(sp, m, b, v, a8, a4, sa);
    }
    return;
  }
  // the norms (quantize_act returned above)
  extern __shared__ float srow[];  // xs [K] | ws [K]
  float* xs = srow;
  float* ws = srow + sp.K;
  const int C = sp.K, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nb = sp.Kp / sp.B;
  const int split = blockIdx.x, splits = gridDim.x;
  const int slo = (int)((long long)C * split / splits), shi = (int)((long long)C * (split + 1) / splits);
  int pc[QNW][E];  // the channel each of this lane's quantized values reads, -1 for padding (k >= K) or no block
#pragma unroll
  for (int i = 0; i < QNW; i++) {
    const int b = split * QW + warp + i * splits * QW;
    if (b < nb) block_channels<E>(sp, b, lane, pc[i]);
    else
#pragma unroll
      for (int e = 0; e < E; e++) pc[i][e] = -1;
  }
  for (int i = tid; i < C; i += QUANT_THREADS) ws[i] = w[i];
  for (int m = blockIdx.y; m < T; m += gridDim.y) {
    const size_t r = (size_t)m * C;
    double ss = 0;
    for (int i0 = tid; i0 < C; i0 += QUANT_THREADS * U) {
      float v[U];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int i = i0 + u * QUANT_THREADS;
        v[u] = i < C ? (ADD ? __fadd_rn(x[r + i], y[r + i]) : x[r + i]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int i = i0 + u * QUANT_THREADS;
        if (i < C) {
          xs[i] = v[u];
          if (ADD && i >= slo && i < shi) sum[r + i] = v[u];
          ss += (double)v[u] * v[u];  // exact product: fma or not, the same sum
        }
      }
    }
    ss = block_sum(ss);  // its first barrier also publishes xs and ws
    const double inv = 1.0 / sqrt(ss / C + eps);
#pragma unroll
    for (int i = 0; i < QNW; i++) {
      const int b = split * QW + warp + i * splits * QW;
      if (b >= nb) break;  // warp-uniform
      float v[E];
#pragma unroll
      for (int e = 0; e < E; e++) {
        const int c = pc[i][e];
        v[e] = c < 0 ? 0.f : f16r((float)__dmul_rn((double)ws[c], __dmul_rn((double)xs[c], inv)));
      }
      quantize_block<E>(sp, m, b, v, a8, a4, sa);
    }
    __syncthreads();  // xs (and block_sum's shared total) are rewritten by the next row
  }
}

/** f(std::integral_constant<int, E>{}) for a B-block of B = 32, 64, 128 (check_spec's sizes): E = B / 32 values a
 *  lane, the kernels' template argument. */
template <class F>
static int with_E(int B, F&& f) {
  if (B == 32) return f(std::integral_constant<int, 1>{});
  if (B == 64) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 4>{});
}

/** Blocks per row of row_quant_kernel's norms: one per 8 B-blocks (a B-block per warp) while T rows alone leave SMs without
 *  a block, down to one per row (every warp QNW B-blocks at K = 4096, B = 128) once T fills the SMs: each extra block
 *  of a row reloads the row and, for the norms, recomputes its sum, which is free when the GPU is idle and 4x the
 *  work at K = 4096 when it is full (T = 256). llama3-8b (K = 4096, B = 128: 32 B-blocks) on 132 SMs: 4 splits at
 *  T <= 33, 3 at T = 34..44 and 64, 2 at 66..131 (T = 128), 1 from T = 132 (T = 256). At least ceil(nb / 32) (QNW
 *  B-blocks per warp). */
static int row_splits(const ActSpec& sp, int T) {
  const int nb = sp.Kp / sp.B, most = (int)cdiv(nb, QW), least = (int)cdiv(nb, QW * QNW);
  const int want = (int)cdiv(sm_count(), T);
  return want < least ? least : want > most ? most : want;
}

template <int E, RowOp OP>
static int launch_row_quant(const char* op, const float* x, const float* y, const float* w, int T, double eps,
                            const ActSpec& sp, float* sum, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  const size_t smem = OP == ACT ? 0 : (size_t)sp.K * sizeof(float) * 2;  // the norms: 32 KiB at K = 4096
  if (smem > (48 << 10)) COMET_TRY(op, cudaFuncSetAttribute(row_quant_kernel<E, OP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid(OP == ACT ? cdiv(sp.Kp / sp.B, QW) : row_splits(sp, T), T < 65535 ? T : 65535);
  pdl_launch(row_quant_kernel<E, OP>, grid, QUANT_THREADS, smem, S(stream), x, y, w, eps, T, sp, sum, a8, a4, sa);
  return check_launch(op);
}

template <RowOp OP>
static int row_quant(const char* op, const float* x, const float* y, const float* w, int T, double eps, const ActSpec& sp,
                     float* sum, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  if (int e = check_spec(op, sp)) return e;
  if (T == 0) return 0;
  return with_E(sp.B, [&](auto e) { return launch_row_quant<decltype(e)::value, OP>(op, x, y, w, T, eps, sp, sum, a8, a4, sa, stream); });
}

// silu_mul_quant: work items (token m, B-block b), item = m · nb + b, one per warp: grid ceil(T · nb / 8) blocks
// (NOTES-ops §14). llama3-8b down_proj input (K = 14336, B = 128: 112 items a token): 112 warps at T = 1, 7,168 at
// T = 64, 28,672 at T = 256, against 6 blocks (48 warps) resident per SM at 40 registers. A walk over the items
// with the stride of the resident warps, each loading its next item's g and u before computing the current one
// (session 8: 48 registers, 5 blocks per SM), measured slower at T = 64 / 256 than this grid (which it had been
// before, then with E scalar loads a lane): fewer warps resident, and the block scheduler's refill of finished
// blocks already staggers the loads of some warps against the f64 math of others.
// Without a perm (down_proj's is folded into gate/up) a lane's E consecutive channels of g and of u come in one
// load each (load_channels). The value is silu_mul's (ops_float.cu), the same f64 operations: silu(g) = g / (1 +
// exp(-g)), times u, to f32.
template <int E>
__global__ void __launch_bounds__(QUANT_THREADS) silu_mul_quant_kernel(const float* __restrict__ g,
                                                                       const float* __restrict__ u, int T, ActSpec sp,
                                                                       int8_t* a8, uint8_t* a4, uint16_t* sa) {
  pdl_enter();  // launch.cuh
  const int lane = threadIdx.x & 31, nb = sp.Kp / sp.B;
  const int it = blockIdx.x * QW + (threadIdx.x >> 5);  // this warp's item; T · nb < 2^31 (checked by the host)
  if (it >= T * nb) return;                             // warp-uniform
  const int m = it / nb, b = it % nb;
  int c[E];
  block_channels<E>(sp, b, lane, c);
  const bool vec = vec_rows<E>(sp, g, u);
  float gv[E], uv[E];
  load_channels<E>(g + (size_t)m * sp.K, c, vec, gv);
  load_channels<E>(u + (size_t)m * sp.K, c, vec, uv);
  float v[E];
#pragma unroll
  for (int e = 0; e < E; e++) {
    const double gd = gv[e];
    v[e] = c[e] >= 0 ? f16r((float)__dmul_rn(__ddiv_rn(gd, 1.0 + exp(-gd)), (double)uv[e])) : 0.f;
  }
  quantize_block<E>(sp, m, b, v, a8, a4, sa);
}

template <int E>
static int launch_silu_mul_quant(const float* g, const float* u, int T, const ActSpec& sp, int8_t* a8, uint8_t* a4,
                                 uint16_t* sa, void* stream) {
  const unsigned grid = cdiv((size_t)T * (sp.Kp / sp.B), QW);  // one (token, B-block) item per warp
  pdl_launch(silu_mul_quant_kernel<E>, grid, QUANT_THREADS, 0, S(stream), g, u, T, sp, a8, a4, sa);
  return check_launch("silu_mul_quant");
}

extern "C" int comet_quantize_act(const float* x, int T, int K, int B, int Kp, int K8, const int32_t* perm, int8_t* a8,
                                  uint8_t* a4, uint16_t* sa, void* stream) {
  return row_quant<ACT>("quantize_act", x, nullptr, nullptr, T, 0.0, ActSpec{K, B, Kp, K8, perm}, nullptr, a8, a4, sa, stream);
}

extern "C" int comet_rmsnorm_quant(const float* x, const float* w, int T, double eps, int K, int B, int Kp, int K8,
                                   const int32_t* perm, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  return row_quant<NORM>("rmsnorm_quant", x, nullptr, w, T, eps, ActSpec{K, B, Kp, K8, perm}, nullptr, a8, a4, sa, stream);
}

extern "C" int comet_add_rmsnorm_quant(const float* x, const float* y, const float* w, int T, double eps, int K, int B,
                                       int Kp, int K8, const int32_t* perm, float* sum, int8_t* a8, uint8_t* a4,
                                       uint16_t* sa, void* stream) {
  return row_quant<ADD_NORM>("add_rmsnorm_quant", x, y, w, T, eps, ActSpec{K, B, Kp, K8, perm}, sum, a8, a4, sa, stream);
}

extern "C" int comet_silu_mul_quant(const float* g, const float* u, int T, int K, int B, int Kp, int K8,
                                    const int32_t* perm, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  const ActSpec sp{K, B, Kp, K8, perm};
  if (int e = check_spec("silu_mul_quant", sp)) return e;
  if (T == 0) return 0;
  if ((long long)T * (Kp / B) >= (1ll << 31) - (1ll << 24)) return set_error(COMET_EINVAL, "silu_mul_quant: %d rows of %d blocks", T, Kp / B);
  return with_E(B, [&](auto e) { return launch_silu_mul_quant<decltype(e)::value>(g, u, T, sp, a8, a4, sa, stream); });
}
