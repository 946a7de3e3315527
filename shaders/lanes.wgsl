// lanes.wgsl: the reductions over a workgroup's 64 lanes that the KV4 attention needs (its max and the contract's
// bfly), without subgroups (the adapter or the browser lacks the `subgroups` feature or WGSL's subgroup_id);
// shaders/lanes_sg.wgsl is the same with them. The host prefixes one of the two to attention.wgsl (shaders.ts), so
// the entry points take their builtins as these two structs: Inv (per invocation) and Uni (uniform across the
// workgroup: loop bounds around barriers may depend on it).
struct Inv { @builtin(local_invocation_index) lid: u32 }
struct Uni { @builtin(workgroup_id) wg: vec3<u32> }

/** max over the 64 lanes' values (exact in any order) */
fn lanes_max(v: f32, inv: Inv, u: Uni) -> f32 { return wg_max(v, inv.lid); }

var<workgroup> bx: array<vec2<f32>, 64>;
var<workgroup> by: array<vec2<f32>, 32>;
/** the contract's bfly over the 64 lanes' values, two at once (the attention's l and zs: the same pairs, in x and y),
 *  lane by lane as the TS (each sum in one lane; y_i + y_{i^o} and y_{i^o} + y_i are the same f32): every lane gets
 *  y_0. Two calls need a barrier between them (bx). */
fn lanes_bfly2(v: vec2<f32>, inv: Inv, u: Uni) -> vec2<f32> {
  let lid = inv.lid;
  bx[lid] = v;
  workgroupBarrier();
  if (lid < 32u) { by[lid] = bx[lid] + bx[lid + 32u]; }
  workgroupBarrier();
  for (var o = 16u; o > 0u; o = o >> 1u) {
    var s = vec2<f32>(0.0);
    if (lid < 32u) { s = by[lid] + by[lid ^ o]; }
    workgroupBarrier();
    if (lid < 32u) { by[lid] = s; }
    workgroupBarrier();
  }
  return by[0]; // the next writer of by is past at least one more barrier
}
