// The paged KV manager (DESIGN §3.5): one pool of pages, sized once from the bytes the user allows, shared by
// every sequence. A sequence holds a block table (page ids, in position order); page i of a sequence holds
// its positions [i·P, (i+1)·P). Pages go back to the pool on finish, cancel, error and preemption; the
// counters let tests prove that none leaks.
import type { KVCacheSpec } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';

/** Bytes of one page across all layers and KV heads (K and V), as the backend must hold it:
 *   f32: K and V rows          2 · P · hd · 4
 *   kv4: K and V codes u4x2    2 · P · hd/2,  plus f16 (s, z) per token per group for K and V: 2 · P · (hd/G) · 4 */
export function pageBytes(spec: Omit<KVCacheSpec, 'numPages'>): number {
  const { nLayers, nKvHeads, headDim: hd, pageSize: P, dtype, group: G } = spec;
  const perHead = dtype === 'f32' ? 2 * P * hd * 4 : 2 * ((P * hd) / 2) + 2 * P * (hd / G) * 4;
  return nLayers * nKvHeads * perHead;
}

export interface PoolStats {
  total: number;
  free: number;
  used: number;
  allocated: number; // pages handed out since start (counter)
  released: number; // pages returned since start (counter)
}

export class PagePool {
  private readonly freeList: number[];
  private readonly owned: Uint8Array; // 1 while a page is out of the pool: catches double frees
  private allocated = 0;
  private released = 0;

  constructor(readonly total: number) {
    if (!(Number.isInteger(total) && total > 0)) throw new CometError(`KV pool: need at least one page, got ${total}`);
    // pop() hands out low ids first
    this.freeList = Array.from({ length: total }, (_, i) => total - 1 - i);
    this.owned = new Uint8Array(total);
  }

  get free(): number {
    return this.freeList.length;
  }

  /** n pages, or null (and nothing taken) when fewer than n are free. */
  alloc(n: number): number[] | null {
    if (n > this.freeList.length) return null;
    const out = this.freeList.splice(this.freeList.length - n, n).reverse();
    for (const p of out) this.owned[p] = 1;
    this.allocated += n;
    return out;
  }

  release(pages: readonly number[]): void {
    for (const p of pages) {
      if (this.owned[p] !== 1) throw new Error(`KV pool: page ${p} released twice or never allocated`);
      this.owned[p] = 0;
      this.freeList.push(p);
    }
    this.released += pages.length;
  }

  stats(): PoolStats {
    const free = this.freeList.length;
    return { total: this.total, free, used: this.total - free, allocated: this.allocated, released: this.released };
  }
}
