// The row sum of squares of rmsnorm (norm.wgsl) and of the fused norm quantizers (quant.wgsl, MODE 1 and 3): one text,
// prefixed to those two families only (moduleSource), so both sum the same values in the same order. Each family
// defines `xin(i)`, its input channel (x, or x + the residual addend).

/** xin at o + i, i + 64, i + 128, i + 192 (0 at and past C: adding +0 to the sum changes no bit, it is never -0) */
fn sq_ld4(o: u32, i: u32, C: u32) -> vec4<f32> {
  var a = vec4<f32>(0.0);
  if (i < C) { a.x = xin(o + i); }
  if (i + 64u < C) { a.y = xin(o + i + 64u); }
  if (i + 128u < C) { a.z = xin(o + i + 128u); }
  if (i + 192u < C) { a.w = xin(o + i + 192u); }
  return a;
}
/** part + the squares of a's lanes, in lane order */
fn sq_add4(part: f32, a: vec4<f32>) -> f32 {
  var s = part;
  s = s + a.x * a.x; s = s + a.y * a.y; s = s + a.z * a.z; s = s + a.w * a.w;
  return s;
}

/** Σ xin(o + i)² over i = lid, lid + 64, ... < C, added in that order; 32 loads (x and, MODE 3 / ADD, r: 64) issued
 *  before their adds, so a row of 2048 channels is one round trip to memory a lane (it was four of 8 loads: ~1 µs of
 *  L2 latency in every add_rmsnorm_quant of a decode step, 31 a LLaMA-3.2-1B step) */
fn sumsq(o: u32, C: u32, lid: u32) -> f32 {
  var part = 0.0;
  for (var i = lid; i < C; i = i + 2048u) {
    let a0 = sq_ld4(o, i, C); let a1 = sq_ld4(o, i + 256u, C); let a2 = sq_ld4(o, i + 512u, C); let a3 = sq_ld4(o, i + 768u, C);
    let a4 = sq_ld4(o, i + 1024u, C); let a5 = sq_ld4(o, i + 1280u, C); let a6 = sq_ld4(o, i + 1536u, C); let a7 = sq_ld4(o, i + 1792u, C);
    part = sq_add4(part, a0); part = sq_add4(part, a1); part = sq_add4(part, a2); part = sq_add4(part, a3);
    part = sq_add4(part, a4); part = sq_add4(part, a5); part = sq_add4(part, a6); part = sq_add4(part, a7);
  }
  return part;
}
