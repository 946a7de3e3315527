// Attention over the paged KV cache, prefill and decode alike (token t attends to positions 0..pos[t] of its
// sequence through the block table; GQA: query head h reads KV head h / (n_heads / n_kv_heads)).
//
// KV4 cache (quantized models): the contract of simulator/kernels/attention_kv4.ts (DESIGN §3.5.1), bit for bit.
//   q is quantized to INT8 per (token, head); scores are integer dot products with the UINT4 K codes (dp4a),
//   scaled by the key's (s, z) in f32; keys go in chunks of 64 (softmax per chunk, exp2 by the contract's
//   polynomial), P·V is an integer dot product of 15-bit weights with the V codes; chunk states fold into
//   segments of 128 keys and segments into the output, every float op __fmul_rn / __fadd_rn / __fdiv_rn in the
//   contract's order. The integer sums are exact in any order, so the kernels reduce them however they like.
//   Two kernels, picked by shape (kv4_mma_supported), the same bits:
//   attn_kv4_mma  head_dim 64 / 128 / 256, groups G >= 64, GQ · head_dim <= 1024, pages of a power of two: a
//              warp per 128-key segment, both products on mma.sync m16n8k32 u8 (see its comment below)
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

#include "ops.cuh"

using namespace comet_ops;

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

// ==== KV4 cache: the contract of simulator/kernels/attention_kv4.ts ========================================
namespace {

constexpr int KT = 128;                  // threads per block (4 warps)
constexpr int CH = 64, SEG = 128;        // contract: keys per chunk, keys per segment
constexpr int NBUF = 3;                  // staged chunks: this one and two in flight
constexpr int NGMAX = 4;                 // KV4 groups per head at most (G >= head_dim / 4)
constexpr int SPLIT_BELOW = 1024;        // T · n_kv below this: one block per segment (more blocks in flight)

// exp2 on [-1/2, 1/2] (the contract's EXP2_COEFS, f32)
constexpr float E0 = 1.f, E1 = 0.693147182f, E2 = 0.240226462f, E3 = 0.0555032901f, E4 = 0.00961851981f,
                E5 = 0.00133998599f, E6 = 0.000153375775f;

/** the contract's exp2 for x <= 0: 2^rint(x) · poly(x - rint(x)), plain f32 ops */
__device__ __forceinline__ float exp2c(float x) {
  if (!(x >= -125.f)) return 0.f;
  const float n = rintf(x), f = __fsub_rn(x, n);
  float p = E6;
  p = __fadd_rn(__fmul_rn(p, f), E5);
  p = __fadd_rn(__fmul_rn(p, f), E4);
  p = __fadd_rn(__fmul_rn(p, f), E3);
  p = __fadd_rn(__fmul_rn(p, f), E2);
  p = __fadd_rn(__fmul_rn(p, f), E1);
  p = __fadd_rn(__fmul_rn(p, f), E0);
  return __fmul_rn(p, __int_as_float(((int)n + 127) << 23));
}

/** the contract's bfly: fr(x_lane + x_lane+32) already in v; xor butterfly over the warp */
__device__ __forceinline__ float bfly(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float h_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu))); }
__device__ __forceinline__ float h_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

template <int N>
__device__ __forceinline__ void cp_async(void* dst, const void* src) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  if constexpr (N == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
  else asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(d), "l"(src), "n"(N));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait_ahead() { asm volatile("cp.async.wait_group %0;\n" ::"n"(NBUF - 1)); }

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

/** Thread roles for head_dim HD (a power of two, 8..256). */
template <int HD>
struct Geo {
  static constexpr int ROW = HD / 2;                     // code bytes of one key row
  static constexpr int CU = ROW < 16 ? ROW : 16;         // cp.async size for code rows
  static constexpr int CK = HD < 32 ? HD : 32;           // P1: channels per thread
  static constexpr int KW = CK / 8;                      //     code words per thread
  static constexpr int LPK = HD / CK;                    //     threads per key
  static constexpr int KPP = KT / LPK;                   //     keys per pass
  static constexpr int KPASS = KPP >= CH ? 1 : CH / KPP;
  static constexpr int WC = HD / 8;                      // P4: code words per row (thread = word, key group)
  static constexpr int KG = KT / WC < 16 ? KT / WC : 16;  //     key groups
  static constexpr int KPT = CH / KG;                    //     keys per thread (a multiple of 4)
  static_assert(KPT % 4 == 0 && WC * KG <= KT, "P4 roles");
};

template <int HD, int GQ>
struct Kv4Smem {
  uint8_t kc[NBUF][CH][HD / 2];              // staged K code rows (a ring of NBUF chunks)
  uint8_t vc[NBUF][CH][HD / 2];
  uint32_t ksz[NBUF][CH * NGMAX], vsz[NBUF][CH * NGMAX];  // (s, z) f16 pairs, [key][group]
  const uint8_t* kb[NBUF][CH];               // (page, KV head) chunk of each key of a staged chunk, null past the end
  int ksl[NBUF][CH];                         // its slot in the page
  int8_t q8[GQ][HD];
  uint32_t qpk[GQ][HD / 8][2];               // q8 by code word: [lo: channels 0,2,4,6 | hi: 1,3,5,7] as bytes
  int qg[GQ][NGMAX];
  float cs[GQ];
  int d[GQ][NGMAX][CH];                      // P1 -> P2
  float t[GQ][CH];                           // P2 -> P3
  alignas(16) uint16_t u[GQ][NGMAX][CH];     // P3 -> P4
  float dq[GQ][NGMAX], zs[GQ][NGMAX];
  float ca[GQ], cb[GQ], sm[GQ], sl[GQ];      // chunk -> segment fold factors; segment (m, l)
  float sa[GQ], sb[GQ], tm[GQ], tl[GQ];      // segment -> total fold factors; total (m, l)
  uint32_t red[KT / 32][GQ][HD];             // P4 -> P5: each warp's integer partial sums (added in P5)
};

