// gemm_w4ax.wgsl: Y[m][n] = f16( Σ_b f32(acc_b) · (f32(sa[m][b]) · f32(sw[n][b])) ), DESIGN §3.4, bit-exact.
//   act: one buffer  a8 int8 [M][K8] | a4 int4x2 [M][(Kp-K8)/2] | sa f16 [M][Kp/B]   (u32 words; offsets in P)
//   w:   one buffer  codes int4x2 [N][Kp/2] | scales f16 [N][Kp/B]                    (canonical packing)
// acc_b is exact int32 (dot4 on i8x4 lanes; the int4 nibbles are sign-extended to bytes: lo4/hi4 give the
// even/odd elements, so the act side is split the same way, int8 words with even8/odd8; `matvec` takes the weight
// nibbles unsigned instead and subtracts 8·Σa, the same integer). The f32 epilogue
// adds the blocks in ascending order, one chain per output; the product t_b must not be fused into that
// add (an FMA would skip its rounding): `matvec` hands t_b to the chain through workgroup memory, `tiled`
// and `rowwise` pass it through `nofma` (an xor with a runtime zero the compiler cannot see through).
// Measured bit-exact against the simulator on SwiftShader and on the H100 (test/ops.test.ts, every WebGPU kernel variant).
//
// Three kernels (the backend picks; bench/webgpu measures; results in bench/results/webgpu-*.md):
//   matvec (decode, M <= 4 per workgroup): 8 rows × MT tokens per workgroup of 256; a row's 32 lanes read its
//     16-byte words lane by lane (512 contiguous bytes per load instruction), all of a row's words in flight at once up
//     to K = 8192; integer word sums through workgroup memory to the lane that finishes each block's t_b; one
//     invocation per (row, token) chains them. The kernels before it (16 rows × 16 lanes, a 64-byte segment a lane;
//     8 rows × 32 lanes with int partials reduced per block): 9-34% of copy on the H200 at LLaMA-3.2-1B's shapes.
//   rowwise: one invocation per (row, 4 tokens), no barriers: small K, and CPU adapters (SwiftShader).
//   tiled (prefill, M > 8): a 32-token × 64-row tile per workgroup, one B-block of both operands staged in
//     workgroup memory at a time, 2 tokens × 4 rows per invocation (3.4 TOPS on the H100: not tuned).

// One dispatch computes up to three GEMMs over the same activation (matmulMany: q/k/v, gate/up): "parts".
// Part i has its own weight w_i (N_i rows), output y_i and range of workgroups along x, [g_i, g_{i+1}); a
// workgroup finds its part once, so the weight and output it touches are uniform (the switches below).
struct P {
  M: u32, N: u32, Kp: u32, K8: u32, B: u32, nb: u32,
  a4Off: u32, saOff: u32, // word offsets in act (a8 starts at 0)
  wsOff: u32, // word offset of the scales in w0
  zero: u32, // 0 at run time (FMA guard)
  m0: u32, // first token of this dispatch
  g1: u32, g2: u32, // first workgroup (x) of parts 1 and 2 (0xffffffff: no such part)
  N1: u32, N2: u32, ws1: u32, ws2: u32, // rows and scale offsets of parts 1 and 2
  K: u32, hasPerm: u32, // QIN: the f32 input's channels and whether qperm gathers them
};

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> act: array<u32>;
@group(0) @binding(2) var<storage, read> w0: array<vec4<u32>>; // codes as 16-byte words (32 int4) | scales
@group(0) @binding(3) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y0: array<f32>;
@group(0) @binding(6) var<storage, read_write> y1: array<f32>;
@group(0) @binding(7) var<storage, read_write> y2: array<f32>;
@group(0) @binding(8) var<storage, read> qperm: array<u32>; // QIN: the spec's permutation [K] (hasPerm), else a dummy

/** this workgroup's part: which weight and output, its first workgroup, rows, scale offset */
struct Part { sel: u32, g: u32, N: u32, wsOff: u32 };
fn part_of(x: u32) -> Part {
  if (x >= p.g2) { return Part(2u, p.g2, p.N2, p.ws2); }
  if (x >= p.g1) { return Part(1u, p.g1, p.N1, p.ws1); }
  return Part(0u, 0u, p.N, p.wsOff);
}
fn wget(pt: Part, i: u32) -> vec4<u32> {
  switch pt.sel { case 1u: { return w1[i]; } case 2u: { return w2[i]; } default: { return w0[i]; } }
}
fn yput(pt: Part, i: u32, v: f32) {
  switch pt.sel { case 1u: { y1[i] = v; } case 2u: { y2[i] = v; } default: { y0[i] = v; } }
}

