// LAB COPY (not built): v6 (wgmma, both operands converted into swizzled shared memory), variant 5 of cuda/gemm_w4ax.cu until 2026-12-02, superseded by v7
// (cuda/gemm_w4ax_sm90.cu: faster on 28 of the 32 M >= 64 rows measured side by side on the H200, 2026-12-02,
// bench/results/gemm-2026-12-02-h200.md). Kept for reading and re-measurement, with its notes in cuda/NOTES-gemm.md.
// It relied on gemm_w4ax.cuh, the v4 helpers of gemm_w4ax_mma.cuh (swz4/swz8, tile_epilogue) and the split-K
// workspace of gemm_w4ax.cu (g_ws5, g_tickets5, v5_splits below); to run it again, include it in gemm_w4ax.cu after
// gemm_w4ax_mma.cuh and give it a variant number in pick_variant / comet_gemm_w4ax.

// ---------------------------------------------------------------------------------------------------------
// v6 (sm_90a, B = 128): wgmma. CTA 128x128 = 2 warpgroups of 64x128 (m64n128k32 s8, both operands from shared
// memory, K-major, 128-byte swizzle). Per k-tile (= one B-block):
//   one barrier: tiles li and li+1 have landed (5-stage cp.async ring, 4 tiles ahead; int8 activation rows land
//       directly in the swizzled layout wgmma reads) and tile li was converted in the previous iteration;
//   each warpgroup issues the 4 wgmma of tile li (accumulators MAGIC-initialized);
//   meanwhile all 256 threads convert tile li+1: int4 weights once into int8 (16*q) (and, for W4A4 tiles, the int4
//       activations the same way) into double-buffered swizzled buffers, the weight scales into f32 (sw,
//       1.5*2^23*sw) pairs; fence.proxy.async. The k order inside each k32 step: canonical for W4A8 tiles (as the
//       int8 activations), lo/hi-nibble order of each 8-channel run for W4A4 tiles (both operands alike);
//   each warpgroup waits for its wgmma and runs the block's f32 epilogue (resetting the accumulators to MAGIC); the
//       tensor cores meanwhile run the other warpgroup's wgmma. (Two accumulator sets, epilogue of tile i-1 under the wgmma of tile i, do not survive
//       ptxas 13.0: a wgmma group in flight across the loop's back edge, or a read of the other set while one is
//       in flight, makes it serialize the wgmma (C7514) or inject waits (C7517).)
// Arithmetic per element and block is the one of v4/v5 (same raw = 16*acc or 256*acc, same epilogue formulas).
// Split-K exactly as v5 (same slices, same workspace and tickets).
constexpr int V6_THREADS = 256, V6_STAGES = 5, V6_AHEAD = 4;
constexpr int V6_T8 = 128 * 128;                       // one int8 operand tile (128 rows x 128 bytes, swizzled)
constexpr int V6_FIXED = 4 * V6_T8 + 2 * 1024;         // B8[2], A8[2], SWC[2] (padded): 67,584 bytes
constexpr int V6_STAGE = 25 * 1024;                    // A 16 KB | W int4 8 KB | Sw f16 | Sa f32 (1024-aligned)
constexpr int V6_SMEM = 1024 + V6_FIXED + V6_STAGES * V6_STAGE;  // + alignment slack: 196,608 bytes

/** wgmma m64n128k32 s8.s8 -> s32, A and B from shared memory (descriptors), D += A*B (scale-d = 1: the accumulators
 *  start at MAGIC). */
__device__ __forceinline__ void wgmma_s8_ss(int (&d)[64], uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 1;\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "l"(da), "l"(db));
#else
  __trap();
#endif
}

