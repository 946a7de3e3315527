// attention.wgsl: attention over a sequence's pages; GQA: head h reads KV head h / (nHeads/nKvHeads). Token t
// attends to positions 0..pos[t] of its sequence (prefill is causal by construction). Cache layouts: kv_append.wgsl.
// f32 cache (the float reference path): softmax(q·k/sqrt(hd))·v, one workgroup of 64 per (token, head), positions
// in chunks of 1024 scores in workgroup memory with an online softmax across chunks (tier 3); or attention_serial.
// KV4 cache: the contract of simulator/kernels/attention_kv4.ts (DESIGN §3.5.1) step by step: attention_kv4, one
// workgroup of 64 per (token, head), or at decode per (token, head, 64-key chunk) with attention_kv4_combine folding
// the chunks (below); or attention_kv4_serial, one invocation per (token, head) (CPU adapters). Its integer dot
// products are exact; its f32 ops are the contract's, in its order, but WGSL has no FMA control and divides to
// 2.5 ulp, so the outputs are tier 3 (relative error ~1e-7, test/ops.test.ts).
// At decode the split kernel can also do the step's rope_kv_append (ROPE = 1, below): one dispatch a layer fewer.
struct P {
  T: u32, nHeads: u32, nKv: u32, hd: u32, P: u32, G: u32,
  posOff: u32, seqOff: u32, btoOff: u32,
  headW: u32, kCodesW: u32, vCodesW: u32, kSZW: u32, vSZW: u32,
  scale: f32, // f32: 1/sqrt(hd); kv4: f32(log2(e)/sqrt(hd)) (the contract's KS)
  nChunks: u32, // attention_kv4 SPLIT = 1 and its combine: chunks per (token, head) in part (the grid's z)
};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> lay: array<u32>;
// read_write for attention_kv4 ROPE = 1, which stores the step's new keys (every other kernel only reads it; one
// declaration, as a binding's access is the module's and a dispatch may bind the cache once)
@group(0) @binding(3) var<storage, read_write> cache: array<u32>;
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

/** The contract's step 4 for the chunk at c0 (of n keys) with max m and sum l: folds it into the segment state
 *  st = (seg m, seg l, total m, total l), and at a segment's end (last) the segment into the total. A channel's
 *  num folds with the factors returned: seg = seg·fa + num·fb, then when last, tot = tot·ta + seg·tb. */
struct Fold { fa: f32, fb: f32, ta: f32, tb: f32, last: bool };
fn fold_chunk(c0: u32, n: u32, m: f32, l: f32, st: ptr<function, vec4<f32>>) -> Fold {
  let first = c0 % 128u == 0u;   // segments of 128 keys (KV4_SEG)
  let last = c0 + 64u >= n || (c0 + 64u) % 128u == 0u;
  var fa = 0.0; var fb = 1.0; var M = m;
  if (!first) { M = max((*st).x, m); fa = exp2c((*st).x - M); fb = exp2c(m - M); }
  (*st).y = (*st).y * fa + l * fb;
  (*st).x = M;
  var ta = 0.0; var tb = 1.0;
  if (last) {
    var TM = (*st).x;
    if (c0 >= 128u) { TM = max((*st).z, (*st).x); ta = exp2c((*st).z - TM); tb = exp2c((*st).x - TM); }
    (*st).w = (*st).w * ta + (*st).y * tb;
    (*st).z = TM;
  }
  return Fold(fa, fb, ta, tb, last);
}

// One invocation per (token, head) (CPU adapters: no barriers). A GPU runs attention_kv4 below.
@compute @workgroup_size(64)
fn attention_kv4_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
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
  var st = vec4<f32>(0.0); // the segment's (m, l) and the total's (m, l)
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
    let f = fold_chunk(c0, n, m, l, &st);
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
        seg[c] = seg[c] * f.fa + nc * f.fb;
        if (f.last) { tot[c] = tot[c] * f.ta + seg[c] * f.tb; }
      }
    }
  }
  for (var d = 0u; d < p.hd; d++) { y[qo + d] = tot[d] / st.w; }
}

