// Attention over the paged KV cache, prefill and decode in one kernel pair (flash-decoding):
//   attn_split    grid (split, head, token): keys [split·chunk, min(split·chunk + chunk, pos+1)) of the token's
//                 sequence, read through its block table (KV4 dequantized in registers, never materialized);
//                 online softmax; writes the partial (max, sum, acc[hd]) to the workspace.
//   attn_combine  grid (head, token): merges the splits and normalizes.
// A key is handled by a sub-group of L = min(32, pow2 >= head_dim) lanes; lane li owns channels li + L·i,
// i < NC, so one warp scores 32/L keys at a time (head_dim 8 -> 4 keys of 8 lanes; 128 -> 1 key, 4 channels
// per lane). Scores, exp and sums are f64, as in simulator/kernels/attention.ts (DESIGN §3.7 tier 3: the sum
// order is ours). GQA: query head h reads KV head h / (n_heads / n_kv_heads).
#include <stdlib.h>
#include <string.h>

#include "ops.cuh"

using namespace comet_ops;

constexpr int ATT_WARPS = 4;
constexpr int MIN_CHUNK = 32;  // keys per split at least

struct AttnArgs {
  const float* q;
  const float* kc;       // f32 cache
  const float* vc;
  const uint8_t* cache;  // kv4 cache
  comet_step st;
  comet_kv_geom g;
  int n_heads, chunk, nsplit, L;
  double* ws;            // [T][n_heads][nsplit][hd + 2]
};

/** One key row's channels for this lane (zeros past head_dim). */
template <int NC, bool KV4>
__device__ __forceinline__ void load_row(const AttnArgs& a, int page, int kvh, int slot, int li, bool isv, double (&r)[NC]) {
  const int hd = a.g.head_dim;
  if constexpr (!KV4) {
    const float* src = (isv ? a.vc : a.kc) + (((size_t)page * a.g.n_kv_heads + kvh) * a.g.page_size + slot) * hd;
#pragma unroll
    for (int i = 0; i < NC; i++) {
      const int c = li + a.L * i;
      r[i] = c < hd ? (double)src[c] : 0.0;
    }
  } else {
    const int P = a.g.page_size, G = a.g.group, ng = hd / G;
    const size_t codeBytes = (size_t)P * hd / 2, szBytes = (size_t)P * ng * 4;
    const uint8_t* base = a.cache + ((size_t)page * a.g.n_kv_heads + kvh) * (2 * codeBytes + 2 * szBytes);
    const uint8_t* codes = base + (isv ? codeBytes : 0) + (size_t)slot * hd / 2;
    const __half* sz = (const __half*)(base + 2 * codeBytes + (isv ? szBytes : 0)) + (size_t)slot * ng * 2;
#pragma unroll
    for (int i = 0; i < NC; i++) {
      const int c = li + a.L * i;
      if (c < hd) {
        const int q = (codes[c >> 1] >> ((c & 1) * 4)) & 15;
        const float s = __half2float(sz[2 * (c / G)]), z = __half2float(sz[2 * (c / G) + 1]);
        r[i] = (double)__fadd_rn(__fmul_rn((float)q, s), z);  // x' = f32(q·s) + z, as kv4DequantizeGroup
      } else {
        r[i] = 0.0;
      }
    }
  }
}

/** Merge state (m2, l2, acc2) into (m, l, acc). */
template <int NC>
__device__ __forceinline__ void merge(double& m, double& l, double (&acc)[NC], double m2, double l2, const double (&acc2)[NC]) {
  const double M = fmax(m, m2);
  if (M == -INFINITY) return;  // both empty
  const double c1 = exp(m - M), c2 = exp(m2 - M);
  l = l * c1 + l2 * c2;
#pragma unroll
  for (int i = 0; i < NC; i++) acc[i] = acc[i] * c1 + acc2[i] * c2;
  m = M;
}

template <int NC, bool KV4>
__global__ void __launch_bounds__(ATT_WARPS * 32) attn_split(AttnArgs a) {
  const int sp = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int L = a.L, li = lane % L, sub = lane / L, KPW = 32 / L;
  const int hd = a.g.head_dim, P = a.g.page_size, C = a.n_heads * hd;
  const int kvh = h / (a.n_heads / a.g.n_kv_heads);
  const int n = a.st.pos[t] + 1;
  const int j0 = sp * a.chunk, j1 = min(n, j0 + a.chunk);
  const int32_t* bt = a.st.bt + a.st.bt_off[a.st.seq[t]];
  const double scale = 1.0 / sqrt((double)hd);

  double qv[NC];
#pragma unroll
  for (int i = 0; i < NC; i++) {
    const int c = li + L * i;
    qv[i] = c < hd ? (double)a.q[(size_t)t * C + (size_t)h * hd + c] : 0.0;
  }
  double m = -INFINITY, l = 0, acc[NC];
#pragma unroll
  for (int i = 0; i < NC; i++) acc[i] = 0;

  for (int jb = j0 + warp * KPW; jb < j1; jb += ATT_WARPS * KPW) {  // warp-uniform bound: shuffles stay converged
    const int j = jb + sub;
    const bool valid = j < j1;
    const int page = valid ? bt[j / P] : 0, slot = j % P;
    double kr[NC];
    if (valid) load_row<NC, KV4>(a, page, kvh, slot, li, false, kr);
    else
#pragma unroll
      for (int i = 0; i < NC; i++) kr[i] = 0;
    double s = 0;
#pragma unroll
    for (int i = 0; i < NC; i++) s += qv[i] * kr[i];
    for (int o = L / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (valid) {
      s *= scale;
      double vr[NC];
      load_row<NC, KV4>(a, page, kvh, slot, li, true, vr);
      const double mn = fmax(m, s), corr = exp(m - mn), p = exp(s - mn);
      l = l * corr + p;
#pragma unroll
      for (int i = 0; i < NC; i++) acc[i] = acc[i] * corr + p * vr[i];
      m = mn;
    }
  }
  // merge the sub-groups of the warp (lanes li of every sub-group hold the same channels)
  for (int o = L; o < 32; o <<= 1) {
    double acc2[NC];
    const double m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
#pragma unroll
    for (int i = 0; i < NC; i++) acc2[i] = __shfl_xor_sync(0xffffffffu, acc[i], o);
    merge<NC>(m, l, acc, m2, l2, acc2);
  }
  // merge the warps through shared memory
  __shared__ double sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][NC * 32];
  if (sub == 0) {
    if (li == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
    for (int i = 0; i < NC; i++) sacc[warp][li + L * i] = acc[i];
  }
  __syncthreads();
  if (warp == 0 && sub == 0) {
    for (int w = 1; w < ATT_WARPS; w++) {
      double acc2[NC];
#pragma unroll
      for (int i = 0; i < NC; i++) acc2[i] = sacc[w][li + L * i];
      merge<NC>(m, l, acc, sm[w], sl[w], acc2);
    }
    double* out = a.ws + (((size_t)t * a.n_heads + h) * a.nsplit + sp) * (hd + 2);
    if (li == 0) out[0] = m, out[1] = l;
#pragma unroll
    for (int i = 0; i < NC; i++) {
      const int c = li + L * i;
      if (c < hd) out[2 + c] = acc[i];
    }
  }
}

__global__ void attn_combine(const double* __restrict__ ws, int n_heads, int hd, int nsplit, float* __restrict__ out) {
  const int h = blockIdx.x, t = blockIdx.y;
  const double* p = ws + ((size_t)t * n_heads + h) * nsplit * (hd + 2);
  double M = -INFINITY;
  for (int s = 0; s < nsplit; s++) M = fmax(M, p[s * (hd + 2)]);
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    double l = 0, acc = 0;
    for (int s = 0; s < nsplit; s++) {
      const double m = p[s * (hd + 2)];
      if (m == -INFINITY) continue;
      const double w = exp(m - M);
      l += p[s * (hd + 2) + 1] * w;
      acc += p[s * (hd + 2) + 2 + c] * w;
    }
    out[(size_t)t * n_heads * hd + (size_t)h * hd + c] = (float)(acc / l);
  }
}

static void plan(int T, int n_heads, int max_len, int* nsplit, int* chunk) {
  // enough blocks to fill the GPU (~4 per SM of an H100) when T·heads is small (decode), one split otherwise;
  // COMET_ATTN_SPLITS=n forces at most n splits (experiments, benchmarks)
  static const int forced = getenv("COMET_ATTN_SPLITS") ? min(1024, atoi(getenv("COMET_ATTN_SPLITS"))) : 0;
  const int want = forced > 0 ? forced : (4 * 132 + T * n_heads - 1) / (T * n_heads);
  int ns = min(want, (max_len + MIN_CHUNK - 1) / MIN_CHUNK);
  ns = max(ns, 1);
  *chunk = (max_len + ns - 1) / ns;
  *nsplit = (max_len + *chunk - 1) / *chunk;
}