template <int HD, int GQ>
__global__ void __launch_bounds__(KT) attn_kv4(Kv4Args a) {
  using Gm = Geo<HD>;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  Kv4Smem<HD, GQ>& s = *reinterpret_cast<Kv4Smem<HD, GQ>*>(smem_raw);
  constexpr int SL = (GQ * HD + KT - 1) / KT;  // P5 (head, channel) slots per thread

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int kvh = blockIdx.y, t = blockIdx.z, h0 = kvh * GQ, C = a.n_heads * HD;
  const int P = a.g.page_size, G = a.g.group, ng = HD / G;
  const int n = a.st.pos[t] + 1, nch = (n + CH - 1) / CH;
  const int cbeg = a.split ? blockIdx.x * (SEG / CH) : 0;
  const int cend = a.split ? min(nch, cbeg + SEG / CH) : nch;
  if (cbeg >= cend) return;  // a segment past this token's keys (the combine reads only the token's segments)
  const size_t codeBytes = (size_t)P * HD / 2, szBytes = (size_t)P * ng * 4;
  const size_t headBytes = 2 * codeBytes + 2 * szBytes;
  const int32_t* bt = a.st.bt + a.st.bt_off[a.st.seq[t]];

  // page of key ci·CH + tid (threads tid < CH), or -1 past the block's keys: loaded a chunk ahead of its use so
  // the block-table read's latency hides behind a chunk's compute
  auto page_of = [&](int ci) { const int j = ci * CH + tid; return tid < CH && ci < cend && j < n ? bt[j / P] : -1; };
  auto locate = [&](int ci, int pg, int b) {  // page chunk and slot of each key of chunk ci into ring slot b
    if (tid < CH) {
      s.kb[b][tid] = pg >= 0 ? a.cache + ((size_t)pg * a.g.n_kv_heads + kvh) * headBytes : nullptr;
      s.ksl[b][tid] = (ci * CH + tid) % P;
    }
  };
  auto stage = [&](int b) {  // cp.async the located chunk's code rows and (s, z) pairs into buffer b
    constexpr int PR = Gm::ROW / Gm::CU;
    for (int i = tid; i < CH * 2 * PR; i += KT) {
      const int kk = i / (2 * PR), r = i % (2 * PR), isv = r / PR, pc = r % PR;
      const uint8_t* base = s.kb[b][kk];
      if (base) cp_async<Gm::CU>((isv ? s.vc[b][kk] : s.kc[b][kk]) + pc * Gm::CU, base + isv * codeBytes + (size_t)s.ksl[b][kk] * Gm::ROW + pc * Gm::CU);
    }
    for (int i = tid; i < CH * 2 * ng; i += KT) {
      const int kk = i / (2 * ng), r = i - kk * 2 * ng, isv = r >= ng, g = r - isv * ng;
      const uint8_t* base = s.kb[b][kk];
      if (base) cp_async<4>((isv ? s.vsz[b] : s.ksz[b]) + kk * ng + g, base + 2 * codeBytes + isv * szBytes + ((size_t)s.ksl[b][kk] * ng + g) * 4);
    }
  };

  for (int k = 0; k < NBUF; k++) locate(cbeg + k, page_of(cbeg + k), k);
  // q to INT8 per head (contract step 1): warp = head
  for (int h = warp; h < GQ; h += KT / 32) {
    const float* qh = a.q + (size_t)t * C + (size_t)(h0 + h) * HD;
    constexpr int QPL = HD < 32 ? 1 : HD / 32;
    float v[QPL], amax = 0.f;
#pragma unroll
    for (int i = 0; i < QPL; i++) {
      const int c = lane + 32 * i;
      v[i] = c < HD ? qh[c] : 0.f;
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = warp_max(amax);
    const float rq = amax == 0.f ? 0.f : __fdiv_rn(127.f, amax), sq = amax == 0.f ? 0.f : __fdiv_rn(amax, 127.f);
#pragma unroll
    for (int i = 0; i < QPL; i++) {
      const int c = lane + 32 * i;
      if (c < HD) s.q8[h][c] = (int8_t)max(-127, min(127, __float2int_rn(__fmul_rn(v[i], rq))));
    }
    if (lane == 0) s.cs[h] = __fmul_rn(sq, a.ks), s.sl[h] = 0.f, s.tl[h] = 0.f, s.sm[h] = 0.f, s.tm[h] = 0.f;
  }
  __syncthreads();
  for (int k = 0; k + 1 < NBUF; k++) {
    stage(k);
    cp_commit();
  }
  for (int i = tid; i < GQ * ng; i += KT) {
    const int h = i / ng, g = i % ng;
    int sum = 0;
    for (int c = g * G; c < (g + 1) * G; c++) sum += s.q8[h][c];
    s.qg[h][g] = sum;
  }
  for (int i = tid; i < GQ * HD / 8; i += KT) {
    const int h = i / (HD / 8), w = i % (HD / 8);
    const int8_t* q = &s.q8[h][8 * w];
    auto b4 = [](int8_t x0, int8_t x1, int8_t x2, int8_t x3) {
      return (uint32_t)(uint8_t)x0 | (uint32_t)(uint8_t)x1 << 8 | (uint32_t)(uint8_t)x2 << 16 | (uint32_t)(uint8_t)x3 << 24;
    };
    s.qpk[h][w][0] = b4(q[0], q[2], q[4], q[6]);
    s.qpk[h][w][1] = b4(q[1], q[3], q[5], q[7]);
  }
  float segn[SL], totn[SL];
#pragma unroll
  for (int i = 0; i < SL; i++) segn[i] = totn[i] = 0.f;
  const bool shfl_path = HD >= 128 || G >= Gm::CK;  // a P1 thread's channels lie in one group (G >= hd/4 >= 32)
  __syncthreads();

  for (int ci = cbeg; ci < cend; ci++) {
    const int b = (ci - cbeg) % NBUF, nk = min(CH, n - ci * CH);
    const bool seg_first = ci % (SEG / CH) == 0, seg_last = ci + 1 == cend || (ci + 1) % (SEG / CH) == 0;
    if (ci + NBUF - 1 < cend) stage((b + NBUF - 1) % NBUF);  // located in the previous iteration
    cp_commit();
    if (!shfl_path)
      for (int i = tid; i < GQ * NGMAX * CH; i += KT) (&s.d[0][0][0])[i] = 0;
    const int pg_next = page_of(ci + NBUF);  // stored at the end of this iteration
    cp_wait_ahead();
    __syncthreads();

    // ---- P1: D[h][g][key] = Σ_{c in g} q8_c · k_c
#pragma unroll
    for (int ps = 0; ps < Gm::KPASS; ps++) {
      const int kk = ps * Gm::KPP + tid / Gm::LPK, part = tid % Gm::LPK;
      if (kk < CH) {  // warp-uniform (head_dim <= 32: warps 2, 3 idle)
        uint32_t lo[Gm::KW], hi[Gm::KW];
        const uint8_t* row = s.kc[b][kk] + part * (Gm::CK / 2);
#pragma unroll
        for (int wi = 0; wi < Gm::KW; wi++) {
          const uint32_t w = *(const uint32_t*)(row + 4 * wi);
          lo[wi] = w & 0x0F0F0F0Fu;
          hi[wi] = (w >> 4) & 0x0F0F0F0Fu;
        }
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          if (shfl_path) {
            int d = 0;
#pragma unroll
            for (int wi = 0; wi < Gm::KW; wi++) {
              d = __dp4a((int)lo[wi], (int)s.qpk[h][part * Gm::KW + wi][0], d);
              d = __dp4a((int)hi[wi], (int)s.qpk[h][part * Gm::KW + wi][1], d);
            }
            const int LG = min(G / Gm::CK, Gm::LPK);  // threads of one key that share a group
            for (int o = 1; o < LG; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            if (part % LG == 0 && kk < nk) s.d[h][part * Gm::CK / G][kk] = d;
          } else if (kk < nk) {  // groups smaller than a thread's channels: shared atomics (integer sums)
#pragma unroll
            for (int wi = 0; wi < Gm::KW; wi++) {
              const int wd = part * Gm::KW + wi;
              const int ql = (int)s.qpk[h][wd][0], qh = (int)s.qpk[h][wd][1];
              if (HD >= 32 || G >= 8) {
                atomicAdd(&s.d[h][8 * wd / G][kk], __dp4a((int)hi[wi], qh, __dp4a((int)lo[wi], ql, 0)));
              } else {  // G = 2 or 4: G/2 bytes of lo and of hi per group
                const uint32_t m0 = G == 4 ? 0xFFFFu : 0xFFu;
                for (int k = 0; k < 8 / G; k++) {
                  const uint32_t m = m0 << (8 * k * G / 2);
                  atomicAdd(&s.d[h][8 * wd / G + k][kk], __dp4a((int)(hi[wi] & m), qh, __dp4a((int)(lo[wi] & m), ql, 0)));
                }
              }
            }
          }
        }
      }
    }
    __syncthreads();
    // ---- P2: t = fr(dot · cs), dot = Σ_g fr(fr(s·D) + fr(z·Q)) in group order
    for (int i = tid; i < GQ * CH; i += KT) {
      const int h = i / CH, kk = i % CH;
      if (kk < nk) {
        float dot = 0.f;
        for (int g = 0; g < ng; g++) {
          const uint32_t sz = s.ksz[b][kk * ng + g];
          dot = __fadd_rn(dot, __fadd_rn(__fmul_rn(h_lo(sz), __int2float_rn(s.d[h][g][kk])), __fmul_rn(h_hi(sz), __int2float_rn(s.qg[h][g]))));
        }
        s.t[h][kk] = __fmul_rn(dot, s.cs[h]);
      }
    }
    __syncthreads();
    // ---- P3: per head (warp), keys lane and lane + 32: the chunk's softmax, weights and fold factors
    for (int h = warp; h < GQ; h += KT / 32) {
      const bool v0 = lane < nk, v1 = lane + 32 < nk;
      const float t0 = v0 ? s.t[h][lane] : -INFINITY, t1 = v1 ? s.t[h][lane + 32] : -INFINITY;
      const float m = warp_max(fmaxf(t0, t1));
      const float p0 = v0 ? exp2c(__fsub_rn(t0, m)) : 0.f, p1 = v1 ? exp2c(__fsub_rn(t1, m)) : 0.f;
      const float l = bfly(__fadd_rn(p0, p1));
      for (int g = 0; g < ng; g++) {
        const uint32_t z0 = v0 ? s.vsz[b][lane * ng + g] : 0u, z1 = v1 ? s.vsz[b][(lane + 32) * ng + g] : 0u;
        const float w0 = v0 ? __fmul_rn(p0, h_lo(z0)) : 0.f, w1 = v1 ? __fmul_rn(p1, h_lo(z1)) : 0.f;
        const float W = warp_max(fmaxf(w0, w1));
        unsigned u0 = 0, u1 = 0;
        float dq = 0.f;
        if (W > 0.f) {
          const float r = __fdiv_rn(32767.f, W);
          u0 = min(32767u, __float2uint_rn(__fmul_rn(w0, r)));
          u1 = min(32767u, __float2uint_rn(__fmul_rn(w1, r)));
          dq = __fdiv_rn(W, 32767.f);
        }
        const float zt0 = v0 ? __fmul_rn(p0, h_hi(z0)) : 0.f, zt1 = v1 ? __fmul_rn(p1, h_hi(z1)) : 0.f;
        const float zs = bfly(__fadd_rn(zt0, zt1));
        s.u[h][g][lane] = (uint16_t)u0;
        s.u[h][g][lane + 32] = (uint16_t)u1;
        if (lane == 0) s.dq[h][g] = dq, s.zs[h][g] = zs;
      }
      if (lane == 0) {  // fold factors: chunk -> segment, and at a segment's end segment -> total
        const float M = seg_first ? m : fmaxf(s.sm[h], m);
        const float fa = seg_first ? 0.f : exp2c(__fsub_rn(s.sm[h], M)), fb = seg_first ? 1.f : exp2c(__fsub_rn(m, M));
        const float sl = __fadd_rn(__fmul_rn(s.sl[h], fa), __fmul_rn(l, fb));
        s.ca[h] = fa, s.cb[h] = fb, s.sm[h] = M, s.sl[h] = sl;
        if (seg_last && !a.split) {
          const bool first = ci < SEG / CH;
          const float TM = first ? M : fmaxf(s.tm[h], M);
          const float ta = first ? 0.f : exp2c(__fsub_rn(s.tm[h], TM)), tb = first ? 1.f : exp2c(__fsub_rn(M, TM));
          s.tl[h] = __fadd_rn(__fmul_rn(s.tl[h], ta), __fmul_rn(sl, tb));
          s.sa[h] = ta, s.sb[h] = tb, s.tm[h] = TM;
        }
      }
    }
    __syncthreads();
    // ---- P4: A[h][c] = Σ_key u·v over this thread's keys (quads transposed to one register per channel)
    {
      constexpr int WC = Gm::WC, KG = Gm::KG;
      const int wc = tid % WC, kg = tid / WC;
      uint32_t acc[GQ][8];
#pragma unroll
      for (int h = 0; h < GQ; h++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[h][c] = 0u;
      if (kg < KG) {
#pragma unroll
        for (int qd = 0; qd < Gm::KPT / 4; qd++) {
          const int k0 = kg * Gm::KPT + 4 * qd;
          const uint32_t w0 = *(const uint32_t*)(s.vc[b][k0] + 4 * wc), w1 = *(const uint32_t*)(s.vc[b][k0 + 1] + 4 * wc);
          const uint32_t w2 = *(const uint32_t*)(s.vc[b][k0 + 2] + 4 * wc), w3 = *(const uint32_t*)(s.vc[b][k0 + 3] + 4 * wc);
          const uint32_t ab01 = __byte_perm(w0, w1, 0x5140), ab23 = __byte_perm(w0, w1, 0x7362);
          const uint32_t cd01 = __byte_perm(w2, w3, 0x5140), cd23 = __byte_perm(w2, w3, 0x7362);
          const uint32_t tb[4] = {__byte_perm(ab01, cd01, 0x5410), __byte_perm(ab01, cd01, 0x7632),
                                  __byte_perm(ab23, cd23, 0x5410), __byte_perm(ab23, cd23, 0x7632)};
          uint32_t vq[8];  // channel 8·wc + c of keys k0..k0+3, one byte each
#pragma unroll
          for (int i = 0; i < 4; i++) vq[2 * i] = tb[i] & 0x0F0F0F0Fu, vq[2 * i + 1] = (tb[i] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
          for (int h = 0; h < GQ; h++) {
            if (HD >= 32 || G >= 8) {  // G >= hd / 4
              const int g = 8 * wc / G;
              const uint32_t u01 = *(const uint32_t*)&s.u[h][g][k0], u23 = *(const uint32_t*)&s.u[h][g][k0 + 2];
#pragma unroll
              for (int c = 0; c < 8; c++) acc[h][c] = __dp2a_hi(u23, vq[c], __dp2a_lo(u01, vq[c], acc[h][c]));
            } else {
#pragma unroll
              for (int c = 0; c < 8; c++) {
                const int g = (8 * wc + c) / G;
                const uint32_t u01 = *(const uint32_t*)&s.u[h][g][k0], u23 = *(const uint32_t*)&s.u[h][g][k0 + 2];
                acc[h][c] = __dp2a_hi(u23, vq[c], __dp2a_lo(u01, vq[c], acc[h][c]));
              }
            }
          }
        }
      }
      // sum the key groups: inside the warp by shuffles, then one row per warp (P5 adds the rows)
#pragma unroll
      for (int h = 0; h < GQ; h++)
#pragma unroll
        for (int c = 0; c < 8; c++) {
          uint32_t v = acc[h][c];
          for (int o = WC; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
          acc[h][c] = v;
        }
      if (lane < WC)
#pragma unroll
        for (int h = 0; h < GQ; h++)
#pragma unroll
          for (int c = 0; c < 8; c++) s.red[warp][h][8 * wc + c] = acc[h][c];
    }
    __syncthreads();
    // ---- P5: num = fr(fr(f32(A) · dq) + zs), folded into the segment; a finished segment into the total
#pragma unroll
    for (int k = 0; k < SL; k++) {
      const int i = tid + k * KT;
      if (i < GQ * HD) {
        const int h = i / HD, c = i % HD, g = c / G;
        uint32_t A = 0;
#pragma unroll
        for (int w = 0; w < KT / 32; w++) A += s.red[w][h][c];
        const float nc = __fadd_rn(__fmul_rn(__uint2float_rn(A), s.dq[h][g]), s.zs[h][g]);
        segn[k] = __fadd_rn(__fmul_rn(segn[k], s.ca[h]), __fmul_rn(nc, s.cb[h]));
        if (seg_last && a.split) {
          float* o = a.ws + (((size_t)t * a.n_heads + h0 + h) * a.nseg + blockIdx.x) * (HD + 2);
          if (c == 0) o[0] = s.sm[h], o[1] = s.sl[h];
          o[2 + c] = segn[k];
        } else if (seg_last) {
          totn[k] = __fadd_rn(__fmul_rn(totn[k], s.sa[h]), __fmul_rn(segn[k], s.sb[h]));
          if (ci + 1 == cend) a.out[(size_t)t * C + (size_t)(h0 + h) * HD + c] = __fdiv_rn(totn[k], s.tl[h]);
        }
      }
    }
    locate(ci + NBUF, pg_next, b);  // ring slot b's pointers were consumed when chunk ci was staged
    __syncthreads();
  }
}

/** Fold the segment states of one (token, head) in order (contract step 4) and divide: grid (n_heads, T). */
__global__ void __launch_bounds__(128) attn_kv4_combine(const float* __restrict__ ws, const int32_t* __restrict__ pos,
                                                        int n_heads, int hd, int nseg, float* __restrict__ out) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int ns = (pos[t] + SEG) / SEG;  // segments of this token's pos + 1 keys
  const float* p = ws + ((size_t)t * n_heads + h) * nseg * (hd + 2);
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    float m = p[0], l = p[1], num = p[2 + c];  // the first fold (a = 0, b = 1) gives the first state itself
    for (int k = 1; k < ns; k++) {
      const float* q = p + (size_t)k * (hd + 2);
      const float M = fmaxf(m, q[0]), fa = exp2c(__fsub_rn(m, M)), fb = exp2c(__fsub_rn(q[0], M));
      l = __fadd_rn(__fmul_rn(l, fa), __fmul_rn(q[1], fb));
      num = __fadd_rn(__fmul_rn(num, fa), __fmul_rn(q[2 + c], fb));
      m = M;
    }
    out[(size_t)t * n_heads * hd + (size_t)h * hd + c] = __fdiv_rn(num, l);
  }
}

// ==== KV4 on tensor cores (attn_kv4_mma): the same contract, one warp per 128-key segment ==================
// The shapes of the LLaMA family (head_dim 64 / 128 / 256, KV4 groups of >= 64 channels, GQ · head_dim <= 1024,
// pages of a power of two >= 4 keys). Each warp owns a whole segment (its two chunks, folded in registers) with its
// own ring of MNB staged chunks (cp.async, no block barrier while it computes); the block's MW warps take
// segments w, w + MW, ... of one (token, KV head) and fold the segment states in order after each round (two
// barriers per MW segments), or (split mode, few tokens) each warp writes its segment state for attn_kv4_combine.
// Both products run on mma.sync m16n8k32 (exact integer sums, so the contract's bits whatever the tiling):
//   scores  S[key][head] = Kcodes[16 keys][32 ch] (u8) · q8[32 ch][8 heads] (s8): a K code word w gives the A
//           operand's lo/hi nibble bytes (channels 8W + 0,2,4,6 | 1,3,5,7), q8 packed in that order (qpk)
//   P·V     O[ch][u col] = Vcodes^T[16 ch][32 keys] (u8) · U[32 keys][8 cols] (u8): the 15-bit weight u = lo +
//           256·hi as two byte columns per head (4 heads per n-tile); V words of 4 keys transposed by prmt so a
//           register holds one channel of 4 keys (the A operand's k-contiguous bytes)
// The softmax of a chunk runs in the scores' fragment layout: a lane holds keys gid + 8r + 16kt (r, kt) of heads
// 2tq, 2tq + 1 (+ 8 per n-tile), so the contract's butterfly is in-register adds (key bits 5, 4, 3) then xor
// shuffles 16, 8, 4 (key bits 2, 1, 0).
constexpr int MW = 4;   // warps per block
constexpr int MNB = 2;  // staged chunks per warp (one in flight while one is computed)

template <int HD, int GQ>
struct Mc {
  static constexpr int ROWB = HD / 2;       // code bytes per key row
  static constexpr int NP = HD / 32;        // 16-byte pieces per row
  static constexpr int RPB = 8 / NP < 1 ? 1 : 8 / NP;  // rows per 128 bytes (bank period)
  static constexpr int NGM = HD / 64;       // KV4 groups per head at most (G >= 64)
  static constexpr int NCT = HD / 32;       // score channel tiles (k32)
  static constexpr int NT1 = (GQ + 7) / 8;  // score n-tiles (8 heads)
  static constexpr int NSET = HD / 64;      // P·V word sets (8 code words = 64 channels)
  static constexpr int NT4 = (GQ + 3) / 4;  // P·V n-tiles (4 heads × lo/hi)
  static constexpr int SLF = (GQ * HD + MW * 32 - 1) / (MW * 32);  // block fold: (head, channel) slots per thread
  static constexpr bool DUP = GQ <= 4;      // score columns 4..7 repeat heads 0..3 (see attn_kv4_mma)
};

template <int HD, int GQ>
struct MmaSmem {
  using C = Mc<HD, GQ>;
  struct Warp {
    alignas(16) uint8_t kc[MNB][CH * C::ROWB];  // K code rows, 16-byte pieces swizzled (mswz)
    alignas(16) uint8_t vc[MNB][CH * C::ROWB];
    alignas(16) uint32_t ksz[MNB][CH * C::NGM];  // (s, z) f16 pairs [key][group]
    alignas(16) uint32_t vsz[MNB][CH * C::NGM];
    alignas(16) uint16_t uh[C::NGM][GQ][CH];     // 15-bit weights u per (group, head, key)
    float dq[GQ][C::NGM], zs[GQ][C::NGM], m[GQ], l[GQ];
  } w[MW];
  float st[2][MW][GQ][HD + 2];  // segment states of a round (m, l, num), double-buffered by round
  alignas(16) int8_t q8[GQ][HD];
  int qg[GQ][C::NGM];
  float cs[GQ];
};

template <int HD, int GQ>
__device__ __forceinline__ int mswz(int key) {  // 16-byte piece swizzle of a code row (conflict-free score reads)
  using C = Mc<HD, GQ>;
  return (key / C::RPB) & (C::NP - 1);
}

__device__ __forceinline__ void mma_u8s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_u8u8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }

template <int HD, int GQ>
__global__ void __launch_bounds__(MW * 32) attn_kv4_mma(Kv4Args a) {
  using C = Mc<HD, GQ>;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  MmaSmem<HD, GQ>& s = *reinterpret_cast<MmaSmem<HD, GQ>*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tq = lane & 3;
  auto& ws = s.w[warp];
  const int kvh = blockIdx.y, t = blockIdx.z, h0 = kvh * GQ, Cq = a.n_heads * HD;
  // P, G are powers of two here (kv4_mma_supported): shifts, not divisions, in the per-chunk index math
  const int P = a.g.page_size, lp = __ffs(P) - 1, G = a.g.group, lG = __ffs(G) - 1, ng = HD >> lG, lng = __ffs(ng) - 1, lcpg = lG - 5;
  const int n = a.st.pos[t] + 1, nch = (n + CH - 1) / CH, nsg = (n + SEG - 1) / SEG;
  // this block's segments: [sg0, sg1); the warp's k-th is sg0 + warp + MW·k
  const int sg0 = a.split ? blockIdx.x * MW : 0, sg1 = a.split ? min(nsg, sg0 + MW) : nsg;
  if (sg0 >= sg1) return;  // a block past this token's keys (block-uniform)
  const int rounds = (sg1 - sg0 + MW - 1) / MW;
  const size_t codeBytes = (size_t)P * HD / 2, szBytes = (size_t)P * ng * 4, headBytes = 2 * codeBytes + 2 * szBytes;
  const int32_t* bt = a.st.bt + a.st.bt_off[a.st.seq[t]];
  const uint8_t* cbase = a.cache + (size_t)kvh * headBytes;
  const size_t pstride = (size_t)a.g.n_kv_heads * headBytes;

  // the warp's q-th chunk (q = 0, 1, ...): segment sg0 + warp + MW·(q/2), its chunk q % 2; -1 past the end
  auto chunk_of = [&](int q) {
    const int sg = sg0 + warp + MW * (q >> 1), ci = 2 * sg + (q & 1);
    return sg < sg1 && ci < nch ? ci : -1;
  };
  // lane L: page of keys [64ci + L·P, ...) (the chunk's pages; one lane when P >= 64)
  auto pages_of = [&](int ci) {
    if (ci < 0) return 0;
    const int pi = ((ci * CH) >> lp) + lane;
    return lane < max(1, CH >> lp) && (pi << lp) < n ? bt[pi] : 0;
  };
  auto stage = [&](int ci, int pgv, int b) {
    if (ci >= 0) {
      const int c0 = ci * CH;
#pragma unroll
      for (int it = 0; it < 4 * C::NP; it++) {  // K and V code rows: 64 keys × NP pieces each
        const int i = lane + 32 * (it % (2 * C::NP)), isv = it / (2 * C::NP), key = i / C::NP, pc = i % C::NP;
        const int pg = __shfl_sync(0xffffffffu, pgv, key >> lp);
        if (c0 + key < n) {
          const int slot = (c0 + key) & (P - 1);
          const uint8_t* src = cbase + (size_t)pg * pstride + isv * codeBytes + (size_t)slot * C::ROWB + pc * 16;
          uint8_t* dst = (isv ? ws.vc[b] : ws.kc[b]) + key * C::ROWB + ((pc ^ mswz<HD, GQ>(key)) * 16);
          cp_async<16>(dst, src);
        }
      }
      for (int i = lane; i < 2 * 16 * ng; i += 32) {  // (s, z): 4 keys × ng groups = ng pieces per quad
        const int isv = i >> (4 + lng), r = i & ((16 << lng) - 1), quad = r >> lng, gp = r & (ng - 1), key = 4 * quad;
        const int pg = __shfl_sync(0xffffffffu, pgv, key >> lp);  // every lane runs ng rounds
        if (c0 + key < n) {
          const int slot = (c0 + key) & (P - 1);
          const uint8_t* src = cbase + (size_t)pg * pstride + 2 * codeBytes + isv * szBytes + (size_t)slot * ng * 4 + gp * 16;
          cp_async<16>((isv ? ws.vsz[b] : ws.ksz[b]) + key * ng + 4 * gp, src);
        }
      }
    }
    cp_commit();
  };
  int pg_cur = pages_of(chunk_of(0));
  stage(chunk_of(0), pg_cur, 0);
  int pg_next = pages_of(chunk_of(1));

  // q to INT8 per head (contract step 1): warp = head
  for (int h = warp; h < GQ; h += MW) {
    const float* qh = a.q + (size_t)t * Cq + (size_t)(h0 + h) * HD;
    constexpr int QPL = HD / 32;
    float v[QPL], amax = 0.f;
#pragma unroll
    for (int i = 0; i < QPL; i++) v[i] = qh[lane + 32 * i], amax = fmaxf(amax, fabsf(v[i]));
    amax = warp_max(amax);
    const float rq = amax == 0.f ? 0.f : __fdiv_rn(127.f, amax), sq = amax == 0.f ? 0.f : __fdiv_rn(amax, 127.f);
#pragma unroll
    for (int i = 0; i < QPL; i++) s.q8[h][lane + 32 * i] = (int8_t)max(-127, min(127, __float2int_rn(__fmul_rn(v[i], rq))));
    if (lane == 0) s.cs[h] = __fmul_rn(sq, a.ks);
  }
  __syncthreads();
  for (int i = tid; i < GQ * ng; i += MW * 32) {
    const int h = i / ng, g = i - h * ng;
    int sum = 0;
    for (int c = g * G; c < (g + 1) * G; c++) sum += s.q8[h][c];
    s.qg[h][g] = sum;
  }
  __syncthreads();
  // score B operands: column gid = head hcol(nt, gid), channel tile ct, word W = 4ct + tq: [lo: 8W + 0,2,4,6 |
  // hi: 1,3,5,7]. GQ <= 4 (C::DUP): columns 4..7 repeat heads 0..3, so lanes tq and tq ^ 2 hold the same scores
  // and each takes one of its two key rows (r = tq >> 1): the softmax work per lane halves.
  uint32_t qb[C::NT1][C::NCT][2];
#pragma unroll
  for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
    for (int ct = 0; ct < C::NCT; ct++) {
      const int h = C::DUP ? (gid & 3) : 8 * nt + gid, W = 4 * ct + tq;
      uint32_t lo = 0, hi = 0;
      if (h < GQ) {
        const uint2 w = *(const uint2*)&s.q8[h][8 * W];
        lo = __byte_perm(w.x, w.y, 0x6420), hi = __byte_perm(w.x, w.y, 0x7531);
      }
      qb[nt][ct][0] = lo, qb[nt][ct][1] = hi;
    }
  // this lane's score rows (keys 16kt + gid + 8r) and heads: rr < NR, r = DUP ? tq >> 1 : rr; head = DUP ?
  // 2(tq & 1) + hb : 8nt + 2tq + hb
  constexpr int NR = C::DUP ? 1 : 2;
  auto hof = [&](int nt, int hb) { return C::DUP ? 2 * (tq & 1) + hb : 8 * nt + 2 * tq + hb; };
  auto rof = [&](int rr) { return C::DUP ? tq >> 1 : rr; };
  float csr[C::NT1][2];
  int qgr[C::NT1][2][C::NGM];
#pragma unroll
  for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
    for (int hb = 0; hb < 2; hb++) {
      const int h = hof(nt, hb);
      csr[nt][hb] = h < GQ ? s.cs[h] : 0.f;
#pragma unroll
      for (int g = 0; g < C::NGM; g++) qgr[nt][hb][g] = h < GQ && g < ng ? s.qg[h][g] : 0;
    }

  // segment state of this lane's P·V heads 4nt + tq, channels 8(gid + 8set) + e2 (+4 for r = 1)
  float sgm[C::NT4], sgl[C::NT4], sgn[C::NT4][C::NSET][4][2];
  // block fold state: head tid % GQ, channels (tid + 128k) / GQ
  float tm = 0.f, tl = 0.f, tn[C::SLF];
#pragma unroll
  for (int k = 0; k < C::SLF; k++) tn[k] = 0.f;

  for (int r = 0; r < rounds; r++) {
    const int sg = sg0 + warp + MW * r;
#pragma unroll 1
    for (int half = 0; half < 2; half++) {
      const int q = 2 * r + half, b = q & 1, ci = chunk_of(q);
      const int pg_after = pages_of(chunk_of(q + 2));
      stage(chunk_of(q + 1), pg_next, b ^ 1);
      pg_next = pg_after;
      cp_wait1();
      __syncwarp();
      if (ci >= 0) {
        const int c0 = ci * CH, nk = min(CH, n - c0);
        // ---- scores: tv[kt][nt][rr][hb], key 16kt + gid + 8·rof(rr), head hof(nt, hb)
        float tv[4][C::NT1][NR][2];
#pragma unroll
        for (int kt = 0; kt < 4; kt++) {
          float dot[C::NT1][NR][2];
          int D[C::NT1][4];
#pragma unroll
          for (int nt = 0; nt < C::NT1; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) D[nt][e] = 0;
#pragma unroll
            for (int rr = 0; rr < NR; rr++) dot[nt][rr][0] = dot[nt][rr][1] = 0.f;
          }
          const int k0 = 16 * kt + gid, k1 = k0 + 8;
#pragma unroll
          for (int ct = 0; ct < C::NCT; ct++) {
            const int W = 4 * ct + tq;
            const uint32_t w0 = *(const uint32_t*)(ws.kc[b] + k0 * C::ROWB + ((W >> 2) ^ mswz<HD, GQ>(k0)) * 16 + (W & 3) * 4);
            const uint32_t w1 = *(const uint32_t*)(ws.kc[b] + k1 * C::ROWB + ((W >> 2) ^ mswz<HD, GQ>(k1)) * 16 + (W & 3) * 4);
            const uint32_t a0 = w0 & 0x0F0F0F0Fu, a1 = w1 & 0x0F0F0F0Fu, a2 = (w0 >> 4) & 0x0F0F0F0Fu, a3 = (w1 >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int nt = 0; nt < C::NT1; nt++) mma_u8s8(D[nt], a0, a1, a2, a3, qb[nt][ct][0], qb[nt][ct][1]);
            if (((ct + 1) & ((1 << lcpg) - 1)) == 0) {  // end of a KV4 group: dot += fr(fr(s·D_g) + fr(z·Q_g)) in group order
              const int g = ct >> lcpg;
#pragma unroll
              for (int rr = 0; rr < NR; rr++) {
                const bool r1 = rof(rr) == 1;
                const uint32_t sz = ws.ksz[b][(r1 ? k1 : k0) * ng + g];
#pragma unroll
                for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
                  for (int hb = 0; hb < 2; hb++) {
                    const int d = r1 ? D[nt][2 + hb] : D[nt][hb];
                    int qgv = 0;
#pragma unroll
                    for (int gg = 0; gg < C::NGM; gg++) if (gg == g) qgv = qgr[nt][hb][gg];
                    dot[nt][rr][hb] = __fadd_rn(dot[nt][rr][hb], __fadd_rn(__fmul_rn(h_lo(sz), __int2float_rn(d)), __fmul_rn(h_hi(sz), __int2float_rn(qgv))));
                  }
              }
#pragma unroll
              for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) D[nt][e] = 0;
            }
          }
#pragma unroll
          for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
            for (int rr = 0; rr < NR; rr++)
#pragma unroll
              for (int hb = 0; hb < 2; hb++) tv[kt][nt][rr][hb] = __fmul_rn(dot[nt][rr][hb], csr[nt][hb]);
        }
        // ---- the chunk's softmax per head: m, p, l; per group the 15-bit weights u, dq, zs
        auto kmax = [&](float v) {  // over the lanes holding this lane's heads' other keys
          if (NR == 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
          return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
        };
        auto tree = [&](const float (&x)[4][NR]) {  // the contract's bfly: key bits 5, 4 (and 3) here, then 3, 2, 1, 0
          float v;
          if constexpr (NR == 2) {
            float y0 = __fadd_rn(x[0][0], x[2][0]), y1 = __fadd_rn(x[0][NR - 1], x[2][NR - 1]);
            const float z0 = __fadd_rn(x[1][0], x[3][0]), z1 = __fadd_rn(x[1][NR - 1], x[3][NR - 1]);
            y0 = __fadd_rn(y0, z0), y1 = __fadd_rn(y1, z1);
            v = __fadd_rn(y0, y1);
          } else {
            v = __fadd_rn(__fadd_rn(x[0][0], x[2][0]), __fadd_rn(x[1][0], x[3][0]));
            v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 2));
          }
          v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 16));
          v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 8));
          return __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, 4));
        };
