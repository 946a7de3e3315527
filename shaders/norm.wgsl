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
