// argmax.wgsl: first index of the maximum of each row, one workgroup of 256 per row (a vocabulary of 128K
// is 500 loads per invocation, 2000 with 64: one row is one workgroup's latency). Each invocation scans
// a strided slice (strict >, so its first max wins), then a tree keeps the larger value, the smaller index
// on ties: the result is the row's first maximum, as the simulator's.
struct P { C: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<i32>;

const WG = 256u;
var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = wg.x * p.C;
  var v = -3.4028234663852886e38;
  var vi = 0xffffffffu;
  // four loads in flight per invocation (a GPU otherwise waits out each load's latency in turn), compared in
  // ascending index order as one at a time would
  var c = lid;
  for (; c + 3u * WG < p.C; c = c + 4u * WG) {
    let e0 = x[o + c]; let e1 = x[o + c + WG]; let e2 = x[o + c + 2u * WG]; let e3 = x[o + c + 3u * WG];
    if (vi == 0xffffffffu || e0 > v) { v = e0; vi = c; }
    if (e1 > v) { v = e1; vi = c + WG; }
    if (e2 > v) { v = e2; vi = c + 2u * WG; }
    if (e3 > v) { v = e3; vi = c + 3u * WG; }
  }
  for (; c < p.C; c = c + WG) {
    let e = x[o + c];
    if (vi == 0xffffffffu || e > v) { v = e; vi = c; }
  }
  bv[lid] = v; bi[lid] = vi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let ov = bv[lid + s]; let oi = bi[lid + s];
      if (oi != 0xffffffffu && (bi[lid] == 0xffffffffu || ov > bv[lid] || (ov == bv[lid] && oi < bi[lid]))) { bv[lid] = ov; bi[lid] = oi; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { y[wg.x] = bitcast<i32>(bi[0]); }
}
