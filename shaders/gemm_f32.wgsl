// gemm_f32.wgsl: y[t][n] = Σ_k x[t][k]·w[n][k], f32 (the float path and a float classifier). One invocation
// per weight row and 4 tokens, a plain sequential sum over K (tier 3): no workgroup barriers, which
// SwiftShader (CI) runs slowly; this path is the accuracy reference, the fast path is gemm_w4ax.
struct P { T: u32, N: u32, K: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn gemm(@builtin(global_invocation_id) g: vec3<u32>) {
  let n = g.x;
  let t0 = g.y * 4u;
  if (n >= p.N) { return; }
  let nt = min(4u, p.T - t0);
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let wv = w[n * p.K + k];
    a0 = a0 + wv * x[t0 * p.K + k];
    if (nt > 1u) { a1 = a1 + wv * x[(t0 + 1u) * p.K + k]; }
    if (nt > 2u) { a2 = a2 + wv * x[(t0 + 2u) * p.K + k]; }
    if (nt > 3u) { a3 = a3 + wv * x[(t0 + 3u) * p.K + k]; }
  }
  y[t0 * p.N + n] = a0;
  if (nt > 1u) { y[(t0 + 1u) * p.N + n] = a1; }
  if (nt > 2u) { y[(t0 + 2u) * p.N + n] = a2; }
  if (nt > 3u) { y[(t0 + 3u) * p.N + n] = a3; }
}
