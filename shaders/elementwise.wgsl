// elementwise.wgsl: add and silu·mul over n elements (2-D grid of 256-wide workgroups: 65535 per row).
struct P { n: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 256u;
  if (i < p.n) { y[i] = a[i] + b[i]; }
}

@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x + g.y * 65535u * 256u;
  if (i < p.n) { y[i] = silu_mul_f(a[i], b[i]); }
}
