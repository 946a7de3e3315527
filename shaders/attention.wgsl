// attention.wgsl: softmax(q·k/sqrt(hd))·v over a sequence's pages, one workgroup of 64 per (token, head);
// GQA: head h reads KV head h / (nHeads/nKvHeads). Token t attends to positions 0..pos[t] of its sequence
// (prefill is causal by construction). Positions go in chunks of 1024 scores in workgroup memory with an
// online softmax across chunks (tier 3). KV4 pages are dequantized in registers: x' = q·s + z (q·s is exact,
// so fused or not the add gives the simulator's f32). Cache layouts: kv_append.wgsl.
struct P {
  T: u32, nHeads: u32, nKv: u32, hd: u32, P: u32, G: u32,
  posOff: u32, seqOff: u32, btoOff: u32,
  headW: u32, kCodesW: u32, vCodesW: u32, kSZW: u32, vSZW: u32,
  scale: f32,
};
override KV4: bool = false;
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> lay: array<u32>;
@group(0) @binding(3) var<storage, read> cache: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const CHUNK = 1024u;
var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, CHUNK>;

/** element d of the K (which = 0) or V (1) row of (page, kvh, slot) */
fn kv_at(which: u32, page: u32, kvh: u32, slot: u32, d: u32) -> f32 {
  if (KV4) {
    let ng = p.hd / p.G;
    let base = (page * p.nKv + kvh) * p.headW;
    let sz = cache[base + select(p.kSZW, p.vSZW, which == 1u) + slot * ng + d / p.G];
    let cw = cache[base + select(p.kCodesW, p.vCodesW, which == 1u) + (slot * p.hd + d) / 8u];
    let code = (cw >> (4u * (d & 7u))) & 0xfu;
    return f32(code) * f16_half(sz, 0u) + f16_half(sz, 1u);
  }
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

// One invocation per (token, head), online softmax over the positions in order, no workgroup memory and no
// barriers: for CPU adapters (SwiftShader), where barriers dominate. acc in registers (hd <= 256).
@compute @workgroup_size(64)
fn attention_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * 65535u * 64u;
  if (i >= p.T * p.nHeads) { return; }
  let t = i / p.nHeads; let h = i % p.nHeads;
  let kvh = h / (p.nHeads / p.nKv);
  let qo = (t * p.nHeads + h) * p.hd;
  let n = lay[p.posOff + t] + 1u;
  let bt = lay[p.btoOff + lay[p.seqOff + t]];
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
