// KV4 attention (the contract of simulator/kernels/attention_kv4.ts, DESIGN §3.5.1): what its two kernel files
// (ops_attention_kv4.cu: dp4a on the CUDA cores, every shape; ops_attention_kv4_mma.cu: mma.sync, the LLaMA shapes)
// and the entry point (ops_attention.cu) share: the contract's constants and float helpers, the kernels' arguments,
// and the launchers each file defines.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>

#include "ops.cuh"

namespace comet_kv4 {

constexpr int KT = 128;                  // threads per block (4 warps)
constexpr int CH = 64, SEG = 128;        // contract: keys per chunk, keys per segment
constexpr int NBUF = 3;                  // staged chunks: this one and two in flight
constexpr int NGMAX = 4;                 // KV4 groups per head at most (G >= head_dim / 4)
constexpr int SPLIT_BELOW = 1024;        // T · n_kv below this: one block per segment (more blocks in flight)

// exp2 on [-1/2, 1/2] (the contract's EXP2_COEFS, f32)
constexpr float E0 = 1.f, E1 = 0.693147182f, E2 = 0.240226462f, E3 = 0.0555032901f, E4 = 0.00961851981f,
                E5 = 0.00133998599f, E6 = 0.000153375775f;

/** the contract's exp2 for x <= 0: 2^rint(x) · poly(x - rint(x)), plain f32 ops. Branch-free (x < -125 or NaN computes
 *  on -126 and selects 0), so the compiler interleaves a lane's independent calls instead of running each behind a
 *  branch: the softmax's ~20-instruction dependent chains are what attn_kv4_mma waits on (NOTES-ops §11). */
__device__ __forceinline__ float exp2c(float x) {
  const bool in = x >= -125.f;
  const float xc = in ? x : -126.f, n = rintf(xc), f = __fsub_rn(xc, n);
  float p = E6;
  p = __fadd_rn(__fmul_rn(p, f), E5);
  p = __fadd_rn(__fmul_rn(p, f), E4);
  p = __fadd_rn(__fmul_rn(p, f), E3);
  p = __fadd_rn(__fmul_rn(p, f), E2);
  p = __fadd_rn(__fmul_rn(p, f), E1);
  p = __fadd_rn(__fmul_rn(p, f), E0);
  const float r = __fmul_rn(p, __int_as_float(((int)n + 127) << 23));
  return in ? r : 0.f;
}

/** the contract's bfly: fr(x_lane + x_lane+32) already in v; xor butterfly over the warp */
__device__ __forceinline__ float bfly(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float h_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu))); }
__device__ __forceinline__ float h_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
/** N bytes global -> shared address d (a 32-bit shared offset: callers that step through a tile add to it, not to a
 *  generic pointer, which costs 64-bit arithmetic per copy); 16 bytes bypass L1 */
template <int N>
__device__ __forceinline__ void cp_async(uint32_t d, const void* src) {
  if constexpr (N == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
  else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(d), "l"(src), "n"(N));
}
template <int N>
__device__ __forceinline__ void cp_async(void* dst, const void* src) { cp_async<N>(smem_u32(dst), src); }
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/** wait until at most N of this thread's cp.async groups are in flight */
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void cp_wait_ahead() { cp_wait<NBUF - 1>(); }

struct Kv4Args {
  const float* q;
  const uint8_t* cache;
  comet_step st;
  comet_kv_geom g;
  int n_heads, split, nseg;  // split: grid.x = nseg segments, states to ws; else grid.x = 1
  float ks;                  // f32(log2(e) / sqrt(hd))
  float* ws;                 // [T][n_heads][nseg][hd + 2]: (m, l, num[hd]) per segment
  float* out;                // [T][n_heads · hd]
};

// ops_attention_kv4.cu
/** every shape kv4_supported accepts, dp4a kernels: grid (split ? nseg : 1, KV head, token), then the combine when split */
int launch_kv4_dp4a(const Kv4Args& a, int hd, int gq, int T, int nkv, cudaStream_t s);
/** attn_kv4_combine over a.nseg segment states per (token, head): grid (n_heads, T) */
int launch_kv4_combine(const Kv4Args& a, int T, int hd, cudaStream_t s);
bool kv4_supported(int hd, int gq);
size_t kv4_workspace(int T, int n_heads, int hd, int max_len);
// ops_attention_kv4_mma.cu
bool kv4_mma_supported(int hd, int gq, int G, int P);
int launch_kv4_mma_any(const Kv4Args& a, int hd, int gq, int T, int nkv, cudaStream_t s);

}  // namespace comet_kv4