// ==== KV4 decode/prefill fast path (flash-decoding over KV4 pages, GQA-shared) ============================
// grid (split, kv_head, token), FA_THREADS threads. One block serves ALL the query heads of a GQA group
// (Gq = n_heads / n_kv_heads <= FA_MAXG) against keys [split·chunk, min(.., pos+1)) of the token's sequence:
// the page codes are read once per group (not once per query head), 16 bytes per thread per load, into shared
// memory, a tile of FA_KT keys at a time, the next tile's loads in flight while this one is computed.
// f32 math (DESIGN §3.7 tier 3): score = Σ_groups s·Σ_c q_c·code_c + z·Σ_c q_c (the dequantized dot product
// q·(code·s + z) regrouped), online softmax per head in registers of the warp that owns the head, P·V with
// each thread owning 4 channels of one head. Partials (m, l, acc) in f32 to the workspace; one split writes
// the normalized output directly.
constexpr int FA_THREADS = 128, FA_KT = 32, FA_MAXG = 16, FA_MINCHUNK = 64;

struct FaArgs {
  const float* q;
  const uint8_t* cache;
  comet_step st;
  comet_kv_geom g;
  int n_heads, gq, chunk, nsplit;
  float scale;
  float* ws;   // [T][n_heads][nsplit][hd + 2] f32
  float* out;  // [T][n_heads·hd]
};

/** The prologue every KV4 fast kernel starts with (one place for the page geometry, DESIGN §3.5): block
 *  (split sp, KV head kvh, token t) covers keys [j0, j1) of the token's sequence, n = pos[t] + 1 of them in
 *  all; (page, head) chunks are kCodes u4x2 [P][hd/2] | vCodes | kSZ f16 [P][ng][2] | vSZ, pages
 *  n_kv_heads chunks apart. base = this head's chunk in page 0: the chunk of key j is page(j). */
struct Kv4Span {
  int P, ng, n, j0, j1;
  const int32_t* bt;     // the sequence's block table
  size_t codeBytes, szBytes, pageStride;
  const uint8_t* base;
  __device__ __forceinline__ Kv4Span(const FaArgs& a, int hd, int sp, int kvh, int t) {
    P = a.g.page_size;
    ng = hd / a.g.group;
    n = a.st.pos[t] + 1;
    j0 = sp * a.chunk;
    j1 = min(n, j0 + a.chunk);
    bt = a.st.bt + a.st.bt_off[a.st.seq[t]];
    codeBytes = (size_t)P * hd / 2;
    szBytes = (size_t)P * ng * 4;
    const size_t headBytes = 2 * codeBytes + 2 * szBytes;
    pageStride = (size_t)a.g.n_kv_heads * headBytes;
    base = a.cache + (size_t)kvh * headBytes;
  }
  /** the (page, head) chunk holding key j */
  __device__ __forceinline__ const uint8_t* page(int j) const { return base + (size_t)bt[j / P] * pageStride; }
};

/** nibble i of w as an exact float, without I2F: the bits of 2^23 + q, minus 2^23 */
__device__ __forceinline__ float nib(uint32_t w, int i) {
  return __uint_as_float(0x4B000000u | ((w >> (4 * i)) & 15u)) - 8388608.f;
}