fn nofma(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ p.zero); }

fn sa_at(m: u32, b: u32) -> f32 { let i = m * p.nb + b; return f16_half(act[p.saOff + (i >> 1u)], i); }
fn sw_at(pt: Part, n: u32, b: u32) -> f32 {
  let i = n * p.nb + b;
  let wi = pt.wsOff + (i >> 1u);
  return f16_half(wget(pt, wi >> 2u)[wi & 3u], i);
}

/** act elements [k, k+8) of token m as (even, odd) i8x4 words; k a multiple of 8, k < Kp */
fn act8(m: u32, k: u32) -> vec2<u32> {
  if (k < p.K8) {
    let i = (m * p.K8 + k) >> 2u;
    return vec2<u32>(even8(act[i], act[i + 1u]), odd8(act[i], act[i + 1u]));
  }
  let w = act[p.a4Off + ((m * (p.Kp - p.K8) + (k - p.K8)) >> 3u)];
  return vec2<u32>(lo4(w), hi4(w));
}

// ---------------------------------------------------------------- matvec
// Decode, M <= 4 tokens per workgroup. A workgroup of 256 invocations is ROWS rows × TEAM lanes (16 × 16 or 8 × 32). A
// row's codes are Kp/32 16-byte words; K is walked in chunks of CW = TEAM · WPL words (WPL words per lane), and lane l
// of a row holds words l, l + TEAM, l + 2·TEAM, ... of the chunk: each load instruction of a row's lanes reads
// 16 · TEAM contiguous bytes (whole 128-byte lines; the kernel before this one gave each lane a 64-byte segment, so one
// load instruction touched 16 lines for 16 bytes each, and the next three the same lines again).
// TEAM and WPL come with K (pipes.ts matvecShape) so that a row is one chunk where registers allow, every weight byte
// of the dispatch then requested before the first barrier, with 64-128 bytes in flight per lane:
//   K = 2048 (LLaMA-3.2-1B q/k/v, o, gate/up, classifier): 16 lanes × 4 words, 16 rows a workgroup;
//   K = 4096 / 8192 (LLaMA-3-8B; LLaMA-3.2-1B down): 32 lanes × 4 / 8 words, 8 rows a workgroup (down: 256
//   workgroups, one chunk; the kernel before walked it in two 4096-channel chunks, one DRAM round trip each);
//   larger K (LLaMA-3-8B down, 14336): several chunks, the next chunk's words loaded right after this chunk's dots.
// Per chunk:
//   1. (issued before:) this lane's WPL words of its row, and the weight scales sw of the blocks it will finish;
//   2. the chunk of activation staged in workgroup memory once for all rows (QIN: quantized here); barrier;
//   3. each lane dots its words against the staged chunk: the exact Σ q·a of each 32-channel word into ip; the next
//      chunk's words are loaded; barrier;
//   4. lane l finishes blocks l, l + TEAM, ... of the chunk: acc_b = Σ of the block's B/32 word sums (int32, exact in
//      any order), t_b = f32(acc_b) · (sa · sw), stored over the block's first word in ip; barrier;
//   5. one invocation per (row, token) adds the chunk's t_b in ascending block order: the contract's chain (DESIGN
//      §3.4); reading t_b back from workgroup memory keeps its rounding (the add cannot become an FMA).
// Integer word sums are order-free, so the lanes' split of a block changes no bit; only step 5 orders f32 adds.
// The dot product takes the weight nibbles unsigned: u = q + 8 = q ^ 8 (0..15) is one mask-and-xor per four codes
// (a sign extension costs three ops more), and Σ q·a = Σ u·a − 8·Σ a exactly in int32; −8·Σ a of each 32-channel
// word of the activation is computed once per workgroup, in staging (cs).
// Not a split of K across workgroups: a k-split needs its partials combined in a reported order (gemmSchedule, which
// every W4Ax kernel of the backend would then follow) by a second dispatch, since WGSL has no release/acquire
// between workgroups for a last-workgroup fixup; at these shapes a dispatch's fixed cost is most of the matvec's time.
//
// QIN = 1: `act` is the f32 input x [M][K] of quantize_act, quantized here on the way into workgroup memory
// (o_proj's input at decode: its quantize_act dispatch folded into the GEMM). Each workgroup quantizes the chunks
// it reads exactly as quant.wgsl MODE 0 does (v = f16(x[perm[j]]), exact block amax, s = f16_div(amax, qmax),
// codes act_code: exact quotients, so the same codes and scales whatever the compiler), hence the same bits as
// quantize_act then the GEMM.
// (A QIN = 2 for silu_mul_quant, down_proj's input, ran 428 tok/s against 497 for its own dispatch on the H200, 2026-12-03:
// each of down's 128 workgroups read all of g, u and the permutation and quantized the whole activation; removed.)
override QIN: u32 = 0u;
override MT: u32 = 1u; // tokens per workgroup (1: one decode token; 4: 2..8 tokens, in workgroups along y)
override TEAM: u32 = 16u; // lanes per row: 16 or 32 (pipes.ts matvecShape)
override WPL: u32 = 4u; // 16-byte words per lane per chunk: 1, 2, 4 or 8; MT · TEAM · WPL <= 256
const MV_WG = 256u;
override ROWS: u32 = MV_WG / TEAM; // rows per workgroup

