// The engine API (DESIGN §1): OpenAI-shaped, one object backs Node, the browser and the HTTP server.
//
//   const engine = await createEngine('model.comet', { backend: 'cuda', maxBatch: 32, kvMemory: 2 << 30 });
//   const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }] });
//   for await (const chunk of await engine.completions.create({ prompt: 'Once', stream: true }, { signal })) ...
//
// create() validates (schema.ts), tokenizes, checks the context and the queue, and resolves once the request
// is queued; errors up to there are EngineErrors carrying their HTTP status. A streaming request resolves to
// an async iterable of OpenAI chunks; a plain one to the OpenAI response object. `signal` aborts (the pages
// go back to the pool at the next step); leaving a `for await` early does the same.
import type { Backend } from '../../backends/backend.ts';
import type { OpenModel } from '../runtime/open.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { Channel } from './channel.ts';
import { ChatFormatter } from './chat-template.ts';
import { DecodeGraphs, graphLimit, type GraphStats } from './graphs.ts';
import { pageBytes, PagePool, type PoolStats } from './kv-pages.ts';
import { type FinishReason, Scheduler, type SchedulerStats, Sequence } from './scheduler.ts';
import {
  type ChatParams, type CompletionParams, EngineError, chatSchema, completionSchema, parseRequest,
} from './schema.ts';

export { EngineError } from './schema.ts';
export type { ChatParams, CompletionParams } from './schema.ts';

export interface EngineOptions {
  backend?: Backend | string; // default 'sim'
  tokenizer?: string; // default: beside the model
  maxBatch?: number; // sequences decoded together (default 32)
  kvMemory?: number; // bytes for the KV page pool (default: maxBatch full-context sequences)
  pageSize?: number; // tokens per KV page (default 16)
  maxQueue?: number; // requests waiting for a batch slot before create() fails with 503 (default 256)
  maxStepTokens?: number; // tokens per forward: decodes + prefill chunks (default 256)
  graphs?: number; // decode-step graphs kept, on a backend that can capture (CUDA); 0 = off (default 16)
  modelName?: string; // the id requests name (default: the model file's base name)
  onProgress?: (p: { phase: 'loading' | 'ready'; message: string }) => void;
}

export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }
export type Finish = FinishReason;

export interface ChatCompletion {
  id: string; object: 'chat.completion'; created: number; model: string;
  choices: { index: 0; message: { role: 'assistant'; content: string }; logprobs: null; finish_reason: Finish }[];
  usage: Usage;
}
export interface ChatCompletionChunk {
  id: string; object: 'chat.completion.chunk'; created: number; model: string;
  choices: { index: 0; delta: { role?: 'assistant'; content?: string }; logprobs: null; finish_reason: Finish | null }[];
  usage?: Usage | null;
}
export interface Completion {
  id: string; object: 'text_completion'; created: number; model: string;
  choices: { index: 0; text: string; logprobs: null; finish_reason: Finish }[];
  usage: Usage;
}
export type CompletionChunk = Omit<Completion, 'choices' | 'usage'> & {
  choices: { index: 0; text: string; logprobs: null; finish_reason: Finish | null }[];
  usage?: Usage | null;
};

export interface RequestOptions { signal?: AbortSignal }

export interface EngineStats extends SchedulerStats {
  kv: PoolStats;
  pageSize: number;
  requests: { finished: number; cancelled: number; failed: number; rejected: number };
  ttft: { count: number; sum: number; buckets: [number, number][] }; // seconds; cumulative counts per upper bound
  tokensPerSecond: number; // generated tokens over the last 10 s
  graphs?: GraphStats; // decode-step graphs (backends that can capture)
}

const MAX_PIECE_CHARS = 128;
const TTFT_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const RATE_WINDOW_MS = 10_000;
const tick: () => Promise<void> = () => new Promise((r) => (globalThis.setImmediate ?? setTimeout)(r));

type Event = { text: string } | { end: Finish; usage: Usage };