template <int HD>
__global__ void __launch_bounds__(FA_THREADS) attn_kv4_fast(FaArgs a) {
  constexpr int ROWB = HD / 2;          // code bytes per key row
  constexpr int KROW = ROWB + 16;       // padded K row in shared memory (conflict-free 16-byte lane reads)
  constexpr int V16 = ROWB / 16;        // 16-byte pieces per row
  constexpr int LOADS = (FA_KT * V16 + FA_THREADS - 1) / FA_THREADS;  // per thread, per K (and per V)
  constexpr int MAXU = (FA_MAXG * HD / 4 + FA_THREADS - 1) / FA_THREADS;  // P·V units (head, 4 channels)
  __shared__ __align__(16) uint8_t sk[FA_KT * KROW];
  __shared__ __align__(16) uint8_t sv[FA_KT * ROWB];
  __shared__ uint32_t skz[FA_KT * (HD / 8)], svz[FA_KT * (HD / 8)];  // (s, z) half2 per key per group
  __shared__ __align__(16) float sq[FA_MAXG * HD];
  __shared__ float sqs[FA_MAXG * (HD / 8)];  // Σ q over each group
  __shared__ float sp[FA_MAXG * FA_KT];
  __shared__ float scorr[FA_MAXG];

  const int sp_ = blockIdx.x, kvh = blockIdx.y, t = blockIdx.z, tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const Kv4Span S(a, HD, sp_, kvh, t);
  const int P = S.P, G = a.g.group, ng = S.ng, gq = a.gq, j0 = S.j0, j1 = S.j1;
  const int32_t* bt = S.bt;
  const size_t codeBytes = S.codeBytes, szBytes = S.szBytes, pageStride = S.pageStride;
  const uint8_t* base = S.base;
  const int h0 = kvh * gq;

  // q of the group, scaled; per-group sums
  for (int i = tid; i < gq * HD; i += FA_THREADS)
    sq[i] = a.q[(size_t)t * a.n_heads * HD + (size_t)h0 * HD + i] * a.scale;
  __syncthreads();
  for (int i = tid; i < gq * ng; i += FA_THREADS) {
    const float* r = sq + (i / ng) * HD + (i % ng) * G;
    float s = 0.f;
    for (int c = 0; c < G; c++) s += r[c];
    sqs[i] = s;
  }

  // register staging of one tile: LOADS uint4 of K codes, of V codes, and the (s, z) words
  uint4 rk[LOADS], rv[LOADS];
  constexpr int ZL = (FA_KT * (HD / 8) + FA_THREADS - 1) / FA_THREADS;  // upper bound on (key, group) words
  uint32_t rkz[ZL], rvz[ZL];
  auto load_tile = [&](int jt) {
#pragma unroll
    for (int i = 0; i < LOADS; i++) {
      const int u = tid + i * FA_THREADS, kk = u / V16, part = u % V16, j = jt + kk;
      if (u < FA_KT * V16 && j < j1) {
        const uint8_t* pb = base + (size_t)bt[j / P] * pageStride;
        const int slot = j % P;
        rk[i] = __ldg((const uint4*)(pb + (size_t)slot * ROWB) + part);
        rv[i] = __ldg((const uint4*)(pb + codeBytes + (size_t)slot * ROWB) + part);
      } else {
        rk[i] = make_uint4(0, 0, 0, 0);
        rv[i] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int i = 0; i < ZL; i++) {
      const int u = tid + i * FA_THREADS, kk = u / ng, gi = u % ng, j = jt + kk;
      if (u < FA_KT * ng && j < j1) {
        const uint8_t* pb = base + (size_t)bt[j / P] * pageStride + 2 * codeBytes;
        const int slot = j % P;
        rkz[i] = __ldg((const uint32_t*)pb + (size_t)slot * ng + gi);
        rvz[i] = __ldg((const uint32_t*)(pb + szBytes) + (size_t)slot * ng + gi);
      } else {
        rkz[i] = 0;
        rvz[i] = 0;
      }
    }
  };
  auto store_tile = [&]() {
#pragma unroll
    for (int i = 0; i < LOADS; i++) {
      const int u = tid + i * FA_THREADS, kk = u / V16, part = u % V16;
      if (u < FA_KT * V16) {
        *((uint4*)(sk + kk * KROW) + part) = rk[i];
        *((uint4*)(sv + kk * ROWB) + part) = rv[i];
      }
    }
#pragma unroll
    for (int i = 0; i < ZL; i++) {
      const int u = tid + i * FA_THREADS;
      if (u < FA_KT * ng) skz[u] = rkz[i], svz[u] = rvz[i];
    }
  };

  float m[FA_MAXG / 4], l[FA_MAXG / 4];  // this warp's heads: warp + 4r
#pragma unroll
  for (int r = 0; r < FA_MAXG / 4; r++) m[r] = -INFINITY, l[r] = 0.f;
  float acc[MAXU][4];
#pragma unroll
  for (int u = 0; u < MAXU; u++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[u][e] = 0.f;

  if (j0 < j1) load_tile(j0);
  for (int jt = j0; jt < j1; jt += FA_KT) {
    __syncthreads();  // the previous tile's readers are done (and sq/sqs written)
    store_tile();
    __syncthreads();
    if (jt + FA_KT < j1) load_tile(jt + FA_KT);  // in flight during this tile's math
    // scores: warp w, heads w + 4r; lane = key
#pragma unroll
    for (int r = 0; r < FA_MAXG / 4; r++) {
      const int g = warp + 4 * r;
      if (g < gq) {
      const int j = jt + lane;
      float s = -INFINITY;
      if (j < j1) {
        const float* qg = sq + g * HD;
        const uint8_t* kr = sk + lane * KROW;
        s = 0.f;
        for (int gi = 0; gi < ng; gi++) {
          float d = 0.f;
          for (int c = gi * G; c < (gi + 1) * G; c += 32) {
            const uint4 w4 = *(const uint4*)(kr + c / 2);
            const uint32_t w[4] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
            for (int wi = 0; wi < 4; wi++) {
              const float4 qa = *(const float4*)(qg + c + 8 * wi), qb = *(const float4*)(qg + c + 8 * wi + 4);
              d = fmaf(qa.x, nib(w[wi], 0), d); d = fmaf(qa.y, nib(w[wi], 1), d);
              d = fmaf(qa.z, nib(w[wi], 2), d); d = fmaf(qa.w, nib(w[wi], 3), d);
              d = fmaf(qb.x, nib(w[wi], 4), d); d = fmaf(qb.y, nib(w[wi], 5), d);
              d = fmaf(qb.z, nib(w[wi], 6), d); d = fmaf(qb.w, nib(w[wi], 7), d);
            }
          }
          const __half2 sz = *(const __half2*)&skz[lane * ng + gi];
          s = fmaf(__low2float(sz), d, fmaf(__high2float(sz), sqs[g * ng + gi], s));
        }
      }
      float mx = s;
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mn = fmaxf(m[r], mx);  // finite: the tile has a valid key
      const float p = j < j1 ? expf(s - mn) : 0.f;
      float ps = p;
      for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
      const float corr = expf(m[r] - mn);  // 0 when m was -inf
      l[r] = l[r] * corr + ps;
      m[r] = mn;
      sp[g * FA_KT + lane] = p;
      if (lane == 0) scorr[g] = corr;
      }
    }
    __syncthreads();
    // P·V: unit u = (head g, channels c0..c0+3)
    const int nk = min(FA_KT, j1 - jt);
#pragma unroll
    for (int ui = 0; ui < MAXU; ui++) {
      const int u = tid + ui * FA_THREADS;
      if (u < gq * HD / 4) {
      const int g = u / (HD / 4), c0 = (u % (HD / 4)) * 4, gi = c0 / G;
      const float corr = scorr[g];
      float a0 = acc[ui][0] * corr, a1 = acc[ui][1] * corr, a2 = acc[ui][2] * corr, a3 = acc[ui][3] * corr;
      for (int kk = 0; kk < nk; kk++) {
        const float p = sp[g * FA_KT + kk];
        const __half2 sz = *(const __half2*)&svz[kk * ng + gi];
        const float ps = p * __low2float(sz), pz = p * __high2float(sz);
        const uint32_t w = *(const uint16_t*)(sv + kk * ROWB + c0 / 2);
        a0 = fmaf(ps, nib(w, 0), a0 + pz); a1 = fmaf(ps, nib(w, 1), a1 + pz);
        a2 = fmaf(ps, nib(w, 2), a2 + pz); a3 = fmaf(ps, nib(w, 3), a3 + pz);
      }
      acc[ui][0] = a0, acc[ui][1] = a1, acc[ui][2] = a2, acc[ui][3] = a3;
      }
    }
  }
  // publish this warp's (m, l) per head for the writers
  __syncthreads();
  float* sm_ = sp;  // reuse: m at [g], l at [FA_MAXG + g]
#pragma unroll
  for (int r = 0; r < FA_MAXG / 4; r++) {
    const int g = warp + 4 * r;
    if (g < gq && lane == 0) sm_[g] = m[r], sm_[FA_MAXG + g] = l[r];
  }
  __syncthreads();
#pragma unroll
  for (int ui = 0; ui < MAXU; ui++) {
    const int u = tid + ui * FA_THREADS;
    if (u >= gq * HD / 4) continue;
    const int g = u / (HD / 4), c0 = (u % (HD / 4)) * 4, h = h0 + g;
    if (a.nsplit == 1) {
      const float inv = 1.f / sm_[FA_MAXG + g];
      float4 o = make_float4(acc[ui][0] * inv, acc[ui][1] * inv, acc[ui][2] * inv, acc[ui][3] * inv);
      *(float4*)(a.out + (size_t)t * a.n_heads * HD + (size_t)h * HD + c0) = o;
    } else {
      float* w = a.ws + (((size_t)t * a.n_heads + h) * a.nsplit + sp_) * (HD + 2);
      if (c0 == 0) w[0] = sm_[g], w[1] = sm_[FA_MAXG + g];
#pragma unroll
      for (int e = 0; e < 4; e++) w[2 + c0 + e] = acc[ui][e];
    }
  }
}

// ---- v2: the per-code work shared across the GQA group -------------------------------------------------------
// v1 spends ~4 instructions per (code, head) on both sides (each warp unpacks the K codes for one head; each
// thread unpacks V codes for one head). v2 unpacks each code once for all GQ heads: scores with warp w = channel
// quarter, lane = key (partial dots for every head, summed through shared memory); P·V with thread = channel,
// all heads (P·s per (key, group, head) precomputed, the z terms summed per (head, group) by the softmax warps).
// Needs HD/4 <= G (a channel quarter inside one group). Same inputs, partial format and plan as v1.
template <int HD, int GQ>
__global__ void __launch_bounds__(FA_THREADS) attn_kv4_v2(FaArgs a) {
  constexpr int ROWB = HD / 2, KROW = ROWB + 16, V16 = ROWB / 16;
  constexpr int LOADS = (FA_KT * V16 + FA_THREADS - 1) / FA_THREADS;
  constexpr int Q = HD / 4;                    // channels per quarter (score phase)
  constexpr int QW = Q / 8;                    // u32 code words per quarter
  constexpr int MAXNG = 4;                     // groups per head at most (G >= HD/4)
  constexpr int CH = HD >= FA_THREADS ? HD / FA_THREADS : 1;   // P·V channels per thread
  constexpr int HS = HD >= FA_THREADS ? 1 : FA_THREADS / HD;   // P·V head sets
  constexpr int HPT = (GQ + HS - 1) / HS;                      // heads per thread
  __shared__ __align__(16) uint8_t sk[FA_KT * KROW];
  __shared__ __align__(16) uint8_t sv[FA_KT * ROWB];
  __shared__ uint32_t skz[FA_KT * MAXNG], svz[FA_KT * MAXNG];
  __shared__ __align__(16) float sq[GQ * HD];
  __shared__ float sqq[GQ * 4];                           // Σ q over each quarter
  __shared__ float sd[4 * GQ * FA_KT];                    // partial scores [quarter][head][key]
  __shared__ __align__(16) float sps[FA_KT * MAXNG * GQ]; // p·s_v [key][group][head]
  __shared__ float scorr[GQ], szs[GQ * MAXNG], sml[2 * GQ];

  const int sp_ = blockIdx.x, kvh = blockIdx.y, t = blockIdx.z, tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const Kv4Span S(a, HD, sp_, kvh, t);
  const int P = S.P, G = a.g.group, ng = S.ng, gq = a.gq, j0 = S.j0, j1 = S.j1;
  const int32_t* bt = S.bt;
  const size_t codeBytes = S.codeBytes, szBytes = S.szBytes, pageStride = S.pageStride;
  const uint8_t* base = S.base;
  const int h0 = kvh * gq;

  for (int i = tid; i < GQ * HD; i += FA_THREADS)
    sq[i] = i < gq * HD ? a.q[(size_t)t * a.n_heads * HD + (size_t)h0 * HD + i] * a.scale : 0.f;
  __syncthreads();
  for (int i = tid; i < GQ * 4; i += FA_THREADS) {
    const float* r = sq + (i >> 2) * HD + (i & 3) * Q;
    float s = 0.f;
    for (int c = 0; c < Q; c++) s += r[c];
    sqq[i] = s;
  }

  uint4 rk[LOADS], rv[LOADS];
  uint32_t rkz = 0, rvz = 0;  // FA_KT * ng <= 128 (key, group) words: one per thread
  auto load_tile = [&](int jt) {
#pragma unroll
    for (int i = 0; i < LOADS; i++) {
      const int u = tid + i * FA_THREADS, kk = u / V16, part = u % V16, j = jt + kk;
      if (u < FA_KT * V16 && j < j1) {
        const uint8_t* pb = base + (size_t)bt[j / P] * pageStride;
        const int slot = j % P;
        rk[i] = __ldg((const uint4*)(pb + (size_t)slot * ROWB) + part);
        rv[i] = __ldg((const uint4*)(pb + codeBytes + (size_t)slot * ROWB) + part);
      } else {
        rk[i] = make_uint4(0, 0, 0, 0);
        rv[i] = make_uint4(0, 0, 0, 0);
      }
    }
    const int kk = tid / ng, gi = tid % ng, j = jt + kk;
    if (tid < FA_KT * ng && j < j1) {
      const uint8_t* pb = base + (size_t)bt[j / P] * pageStride + 2 * codeBytes;
      const int slot = j % P;
      rkz = __ldg((const uint32_t*)pb + (size_t)slot * ng + gi);
      rvz = __ldg((const uint32_t*)(pb + szBytes) + (size_t)slot * ng + gi);
    } else {
      rkz = 0, rvz = 0;
    }
  };
  auto store_tile = [&]() {
#pragma unroll
    for (int i = 0; i < LOADS; i++) {
      const int u = tid + i * FA_THREADS, kk = u / V16, part = u % V16;
      if (u < FA_KT * V16) {
        *((uint4*)(sk + kk * KROW) + part) = rk[i];
        *((uint4*)(sv + kk * ROWB) + part) = rv[i];
      }
    }
    if (tid < FA_KT * ng) skz[tid] = rkz, svz[tid] = rvz;
  };

  float m[(GQ + 3) / 4], l[(GQ + 3) / 4];  // softmax state of this warp's heads warp + 4r
#pragma unroll
  for (int r = 0; r < (GQ + 3) / 4; r++) m[r] = -INFINITY, l[r] = 0.f;
  float acc[HPT][CH];
#pragma unroll
  for (int i = 0; i < HPT; i++)
#pragma unroll
    for (int e = 0; e < CH; e++) acc[i][e] = 0.f;
  if (tid < GQ * MAXNG) szs[tid] = 0.f;  // Σ p·z per (head, group): written only by the softmax warps

  if (j0 < j1) load_tile(j0);
  for (int jt = j0; jt < j1; jt += FA_KT) {
    __syncthreads();
    store_tile();
    __syncthreads();
    if (jt + FA_KT < j1) load_tile(jt + FA_KT);
    // 1. partial scores: warp = quarter, lane = key, all heads
    {
      const int c0 = warp * Q, gi = c0 / G;
      const uint8_t* kr = sk + lane * KROW + c0 / 2;
      float d[GQ];
#pragma unroll
      for (int g = 0; g < GQ; g++) d[g] = 0.f;
#pragma unroll
      for (int wi = 0; wi < QW; wi++) {
        const uint32_t w = *(const uint32_t*)(kr + 4 * wi);
        float f[8];
#pragma unroll
        for (int e = 0; e < 8; e++) f[e] = nib(w, e);
#pragma unroll
        for (int g = 0; g < GQ; g++) {
          const float4 qa = *(const float4*)(sq + g * HD + c0 + 8 * wi), qb = *(const float4*)(sq + g * HD + c0 + 8 * wi + 4);
          d[g] = fmaf(qa.x, f[0], d[g]); d[g] = fmaf(qa.y, f[1], d[g]); d[g] = fmaf(qa.z, f[2], d[g]); d[g] = fmaf(qa.w, f[3], d[g]);
          d[g] = fmaf(qb.x, f[4], d[g]); d[g] = fmaf(qb.y, f[5], d[g]); d[g] = fmaf(qb.z, f[6], d[g]); d[g] = fmaf(qb.w, f[7], d[g]);
        }
      }
      const __half2 sz = *(const __half2*)&skz[lane * ng + gi];
      const float s = __low2float(sz), z = __high2float(sz);
#pragma unroll
      for (int g = 0; g < GQ; g++) sd[(warp * GQ + g) * FA_KT + lane] = fmaf(s, d[g], z * sqq[g * 4 + warp]);
    }
    __syncthreads();
    // 2. online softmax: warp w, heads w + 4r, lane = key; P·s_v per group and Σ P·z_v per (head, group)
#pragma unroll
    for (int r = 0; r < (GQ + 3) / 4; r++) {
      const int g = warp + 4 * r;
      if (g < gq) {
        const int j = jt + lane;
        const bool valid = j < j1;
        const float s = valid ? sd[(0 * GQ + g) * FA_KT + lane] + sd[(1 * GQ + g) * FA_KT + lane] +
                                    sd[(2 * GQ + g) * FA_KT + lane] + sd[(3 * GQ + g) * FA_KT + lane]
                              : -INFINITY;
        float mx = s;
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float mn = fmaxf(m[r], mx);
        const float p = valid ? expf(s - mn) : 0.f;
        float ps = p;
        for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        const float corr = expf(m[r] - mn);
        l[r] = l[r] * corr + ps;
        m[r] = mn;
        for (int gi = 0; gi < ng; gi++) {
          const __half2 sz = *(const __half2*)&svz[lane * ng + gi];
          sps[(lane * MAXNG + gi) * GQ + g] = p * __low2float(sz);
          float pz = p * __high2float(sz);
          for (int o = 16; o > 0; o >>= 1) pz += __shfl_xor_sync(0xffffffffu, pz, o);
          if (lane == 0) szs[g * MAXNG + gi] = szs[g * MAXNG + gi] * corr + pz;
        }
        if (lane == 0) scorr[g] = corr;
      } else if (g < GQ) {
        for (int gi = lane; gi < ng; gi += 32)
          for (int kk = 0; kk < FA_KT; kk++) sps[(kk * MAXNG + gi) * GQ + g] = 0.f;
        if (lane == 0) scorr[g] = 0.f;
      }
    }
    __syncthreads();
    // 3. P·V: thread = CH channels x the heads hset + HS·i; each code unpacked once for all of them
    {
      const int nk = min(FA_KT, j1 - jt);
      const int hset = tid / (HD / CH >= FA_THREADS ? FA_THREADS : HD / CH) ;
      const int cbase = (tid % (HD / CH >= FA_THREADS ? FA_THREADS : HD / CH)) * CH;
      const int gi = cbase / G;
#pragma unroll
      for (int i = 0; i < HPT; i++) {
        const float corr = scorr[HS == 1 ? i : min(hset + HS * i, GQ - 1)];
#pragma unroll
        for (int e = 0; e < CH; e++) acc[i][e] *= corr;
      }
      for (int kk = 0; kk < nk; kk++) {
        float f[CH];
        if constexpr (CH == 1) {
          const uint32_t b = sv[kk * ROWB + cbase / 2];
          f[0] = nib(b, cbase & 1);
        } else {
          const uint32_t b = sv[kk * ROWB + cbase / 2];
          f[0] = nib(b, 0), f[1] = nib(b, 1);
        }
        const float* pr = sps + (kk * MAXNG + gi) * GQ;
#pragma unroll
        for (int i = 0; i < HPT; i++) {
          const float pv = pr[HS == 1 ? i : min(hset + HS * i, GQ - 1)];
#pragma unroll
          for (int e = 0; e < CH; e++) acc[i][e] = fmaf(pv, f[e], acc[i][e]);
        }
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < (GQ + 3) / 4; r++) {
    const int g = warp + 4 * r;
    if (g < gq && lane == 0) sml[g] = m[r], sml[GQ + g] = l[r];
  }
  __syncthreads();
  {
    const int hset = tid / (HD / CH >= FA_THREADS ? FA_THREADS : HD / CH);
    const int cbase = (tid % (HD / CH >= FA_THREADS ? FA_THREADS : HD / CH)) * CH;
    const int gi = cbase / G;
#pragma unroll
    for (int i = 0; i < HPT; i++) {
      const int g = hset + HS * i;
      if (g >= gq) continue;
      const int h = h0 + g;
      const float zs = szs[g * MAXNG + gi];
      if (a.nsplit == 1) {
        const float inv = 1.f / sml[GQ + g];
#pragma unroll
        for (int e = 0; e < CH; e++) a.out[(size_t)t * a.n_heads * HD + (size_t)h * HD + cbase + e] = (acc[i][e] + zs) * inv;
      } else {
        float* w = a.ws + (((size_t)t * a.n_heads + h) * a.nsplit + sp_) * (HD + 2);
        if (cbase == 0) w[0] = sml[g], w[1] = sml[GQ + g];
#pragma unroll
        for (int e = 0; e < CH; e++) w[2 + cbase + e] = acc[i][e] + zs;
      }
    }
  }
}

// ==== KV4 decode/prefill on tensor cores (mma.sync m16n8k16, f16 operands, f32 accumulation) ==============
// The v2 kernel spends ~70 warp instructions per key on the CUDA cores (unpack, FMA per (code, head)); here
// both products run on the tensor cores and the CUDA cores only unpack nibbles (~1.4 instructions per code,
// two codes per f16x2 register: lop3 to 1024 + q, one f16x2 subtract). Per warp, a tile of 16 keys:
//   scores  S^T [16 keys][8 cols] = Kcodes [16 keys][HD] · Qx [HD][8 cols], cols 2i/2i+1 = hi/lo f16 parts of
//           query head 4·nt + i (q = hi + lo to ~2^-22: codes 0..15 are exact in f16, so the f32-accumulated
//           dot is f32-accurate). q is pre-scaled per head by a power of two 2^eq (max |q| in [2^14, 2^15)) so
//           the lo part does not fall into f16 subnormals; score = s_k·dot·2^-eq + z_k·Σq (G == HD).
//   P·V     O^T [HD][8 cols] += Vcodes^T [HD][16 keys] · P' [16 keys][8 cols], P' = p·s_v·2^et split hi/lo the
//           same way; 2^et (per tile, from the tile's largest s_v) keeps P' in f16's normal range, and the
//           running accumulator is rescaled by corr·2^(et - et_prev) with the softmax correction; Σ p·z_v and
//           Σ p are kept in f32 per head.
// Fragment layouts (PTX m16n8k16; lane = 4·gid + tig): the channel order inside an MMA is ours to choose
// (a dot product does not care), so each lane reads contiguous bytes: for scores, lane tig owns the HD/8
// code bytes [tig·HD/8, +HD/8) of key rows gid and gid+8 (word W, shift j -> channels 8W + j, 8W + j + 4);
// for P·V, lane gid owns the HD/16 bytes [gid·HD/16, +HD/16) of key rows 2tig, 2tig+1, 2tig+8, 2tig+9
// (two rows' words byte-permuted into one register: channel pairs of two keys). The score C fragment and
// the P·V C fragment both give lane tig the columns of head 4·nt + tig: softmax state lives in registers.
// Needs G == HD, page_size % 16 == 0 (a tile is inside one page), HD in {64, 128, 256}, NT·HD <= 256.
// Blocks of 4 warps, splits of whole 64-key rounds; with COMET_ATTN_TC_SMALL=1, at small batch (T · n_kv <=
// TC_SMALL) one block of 16 warps per (token, KV head) takes the whole sequence: no partials, no combine launch.
constexpr int TC_KT = 16, TC_MINCHUNK = 4 * TC_KT, TC_SMALL = 32;

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/** nibbles j (bits 4j..4j+3) and j + 4 (bits 16+4j..) of w as an exact f16x2 (low, high): 0x6400 | q is
 *  1024 + q in f16, minus 1024 */
__device__ __forceinline__ uint32_t nib2h(uint32_t w, int j) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w >> (4 * j)), "r"(0x000F000Fu), "r"(0x64006400u));
  asm("sub.f16x2 %0, %0, %1;" : "+r"(r) : "r"(0x64006400u));
  return r;
}

/** the hi (part 0) or lo (part 1) f16 part of x: x ≈ hi + lo to ~2^-22 relative (for |x| >= 2^-3) */
__device__ __forceinline__ __half f16part(float x, int part) {
  const __half h = __float2half_rn(x);
  return part ? __float2half_rn(x - __half2float(h)) : h;
}
__device__ __forceinline__ uint32_t h2bits(__half lo, __half hi) {
  return (uint32_t)__half_as_ushort(lo) | ((uint32_t)__half_as_ushort(hi) << 16);
}
__device__ __forceinline__ float pow2f(int e) { return __uint_as_float((uint32_t)(127 + e) << 23); }  // |e| <= 126

/** N consecutive 32-bit words from p (aligned to min(16, 4N) bytes), read-only path */
template <int N>
__device__ __forceinline__ void ld_words(const uint8_t* p, uint32_t (&w)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; i++) {
      const uint4 v = __ldg((const uint4*)p + i);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (N == 2) {
    const uint2 v = __ldg((const uint2*)p);
    w[0] = v.x, w[1] = v.y;
  } else {
    w[0] = __ldg((const uint32_t*)p);
  }
}

/** the same from shared memory */
template <int N>
__device__ __forceinline__ void ld_words_s(const uint8_t* p, uint32_t (&w)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; i++) {
      const uint4 v = ((const uint4*)p)[i];
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (N == 2) {
    const uint2 v = *(const uint2*)p;
    w[0] = v.x, w[1] = v.y;
  } else {
    w[0] = *(const uint32_t*)p;
  }
}

/** 16 bytes global -> shared, asynchronous (cp.async, sm_80+), bypassing L1 */
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

template <int HD>
struct TcTile {                         // one lane's share of a 16-key tile, straight from the page
  static constexpr int KW = HD / 32, VW = HD / 64;
  uint32_t k0[KW], k1[KW];              // K codes of key rows gid, gid + 8: bytes [tig·HD/8, +HD/8)
  uint32_t va[VW], vb[VW], vc[VW], vd[VW];  // V codes of rows 2tig, 2tig+1, 2tig+8, 2tig+9: [gid·HD/16, +HD/16)
  uint32_t ksz0, ksz1, vsz0, vsz1;      // (s, z) f16x2 of keys gid, gid + 8, K and V
};

template <int HD, int NT, int TC_WARPS, int ST>
__global__ void __launch_bounds__(TC_WARPS * 32) attn_kv4_tc(FaArgs a) {
  constexpr int KB = HD / 16;           // score k-blocks = P·V M-tiles
  constexpr int ROWB = HD / 2, KW = HD / 32, VW = HD / 64, CPG = HD / 8;
  // ST > 0: each warp's tiles come through a ring of ST shared-memory stages filled by cp.async, ST - 1 tiles
  // in flight while one is computed (registers hold one tile at most: no occupancy lost). Stage: K codes
  // [16][ROWB] | V codes [16][VROW] (rows padded 16 bytes: the lanes' 2tig.. row reads hit distinct banks) |
  // K (s, z) [16] | V (s, z) [16].
  constexpr int VROW = ROWB + 16, STAGE = 16 * ROWB + 16 * VROW + 128;
  __shared__ float s_ml[TC_WARPS][2][NT * 4];
  __shared__ float s_acc[TC_WARPS][NT * 4][HD];
  __shared__ __align__(16) uint8_t ring[ST > 0 ? TC_WARPS * ST * STAGE : 16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
  const int t = blockIdx.z, gq = a.gq, h0 = blockIdx.y * gq;
  const Kv4Span S(a, HD, blockIdx.x, blockIdx.y, t);

  // Q as B fragments (column gid = head 4nt + gid/2, part gid & 1), its sum and scale for the C layout's head
  uint32_t qf[NT][KB][2];
  float qsum[NT], qinv[NT];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    const int hq = 4 * nt + (gid >> 1), part = gid & 1;
    const float* qp = a.q + ((size_t)t * a.n_heads + h0 + hq) * HD + tig * (HD / 4);
    float qv[HD / 4], amax = 0.f, sum = 0.f;
#pragma unroll
    for (int i = 0; i < HD / 4; i += 4) {
      const float4 v = hq < gq ? *(const float4*)(qp + i) : make_float4(0.f, 0.f, 0.f, 0.f);
      qv[i] = v.x * a.scale, qv[i + 1] = v.y * a.scale, qv[i + 2] = v.z * a.scale, qv[i + 3] = v.w * a.scale;
#pragma unroll
      for (int e = 0; e < 4; e++) amax = fmaxf(amax, fabsf(qv[i + e])), sum += qv[i + e];
    }
    for (int o = 1; o <= 2; o <<= 1) {
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      sum += __shfl_xor_sync(0xffffffffu, sum, o);
    }
    const int ex = amax > 0.f ? (int)((__float_as_uint(amax) >> 23) & 255) - 127 : 0;
    const int eq = max(-126, min(126, 14 - ex));
    const float f = pow2f(eq);
#pragma unroll
    for (int kb = 0; kb < KB; kb++) {
      const int c = 8 * (kb >> 1) + 2 * (kb & 1);
      qf[nt][kb][0] = h2bits(f16part(qv[c] * f, part), f16part(qv[c + 4] * f, part));
      qf[nt][kb][1] = h2bits(f16part(qv[c + 1] * f, part), f16part(qv[c + 5] * f, part));
    }
    qsum[nt] = __shfl_sync(0xffffffffu, sum, 8 * tig);
    qinv[nt] = __shfl_sync(0xffffffffu, pow2f(-eq), 8 * tig);
  }

  float m[NT], l[NT], zs[NT], acc[NT][KB][4];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    m[nt] = -INFINITY, l[nt] = 0.f, zs[nt] = 0.f;
#pragma unroll
    for (int mt = 0; mt < KB; mt++) acc[nt][mt][0] = acc[nt][mt][1] = acc[nt][mt][2] = acc[nt][mt][3] = 0.f;
  }
  int ep = 0;  // the accumulators hold Σ P'·code in units of 2^-ep

  auto load = [&](int jt, TcTile<HD>& r) {
    const uint8_t* pb = S.page(jt);
    const int slot = jt % S.P;
    const uint8_t* kc = pb + (size_t)slot * ROWB;
    const uint8_t* vc = pb + S.codeBytes + (size_t)slot * ROWB;
    ld_words<KW>(kc + gid * ROWB + tig * (HD / 8), r.k0);
    ld_words<KW>(kc + (gid + 8) * ROWB + tig * (HD / 8), r.k1);
    ld_words<VW>(vc + (2 * tig) * ROWB + gid * (HD / 16), r.va);
    ld_words<VW>(vc + (2 * tig + 1) * ROWB + gid * (HD / 16), r.vb);
    ld_words<VW>(vc + (2 * tig + 8) * ROWB + gid * (HD / 16), r.vc);
    ld_words<VW>(vc + (2 * tig + 9) * ROWB + gid * (HD / 16), r.vd);
    const uint32_t* ksz = (const uint32_t*)(pb + 2 * S.codeBytes) + slot;
    const uint32_t* vsz = (const uint32_t*)(pb + 2 * S.codeBytes + S.szBytes) + slot;
    r.ksz0 = __ldg(ksz + gid), r.ksz1 = __ldg(ksz + gid + 8);
    r.vsz0 = __ldg(vsz + gid), r.vsz1 = __ldg(vsz + gid + 8);
  };

  // the ring: issue(jt, stage) copies tile jt (if any) and commits a group (empty past the end, so the count
  // of groups per iteration stays uniform); read(stage, r) takes the lane's fragments out of it
  auto issue = [&](int jt, int stg) {
    if constexpr (ST > 0) {
      if (jt < S.j1) {
        uint8_t* st = ring + (warp * ST + stg) * STAGE;
        const uint8_t* pb = S.page(jt);
        const int slot = jt % S.P;
        const uint8_t* kc = pb + (size_t)slot * ROWB;
        const uint8_t* vc = pb + S.codeBytes + (size_t)slot * ROWB;
#pragma unroll
        for (int q = lane; q < ROWB; q += 32) {  // 16 rows x ROWB/16 pieces of 16 bytes
          const int r = q / (ROWB / 16), c = (q % (ROWB / 16)) * 16;
          cp_async16(st + r * ROWB + c, kc + r * ROWB + c);
          cp_async16(st + 16 * ROWB + r * VROW + c, vc + r * ROWB + c);
        }
        if (lane < 8)
          cp_async16(st + 16 * ROWB + 16 * VROW + lane * 16,
                     pb + 2 * S.codeBytes + (lane >= 4 ? S.szBytes : 0) + (size_t)slot * 4 + (lane & 3) * 16);
      }
      asm volatile("cp.async.commit_group;\n" ::);
    }
  };
  auto read = [&](int stg, TcTile<HD>& r) {
    const uint8_t* st = ring + (warp * ST + stg) * STAGE;
    ld_words_s<KW>(st + gid * ROWB + tig * (HD / 8), r.k0);
    ld_words_s<KW>(st + (gid + 8) * ROWB + tig * (HD / 8), r.k1);
    const uint8_t* vs = st + 16 * ROWB + gid * (HD / 16);
    ld_words_s<VW>(vs + (2 * tig) * VROW, r.va);
    ld_words_s<VW>(vs + (2 * tig + 1) * VROW, r.vb);
    ld_words_s<VW>(vs + (2 * tig + 8) * VROW, r.vc);
    ld_words_s<VW>(vs + (2 * tig + 9) * VROW, r.vd);
    const uint32_t* sz = (const uint32_t*)(st + 16 * ROWB + 16 * VROW);
    r.ksz0 = sz[gid], r.ksz1 = sz[gid + 8], r.vsz0 = sz[16 + gid], r.vsz1 = sz[16 + gid + 8];
  };

  constexpr int STRIDE = TC_KT * TC_WARPS;
  int jt = S.j0 + TC_KT * warp;
  TcTile<HD> cur;
  if constexpr (ST == 0) {
    if (jt < S.j1) load(jt, cur);
  } else {
#pragma unroll
    for (int i = 0; i < ST - 1; i++) issue(jt + i * STRIDE, i);
  }
  for (int it = 0; jt < S.j1; jt += STRIDE, it++) {
    TcTile<HD> nxt;
    if constexpr (ST == 0) {
      if (jt + STRIDE < S.j1) load(jt + STRIDE, nxt);
    } else {
      issue(jt + (ST - 1) * STRIDE, (it + ST - 1) % ST);  // the stage computed last iteration
      asm volatile("cp.async.wait_group %0;\n" ::"n"(ST > 0 ? ST - 1 : 0));  // this lane's copies of tile it
      __syncwarp();                                       // ... and every lane's
      read(it % ST, cur);
    }
    const bool v0 = jt + gid < S.j1, v1 = jt + gid + 8 < S.j1;
    // 1. scores of keys gid, gid + 8 for head 4nt + tig
    float d[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
#pragma unroll
    for (int kb = 0; kb < KB; kb++) {
      const int wi = kb >> 1, j = 2 * (kb & 1);
      const uint32_t a0 = nib2h(cur.k0[wi], j), a1 = nib2h(cur.k1[wi], j);
      const uint32_t a2 = nib2h(cur.k0[wi], j + 1), a3 = nib2h(cur.k1[wi], j + 1);
#pragma unroll
      for (int nt = 0; nt < NT; nt++) mma_16816(d[nt], a0, a1, a2, a3, qf[nt][kb][0], qf[nt][kb][1]);
    }
    // the tile's scale for P': 2^et with (largest s_v of the tile's valid keys)·2^et < 2^15
    uint32_t sb = max(v0 ? cur.vsz0 & 0x7fffu : 0u, v1 ? cur.vsz1 & 0x7fffu : 0u);
    for (int o = 4; o < 32; o <<= 1) sb = max(sb, __shfl_xor_sync(0xffffffffu, sb, o));
    const int et = 29 - (int)(sb >> 10);
    // (s, z) of a key past j1 may be any bits (a page's unwritten slots): zero them, so p = 0 stays 0
    const float sv0 = v0 ? __low2float(*(const __half2*)&cur.vsz0) * pow2f(et) : 0.f;
    const float zv0 = v0 ? __high2float(*(const __half2*)&cur.vsz0) : 0.f;
    const float sv1 = v1 ? __low2float(*(const __half2*)&cur.vsz1) * pow2f(et) : 0.f;
    const float zv1 = v1 ? __high2float(*(const __half2*)&cur.vsz1) : 0.f;
    const float sk0 = __low2float(*(const __half2*)&cur.ksz0), zk0 = __high2float(*(const __half2*)&cur.ksz0);
    const float sk1 = __low2float(*(const __half2*)&cur.ksz1), zk1 = __high2float(*(const __half2*)&cur.ksz1);
    // 2. online softmax per head (lanes of one tig share it: reductions over gid)
    uint32_t pb[NT][2];
    float resc[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      const float s0 = v0 ? fmaf(sk0, (d[nt][0] + d[nt][1]) * qinv[nt], zk0 * qsum[nt]) : -INFINITY;
      const float s1 = v1 ? fmaf(sk1, (d[nt][2] + d[nt][3]) * qinv[nt], zk1 * qsum[nt]) : -INFINITY;
      float mx = fmaxf(s0, s1);
      for (int o = 4; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mn = fmaxf(m[nt], mx);  // finite: every tile has a valid key
      const float p0 = v0 ? expf(s0 - mn) : 0.f, p1 = v1 ? expf(s1 - mn) : 0.f;
      const float corr = expf(m[nt] - mn);  // 0 on the first tile
      m[nt] = mn;
      l[nt] = fmaf(l[nt], corr, p0 + p1);
      zs[nt] = fmaf(zs[nt], corr, fmaf(p0, zv0, p1 * zv1));
      resc[nt] = corr * pow2f(et - ep);
      // P' as B fragment: column gid (head 4nt + gid/2, part gid & 1), keys 2tig, 2tig+1 | 2tig+8, 2tig+9
      const float ps0 = p0 * sv0, ps1 = p1 * sv1;
      const int src = 8 * tig + (gid >> 1), part = gid & 1;
      const float x0 = __shfl_sync(0xffffffffu, ps0, src), x1 = __shfl_sync(0xffffffffu, ps0, src + 4);
      const float x2 = __shfl_sync(0xffffffffu, ps1, src), x3 = __shfl_sync(0xffffffffu, ps1, src + 4);
      pb[nt][0] = h2bits(f16part(x0, part), f16part(x1, part));
      pb[nt][1] = h2bits(f16part(x2, part), f16part(x3, part));
    }
    ep = et;
    // 3. P·V: M-tile mt = channels gid·CPG + mt (rows gid) and gid·CPG + KB + mt (rows gid + 8)
    uint32_t xab[2 * VW], xcd[2 * VW];  // (row A, row B) byte pairs: channels [8w, 8w+4) then [8w+4, 8w+8)
#pragma unroll
    for (int w = 0; w < VW; w++) {
      xab[2 * w] = __byte_perm(cur.va[w], cur.vb[w], 0x5410), xab[2 * w + 1] = __byte_perm(cur.va[w], cur.vb[w], 0x7632);
      xcd[2 * w] = __byte_perm(cur.vc[w], cur.vd[w], 0x5410), xcd[2 * w + 1] = __byte_perm(cur.vc[w], cur.vd[w], 0x7632);
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int mt = 0; mt < KB; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[nt][mt][e] *= resc[nt];
#pragma unroll
    for (int mt = 0; mt < KB; mt++) {
      const int o0 = mt, o1 = KB + mt;  // channel offsets in the lane's CPG: word o/4 of xab, nibble o%4
      const uint32_t a0 = nib2h(xab[o0 >> 2], o0 & 3), a1 = nib2h(xab[o1 >> 2], o1 & 3);
      const uint32_t a2 = nib2h(xcd[o0 >> 2], o0 & 3), a3 = nib2h(xcd[o1 >> 2], o1 & 3);
#pragma unroll
      for (int nt = 0; nt < NT; nt++) mma_16816(acc[nt][mt], a0, a1, a2, a3, pb[nt][0], pb[nt][1]);
    }
    if constexpr (ST == 0) cur = nxt;
    else __syncwarp();  // every lane has read stage it % ST before a later issue overwrites it
  }

  // this warp's partial per head: (m, l) and A[c] = Σ p·v'_c (P' units undone, Σ p·z added)
  const float inv = pow2f(-ep);
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    for (int o = 4; o < 32; o <<= 1) {
      l[nt] += __shfl_xor_sync(0xffffffffu, l[nt], o);
      zs[nt] += __shfl_xor_sync(0xffffffffu, zs[nt], o);
    }
    const int hh = 4 * nt + tig;
#pragma unroll
    for (int mt = 0; mt < KB; mt++) {
      s_acc[warp][hh][gid * CPG + mt] = fmaf(acc[nt][mt][0] + acc[nt][mt][1], inv, zs[nt]);
      s_acc[warp][hh][gid * CPG + KB + mt] = fmaf(acc[nt][mt][2] + acc[nt][mt][3], inv, zs[nt]);
    }
    if (gid == 0) s_ml[warp][0][hh] = m[nt], s_ml[warp][1][hh] = l[nt];
  }
  __syncthreads();
  // merge the warps: thread = (head, channel)
  for (int i = threadIdx.x; i < gq * HD; i += TC_WARPS * 32) {
    const int hh = i / HD, c = i % HD, h = h0 + hh;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < TC_WARPS; w++) M = fmaxf(M, s_ml[w][0][hh]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < TC_WARPS; w++) {
        const float f = expf(s_ml[w][0][hh] - M);  // 0 for a warp without keys
        L = fmaf(s_ml[w][1][hh], f, L);
        O = fmaf(s_acc[w][hh][c], f, O);
      }
    }
    if (a.nsplit == 1) {
      a.out[((size_t)t * a.n_heads + h) * HD + c] = O / L;
    } else {
      float* wsp = a.ws + (((size_t)t * a.n_heads + h) * a.nsplit + blockIdx.x) * (HD + 2);
      if (c == 0) wsp[0] = M, wsp[1] = L;
      wsp[2 + c] = O;
    }
  }
}

