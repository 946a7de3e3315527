// W4Ax GEMM v8 (sm_90a, B = 128, M >= 17): warp-specialized wgmma with the weights as the REGISTER operand, fed by
// bulk copies (TMA without tensor maps). Lab notes: cuda/NOTES-gemm.md (v8; v7, its cp.async predecessor, is in git
// history at 53a41f3). Shared layout and helpers: gemm_w4ax.cuh.
//
// Y^T = W * A^T: a CTA computes a 128 (output features n) x NT (tokens m) tile, NT in {32, 64, 128}.
//   before the launch, v8_pack writes the activations (and their scales, as f32 times 2^-4 / 2^-8) in the layout the
//       kernel copies verbatim (v8_pack's comment): every stage of the ring is then four contiguous global ranges.
//   warpgroup 0 (producer): one thread, per k-tile i (= one B-block, 128 channels): wait empty[s] (the consumers are
//       done with the tile STAGES back), arrive on full[s] expecting the stage's bytes, and issue 4 bulk copies whose
//       completion counts those bytes on full[s]: the activation tile [NT][128] (already 128-byte swizzled: wgmma's B
//       operand), the raw int4 weight tile [128 rows][64 B] (one contiguous 8 KB of the [T][Npad][64] layout), the
//       128 weight scales (f16) and the NT activation scales (f32). The other 127 threads leave at once. (v7 had 128
//       threads issue ~12 cp.async each per tile, wait for their own copies LAG tiles later, convert the scales and
//       arrive: its arrival on full[s] sat behind its wait on empty[s], on the consumers' critical path.)
//   warpgroups 1, 2 (consumers, 208 registers): weight rows 64c .. 64c+63 (c = 0, 1). Per k-tile: wait full[s];
//       each thread loads its two weight rows' words (4 x 16 B, LDS) and converts them in registers into the wgmma A
//       fragments (2 instructions per register); 4 x wgmma m64nNTk32 (the first with scale-d = 0: no reset);
//       commit; wait(0) (ptxas serializes wgmma when a group is in flight across the loop's back edge); the
//       block's f32 epilogue (DESIGN 3.4) into the running sums; arrive on empty[s]. The two
//       warpgroups run free (v7's ping-pong, strict alternation of their wgmma groups, measured no faster with the
//       bulk-copy producer: H200 2026-12-03, NOTES-gemm.md).
// k order inside a k32 step (any order is exact if both operands agree; wgmma's A fragment of thread (g, t) holds
// k-positions 4t..4t+3 (a0, a1) and 16+4t..16+4t+3 (a2, a3) of rows g, g+8):
//   INT8 tiles: activations canonical (position = channel). Weight word (piece p, step c) of the layout holds
//       channels 8p..8p+3 in its low nibbles and 8p+4..8p+7 in its high nibbles, so thread t takes pieces t/2 and
//       2 + t/2, low nibbles (x << 4) & 0xF0F0F0F0 for even t, high nibbles x & 0xF0F0F0F0 for odd t.
//   INT4 tiles: weight word (t, c) = canonical nibbles 8t..8t+7: a0 = low nibbles (channels 8t+2j), a2 = high
//       (8t+2j+1); v8_pack writes the activations in the same lo/hi order (position 4tt+j = channel 8tt+2j,
//       16+4tt+j = channel 8tt+2j+1), as v6 did.
// Values are 16*q on both int4 sides: raw = 16*acc (W4A8) or 256*acc (W4A4); the 2^-4 / 2^-8 is in the f32
// activation scale (exact). Accumulators are read as bits of 1.5*2^23 + raw after one integer add (MAGIC).
// The schedule (DESIGN 3.4; S k-tile-aligned slices, a function of the weight's shape only: schedule_slices in
// gemm_w4ax_decode.cuh, reported by comet_gemm_w4ax_schedule): the running sums restart from +0 at every slice, and
// the slices' partials are added in slice order from +0, in one of two ways (v8_plan):
//   split (output tiles < SMs, and their partials fit the workspace): G CTAs per output tile along K, CTA k takes
//       slices [k*S/G, (k+1)*S/G) and writes each slice's partial to the workspace; the tile's last CTA adds them;
//   in-CTA (TOTAL): at each slice end total = total + sum, sum = +0 (a third register set at NT <= 64; in shared
//       memory at NT = 128, since acc 64 + sum 64 + total 64 do not fit 208 registers). With S = 1 neither is
//       needed: any NT, one CTA per tile.
#include "gemm_w4ax.cuh"