// ---- KV4, one workgroup of 64 lanes per (token, head, and at decode chunk). A decode step has one token per
// sequence, so one invocation per head left the GPU with 32 threads walking every key alone (10 µs per key and
// layer on the H200), and one workgroup per head walking the chunks one after another left it 32 workgroups with ~25
// barriers a chunk each (38 µs a layer at 137 keys, LLaMA-3.2-1B). So at decode (SPLIT = 1) every (token, head,
// 64-key chunk) is a workgroup of its own: steps 1-3 of the contract, and the chunk's (m, l, num[hd]) to `part`;
// attention_kv4_combine then folds a (token, head)'s chunks in the contract's order (step 4: chunks into 128-key
// segments, segments into the total), which is the order the unsplit kernel (SPLIT = 0, prefill: T·nHeads
// workgroups are parallelism enough) folds them in as it walks them: the same ops on the same values. Inside a
// chunk, lanes are its 64 keys for the scores and the softmax (the contract's bfly is a 64-lane reduction), and
// (code word, key subset) pairs for P·V, whose integer sums are exact in any split.
var<workgroup> kq8: array<i32, 256>;   // q as INT8 [hd]
var<workgroup> kqg: array<i32, 32>;    // Q_g = Σ_{c∈g} q8_c [ng]
var<workgroup> ku: array<u32, 2048>;   // the chunk's 15-bit weights u [ng][64 keys]
var<workgroup> kdq: array<f32, 32>;    // dq_g
var<workgroup> kzs: array<f32, 32>;    // zs_g
var<workgroup> kA: array<u32, 512>;    // P·V partial sums [key subset][hd] (subsets · hd <= 64 · 8)
var<workgroup> nkv: array<u32, 128>;   // ROPE: the new key's cache words: K codes [hd/8] | V codes at 32 | K (s, z)
                                       // [ng] at 64 | V (s, z) at 96
// (the lanes' max and bfly: shaders/lanes.wgsl, or lanes_sg.wgsl with subgroups, prefixed by the host)

/** The (token, head) of a workgroup of attention_kv4 / _combine (grid T x nHeads [x chunks]): its KV head, q row
 *  offset, key count, block table, and the first of its chunks' slots in `part`. */
struct WHead { kvh: u32, qo: u32, n: u32, bt: u32, part: u32 }
fn whead(wg: vec3<u32>) -> WHead {
  let t = wg.x; let h = wg.y;
  return WHead(h / (p.nHeads / p.nKv), (t * p.nHeads + h) * p.hd, lay[p.posOff + t] + 1u, lay[p.btoOff + lay[p.seqOff + t]],
    (t * p.nHeads + h) * p.nChunks);
}

/** ROPE's f32 rows in kA, as bits (kA is free until kv4_chunk's P·V; an array of their own would grow every
 *  attention_kv4 pipeline's workgroup memory, since the shared functions below reference it): rope(q) [hd] for step 1, then the new key's
 *  rope(k) [hd] | v [hd] at 256 */
fn nx_set(i: u32, x: f32) { kA[i] = bitcast<u32>(x); }
fn nx(i: u32) -> f32 { return bitcast<f32>(kA[i]); }
/** element d of the workgroup's q row (at qo): ROPE = 1, rope(q) as kv4_rope_q left it (nx) */
fn q_at(qo: u32, d: u32) -> f32 {
  if (ROPE == 1u) { return nx(d); }
  return q[qo + d];
}
/** step 1 for the workgroup: q (row qo) to INT8 in kq8, Q_g in kqg; returns cs = sq · KS */
fn kv4_q8(qo: u32, inv: Inv, u: Uni) -> f32 {
  let lid = inv.lid;
  let ng = p.hd / p.G;
  var am = 0.0;
  for (var d = lid; d < p.hd; d += 64u) { am = max(am, abs(q_at(qo, d))); }
  let amax = lanes_max(am, inv, u);
  var rq = 0.0; var sq = 0.0;
  if (amax > 0.0) { rq = 127.0 / amax; sq = amax / 127.0; }
  for (var d = lid; d < p.hd; d += 64u) { kq8[d] = clamp(i32(round(q_at(qo, d) * rq)), -127, 127); }
  workgroupBarrier();
  if (lid < ng) {
    var s = 0;
    for (var c = lid * p.G; c < (lid + 1u) * p.G; c++) { s += kq8[c]; }
    kqg[lid] = s;
  }
  workgroupBarrier();
  return sq * p.scale;
}