/** Splits of the tensor-core path: one wave of blocks (T · n_kv · splits <= TC_WAVE, 4 resident blocks of 4 warps
 *  per SM at 125 registers), whole 64-key rounds per split. Each block's prologue (block table, q) costs a few
 *  dependent loads, and more splits mean more partials to combine: at batch 64 one split per (token, head) (512
 *  blocks) beats 3 (1536 blocks, 3 waves) by ~2x; at batch 1 the sequence is cut into 64-key splits. */
constexpr int TC_WAVE = 4 * 132;

/** COMET_ATTN_TC_SMALL=1: the one-block-per-(token, KV head) variant at T · n_kv <= TC_SMALL (tested on the H100,
 *  not timed yet: off by default) */
static bool tc_small_on() {
  static const bool on = getenv("COMET_ATTN_TC_SMALL") && !strcmp(getenv("COMET_ATTN_TC_SMALL"), "1");
  return on;
}

static void plan_tc(int T, int n_kv, int max_len, bool small_ok, int* nsplit, int* chunk) {
  static const int forced = getenv("COMET_ATTN_SPLITS") ? min(1024, atoi(getenv("COMET_ATTN_SPLITS"))) : 0;
  const int want = forced > 0 ? forced : tc_small_on() && small_ok && T * n_kv <= TC_SMALL ? 1 : max(1, TC_WAVE / (T * n_kv));
  int ns = min(want, (max_len + TC_MINCHUNK - 1) / TC_MINCHUNK);
  ns = max(ns, 1);
  int ch = (max_len + ns - 1) / ns;
  ch = (ch + TC_MINCHUNK - 1) / TC_MINCHUNK * TC_MINCHUNK;
  *chunk = ch;
  *nsplit = (max_len + ch - 1) / ch;
}

