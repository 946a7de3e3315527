// KV4 attention on the CUDA cores (dp4a / dp2a): every head_dim and GQA group the contract's shapes allow
// (stories260K's head_dim 8, groups G < 64), and the combine of split segment states both KV4 kernels use. The
// overview is in ops_attention.cu; the shared contract helpers in attention_kv4.cuh.
#include "attention_kv4.cuh"

using namespace comet_ops;

namespace comet_kv4 {
namespace {

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
  pdl_enter();  // launch.cuh
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
  pdl_enter();  // launch.cuh
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

template <int HD, int GQ>
int launch_kv4(const Kv4Args& a, dim3 grid, cudaStream_t s) {
  constexpr size_t smem = sizeof(Kv4Smem<HD, GQ>);
  static const cudaError_t attr = smem > (48 << 10) ? cudaFuncSetAttribute(attn_kv4<HD, GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) : cudaSuccess;
  COMET_TRY("attention (kv4) shared memory", attr);
  pdl_launch(attn_kv4<HD, GQ>, grid, KT, smem, s, a);
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

}  // namespace

int launch_kv4_dp4a(const Kv4Args& a, int hd, int gq, int T, int nkv, cudaStream_t s) {
  const dim3 grid(a.split ? a.nseg : 1, nkv, T);
  int e;
  switch (hd) {
    case 8: e = launch_kv4_gq<8>(a, gq, grid, s); break;
    case 32: e = launch_kv4_gq<32>(a, gq, grid, s); break;
    case 64: e = launch_kv4_gq<64>(a, gq, grid, s); break;
    case 128: e = launch_kv4_gq<128>(a, gq, grid, s); break;
    default: e = launch_kv4_gq<256>(a, gq, grid, s); break;
  }
  if (e || !a.split) return e;
  return launch_kv4_combine(a, T, hd, s);
}

int launch_kv4_combine(const Kv4Args& a, int T, int hd, cudaStream_t s) {
  pdl_launch(attn_kv4_combine, dim3(a.n_heads, T), 128, 0, s, a.ws, a.st.pos, a.n_heads, hd, a.nseg, a.out);
  return check_launch("attention (kv4 combine)");
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

}  // namespace comet_kv4
