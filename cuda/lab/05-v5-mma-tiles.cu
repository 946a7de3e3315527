// LAB COPY (not built): v5 (mma.sync 128x128 tiles, 8 warps of 64x32), variant 4 of cuda/gemm_w4ax.cu until 2026-12-02, superseded by v7
// (cuda/gemm_w4ax_sm90.cu: faster on 28 of the 32 M >= 64 rows measured side by side on the H200, 2026-12-02,
// bench/results/gemm-2026-12-02-h200.md). Kept for reading and re-measurement, with its notes in cuda/NOTES-gemm.md.
// It relied on gemm_w4ax.cuh, the v4 helpers of gemm_w4ax_mma.cuh (swz4/swz8, tile_epilogue) and the split-K
// workspace of gemm_w4ax.cu (g_ws5, g_tickets5, v5_splits below); to run it again, include it in gemm_w4ax.cu after
// gemm_w4ax_mma.cuh and give it a variant number in pick_variant / comet_gemm_w4ax.

/** v5 k-slices: only when the output tiles are less than one wave; >= 4 k-tiles per slice. */
static int v5_splits(const WDesc& d, int M) {
  const int tiles = (M + 127) / 128 * (d.Npad / 128);
  if (tiles >= num_sms()) return 1;
  int ks = std::min(num_sms() / tiles, d.T / 4);
  return std::max(ks, 1);
}

// ---------------------------------------------------------------------------------------------------------
// v5 tiled kernel (sm_80+ s8 mma; the sm_90 path for B = 128 and M > 32): 128x128 CTA tile, 8 warps of 64x32
// (half the per-mma fragment work of v4's 32x32 warps: each weight word is converted by 2 warps, not 4),
// 4-stage cp.async ring, one B-block per k-tile (B = 128: every tile is full, no bounds logic in the loop),
// per-thread load addresses computed once. Warps whose 64 rows are all >= M skip the math (M = 64).
// Split-K when the grid is less than one wave: blockIdx.z = k-slice [z*T/KS, (z+1)*T/KS) (tile i = block i),
// each slice summed from +0 ascending; the last CTA of a tile (ticket) adds the KS partials in slice order from
// +0 (the schedule comet_gemm_w4ax_schedule reports).
constexpr int V5_THREADS = 256, V5_STAGES = 4, V5_MIN_M = 33;  // auto: v5 for M >= 33 (B = 128, sm_90+)
constexpr int V5_A = 128 * 128, V5_W = 128 * ROW_BYTES, V5_SW = 128 * 2, V5_SA = 128 * 4;
constexpr int V5_STAGE = V5_A + V5_W + V5_SW + V5_SA;  // 25,344 bytes
constexpr int V5_SMEM = V5_STAGES * V5_STAGE;          // 101,376 bytes