#pragma unroll
        for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
          for (int hb = 0; hb < 2; hb++) {
            const int h = hof(nt, hb);
            float m = -INFINITY;
#pragma unroll
            for (int kt = 0; kt < 4; kt++)
#pragma unroll
              for (int rr = 0; rr < NR; rr++)
                if (16 * kt + 8 * rof(rr) + gid < nk) m = fmaxf(m, tv[kt][nt][rr][hb]);
            m = kmax(m);
            float p[4][NR];
#pragma unroll
            for (int kt = 0; kt < 4; kt++)
#pragma unroll
              for (int rr = 0; rr < NR; rr++)
                p[kt][rr] = 16 * kt + 8 * rof(rr) + gid < nk ? exp2c(__fsub_rn(tv[kt][nt][rr][hb], m)) : 0.f;
            const float l = tree(p);
            for (int g = 0; g < ng; g++) {
              float w[4][NR], zt[4][NR], W = 0.f;
#pragma unroll
              for (int kt = 0; kt < 4; kt++)
#pragma unroll
                for (int rr = 0; rr < NR; rr++) {
                  const int key = 16 * kt + 8 * rof(rr) + gid;
                  const uint32_t sz = key < nk ? ws.vsz[b][key * ng + g] : 0u;
                  w[kt][rr] = key < nk ? __fmul_rn(p[kt][rr], h_lo(sz)) : 0.f;
                  zt[kt][rr] = key < nk ? __fmul_rn(p[kt][rr], h_hi(sz)) : 0.f;
                  W = fmaxf(W, w[kt][rr]);
                }
              W = kmax(W);
              const float rW = W > 0.f ? __fdiv_rn(32767.f, W) : 0.f;
              const float zs = tree(zt);
              if (h < GQ) {
#pragma unroll
                for (int kt = 0; kt < 4; kt++)
#pragma unroll
                  for (int rr = 0; rr < NR; rr++)
                    ws.uh[g][h][16 * kt + 8 * rof(rr) + gid] = W > 0.f ? (uint16_t)min(32767u, __float2uint_rn(__fmul_rn(w[kt][rr], rW))) : (uint16_t)0;
                if (lane < 4) ws.dq[h][g] = W > 0.f ? __fdiv_rn(W, 32767.f) : 0.f, ws.zs[h][g] = zs;
              }
            }
            if (h < GQ && lane < 4) ws.m[h] = m, ws.l[h] = l;
          }
        __syncwarp();
        // ---- P·V: A[c] = Σ u·v over the chunk's 64 keys (two k32 steps), per head
        int pv[C::NT4][C::NSET][4][4];
