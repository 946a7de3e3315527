// embed.wgsl: y[t][d] = table[tok[t]][d], f32 table [V][D]; token ids in the step's upload arena.
struct P { D: u32, T: u32, tokOff: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn embed(@builtin(global_invocation_id) g: vec3<u32>) {
  let t = g.y;
  if (g.x < p.D && t < p.T) { y[t * p.D + g.x] = table[ids[p.tokOff + t] * p.D + g.x]; }
}
