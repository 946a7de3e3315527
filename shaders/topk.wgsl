// topk.wgsl: the k largest of each row of x [R][C] (k <= 1024), value descending then index ascending, -0 equal
// to +0: simulator/kernels/float.ts topk bit for bit, by cuda/ops_float.cu topk_kernel's algorithm. One
// workgroup of 256 per row (a decode step's logits, V = 128256 at LLaMA-3): the k-th largest key t by a 4-pass
// radix select (8 bits a pass, a 256-bin histogram of workgroup atomics), then every key above t (any order,
// slots from an atomic counter) and the first ties of t by index (a prefix sum of tie counts over tiles of
// 256·16 columns), then a bitonic sort of the k candidates as (key, index) pairs (no 64-bit ints in WGSL).
// Keys: the f32 bits made monotone as u32, -0 read as +0; x is read as bits, never as floats (a subnormal
// flushed by a float op would tie with 0), and the values are copied out as bits.
struct P { C: u32, k: u32, R: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>; // values [R][k] (f32 bits), then indices [R][k]

const WG = 256u;
const G = 16u; // consecutive columns per invocation in a tie tile: one prefix sum per 4096 columns
const KMAX = 1024u;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> ck: array<u32, KMAX>; // candidates: keys
var<workgroup> ci: array<u32, KMAX>; // and their columns
var<workgroup> scan: array<u32, WG>;
var<workgroup> sel: vec2<u32>; // (prefix, need) after a radix pass, from invocation 0
var<workgroup> above: atomic<u32>;

fn topk_key(b: u32) -> u32 {
  let v = select(b, 0u, (b & 0x7fffffffu) == 0u);
  return select(v | 0x80000000u, ~v, (v & 0x80000000u) != 0u);
}

@compute @workgroup_size(WG)
fn topk(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = wg.x * p.C;
  let k = p.k;
  if (lid == 0u) { atomicStore(&above, 0u); }
  // radix select: prefix holds the k-th largest key's high bytes found so far, need its rank among the keys
  // that share them
  var prefix = 0u;
  var mask = 0u;
  var need = k;
  for (var r = 0u; r < 4u; r++) {
    let shift = 24u - 8u * r;
    for (var i = lid; i < 256u; i += WG) { atomicStore(&hist[i], 0u); }
    workgroupBarrier();
    // runs of one bin are added at once: the first pass's few hot bins (the logits' exponents) contend less
    var bin = 0u;
    var n = 0u;
    for (var c = lid; c < p.C; c += WG) {
      let key = topk_key(x[o + c]);
      if ((key & mask) == prefix) {
        let b = (key >> shift) & 255u;
        if (b != bin && n > 0u) { atomicAdd(&hist[bin], n); n = 0u; }
        bin = b;
        n += 1u;
      }
    }
    if (n > 0u) { atomicAdd(&hist[bin], n); }
    workgroupBarrier();
    if (lid == 0u) {
      var cum = 0u;
      var b = 255u;
      for (; b > 0u; b--) {
        let h = atomicLoad(&hist[b]);
        if (cum + h >= need) { break; }
        cum += h;
      }
      sel = vec2(prefix | (b << shift), need - cum);
    }
    let s = workgroupUniformLoad(&sel);
    prefix = s.x;
    need = s.y;
    mask |= 255u << shift;
  }
  // prefix = the k-th largest key t: the k - need keys above it, then the first `need` ties by index
  for (var c = lid; c < p.C; c += WG) {
    let key = topk_key(x[o + c]);
    if (key > prefix) {
      let j = atomicAdd(&above, 1u);
      ck[j] = key;
      ci[j] = c;
    }
  }
  let base = k - need;
  var taken = 0u;
  for (var t0 = 0u; t0 < p.C && taken < need; t0 += WG * G) {
    let c0 = t0 + lid * G;
    var bits = 0u; // ties among this invocation's G columns
    for (var j = 0u; j < G; j++) {
      if (c0 + j < p.C && topk_key(x[o + c0 + j]) == prefix) { bits |= 1u << j; }
    }
    let own = countOneBits(bits);
    scan[lid] = own;
    for (var d = 1u; d < WG; d <<= 1u) { // inclusive prefix sum (Hillis-Steele)
      workgroupBarrier();
      var v = 0u;
      if (lid >= d) { v = scan[lid - d]; }
      workgroupBarrier();
      scan[lid] += v;
    }
    var rank = taken + scan[lid] - own;
    for (; bits != 0u; bits &= bits - 1u) {
      if (rank < need) {
        ck[base + rank] = prefix;
        ci[base + rank] = c0 + countTrailingZeros(bits);
      }
      rank++;
    }
    taken += workgroupUniformLoad(&scan[WG - 1u]);
  }
  // bitonic sort, descending: padding (key 0, column ~0) ranks below every key but a NaN's
  var n2 = 1u;
  while (n2 < k) { n2 <<= 1u; }
  for (var i = k + lid; i < n2; i += WG) { ck[i] = 0u; ci[i] = 0xffffffffu; }
  for (var size = 2u; size <= n2; size <<= 1u) {
    for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
      workgroupBarrier();
      for (var i = lid; i < n2; i += WG) {
        let j = i ^ stride;
        if (j > i) {
          let ka = ck[i]; let kb = ck[j]; let ia = ci[i]; let ib = ci[j];
          let below = ka < kb || (ka == kb && ia > ib); // a ranks below b
          if (below == ((i & size) == 0u)) { ck[i] = kb; ck[j] = ka; ci[i] = ib; ci[j] = ia; }
        }
      }
    }
  }
  workgroupBarrier();
  for (var j = lid; j < k; j += WG) {
    y[wg.x * k + j] = x[o + ci[j]];
    y[(p.R + wg.x) * k + j] = ci[j];
  }
}
