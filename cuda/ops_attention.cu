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
  static const int forced = getenv("COMET_ATTN_SPLITS") ? atoi(getenv("COMET_ATTN_SPLITS")) : 0;
  const int want = forced > 0 ? forced : (4 * 132 + T * n_heads - 1) / (T * n_heads);
  int ns = min(want, (max_len + MIN_CHUNK - 1) / MIN_CHUNK);
  ns = max(ns, 1);
  *chunk = (max_len + ns - 1) / ns;
  *nsplit = (max_len + *chunk - 1) / *chunk;
}

extern "C" size_t comet_attention_workspace(int T, int n_heads, int head_dim, int max_len) {
  int ns, ch;
  plan(T, n_heads, max_len, &ns, &ch);
  return (size_t)T * n_heads * ns * (head_dim + 2) * sizeof(double);
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
  AttnArgs a{q, nullptr, nullptr, cache, st, g, n_heads, 0, 0, 0, (double*)ws};
  return launch<true>(a, max_len, out, stream, "attention (kv4)");
}
