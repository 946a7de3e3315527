// gemm_f32.wgsl: y[t][n] = Σ_k x[t][k]·w[n][k], f32 (the float path and the classifier). 8 rows per
// workgroup of 256 (a team of 32 lanes per row, strided over K, coalesced), 4 tokens per workgroup;
// the lanes' partial sums meet in a tree (tier 3).
struct P { T: u32, N: u32, K: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> part: array<f32, 1024>; // [tok 4][team 8][lane 32]

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let team = lid >> 5u; let lane = lid & 31u;
  let n = wg.x * 8u + team;
  let t0 = wg.y * 4u;
  var acc = vec4<f32>(0.0);
  if (n < p.N) {
    for (var k = lane; k < p.K; k = k + 32u) {
      let wv = w[n * p.K + k];
      for (var t = 0u; t < 4u; t++) { if (t0 + t < p.T) { acc[t] = acc[t] + wv * x[(t0 + t) * p.K + k]; } }
    }
  }
  for (var t = 0u; t < 4u; t++) { part[t * 256u + lid] = acc[t]; }
  workgroupBarrier();
  for (var s = 16u; s > 0u; s = s >> 1u) {
    if (lane < s) { for (var t = 0u; t < 4u; t++) { part[t * 256u + lid] = part[t * 256u + lid] + part[t * 256u + lid + s]; } }
    workgroupBarrier();
  }
  if (lane < 4u && n < p.N && t0 + lane < p.T) { y[(t0 + lane) * p.N + n] = part[lane * 256u + team * 32u]; }
}
