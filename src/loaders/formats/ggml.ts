// ggml's tensor types as GGUF files store them (ggml/src/ggml-common.h, the `block_*` structs), declared as data
// with their sizes; dequantization to f32 for every type COMET reads, and quantization for the two it writes.
// Browser-safe. Blocks run along a row (ne0, the contiguous dimension); a row holds a whole number of blocks.
//
//   F32    4 bytes/elem             F16  2 (IEEE half)          BF16  2 (top half of an f32)
//   Q8_0   32 elems, 34 bytes:  f16 d · int8 qs[32]                      x = d·q
//   Q4_0   32 elems, 18 bytes:  f16 d · u8 qs[16]                        x[j] = d·((qs[j] & 15) - 8),
//                                                                        x[j+16] = d·((qs[j] >> 4) - 8)
//   Q4_K  256 elems, 144 bytes: f16 d · f16 dmin · u8 scales[12] · u8 qs[128]
//          8 sub-blocks of 32, each with a 6-bit scale sc and min m packed in scales[12] (get_scale_min_k4);
//          x = d·sc·q - dmin·m, q a nibble; 64 elements per 32 bytes of qs (low nibbles, then high)
//   Q6_K  256 elems, 210 bytes: u8 ql[128] · u8 qh[64] · int8 scales[16] · f16 d
//          q = (4 low bits from ql | 2 high bits from qh) - 32; x = d·scales[i/16]·q
// Quantizers follow ggml's reference ones (quantize_row_q8_0_ref, quantize_row_q4_0_ref) in f32 arithmetic, so a
// file COMET writes is the file llama.cpp's own converter would write from the same floats.
import { f16Bits, fromF16Bits } from '../../../simulator/f16.ts';
import { CometError } from '../../errors.ts';

export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, Q6_K: 14, BF16: 30 } as const;
export type GgmlType = (typeof GGML)[keyof typeof GGML];

/** Elements per block and bytes per block of each type COMET reads. */
export const GGML_BLOCK: Record<GgmlType, { elems: number; bytes: number; name: string }> = {
  [GGML.F32]: { elems: 1, bytes: 4, name: 'F32' },
  [GGML.F16]: { elems: 1, bytes: 2, name: 'F16' },
  [GGML.BF16]: { elems: 1, bytes: 2, name: 'BF16' },
  [GGML.Q8_0]: { elems: 32, bytes: 2 + 32, name: 'Q8_0' },
  [GGML.Q4_0]: { elems: 32, bytes: 2 + 16, name: 'Q4_0' },
  [GGML.Q4_K]: { elems: 256, bytes: 2 + 2 + 12 + 128, name: 'Q4_K' },
  [GGML.Q6_K]: { elems: 256, bytes: 128 + 64 + 16 + 2, name: 'Q6_K' },
};

export const isGgmlType = (t: number): t is GgmlType => t in GGML_BLOCK;

/** Bytes of a tensor of `n` elements whose rows are `ne0` long; throws when ne0 is not a whole number of blocks. */
export function ggmlBytes(type: GgmlType, ne0: number, n: number, what: string): number {
  const b = GGML_BLOCK[type];
  if (ne0 % b.elems !== 0) throw new CometError(`${what}: rows of ${ne0} elements are not a whole number of ${b.name} blocks (${b.elems} each)`);
  return (n / b.elems) * b.bytes;
}

let F16_TABLE: Float32Array | undefined; // 64K entries: dequantizing a model reads an f16 per block or per element
const half = (bits: number) => (F16_TABLE ??= Float32Array.from({ length: 65536 }, (_, h) => fromF16Bits(h)))[bits];

