// gemm_w4ax.wgsl: Y[m][n] = f16( Σ_b f32(acc_b) · (f32(sa[m][b]) · f32(sw[n][b])) ), DESIGN §3.4, bit-exact.
//   act: one buffer  a8 int8 [M][K8] | a4 int4x2 [M][(Kp-K8)/2] | sa f16 [M][Kp/B]   (u32 words; offsets in P)
//   w:   one buffer  codes int4x2 [N][Kp/2] | scales f16 [N][Kp/B]                    (canonical packing)
// acc_b is exact int32 (dot4 on i8x4 lanes; the int4 nibbles are sign-extended to bytes: lo4/hi4 give the
// even/odd elements, so the act side is split the same way, int8 words with even8/odd8). The f32 epilogue
// adds the blocks in ascending order, one chain per output; the product t_b must not be fused into that
// add (an FMA would skip its rounding): `matvec` hands t_b to the chain through workgroup memory, `tiled`
// and `rowwise` pass it through `nofma` (an xor with a runtime zero the compiler cannot see through).
// Measured bit-exact against the simulator on SwiftShader and on the H100 (test/ops.test.ts, every WebGPU kernel variant).
//
// Three kernels (the backend picks; bench/webgpu measures; results in bench/results/webgpu-*.md):
//   matvec (decode, M <= 4 per workgroup): TEAMS rows × MT tokens per workgroup of TEAMS·32; each row is one
//     team of 32 lanes streaming coalesced 16-byte words (up to 4 per lane per chunk, in named registers);
//     K in chunks of 4096 (MT = 1) or 2048 channels. H100: 1182 GB/s at 14336x4096 (41% of copy).
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
@group(0) @binding(7) var<storage, read_write> y2: array<f32>; // or QIN = 2's u [M][K] (read only; no part 2 then)
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
// QIN = 1: `act` is the f32 input x [M][K] of quantize_act, quantized here on the way into workgroup memory
// (o_proj's input at decode: its quantize_act dispatch folded into the GEMM). Each workgroup quantizes the chunks
// it reads exactly as quant.wgsl MODE 0 does (v = f16(x[perm[j]]), exact block amax, s = f16_div(amax, qmax),
// codes div_rne: exact quotients, so the same codes and scales whatever the compiler), hence the same bits as
// quantize_act then the GEMM.
// QIN = 2: the same for silu_mul_quant (down_proj's input at decode): `act` is g [M][K] and binding 7 (y2, free:
// the down GEMM has one part) is u [M][K]; v = f16(silu_mul_f(g[c], u[c])), c = perm[j], as quant.wgsl MODE 2
// computes it, through the one silu_mul_f of common.wgsl (the f32 product is tier 3, but the same expression on
// the same inputs: quant.wgsl's silu_mul_quant and elementwise.wgsl's silu_mul already rely on that). u stays on
// binding 7 rather than a new one: the kernels keep to WebGPU's default 8 storage buffers per stage.
override QIN: u32 = 0u;
override MT: u32 = 4u; // tokens per workgroup (1 for a single decode token)
override TEAMS: u32 = 8u; // rows per workgroup (one team of 32 lanes per row)
override CH: u32 = 2048u; // channels per chunk (<= 4096): 4096 for MT = 1, 2048 for MT = 4 (bench/webgpu sweeps, H100)

// Staged activation, [tok][k 0..7][word v of the chunk]: word v's 32 channels are four 8-channel groups,
// each an (even, odd) pair: k = 2·group + parity. Lanes read consecutive v: no bank conflicts.
var<workgroup> xa: array<u32, MT * CH / 4u>;
var<workgroup> pp: array<i32, TEAMS * MT * (CH / 32u)>; // [team][tok][word] int partials
var<workgroup> tb: array<f32, TEAMS * MT * (CH / 32u)>; // [team][tok][block of chunk] t_b
// QIN: [tok][block of the chunk] (B >= 32: at most CH/32 blocks) max |v| as f32 bits (non-negative f32s order as
// their u32 bits, so atomicMax gives the exact amax, NaN aside; 0 outside a chunk's staging: WGSL zero-initializes
// workgroup memory and each chunk clears it after use), and the blocks' scales (f32 values of f16)
var<workgroup> am: array<atomic<u32>, MT * CH / 32u>;
var<workgroup> qs: array<f32, MT * CH / 32u>;

