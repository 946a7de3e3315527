// The engine's Worker: comet/web's createEngine (remote.ts) starts one per engine, so tokenizing, the simulator
// and WebGPU command recording never block the page. It opens the model it is sent (bytes, or a Blob: a
// picked file or a model stored on disk) with local.ts, then serves requests; streams go back chunk by chunk.
// One engine per Worker: closing the engine terminates it (and frees its GPU device).
import type { ChatParams, CompletionParams } from '../engine/engine.ts';
import { blobBytes, type LocalEngine, openLocalEngine } from './local.ts';
import { type FromWorker, type ToWorker, toWire } from './protocol.ts';

const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);
let engine: LocalEngine | undefined;
let loading: AbortController | undefined;
const requests = new Map<number, AbortController>();

async function load(m: Extract<ToWorker, { t: 'load' }>): Promise<void> {
  const ac = (loading = new AbortController());
  const onProgress = (p: Parameters<NonNullable<Parameters<typeof openLocalEngine>[2]['onProgress']>>[0]) => post({ t: 'progress', p });
  try {
    const bytes = await blobBytes(m.model, m.name, m.fromCache ? 'cache' : 'read', onProgress, ac.signal);
    const tok = m.tokenizer ? await blobBytes(m.tokenizer, 'tokenizer', 'read', undefined, ac.signal) : undefined;
    engine = await openLocalEngine({ bytes, name: m.name }, tok, { ...m.options, onProgress, signal: ac.signal });
    void engine.lost.then((e) => post({ t: 'lost', error: toWire(e) }));
    post({ t: 'ready', info: engine.info });
  } catch (e) {
    post({ t: 'load-error', error: toWire(e) });
  } finally {
    loading = undefined;
  }
}

async function create(m: Extract<ToWorker, { t: 'create' }>): Promise<void> {
  const ac = new AbortController();
  requests.set(m.id, ac);
  try {
    if (!engine) throw new Error('the engine is not loaded');
    const r = await (m.kind === 'chat'
      ? engine.chat.completions.create(m.params as ChatParams, { signal: ac.signal })
      : engine.completions.create(m.params as CompletionParams, { signal: ac.signal }));
    if (!(Symbol.asyncIterator in (r as object))) return post({ t: 'result', id: m.id, value: r });
    post({ t: 'accepted', id: m.id });
    for await (const chunk of r as AsyncIterable<unknown>) post({ t: 'chunk', id: m.id, chunk });
    post({ t: 'end', id: m.id });
  } catch (e) {
    post({ t: 'error', id: m.id, error: toWire(e) });
  } finally {
    requests.delete(m.id);
  }
}

self.onmessage = (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  if (m.t === 'load') void load(m);
  else if (m.t === 'abort-load') loading?.abort();
  else if (m.t === 'create') void create(m);
  else if (m.t === 'abort') requests.get(m.id)?.abort();
  else if (m.t === 'stats') {
    if (engine) void engine.stats().then((value) => post({ t: 'result', id: m.id, value }), (e) => post({ t: 'error', id: m.id, error: toWire(e) }));
    else post({ t: 'error', id: m.id, error: toWire(new Error('the engine is not loaded')) });
  }
};
