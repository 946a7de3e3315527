// argmax.wgsl: first index of the maximum of each row. A row of C <= CH columns is one workgroup of 256 (argmax);
// a longer one (a 128K vocabulary) is cut into parts of CH = 4096 columns, a workgroup each (argmax_part: 16 loads
// per invocation, where one workgroup per row made it 500 and a step waited ~50 µs on it on the H200), whose
// (max, first index) argmax then reduces (PARTS = 1). Each invocation scans a strided slice (strict >, so its
// first max wins), then a tree keeps the larger value, the smaller index on ties: the result is the row's first
// maximum, as the simulator's, in both forms (the parts are disjoint ranges in ascending order).
struct P { C: u32, CH: u32, parts: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<i32>;
// the parts' (max as f32 bits, its index) [R][parts][2] (argmax_part writes, argmax PARTS = 1 reads; else a dummy)
@group(0) @binding(3) var<storage, read_write> part: array<u32>;
override PARTS: u32 = 0u;

const WG = 256u;
var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

/** the first max of x[o + c] over c in [c0, c1) this invocation sees (stride WG); index 0xffffffff: none */
fn scan(o: u32, c0: u32, c1: u32, lid: u32) -> vec2<u32> {
  var v = -3.4028234663852886e38;
  var vi = 0xffffffffu;
  // four loads in flight per invocation (a GPU otherwise waits out each load's latency in turn), compared in
  // ascending index order as one at a time would
  var c = c0 + lid;
  for (; c + 3u * WG < c1; c = c + 4u * WG) {
    let e0 = x[o + c]; let e1 = x[o + c + WG]; let e2 = x[o + c + 2u * WG]; let e3 = x[o + c + 3u * WG];
    if (vi == 0xffffffffu || e0 > v) { v = e0; vi = c; }
    if (e1 > v) { v = e1; vi = c + WG; }
    if (e2 > v) { v = e2; vi = c + 2u * WG; }
    if (e3 > v) { v = e3; vi = c + 3u * WG; }
  }
  for (; c < c1; c = c + WG) {
    let e = x[o + c];
    if (vi == 0xffffffffu || e > v) { v = e; vi = c; }
  }
  return vec2<u32>(bitcast<u32>(v), vi);
}

/** the workgroup's (value bits, first index) of the invocations' candidates (index 0xffffffff: none) */
fn tree(cand: vec2<u32>, lid: u32) -> vec2<u32> {
  bv[lid] = bitcast<f32>(cand.x); bi[lid] = cand.y;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let ov = bv[lid + s]; let oi = bi[lid + s];
      if (oi != 0xffffffffu && (bi[lid] == 0xffffffffu || ov > bv[lid] || (ov == bv[lid] && oi < bi[lid]))) { bv[lid] = ov; bi[lid] = oi; }
    }
    workgroupBarrier();
  }
  return vec2<u32>(bitcast<u32>(bv[0]), bi[0]);
}

@compute @workgroup_size(WG)
fn argmax_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c0 = wg.x * p.CH;
  let r = tree(scan(wg.y * p.C, c0, min(p.C, c0 + p.CH), lid), lid);
  if (lid == 0u) { let o = 2u * (wg.y * p.parts + wg.x); part[o] = r.x; part[o + 1u] = r.y; }
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var cand: vec2<u32>;
  if (PARTS == 1u) {
    // the parts in ascending order, strided as scan does (strict >: the first of equal maxima wins)
    cand = vec2<u32>(bitcast<u32>(-3.4028234663852886e38), 0xffffffffu);
    for (var i = lid; i < p.parts; i = i + WG) {
      let o = 2u * (wg.x * p.parts + i);
      if (cand.y == 0xffffffffu || bitcast<f32>(part[o]) > bitcast<f32>(cand.x)) { cand = vec2<u32>(part[o], part[o + 1u]); }
    }
  } else { cand = scan(wg.x * p.C, 0u, p.C, lid); }
  let r = tree(cand, lid);
  if (lid == 0u) { y[wg.x] = bitcast<i32>(r.y); }
}
