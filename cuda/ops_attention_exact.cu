// KV4 attention that computes what the simulator computes (simulator/kernels/attention.ts over
// simulator/kv4.ts readK/readV), for the default CUDA path: greedy tokens on CUDA must equal the simulator's.
//
// The simulator dequantizes every element in f32, x = f32(f32(code·s) + z) (code 0..15 unsigned, s and z the
// f16 pair of the element's (token, group)), then does everything else in f64: dot = Σ_c q_c·x_c (q f32, so
// each product is exact in f64), score = dot · (1/sqrt(hd)), max, p = exp(score - max), sum, acc += (p/sum)·x,
// out = f32(acc). Here: x is dequantized exactly the same way (one f32 FMA: code·s is exact in f32, so FMA and
// mul-then-add round identically, see kv4DequantizeGroup), widened to f64 exactly, and every product, sum, exp
// and the P·V accumulation is f64, in an order of our choosing (online softmax over tiles, then over splits).
// f64 results that differ only by summation order or libm's last bit round to the same f32 except on a
// near-tie, ~2^-29 relative: in practice bit-equal outputs (test/ops.test.ts asserts it on its shapes).
//
// Work decomposition (the fast f32 kernels' shape, cuda/ops_attention.cu): grid (split, KV head, token),
// EX_THREADS threads; one block serves all GQ query heads of its GQA group against keys [j0, j1) of the
// token's sequence, so each code is loaded and dequantized once per group and then used by GQ f64 FMAs. A tile
// of EX_KT = 32 keys at a time:
//   A scores  lane = key of the tile, warp w = channel quarter [w·HD/4, (w+1)·HD/4): the lane loads its key's
//             quarter of codes (HD/8 bytes, straight from global memory: rows are contiguous inside a page),
//             dequantizes, and keeps GQ partial dots (q as f64 in shared memory, read as warp broadcasts);
//             partials to shared memory ss[GQ][4][KT].
//   B softmax warp = head (heads w, w + 4, ..), lane = key: score = Σ_w partials · scale, tile max, running
//             max m, corr = exp(m_old - m_new), p = exp(score - m_new), l = l·corr + Σ p; p to ps[GQ][KT].
//   C P·V     thread = (slice of CPT channels, key group kg): keys kg, kg + KG, .. of the tile; per key the
//             slice's CPT codes (CPT/2 bytes), dequantized, then GQ·CPT f64 FMAs acc[h][i] += p[h][key]·x[i];
//             acc rescaled by corr first (skipped when the max did not move, the common case).
// At the end the KG key groups' accumulators are summed through shared memory (a fixed tree), then either the
// output is written (one split: acc / l, rounded to f32) or the partial (m, l, acc[HD]) goes to the f64
// workspace [T][n_heads][nsplit][HD + 2] and ex_combine merges the splits in f64.
//
// Measured (H100, LLaMA-3-8B attention: 32 heads, 8 KV heads, hd 128, KV4 G = 128, pages of 16; GPU time per
// launch, us; .device/exact/check.ts through the backend's op timing, 2026-11-24):
//   case                     variant 1  variant 0  variant 2  fast f32 kernels (COMET_ATTN_FAST=1)
//   decode b1, ctx 1024         21.9       21.4       21.4      12.1
//   decode b16, ctx 1024        71.0       70.1       63.8      22.0
//   decode b64, ctx 1024       212.0      205.4      189.7      37.6
//   prefill 256 tokens         128.0      124.9      116.1      37.3
//   prefill 1024 tokens       1442.9     1420.4     1278.7     261.2
// b64 does 537 M f64 FMAs (32 us at the H100's f64 rate), so ~190 us is neither the f64 pipe nor HBM (71 MB of
// KV4, ~25 us): prefetching did not help (not latency), F2F did (issue). Suspects, unmeasured: the runtime
// integer divisions j / P, j % P per key (~25 instructions each), 64-bit address arithmetic per key, and the
// 128-bit shared broadcasts of q (phase A: GQ per 2 elements).
#include <math.h>
#include <stdlib.h>

#include "ops.cuh"

