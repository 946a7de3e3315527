// common.wgsl: helpers every op family uses; the host prepends it (and `fn dot4`) to each family's module.
//
// Our adapters have no shader-f16, so f16 values travel as bit patterns (two per u32 word, the low half
// first, little-endian as the simulator's Uint16Array) and are converted here by hand with integer ops:
// the conversions are exact and round to nearest even, whatever the driver does with pack2x16float.
// WGSL division is only 2.5 ULP, so the quantizers never trust a quotient: `f16_div` and `div_rne` round
// the EXACT quotient (DESIGN §3.2/§3.5) by checking the candidate against exact f32 products.

/** f16 bit pattern (low 16 bits of h) -> its f32 value (exact; subnormals included). */
fn f16_to_f32(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8; // m · 2^-24, a normal f32
    return select(v, -v, s != 0u);
  }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

/** f32 -> f16 bit pattern, round to nearest even; |x| >= 65520 -> ±inf; NaN -> 0x7e00. */
fn f32_to_f16(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let s = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a > 0x7f800000u) { return 0x7e00u; }
  if (a >= 0x477ff000u) { return s | 0x7c00u; }
  if (a < 0x38800000u) { return s | u32(round(bitcast<f32>(a) * 16777216.0)); } // subnormal: RNE of a·2^24
  var h = (a >> 13u) - (112u << 10u);
  let r = a & 0x1fffu;
  if (r > 0x1000u || (r == 0x1000u && (h & 1u) == 1u)) { h = h + 1u; }
  return s | h;
}

fn f16_round(x: f32) -> f32 { return f16_to_f32(f32_to_f16(x)); }

/** f16 element i of a packed u32 word */
fn f16_half(word: u32, i: u32) -> f32 { return f16_to_f32((word >> ((i & 1u) * 16u)) & 0xffffu); }

/** Bits of f16(a / b) for a >= 0 and b a small positive integer (7, 127, 15), rounded from the exact
 *  quotient: the f32 candidate is moved to the neighbour whose rounding interval holds a/b. The interval
 *  ends are midpoints m of adjacent f16 values; m·b is exact in f32 (12-bit × 7-bit significands). */
fn f16_div(a: f32, b: f32) -> u32 {
  let h = f32_to_f16(a / b);
  if (h >= 0x7c00u) { return h; }
  let v = f16_to_f32(h);
  let up = f16_to_f32(h + 1u);
  let tu = (v + (up - v) * 0.5) * b;
  if (a > tu || (a == tu && (h & 1u) == 1u)) { return h + 1u; }
  if (h > 0u) {
    let dn = f16_to_f32(h - 1u);
    let td = (dn + (v - dn) * 0.5) * b;
    if (a < td || (a == td && (h & 1u) == 1u)) { return h - 1u; }
  }
  return h;
}

fn is_even(c: f32) -> bool { return (bitcast<u32>(i32(c)) & 1u) == 0u; }

/** roundHalfEven(x / s) of the exact quotient, s > 0: candidate c from the f32 division, then c ± 1 when
 *  x lies beyond (c ± 0.5)·s (exact products while |c| < 2^12: a 13-bit half-integer × an 11-bit f16). */
fn div_rne(x: f32, s: f32) -> f32 {
  var c = round(x / s);
  let up = (c + 0.5) * s;
  if (x > up) { c = c + 1.0; }
  else if (x == up) { c = select(c + 1.0, c, is_even(c)); }
  else {
    let dn = (c - 0.5) * s;
    if (x < dn) { c = c - 1.0; }
    else if (x == dn) { c = select(c, c - 1.0, is_even(c - 1.0)); }
  }
  return c;
}

/** The activation quantizer's code of v in a block of scale s (an f16 value; simulator/act.ts): div_rne(v, s)
 *  clamped to [-qmax - 1, qmax] (qmax 127 in the INT8 channels, 7 in the INT4 ones), 0 for an all-zero block (s = 0).
 *  quant.wgsl and the W4Ax matvec's in-kernel quantizer (gemm_w4ax.wgsl QIN) share it: the same bits by one definition. */
