// comet/web: the engine API in a browser, no server (DESIGN §1).
//
//   import { createEngine } from 'comet/web';
//   const engine = await createEngine('/models/wikillama-28M.comet', { backend: 'webgpu', onProgress: console.log });
//   for await (const c of await engine.chat.completions.create({ messages, stream: true }, { signal })) ...
//
// The engine is the Node one (src/engine/engine.ts); what differs is how a model arrives: a URL (fetched with
// progress, kept in the Cache API so a reload does not download again), a File/Blob the user picked, or bytes.
/// <reference types="vite/client" />
// Models are .comet files (tokenizer embedded) or llama2.c checkpoints (then pass `tokenizer`: tokenizer.bin).
import type { Backend, HostWeight, Weight } from '../backends/backend.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { shaderSourcesFromGlob } from '../backends/webgpu/shaders.ts';
import { Engine, type EngineOptions } from './engine/engine.ts';
import { pageBytes } from './engine/kv-pages.ts';
import { CometError } from './errors.ts';
import { loadModelBytes, type BytesModel } from './loaders/bytes.ts';
import { Llama } from './model/llama.ts';
import type { OpenModel } from './runtime/open.ts';
import { HFTokenizer } from './tokenizer/hf.ts';
import { Llama2cTokenizer } from './tokenizer/llama2c.ts';
import type { Tokenizer } from './tokenizer/tokenizer.ts';

export { Engine, EngineError } from './engine/engine.ts';
export type { ChatCompletion, ChatCompletionChunk, ChatParams, Completion, CompletionChunk, CompletionParams, EngineOptions, EngineStats, RequestOptions, Usage } from './engine/engine.ts';
export type { ChatMessage } from './engine/chat-template.ts';
export type { Backend } from '../backends/backend.ts';
export type { Tokenizer } from './tokenizer/tokenizer.ts';
export { CometError } from './errors.ts';
export { loadModelBytes, type BytesModel } from './loaders/bytes.ts';

export type WebBackendName = 'webgpu' | 'sim';

/** The WGSL sources, inlined at build time (Vite; `vite build --mode lib` makes a bundle for other bundlers). */
const SHADERS: Record<string, string> = import.meta.glob('../shaders/*.wgsl', { query: '?raw', import: 'default', eager: true });
export type ModelSource = string | URL | ArrayBuffer | Uint8Array | Blob;

export interface LoadProgress {
  phase: 'download' | 'cache' | 'read' | 'verify' | 'upload' | 'compile' | 'ready';
  loaded: number; // bytes (download, cache, read, upload) or tensors (verify)
  total?: number; // undefined when the server sends no Content-Length
  message: string;
}

export interface WebEngineOptions extends Omit<EngineOptions, 'backend' | 'tokenizer' | 'onProgress'> {
  backend?: WebBackendName | Backend; // default 'webgpu'
  /** llama2.c checkpoints only: their tokenizer.bin (a .comet file embeds its tokenizer) */
  tokenizer?: ModelSource;
  onProgress?: (p: LoadProgress) => void;
  /** Cache API cache for downloaded models; false: always download (default 'comet-models') */
  cache?: string | false;
  signal?: AbortSignal;
  /** run a 2-token request before returning, so pipeline compilation is not billed to the first prompt
   *  (default: true on WebGPU, false on the simulator) */
  warmup?: boolean;
}

// ---- WebGPU detection ----

export interface GpuProbe {
  ok: boolean;
  reason?: string; // why not, in words a user understands
  adapter?: string; // vendor, architecture, device, description
  software?: boolean; // a CPU implementation (SwiftShader, llvmpipe): correct, but far slower than the simulator
  features: string[]; // adapter features (shader-f16, subgroups, timestamp-query, ...)
  wgslFeatures: string[]; // WGSL language features (packed_4x8_integer_dot_product, ...)
  limits?: { maxStorageBuffersPerShaderStage: number; maxComputeWorkgroupStorageSize: number; maxStorageBufferBindingSize: number };
}

/** What the WebGPU backend needs of an adapter: the WebGPU core defaults, which its kernels stay within (at most
 *  5 storage buffers and 256 invocations per workgroup). Optional features (shader-f16, subgroups, WGSL's
 *  packed_4x8_integer_dot_product) have fallbacks; a device or pipeline that fails to start is caught in
 *  createBackend and reported the same way. */