template <bool INT8>
__device__ __forceinline__ void v5_tile(int (&acc)[4][4][4], float (&sum)[4][4][4], const char* st, int wm, int wn,
                                        int g, int t) {
  const char* As = st;
  const char* Ws = st + V5_A;
  const __half* Sw = (const __half*)(Ws + V5_W);
  const float* Sa = (const float*)(Ws + V5_W + V5_SW);
  uint4 wv[4];
#pragma unroll
  for (int nt = 0; nt < 4; nt++) wv[nt] = *(const uint4*)(Ws + (wn * 32 + nt * 8 + g) * ROW_BYTES + 16 * t);
#pragma unroll
  for (int c = 0; c < 4; c++) {
    uint32_t a[4][4];
#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
      const int r0 = wm * 64 + mt * 16 + g, r1 = r0 + 8;
      if (INT8) {
        const int pc = 2 * c + (t >> 1);
        const uint2 v0 = *(const uint2*)(As + r0 * 128 + swz8(r0, pc) * 16 + (t & 1) * 8);
        const uint2 v1 = *(const uint2*)(As + r1 * 128 + swz8(r1, pc) * 16 + (t & 1) * 8);
        a[mt][0] = v0.x, a[mt][1] = v1.x, a[mt][2] = v0.y, a[mt][3] = v1.y;
      } else {
        const uint32_t v0 = *(const uint32_t*)(As + r0 * 64 + swz4(r0, c) * 16 + 4 * t);
        const uint32_t v1 = *(const uint32_t*)(As + r1 * 64 + swz4(r1, c) * 16 + 4 * t);
        a[mt][0] = lo16x(v0), a[mt][1] = lo16x(v1), a[mt][2] = hi16x(v0), a[mt][3] = hi16x(v1);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
      const uint32_t x = ((const uint32_t*)&wv[nt])[c];
      const uint32_t b0 = lo16x(x), b1 = hi16x(x);
#pragma unroll
      for (int mt = 0; mt < 4; mt++) {
        if (c == 0) mma_s8_first(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
        else mma_s8(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
      }
    }
  }
  // the block's f32 epilogue (B = 128: one block per k-tile)
  float s[4][2];
#pragma unroll
  for (int mt = 0; mt < 4; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) s[mt][h] = Sa[wm * 64 + mt * 16 + g + 8 * h];
  tile_epilogue<4>(acc, sum, s, Sw + wn * 32, t, INT8);
}

__device__ __forceinline__ void v5_store(void* y, int out_f16, int N, int m, int n, float v) {
  __half h = __float2half_rn(v);
  if (out_f16) ((__half*)y)[(size_t)m * N + n] = h;
  else ((float*)y)[(size_t)m * N + n] = __half2float(h);
}

__global__ void __launch_bounds__(V5_THREADS, 1)
    gemm_v5(const int8_t* __restrict__ a8, const uint8_t* __restrict__ a4, const __half* __restrict__ sa, int M,
            WDesc w, void* y, int out_f16, int KS, float* __restrict__ ws, int* __restrict__ tickets) {
  extern __shared__ __align__(16) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp & 1, wn = warp >> 1;  // warp tile: rows wm*64 .. +64, cols wn*32 .. +32
  const int m0 = blockIdx.x * 128, n0 = blockIdx.y * 128, ks = blockIdx.z;
  const int ta = ks * w.T / KS, nt_ = (ks + 1) * w.T / KS - ta;
  const bool active = m0 + wm * 64 < M;

  // per-thread copy plan (k-tile i: a8 column i*128, a4 byte column (i-T8)*64, weight tile i)
  const int rowb4 = (w.Kp - w.K8) / 2;
  const int8_t* a8p[4];
  const uint8_t* a4p[2];
  int a8d[4], a4d[2];
  bool a8ok[4], a4ok[2];
#pragma unroll
  for (int p = 0; p < 4; p++) {
    const int r = (tid >> 3) + 32 * p, pc = tid & 7;
    a8ok[p] = m0 + r < M;
    a8p[p] = a8ok[p] ? a8 + (size_t)(m0 + r) * w.K8 + pc * 16 : a8;
    a8d[p] = r * 128 + swz8(r, pc) * 16;
  }
#pragma unroll
  for (int p = 0; p < 2; p++) {
    const int r = (tid >> 2) + 64 * p, pc = tid & 3;
    a4ok[p] = m0 + r < M;
    a4p[p] = a4ok[p] ? a4 + (size_t)(m0 + r) * rowb4 + pc * 16 : a4;
    a4d[p] = r * 64 + swz4(r, pc) * 16;
  }
  const uint8_t* wsrc = w.q + (size_t)n0 * ROW_BYTES + tid * 16;
  const size_t wstride = (size_t)w.Npad * ROW_BYTES;
  const bool sa_ok = tid < 128 && m0 + tid < M;
  const __half* sap = sa + (size_t)(sa_ok ? m0 + tid : 0) * w.nb;

  auto load = [&](int i, char* st) {
    if (i < w.T8) {
#pragma unroll
      for (int p = 0; p < 4; p++)
        cp_async16(st + a8d[p], a8ok[p] ? (const void*)(a8p[p] + (size_t)i * KT) : (const void*)w.q, a8ok[p] ? 16 : 0);
    } else {
#pragma unroll
      for (int p = 0; p < 2; p++)
        cp_async16(st + a4d[p], a4ok[p] ? (const void*)(a4p[p] + (size_t)(i - w.T8) * (KT / 2)) : (const void*)w.q,
                   a4ok[p] ? 16 : 0);
    }
    const uint8_t* src = wsrc + i * wstride;
    cp_async16(st + V5_A + tid * 16, src, 16);
    cp_async16(st + V5_A + 4096 + tid * 16, src + 4096, 16);
    if (tid < 16) cp_async16(st + V5_A + V5_W + tid * 16, w.swT + (size_t)i * w.Npad + n0 + tid * 8, 16);
  };
  auto load_sa = [&](int i) -> float {
    return sa_ok ? __fmul_rn(__half2float(sap[i]), i < w.T8 ? 0.0625f : 0.00390625f) : 0.f;
  };
  auto store_sa = [&](char* st, float v) {
    if (tid < 128) ((float*)(st + V5_A + V5_W + V5_SW))[tid] = v;
  };

  int acc[4][4][4];
  float sum[4][4][4];
#pragma unroll
  for (int a = 0; a < 4; a++)
#pragma unroll
    for (int b = 0; b < 4; b++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[a][b][e] = MAGIC, sum[a][b][e] = 0.f;

#pragma unroll
  for (int s = 0; s < V5_STAGES - 1; s++) {
    if (s < nt_) {
      load(ta + s, smem + s * V5_STAGE);
      store_sa(smem + s * V5_STAGE, load_sa(ta + s));
    }
    cp_async_commit();
  }
  float sav = 0.f;
  for (int li = 0; li < nt_; li++) {
    cp_async_wait<V5_STAGES - 2>();
    __syncthreads();
    const int lnext = li + V5_STAGES - 1;
    char* stn = smem + (lnext % V5_STAGES) * V5_STAGE;
    if (lnext < nt_) {
      load(ta + lnext, stn);
      sav = load_sa(ta + lnext);
    }
    cp_async_commit();
    const char* st = smem + (li % V5_STAGES) * V5_STAGE;
    if (active) {
      if (ta + li < w.T8) v5_tile<true>(acc, sum, st, wm, wn, g, t);
      else v5_tile<false>(acc, sum, st, wm, wn, g, t);
    }
    if (lnext < nt_) store_sa(stn, sav);  // its stage was last read before this iteration's barrier
  }
  cp_async_wait<0>();

  if (KS == 1) {
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int m = m0 + wm * 64 + mt * 16 + g + 8 * (e >> 1), n = n0 + wn * 32 + nt * 8 + 2 * t + (e & 1);
          if (m < M && n < w.N) v5_store(y, out_f16, w.N, m, n, sum[mt][nt][e]);
        }
    return;
  }
  // split-K: partial of this slice -> workspace [tile][ks][128][128]; the last CTA of the tile adds them
  const int tile = blockIdx.x * gridDim.y + blockIdx.y;
  float* part = ws + ((size_t)tile * KS + ks) * (128 * 128);
  if (active) {
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = wm * 64 + mt * 16 + g + 8 * h, cl = wn * 32 + nt * 8 + 2 * t;
          *(float2*)(part + r * 128 + cl) = make_float2(sum[mt][nt][2 * h], sum[mt][nt][2 * h + 1]);
        }
  }
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(&tickets[tile], 1) == KS - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int rows = min(128, M - m0), cols = min(128, w.N - n0);
  for (int idx = tid; idx < rows * 128; idx += V5_THREADS) {
    const int r = idx >> 7, cl = idx & 127;
    if (cl >= cols) continue;
    const float* p0 = ws + (size_t)tile * KS * (128 * 128) + idx;
    float s = 0.f;
    for (int k = 0; k < KS; k++) s = __fadd_rn(s, __ldcg(p0 + (size_t)k * (128 * 128)));
    v5_store(y, out_f16, w.N, m0 + r, n0 + cl, s);
  }
  if (tid == 0) tickets[tile] = 0;  // ready for the next launch
}


static cudaError_t launch_v5(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const WDesc& d, void* y,
                             int out_f16, cudaStream_t s) {
  static bool attr = false;
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(gemm_v5, cudaFuncAttributeMaxDynamicSharedMemorySize, V5_SMEM);
    if (e != cudaSuccess) return e;
    attr = true;
  }
  const int KS = v5_splits(d, M);
  if (KS > 1 && !g_ws5) return cudaErrorInvalidValue;  // cannot happen: comet_w4_create reserved it
  dim3 grid((M + 127) / 128, d.Npad / 128, KS);
  gemm_v5<<<grid, V5_THREADS, V5_SMEM, s>>>(a8, a4, (const __half*)sa, M, d, y, out_f16, KS, g_ws5, g_tickets5);
  return cudaSuccess;
}

