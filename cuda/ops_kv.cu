// kv_append: write one step's K (after RoPE) and V rows into the paged cache of one layer (DESIGN §3.5).
// f32 pages: [page][kv_head][P][head_dim] f32, K and V in separate buffers (simulator/kv.ts).
// KV4 pages: byte for byte the layout of simulator/kv4.ts (KVStoreKV4), per (page, kv_head) chunk:
//   kCodes u4x2 [P][hd/2] | vCodes u4x2 [P][hd/2] | kSZ f16 [P][hd/G][2] (s, z) | vSZ f16 [P][hd/G][2]
// Quantizer per (token, head, group of G): lo = min, hi = max; s = f16(f32(hi - lo) / 15), z = f16(lo);
// q = clamp(rint(f32(f32(x - z) / s)), 0, 15), or 0 when s == 0. Exact against kv4QuantizeGroup.
// rope_kv_append (f32 and KV4): RoPE of q and k folded into the append, one launch for rope(q), rope(k) and
// kv_append(rope(k), v): rope_pair (ops.cuh) and the same quantizer, so the same bits as the three ops.
#include "ops.cuh"

using namespace comet_ops;

__device__ __forceinline__ int page_of(const comet_step& st, int t, int P, int* slot) {
  const int p = st.pos[t];
  *slot = p % P;
  return st.bt[st.bt_off[st.seq[t]] + p / P];
}

// one block per token, one thread per (kv_head, channel), K and V alike
__global__ void kv_append_f32_kernel(float* kc, float* vc, const float* __restrict__ k, const float* __restrict__ v,
                                     comet_step st, comet_kv_geom g) {
  pdl_enter();  // launch.cuh
  const int t = blockIdx.x, C = g.n_kv_heads * g.head_dim;
  int slot;
  const int page = page_of(st, t, g.page_size, &slot);
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    const int h = i / g.head_dim, c = i % g.head_dim;
    const size_t o = (((size_t)page * g.n_kv_heads + h) * g.page_size + slot) * g.head_dim + c;
    kc[o] = k[(size_t)t * C + i];
    vc[o] = v[(size_t)t * C + i];
  }
}

/** Where token t's row of KV head h goes in a KV4 layer: its K or V codes and its (s, z) pairs. */
struct Kv4Slot {
  uint8_t* codes;
  uint16_t* sz;
};
__device__ __forceinline__ Kv4Slot kv4_slot(uint8_t* cache, const comet_step& st, const comet_kv_geom& g, int t, int h, int isv) {
  const int hd = g.head_dim, P = g.page_size, ng = hd / g.group;
  const size_t codeBytes = (size_t)P * hd / 2, szBytes = (size_t)P * ng * 4;
  const size_t headBytes = 2 * codeBytes + 2 * szBytes;
  int slot;
  const int page = page_of(st, t, P, &slot);
  uint8_t* base = cache + ((size_t)page * g.n_kv_heads + h) * headBytes;
  return {base + (isv ? codeBytes : 0) + (size_t)slot * hd / 2, (uint16_t*)(base + 2 * codeBytes + (isv ? szBytes : 0)) + (size_t)slot * ng * 2};
}

/** One warp quantizes one head row x [head_dim] (global or shared memory) into its slot: the warp walks the groups,
 *  each lane owns channel pairs (one byte). */
