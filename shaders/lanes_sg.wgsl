// lanes_sg.wgsl: lanes.wgsl's reductions with subgroups (the device has `subgroups` and WGSL `subgroup_id`; the
// host adds `enable subgroups; requires subgroup_id;` first). The same results bit for bit: the max is exact in any
// order, and the bfly below adds the same pairs in the same order as the contract's, only fewer of its levels go
// through workgroup memory and barriers (12 barriers a call in lanes.wgsl; here 1 plus 2 per level at or above the
// subgroup size S: 1 on NVIDIA and Apple (S = 32), 7 on SwiftShader (S = 4)).
struct Inv { @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_id) g: u32 }
struct Uni { @builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_size) sgs: u32, @builtin(num_subgroups) ng: u32 }

var<workgroup> sgmax: array<f32, 64>; // a subgroup's max [subgroup]
/** max over the 64 lanes' values: subgroupMax, then the subgroups' maxima (2 on NVIDIA; lanes.wgsl reads 64) */
fn lanes_max(v: f32, inv: Inv, u: Uni) -> f32 {
  let m = subgroupMax(v);
  if (inv.sid == 0u) { sgmax[inv.g] = m; }
  workgroupBarrier();
  var r = sgmax[0];
  for (var i = 1u; i < u.ng; i++) { r = max(r, sgmax[i]); }
  workgroupBarrier();
  return r;
}

var<workgroup> bx: array<vec2<f32>, 64>;
var<workgroup> by: array<vec2<f32>, 32>;
/** The contract's bfly over the 64 lanes' values x (x_j from lane lid = j), two at once (the attention's l and zs): y_i = x_i + x_{i+32}, then for o = 16 .. 1
 *  y_i = y_i + y_{i^o}. The invocation (subgroup g, lane s) plays i = (g·S + s) mod 32 (lanes 32-63 of that count
 *  repeat 0-31): levels o >= S pair invocations of different subgroups, through by; levels o < S pair two lanes of
 *  one subgroup (they differ below S), by subgroupShuffleXor. Each sum is the contract's pair in the contract's
 *  order (y_i + y_{i^o} and y_{i^o} + y_i are the same f32); every lane gets y_0. Two calls need a barrier between
 *  them (bx). */
fn lanes_bfly2(v: vec2<f32>, inv: Inv, u: Uni) -> vec2<f32> {
  bx[inv.lid] = v;
  workgroupBarrier();
  let k = inv.g * u.sgs + inv.sid;
  let i = k & 31u;
  var y = bx[i] + bx[i + 32u];
  for (var o = 16u; o > 0u; o = o >> 1u) {
    if (o >= u.sgs) {
      if (k < 32u) { by[i] = y; }
      workgroupBarrier();
      let yo = by[i ^ o];
      workgroupBarrier();
      y = y + yo;
    } else {
      y = y + subgroupShuffleXor(y, o);
    }
  }
  return y;
}
