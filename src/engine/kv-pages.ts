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
  free: number; // pages no sequence holds (never used, or cached and idle: evictable)
  used: number; // pages held by sequences
  allocated: number; // page references handed out since start (counter; a cache hit is one)
  released: number; // page references returned since start (counter)
  cached: number; // pages whose contents are registered in the prefix cache (held or idle)
  cachedIdle: number; // of those, held by no sequence (reused on a hit, evicted least recently used first)
  hitPages: number; // prompt pages found in the prefix cache (counter)
  lookupPages: number; // full prompt pages looked up (counter)
  evictions: number; // idle cached pages taken back for new allocations (counter)
}

/** A prefix-cache entry: the page holding one full block of tokens after a given prefix. `serial` names the
 *  entry uniquely for its lifetime (never reused), so a child block's key `parentSerial:tokens` can never match
 *  a prefix other than the one it was computed after, even once the parent's page is evicted and reused. */
interface Entry { page: number; serial: number; key: string }

/** Automatic prefix caching (issue 19 §4): a full page's KV depends only on the tokens up to its end (rows are
 *  computed as alone: scheduler.ts), so a page computed for one sequence serves any later sequence whose tokens
 *  agree up to there. Pages are reference-counted; a cached page no sequence holds stays cached (idle) until
 *  an allocation needs it, least recently released first. */
export class PagePool {
  private readonly freeList: number[];
  private readonly refs: Uint32Array; // sequences holding each page: catches double frees
  private allocated = 0;
  private released = 0;
  private readonly byKey = new Map<string, Entry>();
  private readonly entryOf: (Entry | undefined)[];
  private readonly idle = new Set<number>(); // cached pages held by nobody, least recently released first
  private nextSerial = 1;
  private hitPages = 0;
  private lookupPages = 0;
  private evictions = 0;

  constructor(readonly total: number) {
    if (!(Number.isInteger(total) && total > 0)) throw new CometError(`KV pool: need at least one page, got ${total}`);
    // pop() hands out low ids first
    this.freeList = Array.from({ length: total }, (_, i) => total - 1 - i);
    this.refs = new Uint32Array(total);
    this.entryOf = new Array(total);
  }

  get free(): number {
    return this.freeList.length + this.idle.size;
  }

  /** n fresh pages, or null (and nothing taken) when fewer than n are free; idle cached pages are evicted
   *  (least recently released first) when the never-cached ones run out. */
  alloc(n: number): number[] | null {
    if (n > this.free) return null;
    const out = this.freeList.splice(Math.max(0, this.freeList.length - n), n).reverse();
    for (const p of this.idle) {
      if (out.length === n) break;
      this.idle.delete(p);
      this.forget(p);
      this.evictions++;
      out.push(p);
    }
    for (const p of out) this.refs[p] = 1;
    this.allocated += n;
    return out;
  }

  release(pages: readonly number[]): void {
    for (const p of pages) {
      if (!(this.refs[p] > 0)) throw new Error(`KV pool: page ${p} released twice or never allocated`);
      if (--this.refs[p] > 0) continue;
      if (this.entryOf[p]) this.idle.add(p);
      else this.freeList.push(p);
    }
    this.released += pages.length;
  }

  /** The cached pages of the leading full blocks of `tokens` (at most `maxPages`), each taken by reference, with
   *  their serials. */
  match(tokens: readonly number[], pageSize: number, maxPages: number): { pages: number[]; serials: number[] } {
    const pages: number[] = [], serials: number[] = [];
    let parent = 0;
    const n = Math.min(maxPages, Math.floor(tokens.length / pageSize));
    for (let i = 0; i < n; i++) {
      const e = this.byKey.get(blockKey(parent, tokens, i, pageSize));
      if (!e) break;
      if (this.refs[e.page]++ === 0) this.idle.delete(e.page);
      pages.push(e.page);
      serials.push(e.serial);
      parent = e.serial;
    }
    this.allocated += pages.length;
    return { pages, serials };
  }

  /** Count a lookup of `pages` full prompt pages, `hits` of them found (once per admitted sequence: a head of the
   *  queue that waits for pages gives its hits back and looks again later). */
  countLookup(pages: number, hits: number): void {
    this.lookupPages += pages;
    this.hitPages += hits;
  }

  /** Register `page`, holding the full block `i` of `tokens` after the prefix named by `parent` (0: the start),
   *  and return the serial a next block chains from. A block already cached elsewhere keeps its first page
   *  (same contents); this page then stays private and returns to the free list when released. */
  register(page: number, parent: number, tokens: readonly number[], i: number, pageSize: number): number {
    const key = blockKey(parent, tokens, i, pageSize);
    const had = this.byKey.get(key);
    if (had) return had.serial;
    if (this.entryOf[page]) return this.entryOf[page]!.serial; // (cannot happen: a page is registered once)
    const e: Entry = { page, serial: this.nextSerial++, key };
    this.byKey.set(key, e);
    this.entryOf[page] = e;
    return e.serial;
  }

  private forget(p: number): void {
    const e = this.entryOf[p];
    if (!e) return;
    this.byKey.delete(e.key);
    this.entryOf[p] = undefined;
  }

  stats(): PoolStats {
    const free = this.free;
    return {
      total: this.total, free, used: this.total - free, allocated: this.allocated, released: this.released,
      cached: this.byKey.size, cachedIdle: this.idle.size, hitPages: this.hitPages, lookupPages: this.lookupPages, evictions: this.evictions,
    };
  }
}

const blockKey = (parent: number, tokens: readonly number[], i: number, P: number) => `${parent}:${tokens.slice(i * P, (i + 1) * P).join(',')}`;