static bool tc_ok(const comet_kv_geom& g, int n_heads) {
  static const bool off = getenv("COMET_ATTN_TC") && !strcmp(getenv("COMET_ATTN_TC"), "0");
  const int hd = g.head_dim, gq = n_heads / g.n_kv_heads;
  if (off || g.group != hd || g.page_size % TC_KT) return false;
  return (hd == 64 && gq <= 16) || (hd == 128 && gq <= 8) || (hd == 256 && gq <= 4);  // NT·HD <= 256
}

template <int HD>
static void launch_tc(const FaArgs& f, dim3 grid, cudaStream_t s) {
  const int nt = (f.gq + 3) / 4;
  if (tc_small_on() && f.nsplit == 1 && (int)(grid.y * grid.z) <= TC_SMALL && nt * HD <= 128) {  // 16 warps: 16·nt·4·HD·4 B shared
    if constexpr (HD <= 128) {
      if (nt == 1) attn_kv4_tc<HD, 1, 16, 0><<<grid, 16 * 32, 0, s>>>(f);
      else if constexpr (HD <= 64) attn_kv4_tc<HD, 2, 16, 0><<<grid, 16 * 32, 0, s>>>(f);
      return;
    }
  }
  // COMET_ATTN_TC_PIPE=1: the cp.async ring (3 stages) for HD <= 128, where its 4 warps' stages fit beside the
  // merge buffers. Passes the GPU tests (H100, 09:34 UTC) but is not timed yet: off by default, the register
  // prefetch (one tile ahead, timed at 40 µs/layer at batch 64) stays
  static const bool pipe = getenv("COMET_ATTN_TC_PIPE") && !strcmp(getenv("COMET_ATTN_TC_PIPE"), "1");
  if constexpr (HD <= 128) {
    if (pipe) {
      if (f.gq <= 4) attn_kv4_tc<HD, 1, 4, 3><<<grid, 4 * 32, 0, s>>>(f);
      else if (f.gq <= 8) attn_kv4_tc<HD, 2, 4, 3><<<grid, 4 * 32, 0, s>>>(f);
      else if constexpr (HD <= 64) attn_kv4_tc<HD, 4, 4, 3><<<grid, 4 * 32, 0, s>>>(f);
      return;
    }
  }
  if (f.gq <= 4) attn_kv4_tc<HD, 1, 4, 0><<<grid, 4 * 32, 0, s>>>(f);
  else if constexpr (HD <= 128) {
    if (f.gq <= 8) attn_kv4_tc<HD, 2, 4, 0><<<grid, 4 * 32, 0, s>>>(f);
    else if constexpr (HD <= 64) attn_kv4_tc<HD, 4, 4, 0><<<grid, 4 * 32, 0, s>>>(f);
  }
}