/** A chunk's state (contract steps 2-3): its max m, sum l, and num of the lane's channels lid + 64·i. */
struct Chunk { m: f32, l: f32, nc: vec4<f32> }
/** steps 2-3 for the chunk of keys [c0, c0 + 64) ∩ [0, n) of KV head kvh (block table at bt); kq8, kqg ready */
fn kv4_chunk(c0: u32, n: u32, bt: u32, kvh: u32, cs: f32, inv: Inv, u: Uni) -> Chunk {
  let lid = inv.lid;
  let ng = p.hd / p.G;
  let W8 = p.hd / 8u;   // code words of a key row
  let KG = 64u / W8;    // P·V: lane = (word lid % W8, keys lid / W8 + KG·i)
  let nk = min(64u, n - c0);
  let live = lid < nk; // this lane's key c0 + lid
  let fresh = ROPE == 1u && c0 + lid == n - 1u; // ROPE: the lane's key is the step's new one, its row in nkv
  var base = 0u; var slot = 0u;
  if (live) { base = (lay[bt + (c0 + lid) / p.P] * p.nKv + kvh) * p.headW; slot = (c0 + lid) % p.P; }
  // 2. the lane's score
  var tj = -3.4028234663852886e38;
  if (live) {
    var dot = 0.0;
    for (var g = 0u; g < ng; g++) {
      var D = 0;
      for (var w = g * p.G / 8u; w < (g + 1u) * p.G / 8u; w++) {
        let cw = kv_word(base + p.kCodesW + slot * W8 + w, fresh, w);
        for (var e = 0u; e < 8u; e++) { D += kq8[w * 8u + e] * i32((cw >> (4u * e)) & 0xfu); }
      }
      let sz = kv_word(base + p.kSZW + slot * ng + g, fresh, 64u + g);
      dot = dot + (f16_half(sz, 0u) * f32(D) + f16_half(sz, 1u) * f32(kqg[g]));
    }
    tj = dot * cs;
  }
  let m = lanes_max(tj, inv, u);
  // 3. softmax; per V group: the 15-bit weights of the chunk's keys, Σ p·z and (group 0) l = Σ p, the two bflys in one
  var pj = 0.0;
  if (live) { pj = exp2c(tj - m); }
  var l = 0.0;
  for (var g = 0u; g < ng; g++) {
    var wj = 0.0; var zj = 0.0;
    if (live) {
      let sz = kv_word(base + p.vSZW + slot * ng + g, fresh, 96u + g);
      wj = pj * f16_half(sz, 0u); zj = pj * f16_half(sz, 1u);
    }
    let W = lanes_max(wj, inv, u); // >= 0: lanes past the chunk give 0, as the contract's max from 0 (and the barrier
                                   // between two lanes_bfly2)
    var r = 0.0; var dq = 0.0;
    if (W > 0.0) { r = 32767.0 / W; dq = W / 32767.0; }
    ku[g * 64u + lid] = select(0u, min(32767u, u32(round(wj * r))), W > 0.0);
    let zl = lanes_bfly2(vec2<f32>(zj, select(0.0, pj, g == 0u)), inv, u);
    if (g == 0u) { l = zl.y; }
    if (lid == 0u) { kdq[g] = dq; kzs[g] = zl.x; }
  }
  workgroupBarrier();
  // the channels' integer P·V: lane (word w, keys kg, kg + KG, ...) sums 8 channels, then the subsets are added
  let w = lid % W8; let kg = lid / W8;
  if (kg < KG) {
    let ug = ((w * 8u) / p.G) * 64u;
    var a = array<u32, 8>(0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
    for (var j = kg; j < nk; j += KG) {
      let cw = kv_word((lay[bt + (c0 + j) / p.P] * p.nKv + kvh) * p.headW + p.vCodesW + ((c0 + j) % p.P) * W8 + w,
        ROPE == 1u && c0 + j == n - 1u, 32u + w);
      let uu = ku[ug + j];
      for (var e = 0u; e < 8u; e++) { a[e] += uu * ((cw >> (4u * e)) & 0xfu); }
    }
    for (var e = 0u; e < 8u; e++) { kA[kg * p.hd + w * 8u + e] = a[e]; }
  }
  workgroupBarrier();
  var nc = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let c = lid + 64u * i;
    if (c < p.hd) {
      var A = 0u;
      for (var k = 0u; k < KG; k++) { A += kA[k * p.hd + c]; }
      let g = c / p.G;
      nc[i] = f32(A) * kdq[g] + kzs[g];
    }
  }
  if (SPLIT == 0u) { workgroupBarrier(); } // ku, kA, kdq, kzs are the next chunk's (SPLIT = 1: one chunk a workgroup)
  return Chunk(m, l, nc);
}

/** step 4 on the lane's channels: the chunk's num into the segment by the factors of fold_chunk, and at a segment's
 *  end the segment into the total (st and these, the state of attention_kv4 and of attention_kv4_combine) */
fn fold_nums(f: Fold, nc: vec4<f32>, seg: ptr<function, vec4<f32>>, tot: ptr<function, vec4<f32>>) {
  *seg = *seg * f.fa + nc * f.fb;
  if (f.last) { *tot = *tot * f.ta + *seg * f.tb; }
}
/** step 5: out_c = num_c / l for the lane's channels */
fn kv4_out(qo: u32, tot: vec4<f32>, l: f32, lid: u32) {
  for (var i = 0u; i < 4u; i++) { let c = lid + 64u * i; if (c < p.hd) { y[qo + c] = tot[i] / l; } }
}