// Workgroup memory, CW = TEAM · WPL words a chunk, MT · CW <= 256: at most 27.2 KiB (16 lanes, MT = 4, WPL = 4), within the
// 32 KiB of SwiftShader and GPUs; one token at K = 2048 (16 lanes × 4 words) 6.8 KiB, at K = 8192 (32 × 8) 19.0 KiB:
// xa, xb [tok][word of the chunk]: the word's sub-words (8 channels each, one u32 of the weight word) 0, 1 (xa) and
//   2, 3 (xb) as (even, odd, even, odd) i8x4 lanes, matching ulo/uhi of the weight's u32s; the lanes of a row read
//   consecutive vec4s (no bank conflicts), the other rows the same ones
var<workgroup> xa: array<vec4<u32>, MT * TEAM * WPL>;
var<workgroup> xb: array<vec4<u32>, MT * TEAM * WPL>;
// cs [tok][word]: −8 · Σ of the word's 32 codes (atomic: QIN sums it per sub-word; 0 between chunks there)
var<workgroup> cs: array<atomic<i32>, MT * TEAM * WPL>;
// sas [tok][block of the chunk] sa as f32 (B >= 32: at most one block a word)
var<workgroup> sas: array<f32, MT * TEAM * WPL>;
// ip [row · MT + tok][word of the chunk]: the word's Σ q·a; step 4 leaves each block's t_b (f32 bits) in its first word.
// Rows CW + 1 words apart: the chain invocations of a row's tokens read one row each, a stride of CW words would put
// them in one bank
var<workgroup> ip: array<i32, ROWS * MT * (TEAM * WPL + 1u)>;
// QIN: [tok][block of the chunk] max |v| as f32 bits (non-negative f32s order as their u32 bits, so atomicMax gives the
// exact amax, NaN aside; 0 outside a chunk's staging: WGSL zero-initializes workgroup memory and each chunk clears it)
var<workgroup> am: array<atomic<u32>, MT * TEAM * WPL>;

/** QIN: the quantizer's value of channel j of token m: f16(x[m][perm[j]]), 0 in the padding [K, Kp) */
fn qin(m: u32, j: u32) -> f32 {
  if (j >= p.K) { return 0.0; }
  var c = j;
  if (p.hasPerm != 0u) { c = qperm[j]; }
  let i = m * p.K + c;
  return f16_round(bitcast<f32>(act[i]));
}
/** QIN: the codes of 8 channels [k, k+8) of values v in a block of scale s, as the (even, odd) i8x4 words act8 gives */
fn qcodes(v: array<f32, 8>, k: u32, s: f32) -> vec2<u32> {
  let qmax = select(7.0, 127.0, k < p.K8);
  var w = vec2<u32>(0u, 0u);
  for (var e = 0u; e < 8u; e++) {
    let byte = (bitcast<u32>(act_code(v[e], s, qmax)) & 0xffu) << (8u * (e / 2u));
    if ((e & 1u) == 0u) { w.x = w.x | byte; } else { w.y = w.y | byte; }
  }
  return w;
}