using namespace comet_ops;

namespace {

constexpr int EX_THREADS = 128, EX_WARPS = EX_THREADS / 32, EX_KT = 32;
constexpr int EX_DEFAULT_VARIANT = 2;  // launch_hd (the fastest measured; all three pass the bit-equal tests)

struct ExArgs {
  const float* q;
  const uint8_t* cache;
  comet_step st;
  comet_kv_geom g;
  int n_heads, chunk, nsplit;
  double scale;
  double* ws;  // [T][n_heads][nsplit][HD + 2] (m, l, acc) when nsplit > 1
  float* out;  // [T][n_heads·HD]
};

/** An f32 that is 0 or normal, widened to f64 exactly with integer ops (variants 0 and 1; F2F.F64.F32 runs at a
 *  quarter of the f64 FMA rate on sm_90, but measured, variant 2's F2F is ~10% faster than these ~6 ALU ops).
 *  Dequantized KV4 values are multiples of 2^-24 (f16 s and z), so a non-zero one is >= 2^-24: never subnormal,
 *  never inf/nan. */
__device__ __forceinline__ double widen(float x) {
  const uint32_t u = __float_as_uint(x), a = u & 0x7fffffffu;
  const uint32_t hi = (u & 0x80000000u) | (a ? (a >> 3) + 0x38000000u : 0u);  // exponent + (1023 - 127)
  return __hiloint2double((int)hi, (int)(u << 29));
}

/** dequantized value of nibble i of w with the group's (s, z): f32(code·s + z), as kv4.ts; widened with integer
 *  ops (CVT false) or the F2F conversion (CVT true): the same value, a different pipe */
template <bool CVT>
__device__ __forceinline__ double deq(uint32_t w, int i, float s, float z) {
  const float code = __uint_as_float(0x4B000000u | ((w >> (4 * i)) & 15u)) - 8388608.f;  // exact, no I2F
  const float x = __fmaf_rn(code, s, z);
  return CVT ? (double)x : widen(x);
}

template <int HD>
struct LoadA {
  static constexpr int NW = HD / 4 / 8;
  uint32_t w[NW], sz[NW];
  __device__ __forceinline__ void load(const uint8_t* chunk, int slot, int warp, int G, int ng, size_t codeBytes) {
    constexpr int QW = HD / 4;
    const uint8_t* codes = chunk + (size_t)slot * (HD / 2) + warp * (QW / 2);
    if constexpr (NW >= 4) {
#pragma unroll
      for (int v = 0; v < NW / 4; v++) {
        const uint4 u = __ldg((const uint4*)codes + v);
        w[4 * v] = u.x, w[4 * v + 1] = u.y, w[4 * v + 2] = u.z, w[4 * v + 3] = u.w;
      }
    } else if constexpr (NW == 2) {
      const uint2 u = __ldg((const uint2*)codes);
      w[0] = u.x, w[1] = u.y;
    } else {
      w[0] = __ldg((const uint32_t*)codes);
    }
    const uint32_t* szp = (const uint32_t*)(chunk + 2 * codeBytes) + (size_t)slot * ng;
    if (G >= QW) {  // G and QW are powers of two dividing HD: the quarter is inside group warp·QW / G
      const uint32_t v = __ldg(szp + warp * QW / G);
#pragma unroll
      for (int u = 0; u < NW; u++) sz[u] = v;
    } else {
#pragma unroll
      for (int u = 0; u < NW; u++) sz[u] = __ldg(szp + (warp * QW + 8 * u) / G);
    }
  }
};

__device__ __forceinline__ float h_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu))); }
__device__ __forceinline__ float h_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