__device__ __forceinline__ void kv4_quantize_row(const float* x, Kv4Slot d, const comet_kv_geom& g) {
  const int lane = threadIdx.x & 31, G = g.group, ng = g.head_dim / G;
  for (int gi = 0; gi < ng; gi++) {
    const float* xg = x + gi * G;
    float lo = INFINITY, hi = -INFINITY;
    for (int i = lane; i < G; i += 32) lo = fminf(lo, xg[i]), hi = fmaxf(hi, xg[i]);
    for (int o = 16; o > 0; o >>= 1) {
      lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
      hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    const __half sh = __float2half_rn(__fdiv_rn(__fsub_rn(hi, lo), 15.f)), zh = __float2half_rn(lo);
    const float s = __half2float(sh), z = __half2float(zh);
    if (lane == 0) d.sz[2 * gi] = __half_as_ushort(sh), d.sz[2 * gi + 1] = __half_as_ushort(zh);
    for (int p = lane; p < G / 2; p += 32) {
      int q[2];
#pragma unroll
      for (int j = 0; j < 2; j++)
        q[j] = s == 0.f ? 0 : (int)fminf(15.f, fmaxf(0.f, rintf(__fdiv_rn(__fsub_rn(xg[2 * p + j], z), s))));
      d.codes[(gi * G) / 2 + p] = (uint8_t)(q[0] | (q[1] << 4));
    }
  }
}

// one warp per (token, kv_head, K|V)
__global__ void kv_append_kv4_kernel(uint8_t* cache, const float* __restrict__ k, const float* __restrict__ v,
                                     comet_step st, comet_kv_geom g) {
  pdl_enter();  // launch.cuh
  const int t = blockIdx.x, h = blockIdx.y, isv = blockIdx.z;
  const float* x = (isv ? v : k) + ((size_t)t * g.n_kv_heads + h) * g.head_dim;
  kv4_quantize_row(x, kv4_slot(cache, st, g, t, h, isv), g);
}

/** Rotate `n_heads` heads of token t's row x into out. cos and sin depend on the pair only (rope_cs): each is
 *  computed once per pair and applied to the heads, the threads sharing a pair taking every `groups`-th head
 *  (rope_kv_append_kv4's V warp: 64 pairs x 4 query heads on 32 lanes, 2 f64 cos/sin per lane, was 8). */
__device__ __forceinline__ void rope_heads(const float* x, float* out, int n_heads, int hd, int pos, const float* freqs,
                                           int tid, int nthreads) {
  const int half = hd / 2, per = nthreads / half, groups = per < 1 ? 1 : per < n_heads ? per : n_heads;
  for (int idx = tid; idx < half * groups; idx += nthreads) {
    const int i = idx % half;
    const double2 cs = rope_cs(pos, freqs[i]);
    for (int h = idx / half; h < n_heads; h += groups) {
      const int o = h * hd + 2 * i;
      const float2 r = rope_rot(x[o], x[o + 1], cs);
      out[o] = r.x;
      out[o + 1] = r.y;
    }
  }
}

// rope_kv_append, KV4: one warp per (token, kv_head, K|V) as kv_append. The K warp rotates its head into shared
// memory, then quantizes it; the V warp quantizes v, then rotates the query heads of its GQA group into q_out.
__global__ void rope_kv_append_kv4_kernel(uint8_t* cache, const float* __restrict__ q, const float* __restrict__ k,
                                          const float* __restrict__ v, int n_heads, const float* __restrict__ freqs,
                                          float* __restrict__ q_out, comet_step st, comet_kv_geom g) {
  pdl_enter();  // launch.cuh
  extern __shared__ float kr[];  // [head_dim]
  const int t = blockIdx.x, h = blockIdx.y, isv = blockIdx.z, hd = g.head_dim, pos = st.pos[t];
  const Kv4Slot d = kv4_slot(cache, st, g, t, h, isv);
  if (!isv) {
    rope_heads(k + ((size_t)t * g.n_kv_heads + h) * hd, kr, 1, hd, pos, freqs, threadIdx.x, 32);
    __syncwarp();
    kv4_quantize_row(kr, d, g);
  } else {
    kv4_quantize_row(v + ((size_t)t * g.n_kv_heads + h) * hd, d, g);
    const int gq = n_heads / g.n_kv_heads;
    const size_t o = ((size_t)t * n_heads + (size_t)h * gq) * hd;
    rope_heads(q + o, q_out + o, gq, hd, pos, freqs, threadIdx.x, 32);
  }
}

// rope_kv_append, f32 cache: one block per token: q's heads to q_out, k's rotated and v into the pages
__global__ void rope_kv_append_f32_kernel(float* kc, float* vc, const float* __restrict__ q, const float* __restrict__ k,
                                          const float* __restrict__ v, int n_heads, const float* __restrict__ freqs,
                                          float* __restrict__ q_out, comet_step st, comet_kv_geom g) {
  pdl_enter();  // launch.cuh
  const int t = blockIdx.x, hd = g.head_dim, half = hd / 2, pos = st.pos[t];
  int slot;
  const int page = page_of(st, t, g.page_size, &slot);
  rope_heads(q + (size_t)t * n_heads * hd, q_out + (size_t)t * n_heads * hd, n_heads, hd, pos, freqs, threadIdx.x, blockDim.x);
  const float* kt = k + (size_t)t * g.n_kv_heads * hd;
  const float* vt = v + (size_t)t * g.n_kv_heads * hd;
  for (int idx = threadIdx.x; idx < g.n_kv_heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    const size_t o = (((size_t)page * g.n_kv_heads + h) * g.page_size + slot) * hd + 2 * i;
    const float2 r = rope_pair(kt[h * hd + 2 * i], kt[h * hd + 2 * i + 1], pos, freqs[i]);
    kc[o] = r.x, kc[o + 1] = r.y;
    vc[o] = vt[h * hd + 2 * i], vc[o + 1] = vt[h * hd + 2 * i + 1];
  }
}

static int check_geom(const char* op, const comet_kv_geom& g, bool kv4) {
  if (g.n_kv_heads <= 0 || g.head_dim <= 0 || g.page_size <= 0 || g.head_dim % 2 ||
      (kv4 && (g.group <= 0 || g.group % 2 || g.head_dim % g.group)))
    return set_error(COMET_EINVAL, "%s: bad cache geometry heads=%d head_dim=%d page=%d group=%d", op, g.n_kv_heads,
                     g.head_dim, g.page_size, g.group);
  return 0;
}

extern "C" int comet_kv_append_f32(float* kc, float* vc, const float* k, const float* v, comet_step st,
                                   comet_kv_geom g, void* stream) {
  if (int e = check_geom("kv_append", g, false)) return e;
  if (st.T == 0) return 0;
  pdl_launch(kv_append_f32_kernel, st.T, 256, 0, S(stream), kc, vc, k, v, st, g);
  return check_launch("kv_append (f32)");
}

extern "C" int comet_kv_append_kv4(uint8_t* cache, const float* k, const float* v, comet_step st, comet_kv_geom g,
                                   void* stream) {
  if (int e = check_geom("kv_append", g, true)) return e;
  if (st.T == 0) return 0;
  pdl_launch(kv_append_kv4_kernel, dim3(st.T, g.n_kv_heads, 2), 32, 0, S(stream), cache, k, v, st, g);
  return check_launch("kv_append (kv4)");
}

extern "C" int comet_rope_kv_append_f32(float* kc, float* vc, const float* q, const float* k, const float* v, int n_heads,
                                        const float* freqs, float* q_out, comet_step st, comet_kv_geom g, void* stream) {
  if (int e = check_geom("rope_kv_append", g, false)) return e;
  if (n_heads <= 0 || n_heads % g.n_kv_heads) return set_error(COMET_EINVAL, "rope_kv_append: %d query heads over %d KV heads", n_heads, g.n_kv_heads);
  if (st.T == 0) return 0;
  pdl_launch(rope_kv_append_f32_kernel, st.T, 256, 0, S(stream), kc, vc, q, k, v, n_heads, freqs, q_out, st, g);
  return check_launch("rope_kv_append (f32)");
}

extern "C" int comet_rope_kv_append_kv4(uint8_t* cache, const float* q, const float* k, const float* v, int n_heads,
                                        const float* freqs, float* q_out, comet_step st, comet_kv_geom g, void* stream) {
  if (int e = check_geom("rope_kv_append", g, true)) return e;
  if (n_heads <= 0 || n_heads % g.n_kv_heads) return set_error(COMET_EINVAL, "rope_kv_append: %d query heads over %d KV heads", n_heads, g.n_kv_heads);
  if (st.T == 0) return 0;
  pdl_launch(rope_kv_append_kv4_kernel, dim3(st.T, g.n_kv_heads, 2), 32, (size_t)g.head_dim * sizeof(float), S(stream), cache, q, k, v, n_heads, freqs, q_out, st, g);
  return check_launch("rope_kv_append (kv4)");
}
