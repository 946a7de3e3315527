// The browser's model store: a model downloaded once is kept on disk, in the Origin Private File System (OPFS)
// where the browser has it, else in the Cache API, and later loads read it from there with no network
// request at all (`revalidate: true` asks the server with a HEAD whether the file changed).
//
// A download streams to disk chunk by chunk (no whole-file buffer in memory). Before it starts, the size the
// server announces is checked against navigator.storage.estimate(); persist() is asked for once, so the
// browser does not evict models under storage pressure. A full disk (QuotaExceededError), a broken
// download or an abort leave no partial file behind.
//
// OPFS layout, under the directory `comet-models` (the store's name):
//   <key>.bin    the file's bytes
//   <key>.json   { url, bytes, stamp, storedAt }, written after the bytes are complete (its presence marks them so)
// where <key> is the URL's file name and a hash of the whole URL.
import { CometError } from '../errors.ts';

export interface LoadProgress {
  phase: 'download' | 'cache' | 'read' | 'verify' | 'upload' | 'compile' | 'ready';
  loaded: number; // bytes (download, cache, read, upload) or tensors (verify)
  total?: number; // undefined when the server sends no Content-Length
  message: string;
}

export interface CachedModel {
  url: string;
  bytes: number;
  storedAt: string; // ISO date
  where: 'opfs' | 'cache-api';
}

export interface FetchModelOptions {
  onProgress?: (p: LoadProgress) => void;
  /** the store's name; false: download without keeping a copy (default 'comet-models') */
  cache?: string | false;
  /** ask the server (HEAD) whether a stored copy is still the file at that URL (default false: use it) */
  revalidate?: boolean;
  signal?: AbortSignal;
}

export const DEFAULT_STORE = 'comet-models';

// ---- small helpers ----

export function abortError(): Error {
  const e = new Error('loading was aborted');
  e.name = 'AbortError';
  return e;
}

