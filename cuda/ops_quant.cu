// FMPQ activation quantizers (DESIGN §3.2), grid (ceil(blocks / 8), tokens) of QUANT_THREADS: each warp one
// B-block of one token row (a decode token's row is spread over several SMs; rmsnorm's sum is computed by every
// block of the row, the same tree in each, so all agree bit for bit):
//   quantize_act      x [T][K] f32                  -> gather by perm, f16, quantize
//   rmsnorm_quant     rmsnorm(x)·w rounded to f32   -> the same (fused: the normalized row never hits memory)
//   add_rmsnorm_quant the residual add too: x + y written back as the new residual, then rmsnorm_quant of it
//   silu_mul_quant    silu(g)·u rounded to f32      -> the same
// Codes are exact against simulator/act.ts given the same f32 values (quantize_row in ops.cuh); the f32 values
// of the fused ops are the float ops' own (f64 math, as ops_float.cu), so they agree up to f64 sum order.
#include <stdlib.h>

#include "ops.cuh"

using namespace comet_ops;

__global__ void __launch_bounds__(QUANT_THREADS) quantize_act_kernel(const float* __restrict__ x, int T, ActSpec sp,
                                                                     int8_t* a8, uint8_t* a4, uint16_t* sa) {
  for (int m = blockIdx.y; m < T; m += gridDim.y) {
    const float* xr = x + (size_t)m * sp.K;
    quantize_row_any(sp, m, [&](int c) { return xr[c]; }, a8, a4, sa);
  }
}

// rmsnorm + FMPQ quantize, grid (B-blocks / 8, tokens): one B-block per warp (quant_grid), each block of a row
// recomputes the row's f64 sum of squares with the same tree. The warp's gathered x[perm[k]] and w[perm[k]] are
// loaded before the sum, so their (dependent) loads overlap the sum's instead of following it.
// ADD (add_rmsnorm_quant): the row is s = f32(x + y) (the add kernel's arithmetic), each block of the row writes
// its share of s to `sum` (the sum loop's iterations j with j % gridDim.x == blockIdx.x), and everything else is
// as for rmsnorm_quant of s: the same bits as add then rmsnorm_quant, in one launch.
template <int E, bool ADD>
__global__ void __launch_bounds__(QUANT_THREADS) rmsnorm_quant_1b_kernel(const float* __restrict__ x,
                                                                         const float* __restrict__ y,
                                                                         const float* __restrict__ w, double eps,
                                                                         int T, ActSpec sp, float* __restrict__ sum,
                                                                         int8_t* a8, uint8_t* a4, uint16_t* sa) {
  const int C = sp.K, lane = threadIdx.x & 31;
  const int b = blockIdx.x * (QUANT_THREADS / 32) + (threadIdx.x >> 5);
  const bool has = b < sp.Kp / sp.B;  // a warp past the last block still takes part in the sum's barriers
  const int k0 = b * sp.B + lane * E;
  for (int m = blockIdx.y; m < T; m += gridDim.y) {
    const size_t r = (size_t)m * C;
    auto ld = [&](int c) { return ADD ? __fadd_rn(x[r + c], y[r + c]) : x[r + c]; };
    float xv[E], wv[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
      const int k = k0 + e;
      const int c = has && k < C ? (sp.perm ? sp.perm[k] : k) : -1;
      xv[e] = c >= 0 ? ld(c) : 0.f;
      wv[e] = c >= 0 ? w[c] : 0.f;
    }
    double ss = 0;
    for (int i = threadIdx.x, j = 0; i < C; i += blockDim.x, j++) {
      const float v = ld(i);
      if (ADD && j % gridDim.x == blockIdx.x) sum[r + i] = v;
      ss += (double)v * v;
    }
    ss = block_sum(ss);
    const double inv = 1.0 / sqrt(ss / C + eps);
    if (has) {
      float v[E];
#pragma unroll
      for (int e = 0; e < E; e++)
        v[e] = k0 + e < C ? f16r((float)__dmul_rn((double)wv[e], __dmul_rn((double)xv[e], inv))) : 0.f;
      quantize_block<E>(sp, m, b, v, a8, a4, sa);
    }
    __syncthreads();  // block_sum's shared total is rewritten by the next row
  }
}