/** the even (ulo) and odd (uhi) codes of a canonical int4 u32 as unsigned u = q + 8 in i8x4 lanes (0..15) */
fn ulo(w: u32) -> u32 { return (w & 0x0f0f0f0fu) ^ 0x08080808u; }
fn uhi(w: u32) -> u32 { return ((w >> 4u) & 0x0f0f0f0fu) ^ 0x08080808u; }
/** Σ u·a over one 16-byte weight word (32 channels) against its staged sub-words a (0, 1) and b (2, 3) */
fn udot(w: vec4<u32>, a: vec4<u32>, b: vec4<u32>) -> i32 {
  return dot4(ulo(w.x), a.x) + dot4(uhi(w.x), a.y) + dot4(ulo(w.y), a.z) + dot4(uhi(w.y), a.w)
       + dot4(ulo(w.z), b.x) + dot4(uhi(w.z), b.y) + dot4(ulo(w.w), b.z) + dot4(uhi(w.w), b.w);
}
/** Σ of the 4 signed i8 lanes of x */
fn isum4(x: u32) -> i32 { return dot4(x, 0x01010101u); }

/** one lane's words of a chunk (WPL of them used), named registers rather than an indexed array a driver may put in
 *  local memory */
struct Words { a: vec4<u32>, b: vec4<u32>, c: vec4<u32>, d: vec4<u32>, e: vec4<u32>, f: vec4<u32>, g: vec4<u32>, h: vec4<u32> };

/** word v of row n (nk words a row); past the row or past the part's rows: 0 */
fn mv_word(pt: Part, n: u32, nk: u32, v: u32) -> vec4<u32> {
  if (n >= pt.N || v >= nk) { return vec4<u32>(0u); }
  return wget(pt, n * nk + v);
}
/** this lane's words of the chunk whose lane-0 word is v: v, v + TEAM, ... (WPL of them) */
fn mv_load(pt: Part, n: u32, nk: u32, v: u32) -> Words {
  var g: Words;
  g.a = mv_word(pt, n, nk, v);
  if (WPL > 1u) { g.b = mv_word(pt, n, nk, v + TEAM); }
  if (WPL > 2u) { g.c = mv_word(pt, n, nk, v + 2u * TEAM); g.d = mv_word(pt, n, nk, v + 3u * TEAM); }
  if (WPL > 4u) {
    g.e = mv_word(pt, n, nk, v + 4u * TEAM); g.f = mv_word(pt, n, nk, v + 5u * TEAM);
    g.g = mv_word(pt, n, nk, v + 6u * TEAM); g.h = mv_word(pt, n, nk, v + 7u * TEAM);
  }
  return g;
}
/** the u32 holding the f16 scale sw of blocks lane, lane + TEAM, ... of the chunk whose first block is bc (step 4's
 *  blocks; at most WPL of them: a block is >= 1 word), loaded with the chunk's words; 0 past the row's blocks. Two
 *  vectors, not an array: a vector's dynamic component is a select, where an array indexed in a loop the compiler does
 *  not unroll would go to local memory. */
struct Scales { a: vec4<u32>, b: vec4<u32> };
fn mv_scales(pt: Part, n: u32, bc: u32, lane: u32, bpc: u32) -> Scales {
  var s: Scales;
  for (var i = 0u; i < 8u; i++) {
    let bl = lane + TEAM * i;
    if (i < WPL && bl < bpc && bc + bl < p.nb && n < pt.N) {
      let wi = pt.wsOff + ((n * p.nb + bc + bl) >> 1u);
      let v = wget(pt, wi >> 2u)[wi & 3u];
      if (i < 4u) { s.a[i] = v; } else { s.b[i - 4u] = v; }
    }
  }
  return s;
}
fn scale_word(s: Scales, i: u32) -> u32 { return select(s.b[i & 3u], s.a[i & 3u], i < 4u); }
/** step 3 for word w of the chunk (this lane's register g), row slot r: its exact Σ q·a with every staged token */
fn mv_dot(g: vec4<u32>, r: u32, w: u32) {
  let CW = TEAM * WPL;
  for (var t = 0u; t < MT; t++) {
    let x = t * CW + w;
    ip[(r * MT + t) * (CW + 1u) + w] = udot(g, xa[x], xb[x]) + atomicLoad(&cs[x]);
  }
}

