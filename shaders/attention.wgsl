// attention.wgsl: attention over a sequence's pages; GQA: head h reads KV head h / (nHeads/nKvHeads). Token t
// attends to positions 0..pos[t] of its sequence (prefill is causal by construction). Cache layouts: kv_append.wgsl.
// f32 cache (the float reference path): softmax(q·k/sqrt(hd))·v, one workgroup of 64 per (token, head), positions
// in chunks of 1024 scores in workgroup memory with an online softmax across chunks (tier 3); or attention_serial.
// KV4 cache: attention_kv4, the contract of simulator/kernels/attention_kv4.ts (DESIGN §3.5.1) step by step, one
// invocation per (token, head). Its integer dot products are exact; its f32 ops are the contract's, but WGSL has no
// FMA control and divides to 2.5 ulp, so the outputs are tier 3 (relative error ~1e-7, test/ops.test.ts).
struct P {
  T: u32, nHeads: u32, nKv: u32, hd: u32, P: u32, G: u32,
  posOff: u32, seqOff: u32, btoOff: u32,
  headW: u32, kCodesW: u32, vCodesW: u32, kSZW: u32, vSZW: u32,
  scale: f32, // f32: 1/sqrt(hd); kv4: f32(log2(e)/sqrt(hd)) (the contract's KS)
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> lay: array<u32>;
@group(0) @binding(3) var<storage, read> cache: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const CHUNK = 1024u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, CHUNK>;

/** element d of the K (which = 0) or V (1) row of (page, kvh, slot), f32 cache */
fn kv_at(which: u32, page: u32, kvh: u32, slot: u32, d: u32) -> f32 {
  let L = arrayLength(&cache) / 2u;
  return bitcast<f32>(cache[which * L + ((page * p.nKv + kvh) * p.P + slot) * p.hd + d]);
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wg.x; let h = wg.y;
  let kvh = h / (p.nHeads / p.nKv);
  let qo = (t * p.nHeads + h) * p.hd;
  for (var d = lid; d < p.hd; d = d + 64u) { qs[d] = q[qo + d]; }
  workgroupBarrier();
  let n = lay[p.posOff + t] + 1u;
  let bt = lay[p.btoOff + lay[p.seqOff + t]];
  var mx = -3.4028234663852886e38;
  var l = 0.0;
  var acc = vec4<f32>(0.0); // output dims lid + 64·i (hd <= 256)
  for (var c0 = 0u; c0 < n; c0 = c0 + CHUNK) {
    let cn = min(CHUNK, n - c0);
    var cmax = -3.4028234663852886e38;
    for (var j = lid; j < cn; j = j + 64u) {
      let pos = c0 + j;
      let page = lay[bt + pos / p.P]; let slot = pos % p.P;
      var s = 0.0;
      for (var d = 0u; d < p.hd; d++) { s = s + qs[d] * kv_at(0u, page, kvh, slot, d); }
      s = s * p.scale;
      sc[j] = s;
      cmax = max(cmax, s);
    }
    let m2 = max(mx, wg_max(cmax, lid));
    var part = 0.0;
    for (var j = lid; j < cn; j = j + 64u) { let e = exp(sc[j] - m2); sc[j] = e; part = part + e; }
    let csum = wg_sum(part, lid); // (its barriers also publish sc)
    let r = exp(mx - m2);
    l = l * r + csum;
    acc = acc * r;
    for (var j = 0u; j < cn; j++) {
      let pos = c0 + j;
      let page = lay[bt + pos / p.P]; let slot = pos % p.P;
      for (var i = 0u; i < 4u; i++) {
        let d = lid + 64u * i;
        if (d < p.hd) { acc[i] = acc[i] + sc[j] * kv_at(1u, page, kvh, slot, d); }
      }
    }
    mx = m2;
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) { let d = lid + 64u * i; if (d < p.hd) { y[qo + d] = acc[i] / l; } }
}

/** The (token, head) of an invocation of the one-per-(token, head) kernels (live: not past the last): its KV head,
 *  q row offset, key count and block table. */
struct Head { live: bool, kvh: u32, qo: u32, n: u32, bt: u32 }
fn head_of(gid: vec3<u32>) -> Head {
  let i = gid.x + gid.y * 65535u * 64u;
  if (i >= p.T * p.nHeads) { return Head(false, 0u, 0u, 0u, 0u); }
  let t = i / p.nHeads; let h = i % p.nHeads;
  return Head(true, h / (p.nHeads / p.nKv), (t * p.nHeads + h) * p.hd, lay[p.posOff + t] + 1u, lay[p.btoOff + lay[p.seqOff + t]]);
}

// One invocation per (token, head), online softmax over the positions in order, no workgroup memory and no
// barriers: for CPU adapters (SwiftShader), where barriers dominate. acc in registers (hd <= 256).
@compute @workgroup_size(64)
fn attention_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = head_of(gid);
  if (!r.live) { return; }
  let kvh = r.kvh; let qo = r.qo; let n = r.n; let bt = r.bt;
  var acc: array<f32, 256>;
  for (var d = 0u; d < p.hd; d++) { acc[d] = 0.0; }
  var mx = -3.4028234663852886e38;
  var l = 0.0;
  for (var j = 0u; j < n; j++) {
    let page = lay[bt + j / p.P]; let slot = j % p.P;
    var s = 0.0;
    for (var d = 0u; d < p.hd; d++) { s = s + q[qo + d] * kv_at(0u, page, kvh, slot, d); }
    s = s * p.scale;
    let m2 = max(mx, s);
    let r = exp(mx - m2); let e = exp(s - m2);
    l = l * r + e;
    for (var d = 0u; d < p.hd; d++) { acc[d] = acc[d] * r + e * kv_at(1u, page, kvh, slot, d); }
    mx = m2;
  }
  for (var d = 0u; d < p.hd; d++) { y[qo + d] = acc[d] / l; }
}

