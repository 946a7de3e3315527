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

// f16 table (a .comet's embedding, kept as f16: half the memory of its f32 values): the same values, exactly.
@group(0) @binding(1) var<storage, read> table16: array<u32>; // f16 bits, two per word, the low half first

@compute @workgroup_size(256)
fn embed_f16(@builtin(global_invocation_id) g: vec3<u32>) {
  let t = g.y;
  if (g.x < p.D && t < p.T) { let e = ids[p.tokOff + t] * p.D + g.x; y[t * p.D + g.x] = f16_half(table16[e >> 1u], e); }
}