template <int HD, int GQ, int V>
__global__ void __launch_bounds__(EX_THREADS) attn_kv4_exact(ExArgs a) {
  constexpr bool PF = V >= 1, CVT = V == 2;       // variants: see launch_hd
  constexpr int CPT = GQ <= 4 ? 8 : 4;          // P·V channels per thread (acc registers: GQ·CPT doubles)
  constexpr int NSL = HD / CPT;                 // channel slices
  constexpr int KG = EX_THREADS / NSL;          // key groups in phase C
  constexpr int KPT = EX_KT / KG;               // keys per thread per tile in phase C
  constexpr int QW = HD / 4;                    // channels per warp in phase A
  static_assert(KG >= 1 && KG * NSL == EX_THREADS && KPT * KG == EX_KT, "HD / CPT must divide the block");
  __shared__ __align__(16) double qs[GQ][HD];
  __shared__ double ss[GQ][EX_WARPS][EX_KT];
  __shared__ double ps[GQ][EX_KT];
  __shared__ double sm_m[GQ], sm_l[GQ], sm_c[GQ];
  __shared__ __align__(16) double red[(KG > 1 ? KG / 2 : 1) * GQ * HD];

  const int sp = blockIdx.x, kvh = blockIdx.y, t = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = a.g.page_size, G = a.g.group, ng = HD / G;
  const int n = a.st.pos[t] + 1, j0 = sp * a.chunk, j1 = min(n, j0 + a.chunk);
  const int h0 = kvh * GQ, C = a.n_heads * HD;
  const size_t codeBytes = (size_t)P * HD / 2, szBytes = (size_t)P * ng * 4;
  const size_t headBytes = 2 * codeBytes + 2 * szBytes, pageStride = (size_t)a.g.n_kv_heads * headBytes;
  const uint8_t* base = a.cache + (size_t)kvh * headBytes;
  const int32_t* bt = a.st.bt + a.st.bt_off[a.st.seq[t]];

  if (j0 >= j1) {  // past this token's keys: an empty partial (the combine skips it)
    if (a.nsplit > 1 && tid < GQ) {
      double* o = a.ws + (((size_t)t * a.n_heads + h0 + tid) * a.nsplit + sp) * (HD + 2);
      o[0] = -INFINITY;
      o[1] = 0.0;
    }
    return;
  }
  for (int i = tid; i < GQ * HD; i += EX_THREADS) qs[i / HD][i % HD] = (double)a.q[(size_t)t * C + (size_t)h0 * HD + i];
  if (tid < GQ) sm_m[tid] = -INFINITY, sm_l[tid] = 0.0;

  const int sl = tid % NSL, kg = tid / NSL;  // phase C role
  const int c0v = sl * CPT, giv = c0v / G;
  double acc[GQ][CPT];
#pragma unroll
  for (int h = 0; h < GQ; h++)
#pragma unroll
    for (int i = 0; i < CPT; i++) acc[h][i] = 0.0;

  // phase A operands of the current tile (PF: loaded one tile ahead, while the previous tile computes)
  LoadA<HD> la;
  if (PF && j0 + lane < j1) {
    const int j = j0 + lane;
    la.load(base + (size_t)bt[j / P] * pageStride, j % P, warp, G, ng, codeBytes);
  }
  __syncthreads();

  for (int jt = j0; jt < j1; jt += EX_KT) {
    // phase C operands of this tile, loaded before phase A computes (PF) or just before use
    uint32_t cw[KPT], cz[KPT];
    auto loadC = [&]() {
#pragma unroll
      for (int k = 0; k < KPT; k++) {
        const int j = jt + kg + k * KG;
        cw[k] = 0, cz[k] = 0;
        if (j < j1) {
          const uint8_t* chunk = base + (size_t)bt[j / P] * pageStride;
          const int slot = j % P;
          const uint8_t* codes = chunk + codeBytes + (size_t)slot * (HD / 2) + c0v / 2;
          cw[k] = CPT == 8 ? __ldg((const uint32_t*)codes) : (uint32_t)__ldg((const uint16_t*)codes);
          cz[k] = __ldg((const uint32_t*)(chunk + 2 * codeBytes + szBytes) + (size_t)slot * ng + giv);
        }
      }
    };
    if (PF) loadC();
    // ---- A: partial dots of key jt + lane over channel quarter `warp`, all GQ heads (two chains per head)
    {
      const int j = jt + lane;
      double part[GQ][2];
#pragma unroll
      for (int h = 0; h < GQ; h++) part[h][0] = part[h][1] = 0.0;
      if (j < j1) {
        if (!PF) la.load(base + (size_t)bt[j / P] * pageStride, j % P, warp, G, ng, codeBytes);
#pragma unroll
        for (int u = 0; u < QW / 8; u++) {
          const int c0 = warp * QW + 8 * u;
          const float s = h_lo(la.sz[u]), z = h_hi(la.sz[u]);
#pragma unroll
          for (int i = 0; i < 8; i += 2) {
            const double x0 = deq<CVT>(la.w[u], i, s, z), x1 = deq<CVT>(la.w[u], i + 1, s, z);
#pragma unroll
            for (int h = 0; h < GQ; h++) {
              const double2 qq = *(const double2*)&qs[h][c0 + i];
              part[h][0] = fma(qq.x, x0, part[h][0]);
              part[h][1] = fma(qq.y, x1, part[h][1]);
            }
          }
        }
      }
#pragma unroll
      for (int h = 0; h < GQ; h++) ss[h][warp][lane] = part[h][0] + part[h][1];
      if (PF && jt + EX_KT + lane < j1) {  // the next tile's phase A operands
        const int jn = jt + EX_KT + lane;
        la.load(base + (size_t)bt[jn / P] * pageStride, jn % P, warp, G, ng, codeBytes);
      }
    }
    if (!PF) loadC();
    __syncthreads();
    // ---- B: online softmax per head (warp = head, lane = key)
    for (int h = warp; h < GQ; h += EX_WARPS) {
      const int j = jt + lane;
      double sc = -INFINITY;
      if (j < j1) {
        double d = 0.0;
#pragma unroll
        for (int w = 0; w < EX_WARPS; w++) d += ss[h][w][lane];
        sc = d * a.scale;
      }
      double tm = sc;
      for (int o = 16; o > 0; o >>= 1) tm = fmax(tm, __shfl_xor_sync(0xffffffffu, tm, o));
      const double mo = sm_m[h], mn = fmax(mo, tm);  // tm is finite: key jt < j1 is valid
      const double p = j < j1 ? exp(sc - mn) : 0.0;
      ps[h][lane] = p;
      double ls = p;
      for (int o = 16; o > 0; o >>= 1) ls += __shfl_xor_sync(0xffffffffu, ls, o);
      if (lane == 0) {
        const double corr = mo == -INFINITY ? 0.0 : exp(mo - mn);
        sm_c[h] = corr;
        sm_l[h] = sm_l[h] * corr + ls;
        sm_m[h] = mn;
      }
    }
    __syncthreads();
    // ---- C: acc[h][c] = acc·corr + Σ_j p[h][j]·x[j][c] over this key group's keys of the tile
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      const double corr = sm_c[h];
      if (corr != 1.0)
#pragma unroll
        for (int i = 0; i < CPT; i++) acc[h][i] *= corr;
    }
#pragma unroll
    for (int k = 0; k < KPT; k++) {
      const int jj = kg + k * KG;
      if (jt + jj < j1) {
        const float s = h_lo(cz[k]), z = h_hi(cz[k]);
        double pj[GQ];
#pragma unroll
        for (int h = 0; h < GQ; h++) pj[h] = ps[h][jj];
#pragma unroll
        for (int i = 0; i < CPT; i++) {
          const double x = deq<CVT>(cw[k], i, s, z);
#pragma unroll
          for (int h = 0; h < GQ; h++) acc[h][i] = fma(pj[h], x, acc[h][i]);
        }
      }
    }
    __syncthreads();  // ss / ps are rewritten by the next tile
  }

  // ---- sum the KG key groups' accumulators: a fixed tree through shared memory
  for (int half = KG / 2; half >= 1; half /= 2) {
    if (kg >= half && kg < 2 * half) {
#pragma unroll
      for (int h = 0; h < GQ; h++)
#pragma unroll
        for (int i = 0; i < CPT; i++) red[((kg - half) * GQ + h) * HD + sl * CPT + i] = acc[h][i];
    }
    __syncthreads();
    if (kg < half) {
#pragma unroll
      for (int h = 0; h < GQ; h++)
#pragma unroll
        for (int i = 0; i < CPT; i++) acc[h][i] += red[(kg * GQ + h) * HD + sl * CPT + i];
    }
    __syncthreads();
  }
  if (kg == 0) {
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      if (a.nsplit == 1) {
        const double l = sm_l[h];
        float* o = a.out + (size_t)t * C + (size_t)(h0 + h) * HD + sl * CPT;
#pragma unroll
        for (int i = 0; i < CPT; i++) o[i] = (float)(acc[h][i] / l);
      } else {
        double* o = a.ws + (((size_t)t * a.n_heads + h0 + h) * a.nsplit + sp) * (HD + 2);
        if (sl == 0) o[0] = sm_m[h], o[1] = sm_l[h];
#pragma unroll
        for (int i = 0; i < CPT; i++) o[2 + sl * CPT + i] = acc[h][i];
      }
    }
  }
}

