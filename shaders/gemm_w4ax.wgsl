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
//   matvec (decode, M <= 4 per workgroup): ROWS rows × MT tokens per workgroup of ROWS · TEAM; each lane owns whole
//     128-channel segments of its row (64 bytes: four 16-byte loads) and computes their blocks' t_b itself; one
//     invocation per (row, token) chains them. K in chunks of TEAM · SPL · 128 channels (shape by K and N). The kernel before it
//     (8 rows × 32 lanes, int partials reduced through workgroup memory): 8.5-20% of copy on the H200.
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
// Decode, M <= 4 tokens per workgroup. A workgroup is ROWS rows × TEAM lanes (<= 256 invocations; by shape,
// pipes.ts matvecShape: 16 × 16, 16 × 8, 8 × 16, 8 × 32; MT = 4 and QIN take 16 × 16). The
// reduction dimension is cut into 128-channel segments (64 bytes of a row's codes: four 16-byte words, 1, 2 or 4
// B-blocks), and lane g of a row owns whole segments (g, g + TEAM, ... of each chunk): it computes the exact
// acc_b of every block in them and t_b = f32(acc_b) · (sa · sw) itself, so no integer partial crosses lanes and no
// reduction tree is needed. The t_b go through workgroup memory (tb) to one invocation per (row, token), which adds
// them in ascending block order: the contract's chain, and the memory round trip keeps t_b's rounding (no FMA).
// K is walked in chunks of CH = TEAM · SPL · 128 channels (TEAM = 16: 2048 or 4096), each:
//   1. every lane issues the 16-byte loads of its SPL segments (and their scales) first: 64 or 128 bytes in flight
//      per invocation, whose latency the staging below overlaps;
//   2. the chunk of activation is staged in workgroup memory once for all ROWS rows (QIN: quantized here);
//   3. barrier; each lane dots its segments against the staged chunk, t_b into tb;
//   4. barrier; the chain invocations add the chunk's t_b (the next chunk's loads and staging go on meanwhile).
// The dot product takes the weight nibbles unsigned: u = q + 8 = q ^ 8 (0..15) is one mask-and-xor per four codes
// (a sign extension costs three ops more), and Σ q·a = Σ u·a − 8·Σ a exactly in int32; −8·Σ a of each 32-channel
// word of the activation is computed once per workgroup, in staging (cs).
// The shape (TEAM, ROWS, SPL) changes only which invocation computes which t_b, never a t_b nor the chain's order:
// the same bits for every shape (floor.ts --variants checks them on the GPU, test/webgpu-matvec.test.ts here). The
// QIN variants quantize the whole activation in every workgroup, so they keep 16 rows a workgroup.
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
override SPL: u32 = 1u; // segments per lane per chunk: 1 or 2 (pipes.ts matvecShape); MT = 4 takes 1
override TEAM: u32 = 16u; // lanes per row (pipes.ts matvecShape; MT = 4: 16)
override ROWS: u32 = 16u; // rows per workgroup (ROWS · TEAM <= 256; MT = 4: 16)

// Workgroup memory (MT = 1, SPL = 2: 13.5 KB; MT = 4, SPL = 1: 27 KB, within the 32 KB of SwiftShader and GPUs)
// xs [tok][slot 0..7][segment of the chunk]: slot 2j + h of a segment holds sub-words 2h, 2h + 1 of its word j (a
//   sub-word: 8 channels, one u32 of the weight word) as (even, odd, even, odd) i8x4 lanes, matching ulo/uhi of the
//   weight's u32s; the TEAM lanes of a row read TEAM consecutive vec4s (no bank conflicts), the ROWS rows the same ones
var<workgroup> xs: array<vec4<u32>, MT * 8u * TEAM * SPL>;
// cs [tok][word j][segment]: −8 · Σ of the word's 32 codes (atomic: QIN sums it per sub-word; 0 between chunks there)
var<workgroup> cs: array<atomic<i32>, MT * 4u * TEAM * SPL>;
// sas [tok][block of the chunk] sa as f32 (B >= 32: at most 4 blocks per segment)
var<workgroup> sas: array<f32, MT * 4u * TEAM * SPL>;
// tb [row · MT + tok][block of the chunk] t_b, rows 4·TEAM·SPL + 1 words apart: the chain invocations read one row
// each, and a stride of 64 or 128 words would put all of them in one bank
var<workgroup> tb: array<f32, ROWS * MT * (4u * TEAM * SPL + 1u)>;
// QIN: [tok][block of the chunk] max |v| as f32 bits (non-negative f32s order as their u32 bits, so atomicMax gives the
// exact amax, NaN aside; 0 outside a chunk's staging: WGSL zero-initializes workgroup memory and each chunk clears it)
var<workgroup> am: array<atomic<u32>, MT * 4u * TEAM * SPL>;

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
/** Σ u·a over one 16-byte weight word (32 channels) against its staged slots a (sub-words 0, 1) and b (2, 3) */
fn udot(w: vec4<u32>, a: vec4<u32>, b: vec4<u32>) -> i32 {
  return dot4(ulo(w.x), a.x) + dot4(uhi(w.x), a.y) + dot4(ulo(w.y), a.z) + dot4(uhi(w.y), a.w)
       + dot4(ulo(w.z), b.x) + dot4(uhi(w.z), b.y) + dot4(ulo(w.w), b.z) + dot4(uhi(w.w), b.w);
}
/** Σ of the 4 signed i8 lanes of x */
fn isum4(x: u32) -> i32 { return dot4(x, 0x01010101u); }