@compute @workgroup_size(MV_WG)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = lid / TEAM; // row slot
  let lane = lid % TEAM;
  let pt = part_of(wg.x);
  let n = (wg.x - pt.g) * ROWS + r;
  let mBase = p.m0 + wg.y * MT;
  let nk = p.Kp / 32u; // 16-byte words a row
  let vpb = p.B / 32u; // words a block
  let CW = TEAM * WPL; // words a chunk
  let CH = 32u * CW; // channels a chunk
  let bpc = CW / vpb; // blocks a chunk
  // 1. the first chunk's words and scales
  var g = mv_load(pt, n, nk, lane);
  var sw = mv_scales(pt, n, 0u, lane, bpc);
  var sum = 0.0; // the chain of (row r, token lane), lane < MT
  for (var k0 = 0u; k0 < p.Kp; k0 = k0 + CH) {
    let bc = k0 / p.B; // the chunk's first block
    let nbk = min(bpc, p.nb - bc); // and its blocks
    // 2. stage the chunk of each token
    if (QIN == 0u) {
      // one 32-channel word per invocation: its 4 sub-words' (even, odd) lanes and −8 · Σ codes
      for (var i = lid; i < MT * CW; i = i + MV_WG) {
        let m = mBase + i / CW; let k = k0 + 32u * (i % CW);
        var e = vec4<u32>(0u); var o = vec4<u32>(0u);
        if (m < p.M && k < p.Kp) {
          if (k < p.K8) { // int8 words
            let i8 = (m * p.K8 + k) >> 2u;
            for (var q = 0u; q < 4u; q++) { let x0 = act[i8 + 2u * q]; let x1 = act[i8 + 2u * q + 1u]; e[q] = even8(x0, x1); o[q] = odd8(x0, x1); }
          } else { // int4x2 words
            let i4 = p.a4Off + ((m * (p.Kp - p.K8) + (k - p.K8)) >> 3u);
            for (var q = 0u; q < 4u; q++) { let x = act[i4 + q]; e[q] = lo4(x); o[q] = hi4(x); }
          }
        }
        xa[i] = vec4<u32>(e.x, o.x, e.y, o.y);
        xb[i] = vec4<u32>(e.z, o.z, e.w, o.w);
        let sa = isum4(e.x) + isum4(o.x) + isum4(e.y) + isum4(o.y) + isum4(e.z) + isum4(o.z) + isum4(e.w) + isum4(o.w);
        atomicStore(&cs[i], -8 * sa);
      }
      for (var i = lid; i < MT * CW; i = i + MV_WG) {
        let m = mBase + i / CW; let bl = i % CW;
        var sa = 0.0;
        if (m < p.M && bl < nbk) { sa = sa_at(m, bc + bl); }
        sas[i] = sa;
      }
    } else {
      // one 8-channel sub-word per invocation per pass of 2048 channels (whole blocks: a token's chunk is 32 · CW
      // channels), each block its own am entry: the blocks' amax, a barrier, then the codes of the values kept in
      // registers
      let nsub = MT * 4u * CW;
      for (var s0 = 0u; s0 < nsub; s0 = s0 + MV_WG) {
        let i = s0 + lid;
        let t = i / (4u * CW); let c8 = i % (4u * CW);
        let m = mBase + t; let k = k0 + 8u * c8;
        let live = i < nsub;
        let ok = live && m < p.M && k < p.Kp;
        let bl = (8u * c8) / p.B;
        var v: array<f32, 8>;
        var a = 0.0;
        if (ok) { for (var e = 0u; e < 8u; e++) { v[e] = qin(m, k + e); a = max(a, abs(v[e])); } }
        if (live) { atomicMax(&am[t * CW + bl], bitcast<u32>(a)); }
        workgroupBarrier();
        var w = vec2<u32>(0u, 0u);
        var sc = 0.0;
        if (ok) {
          // every invocation rounds its block's scale itself (f16_div is exact: the same bits in each)
          sc = f16_to_f32(f16_div(bitcast<f32>(atomicLoad(&am[t * CW + bl])), select(7.0, 127.0, k < p.K8)));
          w = qcodes(v, k, sc);
        }
        if (live) {
          if ((8u * c8) % p.B == 0u) { sas[t * CW + bl] = sc; }
          let x = t * CW + c8 / 4u;
          switch c8 % 4u {
            case 0u: { xa[x].x = w.x; xa[x].y = w.y; }
            case 1u: { xa[x].z = w.x; xa[x].w = w.y; }
            case 2u: { xb[x].x = w.x; xb[x].y = w.y; }
            default: { xb[x].z = w.x; xb[x].w = w.y; }
          }
          atomicAdd(&cs[x], -8 * (isum4(w.x) + isum4(w.y)));
        }
      }
    }
    workgroupBarrier();
    // QIN: am read (above the barrier): cleared for the next chunk, whose atomicMax is past two more barriers
    if (QIN != 0u) { for (var i = lid; i < MT * CW; i = i + MV_WG) { atomicStore(&am[i], 0u); } }
    // 3. this lane's words against the staged chunk, then the next chunk's words
    mv_dot(g.a, r, lane);
    if (WPL > 1u) { mv_dot(g.b, r, lane + TEAM); }
    if (WPL > 2u) { mv_dot(g.c, r, lane + 2u * TEAM); mv_dot(g.d, r, lane + 3u * TEAM); }
    if (WPL > 4u) {
      mv_dot(g.e, r, lane + 4u * TEAM); mv_dot(g.f, r, lane + 5u * TEAM);
      mv_dot(g.g, r, lane + 6u * TEAM); mv_dot(g.h, r, lane + 7u * TEAM);
    }
    let next = k0 + CH < p.Kp;
    if (next) { g = mv_load(pt, n, nk, (k0 + CH) / 32u + lane); }
    workgroupBarrier();
    // QIN: cs read (above the barrier): cleared for the next chunk's atomicAdd, past its staging's first barrier
    if (QIN != 0u) { for (var i = lid; i < MT * CW; i = i + MV_WG) { atomicStore(&cs[i], 0); } }
    // 4. this lane's blocks of the chunk: acc_b from the block's words, then t_b over its first word
    for (var j = 0u; j < 8u; j++) {
      let bl = lane + TEAM * j;
      if (j < WPL && bl < nbk) {
        let swb = f16_half(scale_word(sw, j), n * p.nb + bc + bl);
        for (var t = 0u; t < MT; t++) {
          let o = (r * MT + t) * (CW + 1u) + bl * vpb;
          var acc = ip[o];
          for (var q = 1u; q < vpb; q++) { acc = acc + ip[o + q]; }
          ip[o] = bitcast<i32>(f32(acc) * (sas[t * CW + bl] * swb));
        }
      }
    }
    if (next) { sw = mv_scales(pt, n, bc + bpc, lane, bpc); }
    workgroupBarrier();
    // 5. the chain: lane t of row r adds token t's blocks of the chunk in ascending order
    if (lane < MT) {
      let o = (r * MT + lane) * (CW + 1u);
      var bl = 0u;
      // 8 t_b read before their adds: one workgroup-memory latency per 8 blocks of the chain, not per block (down's
      // row is 64 blocks); the adds keep ascending order
      for (; bl + 8u <= nbk; bl = bl + 8u) {
        let i = o + bl * vpb;
        let t0 = ip[i]; let t1 = ip[i + vpb]; let t2 = ip[i + 2u * vpb]; let t3 = ip[i + 3u * vpb];
        let t4 = ip[i + 4u * vpb]; let t5 = ip[i + 5u * vpb]; let t6 = ip[i + 6u * vpb]; let t7 = ip[i + 7u * vpb];
        sum = sum + bitcast<f32>(t0); sum = sum + bitcast<f32>(t1); sum = sum + bitcast<f32>(t2); sum = sum + bitcast<f32>(t3);
        sum = sum + bitcast<f32>(t4); sum = sum + bitcast<f32>(t5); sum = sum + bitcast<f32>(t6); sum = sum + bitcast<f32>(t7);
      }
      for (; bl < nbk; bl++) { sum = sum + bitcast<f32>(ip[o + bl * vpb]); }
    }
  }
  let m = mBase + lane;
  if (lane < MT && n < pt.N && m < p.M) { yput(pt, m * pt.N + n, f16_round(sum)); }
}