const REQUIRED = { maxStorageBuffersPerShaderStage: 8, maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256 } as const;

export async function detectWebGPU(): Promise<GpuProbe> {
  const gpu = typeof navigator !== 'undefined' ? (navigator as Navigator).gpu : undefined;
  if (!gpu) return { ok: false, features: [], wgslFeatures: [], reason: 'This browser has no WebGPU (navigator.gpu is undefined). Chrome/Edge 113+ have it; Firefox and Safari only in recent versions or behind a flag.' };
  const wgslFeatures = [...((gpu as GPU & { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures ?? [])].sort();
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    adapter = null;
    void e;
  }
  if (!adapter) return { ok: false, features: [], wgslFeatures, reason: 'WebGPU is present but no GPU adapter is available (blocklisted driver, disabled hardware acceleration, or no GPU).' };
  const i = adapter.info;
  const name = [i?.vendor, i?.architecture, i?.device, i?.description].filter(Boolean).join(' ') || 'unnamed adapter';
  const L = adapter.limits;
  const limits = { maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage, maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize, maxStorageBufferBindingSize: L.maxStorageBufferBindingSize };
  const features = [...adapter.features].sort();
  const short = Object.entries(REQUIRED).filter(([k, v]) => (L as unknown as Record<string, number>)[k] < v);
  if (short.length)
    return { ok: false, adapter: name, features, wgslFeatures, limits, reason: `The GPU adapter (${name}) is too limited: ${short.map(([k, v]) => `${k} ${(L as unknown as Record<string, number>)[k]} < ${v}`).join(', ')}.` };
  const software = (i as GPUAdapterInfo & { isFallbackAdapter?: boolean })?.isFallbackAdapter === true || /swiftshader|llvmpipe|lavapipe|warp/i.test(name);
  return { ok: true, adapter: name, software, features, wgslFeatures, limits };
}

export async function createBackend(name: WebBackendName): Promise<Backend> {
  if (name === 'sim') return new SimBackend();
  if (name === 'webgpu') {
    const probe = await detectWebGPU();
    if (!probe.ok) throw new CometError(probe.reason!, 'no_device');
    const { createWebGPUBackend } = await import('../backends/webgpu/webgpu.ts');
    try {
      return await createWebGPUBackend({ shaders: shaderSourcesFromGlob(SHADERS) });
    } catch (e) {
      throw new CometError(`the WebGPU backend could not start on this adapter (${probe.adapter}): ${(e as Error).message}`, 'no_device');
    }
  }
  throw new CometError(`unknown backend '${name}' (comet/web has: webgpu, sim)`);
}

// ---- bytes from URLs, files and caches ----

const DEFAULT_CACHE = 'comet-models';

async function readStream(body: ReadableStream<Uint8Array>, total: number | undefined, report: (loaded: number) => void, signal?: AbortSignal): Promise<Uint8Array> {
  const reader = body.getReader();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // one buffer when the size is known (no second copy), else chunks joined at the end
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

function abortError(): Error {
  const e = new Error('loading was aborted');
  e.name = 'AbortError';
  return e;
}

const sizeOf = (r: Response) => {
  const n = Number(r.headers.get('content-length'));
  return Number.isFinite(n) && n > 0 && !r.headers.get('content-encoding') ? n : undefined;
};

/** Bytes at `url`: from the Cache API when a copy is there and the server (HEAD) still describes the same
 *  file (same ETag / Last-Modified / length; an unreachable server keeps the copy), else downloaded with
 *  progress and stored. HTTP errors and short downloads are CometErrors that say so. */
export async function fetchBytes(url: string, o: { onProgress?: (p: LoadProgress) => void; cache?: string | false; signal?: AbortSignal } = {}): Promise<Uint8Array> {
  const cacheName = o.cache ?? DEFAULT_CACHE;
  const store = cacheName !== false && typeof caches !== 'undefined' ? await caches.open(cacheName).catch(() => undefined) : undefined;
  const stamp = (r: Response) => [r.headers.get('etag'), r.headers.get('last-modified'), r.headers.get('content-length')].join('|');
  const hit = await store?.match(url);
  if (hit?.body) {
    let fresh = true;
    try {
      const head = await fetch(url, { method: 'HEAD', cache: 'no-store', signal: o.signal });
      // gone (404/410) or changed: download again; a server that cannot answer HEAD keeps the copy
      fresh = head.ok ? stamp(head) === hit.headers.get('x-comet-stamp') : head.status !== 404 && head.status !== 410;
    } catch (e) {
      if (o.signal?.aborted) throw e;
      fresh = true; // offline: the cached copy is what we have
    }
    if (fresh) {
      const total = sizeOf(hit);
      const bytes = await readStream(hit.body, total, (loaded) => o.onProgress?.({ phase: 'cache', loaded, total, message: `reading ${url} from the browser cache` }), o.signal);
      if (total === undefined || bytes.length === total) return bytes;
    }
    await store!.delete(url);
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
  let got = 0, bytes: Uint8Array;
  try {
    bytes = res.body
      ? await readStream(res.body, total, (loaded) => o.onProgress?.({ phase: 'download', loaded: (got = loaded), total, message: `downloading ${url}` }), o.signal)
      : new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    if (o.signal?.aborted) throw e;
    throw new CometError(`${url}: the download broke off after ${got}${total ? ` of ${total}` : ''} bytes (${(e as Error).message})`, 'truncated');
  }
  if (total !== undefined && bytes.length !== total)
    throw new CometError(`${url}: the download stopped at ${bytes.length} of ${total} bytes`, 'truncated');
  if (store) {
    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length), 'x-comet-stamp': stamp(res) };
    await store.put(url, new Response(bytes as Uint8Array<ArrayBuffer>, { headers })).catch(() => {}); // a full quota only costs the next reload a download
  }
  return bytes;
}

async function sourceBytes(src: ModelSource, what: string, o: WebEngineOptions): Promise<{ bytes: Uint8Array; name: string }> {
  if (typeof src === 'string' || src instanceof URL) {
    const url = new URL(src, typeof location !== 'undefined' ? location.href : undefined).href;
    return { bytes: await fetchBytes(url, { onProgress: o.onProgress, cache: o.cache, signal: o.signal }), name: String(src) };
  }
  if (src instanceof Uint8Array) return { bytes: src, name: what };
  if (src instanceof ArrayBuffer) return { bytes: new Uint8Array(src), name: what };
  const name = (src as File).name ?? what;
  const bytes = await readStream(src.stream(), src.size, (loaded) => o.onProgress?.({ phase: 'read', loaded, total: src.size, message: `reading ${name}` }), o.signal);
  return { bytes, name };
}

// ---- opening a model ----

function tokenizerFromFiles(t: NonNullable<BytesModel['tokenizer']>, where: string): Tokenizer {
  const file = (n: string) => t.files.find((f) => f.name === n)?.bytes;
  const main = file(t.main)!;
  if (!t.main.endsWith('.json')) return Llama2cTokenizer.fromBytes(main, `${where}:tokenizer/${t.main}`);
  const text = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);
  const parse = (n: string) => {
    const s = text(file(n));
    if (s === undefined) return {};
    try {
      return JSON.parse(s);
    } catch (e) {
      throw new CometError(`${where}: embedded ${n} is not valid JSON (${(e as Error).message})`);
    }
  };
  return new HFTokenizer(parse(t.main), parse('tokenizer_config.json'), `${where}:tokenizer/${t.main}`, text(file('chat_template.jinja')));
}

