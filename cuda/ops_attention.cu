// Attention over the paged KV cache, prefill and decode alike (token t attends to positions 0..pos[t] of its
// sequence through the block table; GQA: query head h reads KV head h / (n_heads / n_kv_heads)).
//
// KV4 cache (quantized models; kernels in ops_attention_kv4.cu and ops_attention_kv4_mma.cu, shared helpers in
// attention_kv4.cuh): the contract of simulator/kernels/attention_kv4.ts (DESIGN §3.5.1), bit for bit.
//   q is quantized to INT8 per (token, head); scores are integer dot products with the UINT4 K codes (dp4a),
//   scaled by the key's (s, z) in f32; keys go in chunks of 64 (softmax per chunk, exp2 by the contract's
//   polynomial), P·V is an integer dot product of 15-bit weights with the V codes; chunk states fold into
//   segments of 128 keys and segments into the output, every float op __fmul_rn / __fadd_rn / __fdiv_rn in the
//   contract's order. The integer sums are exact in any order, so the kernels reduce them however they like.
//   Two kernels, picked by shape (kv4_mma_supported), the same bits:
//   attn_kv4_mma  head_dim 64 / 128 / 256, groups G >= 64, GQ · head_dim <= 1024, pages of a power of two: a
//              warp per 128-key segment, both products on mma.sync m16n8k32 u8 (see its comment there)
//   attn_kv4   every other shape (stories260K's head_dim 8, G < 64), dp4a / dp2a on the CUDA cores:
//              grid (segment or 1, KV head, token), KT threads: one block serves all GQ query heads of its KV
//              head (each page is read once per GQA group), a chunk at a time, the next two chunks' code rows and
//              (s, z) pairs in flight into a shared-memory ring (cp.async), the block table read a chunk earlier:
//                P1 D[h][g][key] = Σ q8·k (dp4a; thread = (key, 32-channel slice), slices summed by shuffles)
//                P2 t[h][key] = the key's f32 score
//                P3 warp = head, lane = keys (lane, lane + 32): max, exp2, l, 15-bit weights u, Σ p·z
//                P4 A[h][c] = Σ u·v (dp2a; thread = (8-channel word, 8 keys), key quads transposed by prmt;
//                   the key groups summed by shuffles inside a warp, one row per warp to shared memory)
//                P5 thread = (head, channel): num = f32(Σ rows)·dq + zs, folded into the segment (and the total)
//   Small batches (T · n_kv < SPLIT_BELOW): one block per 128-key segment, states to the workspace, then
//   attn_kv4_combine folds them in order; otherwise one block per (token, KV head) folds everything.
// f32 cache (the float reference path): f64 arithmetic as simulator/kernels/attention.ts (tier 3): attn_split
//   grid (split, head, token), a key per sub-group of lanes, online softmax, partials merged by attn_combine.
#include <math.h>
#include <stdlib.h>

#include "attention_kv4.cuh"
#include "ops.cuh"

using namespace comet_ops;
using namespace comet_kv4;

// ==== f32 cache (f64 arithmetic) ==========================================================================
constexpr int ATT_WARPS = 4;
constexpr int MIN_CHUNK = 32;  // keys per split at least

struct AttnArgs {
  const float* q;
  const float* kc;  // [page][n_kv][P][hd]
  const float* vc;
  comet_step st;
  comet_kv_geom g;
  int n_heads, chunk, nsplit, L;
  double* ws;  // [T][n_heads][nsplit][hd + 2]
};

