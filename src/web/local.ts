// The engine in this JS realm (the page's main thread, or inside the Worker of worker.ts): a backend, a model
// from bytes, the Node engine (src/engine/engine.ts) over them, and what the page shows about it (EngineInfo).
/// <reference types="vite/client" />
import type { Backend, HostWeight, KVCacheSpec, Weight } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { deviceLost } from '../../backends/webgpu/device.ts';
import { shaderSourcesFromGlob } from '../../backends/webgpu/shaders.ts';
import type { WebGPUBackend } from '../../backends/webgpu/webgpu.ts';
import { Engine, type EngineOptions, type EngineStats } from '../engine/engine.ts';
import { pageBytes } from '../engine/kv-pages.ts';
import { CometError } from '../errors.ts';
import { loadModelBytes, type BytesModel } from '../loaders/bytes.ts';
import type { LlamaConfig } from '../model/config.ts';
import { Llama } from '../model/llama.ts';
import type { OpenModel } from '../runtime/open.ts';
import { HFTokenizer } from '../tokenizer/hf.ts';
import { Llama2cTokenizer } from '../tokenizer/llama2c.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { readStream, type LoadProgress } from './cache.ts';

export type WebBackendName = 'webgpu' | 'sim';

/** The WGSL sources, inlined at build time (Vite; `vite build --mode lib` makes a bundle for other bundlers). */
const SHADERS: Record<string, string> = import.meta.glob('../../shaders/*.wgsl', { query: '?raw', import: 'default', eager: true });

/** What an app shows about a running engine; the same in both modes (a plain object: it crosses to the page). */
export interface EngineInfo {
  model: string; // the id requests name
  backend: string; // 'webgpu' | 'sim'
  adapter?: string; // the GPU adapter, on WebGPU
  format: string; // 'comet' or 'llama2c'
  config: LlamaConfig;
  kvDType: string;
  memory: { modelBytes: number; kvBytes: number; kvPages: number; pageSize: number };
}

/** The engine API of comet/web, whether it runs in a Worker or on this thread. */
export interface WebEngine {
  readonly chat: Engine['chat'];
  readonly completions: Engine['completions'];
  readonly info: EngineInfo;
  readonly mode: 'worker' | 'main';
  /** resolves with a 'device_lost' CometError when the GPU device is lost: the engine is dead, create another
   *  (a request in flight fails with the same error) */
  readonly lost: Promise<CometError>;
  stats(): Promise<EngineStats>;
  close(): void;
}

// ---- WebGPU detection ----

export interface GpuProbe {
  ok: boolean;
  reason?: string; // why not, in words a user understands
  adapter?: string; // vendor, architecture, device, description
  software?: boolean; // a CPU implementation (SwiftShader, llvmpipe): correct, but far slower than the simulator
  features: string[]; // adapter features (shader-f16, subgroups, timestamp-query, ...)
  wgslFeatures: string[]; // WGSL language features (packed_4x8_integer_dot_product, ...)
  limits?: { maxStorageBuffersPerShaderStage: number; maxComputeWorkgroupStorageSize: number; maxStorageBufferBindingSize: number; maxBufferSize: number };
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
  } catch {
    adapter = null;
  }
  if (!adapter) return { ok: false, features: [], wgslFeatures, reason: 'WebGPU is present but no GPU adapter is available (blocklisted driver, disabled hardware acceleration, or no GPU).' };
  const i = adapter.info;
  const name = [i?.vendor, i?.architecture, i?.device, i?.description].filter(Boolean).join(' ') || 'unnamed adapter';
  const L = adapter.limits;
  const limits = { maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage, maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize, maxStorageBufferBindingSize: L.maxStorageBufferBindingSize, maxBufferSize: L.maxBufferSize };
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
    const { createWebGPUBackend } = await import('../../backends/webgpu/webgpu.ts');
    try {
      return await createWebGPUBackend({ shaders: shaderSourcesFromGlob(SHADERS) });
    } catch (e) {
      throw new CometError(`the WebGPU backend could not start on this adapter (${probe.adapter}): ${(e as Error).message}`, 'no_device');
    }
  }
  throw new CometError(`unknown backend '${name}' (comet/web has: webgpu, sim)`);
}