/** `n` elements of `type` from `bytes` (exactly ggmlBytes long) to f32. */
export function dequantize(type: GgmlType, bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { elems, bytes: bs } = GGML_BLOCK[type];
  const f16 = (o: number) => half(dv.getUint16(o, true));
  // little-endian host (as every loader assumes): the float types are typed-array views of an aligned copy
  const u16 = () => new Uint16Array(bytes.slice().buffer, 0, n);
  switch (type) {
    case GGML.F32:
      return new Float32Array(bytes.slice().buffer, 0, n);
    case GGML.F16: {
      const h = u16(), t = (F16_TABLE ??= Float32Array.from({ length: 65536 }, (_, b) => fromF16Bits(b)));
      for (let i = 0; i < n; i++) out[i] = t[h[i]];
      return out;
    }
    case GGML.BF16: {
      const h = u16(), w = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) w[i] = h[i] << 16;
      return out;
    }
  }
  for (let b = 0, o = 0, y = 0; y < n; b++, o = b * bs, y = b * elems) {
    switch (type) {
      case GGML.Q8_0: {
        const d = f16(o);
        for (let j = 0; j < 32; j++) out[y + j] = d * dv.getInt8(o + 2 + j);
        break;
      }
      case GGML.Q4_0: {
        const d = f16(o);
        for (let j = 0; j < 16; j++) {
          const q = bytes[o + 2 + j];
          out[y + j] = d * ((q & 15) - 8);
          out[y + j + 16] = d * ((q >> 4) - 8);
        }
        break;
      }
      case GGML.Q4_K: {
        const d = f16(o), dmin = f16(o + 2), sc = o + 4, qs = o + 16;
        // get_scale_min_k4: sub-blocks 0-3 keep their 6-bit scale/min in scales[j], scales[j+4]; 4-7 split
        // theirs between the low/high nibble of scales[j+4] and the top 2 bits of scales[j-4], scales[j]
        const scaleMin = (j: number): [number, number] => j < 4
          ? [bytes[sc + j] & 63, bytes[sc + j + 4] & 63]
          : [(bytes[sc + j + 4] & 15) | ((bytes[sc + j - 4] >> 6) << 4), (bytes[sc + j + 4] >> 4) | ((bytes[sc + j] >> 6) << 4)];
        for (let j = 0; j < 4; j++) {
          const [s1, m1] = scaleMin(2 * j), [s2, m2] = scaleMin(2 * j + 1);
          const d1 = Math.fround(d * s1), mm1 = Math.fround(dmin * m1), d2 = Math.fround(d * s2), mm2 = Math.fround(dmin * m2);
          for (let l = 0; l < 32; l++) {
            const q = bytes[qs + 32 * j + l];
            out[y + 64 * j + l] = Math.fround(d1 * (q & 15)) - mm1;
            out[y + 64 * j + 32 + l] = Math.fround(d2 * (q >> 4)) - mm2;
          }
        }
        break;
      }
      case GGML.Q6_K: {
        const ql = o, qh = o + 128, sc = o + 192, d = f16(o + 208);
        for (let h = 0; h < 2; h++) // two halves of 128 elements: ql advances 64, qh 32, scales 8
          for (let l = 0; l < 32; l++) {
            const a = bytes[ql + 64 * h + l], c = bytes[ql + 64 * h + l + 32], hb = bytes[qh + 32 * h + l];
            const s = (k: number) => Math.fround(d * dv.getInt8(sc + 8 * h + (l >> 4) + k));
            const base = y + 128 * h + l;
            out[base] = s(0) * (((a & 15) | ((hb & 3) << 4)) - 32);
            out[base + 32] = s(2) * (((c & 15) | (((hb >> 2) & 3) << 4)) - 32);
            out[base + 64] = s(4) * (((a >> 4) | (((hb >> 4) & 3) << 4)) - 32);
            out[base + 96] = s(6) * (((c >> 4) | (((hb >> 6) & 3) << 4)) - 32);
          }
        break;
      }
    }
  }
  return out;
}

/** f32 values to `type` (F32, F16, Q8_0 or Q4_0); x.length a multiple of the block. */
export function quantize(type: GgmlType, x: Float32Array): Uint8Array {
  const { elems, bytes: bs } = GGML_BLOCK[type];
  const out = new Uint8Array((x.length / elems) * bs);
  const dv = new DataView(out.buffer);
  const f = Math.fround;
  switch (type) {
    case GGML.F32:
      out.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
      return out;
    case GGML.F16:
      for (let i = 0; i < x.length; i++) dv.setUint16(2 * i, f16Bits(x[i]), true);
      return out;
    case GGML.Q8_0: // d = amax/127, q = roundf(x/d) (C roundf: half away from zero)
      for (let b = 0; b < x.length / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]));
        const d = f(amax / 127), id = d ? f(1 / d) : 0;
        dv.setUint16(b * bs, f16Bits(d), true);
        for (let j = 0; j < 32; j++) {
          const v = f(x[32 * b + j] * id);
          dv.setInt8(b * bs + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
        }
      }
      return out;
    case GGML.Q4_0: // d = (the signed value of largest magnitude) / -8, q = min(15, trunc(x/d + 8.5))
      for (let b = 0; b < x.length / 32; b++) {
        let amax = 0, max = 0;
        for (let j = 0; j < 32; j++) {
          const v = x[32 * b + j];
          if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
        }
        const d = f(max / -8), id = d ? f(1 / d) : 0;
        dv.setUint16(b * bs, f16Bits(d), true);
        const q = (v: number) => Math.min(15, Math.trunc(f(f(v * id) + 8.5)));
        for (let j = 0; j < 16; j++) out[b * bs + 2 + j] = q(x[32 * b + j]) | (q(x[32 * b + j + 16]) << 4);
      }
      return out;
  }
  throw new CometError(`writing ${GGML_BLOCK[type].name} tensors is not supported (F32, F16, Q8_0, Q4_0 are)`);
}