constexpr int EX_MAX_SPLITS = 1024;

/** Merge the splits of one (token, head) in f64: M = max m_s, w_s = exp(m_s - M) (0 for empty splits),
 *  out = f32(Σ w_s·acc_s / Σ w_s·l_s). grid (n_heads, T), 128 threads. */
__global__ void __launch_bounds__(128) ex_combine(const double* __restrict__ ws, int n_heads, int hd, int nsplit,
                                                  float* __restrict__ out) {
  __shared__ double sw[EX_MAX_SPLITS];
  __shared__ double sL;
  const int h = blockIdx.x, t = blockIdx.y;
  const double* p = ws + ((size_t)t * n_heads + h) * nsplit * (hd + 2);
  for (int s = threadIdx.x; s < nsplit; s += blockDim.x) sw[s] = p[(size_t)s * (hd + 2)];
  __syncthreads();
  if (threadIdx.x < 32) {  // M and L by one warp, in a fixed order
    double M = -INFINITY;
    for (int s = threadIdx.x; s < nsplit; s += 32) M = fmax(M, sw[s]);
    for (int o = 16; o > 0; o >>= 1) M = fmax(M, __shfl_xor_sync(0xffffffffu, M, o));
    __syncwarp();
    double L = 0.0;
    for (int s = threadIdx.x; s < nsplit; s += 32) {
      const double m = sw[s], w = m == -INFINITY ? 0.0 : exp(m - M);
      L += p[(size_t)s * (hd + 2) + 1] * w;
      sw[s] = w;
    }
    L = warp_sum(L);
    if (threadIdx.x == 0) sL = L;
  }
  __syncthreads();
  const double L = sL;
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    double acc = 0.0;
    for (int s = 0; s < nsplit; s++) {
      const double w = sw[s];
      if (w != 0.0) acc = fma(p[(size_t)s * (hd + 2) + 2 + c], w, acc);
    }
    out[(size_t)t * n_heads * hd + (size_t)h * hd + c] = (float)(acc / L);
  }
}