/** Host bytes of one weight, and of a model's weights (what the backend holds, before any repacking). */
const hostBytes = (w: HostWeight) => (w.kind !== 'w4' ? w.data.byteLength : w.codes.byteLength + w.scales.byteLength + (w.act.perm?.byteLength ?? 0));
export function weightBytes(m: { weights: Map<string, HostWeight> }): number {
  let n = 0;
  for (const w of m.weights.values()) n += hostBytes(w);
  return n;
}

/** A model in memory -> OpenModel on `be` (the browser's openModel, src/runtime/open.ts). */
export async function openModelBytes(be: Backend, bytes: Uint8Array, name: string, o: { tokenizer?: Uint8Array; onProgress?: (p: LoadProgress) => void } = {}): Promise<OpenModel> {
  const m = await loadModelBytes(bytes, name, {
    onTensor: (done, total) => o.onProgress?.({ phase: 'verify', loaded: done, total, message: `checking tensors (${done}/${total})` }),
  });
  let tokenizer: Tokenizer;
  if (m.tokenizer) tokenizer = tokenizerFromFiles(m.tokenizer, name);
  else if (o.tokenizer) tokenizer = Llama2cTokenizer.fromBytes(o.tokenizer, `${name} (tokenizer)`);
  else throw new CometError(`${name}: a llama2.c checkpoint has no tokenizer inside; pass its tokenizer.bin too (or use a .comet file)`);
  if (tokenizer.vocabSize > m.config.vocabSize)
    throw new CometError(`${name}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${m.config.vocabSize}`);
  // Upload weight by weight, yielding to the page between them so the progress bar moves; Llama then gets
  // the uploaded tensors through a view of the backend whose uploadWeight hands them back (every other call
  // goes to the backend itself).
  const total = weightBytes(m), uploaded = new Map<HostWeight, Weight>();
  let done = 0, lastYield = performance.now();
  for (const w of m.weights.values()) {
    o.onProgress?.({ phase: 'upload', loaded: done, total, message: `uploading ${w.name} to ${be.name}` });
    if (performance.now() - lastYield > 30) { await new Promise((r) => setTimeout(r, 0)); lastYield = performance.now(); }
    uploaded.set(w, be.uploadWeight(w));
    done += hostBytes(w);
  }
  o.onProgress?.({ phase: 'upload', loaded: total, total, message: `uploaded ${m.weights.size} weights to ${be.name}` });
  const view = new Proxy(be, {
    get(t, k) {
      if (k === 'uploadWeight') return (w: HostWeight) => uploaded.get(w) ?? t.uploadWeight(w);
      const v = Reflect.get(t, k);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  const kv = (m.meta.kvDType as 'f32' | 'kv4' | undefined) ?? 'f32';
  const model = new Llama(view, m.config, m.weights, kv);
  const loaded = { config: m.config, weights: m.weights, format: m.format, path: name, meta: m.meta };
  return { loaded, model, tokenizer, stop: m.format === 'llama2c' ? [m.config.bos] : m.config.eos };
}

/** Open a model from a URL, a File/Blob or bytes on a browser backend and start an engine (the Node API's
 *  createEngine, src/engine/engine.ts, with the same options but for `tokenizer`, `onProgress` and `cache`). */
export async function createEngine(model: ModelSource, o: WebEngineOptions = {}): Promise<Engine> {
  const be = typeof o.backend === 'object' ? o.backend : await createBackend(o.backend ?? 'webgpu');
  const { bytes, name } = await sourceBytes(model, 'model', o);
  const tok = o.tokenizer === undefined ? undefined : (await sourceBytes(o.tokenizer, 'tokenizer', { ...o, onProgress: undefined })).bytes;
  const opened = await openModelBytes(be, bytes, name, { tokenizer: tok, onProgress: o.onProgress });
  const { onProgress, backend, tokenizer, cache, signal, warmup, ...engineOptions } = o;
  void backend; void tokenizer; void cache;
  const id = o.modelName ?? name.replace(/[?#].*$/, '').replace(/^.*[/\\]/, '').replace(/\.(bin|comet|safetensors)$/, '');
  const engine = new Engine(opened, id, { maxBatch: 4, ...engineOptions });
  if (warmup ?? be.name !== 'sim') {
    onProgress?.({ phase: 'compile', loaded: 0, message: `compiling ${be.name} kernels (first run)` });
    try {
      await engine.completions.create({ prompt: 'Once', max_tokens: 2, temperature: 0, model: id }, { signal });
    } catch (e) {
      engine.close();
      throw e;
    }
  }
  onProgress?.({ phase: 'ready', loaded: bytes.length, total: bytes.length, message: `${id} ready on ${opened.model.be.name}` });
  return engine;
}

/** Sizes the demo shows: weights and the KV page pool, in bytes. */
export function engineMemory(engine: Engine): { modelBytes: number; kvBytes: number; kvPages: number; pageSize: number } {
  const m = engine.opened.model, c = m.config, P = engine.scheduler.o.pageSize;
  const per = pageBytes({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: P, dtype: m.kvDType, group: c.headDim });
  return { modelBytes: weightBytes(engine.opened.loaded), kvBytes: per * engine.pool.total, kvPages: engine.pool.total, pageSize: P };
}
