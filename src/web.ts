// comet/web: the engine API in a browser, no server (DESIGN §1).
//
//   import { createEngine } from 'comet/web';
//   const engine = await createEngine('/models/wikillama-28M.comet', { backend: 'webgpu', onProgress: console.log });
//   for await (const c of await engine.chat.completions.create({ messages, stream: true }, { signal })) ...
//
// The engine is the Node one (src/engine/engine.ts). By default it runs in a Web Worker (web/worker.ts), so
// the page never blocks; `worker: false` (or a browser without Workers, or a Backend object) runs it on this
// thread. Both give the same WebEngine. A model arrives as a URL (downloaded once, streamed to disk in OPFS or
// the Cache API, read from there afterwards with no network request: web/cache.ts), a File/Blob the user
// picked, or bytes. Models are .comet files (tokenizer embedded) or llama2.c checkpoints (then pass
// `tokenizer`: tokenizer.bin).
import type { Backend } from '../backends/backend.ts';
import { abortError, fetchModel, type LoadProgress } from './web/cache.ts';
import { blobBytes, openLocalEngine, type WebBackendName, type WebEngine } from './web/local.ts';
import type { EngineOptions } from './engine/engine.ts';
import { openWorkerEngine } from './web/remote.ts';

export { Engine, EngineError } from './engine/engine.ts';
export type { ChatCompletion, ChatCompletionChunk, ChatParams, Completion, CompletionChunk, CompletionParams, EngineOptions, EngineStats, RequestOptions, Usage } from './engine/engine.ts';
export type { ChatMessage } from './engine/chat-template.ts';
export type { Backend } from '../backends/backend.ts';
export type { Tokenizer } from './tokenizer/tokenizer.ts';
export { CometError } from './errors.ts';
export { loadModelBytes, type BytesModel } from './loaders/bytes.ts';
export { deleteCachedModel, fetchModel, listCachedModels, type CachedModel, type LoadProgress } from './web/cache.ts';
export { createBackend, detectWebGPU, engineMemory, openModelBytes, weightBytes, LocalEngine, type EngineInfo, type GpuProbe, type WebBackendName, type WebEngine } from './web/local.ts';
export { WorkerEngine } from './web/remote.ts';

export type ModelSource = string | URL | ArrayBuffer | Uint8Array | Blob;

export interface WebEngineOptions extends Omit<EngineOptions, 'backend' | 'tokenizer' | 'onProgress'> {
  backend?: WebBackendName | Backend; // default 'webgpu'
  /** llama2.c checkpoints only: their tokenizer.bin (a .comet file embeds its tokenizer) */
  tokenizer?: ModelSource;
  onProgress?: (p: LoadProgress) => void;
  /** where downloaded models are kept (OPFS directory / Cache API cache); false: always download (default 'comet-models') */
  cache?: string | false;
  /** ask the server (HEAD) whether a kept model changed before using it (default false: no request at all) */
  revalidate?: boolean;
  signal?: AbortSignal;
  /** run a 2-token request before returning, so pipeline compilation is not billed to the first prompt
   *  (default: true on WebGPU, false on the simulator) */
  warmup?: boolean;
  /** run the engine in a Web Worker (default: yes where the browser has Workers and `backend` is a name);
   *  a function makes the Worker (an app that serves comet's worker script elsewhere) */
  worker?: boolean | (() => Worker);
}

/** A URL, file or bytes -> the model's bytes as a Blob or bytes, and whether they came from the model store. */
async function resolveSource(src: ModelSource, what: string, o: WebEngineOptions, onProgress?: (p: LoadProgress) => void): Promise<{ data: Blob | Uint8Array; name: string; fromCache: boolean }> {
  if (typeof src === 'string' || src instanceof URL) {
    const url = new URL(src, typeof location !== 'undefined' ? location.href : undefined).href;
    const r = await fetchModel(url, { onProgress, cache: o.cache, revalidate: o.revalidate, signal: o.signal });
    return { data: r.blob, name: String(src), fromCache: r.from !== 'network' };
  }
  if (src instanceof Uint8Array) return { data: src, name: what, fromCache: false };
  if (src instanceof ArrayBuffer) return { data: new Uint8Array(src), name: what, fromCache: false };
  return { data: src, name: (src as File).name ?? what, fromCache: false };
}

/** Open a model from a URL, a File/Blob or bytes on a browser backend and start an engine (the Node API's
 *  createEngine, src/engine/engine.ts, with the same options but for `tokenizer`, `onProgress`, `cache` and
 *  `worker`). Load errors are CometErrors that say what is wrong (HTTP status, truncated or foreign file,
 *  quota, a model too large for the GPU adapter, no WebGPU). */
export async function createEngine(model: ModelSource, o: WebEngineOptions = {}): Promise<WebEngine> {
  const m = await resolveSource(model, 'model', o, o.onProgress);
  const tok = o.tokenizer === undefined ? undefined : await resolveSource(o.tokenizer, 'tokenizer', o);
  if (o.signal?.aborted) throw abortError();
  const { onProgress, backend, tokenizer, cache, revalidate, signal, worker, ...rest } = o;
  void tokenizer; void cache; void revalidate;
  const useWorker = worker !== false && typeof backend !== 'object' && typeof Worker !== 'undefined';
  if (useWorker) {
    return openWorkerEngine(
      { model: m.data, name: m.name, fromCache: m.fromCache, tokenizer: tok?.data, options: { ...rest, backend: backend as WebBackendName | undefined } },
      { onProgress, signal, worker: typeof worker === 'function' ? worker : undefined },
    );
  }
  const bytes = await blobBytes(m.data, m.name, m.fromCache ? 'cache' : 'read', onProgress, signal);
  const tokBytes = tok ? await blobBytes(tok.data, 'tokenizer', 'read', undefined, signal) : undefined;
  return openLocalEngine({ bytes, name: m.name }, tokBytes, { ...rest, backend, onProgress, signal });
}
