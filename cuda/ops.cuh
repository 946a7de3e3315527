// Shared helpers of the non-GEMM ops (cuda/ops_*.cu): error reporting, launch checks, f16 rounding, RoPE's pair
// rotation, and the FMPQ B-block quantizer (DESIGN §3.2) that rmsnorm_quant, quantize_act and silu_mul_quant end in.
//
// Exactness (DESIGN §3.7). The simulator computes float ops in f64 (JS numbers) and stores f32; these kernels
// do the same where it is cheap (rmsnorm's sum and scaling, silu, rope's rotation, the f32 GEMM's sum,
// attention), so their results equal the simulator's except where an f64 reduction order or a libm last bit
// differs (tier 3, but in practice almost always bit-equal). Quantizers are exact given the same f32 inputs:
// __fdiv_rn, rintf (ties to even), __float2half_rn, no FMA contraction where it could change a bit.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "capi.h"
#include "launch.cuh"
#include "sms.cuh"

namespace comet_ops {

/** Record an error message for comet_last_error() and return `code` (non-zero). */
int set_error(int code, const char* fmt, ...);

/** After a launch: the launch error, if any, as a comet error naming the op. */
inline int check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? 0 : set_error((int)e, "%s: kernel launch failed: %s", op, cudaGetErrorString(e));
}
#define COMET_TRY(op, call)                                                                              \
  do {                                                                                                   \
    cudaError_t e_ = (call);                                                                             \
    if (e_ != cudaSuccess) return comet_ops::set_error((int)e_, "%s: %s", op, cudaGetErrorString(e_));   \
  } while (0)

inline cudaStream_t S(void* s) { return (cudaStream_t)s; }
inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/** An f32 value rounded to f16 (nearest even) and back: the quantizers' input rounding. */
__device__ __forceinline__ float f16r(float x) { return __half2float(__float2half_rn(x)); }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/** Block-wide f64 sum (blockDim.x a multiple of 32, at most 1024); every thread gets the total. */
__device__ inline double block_sum(double v) {
  __shared__ double part[32];
  __shared__ double total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double t = lane < nw ? part[lane] : 0.0;
    t = warp_sum(t);
    if (lane == 0) total = t;
  }
  __syncthreads();
  return total;
}

/** RoPE's cos and sin of a token at position pos for the pair of frequency freq: angle a = f32(pos · freq) (one
 *  rounding, as Math.fround in the simulator), cos and sin of it in f64 rounded to f32 (simulator/kernels/float.ts
 *  rope). They depend on (pos, pair) only: a kernel rotating several heads of a token computes them once per pair. */
__device__ __forceinline__ double2 rope_cs(int pos, float freq) {
  const float a = __fmul_rn((float)pos, freq);
  return make_double2((float)cos((double)a), (float)sin((double)a));
}
/** The rotation of one channel pair (v0, v1) by rope_cs's (c, s), in f64 rounded to f32. */
__device__ __forceinline__ float2 rope_rot(float v0, float v1, double2 cs) {
  return make_float2((float)__dsub_rn(__dmul_rn((double)v0, cs.x), __dmul_rn((double)v1, cs.y)),
                     (float)__dadd_rn(__dmul_rn((double)v0, cs.y), __dmul_rn((double)v1, cs.x)));
}
/** RoPE of one channel pair: rope and rope_kv_append both compute rope_rot(rope_cs), so they agree bit for bit. */
__device__ __forceinline__ float2 rope_pair(float v0, float v1, int pos, float freq) {
  return rope_rot(v0, v1, rope_cs(pos, freq));
}

/** The FMPQ geometry of one activation (DESIGN §3.2); perm may be null (identity). */
struct ActSpec {
  int K, B, Kp, K8;
  const int* perm;
};

constexpr int QUANT_THREADS = 256;  // 8 warps per block (ops_quant.cu)

/** Quantize B-block b of row m from its values, already rounded to f16: lane l holds the E = B/32 consecutive
 *  channels [k0 + lE, k0 + lE + E) in v. amax (warp max, exact), s = f16(amax / qmax), codes clamp(rint(x / s)).
 *  Writes a8 [M][K8], a4 [M][(Kp-K8)/2] canonical int4 (element 2i low nibble), sa [M][Kp/B] f16 bits. */
template <int E>
__device__ __forceinline__ void quantize_block(const ActSpec& sp, int m, int b, const float (&v)[E], int8_t* a8,
                                               uint8_t* a4, uint16_t* sa) {
  const int lane = threadIdx.x & 31;
  const int nb = sp.Kp / sp.B, K4 = sp.Kp - sp.K8;
  const int k0 = b * sp.B + lane * E;
  float amax = 0.f;
#pragma unroll
  for (int e = 0; e < E; e++) amax = fmaxf(amax, fabsf(v[e]));
  amax = warp_max(amax);
  const bool is8 = b * sp.B < sp.K8;
  const float qmax = is8 ? 127.f : 7.f;
  const __half sh = __float2half_rn(__fdiv_rn(amax, qmax));
  const float s = __half2float(sh);
  if (lane == 0) sa[(size_t)m * nb + b] = __half_as_ushort(sh);
  int q[E];
#pragma unroll
  for (int e = 0; e < E; e++)
    q[e] = s == 0.f ? 0 : (int)fminf(qmax, fmaxf(-qmax - 1.f, rintf(__fdiv_rn(v[e], s))));
  if (is8) {
#pragma unroll
    for (int e = 0; e < E; e++) a8[(size_t)m * sp.K8 + k0 + e] = (int8_t)q[e];
  } else {
    uint8_t* row = a4 + (size_t)m * (K4 / 2);
    const int i = k0 - sp.K8;  // element index in the int4 segment (even for E >= 2)
    if constexpr (E == 1) {
      const int hi = __shfl_down_sync(0xffffffffu, q[0], 1);
      if ((lane & 1) == 0) row[i >> 1] = (uint8_t)((q[0] & 15) | ((hi & 15) << 4));
    } else {
#pragma unroll
      for (int e = 0; e < E; e += 2) row[(i + e) >> 1] = (uint8_t)((q[e] & 15) | ((q[e + 1] & 15) << 4));
    }
  }
}

/** Host-side check of an ActSpec; returns 0 or an error code with the message set. */
int check_spec(const char* op, const ActSpec& sp);

}  // namespace comet_ops
