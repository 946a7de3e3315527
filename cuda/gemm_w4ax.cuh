// W4Ax GEMM: the physical weight layout and the small device helpers shared by the kernels in
// gemm_w4ax.cu. The layout's pure-TS twin is simulator/layouts/w4_tiled.ts (keep the two in step).
//
// Physical weight layout (made by comet_w4_create from the canonical [N][Kp/2] int4x2 codes):
//   K is cut into two segments, INT8-activation channels [0, K8) and INT4 ones [K8, Kp); each segment is cut
//   into 128-channel tiles (the last one zero-padded): T8 = ceil(K8/128) tiles, then T4 = ceil((Kp-K8)/128).
//   q: u8 [T8+T4][Npad][64]   Npad = N rounded up to 128 (rows >= N are 0)
//      one tile row = 64 bytes = 4 x 16 bytes, 16-byte piece t (= mma threadID_in_group) holds one 32-bit
//      word per 32-channel chunk c = 0..3 (word (t, c) at byte 16t + 4c): one 16-byte load gives a thread
//      all it needs of that row for the whole tile.
//      INT4 segment: word (t, c) = canonical nibbles k = kc+8t .. kc+8t+7 (kc = 32c), unchanged order.
//      INT8 segment: word (t, c) nibble 2j = W[kc+8t+j], nibble 2j+1 = W[kc+8t+4+j]   (j = 0..3).
//   Conversion to int8 in two instructions (values read as 16*q):
//      lo = (x << 4) & 0xF0F0F0F0  -> bytes 16*nibble(0,2,4,6);   hi = x & 0xF0F0F0F0 -> 16*nibble(1,3,5,7)
//   so for an INT8 chunk, lo/hi are the int8 k-runs [kc+8t, +4) and [kc+8t+4, +4), the same bytes a thread
//   reads from the canonical a8 row with one 8-byte load; for an INT4 chunk, the activation word converts the
//   same way, so both operands agree on the (permuted) order of k inside the mma (any order is exact).
//   swT: f16 [Kp/B][Npad]  weight scales transposed (one block's scales of 128 rows are 256 contiguous bytes).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "launch.cuh"
#include "sms.cuh"

namespace comet_gemm {

constexpr int KT = 128;        // channels per k-tile
constexpr int ROW_BYTES = 64;  // weight bytes per row per k-tile
constexpr int NPAD = 128;      // N is padded to a multiple of this

/** What the kernels need of a repacked weight (passed by value). */
struct WDesc {
  const uint8_t* q;    // [T][Npad][64]
  const __half* swT;   // [nb][Npad]
  int N, Kp, B, K8, Npad, T8, T, nb;
};

__host__ __device__ inline int tiles_of(int k) { return (k + KT - 1) / KT; }

/** First B-block of k-tile i (i == T gives nb). BB = B when known at compile time (no division), else 0. */
template <int BB = 0>
__host__ __device__ inline int tile_block0(const WDesc& w, int i) {
  const int B = BB ? BB : w.B, nbt = KT / B;
  if (i < w.T8) return i * nbt;
  int b = w.K8 / B + (i - w.T8) * nbt;
  return b < w.nb ? b : w.nb;
}
/** Number of real B-blocks in k-tile i (the last tile of a segment may be partial). */
template <int BB = 0>
__host__ __device__ inline int tile_nblocks(const WDesc& w, int i) {
  const int B = BB ? BB : w.B;
  int end = i < w.T8 ? w.K8 / B : w.nb;
  int n = end - tile_block0<BB>(w, i);
  return n < KT / B ? n : KT / B;
}

__device__ __forceinline__ uint32_t lo16x(uint32_t x) { return (x << 4) & 0xF0F0F0F0u; }
__device__ __forceinline__ uint32_t hi16x(uint32_t x) { return x & 0xF0F0F0F0u; }

/** Accumulators start at MAGIC, so after the mma they hold the bits of the f32 1.5*2^23 + raw (|raw| < 2^22,
 *  ulp 1 there): f32(raw) = that - 1.5*2^23, exactly, with no I2F (quarter rate) and no integer add. */
constexpr int MAGIC = 0x4B400000;
__device__ __forceinline__ float magic_to_f32(int acc) { return __fsub_rn(__int_as_float(acc), 12582912.0f); }

__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/** The first mma of a B-block: C = MAGIC (so no reset of the accumulators is needed after an epilogue). */
__device__ __forceinline__ void mma_s8_first(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(MAGIC));
}
template <bool FIRST>
__device__ __forceinline__ void mma_s8x(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  if (FIRST) mma_s8_first(c, a0, a1, a2, a3, b0, b1);
  else mma_s8(c, a0, a1, a2, a3, b0, b1);
}