/** QIN: the quantizer's value of channel j of token m: f16(x[m][perm[j]]) (QIN = 2: f16(silu(g)·u) there), 0 in
 *  the padding [K, Kp) */
fn qin(m: u32, j: u32) -> f32 {
  if (j >= p.K) { return 0.0; }
  var c = j;
  if (p.hasPerm != 0u) { c = qperm[j]; }
  let i = m * p.K + c;
  if (QIN == 2u) { return f16_round(silu_mul_f(bitcast<f32>(act[i]), y2[i])); }
  return f16_round(bitcast<f32>(act[i]));
}
/** QIN: the scale of block bl of the chunk (global block b) for staged token t, from its amax */
fn qscale(t: u32, bl: u32, b: u32) -> f32 {
  let amax = bitcast<f32>(atomicLoad(&am[t * (CH / 32u) + bl]));
  return f16_to_f32(f16_div(amax, select(7.0, 127.0, b * p.B < p.K8)));
}
/** QIN: channels [k, k+8) of token m quantized with scale s, as the (even, odd) i8x4 words act8 gives */
fn qwords(m: u32, k: u32, s: f32) -> vec2<u32> {
  let qmax = select(7.0, 127.0, k < p.K8);
  var w = vec2<u32>(0u, 0u);
  for (var e = 0u; e < 8u; e++) {
    let code = act_code(qin(m, k + e), s, qmax);
    let byte = (bitcast<u32>(code) & 0xffu) << (8u * (e / 2u));
    if ((e & 1u) == 0u) { w.x = w.x | byte; } else { w.y = w.y | byte; }
  }
  return w;
}

/** 16-byte word j of this lane in the chunk at k0 (0 past the row or beyond the chunk's CV words) */
fn wword(pt: Part, n: u32, k0: u32, lane: u32, j: u32, CV: u32, nk: u32) -> vec4<u32> {
  let gv = k0 / 32u + lane + 32u * j;
  if (n < pt.N && gv < nk && lane + 32u * j < CV) { return wget(pt, n * nk + gv); }
  return vec4<u32>(0u);
}

/** exact int partial of word v = lane + 32·j against each staged token */
fn partials(w: vec4<u32>, team: u32, lane: u32, j: u32, CV: u32, CW: u32) {
  let v = lane + 32u * j;
  let wl = vec4<u32>(lo4(w.x), lo4(w.y), lo4(w.z), lo4(w.w));
  let wh = vec4<u32>(hi4(w.x), hi4(w.y), hi4(w.z), hi4(w.w));
  for (var t = 0u; t < MT; t++) {
    let g = t * CW + v;
    let acc = dot4(wl.x, xa[g]) + dot4(wh.x, xa[g + CV]) + dot4(wl.y, xa[g + 2u * CV]) + dot4(wh.y, xa[g + 3u * CV])
            + dot4(wl.z, xa[g + 4u * CV]) + dot4(wh.z, xa[g + 5u * CV]) + dot4(wl.w, xa[g + 6u * CV]) + dot4(wh.w, xa[g + 7u * CV]);
    pp[(team * MT + t) * CV + v] = acc;
  }
}

