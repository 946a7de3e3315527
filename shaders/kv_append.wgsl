// kv_append.wgsl: k, v [T][nKvHeads·headDim] -> the pages of one layer (the host binds that layer's range).
//   f32 cache, per layer: (page, nKvHeads, P, headDim) f32 words.
//   kv4 cache: byte for byte the simulator's KVStoreKV4 (simulator/kv4.ts): chunk (page, head) of headBytes
//     = kCodes u4x2 [P][hd/2] | vCodes | kSZ f16 (s, z) [P][hd/G] | vSZ; offsets come from kv4Layout.
//   KV4 group: lo, hi over G channels; s = f16((hi - lo)/15), z = f16(lo) (exact quotients, common.wgsl);
//   q = clamp(roundHalfEven((x - z)/s), 0, 15). The simulator rounds f32(x - z)/s to f32 before rounding
//   to an integer: the two differ only where that f32 rounding lands exactly on a half (tier 2, measured).
// The step layout (pos [T], seq [T], per-sequence offset of its block table, block tables) is in `lay`.
//
// ROPE = 1 (rope_kv_append, a decode step's one dispatch for both): k is rotated on its way into the cache and
// q [T][nH·hd] is rotated into qo, both by common.wgsl's rope_rot over the host's (cos, sin) table cs
// [T][hd/2][2] (rope.wgsl's table and rotation: the bits of rope then kv_append). The q pairs get invocations
// (workgroups) of their own after the KV ones. ROPE = 0 binds dummies for q, cs and qo.
struct P {
  T: u32, nKv: u32, hd: u32, P: u32, G: u32,
  posOff: u32, seqOff: u32, btoOff: u32,
  headW: u32, kCodesW: u32, vCodesW: u32, kSZW: u32, vSZW: u32, // kv4 word offsets
  nH: u32, // ROPE: q heads
};
override ROPE: u32 = 0u;
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> kx: array<f32>;
@group(0) @binding(2) var<storage, read> vx: array<f32>;
@group(0) @binding(3) var<storage, read> lay: array<u32>;
@group(0) @binding(4) var<storage, read_write> cache: array<u32>;
@group(0) @binding(5) var<storage, read> qx: array<f32>; // ROPE: q [T][nH·hd]
@group(0) @binding(6) var<storage, read> cs: array<f32>; // ROPE: (cos, sin) [T][hd/2][2]
@group(0) @binding(7) var<storage, read_write> qo: array<f32>; // ROPE: rope(q)

/** (page, slot) of token t */
fn place(t: u32) -> vec2<u32> {
  let pos = lay[p.posOff + t];
  let bt = lay[p.btoOff + lay[p.seqOff + t]];
  return vec2<u32>(lay[bt + pos / p.P], pos % p.P);
}

/** channels (c, c + 1) of token t's K (which = 0, rotated when ROPE) or V row at xo = t·nKv·hd + head·hd; c even */
fn pair(which: u32, t: u32, xo: u32, c: u32) -> vec2<f32> {
  if (which == 1u) { return vec2<f32>(vx[xo + c], vx[xo + c + 1u]); }
  let k = vec2<f32>(kx[xo + c], kx[xo + c + 1u]);
  if (ROPE == 0u) { return k; }
  let ci = (t * (p.hd / 2u) + (c % p.hd) / 2u) * 2u;
  return rope_rot(k.x, k.y, cs[ci], cs[ci + 1u]);
}

/** ROPE: q pair i of [T][nH][hd/2] rotated into qo */
fn rope_q(i: u32) {
  let half = p.hd / 2u;
  let t = i / (p.nH * half); let ii = i % half;
  let o = 2u * i; // pairs are contiguous: [t][head][ii] -> channels 2i, 2i + 1
  let ci = (t * half + ii) * 2u;
  let r = rope_rot(qx[o], qx[o + 1u], cs[ci], cs[ci + 1u]);
  qo[o] = r.x; qo[o + 1u] = r.y;
}

// f32 cache: one invocation per channel pair (then, ROPE, per q pair)
@compute @workgroup_size(256)
fn append_f32(@builtin(global_invocation_id) g: vec3<u32>) {
  let C = p.nKv * p.hd;
  let i = g.x + g.y * 65535u * 256u;
  let nkv = p.T * C / 2u;
  if (ROPE == 1u && i >= nkv && i < nkv + p.T * p.nH * p.hd / 2u) { rope_q(i - nkv); return; }
  if (i >= nkv) { return; }
  let t = (2u * i) / C; let c = (2u * i) % C;
  let ps = place(t);
  let o = ((ps.x * p.nKv + c / p.hd) * p.P + ps.y) * p.hd + c % p.hd;
  let L = arrayLength(&cache) / 2u; // K half | V half of this layer's range
  let xo = t * C + (c / p.hd) * p.hd;
  let k = pair(0u, t, xo, c % p.hd); let v = pair(1u, t, xo, c % p.hd);
  cache[o] = bitcast<u32>(k.x); cache[o + 1u] = bitcast<u32>(k.y);
  cache[L + o] = bitcast<u32>(v.x); cache[L + o + 1u] = bitcast<u32>(v.y);
}