bool exact_ok(const comet_kv_geom& g, int n_heads) {
  if (g.n_kv_heads <= 0 || n_heads % g.n_kv_heads) return false;
  const int hd = g.head_dim, gq = n_heads / g.n_kv_heads;
  if (!(hd == 32 || hd == 64 || hd == 128 || hd == 256)) return false;
  if (!(gq == 1 || gq == 2 || gq == 4 || gq == 8) || gq * hd > 2048) return false;  // shared memory, registers
  if (!(g.group > 0 && g.group % 8 == 0 && hd % g.group == 0)) return false;  // 8-channel code words in one group
  return ((size_t)g.page_size * (hd / g.group)) % 4 == 0;  // (page, head) chunks 16-byte aligned: uint4 code loads
}

/** Splits: ~8 blocks per SM of an H100 when T·n_kv is small (decode), whole EX_KT tiles per split, and no more
 *  than the caller's workspace (sized by comet_attention_workspace) holds. COMET_ATTN_SPLITS=n caps it. */
void plan_exact(int T, int n_heads, int n_kv, int hd, int max_len, int* nsplit, int* chunk) {
  static const int forced = getenv("COMET_ATTN_SPLITS") ? atoi(getenv("COMET_ATTN_SPLITS")) : 0;
  int ns = forced > 0 ? forced : (8 * 132 + T * n_kv - 1) / (T * n_kv);
  ns = min(ns, (max_len + EX_KT - 1) / EX_KT);
  const size_t cap = comet_attention_workspace(T, n_heads, hd, max_len) / ((size_t)T * n_heads * (hd + 2) * sizeof(double));
  ns = (int)min((size_t)ns, cap);
  ns = max(1, min(ns, EX_MAX_SPLITS));
  int ch = (max_len + ns - 1) / ns;
  ch = (ch + EX_KT - 1) / EX_KT * EX_KT;
  *chunk = ch;
  *nsplit = (max_len + ch - 1) / ch;
}

