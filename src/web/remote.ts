// The page's side of an engine running in a Worker (worker.ts): the same WebEngine surface as the engine on
// the main thread (local.ts). Requests, streamed chunks, Stop (AbortSignal, or leaving a `for await`) and load
// progress cross as messages (protocol.ts). An abort ends the page's stream at once and tells the Worker,
// which frees the sequence's pages at its next step.
import type { ChatCompletion, ChatCompletionChunk, ChatParams, Completion, CompletionChunk, CompletionParams, Engine, EngineStats, RequestOptions } from '../engine/engine.ts';
import { EngineError } from '../engine/schema.ts';
import { CometError } from '../errors.ts';
import { abortError, type LoadProgress } from './cache.ts';
import type { EngineInfo, WebEngine } from './local.ts';
import { type FromWorker, fromWire, type ToWorker, type WorkerEngineOptions } from './protocol.ts';

/** Chunks as they arrive, for one `for await`. */
class Chunks<T> implements AsyncIterable<T> {
  private queue: T[] = [];
  private done = false;
  private error?: Error;
  private wake?: () => void;
  constructor(private readonly onReturn: () => void) {}
  push(c: T) { this.queue.push(c); this.wake?.(); }
  end(error?: Error) { if (this.done) return; this.done = true; this.error = error; this.wake?.(); }
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    try {
      for (;;) {
        while (this.queue.length) yield this.queue.shift()!;
        if (this.done) { if (this.error) throw this.error; return; }
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
      }
    } finally {
      if (!this.done) { this.done = true; this.onReturn(); } // the consumer left early: cancel in the Worker
    }
  }
}

interface Pending { resolve: (v: unknown) => void; reject: (e: Error) => void; stream?: Chunks<unknown>; cleanup: () => void }

export class WorkerEngine implements WebEngine {
  readonly mode = 'worker';
  readonly lost: Promise<CometError>;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private dead?: Error;
  private setLost!: (e: CometError) => void;

  readonly chat = {
    completions: {
      create: ((p: ChatParams, o?: RequestOptions) => this.create('chat', p, o)) as Engine['chat']['completions']['create'],
    },
  };
  readonly completions = {
    create: ((p: CompletionParams, o?: RequestOptions) => this.create('text', p, o)) as Engine['completions']['create'],
  };

  constructor(private readonly worker: Worker, readonly info: EngineInfo) {
    this.lost = new Promise((r) => (this.setLost = r));
    worker.onmessage = (ev: MessageEvent<FromWorker>) => this.receive(ev.data);
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.fail(new CometError(`the engine's Worker stopped: ${ev.message || 'an uncaught error'}`, 'worker_error'));
    };
  }

  private post(m: ToWorker) { this.worker.postMessage(m); }

  private receive(m: FromWorker): void {
    if (m.t === 'lost') {
      const e = fromWire(m.error) as CometError;
      this.dead ??= e;
      this.setLost(e);
      return;
    }
    if (!('id' in m)) return;
    const p = this.pending.get(m.id);
    if (!p) return; // aborted here already
    if (m.t === 'accepted') { p.stream = new Chunks(() => this.abort(m.id)); p.resolve(p.stream); }
    else if (m.t === 'chunk') p.stream?.push(m.chunk);
    else if (m.t === 'end') { p.stream?.end(); this.settle(m.id); }
    else if (m.t === 'result') { p.resolve(m.value); this.settle(m.id); }
    else if (m.t === 'error') {
      const e = fromWire(m.error);
      if (p.stream) p.stream.end(e);
      else p.reject(e);
      this.settle(m.id);
    }
  }

  private settle(id: number) {
    this.pending.get(id)?.cleanup();
    this.pending.delete(id);
  }

  /** Stop request `id`: the page sees an AbortError now; the Worker cancels the sequence. */
  private abort(id: number) {
    const p = this.pending.get(id);
    if (!p) return;
    this.post({ t: 'abort', id });
    if (p.stream) p.stream.end(abortError());
    else p.reject(abortError());
    this.settle(id);
  }

  private fail(e: Error) {
    this.dead ??= e;
    for (const [id, p] of this.pending) {
      if (p.stream) p.stream.end(e);
      else p.reject(e);
      this.settle(id);
    }
  }

  private request(m: ToWorker & { id: number }, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const onAbort = () => this.abort(m.id);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(m.id, { resolve, reject, cleanup: () => signal?.removeEventListener('abort', onAbort) });
      this.post(m);
    });
  }

  private async create(kind: 'chat' | 'text', params: ChatParams | CompletionParams, o: RequestOptions = {}): Promise<unknown> {
    if (this.dead) throw this.dead;
    if (o.signal?.aborted) throw abortError();
    return this.request({ t: 'create', id: this.nextId++, kind, params }, o.signal);
  }

  async stats(): Promise<EngineStats> {
    if (this.dead) throw this.dead;
    return (await this.request({ t: 'stats', id: this.nextId++ })) as EngineStats;
  }

  /** Cancel what is running and end the Worker (its GPU device goes with it). */
  close(): void {
    this.fail(new EngineError('the engine is shutting down', 'unavailable', 503));
    this.worker.terminate();
  }
}

export type { ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk };

/** Start a Worker and open the model there; resolves once the engine is ready (warm-up included). */
export function openWorkerEngine(load: Omit<Extract<ToWorker, { t: 'load' }>, 't'>, o: { onProgress?: (p: LoadProgress) => void; signal?: AbortSignal; worker?: () => Worker }): Promise<WorkerEngine> {
  // Vite (and webpack 5, Rollup plugins) bundle the worker from this exact pattern
  const worker = o.worker?.() ?? new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'comet-engine' });
  return new Promise<WorkerEngine>((resolve, reject) => {
    const stop = (e: Error) => { o.signal?.removeEventListener('abort', onAbort); worker.terminate(); reject(e); };
    const onAbort = () => { worker.postMessage({ t: 'abort-load' } satisfies ToWorker); stop(abortError()); };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    worker.onerror = (ev) => {
      ev.preventDefault();
      stop(new CometError(`the engine's Worker could not start: ${ev.message || 'a script error (is worker.js served beside comet-web.js?)'}`, 'worker_error'));
    };
    worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      const m = ev.data;
      if (m.t === 'progress') o.onProgress?.(m.p);
      else if (m.t === 'load-error') stop(fromWire(m.error));
      else if (m.t === 'ready') {
        o.signal?.removeEventListener('abort', onAbort);
        resolve(new WorkerEngine(worker, m.info));
      }
    };
    worker.postMessage({ t: 'load', ...load } satisfies ToWorker);
  });
}

export type { WorkerEngineOptions };