// Merge the splits of one (token, head): partials [nsplit][hd + 2] = (m, l, acc[hd]). The (m, l) of all splits
// are read in parallel (one per thread into shared memory: a serial loop over them was a chain of dependent
// loads, ~0.5 µs a split, the bulk of a batch-1 decode's attention), the weights exp(m_s - M) computed once,
// then each thread sums its channel over the splits with independent loads.
constexpr int COMBINE_MAX = 2048;

__global__ void __launch_bounds__(128) attn_combine_f32(const float* __restrict__ ws, int n_heads, int hd, int nsplit,
                                                        float* __restrict__ out) {
  __shared__ float sw[COMBINE_MAX];
  __shared__ float sred[2];
  const int h = blockIdx.x, t = blockIdx.y;
  const float* p = ws + ((size_t)t * n_heads + h) * nsplit * (hd + 2);
  float* o = out + (size_t)t * n_heads * hd + (size_t)h * hd;
  if (nsplit > COMBINE_MAX) {  // more splits than a plan makes (COMET_ATTN_SPLITS is capped below this)
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, p[s * (hd + 2)]);
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
      float l = 0.f, acc = 0.f;
      for (int s = 0; s < nsplit; s++) {
        const float m = p[s * (hd + 2)];
        if (m == -INFINITY) continue;
        const float w = expf(m - M);
        l = fmaf(p[s * (hd + 2) + 1], w, l);
        acc = fmaf(p[s * (hd + 2) + 2 + c], w, acc);
      }
      o[c] = acc / l;
    }
    return;
  }
  for (int s = threadIdx.x; s < nsplit; s += blockDim.x) sw[s] = p[s * (hd + 2)];
  __syncthreads();
  if (threadIdx.x < 32) {  // M and L by one warp, in a fixed order
    float M = -INFINITY;
    for (int s = threadIdx.x; s < nsplit; s += 32) M = fmaxf(M, sw[s]);
    for (int d = 16; d > 0; d >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, d));
    __syncwarp();
    float L = 0.f;
    for (int s = threadIdx.x; s < nsplit; s += 32) {
      const float m = sw[s];
      const float w = m == -INFINITY ? 0.f : expf(m - M);
      L = fmaf(p[s * (hd + 2) + 1], w, L);
      sw[s] = w;
    }
    for (int d = 16; d > 0; d >>= 1) L += __shfl_xor_sync(0xffffffffu, L, d);
    if (threadIdx.x == 0) sred[0] = L;
  }
  __syncthreads();
  const float inv = 1.f / sred[0];
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0.f;
#pragma unroll 8
    for (int s = 0; s < nsplit; s++) acc = fmaf(p[s * (hd + 2) + 2 + c], sw[s], acc);
    o[c] = acc * inv;
  }
}

