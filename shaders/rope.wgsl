// rope.wgsl: rotate pairs (2i, 2i+1) of every head by common.wgsl's rope_rot. The (cos, sin) table
// [T][headDim/2][2] is made on the host exactly as the simulator makes it (f32 angle pos·freq, f64 cos/sin
// rounded to f32): GPU sin/cos are inaccurate far from 0 and positions reach thousands of radians.
// The decode step's rope goes with the KV append (kv_append.wgsl, ROPE = 1), through the same rope_rot.
struct P { T: u32, nHeads: u32, headDim: u32, csOff: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) g: vec3<u32>) {
  let half = p.headDim / 2u;
  let k = g.x + g.y * 65535u * 256u; // pair index over [T][nHeads][half]
  if (k >= p.T * p.nHeads * half) { return; }
  let per = p.nHeads * half;
  let t = k / per; let r = k % per; let i = r % half;
  let o = t * p.nHeads * p.headDim + (r / half) * p.headDim + 2u * i;
  let ci = p.csOff + (t * half + i) * 2u;
  let v = rope_rot(x[o], x[o + 1u], cs[ci], cs[ci + 1u]);
  y[o] = v.x; y[o + 1u] = v.y;
}