#include <cuda_runtime.h>

#include <algorithm>

namespace comet_gemm {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define COMET_V8_DEVICE 1
#endif

constexpr int V8_THREADS = 384;
// Registers: the launch gives every thread 168 (65,536 / 384, rounded down to 8), 64,512 per CTA; setmaxnreg moves
// them from the producer (80) to the consumers (208): 128 x 80 + 256 x 208 = 63,488 <= 64,512. Asking for more than
// the CTA holds (first try: 64 + 224 = 65,536) hangs in setmaxnreg.inc (measured 2026-12-02). ptxas itself allocates
// the whole kernel within the launch bound (168, 0 spills): setmaxnreg does not give a region more to allocate.

/** Shared memory: STAGES stages of ACT [NT][128] (swizzled, wgmma B) | W [128][64] | SW f16[128] | SA f32[NT], each
 *  padded to 1 KB (ACT must be 1024-aligned for the 128-byte swizzle), then (TOTAL at NT = 128) the running total f32
 *  [64][256]. 8 stages where they fit, else 6: up to STAGES tiles of copies in flight. */
template <int NT, bool TOTAL>
struct V8L {
  static constexpr int OFF_W = NT * 128, OFF_SW = OFF_W + 128 * 64, OFF_SA = OFF_SW + 256;
  static constexpr int STAGE = (OFF_SA + NT * 4 + 1023) / 1024 * 1024;
  static constexpr int TOT = TOTAL && NT == 128 ? 64 * 256 * 4 : 0;
  static constexpr int STAGES = TOT ? 6 : 8;
  static constexpr int SMEM = 1024 + STAGES * STAGE + TOT;  // + alignment slack
};
constexpr int V8_MAX_STAGES = 8;

template <int NT>
__device__ __forceinline__ void wgmma_rs(int (&d)[NT / 2], const uint32_t (&a)[4], uint64_t db, int acc);

#ifdef COMET_V8_DEVICE
/** wgmma m64n32k32 s8: A (64 weight rows x k32) from registers, B (k32 x 32 tokens) from shared memory; D = A*B
 *  (+ D when acc != 0). */
template <>
__device__ __forceinline__ void wgmma_rs<32>(int (&d)[16], const uint32_t (&a)[4], uint64_t db, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
/** wgmma m64n64k32 s8: A (64 weight rows x k32) from registers, B (k32 x 64 tokens) from shared memory; D = A*B
 *  (+ D when acc != 0). */
template <>
__device__ __forceinline__ void wgmma_rs<64>(int (&d)[32], const uint32_t (&a)[4], uint64_t db, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
/** wgmma m64n128k32 s8: A (64 weight rows x k32) from registers, B (k32 x 128 tokens) from shared memory; D = A*B
 *  (+ D when acc != 0). */
template <>
__device__ __forceinline__ void wgmma_rs<128>(int (&d)[64], const uint32_t (&a)[4], uint64_t db, int acc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p;\n}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
#else
template <int NT>
__device__ __forceinline__ void wgmma_rs(int (&)[NT / 2], const uint32_t (&)[4], uint64_t, int) { __trap(); }
#endif

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
}
/** Arrives on b (the producer's one arrival) and adds `bytes` to the phase's expected transaction count: the phase
 *  completes when the bulk copies issued next have written them all. */
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
/** One bulk copy (TMA, no tensor map) of `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to
 *  this CTA's shared memory; its completion counts `bytes` on barrier b. */
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(b))
               : "memory");
}
/** Waits for the phase of parity `parity` of barrier b. A wait of over ~20 s (a lost arrival: a bug) traps, so the
 *  launch fails with an error instead of hanging the process. */
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  const uint32_t addr = smem_u32(b);
  uint32_t ok = 0;
  long long t0 = 0;
  for (int n = 0;; n++) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(addr), "r"(parity)
        : "memory");
    if (ok) return;
    if (n == 64) t0 = clock64();
    if (n > 64 && (n & 1023) == 0 && clock64() - t0 > 40000000000LL) __trap();
  }
}
/** K-major operand, 128-byte swizzle, 8-row groups 1024 B apart (as v6). */
__device__ __forceinline__ uint64_t v8_desc(uint32_t saddr) {
  return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
template <int R>
__device__ __forceinline__ void v8_fence_acc(int (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; i++) asm volatile("" : "+r"(d[i])::"memory");
}
__device__ __forceinline__ void v8_fence_a(uint32_t (&a)[4][4]) {
#pragma unroll
  for (int k = 0; k < 4; k++)
    asm volatile("" : "+r"(a[k][0]), "+r"(a[k][1]), "+r"(a[k][2]), "+r"(a[k][3])::"memory");
}
__device__ __forceinline__ void v8_store(void* y, int out_f16, int N, int m, int n, float v) {
  const __half h = __float2half_rn(v);
  if (out_f16) ((__half*)y)[(size_t)m * N + n] = h;
  else ((float*)y)[(size_t)m * N + n] = __half2float(h);
}

template <int NT, bool TOTAL>
__global__ void __launch_bounds__(V8_THREADS, 1)
    gemm_v8(const int8_t* __restrict__ X, const float* __restrict__ SA, int Mpad, int M, WDesc w, void* y, int out_f16,
            int S, float* __restrict__ ws, int* __restrict__ tickets) {
  pdl_enter();  // launch.cuh
#ifdef COMET_V8_DEVICE
  using L = V8L<NT, TOTAL>;
  constexpr int V8_STAGES = L::STAGES;
  constexpr int R = NT / 2;  // accumulators and running sums per consumer thread
  // the in-CTA total at NT = 128 lives in shared memory (acc 64 + sum 64 + total 64 do not fit 208 registers): f32
  // [64][256], value i of consumer thread ct at [i][ct] (conflict-free), after the stage ring
  constexpr bool TSM = TOTAL && NT == 128;
  extern __shared__ __align__(16) char smem_raw[];
  __shared__ __align__(8) uint64_t full[V8_MAX_STAGES], empty[V8_MAX_STAGES];
  __shared__ int last;
  // 1024-aligned by an offset from the shared array itself (not through an integer cast), so every access below
  // stays a shared-space load (LDS), not a generic one
  char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x;
  const int m0 = blockIdx.x * NT, n0 = blockIdx.y * 128, G = gridDim.z;
  const int s0 = blockIdx.z * S / G, s1 = (blockIdx.z + 1) * S / G;  // this CTA's slices [s0, s1)
  const int ta = s0 * w.T / S, nt = s1 * w.T / S - ta;              // and k-tiles [ta, ta + nt)
  auto stage = [&](int li) { return smem + (li % V8_STAGES) * L::STAGE; };
  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < V8_STAGES; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 256);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (tid < 128) {  // ---------------- producer warpgroup: one thread issues the bulk copies, the others leave
    asm volatile("setmaxnreg.dec.sync.aligned.u32 80;\n");
    if (tid != 0) return;
    constexpr uint32_t BYTES = NT * 128 + 128 * ROW_BYTES + 256 + NT * 4;
    for (int j = 0; j < nt; j++) {  // k-tile i = ta + j into stage s: four copies whose bytes complete full[s]
      const int s = j % V8_STAGES, i = ta + j;
      if (j >= V8_STAGES) mbar_wait(&empty[s], ((j / V8_STAGES) - 1) & 1);
      char* st = stage(j);
      mbar_expect_tx(&full[s], BYTES);
      bulk_g2s(st, X + ((size_t)i * Mpad + m0) * KT, NT * 128, &full[s]);
      bulk_g2s(st + L::OFF_W, w.q + ((size_t)i * w.Npad + n0) * ROW_BYTES, 128 * ROW_BYTES, &full[s]);
      bulk_g2s(st + L::OFF_SW, w.swT + (size_t)i * w.Npad + n0, 256, &full[s]);
      bulk_g2s(st + L::OFF_SA, SA + (size_t)i * Mpad + m0, NT * 4, &full[s]);
    }
    return;
  }

  // ---------------- consumer warpgroups
  asm volatile("setmaxnreg.inc.sync.aligned.u32 208;\n");
  const int ct = tid - 128, c = ct >> 7, warp = (ct >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int rA = c * 64 + warp * 16 + g;  // this thread's weight rows in the tile: rA, rA + 8
  int acc[R];
  float sum[R], total[TOTAL && !TSM ? R : 1];
  float* Tot = (float*)(smem + V8_STAGES * L::STAGE) + ct;
#pragma unroll
  for (int i = 0; i < R; i++) acc[i] = 0, sum[i] = 0.f;
#pragma unroll
  for (int i = 0; i < (TOTAL && !TSM ? R : 1); i++) total[i] = 0.f;
  const int tile = blockIdx.x * gridDim.y + blockIdx.y;
  int slice = s0, slice_end = (s0 + 1) * w.T / S - ta;  // slice `slice` ends before local k-tile slice_end
  for (int li = 0; li < nt; li++) {
    const int s = li % V8_STAGES;
    mbar_wait(&full[s], (li / V8_STAGES) & 1);
    const char* st = stage(li);
    const bool int8 = ta + li < w.T8;
    // weight fragments (see the header): pieces p0 / p1 of rows rA, rA + 8, shifts sh0 / sh1
    const int p0 = int8 ? t >> 1 : t, p1 = int8 ? 2 + (t >> 1) : t;
    const int sh0 = int8 ? ((t & 1) ? 0 : 4) : 4, sh1 = int8 ? sh0 : 0;
    const char* W = st + L::OFF_W + rA * ROW_BYTES;
    const uint4 xa0 = *(const uint4*)(W + 16 * p0), xa1 = *(const uint4*)(W + 16 * p1);
    const uint4 xb0 = *(const uint4*)(W + 8 * ROW_BYTES + 16 * p0), xb1 = *(const uint4*)(W + 8 * ROW_BYTES + 16 * p1);
    const uint32_t wa0[4] = {xa0.x, xa0.y, xa0.z, xa0.w}, wa1[4] = {xa1.x, xa1.y, xa1.z, xa1.w};
    const uint32_t wb0[4] = {xb0.x, xb0.y, xb0.z, xb0.w}, wb1[4] = {xb1.x, xb1.y, xb1.z, xb1.w};
    uint32_t a[4][4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      a[k][0] = (wa0[k] << sh0) & 0xF0F0F0F0u, a[k][1] = (wb0[k] << sh0) & 0xF0F0F0F0u;
      a[k][2] = (wa1[k] << sh1) & 0xF0F0F0F0u, a[k][3] = (wb1[k] << sh1) & 0xF0F0F0F0u;
    }
    const uint64_t d0 = v8_desc(smem_u32(st));  // the B descriptor of k32 step k: d0 + 2k (32 bytes further)
    v8_fence_acc(acc);
    v8_fence_a(a);  // all 16 fragment registers materialized before the first wgmma ...
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int k = 0; k < 4; k++) wgmma_rs<NT>(acc, a[k], d0 + 2 * k, k);
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    v8_fence_acc(acc);
    v8_fence_a(a);  // ... and live until the group completed: ptxas cannot reuse them (no wait between the wgmma)
    // the block's f32 epilogue: element (row rA + 8h, token 8j + 2t + e) = acc[4j + 2h + e]
    const float* Sa = (const float*)(st + L::OFF_SA);
    const __half* Sw = (const __half*)(st + L::OFF_SW);
    const float sw0 = __half2float(Sw[rA]), sw1 = __half2float(Sw[rA + 8]);
    const float C0 = magic_c(sw0), C1 = magic_c(sw1);
    if (int8) {
#pragma unroll
      for (int j = 0; j < NT / 8; j++) {
        const float2 s2 = *(const float2*)(Sa + 8 * j + 2 * t);
        const float p00 = __fmul_rn(s2.x, sw0), p01 = __fmul_rn(s2.y, sw0), p10 = __fmul_rn(s2.x, sw1),
                    p11 = __fmul_rn(s2.y, sw1);
        sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], __fmul_rn(magic_to_f32(acc[4 * j + 0] + MAGIC), p00));
        sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], __fmul_rn(magic_to_f32(acc[4 * j + 1] + MAGIC), p01));
        sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], __fmul_rn(magic_to_f32(acc[4 * j + 2] + MAGIC), p10));
        sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], __fmul_rn(magic_to_f32(acc[4 * j + 3] + MAGIC), p11));
      }
    } else {
#pragma unroll
      for (int j = 0; j < NT / 8; j++) {
        const float2 s2 = *(const float2*)(Sa + 8 * j + 2 * t);
        sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], w4a4_term(acc[4 * j + 0] + MAGIC, sw0, C0, s2.x));
        sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], w4a4_term(acc[4 * j + 1] + MAGIC, sw0, C0, s2.y));
        sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], w4a4_term(acc[4 * j + 2] + MAGIC, sw1, C1, s2.x));
        sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], w4a4_term(acc[4 * j + 3] + MAGIC, sw1, C1, s2.y));
      }
    }
    // every consumer thread arrives (count 256) once done with stage s (its warpgroup's wgmma completed: wait_group 0);
    // one arrival per warp after __syncwarp was as fast, but racecheck cannot see that order and flags each read
    // against the next bulk copy into the stage (H200 2026-12-03, NOTES-gemm.md)
    mbar_arrive(&empty[s]);
    if (li + 1 == slice_end) {  // a slice ends: its partial joins the total (in-CTA) or goes to the workspace (split)
      if (TSM) {  // total = total + sum (+0 + sum at the first slice); the last slice's sum is added at the end
        if (li + 1 < nt) {
#pragma unroll
          for (int i = 0; i < R; i++) Tot[i * 256] = slice ? __fadd_rn(Tot[i * 256], sum[i]) : sum[i], sum[i] = 0.f;
        }
      } else if (TOTAL) {
#pragma unroll
        for (int i = 0; i < R; i++) total[i] = __fadd_rn(total[i], sum[i]), sum[i] = 0.f;
      } else if (G > 1) {
        float* part = ws + ((size_t)tile * S + slice) * (NT * 128);
#pragma unroll
        for (int j = 0; j < NT / 8; j++)
#pragma unroll
          for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
              float& x = sum[4 * j + 2 * h + e];
              part[(8 * j + 2 * t + e) * 128 + rA + 8 * h] = x;
              x = 0.f;
            }
      }
      slice++, slice_end = (slice + 1) * w.T / S - ta;
    }
  }

  // out: y[m][n], m = m0 + 8j + 2t + e, n = n0 + rA + 8h
  if (G == 1) {  // S == 1: sum; TOTAL: total (= ((+0 + part_0) + part_1) + ...)
#pragma unroll
    for (int j = 0; j < NT / 8; j++)
#pragma unroll
      for (int h = 0; h < 2; h++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int m = m0 + 8 * j + 2 * t + e, n = n0 + rA + 8 * h;
          const int i = 4 * j + 2 * h + e;
          if (m < M && n < w.N)
            v8_store(y, out_f16, w.N, m, n, TSM ? __fadd_rn(Tot[i * 256], sum[i]) : TOTAL ? total[i] : sum[i]);
        }
    return;
  }
  // split: this CTA's slice partials [NT][128] (token-major) are in the workspace; the tile's last CTA adds all S
  __threadfence();
  asm volatile("bar.sync 2, 256;\n" ::: "memory");
  if (ct == 0) last = atomicAdd(&tickets[tile], 1) == G - 1;
  asm volatile("bar.sync 2, 256;\n" ::: "memory");
  if (!last) return;
  __threadfence();
  const int rows = min(NT, M - m0), cols = min(128, w.N - n0);
  // ((+0 + part_0) + part_1) + ... per element, 4 elements (a float4) x U per thread at a time: S round trips to L2
  // per batch instead of one per element and slice
  constexpr int U = NT / 8;  // NT * 128 / 4 float4 per partial = 256 threads x U
  const float4* p0 = (const float4*)(ws + (size_t)tile * S * (NT * 128));
  float4 v[U];