// ---- KV4: the contract (simulator/kernels/attention_kv4.ts) -------------------------------------------------
/** KV4 code (0..15) of channel d of the K (which = 0) or V (1) row of (page, kvh, slot) */
fn kv4_code(which: u32, page: u32, kvh: u32, slot: u32, d: u32) -> u32 {
  let cw = cache[(page * p.nKv + kvh) * p.headW + select(p.kCodesW, p.vCodesW, which == 1u) + (slot * p.hd + d) / 8u];
  return (cw >> (4u * (d & 7u))) & 0xfu;
}
/** the (s, z) f16 pair of group g of that row, as one word */
fn kv4_sz(which: u32, page: u32, kvh: u32, slot: u32, g: u32) -> u32 {
  return cache[(page * p.nKv + kvh) * p.headW + select(p.kSZW, p.vSZW, which == 1u) + slot * (p.hd / p.G) + g];
}
/** the contract's exp2c: 2^round(x) · poly(x - round(x)) for -125 <= x (<= 0), else 0 */
fn exp2c(x: f32) -> f32 {
  if (!(x >= -125.0)) { return 0.0; }
  let n = round(x);
  let f = x - n;
  var r = 0.000153375775;
  r = r * f + 0.00133998599;
  r = r * f + 0.00961851981;
  r = r * f + 0.0555032901;
  r = r * f + 0.240226462;
  r = r * f + 0.693147182;
  r = r * f + 1.0;
  return ldexp(r, i32(n));
}
/** the contract's bfly: y_i = x_i + x_{i+32}, then the 32-lane xor butterfly; lane 0's value */
fn bfly64(x: ptr<function, array<f32, 64>>) -> f32 {
  var y: array<f32, 32>;
  for (var i = 0u; i < 32u; i++) { y[i] = (*x)[i] + (*x)[i + 32u]; }
  for (var o = 16u; o > 0u; o = o >> 1u) {
    for (var i = 0u; i < 32u; i++) {
      let k = i ^ o;
      if (i < k) { let s = y[i] + y[k]; y[i] = s; y[k] = s; }
    }
  }
  return y[0];
}

