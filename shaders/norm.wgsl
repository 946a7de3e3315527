// norm.wgsl: RMSNorm as llama2.c: ss = Σx²; inv = 1/sqrt(ss/C + eps); y = w·(x·inv). One workgroup of 64
// per row; the f32 sum's tree is this kernel's (tier 3). quant.wgsl (MODE 1) computes ss and inv with the
// same loop and wg_sum, so rmsnorm_quant's f32 values are rmsnorm's, bit for bit.
// ADD = 1 (add_rmsnorm, the float path's residual add folded into the next norm): the row is s = x + r
// (elementwise.wgsl's add, one f32 add), written to so, and normed as rmsnorm norms s; ADD = 0 binds dummies.

struct P { C: u32, eps: f32 };
override ADD: u32 = 0u;
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>; // [T][C]
@group(0) @binding(2) var<storage, read> w: array<f32>; // [C]
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [T][C]
@group(0) @binding(4) var<storage, read> r: array<f32>; // ADD: the addend [T][C]
@group(0) @binding(5) var<storage, read_write> so: array<f32>; // ADD: x + r [T][C]

fn xin(i: u32) -> f32 {
  if (ADD == 1u) { return x[i] + r[i]; }
  return x[i];
}

/** Σ xin(o + i)² over i = lid, lid + 64, ... < C, added in that order; 8 loads issued before their adds, so a row
 *  of 2048 is 4 round trips to memory a lane, not 32. quant.wgsl (MODE 1, 3) has the same function: the same sums. */
fn sumsq(o: u32, C: u32, lid: u32) -> f32 {
  var part = 0.0;
  var i = lid;
  for (; i + 448u < C; i = i + 512u) {
    let v0 = xin(o + i); let v1 = xin(o + i + 64u); let v2 = xin(o + i + 128u); let v3 = xin(o + i + 192u);
    let v4 = xin(o + i + 256u); let v5 = xin(o + i + 320u); let v6 = xin(o + i + 384u); let v7 = xin(o + i + 448u);
    part = part + v0 * v0; part = part + v1 * v1; part = part + v2 * v2; part = part + v3 * v3;
    part = part + v4 * v4; part = part + v5 * v5; part = part + v6 * v6; part = part + v7 * v7;
  }
  for (; i < C; i = i + 64u) { let v = xin(o + i); part = part + v * v; }
  return part;
}

@compute @workgroup_size(64)
fn rmsnorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = (wg.x + wg.y * 65535u) * p.C;
  let s2 = wg_sum(sumsq(o, p.C, lid), lid);
  let inv = 1.0 / sqrt(s2 / f32(p.C) + p.eps);
  for (var i = lid; i < p.C; i = i + 64u) {
    let v = xin(o + i);
    if (ADD == 1u) { so[o + i] = v; }
    y[o + i] = w[i] * (v * inv);
  }
}