__device__ __forceinline__ void mma_s4_first(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};\n"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(MAGIC));
}

/** t_b of a W4A4 block in two roundings-free steps: x = bits of 1.5*2^23 + raw (MAGIC accumulator), raw = 2^s*acc.
 *  fma(x, sw, -1.5*2^23*sw) = raw*sw exactly: |acc| <= 8*8*128 = 2^13, so acc*sw has at most 24 significant bits
 *  (13-bit integer times an 11-bit f16 significand; 2^13 itself is a power of two). Then * sa' (= sa*2^-s) rounds
 *  once: round(acc*sw*sa) = round(f32(acc) * (sa*sw)), the contract's t_b, because sa*sw is exact. 3 ops, not 4.
 *  (Not for W4A8 blocks: |acc| up to 2^17 there.) Scales must be finite. */
__device__ __forceinline__ float w4a4_term(int x, float sw, float C, float sa_scaled) {
  return __fmul_rn(__fmaf_rn(__int_as_float(x), sw, -C), sa_scaled);
}
__device__ __forceinline__ float magic_c(float sw) { return __fmul_rn(sw, 12582912.0f); }

__device__ __forceinline__ void mma_s4(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
/** 4-byte cp.async; src_bytes < 4 zero-fills the rest. */
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/** Weights are read exactly once: do not let them evict the activations from L1. */
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/** ((+0 + p[0]) + p[stride]) + ... + p[(n-1)*stride], f32 adds in that order (the schedule's combine), with the loads
 *  issued 8 at a time (L2 reads of the split workspace; a plain loop waits one L2 latency per slice). */
__device__ __forceinline__ float sum_slices(const float* p, size_t stride, int n) {
  float v = 0.f;
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    float x[8];
#pragma unroll
    for (int u = 0; u < 8; u++) x[u] = __ldcg(p + (size_t)(k + u) * stride);
#pragma unroll
    for (int u = 0; u < 8; u++) v = __fadd_rn(v, x[u]);
  }
  for (; k < n; k++) v = __fadd_rn(v, __ldcg(p + (size_t)k * stride));
  return v;
}

// v8 (gemm_w4ax_sm90.cu): warp-specialized wgmma for M >= 17 on sm_90a with B = 128.
/** Tokens per CTA tile of v8 for M tokens (32, 64 or 128) before the schedule's constraint (v8_plan). */
int v8_tokens(int M);
/** How v8 runs the schedule's S slices for M tokens: NT tokens per tile, G CTAs per output tile along K (split, G > 1)
 *  or one with an in-CTA running total (total) or neither (S = 1). */
struct V8Plan {
  int NT, G;
  bool total;
};
V8Plan v8_plan(const WDesc& d, int M, int S, int sms);
/** v8's split workspace: V8_WS_TILES x sms tiles of 128 x 128 f32. */
constexpr int V8_WS_TILES = 4;
size_t v8_ws_floats(int sms);
/** Launches v8 for n weights of one K layout (Kp, B, K8) against one activation, weight i with its schedule's S[i]
 *  slices into ys[i]: the activations are packed once per chunk of rows (v8_pack) and serve every weight. ws / tickets:
 *  v8_ws_floats(sms) f32 and sms zeroed ints (used when split); x8: V8_X8_BYTES for the packed activations and scales
 *  (M is run in chunks of rows that fit). */
constexpr size_t V8_X8_BYTES = 64u << 20;
cudaError_t launch_v8(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc* const* ds,
                      const int* S, void* const* ys, int n, int out_f16, int sms, float* ws, int* tickets, int8_t* x8,
                      size_t x8_bytes, cudaStream_t s);

}  // namespace comet_gemm