// ---------------------------------------------------------------- tiled
const TM = 32u;
const TN = 64u;
var<workgroup> ta: array<u32, 1024>; // [token 32][B/8 groups ≤ 16][even, odd]
var<workgroup> tw: array<u32, 2048>; // [row 64][B/8 groups ≤ 16][lo, hi]

@compute @workgroup_size(256)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid & 15u; // rows tx*4 .. +4
  let ty = lid >> 4u; // tokens ty*2 .. +2
  let pt = part_of(wg.x);
  let n0 = (wg.x - pt.g) * TN;
  let mT = p.m0 + wg.y * TM;
  let ng = p.B / 8u; // 8-channel groups per block
  var sum: array<f32, 8>;
  for (var i = 0u; i < 8u; i++) { sum[i] = 0.0; }
  for (var b = 0u; b < p.nb; b++) {
    let k0 = b * p.B;
    for (var i = lid; i < TM * ng; i = i + 256u) {
      let t = i / ng; let g = i % ng; let m = mT + t;
      var v = vec2<u32>(0u, 0u);
      if (m < p.M) { v = act8(m, k0 + g * 8u); }
      ta[(t * 16u + g) * 2u] = v.x; ta[(t * 16u + g) * 2u + 1u] = v.y;
    }
    for (var i = lid; i < TN * ng; i = i + 256u) {
      let r = i / ng; let g = i % ng; let n = n0 + r;
      var w = 0u;
      if (n < pt.N) {
        let wi = (n * p.Kp + k0 + g * 8u) >> 3u; // u32 word of 8 nibbles
        let v4 = wget(pt, wi >> 2u);
        w = v4[wi & 3u];
      }
      tw[(r * 16u + g) * 2u] = lo4(w); tw[(r * 16u + g) * 2u + 1u] = hi4(w);
    }
    workgroupBarrier();
    for (var ti = 0u; ti < 2u; ti++) {
      let t = ty * 2u + ti; let m = mT + t;
      for (var ri = 0u; ri < 4u; ri++) {
        let r = tx * 4u + ri; let n = n0 + r;
        var acc = 0;
        for (var g = 0u; g < ng; g++) {
          acc = acc + dot4(tw[(r * 16u + g) * 2u], ta[(t * 16u + g) * 2u]) + dot4(tw[(r * 16u + g) * 2u + 1u], ta[(t * 16u + g) * 2u + 1u]);
        }
        if (m < p.M && n < pt.N) {
          sum[ti * 4u + ri] = sum[ti * 4u + ri] + nofma(f32(acc) * (sa_at(m, b) * sw_at(pt, n, b)));
        }
      }
    }
    workgroupBarrier();
  }
  for (var ti = 0u; ti < 2u; ti++) {
    let m = mT + ty * 2u + ti;
    for (var ri = 0u; ri < 4u; ri++) {
      let n = n0 + tx * 4u + ri;
      if (m < p.M && n < pt.N) { yput(pt, m * pt.N + n, f16_round(sum[ti * 4u + ri])); }
    }
  }
}