#pragma unroll
        for (int nt = 0; nt < C::NT4; nt++)
#pragma unroll
          for (int st = 0; st < C::NSET; st++)
#pragma unroll
            for (int e2 = 0; e2 < 4; e2++)
#pragma unroll
              for (int e = 0; e < 4; e++) pv[nt][st][e2][e] = 0;
#pragma unroll
        for (int sk = 0; sk < 2; sk++) {
          const int kA = 32 * sk + 4 * tq, kB = kA + 16;
#pragma unroll
          for (int st = 0; st < C::NSET; st++) {
            const int g = (st * 64) >> lG, W = gid + 8 * st;
            uint32_t bf[C::NT4][2];
#pragma unroll
            for (int nt = 0; nt < C::NT4; nt++) {
              const int h = 4 * nt + (gid >> 1);
              uint32_t b0 = 0, b1 = 0;
              if (h < GQ) {
                const uint2 ua = *(const uint2*)&ws.uh[g][h][kA], ub = *(const uint2*)&ws.uh[g][h][kB];
                const uint32_t sel = (gid & 1) ? 0x7531u : 0x6420u;
                b0 = __byte_perm(ua.x, ua.y, sel), b1 = __byte_perm(ub.x, ub.y, sel);
              }
              bf[nt][0] = b0, bf[nt][1] = b1;
            }
            uint32_t va[8], vb[8];  // channel 8W + e (e = 2·byte + nibble) of keys kA..kA+3, kB..kB+3
            auto tr = [&](int k, uint32_t (&o)[8]) {
              uint32_t x[4];
#pragma unroll
              for (int j = 0; j < 4; j++) x[j] = *(const uint32_t*)(ws.vc[b] + (k + j) * C::ROWB + ((W >> 2) ^ mswz<HD, GQ>(k + j)) * 16 + (W & 3) * 4);
              const uint32_t lo01 = __byte_perm(x[0], x[1], 0x5140), hi01 = __byte_perm(x[0], x[1], 0x7362);
              const uint32_t lo23 = __byte_perm(x[2], x[3], 0x5140), hi23 = __byte_perm(x[2], x[3], 0x7362);
              const uint32_t y[4] = {__byte_perm(lo01, lo23, 0x5410), __byte_perm(lo01, lo23, 0x7632),
                                     __byte_perm(hi01, hi23, 0x5410), __byte_perm(hi01, hi23, 0x7632)};
#pragma unroll
              for (int j = 0; j < 4; j++) o[2 * j] = y[j] & 0x0F0F0F0Fu, o[2 * j + 1] = (y[j] >> 4) & 0x0F0F0F0Fu;
            };
            tr(kA, va);
            tr(kB, vb);
#pragma unroll
            for (int e2 = 0; e2 < 4; e2++)
#pragma unroll
              for (int nt = 0; nt < C::NT4; nt++) mma_u8u8(pv[nt][st][e2], va[e2], va[e2 + 4], vb[e2], vb[e2 + 4], bf[nt][0], bf[nt][1]);
          }
        }
        // ---- num = fr(fr(f32(A)·dq) + zs), folded into the segment state (first chunk: a = 0, b = 1)
        const bool first = (ci & 1) == 0;