@compute @workgroup_size(64)
fn attention_kv4(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = head_of(gid);
  if (!r.live) { return; }
  let kvh = r.kvh; let qo = r.qo; let n = r.n; let bt = r.bt;
  let ng = p.hd / p.G;
  // 1. q to INT8
  var amax = 0.0;
  for (var d = 0u; d < p.hd; d++) { amax = max(amax, abs(q[qo + d])); }
  var rq = 0.0; var sq = 0.0;
  if (amax > 0.0) { rq = 127.0 / amax; sq = amax / 127.0; }
  let cs = sq * p.scale;
  var q8: array<i32, 256>; var qg: array<i32, 128>;
  for (var g = 0u; g < ng; g++) { qg[g] = 0; }
  for (var d = 0u; d < p.hd; d++) { q8[d] = clamp(i32(round(q[qo + d] * rq)), -127, 127); qg[d / p.G] += q8[d]; }
  var seg: array<f32, 256>; var tot: array<f32, 256>;
  for (var d = 0u; d < p.hd; d++) { seg[d] = 0.0; tot[d] = 0.0; }
  var sm = 0.0; var sl = 0.0; var tm = 0.0; var tl = 0.0;
  var tt: array<f32, 64>; var pp: array<f32, 64>; var ww: array<f32, 64>; var zt: array<f32, 64>; var u: array<u32, 64>;
  for (var c0 = 0u; c0 < n; c0 += 64u) {
    let nk = min(64u, n - c0);
    // 2. scores of the chunk
    var m = -3.4028234663852886e38;
    for (var j = 0u; j < nk; j++) {
      let page = lay[bt + (c0 + j) / p.P]; let slot = (c0 + j) % p.P;
      var dot = 0.0;
      for (var g = 0u; g < ng; g++) {
        var D = 0;
        for (var c = g * p.G; c < (g + 1u) * p.G; c++) { D += q8[c] * i32(kv4_code(0u, page, kvh, slot, c)); }
        let sz = kv4_sz(0u, page, kvh, slot, g);
        dot = dot + (f16_half(sz, 0u) * f32(D) + f16_half(sz, 1u) * f32(qg[g]));
      }
      tt[j] = dot * cs;
      m = max(m, tt[j]);
    }
    // 3. softmax, l, and the fold factors (chunk -> segment; at a segment's end segment -> total)
    for (var j = 0u; j < 64u; j++) { pp[j] = select(0.0, exp2c(tt[j] - m), j < nk); }
    let l = bfly64(&pp);
    let first = c0 % 128u == 0u;   // segments of 128 keys (KV4_SEG)
    let last = c0 + 64u >= n || (c0 + 64u) % 128u == 0u;
    var fa = 0.0; var fb = 1.0; var M = m;
    if (!first) { M = max(sm, m); fa = exp2c(sm - M); fb = exp2c(m - M); }
    sl = sl * fa + l * fb;
    sm = M;
    var ta = 0.0; var tb = 1.0;
    if (last) {
      var TM = sm;
      if (c0 >= 128u) { TM = max(tm, sm); ta = exp2c(tm - TM); tb = exp2c(sm - TM); }
      tl = tl * ta + sl * tb;
      tm = TM;
    }
    // per V group: 15-bit weights, Σ p·z, then the channels' integer P·V, folded
    for (var g = 0u; g < ng; g++) {
      var W = 0.0;
      for (var j = 0u; j < 64u; j++) {
        ww[j] = 0.0; zt[j] = 0.0;
        if (j < nk) {
          let sz = kv4_sz(1u, lay[bt + (c0 + j) / p.P], kvh, (c0 + j) % p.P, g);
          ww[j] = pp[j] * f16_half(sz, 0u);
          zt[j] = pp[j] * f16_half(sz, 1u);
        }
        W = max(W, ww[j]);
      }
      var r = 0.0; var dq = 0.0;
      if (W > 0.0) { r = 32767.0 / W; dq = W / 32767.0; }
      for (var j = 0u; j < 64u; j++) { u[j] = select(0u, min(32767u, u32(round(ww[j] * r))), W > 0.0); }
      let zs = bfly64(&zt);
      for (var c = g * p.G; c < (g + 1u) * p.G; c++) {
        var A = 0u;
        for (var j = 0u; j < nk; j++) { A += u[j] * kv4_code(1u, lay[bt + (c0 + j) / p.P], kvh, (c0 + j) % p.P, c); }
        let nc = f32(A) * dq + zs;
        seg[c] = seg[c] * fa + nc * fb;
        if (last) { tot[c] = tot[c] * ta + seg[c] * tb; }
      }
    }
  }
  for (var d = 0u; d < p.hd; d++) { y[qo + d] = tot[d] / tl; }
}