export class Engine {
  readonly chat = {
    completions: {
      create: ((p: ChatParams, o?: RequestOptions) => this.create('chat', p, o)) as {
        (p: ChatParams & { stream: true }, o?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
        (p: ChatParams & { stream?: false | null }, o?: RequestOptions): Promise<ChatCompletion>;
        (p: ChatParams, o?: RequestOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
      },
    },
  };
  readonly completions = {
    create: ((p: CompletionParams, o?: RequestOptions) => this.create('text', p, o)) as {
      (p: CompletionParams & { stream: true }, o?: RequestOptions): Promise<AsyncIterable<CompletionChunk>>;
      (p: CompletionParams & { stream?: false | null }, o?: RequestOptions): Promise<Completion>;
      (p: CompletionParams, o?: RequestOptions): Promise<Completion | AsyncIterable<CompletionChunk>>;
    },
  };

  readonly tokenizer: Tokenizer;
  readonly contextLength: number;
  readonly pool: PagePool;
  readonly scheduler: Scheduler;
  private readonly formatter: ChatFormatter;
  private readonly maxQueue: number;
  private looping = false;
  private closed = false;
  private nextId = 1;
  private readonly counts = { finished: 0, cancelled: 0, failed: 0, rejected: 0 };
  private readonly ttft = { count: 0, sum: 0, le: new Array<number>(TTFT_BOUNDS.length).fill(0) };
  private readonly rate: [number, number][] = []; // (time ms, tokens generated in a step)

  constructor(readonly opened: OpenModel, readonly modelId: string, o: EngineOptions = {}) {
    const { model, tokenizer } = opened, c = model.config;
    this.tokenizer = tokenizer;
    this.contextLength = c.seqLen;
    this.formatter = new ChatFormatter(tokenizer);
    this.maxQueue = positive('maxQueue', o.maxQueue ?? 256);
    const maxBatch = positive('maxBatch', o.maxBatch ?? 32), pageSize = positive('pageSize', o.pageSize ?? 16);
    const spec = { nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize, dtype: model.kvDType, group: model.kvGroup };
    const perSeq = Math.ceil(c.seqLen / pageSize), bytes = pageBytes(spec);
    const numPages = o.kvMemory !== undefined ? Math.floor(o.kvMemory / bytes) : maxBatch * perSeq;
    // a lone sequence must always fit, or preemption could not make progress
    if (numPages < perSeq)
      throw new EngineError(`kvMemory ${o.kvMemory} bytes holds ${numPages} pages of ${bytes} bytes; one full-context sequence (${c.seqLen} tokens) needs ${perSeq} (${perSeq * bytes} bytes)`, 'invalid_config');
    this.pool = new PagePool(numPages);
    const cache = model.be.createKVCache({ ...spec, numPages });
    const maxStepTokens = positive('maxStepTokens', o.maxStepTokens ?? Math.max(256, maxBatch));
    // every running sequence must be able to decode in every step, or the newest would starve
    if (maxStepTokens < maxBatch) throw new EngineError(`maxStepTokens (${maxStepTokens}) must be at least maxBatch (${maxBatch})`, 'invalid_config');
    const graphs = DecodeGraphs.for(model.be, model, cache, pageSize, graphLimit(o.graphs === undefined ? undefined : nonNegative('graphs', o.graphs)));
    this.scheduler = new Scheduler(model, this.pool, cache, { maxBatch, pageSize, maxStepTokens }, graphs);
  }

  stats(): EngineStats {
    const now = performance.now();
    while (this.rate.length && this.rate[0][0] < now - RATE_WINDOW_MS) this.rate.shift();
    const recent = this.rate.reduce((a, [, n]) => a + n, 0);
    return {
      ...this.scheduler.stats(), kv: this.pool.stats(), pageSize: this.scheduler.o.pageSize,
      requests: { ...this.counts },
      ttft: { count: this.ttft.count, sum: this.ttft.sum, buckets: TTFT_BOUNDS.map((b, i) => [b, this.ttft.le[i]]) },
      tokensPerSecond: recent / (RATE_WINDOW_MS / 1000),
      ...(this.scheduler.graphs ? { graphs: this.scheduler.graphs.stats() } : {}),
    };
  }

  /** Stop taking requests and cancel every queued and running one (their pages return to the pool). */
  close(): void {
    this.closed = true;
    for (const s of [...this.scheduler.waiting, ...this.scheduler.running]) this.scheduler.cancel(s);
    if (!this.looping) this.scheduler.sweep();
    this.scheduler.graphs?.dispose();
  }

  private async create(kind: 'chat' | 'text', params: ChatParams | CompletionParams, o: RequestOptions = {}): Promise<unknown> {
    try {
      return this.submit(kind, params, o);
    } catch (e) {
      this.counts.rejected++;
      throw e;
    }
  }

  private submit(kind: 'chat' | 'text', params: ChatParams | CompletionParams, o: RequestOptions): unknown {
    const r = kind === 'chat' ? parseRequest(chatSchema, params) : parseRequest(completionSchema, params);
    if (r.model !== undefined && r.model !== this.modelId)
      throw new EngineError(`The model '${r.model}' does not exist (this server has '${this.modelId}')`, 'model_not_found', 404, 'model');
    const seqLen = this.contextLength, vocab = this.opened.model.config.vocabSize;
    // refuse a text far longer than any context before tokenizing it: tokenization runs on the event loop, and
    // a megabyte prompt would stall every other request for a second. No tokenizer we load has pieces longer
    // than 128 characters, so a text over seqLen·128 characters cannot fit.
    const chars = 'messages' in r ? r.messages.reduce((a, m) => a + JSON.stringify(m.content ?? '').length, 0) : typeof r.prompt === 'string' ? r.prompt.length : 0;
    if (chars > seqLen * MAX_PIECE_CHARS)
      throw new EngineError(`This model's maximum context length is ${seqLen} tokens; the prompt has ${chars} characters, more than ${seqLen} tokens can hold`, 'context_length_exceeded', 400, kind === 'chat' ? 'messages' : 'prompt');
    let prompt: number[];
    if ('messages' in r) prompt = this.formatter.encode(r.messages);
    else if (typeof r.prompt === 'string') prompt = this.tokenizer.encode(r.prompt, { bos: true });
    else {
      const bad = r.prompt.findIndex((t) => t >= vocab);
      if (bad >= 0) throw new EngineError(`prompt[${bad}]: token id ${r.prompt[bad]} is outside the vocabulary (0..${vocab - 1})`, 'invalid_value', 400, 'prompt');
      prompt = r.prompt;
    }
    if (prompt.length === 0) throw new EngineError('the prompt has no tokens', 'invalid_value', 400, kind === 'chat' ? 'messages' : 'prompt');
    if (prompt.length >= seqLen)
      throw new EngineError(`This model's maximum context length is ${seqLen} tokens; the prompt has ${prompt.length}`, 'context_length_exceeded', 400, kind === 'chat' ? 'messages' : 'prompt');
    // chat: up to the end of the context unless told (OpenAI's default); completions: 16 (OpenAI's default)
    const [maxField, given] = 'max_completion_tokens' in r && r.max_completion_tokens !== undefined
      ? ['max_completion_tokens', r.max_completion_tokens] : ['max_tokens', r.max_tokens];
    const maxTokens = given ?? (kind === 'chat' ? seqLen : 16);
    if (maxTokens > seqLen) throw new EngineError(`'${maxField}' is ${maxTokens}; this model's context is ${seqLen} tokens`, 'invalid_value', 400, maxField);
    if (this.closed) throw new EngineError('the engine is shutting down', 'unavailable', 503);
    if (this.scheduler.waiting.length >= this.maxQueue)
      throw new EngineError(`the queue is full (${this.maxQueue} requests waiting); retry later`, 'queue_full', 503);
    if (o.signal?.aborted) throw abortError();

    const temperature = r.temperature ?? 1;
    const stops = typeof r.stop === 'string' ? [r.stop] : r.stop ?? [];
    const id = this.nextId++;
    const oid = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${id}`, created = Math.floor(Date.now() / 1000);
    const events = new Channel<Event>(() => cancel());
    const out = new TextOut(this.tokenizer, prompt[prompt.length - 1], stops, (text) => events.push({ text }));
    const t0 = performance.now();
    let ended = false;
    const end = (reason: Finish, error?: Error) => {
      if (ended) return;
      ended = true;
      o.signal?.removeEventListener('abort', onAbort);
      if (error) { this.counts.failed++; return events.close(error); }
      out.end();
      this.counts.finished++;
      events.push({ end: reason, usage: usage(prompt.length, seq.generated) });
      events.close();
    };
    const cancel = () => {
      if (ended) return;
      ended = true;
      o.signal?.removeEventListener('abort', onAbort);
      this.counts.cancelled++;
      this.scheduler.cancel(seq);
      if (!this.looping) this.scheduler.sweep();
      events.close(abortError());
    };
    const onAbort = () => cancel();
    const seq = new Sequence(id, prompt, {
      maxTokens, temperature, topP: r.top_p ?? 1, topK: r.top_k ?? 0,
      seed: r.seed ?? (temperature === 0 ? 0 : Math.floor(Math.random() * 2 ** 32)), stop: this.opened.stop,
    }, {
      token: (tok) => {
        if (seq.generated === 1) this.observeTtft((performance.now() - t0) / 1000);
        if (out.token(tok)) { // a stop string: the text ends here
          this.scheduler.cancel(seq);
          end('stop');
        }
      },
      finish: (reason, error) => end(reason, error),
    });
    o.signal?.addEventListener('abort', onAbort, { once: true });
    this.scheduler.add(seq);
    this.kick();

    const model = this.modelId, includeUsage = r.stream_options?.include_usage === true;
    if (!r.stream) return collect(events, kind, oid, created, model);
    return kind === 'chat' ? chatChunks(events, oid, created, model, includeUsage) : textChunks(events, oid, created, model, includeUsage);
  }

  private observeTtft(s: number): void {
    this.ttft.count++;
    this.ttft.sum += s;
    TTFT_BOUNDS.forEach((b, i) => { if (s <= b) this.ttft.le[i]++; });
  }

  private kick(): void {
    if (!this.looping) void this.loop();
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.scheduler.busy) {
        const before = this.scheduler.stats().generatedTokens;
        try {
          await this.scheduler.step();
        } catch (e) { // a bug in the scheduler itself: fail everyone rather than hang them
          this.scheduler.failAll(e instanceof Error ? e : new Error(String(e)));
        }
        this.rate.push([performance.now(), this.scheduler.stats().generatedTokens - before]);
        if (this.rate.length > 4096) this.rate.shift();
        await tick(); // let I/O (new requests, disconnects) in between steps
      }
    } finally {
      this.looping = false;
    }
  }
}

/** Token ids -> text, as a UTF-8 stream (a character may span tokens), with OpenAI stop strings: the text
 *  ends before the first one, and up to (longest stop - 1) characters are held back until they cannot start
 *  one. Returns true from token() when a stop string was found. */
class TextOut {
  private text = '';
  private sent = 0;
  private stopped = false;
  private readonly decoder = new TextDecoder();
  private readonly hold: number;
  constructor(private readonly tok: Tokenizer, private prev: number, private readonly stops: string[], private readonly emit: (s: string) => void) {
    this.hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }
  token(id: number): boolean {
    const bytes = this.tok.pieceBytes(this.prev, id);
    this.prev = id;
    this.text += this.decoder.decode(bytes, { stream: true });
    return this.flush(false);
  }
  end(): void {
    if (this.stopped) return;
    this.text += this.decoder.decode();
    this.flush(true);
  }
  private flush(final: boolean): boolean {
    if (this.stopped) return true;
    let upto = final ? this.text.length : this.text.length - this.hold, hit = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, this.sent);
      if (i >= 0 && (hit < 0 || i < hit)) hit = i;
    }
    if (hit >= 0) upto = hit;
    else if (!final && upto > 0 && isHighSurrogate(this.text.charCodeAt(upto - 1))) upto--;
    if (upto > this.sent) this.emit(this.text.slice(this.sent, upto));
    this.sent = Math.max(this.sent, upto);
    if (hit >= 0) this.stopped = true;
    return this.stopped;
  }
}

const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;
const usage = (p: number, c: number): Usage => ({ prompt_tokens: p, completion_tokens: c, total_tokens: p + c });
const nonNegative = (name: string, v: number) => {
  if (!(Number.isInteger(v) && v >= 0)) throw new EngineError(`${name} must be a non-negative integer, got ${v}`, 'invalid_config');
  return v;
};
const positive = (name: string, v: number) => {
  if (!(Number.isInteger(v) && v > 0)) throw new EngineError(`${name} must be a positive integer, got ${v}`, 'invalid_config');
  return v;
};

export function abortError(): Error {
  const e = new Error('the request was aborted');
  e.name = 'AbortError';
  return e;
}

async function collect(events: Channel<Event>, kind: 'chat' | 'text', id: string, created: number, model: string): Promise<ChatCompletion | Completion> {
  let text = '';
  for await (const e of events) {
    if ('text' in e) { text += e.text; continue; }
    if (kind === 'chat')
      return { id, object: 'chat.completion', created, model, usage: e.usage,
        choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: e.end }] };
    return { id, object: 'text_completion', created, model, usage: e.usage, choices: [{ index: 0, text, logprobs: null, finish_reason: e.end }] };
  }
  throw abortError(); // unreachable: the channel ends with an end event or an error
}

async function* chatChunks(events: Channel<Event>, id: string, created: number, model: string, includeUsage: boolean): AsyncGenerator<ChatCompletionChunk> {
  const base = { id, object: 'chat.completion.chunk' as const, created, model, ...(includeUsage ? { usage: null } : {}) };
  const chunk = (delta: ChatCompletionChunk['choices'][0]['delta'], finish: Finish | null = null): ChatCompletionChunk =>
    ({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  yield chunk({ role: 'assistant', content: '' });
  for await (const e of events) {
    if ('text' in e) { yield chunk({ content: e.text }); continue; }
    yield chunk({}, e.end);
    if (includeUsage) yield { ...base, choices: [], usage: e.usage };
  }
}

async function* textChunks(events: Channel<Event>, id: string, created: number, model: string, includeUsage: boolean): AsyncGenerator<CompletionChunk> {
  const base = { id, object: 'text_completion' as const, created, model, ...(includeUsage ? { usage: null } : {}) };
  const chunk = (text: string, finish: Finish | null = null): CompletionChunk => ({ ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] });
  for await (const e of events) {
    if ('text' in e) { yield chunk(e.text); continue; }
    yield chunk('', e.end);
    if (includeUsage) yield { ...base, choices: [], usage: e.usage };
  }
}

/** Open a model (a path, or one already opened with openModel) on a backend and start an engine. */
export async function createEngine(modelOrPath: string | OpenModel | undefined, o: EngineOptions = {}): Promise<Engine> {
  let opened: OpenModel, name = o.modelName;
  if (typeof modelOrPath === 'object') {
    opened = modelOrPath;
    name ??= 'model';
  } else {
    // loaders and backends by name need Node (fs, addons): imported here so the engine itself stays portable
    const { openModel } = await import('../runtime/open.ts');
    const be = typeof o.backend === 'object' ? o.backend : await (await import('../runtime/backends.ts')).createBackend(o.backend ?? 'sim');
    o.onProgress?.({ phase: 'loading', message: `loading ${modelOrPath ?? 'the embedded stories260K'} on ${be.name}` });
    opened = await openModel(be, modelOrPath, o.tokenizer);
    name ??= modelId(opened.loaded.path ?? modelOrPath ?? 'stories260K');
  }
  const engine = new Engine(opened, name, o);
  o.onProgress?.({ phase: 'ready', message: `${name}: ${engine.pool.total} KV pages of ${engine.scheduler.o.pageSize} tokens` });
  return engine;
}

const modelId = (path: string) => path.replace(/[/\\]+$/, '').split(/[/\\]/).pop()!.replace(/\.(bin|comet|safetensors|gguf)$/, '');