#pragma unroll
        for (int nt = 0; nt < C::NT4; nt++) {
          const int h = 4 * nt + tq;
          if (h < GQ) {  // lanes tq >= GQ (GQ < 4) idle here; no shuffles below
            const float m = ws.m[h], l = ws.l[h];
            const float M = first ? m : fmaxf(sgm[nt], m);
            const float fa = first ? 0.f : exp2c(__fsub_rn(sgm[nt], M)), fb = first ? 1.f : exp2c(__fsub_rn(m, M));
            sgl[nt] = __fadd_rn(__fmul_rn(first ? 0.f : sgl[nt], fa), __fmul_rn(l, fb));
            sgm[nt] = M;
#pragma unroll
            for (int st = 0; st < C::NSET; st++) {
              const int g = (st * 64) >> lG;
              const float dq = ws.dq[h][g], zs = ws.zs[h][g];
#pragma unroll
              for (int e2 = 0; e2 < 4; e2++)
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                  const int A = pv[nt][st][e2][2 * rr] + 256 * pv[nt][st][e2][2 * rr + 1];
                  const float nc = __fadd_rn(__fmul_rn(__int2float_rn(A), dq), zs);
                  sgn[nt][st][e2][rr] = __fadd_rn(__fmul_rn(first ? 0.f : sgn[nt][st][e2][rr], fa), __fmul_rn(nc, fb));
                }
            }
          }
        }
        // ---- a finished segment: its state to the workspace (split) or to the round's slot
        if ((ci & 1) || ci + 1 == nch) {
#pragma unroll
          for (int nt = 0; nt < C::NT4; nt++) {
            const int h = 4 * nt + tq;
            if (h < GQ) {
              float* o = a.split ? a.ws + (((size_t)t * a.n_heads + h0 + h) * a.nseg + sg) * (HD + 2) : s.st[r & 1][warp][h];
              if (gid == 0) o[0] = sgm[nt], o[1] = sgl[nt];
#pragma unroll
              for (int st = 0; st < C::NSET; st++)
#pragma unroll
                for (int e2 = 0; e2 < 4; e2++)
#pragma unroll
                  for (int rr = 0; rr < 2; rr++) o[2 + 8 * (gid + 8 * st) + e2 + 4 * rr] = sgn[nt][st][e2][rr];
            }
          }
        }
      }
      __syncwarp();  // ring slot b and the warp's u / stats are consumed before they are written again
    }
    if (a.split) continue;
    // ---- fold the round's segments into the total, in order (contract step 4); then out at the end
    __syncthreads();
    const int h = tid % GQ, nw = min(MW, sg1 - sg0 - MW * r);
    for (int w = 0; w < nw; w++) {
      const float* o = s.st[r & 1][w][h];
      const bool first = r == 0 && w == 0;
      const float M = first ? o[0] : fmaxf(tm, o[0]);
      const float fa = first ? 0.f : exp2c(__fsub_rn(tm, M)), fb = first ? 1.f : exp2c(__fsub_rn(o[0], M));
      tl = __fadd_rn(__fmul_rn(tl, fa), __fmul_rn(o[1], fb));
#pragma unroll
      for (int k = 0; k < C::SLF; k++) {
        const int c = (tid + MW * 32 * k) / GQ;
        if (c < HD) tn[k] = __fadd_rn(__fmul_rn(tn[k], fa), __fmul_rn(o[2 + c], fb));
      }
      tm = M;
    }
  }
  if (a.split) return;
  const int h = tid % GQ;
