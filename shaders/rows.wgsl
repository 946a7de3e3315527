// rows.wgsl: y[i][c] = x[rows[i]][c] (the last token of each sequence before the classifier).
struct P { C: u32, R: u32, rowOff: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn rows(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < p.C && g.y < p.R) { y[g.y * p.C + g.x] = x[idx[p.rowOff + g.y] * p.C + g.x]; }
}