/** One key row's channels for this lane (zeros past head_dim). */
template <int NC>
__device__ __forceinline__ void load_row(const AttnArgs& a, int page, int kvh, int slot, int li, bool isv, double (&r)[NC]) {
  const int hd = a.g.head_dim;
  const float* src = (isv ? a.vc : a.kc) + (((size_t)page * a.g.n_kv_heads + kvh) * a.g.page_size + slot) * hd;
#pragma unroll
  for (int i = 0; i < NC; i++) {
    const int c = li + a.L * i;
    r[i] = c < hd ? (double)src[c] : 0.0;
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

template <int NC>
__global__ void __launch_bounds__(ATT_WARPS * 32) attn_split(AttnArgs a) {
  pdl_enter();  // launch.cuh
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
    if (valid) load_row<NC>(a, page, kvh, slot, li, false, kr);
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
      load_row<NC>(a, page, kvh, slot, li, true, vr);
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
  pdl_enter();  // launch.cuh
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
  // enough blocks to fill the GPU (~4 per SM) when T·heads is small (decode), one split otherwise
  const int want = (4 * 132 + T * n_heads - 1) / (T * n_heads);
  int ns = min(want, (max_len + MIN_CHUNK - 1) / MIN_CHUNK);
  ns = max(ns, 1);
  *chunk = (max_len + ns - 1) / ns;
  *nsplit = (max_len + *chunk - 1) / *chunk;
}

extern "C" size_t comet_attention_workspace(int T, int n_heads, int head_dim, int max_len) {
  int ns, ch;
  plan(T, n_heads, max_len, &ns, &ch);
  const size_t f64 = (size_t)T * n_heads * ns * (head_dim + 2) * sizeof(double);
  const size_t kv4 = kv4_workspace(T, n_heads, head_dim, max_len);
  return f64 > kv4 ? f64 : kv4;
}

extern "C" int comet_attention_f32(const float* q, const float* kc, const float* vc, comet_step st, comet_kv_geom g,
                                   int n_heads, int max_len, void* ws, float* out, void* stream) {
  const int T = st.T, hd = g.head_dim;
  if (T == 0) return 0;
  if (hd > 256 || hd <= 0 || g.n_kv_heads <= 0 || n_heads % g.n_kv_heads)
    return set_error(COMET_EINVAL, "attention (f32): head_dim %d (max 256) / heads %d over %d KV heads not supported", hd,
                     n_heads, g.n_kv_heads);
  if (max_len <= 0) return set_error(COMET_EINVAL, "attention (f32): max_len %d", max_len);
  AttnArgs a{q, kc, vc, st, g, n_heads, 0, 0, 0, (double*)ws};
  plan(T, n_heads, max_len, &a.nsplit, &a.chunk);
  int L = 1;
  while (L < hd && L < 32) L <<= 1;
  a.L = L;
  const int nc = (hd + L - 1) / L;
  const dim3 grid(a.nsplit, n_heads, T);
  if (nc == 1) pdl_launch(attn_split<1>, grid, ATT_WARPS * 32, 0, S(stream), a);
  else if (nc == 2) pdl_launch(attn_split<2>, grid, ATT_WARPS * 32, 0, S(stream), a);
  else if (nc <= 4) pdl_launch(attn_split<4>, grid, ATT_WARPS * 32, 0, S(stream), a);
  else pdl_launch(attn_split<8>, grid, ATT_WARPS * 32, 0, S(stream), a);
  if (int e = check_launch("attention (f32)")) return e;
  pdl_launch(attn_combine, dim3(n_heads, T), 128, 0, S(stream), a.ws, n_heads, hd, a.nsplit, out);
  return check_launch("attention (f32)");
}

extern "C" int comet_attention_kv4(const float* q, const uint8_t* cache, comet_step st, comet_kv_geom g, int n_heads,
                                   int max_len, void* ws, float* out, void* stream) {
  const int T = st.T, hd = g.head_dim, G = g.group, nkv = g.n_kv_heads;
  if (T == 0) return 0;
  const int gq = nkv > 0 && n_heads % nkv == 0 ? n_heads / nkv : 0;
  const bool g_ok = G > 0 && hd % G == 0 && hd / G <= NGMAX && (G % 8 == 0 || G == 2 || G == 4);
  const int P = g.page_size, cu = hd / 2 < 16 ? hd / 2 : 16;  // cp.async size of the code rows
  const bool align_ok = P > 0 && ((size_t)P * hd + (size_t)8 * P * (g_ok ? hd / G : 1)) % cu == 0;
  if (!kv4_supported(hd, gq) || !g_ok || !align_ok)
    return set_error(COMET_EINVAL,
                     "attention (kv4): head_dim %d with %d query heads per KV head (%d over %d; head_dim 8, 32: 1, 2, 4; "
                     "64: 1..16; 128: 1..8; 256: 1, 2), KV4 group %d (2, 4 or a multiple of 8, at least head_dim / %d), "
                     "pages of %d not supported",
                     hd, gq, n_heads, nkv, G, NGMAX, P);
  if (max_len <= 0) return set_error(COMET_EINVAL, "attention (kv4): max_len %d", max_len);
  const int nseg = (max_len + SEG - 1) / SEG;
  if (kv4_mma_supported(hd, gq, G, P)) {
    const Kv4Args a{q, cache, st, g, n_heads, 0, nseg, (float)(1.4426950408889634 / sqrt((double)hd)), (float*)ws, out};
    return launch_kv4_mma_any(a, hd, gq, T, nkv, S(stream));
  }
  const Kv4Args a{q, cache, st, g, n_heads, T * nkv < SPLIT_BELOW && nseg > 1, nseg, (float)(1.4426950408889634 / sqrt((double)hd)), (float*)ws, out};
  return launch_kv4_dp4a(a, hd, gq, T, nkv, S(stream));
}