#pragma unroll
  for (int k = 0; k < C::SLF; k++) {
    const int c = (tid + MW * 32 * k) / GQ;
    if (c < HD) a.out[(size_t)t * Cq + (size_t)(h0 + h) * HD + c] = __fdiv_rn(tn[k], tl);
  }
}

template <int HD, int GQ>
int launch_kv4(const Kv4Args& a, dim3 grid, cudaStream_t s) {
  constexpr size_t smem = sizeof(Kv4Smem<HD, GQ>);
  static const cudaError_t attr = smem > (48 << 10) ? cudaFuncSetAttribute(attn_kv4<HD, GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) : cudaSuccess;
  COMET_TRY("attention (kv4) shared memory", attr);
  attn_kv4<HD, GQ><<<grid, KT, smem, s>>>(a);
  return check_launch("attention (kv4)");
}

/** The instantiations: head_dim 8 (stories260K), 32, 64, 128, 256 with the GQA groups of the LLaMA family
 *  (64: up to 16 query heads per KV head; 256: up to 2). */
template <int HD>
int launch_kv4_gq(const Kv4Args& a, int gq, dim3 grid, cudaStream_t s) {
  switch (gq) {
    case 1: return launch_kv4<HD, 1>(a, grid, s);
    case 2: return launch_kv4<HD, 2>(a, grid, s);
  }
  if constexpr (HD <= 128) {
    if (gq == 4) return launch_kv4<HD, 4>(a, grid, s);
  }
  if constexpr (HD == 64 || HD == 128) {
    if (gq == 8) return launch_kv4<HD, 8>(a, grid, s);
  }
  if constexpr (HD == 64) {
    if (gq == 16) return launch_kv4<HD, 16>(a, grid, s);
  }
  return set_error(COMET_EINVAL, "attention (kv4): %d query heads per KV head at head_dim %d not supported", gq, HD);
}