// part (SPLIT = 1): per (token, head, chunk) [T][nHeads][nChunks] the chunk's m, l, then num [hd] (hd + 2 floats)
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
override SPLIT: u32 = 0u;

// ---- ROPE = 1 (attention_kv4_rope, SPLIT = 1; a decode step: one token per sequence): kv_append.wgsl's
// rope_kv_append folded into the split. q is the raw q [T][nHeads·hd]; k, v [T][nKv·hd] are the step's new keys and
// values, not in the cache yet. Each workgroup (t, h, z) ropes its q head on load; the workgroups whose chunk holds
// the new key (position n - 1) quantize its K and V rows as append_kv4_wg does (the same ops on the same values: the
// same bytes) into nkv and read that key's words from there instead of the cache; of those, the one of q head
// h % (nHeads/nKv) == 0 stores them in the cache, one workgroup per (token, KV head). No other workgroup reads that
// slot (other chunks hold older keys only; a sequence's new slot is in a page of its own), so nothing in the dispatch
// races on the cache. The host folds only where each token is its own sequence (webgpu.ts ropeKvAppend). rope(q) is
// rope.wgsl's and kv_append.wgsl's rope_rot over the same (cos, sin) table: q' has the bits rope_kv_append stores.
override ROPE: u32 = 0u;
@group(0) @binding(6) var<storage, read> kx: array<f32>;      // ROPE: k [T][nKv·hd]
@group(0) @binding(7) var<storage, read> vx: array<f32>;      // ROPE: v [T][nKv·hd]
@group(0) @binding(8) var<storage, read> rope_cs: array<f32>; // ROPE: (cos, sin) [T][hd/2][2]

/** cache word i, or (fresh: the step's new key) word j of nkv: the slot being stored in this dispatch is never read */
fn kv_word(i: u32, fresh: bool, j: u32) -> u32 {
  if (fresh) { return nkv[j]; }
  return cache[i];
}

/** ROPE: rope(q) of the q row at qo (token t) into nx [0, hd), as kv_append.wgsl rope_q rotates it */
fn kv4_rope_q(t: u32, qo: u32, lid: u32) {
  let half = p.hd / 2u;
  for (var i = lid; i < half; i += 64u) {
    let ci = (t * half + i) * 2u;
    let r = rope_rot(q[qo + 2u * i], q[qo + 2u * i + 1u], rope_cs[ci], rope_cs[ci + 1u]);
    nx_set(2u * i, r.x); nx_set(2u * i + 1u, r.y);
  }
  workgroupBarrier();
}

/** ROPE: token t's new K (rotated) and V rows of KV head kvh quantized into nkv, append_kv4_wg's steps: lanes 0-31 do
 *  K and 32-63 V; lane g < ng of each half finds group g's range (in channel order) and (s, z), then lane w < hd/8
 *  packs code word w. */
fn kv4_new(t: u32, kvh: u32, lid: u32) {
  let half = p.hd / 2u; let ng = p.hd / p.G;
  let xo = t * p.nKv * p.hd + kvh * p.hd;
  for (var c = 2u * lid; c < p.hd; c += 128u) {
    let ci = (t * half + c / 2u) * 2u;
    let k = rope_rot(kx[xo + c], kx[xo + c + 1u], rope_cs[ci], rope_cs[ci + 1u]);
    nx_set(c, k.x); nx_set(c + 1u, k.y);
    nx_set(256u + c, vx[xo + c]); nx_set(256u + c + 1u, vx[xo + c + 1u]);
  }
  workgroupBarrier();
  let which = lid / 32u; let i = lid % 32u; let xb = 256u * which;
  if (i < ng) {
    var lo = 3.4028234663852886e38; var hi = -3.4028234663852886e38;
    for (var c = i * p.G; c < (i + 1u) * p.G; c++) { lo = min(lo, nx(xb + c)); hi = max(hi, nx(xb + c)); }
    nkv[64u + 32u * which + i] = f16_div(hi - lo, 15.0) | (f32_to_f16(lo) << 16u);
  }
  workgroupBarrier();
  if (i < p.hd / 8u) {
    let sz = nkv[64u + 32u * which + (i * 8u) / p.G];
    let s = f16_half(sz, 0u); let z = f16_half(sz, 1u);
    var word = 0u;
    for (var e = 0u; e < 8u; e++) {
      var code = 0u;
      if (s != 0.0) { code = u32(clamp(div_rne(nx(xb + i * 8u + e) - z, s), 0.0, 15.0)); }
      word = word | (code << (4u * e));
    }
    nkv[32u * which + i] = word;
  }
  workgroupBarrier();
}

