// quant.wgsl: FMPQ activation quantizers (DESIGN §3.2), workgroups of 256 over a token row's chunks (B <= 128).
//   quantize_act (MODE 0): v_j = x[perm[j]]
//   rmsnorm_quant (MODE 1): v_j = w[c]·(x[c]·inv), c = perm[j], inv as norm.wgsl computes it
//   silu_mul_quant (MODE 2): v_j = silu(g[c])·u[c]
//   add_rmsnorm_quant (MODE 3): rmsnorm_quant of s = x + r (elementwise.wgsl's add), s written out too: each
//     workgroup sums the whole row's squares of x + r as MODE 1 does of s (the same f32 values in the same order),
//     and stores s over its own chunk of channels (in channel order)
// then v_j -> f16 (RNE), per B-block amax, s = f16(amax/qmax) and codes roundHalfEven(v/s) of the exact
// quotients (common.wgsl), clamped to -qmax-1..qmax; channels [K, Kp) are 0.
// Output: the qact buffer  a8 int8 [M][K8] | a4 int4x2 [M][(Kp-K8)/2] | sa f16 [M][Kp/B], written as whole
// words. Scales: when no word of sa holds two tokens' scales (one token, or an even Kp/B), the workgroup keeps
// its token's scales and stores whole words at the end (DIRECT = 1); else two tokens can share a word and
// the scales go in with atomicOr over an sa the host cleared first. DIRECT saves the clear, which would end
// the compute pass: every decode step's quantizers run that way.

struct P {
  K: u32, Kp: u32, K8: u32, B: u32, nb: u32, hasPerm: u32,
  a4Off: u32, saOff: u32, // word offsets in the output
  eps: f32,
  direct: u32, // 1: whole-word scale stores (needs nb <= NBMAX), 0: atomicOr into a cleared sa
  chunk: u32, // channels per workgroup (grid z: the row's chunks), a multiple of WG: few rows (decode) spread
              // over many workgroups, one pass each; every chunk's scales are whole words (an even number of blocks)
};
override MODE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>; // [M][K] (g for silu)
@group(0) @binding(2) var<storage, read> y: array<f32>; // rmsnorm weight [K] | u [M][K] | unused
@group(0) @binding(3) var<storage, read> perm: array<u32>; // [K]; unused when hasPerm = 0
@group(0) @binding(4) var<storage, read_write> q: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read> r: array<f32>; // MODE 3: the addend [M][K]; else unused
@group(0) @binding(6) var<storage, read_write> so: array<f32>; // MODE 3: x + r [M][K]; else unused

/** channel c of row xo's input: x, or (MODE 3) x + r */
fn xin(i: u32) -> f32 {
  if (MODE == 3u) { return x[i] + r[i]; }
  return x[i];
}

// 256 invocations: a decode chunk of 256 channels in one pass (128 took two, each with its three barriers and its two
// dependent loads, perm then x, r and w)
const WG = 256u;
// max |v| of each of the pass's WG/B blocks, as f32 bits: non-negative f32s order as their u32 bits, so an
// atomicMax of the bits is the block amax (exact, any order), NaN aside. 0 between passes (WGSL zero-initializes
// workgroup memory; each pass clears what it used).
var<workgroup> am: array<atomic<u32>, WG / 32u>;
var<workgroup> cs: array<i32, WG>; // codes
const NBMAX = 512u;
var<workgroup> sb: array<u32, NBMAX>; // DIRECT: scale bits of every block of the token

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let m = wg.x + wg.y * 65535u;
  let jA = wg.z * p.chunk; let jB = min(p.Kp, jA + p.chunk); // this workgroup's channels
  let xo = m * p.K;
  var inv = 0.0;
  if (MODE == 1u || MODE == 3u) {
    var part = 0.0;
    if (lid < 64u) { part = sumsq(xo, p.K, lid); } // as norm.wgsl
    let s2 = wg_sum(part, lid);
    inv = 1.0 / sqrt(s2 / f32(p.K) + p.eps);
  }
  if (MODE == 3u) { for (var c = jA + lid; c < min(jB, p.K); c = c + WG) { so[xo + c] = x[xo + c] + r[xo + c]; } }
  let K4 = p.Kp - p.K8;
  for (var j0 = jA; j0 < jB; j0 = j0 + WG) {
    let j = j0 + lid;
    var v = 0.0;
    if (j < p.K) {
      var c = j;
      if (p.hasPerm != 0u) { c = perm[j]; }
      if (MODE == 0u) { v = x[xo + c]; }
      else if (MODE == 1u || MODE == 3u) { v = y[c] * (xin(xo + c) * inv); }
      else { v = silu_mul_f(x[xo + c], y[xo + c]); }
      v = f16_round(v);
    }
    // block amax: one atomic and one barrier, where a tree took 1 + log2(B) barriers
    atomicMax(&am[lid / p.B], bitcast<u32>(abs(v)));
    workgroupBarrier();
    // every invocation rounds its block's scale itself (f16_div is exact: the same bits in each), which saves the
    // barrier that handing it over through workgroup memory took
    let qmax = select(7.0, 127.0, j < p.K8);
    let h = f16_div(bitcast<f32>(atomicLoad(&am[lid / p.B])), qmax);
    if ((lid % p.B) == 0u && j < p.Kp) {
      let i = m * p.nb + j / p.B;
      if (p.direct != 0u) { sb[j / p.B] = h; }
      else { atomicOr(&q[p.saOff + (i >> 1u)], h << ((i & 1u) * 16u)); }
    }
    let s = f16_to_f32(h);
    cs[lid] = act_code(v, s, qmax);
    workgroupBarrier();
    // every invocation has read am (above the barrier): cleared for the next pass, whose atomicMax is past the
    // barrier at the end of this one
    if ((lid % p.B) == 0u) { atomicStore(&am[lid / p.B], 0u); }
    if (j < p.K8) {
      if ((lid & 3u) == 0u) {
        let wv = (bitcast<u32>(cs[lid]) & 0xffu) | ((bitcast<u32>(cs[lid + 1u]) & 0xffu) << 8u)
               | ((bitcast<u32>(cs[lid + 2u]) & 0xffu) << 16u) | (bitcast<u32>(cs[lid + 3u]) << 24u);
        atomicStore(&q[(m * p.K8 + j) >> 2u], wv);
      }
    } else if (j < p.Kp && (lid & 7u) == 0u) {
      var wv = 0u;
      for (var i = 0u; i < 8u; i++) { wv = wv | ((bitcast<u32>(cs[lid + i]) & 0xfu) << (4u * i)); }
      atomicStore(&q[p.a4Off + ((m * K4 + j - p.K8) >> 3u)], wv);
    }
    workgroupBarrier();
  }
  if (p.direct != 0u) { // m·nb is even here: this token's scales start a word, and so do this chunk's
    for (var w = jA / p.B / 2u + lid; w < (jB / p.B + 1u) / 2u; w = w + WG) {
      var hi = 0u;
      if (2u * w + 1u < p.nb) { hi = sb[2u * w + 1u]; }
      atomicStore(&q[p.saOff + ((m * p.nb) >> 1u) + w], sb[2u * w] | (hi << 16u));
    }
  }
}