fn act_code(v: f32, s: f32, qmax: f32) -> i32 {
  if (s == 0.0) { return 0; }
  return i32(clamp(div_rne(v, s), -qmax - 1.0, qmax));
}

// ---- int4 / int8 lanes for dot4 (i8x4 packed in a u32) ----
/** four nibbles 0..15 (one per byte) -> four sign-extended int8 */
fn sx4(x: u32) -> u32 { return x | ((x & 0x08080808u) * 0x1eu); }
/** canonical int4 word (elements e0..e7, e_2i in the low nibble of byte i) -> (e0, e2, e4, e6) as i8x4 */
fn lo4(w: u32) -> u32 { return sx4(w & 0x0f0f0f0fu); }
/** -> (e1, e3, e5, e7) */
fn hi4(w: u32) -> u32 { return sx4((w >> 4u) & 0x0f0f0f0fu); }
/** int8 words (a0..a3), (a4..a7) -> (a0, a2, a4, a6), matching lo4 */
fn even8(a0: u32, a1: u32) -> u32 {
  return (a0 & 0xffu) | ((a0 >> 8u) & 0xff00u) | ((a1 & 0xffu) << 16u) | ((a1 << 8u) & 0xff000000u);
}
/** -> (a1, a3, a5, a7), matching hi4 */
fn odd8(a0: u32, a1: u32) -> u32 {
  return ((a0 >> 8u) & 0xffu) | ((a0 >> 16u) & 0xff00u) | ((a1 << 8u) & 0xff0000u) | (a1 & 0xff000000u);
}

/** The plain integer fallback of dot4I8Packed (adapters without packed_4x8_integer_dot_product). */
fn dot4_plain(a: u32, b: u32) -> i32 {
  let x = vec4<i32>(bitcast<i32>(a << 24u), bitcast<i32>(a << 16u), bitcast<i32>(a << 8u), bitcast<i32>(a)) >> vec4<u32>(24u);
  let y = vec4<i32>(bitcast<i32>(b << 24u), bitcast<i32>(b << 16u), bitcast<i32>(b << 8u), bitcast<i32>(b)) >> vec4<u32>(24u);
  return dot(x, y);
}

/** silu(g)·u, the one definition shared by silu_mul and silu_mul_quant (so their f32 results agree). */
fn silu_mul_f(g: f32, u: f32) -> f32 { return g / (1.0 + exp(-g)) * u; }

// ---- workgroup reductions over invocations 0..63 (larger workgroups call them uniformly; lanes >= 64 only
// take part in the barriers). Every invocation reads the 64 values in order: two barriers instead of a
// tree's seven (SwiftShader, on CI, pays dearly for each barrier); the order is fixed, so all invocations
// get the same f32 result, and rmsnorm and rmsnorm_quant agree bit for bit.
var<workgroup> red: array<f32, 64>;

fn wg_sum(v: f32, lid: u32) -> f32 {
  if (lid < 64u) { red[lid] = v; }
  workgroupBarrier();
  var r = 0.0;
  for (var i = 0u; i < 64u; i++) { r = r + red[i]; }
  workgroupBarrier();
  return r;
}

fn wg_max(v: f32, lid: u32) -> f32 {
  if (lid < 64u) { red[lid] = v; }
  workgroupBarrier();
  var r = red[0];
  for (var i = 1u; i < 64u; i++) { r = max(r, red[i]); }
  workgroupBarrier();
  return r;
}

/** RoPE of the pair (v0, v1) by the angle whose (cos, sin) is (c, s): the one rotation rope.wgsl and the fused
 *  rope + KV append (kv_append.wgsl) share, so a k rotated on the way into the cache has the bits of rope(k). */
fn rope_rot(v0: f32, v1: f32, c: f32, s: f32) -> vec2<f32> { return vec2<f32>(v0 * c - v1 * s, v0 * s + v1 * c); }