template <int HD, int V>
void launch_gq(const ExArgs& a, int gq, dim3 grid, cudaStream_t s) {
  if (gq == 1) attn_kv4_exact<HD, 1, V><<<grid, EX_THREADS, 0, s>>>(a);
  else if (gq == 2) attn_kv4_exact<HD, 2, V><<<grid, EX_THREADS, 0, s>>>(a);
  else if (gq == 4) attn_kv4_exact<HD, 4, V><<<grid, EX_THREADS, 0, s>>>(a);
  else attn_kv4_exact<HD, 8, V><<<grid, EX_THREADS, 0, s>>>(a);
}
/** Variants (same results, bit for bit): 0 loads each tile's codes just before use; 1 prefetches them (phase C's
 *  before phase A computes, the next tile's phase A operands before phases B and C); 2 as 1, widening f32 -> f64
 *  with F2F instead of integer ops. COMET_ATTN_EXACT_V=n picks one (default EX_DEFAULT_VARIANT); read per call so
 *  a benchmark can switch inside one process. */
template <int HD>
void launch_hd(const ExArgs& a, int gq, dim3 grid, cudaStream_t s) {
  const char* e = getenv("COMET_ATTN_EXACT_V");
  const int v = e && (e[0] == '0' || e[0] == '1' || e[0] == '2') ? e[0] - '0' : EX_DEFAULT_VARIANT;
  if (v == 0) launch_gq<HD, 0>(a, gq, grid, s);
  else if (v == 2) launch_gq<HD, 2>(a, gq, grid, s);
  else launch_gq<HD, 1>(a, gq, grid, s);
}

}  // namespace

extern "C" int comet_attention_kv4_exact(const float* q, const uint8_t* cache, comet_step st, comet_kv_geom g,
                                         int n_heads, int max_len, void* ws, float* out, void* stream) {
  // geometries this kernel does not cover keep the existing path (head_dim 8: its f64 kernel)
  if (st.T <= 0 || max_len <= 0 || !exact_ok(g, n_heads))
    return comet_attention_kv4(q, cache, st, g, n_heads, max_len, ws, out, stream);
  const int gq = n_heads / g.n_kv_heads, hd = g.head_dim;
  ExArgs a{q, cache, st, g, n_heads, 0, 0, 1.0 / sqrt((double)hd), (double*)ws, out};
  plan_exact(st.T, n_heads, g.n_kv_heads, hd, max_len, &a.nsplit, &a.chunk);
  const dim3 grid(a.nsplit, g.n_kv_heads, st.T);
  switch (hd) {
    case 32: launch_hd<32>(a, gq, grid, S(stream)); break;
    case 64: launch_hd<64>(a, gq, grid, S(stream)); break;
    case 128: launch_hd<128>(a, gq, grid, S(stream)); break;
    default: launch_hd<256>(a, gq, grid, S(stream)); break;
  }
  if (int e = check_launch("attention (kv4, exact)")) return e;
  if (a.nsplit == 1) return 0;
  ex_combine<<<dim3(n_heads, st.T), 128, 0, S(stream)>>>(a.ws, n_heads, hd, a.nsplit, out);
  return check_launch("attention (kv4, exact combine)");
}