__device__ __forceinline__ uint64_t v6_desc(uint32_t saddr) {
  return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
__device__ __forceinline__ void v6_fence_acc(int (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}

/** The f32 epilogue of one tile (one B-block) from accumulator set d (this warp's rows r0 = row g, r0 + 8). */
template <bool INT8>
__device__ __forceinline__ void v6_epilogue(int (&d)[64], float (&sum)[64], const float* Sa, const float* swc, int rw,
                                            int g, int t) {
  const float s0 = Sa[rw + g], s1 = Sa[rw + g + 8];
#pragma unroll
  for (int j = 0; j < 16; j++) {
    const float4 q = *(const float4*)(swc + 4 * (4 * j + t));  // (sw, C) of columns 8j+2t, 8j+2t+1
    if (INT8) {
      const float p00 = __fmul_rn(s0, q.x), p01 = __fmul_rn(s0, q.z), p10 = __fmul_rn(s1, q.x), p11 = __fmul_rn(s1, q.z);
      sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], __fmul_rn(magic_to_f32(d[4 * j + 0]), p00));
      sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], __fmul_rn(magic_to_f32(d[4 * j + 1]), p01));
      sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], __fmul_rn(magic_to_f32(d[4 * j + 2]), p10));
      sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], __fmul_rn(magic_to_f32(d[4 * j + 3]), p11));
    } else {
      sum[4 * j + 0] = __fadd_rn(sum[4 * j + 0], w4a4_term(d[4 * j + 0], q.x, q.y, s0));
      sum[4 * j + 1] = __fadd_rn(sum[4 * j + 1], w4a4_term(d[4 * j + 1], q.z, q.w, s0));
      sum[4 * j + 2] = __fadd_rn(sum[4 * j + 2], w4a4_term(d[4 * j + 2], q.x, q.y, s1));
      sum[4 * j + 3] = __fadd_rn(sum[4 * j + 3], w4a4_term(d[4 * j + 3], q.z, q.w, s1));
    }
  }
#pragma unroll
  for (int i = 0; i < 64; i++) d[i] = MAGIC;
}

