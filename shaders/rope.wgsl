// rope.wgsl: rotate pairs (2i, 2i+1) of every head: (v0·c - v1·s, v0·s + v1·c). The (cos, sin) table
// [T][headDim/2][2] is made on the host exactly as the simulator makes it (f32 angle pos·freq, f64 cos/sin
// rounded to f32): GPU sin/cos are inaccurate far from 0 and positions reach thousands of radians.
// One dispatch rotates q (nHeads heads) and, for ropeKvAppend, k (nKv heads; 0: q alone) over the same table: the
// pairs of q, then those of k. Both go through the one rotation below, so k rotated here is k rotated alone.
struct P { T: u32, nHeads: u32, headDim: u32, csOff: u32, nKv: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> kx: array<f32>;
@group(0) @binding(5) var<storage, read_write> ky: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) g: vec3<u32>) {
  let half = p.headDim / 2u;
  let pq = p.T * p.nHeads * half; // q's pairs
  var k = g.x + g.y * 65535u * 256u;
  if (k >= pq + p.T * p.nKv * half) { return; }
  let isq = k < pq;
  var nh = p.nHeads;
  if (!isq) { k = k - pq; nh = p.nKv; }
  let per = nh * half; // pairs per token
  let t = k / per; let r = k % per; let i = r % half;
  let o = t * nh * p.headDim + (r / half) * p.headDim + 2u * i;
  let c = cs[p.csOff + (t * half + i) * 2u];
  let s = cs[p.csOff + (t * half + i) * 2u + 1u];
  var v0 = 0.0; var v1 = 0.0;
  if (isq) { v0 = x[o]; v1 = x[o + 1u]; } else { v0 = kx[o]; v1 = kx[o + 1u]; }
  let r0 = v0 * c - v1 * s;
  let r1 = v0 * s + v1 * c;
  if (isq) { y[o] = r0; y[o + 1u] = r1; } else { ky[o] = r0; ky[o + 1u] = r1; }
}
