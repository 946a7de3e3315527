// The row sum of squares of rmsnorm (norm.wgsl) and of the fused norm quantizers (quant.wgsl, MODE 1 and 3): one text,
// prefixed to those two families only (moduleSource), so both sum the same values in the same order. Each family
// defines `xin(i)`, its input channel (x, or x + the residual addend).

/** Σ xin(o + i)² over i = lid, lid + 64, ... < C, added in that order; 8 loads issued before their adds, so a row
 *  of 2048 is 4 round trips to memory a lane, not 32. */
fn sumsq(o: u32, C: u32, lid: u32) -> f32 {
  var part = 0.0;
  var i = lid;
  for (; i + 448u < C; i = i + 512u) {
    let v0 = xin(o + i); let v1 = xin(o + i + 64u); let v2 = xin(o + i + 128u); let v3 = xin(o + i + 192u);
    let v4 = xin(o + i + 256u); let v5 = xin(o + i + 320u); let v6 = xin(o + i + 384u); let v7 = xin(o + i + 448u);
    part = part + v0 * v0; part = part + v1 * v1; part = part + v2 * v2; part = part + v3 * v3;
    part = part + v4 * v4; part = part + v5 * v5; part = part + v6 * v6; part = part + v7 * v7;
  }
  for (; i < C; i = i + 64u) { let v = xin(o + i); part = part + v * v; }
  return part;
}