template <bool OVL>
__global__ void __launch_bounds__(V6_THREADS, 1)
    gemm_v6(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa, int M,
            WDesc w, void* y, int out_f16, int KS, float* __restrict__ ws, int* __restrict__ tickets) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) char smem_raw[];
  char* smem = (char*)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  char* B8 = smem;                                   // [2][128 rows n][128 bytes], swizzled
  char* A8 = smem + 2 * V6_T8;                       // [2][128 rows m][128 bytes], swizzled (W4A4 tiles)
  float* SWC = (float*)(smem + 4 * V6_T8);           // [2][128][2] (each padded to 1 KB)
  char* stages = smem + V6_FIXED;                    // [5][V6_STAGE]: A | W int4 | Sw f16 | Sa f32
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wg = warp >> 2, rw = wg * 64 + (warp & 3) * 16;  // this warp's first row in the tile
  const int m0 = blockIdx.x * 128, n0 = blockIdx.y * 128, ks = blockIdx.z;
  const int ta = ks * w.T / KS, nt_ = (ks + 1) * w.T / KS - ta;
  const bool active = m0 + wg * 64 < M;  // rows of this warpgroup exist (M = 64: the second one idles)

  const int rowb4 = (w.Kp - w.K8) / 2;
  const uint8_t* wsrc = w.q + (size_t)n0 * ROW_BYTES + tid * 16;
  const size_t wstride = (size_t)w.Npad * ROW_BYTES;
  const bool sa_ok = tid < 128 && m0 + tid < M;
  const __half* sap = sa + (size_t)(sa_ok ? m0 + tid : 0) * w.nb;

  auto stage = [&](int li) { return stages + (li % V6_STAGES) * V6_STAGE; };
  // cp.async of k-tile i into stage st: int8 activation rows straight into the 128-byte-swizzled layout wgmma
  // reads; int4 activation rows and int4 weights with 16-byte swizzles that keep the conversion reads conflict-free
  auto load = [&](int i, char* st) {
    if (i < w.T8) {
#pragma unroll
      for (int p = 0; p < 4; p++) {
        const int r = (tid >> 3) + 32 * p, pc = tid & 7;
        const bool ok = m0 + r < M;
        cp_async16(st + r * 128 + ((pc ^ (r & 7)) * 16),
                   ok ? (const void*)(a8 + (size_t)(m0 + r) * w.K8 + (size_t)i * KT + pc * 16) : (const void*)w.q, ok ? 16 : 0);
      }
    } else {
#pragma unroll
      for (int p = 0; p < 2; p++) {
        const int r = (tid >> 2) + 64 * p, pc = tid & 3;
        const bool ok = m0 + r < M;
        cp_async16(st + r * 64 + swz4(r, pc) * 16,
                   ok ? (const void*)(a4 + (size_t)(m0 + r) * rowb4 + (size_t)(i - w.T8) * (KT / 2) + pc * 16)
                      : (const void*)w.q, ok ? 16 : 0);
      }
    }
    const uint8_t* src = wsrc + i * wstride;
#pragma unroll
    for (int p = 0; p < 2; p++) {
      const int piece = tid + 256 * p, n = piece >> 2, tt = piece & 3;
      cp_async16(st + V5_A + n * ROW_BYTES + (tt ^ ((n >> 1) & 3)) * 16, src + 4096 * p, 16);
    }
    if (tid < 16) cp_async16(st + V5_A + V5_W + tid * 16, w.swT + (size_t)i * w.Npad + n0 + tid * 8, 16);
  };
  auto load_sa = [&](int i) -> float {
    return sa_ok ? __fmul_rn(__half2float(sap[i]), i < w.T8 ? 0.0625f : 0.00390625f) : 0.f;
  };
  auto store_sa = [&](char* st, float v) {
    if (tid < 128) ((float*)(st + V5_A + V5_W + V5_SW))[tid] = v;
  };
  // the conversions of the tile in stage st into buffer set b
  auto convert = [&](const char* st, int b, bool int8) {
    {  // weights: row n = tid/2, k32 steps c = 2h, 2h+1; word (tt, c) = 8-channel run tt of step c
      const int n = tid >> 1, h = tid & 1;
      uint2 v[4];
#pragma unroll
      for (int tt = 0; tt < 4; tt++)
        v[tt] = *(const uint2*)(st + V5_A + n * ROW_BYTES + ((tt ^ ((n >> 1) & 3)) * 16) + 8 * h);
      char* dst = B8 + b * V6_T8 + n * 128;
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int c = 2 * h + j;
        const uint32_t x0 = j ? v[0].y : v[0].x, x1 = j ? v[1].y : v[1].x, x2 = j ? v[2].y : v[2].x,
                       x3 = j ? v[3].y : v[3].x;
        uint4 u0, u1;
        if (int8) {  // canonical order: run tt = channels 8tt..8tt+7 = lo16x (8tt..+3), hi16x (8tt+4..+7)
          u0 = make_uint4(lo16x(x0), hi16x(x0), lo16x(x1), hi16x(x1));
          u1 = make_uint4(lo16x(x2), hi16x(x2), lo16x(x3), hi16x(x3));
        } else {  // lo/hi order: positions 4tt+j = channel 8tt+2j, 16+4tt+j = channel 8tt+2j+1
          u0 = make_uint4(lo16x(x0), lo16x(x1), lo16x(x2), lo16x(x3));
          u1 = make_uint4(hi16x(x0), hi16x(x1), hi16x(x2), hi16x(x3));
        }
        *(uint4*)(dst + (((2 * c) ^ (n & 7)) * 16)) = u0;
        *(uint4*)(dst + (((2 * c + 1) ^ (n & 7)) * 16)) = u1;
      }
    }
    if (!int8) {  // int4 activations, the same lo/hi order: row r, step c (one 16-byte piece = 4 runs)
#pragma unroll
      for (int p = 0; p < 2; p++) {
        const int task = tid + 256 * p, r = task >> 2, c = task & 3;
        const uint4 x = *(const uint4*)(st + r * 64 + swz4(r, c) * 16);
        char* dst = A8 + b * V6_T8 + r * 128;
        *(uint4*)(dst + (((2 * c) ^ (r & 7)) * 16)) = make_uint4(lo16x(x.x), lo16x(x.y), lo16x(x.z), lo16x(x.w));
        *(uint4*)(dst + (((2 * c + 1) ^ (r & 7)) * 16)) = make_uint4(hi16x(x.x), hi16x(x.y), hi16x(x.z), hi16x(x.w));
      }
    }
    if (tid < 64) {
      const float2 s = __half22float2(*(const __half2*)(st + V5_A + V5_W + 4 * tid));
      *(float4*)(SWC + b * 256 + 4 * tid) = make_float4(s.x, magic_c(s.x), s.y, magic_c(s.y));
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  };

  int acc[64];
  float sum[64];