/** ROPE: nkv's words into the cache at token t's (page, slot) for KV head kvh, where append_kv4_wg stores them */
fn kv4_store(t: u32, kvh: u32, bt: u32, lid: u32) {
  let W8 = p.hd / 8u; let ng = p.hd / p.G;
  let pos = lay[p.posOff + t];
  let base = (lay[bt + pos / p.P] * p.nKv + kvh) * p.headW; let slot = pos % p.P;
  for (var j = lid; j < 128u; j += 64u) {
    let r = j / 32u; let w = j % 32u;
    if (w < select(ng, W8, r < 2u)) {
      var at = p.kCodesW + slot * W8;
      if (r == 1u) { at = p.vCodesW + slot * W8; }
      else if (r == 2u) { at = p.kSZW + slot * ng; }
      else if (r == 3u) { at = p.vSZW + slot * ng; }
      cache[base + at + w] = nkv[j];
    }
  }
}

@compute @workgroup_size(64)
fn attention_kv4(inv: Inv, u: Uni) {
  let wg = u.wg; let lid = inv.lid;
  let r = whead(wg);
  if (SPLIT == 1u) {
    // grid z: the chunk at 64·z (z past the sequence's keys: nothing; the combine stops at n)
    let c0 = wg.z * 64u;
    if (c0 >= r.n) { return; }
    kv4_part(r, wg.z, kv4_chunk(c0, r.n, r.bt, r.kvh, kv4_q8(r.qo, inv, u), inv, u), lid);
    return;
  }
  let cs = kv4_q8(r.qo, inv, u);
  var seg = vec4<f32>(0.0); var tot = vec4<f32>(0.0); // channels lid + 64·i
  var st = vec4<f32>(0.0); // the segment's (m, l) and the total's (m, l)
  for (var c0 = 0u; c0 < r.n; c0 += 64u) {
    let ch = kv4_chunk(c0, r.n, r.bt, r.kvh, cs, inv, u);
    fold_nums(fold_chunk(c0, r.n, ch.m, ch.l, &st), ch.nc, &seg, &tot);
  }
  kv4_out(r.qo, tot, st.w, lid);
}

/** SPLIT = 1: chunk z's state (m, l, num) into part */
fn kv4_part(r: WHead, z: u32, ch: Chunk, lid: u32) {
  let o = (r.part + z) * (p.hd + 2u);
  if (lid == 0u) { part[o] = ch.m; part[o + 1u] = ch.l; }
  for (var i = 0u; i < 4u; i++) { let c = lid + 64u * i; if (c < p.hd) { part[o + 2u + c] = ch.nc[i]; } }
}

/** attention_kv4 SPLIT = 1 with the step's rope_kv_append (pipeline constants SPLIT = 1, ROPE = 1; section ROPE
 *  above): an entry point of its own, so that only its pipeline binds k, v and the RoPE table (8 storage buffers). */
@compute @workgroup_size(64)
fn attention_kv4_rope(inv: Inv, u: Uni) {
  let wg = u.wg; let lid = inv.lid;
  let r = whead(wg);
  let c0 = wg.z * 64u;
  if (c0 >= r.n) { return; }
  kv4_rope_q(wg.x, r.qo, lid);
  let cs = kv4_q8(r.qo, inv, u);
  if (c0 + 64u >= r.n) { // the chunk holds the new key (n - 1)
    kv4_new(wg.x, r.kvh, lid);
    if (wg.y % (p.nHeads / p.nKv) == 0u) { kv4_store(wg.x, r.kvh, r.bt, lid); }
  }
  kv4_part(r, wg.z, kv4_chunk(c0, r.n, r.bt, r.kvh, cs, inv, u), lid);
}

/** SPLIT = 1's second dispatch, one workgroup of 64 per (token, head): its chunks' states folded in order. */
@compute @workgroup_size(64)
fn attention_kv4_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = whead(wg);
  var seg = vec4<f32>(0.0); var tot = vec4<f32>(0.0);
  var st = vec4<f32>(0.0);
  for (var c0 = 0u; c0 < r.n; c0 += 64u) {
    let o = (r.part + c0 / 64u) * (p.hd + 2u);
    var nc = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) { let c = lid + 64u * i; if (c < p.hd) { nc[i] = part[o + 2u + c]; } }
    fold_nums(fold_chunk(c0, r.n, part[o], part[o + 1u], &st), nc, &seg, &tot);
  }
  kv4_out(r.qo, tot, st.w, lid);
}