const isWebGPU = (be: Backend): be is WebGPUBackend => be.name === 'webgpu' && 'uploadModel' in be;

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

/** The KV cache the engine will make for these options (Engine's own rule: maxBatch full-context sequences,
 *  or what kvMemory holds), so its size is checked before any weight is uploaded. */
function kvSpecFor(c: LlamaConfig, dtype: 'f32' | 'kv4', group: number, o: EngineOptions): KVCacheSpec {
  const pageSize = o.pageSize ?? 16, spec = { nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize, dtype, group };
  const numPages = o.kvMemory !== undefined ? Math.floor(o.kvMemory / pageBytes(spec)) : (o.maxBatch ?? 32) * Math.ceil(c.seqLen / pageSize);
  return { ...spec, numPages };
}

/** A model in memory -> OpenModel on `be` (the browser's openModel, src/runtime/open.ts). On WebGPU, weights
 *  and KV cache that exceed the adapter's limits are refused before anything is uploaded. */
export async function openModelBytes(be: Backend, bytes: Uint8Array, name: string, o: { tokenizer?: Uint8Array; onProgress?: (p: LoadProgress) => void; engine?: EngineOptions } = {}): Promise<OpenModel> {
  const m = await loadModelBytes(bytes, name, {
    onTensor: (done, total) => o.onProgress?.({ phase: 'verify', loaded: done, total, message: `checking tensors (${done}/${total})` }),
  });
  let tokenizer: Tokenizer;
  if (m.tokenizer) tokenizer = tokenizerFromFiles(m.tokenizer, name);
  else if (o.tokenizer) tokenizer = Llama2cTokenizer.fromBytes(o.tokenizer, `${name} (tokenizer)`);
  else throw new CometError(`${name}: a llama2.c checkpoint has no tokenizer inside; pass its tokenizer.bin too (or use a .comet file)`);
  if (tokenizer.vocabSize > m.config.vocabSize)
    throw new CometError(`${name}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${m.config.vocabSize}`);
  const kv = (m.meta.kvDType as 'f32' | 'kv4' | undefined) ?? 'f32', kvGroup = m.meta.kvGroup as number | undefined;
  // Upload weight by weight, yielding to the event loop between them so progress moves; Llama then gets the
  // uploaded tensors through a view of the backend whose uploadWeight hands them back (every other call goes
  // to the backend itself).
  const weights = [...m.weights.values()], total = weightBytes(m);
  let done = 0, lastYield = performance.now();
  const each = async (w: HostWeight) => {
    o.onProgress?.({ phase: 'upload', loaded: done, total, message: `uploading ${w.name} to ${be.name}` });
    if (performance.now() - lastYield > 30) { await new Promise((r) => setTimeout(r, 0)); lastYield = performance.now(); }
    done += hostBytes(w);
  };
  let uploaded: Map<HostWeight, Weight>;
  if (isWebGPU(be)) {
    be.checkFits(weights, kvSpecFor(m.config, kv, kvGroup ?? m.config.headDim, o.engine ?? {}));
    uploaded = await be.uploadModel(weights, each);
  } else {
    uploaded = new Map();
    for (const w of weights) { await each(w); uploaded.set(w, be.uploadWeight(w)); }
  }
  o.onProgress?.({ phase: 'upload', loaded: total, total, message: `uploaded ${m.weights.size} weights to ${be.name}` });
  const view = new Proxy(be, {
    get(t, k) {
      if (k === 'uploadWeight') return (w: HostWeight) => uploaded.get(w) ?? t.uploadWeight(w);
      const v = Reflect.get(t, k);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  const model = new Llama(view, m.config, m.weights, kv, kvGroup);
  const loaded = { config: m.config, weights: m.weights, format: m.format, path: name, meta: m.meta };
  return { loaded, model, tokenizer, stop: m.format === 'llama2c' ? [m.config.bos] : m.config.eos };
}

export type BytesSource = Uint8Array | ArrayBuffer | Blob;

/** Bytes of a Blob (a picked File, or a model stored on disk), with progress. */
export async function blobBytes(src: BytesSource, name: string, phase: 'read' | 'cache', onProgress?: (p: LoadProgress) => void, signal?: AbortSignal): Promise<Uint8Array> {
  if (src instanceof Uint8Array) return src;
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  const message = phase === 'cache' ? `reading ${name} from the browser's storage` : `reading ${name}`;
  return readStream(src.stream(), src.size, (loaded) => onProgress?.({ phase, loaded, total: src.size, message }), signal);
}

export interface LocalOptions extends Omit<EngineOptions, 'backend' | 'tokenizer' | 'onProgress'> {
  backend?: WebBackendName | Backend;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  warmup?: boolean;
}

/** The engine on this thread, from bytes already at hand (comet/web's createEngine fetches or caches them). */
export async function openLocalEngine(model: { bytes: Uint8Array; name: string }, tokenizer: Uint8Array | undefined, o: LocalOptions): Promise<LocalEngine> {
  const be = typeof o.backend === 'object' ? o.backend : await createBackend(o.backend ?? 'webgpu');
  const { onProgress, backend, signal, warmup, ...engineOptions } = o;
  void backend;
  const opts = { maxBatch: 4, ...engineOptions };
  const opened = await openModelBytes(be, model.bytes, model.name, { tokenizer, onProgress, engine: opts });
  const id = o.modelName ?? model.name.replace(/[?#].*$/, '').replace(/^.*[/\\]/, '').replace(/\.(bin|comet|safetensors)$/, '');
  const engine = new LocalEngine(new Engine(opened, id, opts));
  if (warmup ?? be.name !== 'sim') {
    onProgress?.({ phase: 'compile', loaded: 0, message: `compiling ${be.name} kernels (first run)` });
    try {
      await engine.engine.completions.create({ prompt: 'Once', max_tokens: 2, temperature: 0, model: id }, { signal });
    } catch (e) {
      engine.close();
      throw e;
    }
  }
  onProgress?.({ phase: 'ready', loaded: model.bytes.length, total: model.bytes.length, message: `${id} ready on ${be.name}` });
  return engine;
}

/** Sizes the demo shows: weights and the KV page pool, in bytes. */
export function engineMemory(engine: Engine): EngineInfo['memory'] {
  const m = engine.opened.model, c = m.config, P = engine.scheduler.o.pageSize;
  const per = pageBytes({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: P, dtype: m.kvDType, group: m.kvGroup });
  return { modelBytes: weightBytes(engine.opened.loaded), kvBytes: per * engine.pool.total, kvPages: engine.pool.total, pageSize: P };
}

/** The engine on this thread, with the WebEngine surface. `engine` is the Node engine itself. */
export class LocalEngine implements WebEngine {
  readonly mode = 'main';
  readonly info: EngineInfo;
  readonly lost: Promise<CometError>;
  constructor(readonly engine: Engine) {
    const be = engine.opened.model.be;
    this.info = {
      model: engine.modelId, backend: be.name, adapter: isWebGPU(be) ? be.adapterName : undefined, format: engine.opened.loaded.format,
      config: engine.opened.model.config, kvDType: engine.opened.model.kvDType, memory: engineMemory(engine),
    };
    this.lost = isWebGPU(be)
      ? be.whenLost.then(deviceLost)
      : new Promise(() => {});
  }
  get chat() { return this.engine.chat; }
  get completions() { return this.engine.completions; }
  async stats(): Promise<EngineStats> { return this.engine.stats(); }
  close(): void { this.engine.close(); }
}