#pragma unroll
  for (int i = 0; i < 64; i++) acc[i] = MAGIC, sum[i] = 0.f;

#pragma unroll
  for (int s = 0; s < V6_AHEAD; s++) {
    if (s < nt_) {
      load(ta + s, stage(s));
      store_sa(stage(s), load_sa(ta + s));
    }
    cp_async_commit();
  }
  const uint32_t b8addr = (uint32_t)__cvta_generic_to_shared(B8), a8addr = (uint32_t)__cvta_generic_to_shared(A8);

  if constexpr (OVL) {  // M > 64: the next tile's conversion overlaps this tile's wgmma
    // tile 0's conversion; then per tile li: B1 (tile li+1 landed, tile li converted and fenced), wgmma li issued,
    // tile li+1 converted while the tensor cores run, wait, epilogue li
    if (nt_ > 0) {
      cp_async_wait<V6_AHEAD - 1>();
      __syncthreads();
      convert(stage(0), 0, ta < w.T8);
    }
    for (int li = 0; li < nt_; li++) {
      cp_async_wait<V6_AHEAD - 2>();
      __syncthreads();  // B1: tiles li, li+1 landed; tile li converted; everyone is done with tile li-1
      const int lnext = li + V6_AHEAD;
      float sav = 0.f;
      if (lnext < nt_) {
        load(ta + lnext, stage(lnext));
        sav = load_sa(ta + lnext);
      }
      cp_async_commit();
      const char* st = stage(li);
      const bool int8 = ta + li < w.T8;
      const uint32_t abase = (int8 ? (uint32_t)__cvta_generic_to_shared(st) : a8addr + (li & 1) * V6_T8) + wg * 64 * 128;
      const uint32_t bbase = b8addr + (li & 1) * V6_T8;
      {
        v6_fence_acc(acc);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int c = 0; c < 4; c++) wgmma_s8_ss(acc, v6_desc(abase + 32 * c), v6_desc(bbase + 32 * c));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      }
      // the next tile's conversion into the other buffers (last read by wgmma li-1, which has completed)
      if (li + 1 < nt_) convert(stage(li + 1), (li + 1) & 1, ta + li + 1 < w.T8);
      {  // (no 'if (active)' here: a wgmma in flight across a branch makes ptxas serialize it, C7518)
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        v6_fence_acc(acc);
        // the block's epilogue; the other warpgroup's wgmma keep the tensor cores busy meanwhile
        const float* Sa = (const float*)(st + V5_A + V5_W + V5_SW);
        const float* swc = SWC + (li & 1) * 256;
        if (int8) v6_epilogue<true>(acc, sum, Sa, swc, rw, g, t);
        else v6_epilogue<false>(acc, sum, Sa, swc, rw, g, t);
      }
      if (lnext < nt_) store_sa(stage(lnext), sav);
    }
  } else {  // M <= 64: the second warpgroup idles; convert, barrier, wgmma + epilogue (warpgroup 0 only)
    for (int li = 0; li < nt_; li++) {
      cp_async_wait<V6_AHEAD - 1>();
      __syncthreads();  // B1: tile li landed; everyone is done with tile li-1 (its stage is refilled now) and li-2
      const int lnext = li + V6_AHEAD;
      float sav = 0.f;
      if (lnext < nt_) {
        load(ta + lnext, stage(lnext));
        sav = load_sa(ta + lnext);
      }
      cp_async_commit();
      const char* st = stage(li);
      const bool int8 = ta + li < w.T8;
      convert(st, li & 1, int8);
      __syncthreads();  // B2: the converted operands and scales are written (and fenced for the async proxy)
      const uint32_t abase = (int8 ? (uint32_t)__cvta_generic_to_shared(st) : a8addr + (li & 1) * V6_T8) + wg * 64 * 128;
      const uint32_t bbase = b8addr + (li & 1) * V6_T8;
      if (active) {  // warpgroup-uniform
        v6_fence_acc(acc);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int c = 0; c < 4; c++) wgmma_s8_ss(acc, v6_desc(abase + 32 * c), v6_desc(bbase + 32 * c));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        v6_fence_acc(acc);
        // the block's epilogue; the other warpgroup's wgmma keep the tensor cores busy meanwhile
        const float* Sa = (const float*)(st + V5_A + V5_W + V5_SW);
        const float* swc = SWC + (li & 1) * 256;
        if (int8) v6_epilogue<true>(acc, sum, Sa, swc, rw, g, t);
        else v6_epilogue<false>(acc, sum, Sa, swc, rw, g, t);
      }
      if (lnext < nt_) store_sa(stage(lnext), sav);
    }
  }
  cp_async_wait<0>();

  // out: row rw+g (+8), columns 8j + 2t (+1)
  if (KS == 1) {
    if (!active) return;
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = m0 + rw + g + 8 * (e >> 1), n = n0 + 8 * j + 2 * t + (e & 1);
        if (m < M && n < w.N) v5_store(y, out_f16, w.N, m, n, sum[4 * j + e]);
      }
    return;
  }
  const int tile = blockIdx.x * gridDim.y + blockIdx.y;
  float* part = ws + ((size_t)tile * KS + ks) * (128 * 128);
  if (active) {
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        *(float2*)(part + (rw + g + 8 * h) * 128 + 8 * j + 2 * t) = make_float2(sum[4 * j + 2 * h], sum[4 * j + 2 * h + 1]);
  }
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&tickets[tile], 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = min(128, M - m0), cols = min(128, w.N - n0);
  for (int idx = tid; idx < rows * 128; idx += V6_THREADS) {
    const int r = idx >> 7, cl = idx & 127;
    if (cl >= cols) continue;
    const float* p0 = ws + (size_t)tile * KS * (128 * 128) + idx;
    float s = 0.f;
    for (int k = 0; k < KS; k++) s = __fadd_rn(s, __ldcg(p0 + (size_t)k * (128 * 128)));
    v5_store(y, out_f16, w.N, m0 + r, n0 + cl, s);
  }
  if (tid == 0) tickets[tile] = 0;
#else
  __trap();
#endif
}


static cudaError_t launch_v6(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d, void* y,
                             int out_f16, cudaStream_t s) {
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_v6<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, V6_SMEM);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(gemm_v6<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, V6_SMEM);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  const int KS = v5_splits(d, M);
  if (KS > 1 && !g_ws5) return cudaErrorInvalidValue;  // cannot happen: comet_w4_create reserved it
  dim3 grid((M + 127) / 128, d.Npad / 128, KS);
  if (M > 64)
    gemm_v6<true><<<grid, V6_THREADS, V6_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  else
    gemm_v6<false><<<grid, V6_THREADS, V6_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  return cudaSuccess;
}