const size = (n: number) => (n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : n < 2 ** 30 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 2 ** 30).toFixed(2)} GiB`);

const sizeOf = (r: Response) => {
  const n = Number(r.headers.get('content-length'));
  return Number.isFinite(n) && n > 0 && !r.headers.get('content-encoding') ? n : undefined;
};
const stampOf = (r: Response) => [r.headers.get('etag'), r.headers.get('last-modified'), r.headers.get('content-length')].join('|');

/** FNV-1a, 32 bits, hex: a short stable name for a URL */
function hash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}
const keyOf = (url: string) => `${(url.replace(/[?#].*$/, '').replace(/^.*\//, '').replace(/[^\w.-]/g, '_') || 'model').slice(0, 80)}-${hash(url)}`;

const isQuota = (e: unknown) => (e as { name?: string })?.name === 'QuotaExceededError';

function quotaError(url: string, need: number | undefined, est?: StorageEstimate): CometError {
  const room = est?.quota !== undefined ? ` The browser allows this site ${size(est.quota)} and ${size(est.usage ?? 0)} are in use.` : '';
  return new CometError(`Not enough browser storage to keep ${url}${need ? ` (${size(need)})` : ''}.${room} `
    + 'Delete cached models you no longer need (deleteCachedModel), free disk space, or load without keeping a copy (cache: false).', 'quota');
}

/** Read a stream into one buffer (size known: no second copy), reporting progress; `signal` cancels it. */
export async function readStream(body: ReadableStream<Uint8Array>, total: number | undefined, report: (loaded: number) => void, signal?: AbortSignal): Promise<Uint8Array> {
  const reader = body.getReader();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const parts: Uint8Array[] = [];
    let whole = total !== undefined ? new Uint8Array(total) : undefined, loaded = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (signal?.aborted) throw abortError();
      if (done) break;
      if (whole && loaded + value.length <= whole.length) whole.set(value, loaded);
      else {
        if (whole) { parts.push(whole.subarray(0, loaded)); whole = undefined; }
        parts.push(value);
      }
      loaded += value.length;
      report(loaded);
    }
    if (whole) return whole.subarray(0, loaded);
    const out = new Uint8Array(loaded);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

// ---- the two stores ----

interface Entry { url: string; bytes: number; stamp: string; storedAt: string }

interface Store {
  where: CachedModel['where'];
  get(url: string): Promise<{ entry: Entry; blob: Blob } | undefined>;
  /** stream `body` to disk; resolves once the bytes and their entry are complete */
  put(url: string, body: ReadableStream<Uint8Array>, entry: Omit<Entry, 'bytes' | 'storedAt'>, onChunk: (loaded: number) => void): Promise<{ entry: Entry; blob: Blob }>;
  delete(url: string): Promise<boolean>;
  list(): Promise<Entry[]>;
}

async function opfsStore(name: string): Promise<Store | undefined> {
  const storage = typeof navigator !== 'undefined' ? navigator.storage : undefined;
  if (!storage?.getDirectory) return undefined;
  let dir: FileSystemDirectoryHandle;
  try {
    dir = await (await storage.getDirectory()).getDirectoryHandle(name, { create: true });
  } catch {
    return undefined; // OPFS disabled (private window in some browsers): the Cache API then
  }
  if (typeof (FileSystemFileHandle.prototype as { createWritable?: unknown }).createWritable !== 'function') return undefined;
  const file = async (n: string, create = false) => dir.getFileHandle(n, { create }).catch(() => undefined);
  const readEntry = async (key: string): Promise<Entry | undefined> => {
    const h = await file(`${key}.json`);
    if (!h) return undefined;
    try {
      return JSON.parse(await (await h.getFile()).text()) as Entry;
    } catch {
      return undefined;
    }
  };
  const remove = async (key: string) => {
    let had = false;
    for (const n of [`${key}.json`, `${key}.bin`]) had = (await dir.removeEntry(n).then(() => true, () => false)) || had;
    return had;
  };
  return {
    where: 'opfs',
    async get(url) {
      const key = keyOf(url), entry = await readEntry(key), h = entry && (await file(`${key}.bin`));
      if (!entry || !h || entry.url !== url) return undefined;
      const blob = await h.getFile();
      if (blob.size !== entry.bytes) { await remove(key); return undefined; }
      return { entry, blob };
    },
    async put(url, body, e, onChunk) {
      const key = keyOf(url);
      await dir.removeEntry(`${key}.json`).catch(() => {}); // the old copy is no longer complete
      const h = (await file(`${key}.bin`, true))!;
      const w = await h.createWritable({ keepExistingData: false });
      let loaded = 0;
      try {
        const reader = body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          await w.write(value as Uint8Array<ArrayBuffer>);
          onChunk((loaded += value.length));
        }
        await w.close();
      } catch (err) {
        await w.abort().catch(() => {});
        await remove(key);
        throw err;
      }
      const entry: Entry = { ...e, bytes: loaded, storedAt: new Date().toISOString() };
      const jw = await (await file(`${key}.json`, true))!.createWritable();
      await jw.write(JSON.stringify(entry));
      await jw.close();
      return { entry, blob: await h.getFile() };
    },
    delete: async (url) => remove(keyOf(url)),
    async list() {
      const out: Entry[] = [];
      for await (const n of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) {
        if (!n.endsWith('.json')) continue;
        const e = await readEntry(n.slice(0, -5));
        if (e) out.push(e);
      }
      return out;
    },
  };
}

async function cacheApiStore(name: string): Promise<Store | undefined> {
  if (typeof caches === 'undefined') return undefined;
  const c = await caches.open(name).catch(() => undefined);
  if (!c) return undefined;
  const entryOf = (url: string, r: Response): Entry => ({
    url, bytes: Number(r.headers.get('content-length')), stamp: r.headers.get('x-comet-stamp') ?? '', storedAt: r.headers.get('x-comet-stored') ?? '',
  });
  return {
    where: 'cache-api',
    async get(url) {
      const r = await c.match(url);
      if (!r) return undefined;
      const entry = entryOf(url, r), blob = await r.blob(); // Chromium keeps a cached body on disk behind the Blob
      if (blob.size !== entry.bytes) { await c.delete(url); return undefined; }
      return { entry, blob };
    },
    async put(url, body, e, onChunk) {
      let loaded = 0;
      const counted = body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ transform(chunk, ctl) { onChunk((loaded += chunk.length)); ctl.enqueue(chunk); } }));
      const storedAt = new Date().toISOString();
      // the length is only known at the end: store, then re-store the headers with it (bodies are on disk)
      await c.put(url, new Response(counted, { headers: { 'content-type': 'application/octet-stream', 'x-comet-stamp': e.stamp, 'x-comet-stored': storedAt } }));
      const stored = (await c.match(url))!;
      const blob = await stored.blob();
      const entry: Entry = { ...e, bytes: blob.size, storedAt };
      await c.put(url, new Response(blob, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size), 'x-comet-stamp': e.stamp, 'x-comet-stored': storedAt } }));
      return { entry, blob };
    },
    delete: (url) => c.delete(url),
    async list() {
      const out: Entry[] = [];
      for (const req of await c.keys()) {
        const r = await c.match(req);
        if (r) out.push(entryOf(req.url, r));
      }
      return out;
    },
  };
}

const stores = new Map<string, Promise<Store | undefined>>();
/** OPFS if the browser has it, else the Cache API, else none (then every load downloads). */
function openStore(name: string): Promise<Store | undefined> {
  let s = stores.get(name);
  if (!s) stores.set(name, (s = opfsStore(name).then((o) => o ?? cacheApiStore(name))));
  return s;
}