#pragma unroll
  for (int u = 0; u < U; u++) v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k = 0; k < S; k++) {
    float4 x[U];
#pragma unroll
    for (int u = 0; u < U; u++) x[u] = __ldcg(p0 + (size_t)k * (NT * 32) + ct + 256 * u);
#pragma unroll
    for (int u = 0; u < U; u++)
      v[u] = make_float4(__fadd_rn(v[u].x, x[u].x), __fadd_rn(v[u].y, x[u].y), __fadd_rn(v[u].z, x[u].z),
                         __fadd_rn(v[u].w, x[u].w));
  }
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int q = ct + 256 * u, r = q >> 5, cl = (q & 31) * 4;
    const float e[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (r < rows && cl + i < cols) v8_store(y, out_f16, w.N, m0 + r, n0 + cl + i, e[i]);
  }
  if (ct == 0) tickets[tile] = 0;
#else
  __trap();
#endif
}

int v8_tokens(int M) { return M <= 32 ? 32 : M <= 64 ? 64 : 128; }

size_t v8_ws_floats(int sms) { return (size_t)V8_WS_TILES * sms * 128 * 128; }

V8Plan v8_plan(const WDesc& d, int M, int S, int sms) {
  int NT = v8_tokens(M), tiles = (M + NT - 1) / NT * (d.Npad / 128);
  if (S == 1) return V8Plan{NT, 1, false};
  // 128-token tiles that would split (<= half a wave): 64-token tiles instead, twice as many, often a full wave with
  // the in-register total (H200 2026-12-02: 8B o / down at M = 256, 0.034 / 0.110 ms as 64-token tiles without split
  // against 0.058 / 0.155 as 128-token tiles split in two)
  if (NT == 128 && 2 * tiles <= sms) NT = 64, tiles = (M + 63) / 64 * (d.Npad / 128);
  if (tiles < sms) {  // below one wave: split K across CTAs along the schedule's slices, when their partials fit
    const int G = std::min(S, sms / tiles);
    if (G > 1 && (size_t)tiles * S * NT * 128 <= v8_ws_floats(sms)) return V8Plan{NT, G, false};
  }
  return V8Plan{NT, 1, true};
}

