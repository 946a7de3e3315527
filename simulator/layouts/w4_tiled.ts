// The CUDA W4Ax GEMM's physical weight layout (cuda/gemm_w4ax.cuh), as a pure function of the canonical
// codes (DESIGN §3.1, §3.3). comet_w4_create makes exactly these bytes on the device; keep the two in step.
//
//   K is cut into the INT8-activation segment [0, K8) and the INT4 one [K8, Kp); each segment into k-tiles of
//   KT = 128 channels (the last one zero-padded): T8 = ceil(K8/128) tiles, then T4 = ceil((Kp-K8)/128).
//   q: u8 [T8+T4][Npad][64]   Npad = N rounded up to 128, rows >= N are 0.
//   One tile row = 4 pieces of 16 bytes; piece t (the mma's threadID_in_group) holds one u32 word per
//   32-channel chunk c = 0..3 at byte 16t + 4c, so one 16-byte load gives a thread its whole tile row.
//     INT4 segment: word (t, c) nibble m = W[kc + 8t + m]                      (kc = tile start + 32c)
//     INT8 segment: word (t, c) nibble 2j = W[kc + 8t + j], nibble 2j+1 = W[kc + 8t + 4 + j]
//   The kernel turns a word into two int8x4 registers with (x << 4) & 0xF0F0F0F0 and x & 0xF0F0F0F0 (16*q):
//   INT8 chunks then hold the channel runs [kc+8t, +4) and [kc+8t+4, +4) in order, the bytes one 8-byte load of
//   a canonical int8 activation row gives; INT4 chunks hold the even / odd channels, as the activation word does.
//   swT: f16 bits [Kp/B][Npad]   weight scales transposed (a block's 128 row scales are 256 contiguous bytes).
export const KT = 128; // channels per k-tile
export const ROW_BYTES = 64; // bytes per row per k-tile (KT / 2)
export const NPAD = 128; // N is padded to a multiple of this

export interface W4TiledShape {
  N: number;
  Kp: number;
  B: number; // 32 | 64 | 128
  K8: number; // multiple of B, 0 <= K8 <= Kp
}

export interface W4TiledDims {
  Npad: number;
  T8: number; // k-tiles of the INT8 segment
  T: number; // all k-tiles
  nb: number; // B-blocks
  qBytes: number;
  swTLength: number; // f16 elements of swT
}

export function w4TiledDims(s: W4TiledShape): W4TiledDims {
  const { N, Kp, B, K8 } = s;
  if (!(B === 32 || B === 64 || B === 128) || Kp % B || K8 % B || K8 < 0 || K8 > Kp || N <= 0)
    throw new RangeError(`w4Tiled: bad shape N=${N} Kp=${Kp} B=${B} K8=${K8}`);
  const Npad = Math.ceil(N / NPAD) * NPAD, T8 = Math.ceil(K8 / KT), T = T8 + Math.ceil((Kp - K8) / KT);
  return { Npad, T8, T, nb: Kp / B, qBytes: T * Npad * ROW_BYTES, swTLength: (Kp / B) * Npad };
}

/** Where channel k of row n lives: byte offset into q and nibble (0 low, 1 high). */
export function w4TiledPlace(s: W4TiledShape, d: W4TiledDims, n: number, k: number): { byte: number; nibble: number } {
  const int8 = k < s.K8;
  const seg = int8 ? k : k - s.K8;
  const tile = (int8 ? 0 : d.T8) + Math.floor(seg / KT);
  const inTile = seg % KT, c = inTile >> 5, r = inTile & 31; // chunk, channel inside the chunk
  const t = r >> 3, m = r & 7; // piece, position inside the 8-channel run
  const nibbleIndex = int8 ? (m < 4 ? 2 * m : 2 * (m - 4) + 1) : m; // nibble 0..7 of word (t, c)
  return { byte: (tile * d.Npad + n) * ROW_BYTES + 16 * t + 4 * c + (nibbleIndex >> 1), nibble: nibbleIndex & 1 };
}

/** canonical codes u8 [N][Kp/2] -> q u8 [T][Npad][64] */
export function repackW4Tiled(codes: Uint8Array, s: W4TiledShape): Uint8Array {
  const d = w4TiledDims(s);
  if (codes.length !== (s.N * s.Kp) / 2) throw new RangeError(`repackW4Tiled: ${codes.length} bytes, want N*Kp/2`);
  const q = new Uint8Array(d.qBytes);
  const row = s.Kp / 2;
  for (let n = 0; n < s.N; n++) {
    const base = n * row;
    for (let k = 0; k < s.Kp; k++) {
      const v = (codes[base + (k >> 1)] >> ((k & 1) << 2)) & 0xf;
      const { byte, nibble } = w4TiledPlace(s, d, n, k);
      q[byte] |= v << (nibble << 2);
    }
  }
  return q;
}

/** q -> canonical codes [N][Kp/2] (the inverse of repackW4Tiled; padding is dropped) */
export function unrepackW4Tiled(q: Uint8Array, s: W4TiledShape): Uint8Array {
  const d = w4TiledDims(s);
  if (q.length !== d.qBytes) throw new RangeError(`unrepackW4Tiled: ${q.length} bytes, want ${d.qBytes}`);
  const codes = new Uint8Array((s.N * s.Kp) / 2);
  for (let n = 0; n < s.N; n++)
    for (let k = 0; k < s.Kp; k++) {
      const { byte, nibble } = w4TiledPlace(s, d, n, k);
      codes[n * (s.Kp / 2) + (k >> 1)] |= ((q[byte] >> (nibble << 2)) & 0xf) << ((k & 1) << 2);
    }
  return codes;
}