let persistAsked = false;
/** Ask once that the site's storage be persistent (not evicted under pressure). Only pages can ask. */
async function askPersist(): Promise<void> {
  if (persistAsked) return;
  persistAsked = true;
  const s = typeof navigator !== 'undefined' ? navigator.storage : undefined;
  try {
    if (s?.persist && !(await s.persisted?.())) await s.persist();
  } catch { /* a worker, or a browser without it: the copy may be evicted, never wrong */ }
}

// ---- the API ----

/** The models stored under `store` (default 'comet-models'). */
export async function listCachedModels(store: string = DEFAULT_STORE): Promise<CachedModel[]> {
  const s = await openStore(store);
  if (!s) return [];
  return (await s.list()).map((e) => ({ url: e.url, bytes: e.bytes, storedAt: e.storedAt, where: s.where })).sort((a, b) => a.url.localeCompare(b.url));
}

/** Delete one stored model (its URL, as listCachedModels gives it); false if there was none. */
export async function deleteCachedModel(url: string, store: string = DEFAULT_STORE): Promise<boolean> {
  const s = await openStore(store);
  return s ? s.delete(new URL(url, typeof location !== 'undefined' ? location.href : undefined).href) : false;
}

/** The file at `url` as a Blob (on disk when stored): the stored copy when there is one, else downloaded to
 *  the store with progress. HTTP errors, short downloads and a full quota are CometErrors that say so. */
export async function fetchModel(url: string, o: FetchModelOptions = {}): Promise<{ blob: Blob; from: 'network' | CachedModel['where'] }> {
  const store = o.cache === false ? undefined : await openStore(o.cache ?? DEFAULT_STORE);
  const hit = await store?.get(url).catch(() => undefined);
  if (hit) {
    let fresh = true;
    if (o.revalidate) {
      try {
        const head = await fetch(url, { method: 'HEAD', cache: 'no-store', signal: o.signal });
        // gone (404/410) or changed: download again; a server that cannot answer HEAD keeps the copy
        fresh = head.ok ? stampOf(head) === hit.entry.stamp : head.status !== 404 && head.status !== 410;
      } catch (e) {
        if (o.signal?.aborted) throw e;
      }
    }
    if (fresh) return { blob: hit.blob, from: store!.where };
  }

  let res: Response;
  try {
    res = await fetch(url, { signal: o.signal, cache: 'no-store' });
  } catch (e) {
    if (o.signal?.aborted) throw e;
    throw new CometError(`${url}: cannot download (${(e as Error).message})`, 'network');
  }
  if (!res.ok) {
    void res.body?.cancel().catch(() => {});
    throw new CometError(`${url}: the server answered HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${res.status === 404 ? ' (no model at this address)' : ''}`, res.status === 404 ? 'not_found' : 'http_error');
  }
  const total = sizeOf(res);
  const progress = (loaded: number) => o.onProgress?.({ phase: 'download', loaded, total, message: `downloading ${url}` });
  let got = 0;
  const broke = (e: unknown): never => {
    if (o.signal?.aborted) throw abortError();
    if (e instanceof CometError) throw e;
    if (isQuota(e)) throw quotaError(url, total);
    throw new CometError(`${url}: the download broke off after ${got}${total ? ` of ${total}` : ''} bytes (${(e as Error).message})`, 'truncated');
  };
  if (!store || !res.body) {
    const bytes = res.body ? await readStream(res.body, total, (n) => progress((got = n)), o.signal).catch(broke) : new Uint8Array(await res.arrayBuffer());
    if (total !== undefined && bytes.length !== total) throw new CometError(`${url}: the download stopped at ${bytes.length} of ${total} bytes`, 'truncated');
    return { blob: new Blob([bytes as Uint8Array<ArrayBuffer>]), from: 'network' };
  }

  // room on disk first: a model that cannot be kept is refused before a byte is downloaded
  await askPersist();
  const est = await navigator.storage?.estimate?.().catch(() => undefined);
  if (total !== undefined && est?.quota !== undefined && est.quota - (est.usage ?? 0) < total) {
    void res.body.cancel().catch(() => {});
    throw quotaError(url, total, est);
  }
  // an abort cancels the download and errors the stream the store is writing from (which removes the part)
  const body = o.signal ? res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>(), { signal: o.signal }) : res.body;
  const { blob } = await store.put(url, body, { url, stamp: stampOf(res) }, (n) => progress((got = n))).catch(broke);
  if (total !== undefined && blob.size !== total) {
    await store.delete(url);
    throw new CometError(`${url}: the download stopped at ${blob.size} of ${total} bytes`, 'truncated');
  }
  return { blob, from: 'network' };
}