template <int NT, bool TOTAL>
static cudaError_t launch(const int8_t* X, const float* SA, int Mpad, int M, const WDesc& d, int S, int G, void* y,
                          int out_f16, float* ws, int* tickets, cudaStream_t s) {
  constexpr int smem = V8L<NT, TOTAL>::SMEM;
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_v8<NT, TOTAL>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  dim3 grid((M + NT - 1) / NT, d.Npad / 128, G);
  pdl_launch(gemm_v8<NT, TOTAL>, grid, V8_THREADS, smem, s, X, SA, Mpad, M, d, y, out_f16, S, ws, tickets);
  return cudaGetLastError();
}

/** The activations of rows [0, M) in the layout the kernel's bulk copies read (twin: simulator/layouts/act_tiled.ts;
 *  Mpad = M rounded up to 128; rows >= M zero): X [T][Mpad][128] int8, the 128 channels of k-tile i of row m at (i * Mpad + m) * 128 with 16-byte piece pc at
 *  ((pc ^ (m & 7)) * 16): exactly the 128-byte-swizzled K-major tile wgmma reads as B, so any NT-row tile (m0 a
 *  multiple of 8) is one contiguous copy. INT8 tiles (i < T8) hold a8's codes as they are; INT4 tiles hold 16*q in
 *  the lo/hi order of the header (piece 2g: the low nibbles of a4's 16-byte group g of the tile, even channels; piece
 *  2g + 1: the high nibbles). Then SA f32 [T][Mpad]: sa[m][i] * 2^-4 (INT8 tiles) or 2^-8 (INT4 tiles), exact.
 *  One thread per 16-byte piece of X. */
