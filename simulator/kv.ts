// Paged KV storage (DESIGN §3.5) as the simulator holds it. A store writes one token's K and V rows for all
// KV heads into (layer, page, slot) and reads one head's row back as f32 (dequantized for kv4).
// f32 layout, per layer: (page, n_kv_heads, P, head_dim) f32, K and V alike.
import type { KVCacheSpec } from './formats.ts';

export interface KVStore {
  readonly spec: KVCacheSpec;
  /** k, v: [nKvHeads*headDim] rows starting at offsets ko, vo */
  write(layer: number, page: number, slot: number, k: Float32Array, ko: number, v: Float32Array, vo: number): void;
  readK(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void;
  readV(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void;
}

export class KVStoreF32 implements KVStore {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
  constructor(readonly spec: KVCacheSpec) {
    const n = spec.numPages * spec.nKvHeads * spec.pageSize * spec.headDim;
    this.k = Array.from({ length: spec.nLayers }, () => new Float32Array(n));
    this.v = Array.from({ length: spec.nLayers }, () => new Float32Array(n));
  }
  private off(page: number, kvh: number, slot: number): number {
    const { nKvHeads, pageSize, headDim } = this.spec;
    return ((page * nKvHeads + kvh) * pageSize + slot) * headDim;
  }
  write(layer: number, page: number, slot: number, k: Float32Array, ko: number, v: Float32Array, vo: number): void {
    const hd = this.spec.headDim;
    for (let h = 0; h < this.spec.nKvHeads; h++) {
      const o = this.off(page, h, slot);
      this.k[layer].set(k.subarray(ko + h * hd, ko + (h + 1) * hd), o);
      this.v[layer].set(v.subarray(vo + h * hd, vo + (h + 1) * hd), o);
    }
  }
  readK(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void {
    const o = this.off(page, kvh, slot);
    out.set(this.k[layer].subarray(o, o + this.spec.headDim));
  }
  readV(layer: number, page: number, kvh: number, slot: number, out: Float32Array): void {
    const o = this.off(page, kvh, slot);
    out.set(this.v[layer].subarray(o, o + this.spec.headDim));
  }
}