__global__ void __launch_bounds__(QUANT_THREADS) silu_mul_quant_kernel(const float* __restrict__ g,
                                                                       const float* __restrict__ u, int T, ActSpec sp,
                                                                       int8_t* a8, uint8_t* a4, uint16_t* sa) {
  for (int m = blockIdx.y; m < T; m += gridDim.y) {
    const float* gr = g + (size_t)m * sp.K;
    const float* ur = u + (size_t)m * sp.K;
    quantize_row_any(sp, m, [&](int c) {
      const double gd = gr[c];
      return (float)__dmul_rn(__ddiv_rn(gd, 1.0 + exp(-gd)), (double)ur[c]);
    }, a8, a4, sa);
  }
}

/** (B-block groups of 8, tokens) */
static dim3 quant_grid(const ActSpec& sp, int T) {
  return dim3(cdiv(sp.Kp / sp.B, QUANT_THREADS / 32), T < 65535 ? T : 65535);
}

extern "C" int comet_quantize_act(const float* x, int T, int K, int B, int Kp, int K8, const int32_t* perm, int8_t* a8,
                                  uint8_t* a4, uint16_t* sa, void* stream) {
  const ActSpec sp{K, B, Kp, K8, perm};
  if (int e = check_spec("quantize_act", sp)) return e;
  if (T == 0) return 0;
  quantize_act_kernel<<<quant_grid(sp, T), QUANT_THREADS, 0, S(stream)>>>(x, T, sp, a8, a4, sa);
  return check_launch("quantize_act");
}

template <bool ADD>
static int rmsnorm_quant(const char* op, const float* x, const float* y, const float* w, int T, double eps,
                         const ActSpec& sp, float* sum, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  if (int e = check_spec(op, sp)) return e;
  if (T == 0) return 0;
  const dim3 grid = quant_grid(sp, T);  // grid.x·8 >= K/B: one B-block per warp
  if (sp.B == 32) rmsnorm_quant_1b_kernel<1, ADD><<<grid, QUANT_THREADS, 0, S(stream)>>>(x, y, w, eps, T, sp, sum, a8, a4, sa);
  else if (sp.B == 64) rmsnorm_quant_1b_kernel<2, ADD><<<grid, QUANT_THREADS, 0, S(stream)>>>(x, y, w, eps, T, sp, sum, a8, a4, sa);
  else rmsnorm_quant_1b_kernel<4, ADD><<<grid, QUANT_THREADS, 0, S(stream)>>>(x, y, w, eps, T, sp, sum, a8, a4, sa);
  return check_launch(op);
}

extern "C" int comet_rmsnorm_quant(const float* x, const float* w, int T, double eps, int K, int B, int Kp, int K8,
                                   const int32_t* perm, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  return rmsnorm_quant<false>("rmsnorm_quant", x, nullptr, w, T, eps, ActSpec{K, B, Kp, K8, perm}, nullptr, a8, a4, sa, stream);
}

extern "C" int comet_add_rmsnorm_quant(const float* x, const float* y, const float* w, int T, double eps, int K, int B,
                                       int Kp, int K8, const int32_t* perm, float* sum, int8_t* a8, uint8_t* a4,
                                       uint16_t* sa, void* stream) {
  return rmsnorm_quant<true>("add_rmsnorm_quant", x, y, w, T, eps, ActSpec{K, B, Kp, K8, perm}, sum, a8, a4, sa, stream);
}

extern "C" int comet_silu_mul_quant(const float* g, const float* u, int T, int K, int B, int Kp, int K8,
                                    const int32_t* perm, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream) {
  const ActSpec sp{K, B, Kp, K8, perm};
  if (int e = check_spec("silu_mul_quant", sp)) return e;
  if (T == 0) return 0;
  silu_mul_quant_kernel<<<quant_grid(sp, T), QUANT_THREADS, 0, S(stream)>>>(g, u, T, sp, a8, a4, sa);
  return check_launch("silu_mul_quant");
}
