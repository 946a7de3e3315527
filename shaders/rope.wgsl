// rope.wgsl: rotate pairs (2i, 2i+1) of every head: (v0·c - v1·s, v0·s + v1·c). The (cos, sin) table
// [T][headDim/2][2] is made on the host exactly as the simulator makes it (f32 angle pos·freq, f64 cos/sin
// rounded to f32): GPU sin/cos are inaccurate far from 0 and positions reach thousands of radians.
struct P { T: u32, nHeads: u32, headDim: u32, csOff: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) g: vec3<u32>) {
  let half = p.headDim / 2u;
  let per = p.nHeads * half; // pairs per token
  let k = g.x + g.y * 65535u * 256u;
  if (k >= p.T * per) { return; }
  let t = k / per; let r = k % per; let i = r % half;
  let o = t * p.nHeads * p.headDim + (r / half) * p.headDim + 2u * i;
  let c = cs[p.csOff + (t * half + i) * 2u];
  let s = cs[p.csOff + (t * half + i) * 2u + 1u];
  let v0 = x[o]; let v1 = x[o + 1u];
  y[o] = v0 * c - v1 * s;
  y[o + 1u] = v0 * s + v1 * c;
}