/** attn_kv4_mma's shapes: head_dim 64 / 128 / 256, groups of a multiple of 64 channels, GQ a power of two with
 *  GQ · head_dim <= 1024, pages of a power of two >= 4 keys. */
bool kv4_mma_supported(int hd, int gq, int G, int P) {
  const bool hd_ok = hd == 64 || hd == 128 || hd == 256;
  const bool gq_ok = gq >= 1 && gq <= 16 && (gq & (gq - 1)) == 0 && gq * hd <= 1024;
  return hd_ok && gq_ok && G >= 64 && G % 64 == 0 && hd % G == 0 && P >= 4 && (P & (P - 1)) == 0;
}

/** Launch attn_kv4_mma: one block per (token, KV head) when those fill the GPU's resident blocks, else one block per
 *  MW segments (split: states to the workspace, attn_kv4_combine folds them). */
template <int HD, int GQ>
int launch_kv4_mma(Kv4Args a, int T, int nkv, cudaStream_t s) {
  constexpr size_t smem = sizeof(MmaSmem<HD, GQ>);
  static int resident = 0;  // blocks the GPU holds at once
  if (!resident) {
    COMET_TRY("attention (kv4 mma) shared memory", cudaFuncSetAttribute(attn_kv4_mma<HD, GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int dev = 0, sms = 0, per = 0;
    COMET_TRY("attention (kv4 mma) device", cudaGetDevice(&dev));
    COMET_TRY("attention (kv4 mma) SMs", cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    COMET_TRY("attention (kv4 mma) occupancy", cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, attn_kv4_mma<HD, GQ>, MW * 32, smem));
    resident = max(1, sms * per);
  }
  a.split = T * nkv < resident && a.nseg > 1;
  const dim3 grid(a.split ? (a.nseg + MW - 1) / MW : 1, nkv, T);
  attn_kv4_mma<HD, GQ><<<grid, MW * 32, smem, s>>>(a);
  if (int e = check_launch("attention (kv4 mma)")) return e;
  if (!a.split) return 0;
  attn_kv4_combine<<<dim3(a.n_heads, T), 128, 0, s>>>(a.ws, a.st.pos, a.n_heads, HD, a.nseg, a.out);
  return check_launch("attention (kv4 combine)");
}

int launch_kv4_mma_any(const Kv4Args& a, int hd, int gq, int T, int nkv, cudaStream_t s) {
  switch (hd * 100 + gq) {
    case 6401: return launch_kv4_mma<64, 1>(a, T, nkv, s);
    case 6402: return launch_kv4_mma<64, 2>(a, T, nkv, s);
    case 6404: return launch_kv4_mma<64, 4>(a, T, nkv, s);
    case 6408: return launch_kv4_mma<64, 8>(a, T, nkv, s);
    case 6416: return launch_kv4_mma<64, 16>(a, T, nkv, s);
    case 12801: return launch_kv4_mma<128, 1>(a, T, nkv, s);
    case 12802: return launch_kv4_mma<128, 2>(a, T, nkv, s);
    case 12804: return launch_kv4_mma<128, 4>(a, T, nkv, s);
    case 12808: return launch_kv4_mma<128, 8>(a, T, nkv, s);
    case 25601: return launch_kv4_mma<256, 1>(a, T, nkv, s);
    case 25602: return launch_kv4_mma<256, 2>(a, T, nkv, s);
    case 25604: return launch_kv4_mma<256, 4>(a, T, nkv, s);
  }
  return set_error(COMET_EINVAL, "attention (kv4 mma): head_dim %d with %d query heads per KV head", hd, gq);
}

bool kv4_supported(int hd, int gq) {
  switch (hd) {
    case 8: case 32: return gq == 1 || gq == 2 || gq == 4;
    case 64: return gq == 1 || gq == 2 || gq == 4 || gq == 8 || gq == 16;
    case 128: return gq == 1 || gq == 2 || gq == 4 || gq == 8;
    case 256: return gq == 1 || gq == 2;
    default: return false;
  }
}

size_t kv4_workspace(int T, int n_heads, int hd, int max_len) {
  return (size_t)T * n_heads * ((max_len + SEG - 1) / SEG) * (hd + 2) * sizeof(float);
}

}  // namespace

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
  if (nc == 1) attn_split<1><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else if (nc == 2) attn_split<2><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else if (nc <= 4) attn_split<4><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  else attn_split<8><<<grid, ATT_WARPS * 32, 0, S(stream)>>>(a);
  if (int e = check_launch("attention (f32)")) return e;
  attn_combine<<<dim3(n_heads, T), 128, 0, S(stream)>>>(a.ws, n_heads, hd, a.nsplit, out);
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
  Kv4Args a{q, cache, st, g, n_heads, T * nkv < SPLIT_BELOW && nseg > 1, nseg, (float)(1.4426950408889634 / sqrt((double)hd)), (float*)ws, out};
  const dim3 grid(a.split ? nseg : 1, nkv, T);
  int e;
  switch (hd) {
    case 8: e = launch_kv4_gq<8>(a, gq, grid, S(stream)); break;
    case 32: e = launch_kv4_gq<32>(a, gq, grid, S(stream)); break;
    case 64: e = launch_kv4_gq<64>(a, gq, grid, S(stream)); break;
    case 128: e = launch_kv4_gq<128>(a, gq, grid, S(stream)); break;
    default: e = launch_kv4_gq<256>(a, gq, grid, S(stream)); break;
  }
  if (e || !a.split) return e;
  attn_kv4_combine<<<dim3(n_heads, T), 128, 0, S(stream)>>>(a.ws, st.pos, n_heads, hd, nseg, out);
  return check_launch("attention (kv4 combine)");
}
