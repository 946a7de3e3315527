// KV4 attention on tensor cores (mma.sync m16n8k32): the LLaMA family's shapes. The overview is in
// ops_attention.cu; the shared contract helpers in attention_kv4.cuh.
#include "attention_kv4.cuh"

using namespace comet_ops;

namespace comet_kv4 {
namespace {

// ==== KV4 on tensor cores (attn_kv4_mma): the same contract, one warp per 128-key segment ==================
// The shapes of the LLaMA family (head_dim 64 / 128 / 256, KV4 groups of >= 64 channels, GQ · head_dim <= 1024,
// pages of a power of two >= 4 keys). Each warp owns a whole segment (its two chunks, folded in registers) with its
// own cp.async ring (no block barrier while it computes): K codes and both (s, z) arrays of MNB chunks, the V codes of
// one (issued once the previous chunk's P·V has read them, so they land under its fold and the next chunk's scores and
// softmax; a second V slot would cost 4.5 KB a warp at head_dim 128: with one round of segment slots (st) that is
// what keeps the block at 71 KB instead of 95, i.e. 3 blocks (12 warps) per SM instead of 2; the kernel is
// latency-bound, NOTES-ops §11 and §13);
// the block's MW warps take
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
    alignas(16) uint8_t vc[CH * C::ROWB];        // one slot (see the ring above)
    alignas(16) uint32_t ksz[MNB][CH * C::NGM];  // (s, z) f16 pairs [key][group]
    alignas(16) uint32_t vsz[MNB][CH * C::NGM];
    alignas(16) uint16_t uh[C::NGM][GQ][CH];     // 15-bit weights u per (group, head, key)
    float dq[GQ][C::NGM], zs[GQ][C::NGM], m[GQ], l[GQ];
  } w[MW];
  float st[MW][GQ][HD + 2];  // segment states of a round (m, l, num); a barrier after the fold frees it
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
/** lane src's pointer (two 32-bit shuffles) */
__device__ __forceinline__ const uint8_t* shfl_ptr(const uint8_t* p, int src) {
  const unsigned long long v = (unsigned long long)p;
  const unsigned lo = __shfl_sync(0xffffffffu, (unsigned)v, src), hi = __shfl_sync(0xffffffffu, (unsigned)(v >> 32), src);
  return (const uint8_t*)(((unsigned long long)hi << 32) | lo);
}

template <int HD, int GQ>
__global__ void __launch_bounds__(MW * 32) attn_kv4_mma(Kv4Args a) {
  pdl_enter();  // launch.cuh
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
  // Staging, in 32-bit offsets: a lane's 16-byte piece pc of rows krow + (32 / NP)·it, the page's base pointer taken
  // (two shuffles) from the lane that read that page's id, so no 64-bit arithmetic per copy but one add.
  const int krow = lane / C::NP, pc = lane % C::NP;
  const uint32_t codeB = (uint32_t)codeBytes, szB = (uint32_t)szBytes;
  auto page_base = [&](int pg) { return cbase + (size_t)pg * pstride; };
  // the code rows of chunk ci (isv 0: K, 1: V) into shared address sdst: 64 keys × NP pieces, swizzled
  auto code_rows = [&](int ci, const uint8_t* pbv, int isv, uint32_t sdst) {
    const int c0 = ci * CH;
#pragma unroll
    for (int it = 0; it < 2 * C::NP; it++) {
      const int key = krow + (32 / C::NP) * it;
      const uint8_t* pb = shfl_ptr(pbv, key >> lp);
      if (c0 + key < n)
        cp_async<16>(sdst + key * C::ROWB + ((pc ^ mswz<HD, GQ>(key)) * 16),
                   pb + (((c0 + key) & (P - 1)) * C::ROWB + pc * 16 + isv * codeB));
    }
  };
  // one cp.async group: K codes and the K and V (s, z) of chunk ci into ring slot b (the softmax reads V's (s, z))
  auto stage_k = [&](int ci, int pgv, int b) {
    if (ci >= 0) {
      const int c0 = ci * CH;
      const uint8_t* pbv = page_base(pgv);
      code_rows(ci, pbv, 0, smem_u32(ws.kc[b]));
      for (int i = lane; i < 2 * 16 * ng; i += 32) {  // (s, z): 4 keys × ng groups = ng pieces per quad
        const int isv = i >> (4 + lng), r = i & ((16 << lng) - 1), quad = r >> lng, gp = r & (ng - 1), key = 4 * quad;
        const uint8_t* pb = shfl_ptr(pbv, key >> lp);  // every lane runs ng rounds
        if (c0 + key < n)
          cp_async<16>(smem_u32((isv ? ws.vsz[b] : ws.ksz[b]) + key * ng + 4 * gp),
                     pb + (2 * codeB + isv * szB + ((c0 + key) & (P - 1)) * ng * 4 + gp * 16));
      }
    }
    cp_commit();
  };
  // one cp.async group: V codes of chunk ci into the V slot
  auto stage_v = [&](int ci, int pgv) {
    if (ci >= 0) code_rows(ci, page_base(pgv), 1, smem_u32(ws.vc));
    cp_commit();
  };
  const int pg0 = pages_of(chunk_of(0));
  stage_k(chunk_of(0), pg0, 0);
  stage_v(chunk_of(0), pg0);
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
  float qgf[C::NT1][2][C::NGM];  // f32(Q_g), the group sums of q8 (loop-invariant: converted once)
#pragma unroll
  for (int nt = 0; nt < C::NT1; nt++)
#pragma unroll
    for (int hb = 0; hb < 2; hb++) {
      const int h = hof(nt, hb);
      csr[nt][hb] = h < GQ ? s.cs[h] : 0.f;
#pragma unroll
      for (int g = 0; g < C::NGM; g++) qgf[nt][hb][g] = __int2float_rn(h < GQ && g < ng ? s.qg[h][g] : 0);
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
      const int pg_after = pages_of(chunk_of(q + 2)), pg_q1 = pg_next;
      stage_k(chunk_of(q + 1), pg_q1, b ^ 1);  // groups in flight, oldest first: K(q), V(q), K(q + 1)
      pg_next = pg_after;
      cp_wait<2>();  // K(q)
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
                    float qgv = 0.f;
#pragma unroll
                    for (int gg = 0; gg < C::NGM; gg++) if (gg == g) qgv = qgf[nt][hb][gg];
                    dot[nt][rr][hb] = __fadd_rn(dot[nt][rr][hb], __fadd_rn(__fmul_rn(h_lo(sz), __int2float_rn(d)), __fmul_rn(h_hi(sz), qgv)));
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
        // The lane's two heads of an n-tile go through each step side by side, so their independent chains (exp2c's
        // ~20 dependent operations, the shuffle trees, the divisions) interleave; every value is computed by the same
        // operations in the same order as one head alone.
        bool valid[4][NR];  // key 16kt + gid + 8·rof(rr) holds a key of this chunk
#pragma unroll
        for (int kt = 0; kt < 4; kt++)
#pragma unroll
          for (int rr = 0; rr < NR; rr++) valid[kt][rr] = 16 * kt + 8 * rof(rr) + gid < nk;
#pragma unroll
        for (int nt = 0; nt < C::NT1; nt++) {
          float m[2], l[2], p[2][4][NR];
#pragma unroll
          for (int hb = 0; hb < 2; hb++) {
            m[hb] = -INFINITY;
#pragma unroll
            for (int kt = 0; kt < 4; kt++)
#pragma unroll
              for (int rr = 0; rr < NR; rr++) m[hb] = valid[kt][rr] ? fmaxf(m[hb], tv[kt][nt][rr][hb]) : m[hb];
          }
#pragma unroll
          for (int hb = 0; hb < 2; hb++) m[hb] = kmax(m[hb]);
#pragma unroll
          for (int hb = 0; hb < 2; hb++)
#pragma unroll
            for (int kt = 0; kt < 4; kt++)
#pragma unroll
              for (int rr = 0; rr < NR; rr++) {
                const float e = exp2c(__fsub_rn(tv[kt][nt][rr][hb], m[hb]));
                p[hb][kt][rr] = valid[kt][rr] ? e : 0.f;
              }
#pragma unroll
          for (int hb = 0; hb < 2; hb++) l[hb] = tree(p[hb]);
          for (int g = 0; g < ng; g++) {
            float vs[4][NR], vz[4][NR];  // the keys' V (s, z) of group g (0 past the chunk's keys)
#pragma unroll
            for (int kt = 0; kt < 4; kt++)
#pragma unroll
              for (int rr = 0; rr < NR; rr++) {
                const uint32_t sz = valid[kt][rr] ? ws.vsz[b][(16 * kt + 8 * rof(rr) + gid) * ng + g] : 0u;
                vs[kt][rr] = h_lo(sz), vz[kt][rr] = h_hi(sz);
              }
            float w[2][4][NR], zt[2][4][NR], W[2], rW[2], zs[2];
#pragma unroll
            for (int hb = 0; hb < 2; hb++) {
              W[hb] = 0.f;
#pragma unroll
              for (int kt = 0; kt < 4; kt++)
#pragma unroll
                for (int rr = 0; rr < NR; rr++) {
                  w[hb][kt][rr] = valid[kt][rr] ? __fmul_rn(p[hb][kt][rr], vs[kt][rr]) : 0.f;
                  zt[hb][kt][rr] = valid[kt][rr] ? __fmul_rn(p[hb][kt][rr], vz[kt][rr]) : 0.f;
                  W[hb] = fmaxf(W[hb], w[hb][kt][rr]);
                }
            }
#pragma unroll
            for (int hb = 0; hb < 2; hb++) W[hb] = kmax(W[hb]);
#pragma unroll
            for (int hb = 0; hb < 2; hb++) rW[hb] = W[hb] > 0.f ? __fdiv_rn(32767.f, W[hb]) : 0.f, zs[hb] = tree(zt[hb]);
#pragma unroll
            for (int hb = 0; hb < 2; hb++) {
              const int h = hof(nt, hb);
              if (h < GQ) {
#pragma unroll
                for (int kt = 0; kt < 4; kt++)
#pragma unroll
                  for (int rr = 0; rr < NR; rr++)
                    ws.uh[g][h][16 * kt + 8 * rof(rr) + gid] = W[hb] > 0.f ? (uint16_t)min(32767u, __float2uint_rn(__fmul_rn(w[hb][kt][rr], rW[hb]))) : (uint16_t)0;
                if (lane < 4) ws.dq[h][g] = W[hb] > 0.f ? __fdiv_rn(W[hb], 32767.f) : 0.f, ws.zs[h][g] = zs[hb];
              }
            }
          }
#pragma unroll
          for (int hb = 0; hb < 2; hb++) {
            const int h = hof(nt, hb);
            if (h < GQ && lane < 4) ws.m[h] = m[hb], ws.l[h] = l[hb];
          }
        }
        cp_wait<1>();  // V(q)
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
              for (int j = 0; j < 4; j++) x[j] = *(const uint32_t*)(ws.vc + (k + j) * C::ROWB + ((W >> 2) ^ mswz<HD, GQ>(k + j)) * 16 + (W & 3) * 4);
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
        __syncwarp();  // every lane has read the V slot: the next chunk's V codes may land there
        stage_v(chunk_of(q + 1), pg_q1);  // (a warp past its last chunk stays past it: no group owed)
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
              float* o = a.split ? a.ws + (((size_t)t * a.n_heads + h0 + h) * a.nseg + sg) * (HD + 2) : s.st[warp][h];
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
      const float* o = s.st[w][h];
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
    if (r + 1 < rounds) __syncthreads();  // the round's slots are read before the next round writes them
  }
  if (a.split) return;
  const int h = tid % GQ;
#pragma unroll
  for (int k = 0; k < C::SLF; k++) {
    const int c = (tid + MW * 32 * k) / GQ;
    if (c < HD) a.out[(size_t)t * Cq + (size_t)(h0 + h) * HD + c] = __fdiv_rn(tn[k], tl);
  }
}

/** Launch attn_kv4_mma: one block per (token, KV head) when those fill the GPU's resident blocks, else one block per
 *  MW segments (split: states to the workspace, attn_kv4_combine folds them). */
template <int HD, int GQ>
int launch_kv4_mma(Kv4Args a, int T, int nkv, cudaStream_t s) {
  constexpr size_t smem = sizeof(MmaSmem<HD, GQ>);
  static int resident = 0;  // blocks the GPU holds at once
  if (!resident) {
    COMET_TRY("attention (kv4 mma) shared memory", cudaFuncSetAttribute(attn_kv4_mma<HD, GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per = 0;
    COMET_TRY("attention (kv4 mma) occupancy", cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, attn_kv4_mma<HD, GQ>, MW * 32, smem));
    resident = max(1, sm_count() * per);
  }
  a.split = T * nkv < resident && a.nseg > 1;
  const dim3 grid(a.split ? (a.nseg + MW - 1) / MW : 1, nkv, T);
  pdl_launch(attn_kv4_mma<HD, GQ>, grid, MW * 32, smem, s, a);
  if (int e = check_launch("attention (kv4 mma)")) return e;
  if (!a.split) return 0;
  return launch_kv4_combine(a, T, HD, s);
}

}  // namespace

/** attn_kv4_mma's shapes: head_dim 64 / 128 / 256, groups of a multiple of 64 channels, GQ a power of two with
 *  GQ · head_dim <= 1024, pages of a power of two >= 4 keys. */
bool kv4_mma_supported(int hd, int gq, int G, int P) {
  const bool hd_ok = hd == 64 || hd == 128 || hd == 256;
  const bool gq_ok = gq >= 1 && gq <= 16 && (gq & (gq - 1)) == 0 && gq * hd <= 1024;
  return hd_ok && gq_ok && G >= 64 && G % 64 == 0 && hd % G == 0 && P >= 4 && (P & (P - 1)) == 0;
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

}  // namespace comet_kv4