// ---------------------------------------------------------------- rowwise
// One invocation per (row, 4 tokens), all blocks in order, no workgroup memory and no barriers: for small
// K (few blocks), and for CPU adapters (SwiftShader runs barriers slowly).
@compute @workgroup_size(64)
fn rowwise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let pt = part_of(wg.x);
  let n = (wg.x - pt.g) * 64u + lid;
  let m0 = p.m0 + wg.y * 4u;
  if (n >= pt.N) { return; }
  let nt = min(4u, p.M - m0);
  let nk = p.Kp / 32u;
  var sum = vec4<f32>(0.0);
  for (var b = 0u; b < p.nb; b++) {
    var acc = vec4<i32>(0);
    for (var v = b * p.B / 32u; v < (b + 1u) * p.B / 32u; v++) {
      let w = wget(pt, n * nk + v);
      for (var t = 0u; t < nt; t++) {
        var a = 0;
        for (var q = 0u; q < 4u; q++) {
          let x = act8(m0 + t, v * 32u + q * 8u);
          a = a + dot4(lo4(w[q]), x.x) + dot4(hi4(w[q]), x.y);
        }
        acc[t] = acc[t] + a;
      }
    }
    let swb = sw_at(pt, n, b);
    for (var t = 0u; t < nt; t++) { sum[t] = sum[t] + nofma(f32(acc[t]) * (sa_at(m0 + t, b) * swb)); }
  }
  for (var t = 0u; t < nt; t++) { yput(pt, (m0 + t) * pt.N + n, f16_round(sum[t])); }
}