/** one lane's segment of one row: its four 16-byte words and the scales sw of its blocks (x, y, z, w: up to 4) */
struct Seg { w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>, sw: vec4<f32> };

/** segment s (global) of row n: words past the row (Kp need not be a multiple of 128) and rows past N are 0 */
fn load_seg(pt: Part, n: u32, s: u32, nk: u32, vpb: u32) -> Seg {
  var g: Seg;
  let v = 4u * s;
  if (n >= pt.N || v >= nk) { return g; }
  let o = n * nk + v;
  g.w0 = wget(pt, o);
  if (v + 1u < nk) { g.w1 = wget(pt, o + 1u); }
  if (v + 2u < nk) { g.w2 = wget(pt, o + 2u); }
  if (v + 3u < nk) { g.w3 = wget(pt, o + 3u); }
  let b = v / vpb;
  g.sw.x = sw_at(pt, n, b);
  if (vpb <= 2u && b + 1u < p.nb) { g.sw.y = sw_at(pt, n, b + 1u); }
  if (vpb == 1u && b + 2u < p.nb) { g.sw.z = sw_at(pt, n, b + 2u); }
  if (vpb == 1u && b + 3u < p.nb) { g.sw.w = sw_at(pt, n, b + 3u); }
  return g;
}

/** t_b = f32(acc_b) · (sa · sw) of block b (global; bc: the chunk's first block) for row slot r and token t */
fn put_tb(r: u32, t: u32, b: u32, bc: u32, acc: i32, sw: f32) {
  if (b < p.nb) {
    let NB = 4u * TEAM * SPL;
    tb[(r * MT + t) * (NB + 1u) + b - bc] = f32(acc) * (sas[t * NB + b - bc] * sw);
  }
}

/** the t_b of segment sl of the chunk (global segment s) of row slot r, every staged token */
fn seg_tb(g: Seg, r: u32, sl: u32, s: u32, vpb: u32, bc: u32) {
  let NS = TEAM * SPL;
  for (var t = 0u; t < MT; t++) {
    let x = t * 8u * NS + sl;
    let c = t * 4u * NS + sl;
    let a0 = udot(g.w0, xs[x], xs[x + NS]) + atomicLoad(&cs[c]);
    let a1 = udot(g.w1, xs[x + 2u * NS], xs[x + 3u * NS]) + atomicLoad(&cs[c + NS]);
    let a2 = udot(g.w2, xs[x + 4u * NS], xs[x + 5u * NS]) + atomicLoad(&cs[c + 2u * NS]);
    let a3 = udot(g.w3, xs[x + 6u * NS], xs[x + 7u * NS]) + atomicLoad(&cs[c + 3u * NS]);
    let b = (4u * s) / vpb;
    if (vpb == 4u) { put_tb(r, t, b, bc, a0 + a1 + a2 + a3, g.sw.x); }
    else if (vpb == 2u) { put_tb(r, t, b, bc, a0 + a1, g.sw.x); put_tb(r, t, b + 1u, bc, a2 + a3, g.sw.y); }
    else {
      put_tb(r, t, b, bc, a0, g.sw.x); put_tb(r, t, b + 1u, bc, a1, g.sw.y);
      put_tb(r, t, b + 2u, bc, a2, g.sw.z); put_tb(r, t, b + 3u, bc, a3, g.sw.w);
    }
  }
}

/** the staged slots of sub-word q (0..3) of word j of segment sl, token t: (even, odd) into slot 2j + q/2 */
fn put_sub(t: u32, sl: u32, j: u32, q: u32, v: vec2<u32>) {
  let NS = TEAM * SPL;
  let i = (t * 8u + 2u * j + q / 2u) * NS + sl;
  if ((q & 1u) == 0u) { xs[i].x = v.x; xs[i].y = v.y; } else { xs[i].z = v.x; xs[i].w = v.y; }
}

