// kv_append.wgsl: k, v [T][nKvHeads·headDim] -> the pages of one layer (the host binds that layer's range).
//   f32 cache, per layer: (page, nKvHeads, P, headDim) f32 words.
//   kv4 cache: byte for byte the simulator's KVStoreKV4 (simulator/kv4.ts): chunk (page, head) of headBytes
//     = kCodes u4x2 [P][hd/2] | vCodes | kSZ f16 (s, z) [P][hd/G] | vSZ; offsets come from kv4Layout.
//   KV4 group: lo, hi over G channels; s = f16((hi - lo)/15), z = f16(lo) (exact quotients, common.wgsl);
//   q = clamp(roundHalfEven((x - z)/s), 0, 15). The simulator rounds f32(x - z)/s to f32 before rounding
//   to an integer: the two differ only where that f32 rounding lands exactly on a half (tier 2, measured).
// The step layout (pos [T], seq [T], per-sequence offset of its block table, block tables) is in `lay`.
struct P {
  T: u32, nKv: u32, hd: u32, P: u32, G: u32,
  posOff: u32, seqOff: u32, btoOff: u32,
  headW: u32, kCodesW: u32, vCodesW: u32, kSZW: u32, vSZW: u32, // kv4 word offsets
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> kx: array<f32>;
@group(0) @binding(2) var<storage, read> vx: array<f32>;
@group(0) @binding(3) var<storage, read> lay: array<u32>;
@group(0) @binding(4) var<storage, read_write> cache: array<u32>;

/** (page, slot) of token t */
fn place(t: u32) -> vec2<u32> {
  let pos = lay[p.posOff + t];
  let bt = lay[p.btoOff + lay[p.seqOff + t]];
  return vec2<u32>(lay[bt + pos / p.P], pos % p.P);
}

@compute @workgroup_size(256)
fn append_f32(@builtin(global_invocation_id) g: vec3<u32>) {
  let C = p.nKv * p.hd;
  let i = g.x + g.y * 65535u * 256u;
  if (i >= p.T * C) { return; }
  let t = i / C; let c = i % C;
  let ps = place(t);
  let o = ((ps.x * p.nKv + c / p.hd) * p.P + ps.y) * p.hd + c % p.hd;
  let L = arrayLength(&cache) / 2u; // K half | V half of this layer's range
  cache[o] = bitcast<u32>(kx[i]);
  cache[L + o] = bitcast<u32>(vx[i]);
}

@compute @workgroup_size(64)
fn append_kv4(@builtin(global_invocation_id) g: vec3<u32>) {
  let ng = p.hd / p.G;
  let i = g.x + g.y * 65535u * 64u;
  if (i >= p.T * p.nKv * 2u * ng) { return; }
  let gi = i % ng; let which = (i / ng) % 2u; let h = (i / (2u * ng)) % p.nKv; let t = i / (2u * ng * p.nKv);
  let ps = place(t);
  let xo = t * p.nKv * p.hd + h * p.hd + gi * p.G;
  var lo = 3.4028234663852886e38; var hi = -3.4028234663852886e38;
  for (var c = 0u; c < p.G; c++) {
    let v = select(kx[xo + c], vx[xo + c], which == 1u);
    lo = min(lo, v); hi = max(hi, v);
  }
  let sh = f16_div(hi - lo, 15.0);
  let zh = f32_to_f16(lo);
  let s = f16_to_f32(sh); let z = f16_to_f32(zh);
  let base = (ps.x * p.nKv + h) * p.headW;
  cache[base + select(p.kSZW, p.vSZW, which == 1u) + ps.y * ng + gi] = sh | (zh << 16u);
  let co = base + select(p.kCodesW, p.vCodesW, which == 1u) + (ps.y * p.hd + gi * p.G) / 8u;
  for (var wi = 0u; wi < p.G / 8u; wi++) {
    var word = 0u;
    for (var e = 0u; e < 8u; e++) {
      let v = select(kx[xo + wi * 8u + e], vx[xo + wi * 8u + e], which == 1u);
      var q = 0u;
      if (s != 0.0) { q = u32(clamp(div_rne(v - z, s), 0.0, 15.0)); }
      word = word | (q << (4u * e));
    }
    cache[co + wi] = word;
  }
}

// KV4, one workgroup of 64 per (token, KV head, K or V) (grid T x 2·nKv; GPUs): lane c holds channels c + 64·i,
// lanes g < hd/G find their group's range, lanes w < hd/8 pack code word w. append_kv4 above (one invocation per
// group walking its G channels twice) stays for CPU adapters; both store the same bytes.
var<workgroup> xs: array<f32, 256>;   // the row [hd]
var<workgroup> gsz: array<vec2<f32>, 32>; // (s, z) of each group as f32

@compute @workgroup_size(64)
fn append_kv4_wg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.x; let h = wg.y / 2u; let which = wg.y % 2u;
  let ng = p.hd / p.G;
  let xo = t * p.nKv * p.hd + h * p.hd;
  for (var c = lid; c < p.hd; c += 64u) { if (which == 1u) { xs[c] = vx[xo + c]; } else { xs[c] = kx[xo + c]; } }
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
