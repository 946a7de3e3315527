// KV4 cache (DESIGN §3.5): K (after RoPE) and V quantized per token, per KV head, per group of G channels,
// asymmetric uint4 with f16 (s, z). Paged: P tokens per page.
//
// Physical layout, one Uint8Array per layer of numPages·pageBytes bytes; page p, KV head h starts at
// (p·nKvHeads + h)·headBytes and holds, in this order:
//   kCodes u4x2 [P][headDim/2]   token-major, canonical nibbles (channel 2i low nibble of byte i)
//   vCodes u4x2 [P][headDim/2]
//   kSZ    f16  [P][headDim/G][2] (s, z) pairs, little-endian
//   vSZ    f16  [P][headDim/G][2]
// (f16 words in host byte order through a Uint16Array view: little-endian on every platform we run on.)
// so one (page, head) is one contiguous chunk a kernel can fetch with one copy.
import type { KVCacheSpec } from './formats.ts';
import type { KVStore } from './kv.ts';
import { f16Bits, fromF16Bits, roundHalfEven, toF16 } from './f16.ts';

/** Byte offsets inside one (page, head) chunk, derived from the spec. */
export function kv4Layout(spec: KVCacheSpec) {
  const { headDim: hd, pageSize: P, group: G } = spec;
  if (!(G > 0 && hd % G === 0 && G % 2 === 0)) throw new RangeError(`KV4: group ${G} must be even and divide headDim ${hd}`);
  const codeBytes = (P * hd) / 2, szBytes = P * (hd / G) * 4;
  const headBytes = 2 * codeBytes + 2 * szBytes;
  return { codeBytes, szBytes, headBytes, pageBytes: spec.nKvHeads * headBytes, kCodes: 0, vCodes: codeBytes, kSZ: 2 * codeBytes, vSZ: 2 * codeBytes + szBytes };
}

/** Quantize x[offset .. offset+G) (f32 values) -> codesOut[codesOffset ..] (0..15, one per element).
 *  lo = min, hi = max (f32); s = f16(f32(hi - lo) / 15) (f64 quotient rounded once to f16; equal to
 *  f16(__fdiv_rn(.., 15)): a 24-bit numerator over 15 keeps ≥ 3 bits of the period-4 fraction in f32, too few
 *  ones or zeros in a row to round onto an f16 tie; kv4.test.ts samples it); z = f16(lo); s == 0 -> codes 0; else
 *  q = clamp(roundHalfEven(f32(f32(x - z) / s)), 0, 15). Returns the f16 values s and z as numbers. */
export function kv4QuantizeGroup(x: ArrayLike<number>, offset: number, G: number, codesOut: Uint8Array, codesOffset: number): { s: number; z: number } {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < G; i++) { const v = x[offset + i]; if (v < lo) lo = v; if (v > hi) hi = v; }
  const s = toF16(Math.fround(hi - lo) / 15), z = toF16(lo);
  if (!Number.isFinite(s) || !Number.isFinite(z)) throw new RangeError(`KV4: group [${lo}, ${hi}] does not fit f16 scales`);
  for (let i = 0; i < G; i++)
    codesOut[codesOffset + i] = s === 0 ? 0 : Math.min(15, Math.max(0, roundHalfEven(Math.fround(Math.fround(x[offset + i] - z) / s))));
  return { s, z };
}

/** x' = f32(q·s + z): q·s is exact in f32 (4-bit × 11-bit significands), then one f32 rounding of the add
 *  (so an FMA gives the same bits). Here the add is done in f64, where it is exact (both terms are multiples
 *  of 2^-24 below 2^21), and rounded once by the store into the Float32Array. codes [G] at codesOffset -> out. */
export function kv4DequantizeGroup(codes: ArrayLike<number>, codesOffset: number, G: number, s: number, z: number, out: Float32Array, outOffset: number): void {
  for (let i = 0; i < G; i++) out[outOffset + i] = Math.fround(codes[codesOffset + i] * s) + z;
}

export class KVStoreKV4 implements KVStore {
  readonly layout: ReturnType<typeof kv4Layout>;
  /** per layer: numPages·pageBytes bytes (layout above) */
  readonly data: Uint8Array[];
  /** the same memory as f16 words (for the (s, z) pairs; byte offset / 2) */
  readonly words: Uint16Array[];
  private readonly q: Uint8Array;

  constructor(readonly spec: KVCacheSpec) {
    this.layout = kv4Layout(spec);
    const bytes = spec.numPages * this.layout.pageBytes;
    this.data = Array.from({ length: spec.nLayers }, () => new Uint8Array(bytes));
    this.words = this.data.map((d) => new Uint16Array(d.buffer, d.byteOffset, bytes / 2));
    this.q = new Uint8Array(spec.headDim);
  }

  /** byte offset of (page, head) in a layer */
  chunk(page: number, kvh: number): number {
    if (!(page >= 0 && page < this.spec.numPages)) throw new RangeError(`KV4: page ${page} outside the pool of ${this.spec.numPages}`);
    return (page * this.spec.nKvHeads + kvh) * this.layout.headBytes;
  }

  write(layer: number, page: number, slot: number, k: Float32Array, ko: number, v: Float32Array, vo: number): void {
    const hd = this.spec.headDim;
    for (let h = 0; h < this.spec.nKvHeads; h++) {
      this.put(layer, page, h, slot, k, ko + h * hd, this.layout.kCodes, this.layout.kSZ);
      this.put(layer, page, h, slot, v, vo + h * hd, this.layout.vCodes, this.layout.vSZ);
    }
  }

  private put(layer: number, page: number, h: number, slot: number, x: Float32Array, xo: number, codesAt: number, szAt: number): void {
    const { headDim: hd, group: G } = this.spec, ng = hd / G, base = this.chunk(page, h);
    const d = this.data[layer], w = this.words[layer], q = this.q;
    for (let g = 0; g < ng; g++) {
      const { s, z } = kv4QuantizeGroup(x, xo + g * G, G, q, g * G);
      const wo = (base + szAt) / 2 + (slot * ng + g) * 2;
      w[wo] = f16Bits(s);
      w[wo + 1] = f16Bits(z);
    }
    const co = base + codesAt + (slot * hd) / 2;
    for (let i = 0; i < hd; i += 2) d[co + i / 2] = q[i] | (q[i + 1] << 4);
  }

  private get(layer: number, page: number, h: number, slot: number, out: Float32Array, codesAt: number, szAt: number): void {
    const { headDim: hd, group: G } = this.spec, ng = hd / G, base = this.chunk(page, h);
    const d = this.data[layer], w = this.words[layer];
    const co = base + codesAt + (slot * hd) / 2;
    for (let g = 0; g < ng; g++) {
      const wo = (base + szAt) / 2 + (slot * ng + g) * 2;
      const s = fromF16Bits(w[wo]), z = fromF16Bits(w[wo + 1]);
      for (let i = g * G; i < (g + 1) * G; i++) out[i] = Math.fround(((d[co + (i >> 1)] >>> ((i & 1) << 2)) & 0xf) * s) + z;
    }
  }

  readK(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void {
    this.get(layer, page, kvh, slot, out, this.layout.kCodes, this.layout.kSZ);
  }
  readV(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void {
    this.get(layer, page, kvh, slot, out, this.layout.vCodes, this.layout.vSZ);
  }
}