@compute @workgroup_size(ROWS * TEAM)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = lid / TEAM; // row slot
  let lane = lid % TEAM;
  let pt = part_of(wg.x);
  let n = (wg.x - pt.g) * ROWS + r;
  let mBase = p.m0 + wg.y * MT;
  let nk = p.Kp / 32u; // 16-byte words per row
  let vpb = p.B / 32u; // words per block
  let NS = TEAM * SPL; // segments per chunk
  let NB = 4u * NS; // words per chunk = its block slots (4 a segment: B = 32)
  let CH = 128u * NS;
  let WG = ROWS * TEAM;
  var sum = 0.0; // the chain of (row r', token t') = (lid / MT, lid % MT), lid < ROWS · MT
  for (var k0 = 0u; k0 < p.Kp; k0 = k0 + CH) {
    let s0 = k0 / 128u; // the chunk's first segment
    let bc = k0 / p.B; // and block
    // 1. this lane's segments (two named register sets, not an indexed array a driver may put in local memory)
    let gA = load_seg(pt, n, s0 + lane, nk, vpb);
    var gB: Seg;
    if (SPL > 1u) { gB = load_seg(pt, n, s0 + lane + TEAM, nk, vpb); }
    // 2. stage the chunk of each token
    if (QIN == 0u) {
      // one 32-channel word per invocation: its 4 sub-words' (even, odd) lanes and −8 · Σ codes
      for (var i = lid; i < MT * NB; i = i + WG) {
        let t = i / NB; let wl = i % NB; // word of the chunk: segment wl / 4, word wl % 4
        let m = mBase + t; let k = k0 + 32u * wl;
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
        let sl = wl / 4u; let j = wl % 4u;
        let xi = (t * 8u + 2u * j) * NS + sl;
        xs[xi] = vec4<u32>(e.x, o.x, e.y, o.y);
        xs[xi + NS] = vec4<u32>(e.z, o.z, e.w, o.w);
        let sa = isum4(e.x) + isum4(o.x) + isum4(e.y) + isum4(o.y) + isum4(e.z) + isum4(o.z) + isum4(e.w) + isum4(o.w);
        atomicStore(&cs[(t * 4u + j) * NS + sl], -8 * sa);
      }
      for (var i = lid; i < MT * NB; i = i + WG) {
        let t = i / NB; let m = mBase + t; let b = bc + i % NB;
        var sa = 0.0;
        if (m < p.M && b < p.nb) { sa = sa_at(m, b); }
        sas[i] = sa;
      }
    } else {
      // one 8-channel sub-word per invocation per pass (passes of 8 · WG channels, 2048 at 16 × 16: whole blocks, each
      // with its own am entries): the blocks' amax, a barrier, then the codes of the values kept in registers
      for (var ps = 0u; ps < (MT * 4u * NB + WG - 1u) / WG; ps++) {
        let i = ps * WG + lid;
        let live = i < MT * 4u * NB; // WG need not divide the chunk's sub-words (ROWS · TEAM < 16 · TEAM)
        let t = min(i / (4u * NB), MT - 1u); let c8 = i % (4u * NB);
        let m = mBase + t; let k = k0 + 8u * c8;
        let ok = live && m < p.M && k < p.Kp;
        let bl = (8u * c8) / p.B;
        var v: array<f32, 8>;
        var a = 0.0;
        if (ok) { for (var e = 0u; e < 8u; e++) { v[e] = qin(m, k + e); a = max(a, abs(v[e])); } }
        atomicMax(&am[t * NB + bl], bitcast<u32>(a));
        workgroupBarrier();
        var w = vec2<u32>(0u, 0u);
        var sc = 0.0;
        if (ok) {
          // every invocation rounds its block's scale itself (f16_div is exact: the same bits in each)
          sc = f16_to_f32(f16_div(bitcast<f32>(atomicLoad(&am[t * NB + bl])), select(7.0, 127.0, k < p.K8)));
          w = qcodes(v, k, sc);
        }
        if (live) {
          if ((8u * c8) % p.B == 0u) { sas[t * NB + bl] = sc; }
          let wl = c8 / 4u;
          put_sub(t, wl / 4u, wl % 4u, c8 % 4u, w);
          atomicAdd(&cs[(t * 4u + wl % 4u) * NS + wl / 4u], -8 * (isum4(w.x) + isum4(w.y)));
        }
      }
    }
    workgroupBarrier();
    // QIN: am read (above the barrier): cleared for the next chunk, whose atomicMax is past another barrier
    if (QIN != 0u) { for (var i = lid; i < MT * NB; i = i + WG) { atomicStore(&am[i], 0u); } }
    // 3. t_b of this lane's segments
    seg_tb(gA, r, lane, s0 + lane, vpb, bc);
    if (SPL > 1u) { seg_tb(gB, r, lane + TEAM, s0 + lane + TEAM, vpb, bc); }
    workgroupBarrier();
    // 4. the chain: invocation r'·MT + t' adds row r' token t''s blocks of the chunk in ascending order
    if (lid < ROWS * MT) {
      let nbk = min(CH / p.B, p.nb - bc);
      for (var bl = 0u; bl < nbk; bl++) { sum = sum + tb[lid * (NB + 1u) + bl]; }
    }
    // QIN: cs read (above the barrier): cleared for the next chunk's atomicAdd, past its first barrier
    if (QIN != 0u) { for (var i = lid; i < MT * NB; i = i + WG) { atomicStore(&cs[i], 0); } }
  }
  let nOut = (wg.x - pt.g) * ROWS + lid / MT;
  let m = mBase + lid % MT;
  if (lid < ROWS * MT && nOut < pt.N && m < p.M) { yput(pt, m * pt.N + nOut, f16_round(sum)); }
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