/** weight scales f16 bits [N][nb] -> swT [nb][Npad] (zero-padded rows) */
export function transposeW4Scales(scales: Uint16Array, s: W4TiledShape): Uint16Array {
  const d = w4TiledDims(s);
  const out = new Uint16Array(d.swTLength);
  for (let n = 0; n < s.N; n++) for (let b = 0; b < d.nb; b++) out[b * d.Npad + n] = scales[n * d.nb + b];
  return out;
}

/** The kernel's two-instruction conversion of one word: [lo, hi] as int8x4 byte arrays holding 16*q. */
export function convertWord(x: number): [Int8Array, Int8Array] {
  const lo = new Int8Array(4), hi = new Int8Array(4);
  const l = ((x << 4) & 0xf0f0f0f0) >>> 0, h = (x & 0xf0f0f0f0) >>> 0;
  for (let j = 0; j < 4; j++) {
    lo[j] = ((l >>> (8 * j)) << 24) >> 24;
    hi[j] = ((h >>> (8 * j)) << 24) >> 24;
  }
  return [lo, hi];
}

/** word (t, c) of row n in tile i, as the kernel reads it (little-endian u32) */
export function tiledWord(q: Uint8Array, d: W4TiledDims, i: number, n: number, t: number, c: number): number {
  const o = (i * d.Npad + n) * ROW_BYTES + 16 * t + 4 * c;
  return (q[o] | (q[o + 1] << 8) | (q[o + 2] << 16) | (q[o + 3] << 24)) >>> 0;
}

/**
 * The v6 (wgmma) kernel's int8 operand rows in shared memory, before the 128-byte swizzle: the 32 bytes of k32 step
 * c of weight row n in k-tile i, as converted once per CTA from the tiled words (t = 0..3) of that step.
 * W4A8 tiles (i < T8): canonical channel order, [lo(w0) hi(w0) lo(w1) hi(w1) | lo(w2) hi(w2) lo(w3) hi(w3)] = 16*W[kc+p].
 * W4A4 tiles: [lo(w0) lo(w1) lo(w2) lo(w3) | hi(w0) hi(w1) hi(w2) hi(w3)]: position 4t+j = 16*W[kc+8t+2j],
 * 16+4t+j = 16*W[kc+8t+2j+1]; the int4 activations of those tiles are converted the same way (v6ActStep).
 */
export function v6WeightStep(q: Uint8Array, d: W4TiledDims, i: number, n: number, c: number): Int8Array {
  const out = new Int8Array(32);
  const conv = [0, 1, 2, 3].map((t) => convertWord(tiledWord(q, d, i, n, t, c)));
  for (let t = 0; t < 4; t++)
    for (let j = 0; j < 4; j++) {
      if (i < d.T8) {
        out[8 * t + j] = conv[t][0][j];
        out[8 * t + 4 + j] = conv[t][1][j];
      } else {
        out[4 * t + j] = conv[t][0][j];
        out[16 + 4 * t + j] = conv[t][1][j];
      }
    }
  return out;
}

/**
 * The v7 kernel (cuda/gemm_w4ax_sm90.cu) builds the same operand row in registers: weights are wgmma's A operand, and
 * thread t of a quad holds k-positions 4t..4t+3 (register a0 / a1 for rows g / g+8) and 16+4t..16+4t+3 (a2 / a3).
 * It reads piece p0 for the first run and p1 for the second, shifted left by sh0 / sh1 and masked with 0xF0F0F0F0:
 * W4A8 tiles p0 = t>>1, p1 = 2 + (t>>1), sh0 = sh1 = (t odd ? 0 : 4) (so the canonical int8 activation rows need no
 * reordering); W4A4 tiles p0 = p1 = t, sh0 = 4, sh1 = 0. Returns the 32 bytes in k-position order; equal to
 * v6WeightStep (tested), so v6ActStep gives the activation operand of W4A4 tiles for both kernels.
 */
export function v7WeightFragment(q: Uint8Array, d: W4TiledDims, i: number, n: number, c: number): Int8Array {
  const out = new Int8Array(32);
  const int8 = i < d.T8;
  const bytesOf = (x: number, o: number) => {
    for (let j = 0; j < 4; j++) out[o + j] = ((x >>> (8 * j)) << 24) >> 24;
  };
  for (let t = 0; t < 4; t++) {
    const p0 = int8 ? t >> 1 : t, p1 = int8 ? 2 + (t >> 1) : t;
    const sh0 = int8 ? (t & 1 ? 0 : 4) : 4, sh1 = int8 ? sh0 : 0;
    bytesOf(((tiledWord(q, d, i, n, p0, c) << sh0) & 0xf0f0f0f0) >>> 0, 4 * t);
    bytesOf(((tiledWord(q, d, i, n, p1, c) << sh1) & 0xf0f0f0f0) >>> 0, 16 + 4 * t);
  }
  return out;
}

/** v6 / v7: the 32 int8 bytes (16*q) of k32 step c of an int4 activation row (canonical int4x2 bytes `row`, 64 per k-tile
 *  of the INT4 segment; `off` = first byte of the k-tile), in the W4A4 order of v6WeightStep. */
export function v6ActStep(row: Uint8Array, off: number, c: number): Int8Array {
  const out = new Int8Array(32);
  for (let t = 0; t < 4; t++) {
    const o = off + 16 * c + 4 * t;
    const [lo, hi] = convertWord((row[o] | (row[o + 1] << 8) | (row[o + 2] << 16) | (row[o + 3] << 24)) >>> 0);
    for (let j = 0; j < 4; j++) {
      out[4 * t + j] = lo[j];
      out[16 + 4 * t + j] = hi[j];
    }
  }
  return out;
}