/** Splits of the fast path: enough blocks (T · n_kv · splits) for ~8 per SM, at least FA_MINCHUNK keys each. */
static void plan_fast(int T, int n_kv, int max_len, int* nsplit, int* chunk) {
  static const int forced = getenv("COMET_ATTN_SPLITS") ? min(1024, atoi(getenv("COMET_ATTN_SPLITS"))) : 0;
  const int want = forced > 0 ? forced : (8 * 132 + T * n_kv - 1) / (T * n_kv);
  int ns = min(want, (max_len + FA_MINCHUNK - 1) / FA_MINCHUNK);
  ns = max(ns, 1);
  int ch = (max_len + ns - 1) / ns;
  ch = (ch + FA_KT - 1) / FA_KT * FA_KT;  // whole tiles
  *chunk = ch;
  *nsplit = (max_len + ch - 1) / ch;
}

static bool v2_ok(const comet_kv_geom& g, int n_heads) {
  static const bool v1 = getenv("COMET_ATTN_V1") && atoi(getenv("COMET_ATTN_V1")) > 0;
  const int hd = g.head_dim;
  return !v1 && (hd == 64 || hd == 128 || hd == 256) && g.group >= hd / 4;  // on top of fast_ok
}

template <int HD>
static void launch_v2(const FaArgs& f, dim3 grid, cudaStream_t s) {
  if (f.gq <= 1) attn_kv4_v2<HD, 1><<<grid, FA_THREADS, 0, s>>>(f);
  else if (f.gq <= 2) attn_kv4_v2<HD, 2><<<grid, FA_THREADS, 0, s>>>(f);
  else if (f.gq <= 4) attn_kv4_v2<HD, 4><<<grid, FA_THREADS, 0, s>>>(f);
  else if (f.gq <= 8) attn_kv4_v2<HD, 8><<<grid, FA_THREADS, 0, s>>>(f);
  else attn_kv4_v2<HD, 16><<<grid, FA_THREADS, 0, s>>>(f);
}