@compute @workgroup_size(TEAMS * 32u)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let team = lid >> 5u;
  let lane = lid & 31u;
  let pt = part_of(wg.x);
  let n = (wg.x - pt.g) * TEAMS + team;
  let mBase = p.m0 + wg.y * MT;
  let nk = p.Kp / 32u; // 16-byte words per row
  let vpb = p.B / 32u; // words per block
  let CV = CH / 32u;
  let nbc = CH / p.B; // blocks per chunk
  let CW = CH / 4u; // staged words per token
  var sum = 0.0;
  for (var k0 = 0u; k0 < p.Kp; k0 = k0 + CH) {
    // 0. this lane's weight words of the chunk (up to 4: CH <= 4096; coalesced along the row), loaded first so their
    //    latency overlaps the staging below; four named registers, not an indexed array (which a driver
    //    may place in local memory)
    let w0 = wword(pt, n, k0, lane, 0u, CV, nk);
    let w1 = wword(pt, n, k0, lane, 1u, CV, nk);
    let w2 = wword(pt, n, k0, lane, 2u, CV, nk);
    let w3 = wword(pt, n, k0, lane, 3u, CV, nk);
    // the scales of this lane's first block of step 3 (the only one when the chunk has <= 32 blocks), loaded
    // now too: after the barriers their latency would stand alone in each workgroup's critical path
    let bp = k0 / p.B + lane;
    var swp = 0.0; var sap = 0.0;
    if (lane < nbc && bp < p.nb && n < pt.N) {
      swp = sw_at(pt, n, bp);
      if (QIN == 0u && MT == 1u && mBase < p.M) { sap = sa_at(mBase, bp); }
    }
    // QIN: the blocks' max |v| first (each invocation the max of its 8-channel groups, then an atomicMax into the block's)
    if (QIN != 0u) {
      for (var t = 0u; t < MT; t++) {
        let m = mBase + t;
        for (var g = lid; g < CH / 8u; g = g + TEAMS * 32u) {
          let k = k0 + g * 8u;
          var a = 0.0;
          if (m < p.M && k < p.Kp) { for (var e = 0u; e < 8u; e++) { a = max(a, abs(qin(m, k + e))); } }
          atomicMax(&am[t * (CH / 32u) + (g * 8u) / p.B], bitcast<u32>(a));
        }
      }
      workgroupBarrier();
    }
    // 1. stage the activation chunk as (even, odd) i8x4 words, 8 channels per invocation per step
    for (var t = 0u; t < MT; t++) {
      let m = mBase + t;
      for (var g = lid; g < CH / 8u; g = g + TEAMS * 32u) {
        let k = k0 + g * 8u;
        var v = vec2<u32>(0u, 0u);
        if (m < p.M && k < p.Kp) {
          if (QIN != 0u) {
            let bl = (g * 8u) / p.B;
            let s = qscale(t, bl, k / p.B);
            if ((g * 8u) % p.B == 0u) { qs[t * (CH / 32u) + bl] = s; } // for step 3
            v = qwords(m, k, s);
          } else { v = act8(m, k); }
        }
        let o = t * CW + (g & 3u) * 2u * CV + (g >> 2u);
        xa[o] = v.x;
        xa[o + CV] = v.y;
      }
    }
    workgroupBarrier();
    // QIN: am read (staging, above the barrier): cleared for the next chunk, whose atomicMax is past two more barriers
    if (QIN != 0u) { for (var i = lid; i < MT * (CH / 32u); i = i + TEAMS * 32u) { atomicStore(&am[i], 0u); } }
    // 2. integer partials of each 16-byte word (32 channels)
    partials(w0, team, lane, 0u, CV, CW);
    if (CV > 32u) { partials(w1, team, lane, 1u, CV, CW); }
    if (CV > 64u) { partials(w2, team, lane, 2u, CV, CW); }
    if (CV > 96u) { partials(w3, team, lane, 3u, CV, CW); }
    workgroupBarrier();
    // 3. t_b for each block of the chunk (exact int sums of the block's words, then the f32 products)
    for (var bl = lane; bl < nbc; bl = bl + 32u) {
      let b = k0 / p.B + bl;
      for (var t = 0u; t < MT; t++) {
        var acc = 0;
        for (var i = 0u; i < vpb; i++) { acc = acc + pp[(team * MT + t) * CV + bl * vpb + i]; }
        var tv = 0.0;
        let m = mBase + t;
        if (b < p.nb && n < pt.N && m < p.M) {
          var sa = 0.0; var sw = 0.0;
          if (bl == lane) { sw = swp; } else { sw = sw_at(pt, n, b); }
          if (QIN != 0u) { sa = qs[t * (CH / 32u) + bl]; }
          else if (bl == lane && MT == 1u) { sa = sap; }
          else { sa = sa_at(m, b); }
          tv = f32(acc) * (sa * sw);
        }
        tb[(team * MT + t) * CV + bl] = tv;
      }
    }
    workgroupBarrier();
    // 4. the chain: lane t adds token t's blocks in ascending order
    if (lane < MT) {
      let nbk = min(nbc, p.nb - k0 / p.B);
      for (var bl = 0u; bl < nbk; bl++) { sum = sum + tb[(team * MT + lane) * CV + bl]; }
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