// KV4, one invocation per (token, KV head, K/V, group) (CPU adapters; then, ROPE, per q pair): the group's G
// channels walked twice, rotated again on the second walk (the same bits)
@compute @workgroup_size(64)
fn append_kv4(@builtin(global_invocation_id) g: vec3<u32>) {
  let ng = p.hd / p.G;
  let i = g.x + g.y * 65535u * 64u;
  let nkv = p.T * p.nKv * 2u * ng;
  if (ROPE == 1u && i >= nkv && i < nkv + p.T * p.nH * p.hd / 2u) { rope_q(i - nkv); return; }
  if (i >= nkv) { return; }
  let gi = i % ng; let which = (i / ng) % 2u; let h = (i / (2u * ng)) % p.nKv; let t = i / (2u * ng * p.nKv);
  let ps = place(t);
  let xo = t * p.nKv * p.hd + h * p.hd;
  var lo = 3.4028234663852886e38; var hi = -3.4028234663852886e38;
  for (var c = gi * p.G; c < (gi + 1u) * p.G; c += 2u) {
    let v = pair(which, t, xo, c);
    lo = min(min(lo, v.x), v.y); hi = max(max(hi, v.x), v.y); // channel order, as the workgroup kernel
  }
  let sh = f16_div(hi - lo, 15.0);
  let zh = f32_to_f16(lo);
  let s = f16_to_f32(sh); let z = f16_to_f32(zh);
  let base = (ps.x * p.nKv + h) * p.headW;
  cache[base + select(p.kSZW, p.vSZW, which == 1u) + ps.y * ng + gi] = sh | (zh << 16u);
  let co = base + select(p.kCodesW, p.vCodesW, which == 1u) + (ps.y * p.hd + gi * p.G) / 8u;
  for (var wi = 0u; wi < p.G / 8u; wi++) {
    var word = 0u;
    for (var e = 0u; e < 8u; e += 2u) {
      let v = pair(which, t, xo, gi * p.G + wi * 8u + e);
      var q0 = 0u; var q1 = 0u;
      if (s != 0.0) { q0 = u32(clamp(div_rne(v.x - z, s), 0.0, 15.0)); q1 = u32(clamp(div_rne(v.y - z, s), 0.0, 15.0)); }
      word = word | (q0 << (4u * e)) | (q1 << (4u * e + 4u));
    }
    cache[co + wi] = word;
  }
}

// KV4, one workgroup of 64 per (token, KV head, K/V) (grid T x 2·nKv, then ROPE nH workgroups per token for q;
// GPUs): lanes load the row's pairs (K rotated), lanes g < hd/G find their group's range, lanes w < hd/8 pack
// code word w. append_kv4 above stays for CPU adapters; both store the same bytes.
var<workgroup> xs: array<f32, 256>;   // the row [hd]
var<workgroup> gsz: array<vec2<f32>, 32>; // (s, z) of each group as f32

@compute @workgroup_size(64)
fn append_kv4_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.x;
  if (ROPE == 1u && wg.y >= 2u * p.nKv) { // q head wg.y - 2·nKv of token t (uniform per workgroup)
    let half = p.hd / 2u;
    for (var i = lid; i < half; i += 64u) { rope_q((t * p.nH + wg.y - 2u * p.nKv) * half + i); }
    return;
  }
  let h = wg.y / 2u; let which = wg.y % 2u;
  let ng = p.hd / p.G;
  let xo = t * p.nKv * p.hd + h * p.hd;
  for (var c = 2u * lid; c < p.hd; c += 128u) { let v = pair(which, t, xo, c); xs[c] = v.x; xs[c + 1u] = v.y; }
  workgroupBarrier();
  let ps = place(t);
  let base = (ps.x * p.nKv + h) * p.headW;
  if (lid < ng) {
    var lo = 3.4028234663852886e38; var hi = -3.4028234663852886e38;
    for (var c = lid * p.G; c < (lid + 1u) * p.G; c++) { lo = min(lo, xs[c]); hi = max(hi, xs[c]); }
    let sh = f16_div(hi - lo, 15.0);
    let zh = f32_to_f16(lo);
    gsz[lid] = vec2<f32>(f16_to_f32(sh), f16_to_f32(zh));
    cache[base + select(p.kSZW, p.vSZW, which == 1u) + ps.y * ng + lid] = sh | (zh << 16u);
  }
  workgroupBarrier();
  if (lid < p.hd / 8u) {
    let sz = gsz[(lid * 8u) / p.G];
    var word = 0u;
    for (var e = 0u; e < 8u; e++) {
      var q = 0u;
      if (sz.x != 0.0) { q = u32(clamp(div_rne(xs[lid * 8u + e] - sz.y, sz.x), 0.0, 15.0)); }
      word = word | (q << (4u * e));
    }
    cache[base + select(p.kCodesW, p.vCodesW, which == 1u) + (ps.y * p.hd) / 8u + lid] = word;
  }
}