static bool fast_ok(const comet_kv_geom& g, int n_heads) {
  static const bool legacy = getenv("COMET_ATTN_LEGACY") && atoi(getenv("COMET_ATTN_LEGACY")) > 0;
  if (legacy || g.n_kv_heads <= 0 || n_heads % g.n_kv_heads) return false;
  const int hd = g.head_dim, gq = n_heads / g.n_kv_heads;
  if (!(hd == 32 || hd == 64 || hd == 128 || hd == 256) || gq > FA_MAXG) return false;
  if (g.group <= 0 || g.group % 32 || hd % g.group) return false;  // whole 16-byte code pieces per group
  const int ng = hd / g.group;
  return ((size_t)g.page_size * ng * 4) % 16 == 0;  // every (page, head) chunk and its parts 16-byte aligned
}

extern "C" size_t comet_attention_workspace(int T, int n_heads, int head_dim, int max_len) {
  int ns, ch;
  plan(T, n_heads, max_len, &ns, &ch);
  const size_t legacy = (size_t)T * n_heads * ns * (head_dim + 2) * sizeof(double);
  plan_fast(T, 1, max_len, &ns, &ch);  // n_kv = 1 bounds every GQA split count
  const size_t fast = (size_t)T * n_heads * ns * (head_dim + 2) * sizeof(float);
  return legacy > fast ? legacy : fast;
}

template <bool KV4>
static int launch(AttnArgs a, int max_len, float* out, void* stream, const char* op) {
  const int T = a.st.T, hd = a.g.head_dim;
  if (T == 0) return 0;
  if (hd > 256 || hd <= 0 || a.n_heads % a.g.n_kv_heads)
    return set_error(COMET_EINVAL, "%s: head_dim %d (max 256) / heads %d over %d KV heads not supported", op, hd,
                     a.n_heads, a.g.n_kv_heads);
  if (max_len <= 0) return set_error(COMET_EINVAL, "%s: max_len %d", op, max_len);
  plan(T, a.n_heads, max_len, &a.nsplit, &a.chunk);
  int L = 1;
  while (L < hd && L < 32) L <<= 1;
  a.L = L;
  const int nc = (hd + L - 1) / L;
  const dim3 grid(a.nsplit, a.n_heads, T);
  if (nc == 1) attn_split<1, KV4><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else if (nc == 2) attn_split<2, KV4><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else if (nc <= 4) attn_split<4, KV4><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else attn_split<8, KV4><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  if (int e = check_launch(op)) return e;
  attn_combine<<<dim3(a.n_heads, T), 128, 0, S(stream)>>>(a.ws, a.n_heads, hd, a.nsplit, out);
  return check_launch(op);
}

extern "C" int comet_attention_f32(const float* q, const float* kc, const float* vc, comet_step st, comet_kv_geom g,
                                   int n_heads, int max_len, void* ws, float* out, void* stream) {
  AttnArgs a{q, kc, vc, nullptr, st, g, n_heads, 0, 0, 0, (double*)ws};
  return launch<false>(a, max_len, out, stream, "attention (f32)");
}

extern "C" int comet_attention_kv4(const float* q, const uint8_t* cache, comet_step st, comet_kv_geom g, int n_heads,
                                   int max_len, void* ws, float* out, void* stream) {
  if (st.T > 0 && max_len > 0 && fast_ok(g, n_heads) && tc_ok(g, n_heads)) {
    FaArgs f{q, cache, st, g, n_heads, n_heads / g.n_kv_heads, 0, 0, (float)(1.0 / sqrt((double)g.head_dim)), (float*)ws, out};
    plan_tc(st.T, g.n_kv_heads, max_len, (f.gq + 3) / 4 * g.head_dim <= 128, &f.nsplit, &f.chunk);
    const dim3 grid(f.nsplit, g.n_kv_heads, st.T);
    if (g.head_dim == 64) launch_tc<64>(f, grid, S(stream));
    else if (g.head_dim == 128) launch_tc<128>(f, grid, S(stream));
    else launch_tc<256>(f, grid, S(stream));
    if (int e = check_launch("attention (kv4, tensor cores)")) return e;
    if (f.nsplit == 1) return 0;
    attn_combine_f32<<<dim3(n_heads, st.T), 128, 0, S(stream)>>>(f.ws, n_heads, g.head_dim, f.nsplit, out);
    return check_launch("attention (kv4, combine)");
  }
  if (st.T > 0 && max_len > 0 && fast_ok(g, n_heads)) {
    FaArgs f{q, cache, st, g, n_heads, n_heads / g.n_kv_heads, 0, 0, (float)(1.0 / sqrt((double)g.head_dim)), (float*)ws, out};
    plan_fast(st.T, g.n_kv_heads, max_len, &f.nsplit, &f.chunk);
    const dim3 grid(f.nsplit, g.n_kv_heads, st.T);
    if (v2_ok(g, n_heads)) {
      if (g.head_dim == 64) launch_v2<64>(f, grid, S(stream));
      else if (g.head_dim == 128) launch_v2<128>(f, grid, S(stream));
      else launch_v2<256>(f, grid, S(stream));
    } else switch (g.head_dim) {
      case 32: attn_kv4_fast<32><<<grid, FA_THREADS, 0, S(stream)>>>(f); break;
      case 64: attn_kv4_fast<64><<<grid, FA_THREADS, 0, S(stream)>>>(f); break;
      case 128: attn_kv4_fast<128><<<grid, FA_THREADS, 0, S(stream)>>>(f); break;
      default: attn_kv4_fast<256><<<grid, FA_THREADS, 0, S(stream)>>>(f); break;
    }
    if (int e = check_launch("attention (kv4)")) return e;
    if (f.nsplit == 1) return 0;
    attn_combine_f32<<<dim3(n_heads, st.T), 128, 0, S(stream)>>>(f.ws, n_heads, g.head_dim, f.nsplit, out);
    return check_launch("attention (kv4, combine)");
  }
  AttnArgs a{q, nullptr, nullptr, cache, st, g, n_heads, 0, 0, 0, (double*)ws};
  return launch<true>(a, max_len, out, stream, "attention (kv4)");
}
