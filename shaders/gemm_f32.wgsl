// gemm_f32.wgsl: y[t][n] = Σ_k x[t][k]·w[n][k], f32 products and sums, w f32 or f16 (F16W; a .comet's classifier,
// f16 bits two per word, the low half first; against f16 weights x is read rounded to f16, as the contract's
// matmulF16w: simulator/kernels/float.ts). `gemm`: one invocation per weight row and 4 tokens, a plain
// sequential sum over K (tier 3), no workgroup barriers, which SwiftShader (CI) runs slowly: the float path's
// accuracy reference, and the f16 classifier on CPU adapters. `gemm_f16w` below: the f16 classifier on GPUs.
struct P { T: u32, N: u32, K: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>; // f32 bits, or f16 bits two per word (F16W)
override F16W: bool = false;

/** x rounded to f16 and back, two values at a time, by the hardware conversion. WGSL leaves its rounding direction to
 *  the implementation, which this GEMM's tolerance tier absorbs; common.wgsl's f16_round is exact (nearest even) but
 *  ~15 ALU operations a value, and gemm_f16w pays the rounding once per weight row for every x it reads. */
fn f16r2(a: f32, b: f32) -> vec2<f32> { return unpack2x16float(pack2x16float(vec2<f32>(a, b))); }
/** GEMM input value: x, or x rounded to f16 against f16 weights */
fn xin(v: f32) -> f32 {
  if (F16W) { return f16r2(v, 0.0).x; }
  return v;
}

/** element e of w as f32 (exact) */
fn wat(e: u32) -> f32 {
  if (F16W) { return f16_half(w[e >> 1u], e); }
  return bitcast<f32>(w[e]);
}
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn gemm(@builtin(global_invocation_id) g: vec3<u32>) {
  let n = g.x;
  let t0 = g.y * 4u;
  if (n >= p.N) { return; }
  let nt = min(4u, p.T - t0);
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
  for (var k = 0u; k < p.K; k++) {
    let wv = wat(n * p.K + k);
    a0 = a0 + wv * xin(x[t0 * p.K + k]);
    if (nt > 1u) { a1 = a1 + wv * xin(x[(t0 + 1u) * p.K + k]); }
    if (nt > 2u) { a2 = a2 + wv * xin(x[(t0 + 2u) * p.K + k]); }
    if (nt > 3u) { a3 = a3 + wv * xin(x[(t0 + 3u) * p.K + k]); }
  }
  y[t0 * p.N + n] = a0;
  if (nt > 1u) { y[(t0 + 1u) * p.N + n] = a1; }
  if (nt > 2u) { y[(t0 + 2u) * p.N + n] = a2; }
  if (nt > 3u) { y[(t0 + 3u) * p.N + n] = a3; }
}

// f16 weights (a .comet's classifier, kept as f16: half the bytes a decode step reads), f32 products and sums:
// y[t][n] = Σ_k f16(x[t][k])·f32(w[n][k]). A team of 32 lanes per row (8 rows per workgroup), lanes on consecutive
// weight words (coalesced: the classifier is the largest read of a step), 4 tokens per workgroup; lane l sums
// k = 2l, 2l + 1 (mod 64) in ascending k, then the 32 lane sums are added in lane order. The order depends on
// neither T nor the other tokens, so a row's logits are the same alone or in a batch (tier 3 against the
// simulator's sequential sum).
var<workgroup> part: array<f32, 1024>; // [token 4][row 8][lane 32]

@compute @workgroup_size(256)
fn gemm_f16w(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let team = lid >> 5u; let lane = lid & 31u;
  let n = wg.x * 8u + team;
  let t0 = wg.y * 4u;
  let nt = min(4u, p.T - t0);
  var a = vec4<f32>(0.0);
  if (n < p.N) {
    let row = n * p.K;
    for (var k = 2u * lane; k < p.K; k += 64u) {
      let w0 = f16_half(w[(row + k) >> 1u], row + k);
      var w1 = 0.0;
      let two = k + 1u < p.K;
      if (two) { w1 = f16_half(w[(row + k + 1u) >> 1u], row + k + 1u); }
      for (var t = 0u; t < nt; t++) {
        let xo = (t0 + t) * p.K + k;
        let xv = f16r2(x[xo], select(0.0, x[xo + 1u], two));
        a[t] = a[t] + w0 * xv.x;
        if (two) { a[t] = a[t] + w1 * xv.y; }
      }
    }
  }
  for (var t = 0u; t < 4u; t++) { part[(t * 8u + team) * 32u + lane] = a[t]; }
  workgroupBarrier();
  if (lane < nt && n < p.N) {
    var s = 0.0;
    for (var l = 0u; l < 32u; l++) { s = s + part[(lane * 8u + team) * 32u + l]; }
    y[(t0 + lane) * p.N + n] = s;
  }
}
