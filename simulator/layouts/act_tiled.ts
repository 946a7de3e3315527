// The activation layout the CUDA W4Ax GEMM v8 copies (cuda/gemm_w4ax_sm90.cu, v8_pack), as a pure function of a
// quantized activation batch (DESIGN §3.1, §3.3). v8_pack makes exactly these bytes in the GEMM's workspace before
// each launch; keep the two in step.
//
//   The activations of M rows, K cut into k-tiles of KT = 128 channels as the weight's (w4_tiled.ts: T8 INT8 tiles,
//   then the INT4 ones); Mpad = M rounded up to 128, rows >= M are 0.
//   X: int8 [T][Mpad][128]   the 128 bytes of row m in k-tile i at (i * Mpad + m) * 128, 16-byte piece p at
//       (p ^ (m & 7)) * 16: the 128-byte-swizzled K-major tile wgmma reads as its B operand, so the NT rows of any
//       tile (m0 a multiple of 8) are one contiguous copy.
//     INT8 tiles (i < T8): the codes as they are (position = channel).
//     INT4 tiles: 16*q in the lo/hi order of w4_tiled.ts's v6ActStep: piece 2g holds the low nibbles (even channels)
//       of the tile's 16-byte group g of packed int4x2 bytes, piece 2g + 1 the high nibbles (odd channels).
//   SA: f32 [T][Mpad]   sa[m][i] (the f16 block scale) times 2^-4 (INT8 tiles: the weights are read as 16*q) or 2^-8
//       (INT4 tiles: both sides 16*q); exact in f32. 0 for rows >= M.
import { f16Bits, fromF16Bits } from '../f16.ts';
import { KT } from './w4_tiled.ts';

export interface ActTiledShape {
  M: number;
  Kp: number; // multiple of 128 (the v8 kernel runs B = 128 only)
  K8: number; // multiple of 128, 0 <= K8 <= Kp
}

export interface ActTiled {
  Mpad: number;
  T8: number;
  T: number;
  X: Int8Array; // [T][Mpad][128]
  SA: Float32Array; // [T][Mpad]
}

function dims(s: ActTiledShape): { Mpad: number; T8: number; T: number } {
  const { M, Kp, K8 } = s;
  if (M < 0 || Kp <= 0 || Kp % KT || K8 % KT || K8 < 0 || K8 > Kp)
    throw new RangeError(`actTiled: bad shape M=${M} Kp=${Kp} K8=${K8} (Kp, K8 multiples of ${KT})`);
  return { Mpad: Math.ceil(M / 128) * 128, T8: K8 / KT, T: Kp / KT };
}

/** Byte offset into X of channel k of row m, and the value stored there for code q (int8 code or int4 in -8..7). */
export function actTiledPlace(s: ActTiledShape, Mpad: number, m: number, k: number): { byte: number; scale: number } {
  const int8 = k < s.K8;
  const i = int8 ? k / KT | 0 : s.K8 / KT + ((k - s.K8) / KT | 0);
  const r = int8 ? k % KT : (k - s.K8) % KT; // channel inside the tile
  // INT4: group g of 32 channels -> pieces 2g (even channels) and 2g + 1 (odd), position (r % 32) >> 1 inside
  const piece = int8 ? r >> 4 : 2 * (r >> 5) + (r & 1);
  const pos = int8 ? r & 15 : (r & 31) >> 1;
  return { byte: (i * Mpad + m) * KT + ((piece ^ (m & 7)) << 4) + pos, scale: int8 ? 1 : 16 };
}

/** a8: int8 [M][K8]; a4: packed int4x2 [M][(Kp-K8)/2] (low nibble = even channel); sa: f16 bits [M][Kp/128]. */
export function packActTiled(a8: Int8Array, a4: Uint8Array, sa: Uint16Array, s: ActTiledShape): ActTiled {
  const { Mpad, T8, T } = dims(s);
  const K4 = s.Kp - s.K8;
  if (a8.length !== s.M * s.K8 || a4.length !== (s.M * K4) / 2 || sa.length !== s.M * T)
    throw new RangeError(`packActTiled: buffers do not match M=${s.M} Kp=${s.Kp} K8=${s.K8}`);
  const X = new Int8Array(T * Mpad * KT), SA = new Float32Array(T * Mpad);
  for (let m = 0; m < s.M; m++) {
    for (let k = 0; k < s.Kp; k++) {
      const { byte, scale } = actTiledPlace(s, Mpad, m, k);
      let q: number;
      if (k < s.K8) q = a8[m * s.K8 + k];
      else {
        const b = a4[(m * K4 + (k - s.K8)) >> 1];
        q = ((((k - s.K8) & 1 ? b >> 4 : b) & 15) << 28) >> 28;
      }
      X[byte] = q * scale;
    }
    for (let i = 0; i < T; i++) SA[i * Mpad + m] = fromF16Bits(sa[m * T + i]) * (i < T8 ? 2 ** -4 : 2 ** -8);
  }
  return { Mpad, T8, T, X, SA };
}

/** The inverse of packActTiled (codes and f16 scale bits back), for the round-trip test. */
export function unpackActTiled(p: ActTiled, s: ActTiledShape): { a8: Int8Array; a4: Uint8Array; sa: Uint16Array } {
  const K4 = s.Kp - s.K8;
  const a8 = new Int8Array(s.M * s.K8), a4 = new Uint8Array((s.M * K4) / 2), sa = new Uint16Array(s.M * p.T);
  for (let m = 0; m < s.M; m++) {
    for (let k = 0; k < s.Kp; k++) {
      const { byte, scale } = actTiledPlace(s, p.Mpad, m, k);
      const q = p.X[byte] / scale;
      if (k < s.K8) a8[m * s.K8 + k] = q;
      else a4[(m * K4 + (k - s.K8)) >> 1] |= (q & 15) << ((k - s.K8) & 1 ? 4 : 0);
    }
    for (let i = 0; i < p.T; i++) sa[m * p.T + i] = f16Bits(p.SA[i * p.Mpad + m] / (i < p.T8 ? 2 ** -4 : 2 ** -8));
  }
  return { a8, a4, sa };
}