__global__ void v8_pack(const uint4* __restrict__ a8, const uint4* __restrict__ a4, const __half* __restrict__ sa,
                        int M, int Mpad, WDesc w, uint4* __restrict__ X, float* __restrict__ SA) {
  pdl_enter();  // launch.cuh
  const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (idx >= (size_t)w.T * Mpad * 8) return;
  const int pc = (int)(idx & 7);
  const size_t r = idx >> 3;
  const int m = (int)(r % Mpad), i = (int)(r / Mpad);
  uint4 v = make_uint4(0, 0, 0, 0);
  float sc = 0.f;
  if (m < M) {
    if (i < w.T8) {
      v = a8[((size_t)m * w.K8 + (size_t)i * KT) / 16 + pc];
    } else {
      const uint4 x = a4[((size_t)m * (w.Kp - w.K8) / 2 + (size_t)(i - w.T8) * (KT / 2)) / 16 + (pc >> 1)];
      v = (pc & 1) ? make_uint4(hi16x(x.x), hi16x(x.y), hi16x(x.z), hi16x(x.w))
                   : make_uint4(lo16x(x.x), lo16x(x.y), lo16x(x.z), lo16x(x.w));
    }
    if (pc == 0) sc = __fmul_rn(__half2float(sa[(size_t)m * w.nb + i]), i < w.T8 ? 0.0625f : 0.00390625f);
  }
  X[r * 8 + (pc ^ (m & 7))] = v;
  if (pc == 0) SA[r] = sc;
}

static cudaError_t launch_rows(const int8_t* X, const float* SA, int Mpad, int M, const WDesc& d, int S, void* y,
                               int out_f16, int sms, float* ws, int* tickets, cudaStream_t s) {
  const V8Plan p = v8_plan(d, M, S, sms);
  if (p.G > 1 && (!ws || !tickets)) return cudaErrorInvalidValue;
  if (p.total) switch (p.NT) {
      case 32: return launch<32, true>(X, SA, Mpad, M, d, S, 1, y, out_f16, ws, tickets, s);
      case 64: return launch<64, true>(X, SA, Mpad, M, d, S, 1, y, out_f16, ws, tickets, s);
      default: return launch<128, true>(X, SA, Mpad, M, d, S, 1, y, out_f16, ws, tickets, s);
    }
  switch (p.NT) {
    case 32: return launch<32, false>(X, SA, Mpad, M, d, S, p.G, y, out_f16, ws, tickets, s);
    case 64: return launch<64, false>(X, SA, Mpad, M, d, S, p.G, y, out_f16, ws, tickets, s);
    default: return launch<128, false>(X, SA, Mpad, M, d, S, p.G, y, out_f16, ws, tickets, s);
  }
}

cudaError_t launch_v8(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc* const* ds,
                      const int* S, void* const* ys, int n, int out_f16, int sms, float* ws, int* tickets, int8_t* x8,
                      size_t x8_bytes, cudaStream_t s) {
  const WDesc& d = *ds[0];  // the n weights share Kp, B, K8 (one activation serves them all): one pack per chunk
  const __half* h = (const __half*)sa;
  const int K4 = d.Kp - d.K8;
  // rows in chunks (a multiple of 128; every row is computed alone) whose packed activations and scales fit x8
  const size_t row = (size_t)d.T * (KT + 4);
  const size_t fit = x8 ? x8_bytes / row / 128 * 128 : 0;
  if (fit < 128) return cudaErrorInvalidValue;
  const int Mc = (int)std::min<size_t>(fit, (size_t)(M + 127) / 128 * 128);
  for (int m0 = 0; m0 < M; m0 += Mc) {
    const int mc = std::min(Mc, M - m0), Mpad = (mc + 127) / 128 * 128;
    int8_t* X = x8;
    float* SA = (float*)(x8 + (size_t)d.T * Mpad * KT);
    const size_t pieces = (size_t)d.T * Mpad * 8;
    pdl_launch(v8_pack, (unsigned)((pieces + 255) / 256), 256, 0, s,
        (const uint4*)(d.K8 ? a8 + (size_t)m0 * d.K8 : a8), (const uint4*)(K4 ? a4 + (size_t)m0 * K4 / 2 : a4),
        h + (size_t)m0 * d.nb, mc, Mpad, d, (uint4*)X, SA);
    for (int i = 0; i < n; i++) {
      cudaError_t e = launch_rows(X, SA, Mpad, mc, *ds[i], S[i],
                                  (char*)ys[i] + (size_t)m0 * ds[i]->N * (out_f16 ? 2 : 4), out_f16, sms, ws, tickets, s);
      if (e != cudaSuccess) return e;
    }
  }
  return cudaSuccess;
}

}  // namespace comet_gemm
