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
// A request is n sequences (choices); what each does with its logits and tokens (penalties, logit_bias, a
// grammar from response_format or a forced tool call, logprobs, tool-call parsing) is request.ts's, the
// grammar (compiled once per schema, before the request is queued, so a bad one is a 400) grammar.ts's.
// engine.tokenize() / detokenize() serve /tokenize and /detokenize.
import type { Backend } from '../../backends/backend.ts';
import type { OpenModel } from '../runtime/open.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { Channel } from './channel.ts';
import { ChatFormatter } from './chat-template.ts';
import { type GrammarSpec, Grammars, type Matcher } from './grammar.ts';
import {
  type ChatCompletion, type ChatCompletionChunk, Choice, type Completion, type CompletionChunk, type Event, type Finish, type Usage,
  chatChunks, collect, textChunks,
} from './request.ts';
import { toolPlan } from './tools.ts';
import { DecodeGraphs, graphLimit, type GraphStats } from './graphs.ts';
import { pageBytes, PagePool, type PoolStats } from './kv-pages.ts';
import { type FinishReason, Scheduler, type SchedulerStats, Sequence } from './scheduler.ts';
import {
  type ChatParams, type CompletionParams, type DetokenizeParams, EngineError, type ResponseFormat, type TokenizeParams,
  chatSchema, completionSchema, detokenizeSchema, parseRequest, tokenizeSchema,
} from './schema.ts';

export { EngineError } from './schema.ts';
export type { ChatParams, CompletionParams, DetokenizeParams, TokenizeParams } from './schema.ts';
export type { ChatCompletion, ChatCompletionChunk, Completion, CompletionChunk, Finish, Usage } from './request.ts';

export interface EngineOptions {
  backend?: Backend | string; // default 'sim'
  tokenizer?: string; // default: beside the model
  maxBatch?: number; // sequences decoded together (default 32)
  kvMemory?: number; // bytes for the KV page pool (default: maxBatch full-context sequences)
  pageSize?: number; // tokens per KV page (default 16)
  maxQueue?: number; // requests waiting for a batch slot before create() fails with 503 (default 256)
  maxStepTokens?: number; // tokens per forward: decodes + prefill chunks of several prompts (batched, chunked prefill; default 2048)
  prefixCache?: boolean; // share the KV pages of equal prompt prefixes across requests (default true)
  graphs?: number; // decode-step graphs kept, on a backend that can capture (CUDA); 0 = off (default 16)
  modelName?: string; // the id requests name (default: the model file's base name)
  chatTemplate?: string; // a Jinja chat template instead of the tokenizer's own (or for a model without one)
  onProgress?: (p: { phase: 'loading' | 'ready'; message: string }) => void;
}

export interface RequestOptions { signal?: AbortSignal }

export interface EngineStats extends SchedulerStats {
  kv: PoolStats;
  pageSize: number;
  requests: { finished: number; cancelled: number; failed: number; rejected: number };
  ttft: { count: number; sum: number; buckets: [number, number][] }; // seconds; cumulative counts per upper bound
  tokensPerSecond: number; // generated tokens over the last 10 s
  graphs?: GraphStats; // decode-step graphs (backends that can capture)
  loopGapMs: number; // time the step loop spent between steps (streaming to clients, new requests, I/O), summed
}

const MAX_PIECE_CHARS = 128;
const TTFT_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const RATE_WINDOW_MS = 10_000;
const tick: () => Promise<void> = () => new Promise((r) => (globalThis.setImmediate ?? setTimeout)(r));

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
  readonly grammars: Grammars;
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
  private loopGapMs = 0;

  constructor(readonly opened: OpenModel, readonly modelId: string, o: EngineOptions = {}) {
    const { model, tokenizer } = opened, c = model.config;
    this.tokenizer = tokenizer;
    this.contextLength = c.seqLen;
    this.formatter = new ChatFormatter(tokenizer, o.chatTemplate ?? tokenizer.chatTemplate);
    this.grammars = new Grammars(tokenizer, c.vocabSize, opened.stop);
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
    const maxStepTokens = positive('maxStepTokens', o.maxStepTokens ?? Math.max(2048, maxBatch));
    // every running sequence must be able to decode in every step, or the newest would starve
    if (maxStepTokens < maxBatch) throw new EngineError(`maxStepTokens (${maxStepTokens}) must be at least maxBatch (${maxBatch})`, 'invalid_config');
    const graphs = DecodeGraphs.for(model.be, model, cache, pageSize, graphLimit(o.graphs === undefined ? undefined : nonNegative('graphs', o.graphs)));
    this.scheduler = new Scheduler(model, this.pool, cache, { maxBatch, pageSize, maxStepTokens, prefixCache: o.prefixCache !== false }, graphs);
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
      loopGapMs: this.loopGapMs,
    };
  }

  /** Stop taking requests and cancel every queued and running one (their pages return to the pool). */
  close(): void {
    this.closed = true;
    for (const s of [...this.scheduler.waiting, ...this.scheduler.running]) this.scheduler.cancel(s);
    if (!this.looping) this.scheduler.sweep();
    this.scheduler.graphs?.dispose();
  }

  /** Token ids of a text or of rendered chat messages (vLLM's and llama.cpp's /tokenize). */
  tokenize(params: TokenizeParams): { count: number; max_model_len: number; tokens: number[]; token_strs?: string[] } | { tokens: number[] | { id: number; piece: string }[] } {
    const r = parseRequest(tokenizeSchema, params);
    if ('model' in r) this.checkModel(r.model);
    const chars = 'messages' in r ? JSON.stringify(r.messages).length : 'prompt' in r ? r.prompt.length : r.content.length;
    if (chars > this.contextLength * MAX_PIECE_CHARS * 4) // tokenization runs on the event loop (see submit)
      throw new EngineError(`the text has ${chars} characters, far more than this model's context of ${this.contextLength} tokens`, 'context_length_exceeded', 400, 'messages' in r ? 'messages' : 'prompt' in r ? 'prompt' : 'content');
    const strs = (ids: number[]) => ids.map((t) => this.tokenizer.tokenText(t));
    if ('content' in r) {
      const ids = this.tokenizer.encode(r.content, { bos: r.add_special ?? false });
      return { tokens: r.with_pieces ? ids.map((id) => ({ id, piece: this.tokenizer.tokenText(id) })) : ids };
    }
    const ids = 'messages' in r ? this.formatter.encode(r.messages, r.tools, r.add_generation_prompt ?? true) : this.tokenizer.encode(r.prompt, { bos: r.add_special_tokens ?? true });
    return { count: ids.length, max_model_len: this.contextLength, tokens: ids, ...(r.return_token_strs ? { token_strs: strs(ids) } : {}) };
  }

  /** The text of token ids (special tokens skipped): vLLM's {prompt}, llama.cpp's {content}. */
  detokenize(params: DetokenizeParams): { prompt: string; content: string } {
    const r = parseRequest(detokenizeSchema, params);
    this.checkModel(r.model);
    const vocab = this.tokenizer.vocabSize, bad = r.tokens.findIndex((t) => t >= vocab);
    if (bad >= 0) throw new EngineError(`tokens[${bad}]: token id ${r.tokens[bad]} is outside the vocabulary (0..${vocab - 1})`, 'invalid_value', 400, `tokens[${bad}]`);
    const text = this.tokenizer.decode(r.tokens);
    return { prompt: text, content: text };
  }

  private checkModel(model: string | undefined): void {
    if (model !== undefined && model !== this.modelId)
      throw new EngineError(`The model '${model}' does not exist (this server has '${this.modelId}')`, 'model_not_found', 404, 'model');
  }

  private async create(kind: 'chat' | 'text', params: ChatParams | CompletionParams, o: RequestOptions = {}): Promise<unknown> {
    try {
      return await this.submit(kind, params, o);
    } catch (e) {
      this.counts.rejected++;
      throw e;
    }
  }

  private async submit(kind: 'chat' | 'text', params: ChatParams | CompletionParams, o: RequestOptions): Promise<unknown> {
    const r = kind === 'chat' ? parseRequest(chatSchema, params) : parseRequest(completionSchema, params);
    this.checkModel(r.model);
    const seqLen = this.contextLength, vocab = this.opened.model.config.vocabSize;
    // refuse a text far longer than any context before tokenizing it: tokenization runs on the event loop, and
    // a megabyte prompt would stall every other request for a second. No tokenizer we load has pieces longer
    // than 128 characters, so a text over seqLen·128 characters cannot fit.
    const chars = 'messages' in r ? r.messages.reduce((a, m) => a + JSON.stringify(m.content ?? '').length, 0) : typeof r.prompt === 'string' ? r.prompt.length : 0;
    if (chars > seqLen * MAX_PIECE_CHARS)
      throw new EngineError(`This model's maximum context length is ${seqLen} tokens; the prompt has ${chars} characters, more than ${seqLen} tokens can hold`, 'context_length_exceeded', 400, kind === 'chat' ? 'messages' : 'prompt');
    const tools = 'tools' in r ? r.tools : undefined;
    const plan = toolPlan(tools, 'tool_choice' in r ? r.tool_choice : undefined, 'parallel_tool_calls' in r ? r.parallel_tool_calls ?? true : true);
    let prompt: number[];
    if ('messages' in r) prompt = this.formatter.encode(r.messages, plan.mode === 'none' ? undefined : tools);
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
    const bias = new Map<number, number>();
    for (const [k, v] of Object.entries(r.logit_bias ?? {})) {
      if (Number(k) >= vocab) throw new EngineError(`'logit_bias': token id ${k} is outside the vocabulary (0..${vocab - 1})`, 'invalid_value', 400, 'logit_bias');
      bias.set(Number(k), v);
    }
    const n = r.n ?? 1;
    // chat: logprobs true, top_logprobs alternatives; completions: logprobs = the number of alternatives
    const top = kind === 'chat' ? ('top_logprobs' in r && r.logprobs ? r.top_logprobs ?? 0 : undefined) : (r.logprobs as number | undefined);
    // a forced tool call's grammar wins over response_format (tools.ts)
    const grammar = plan.grammar ?? formatGrammar(r.response_format);
    const matchers: Matcher[] = [];
    try {
      if (grammar) for (let i = 0; i < n; i++) matchers.push(await this.grammars.matcher(grammar));
      if (this.closed) throw new EngineError('the engine is shutting down', 'unavailable', 503);
      if (this.scheduler.waiting.length + n > this.maxQueue)
        throw new EngineError(`the queue is full (${this.maxQueue} requests waiting); retry later`, 'queue_full', 503);
      if (o.signal?.aborted) throw abortError();
    } catch (e) {
      for (const m of matchers) m.dispose();
      throw e;
    }

    const temperature = r.temperature ?? 1;
    const stops = typeof r.stop === 'string' ? [r.stop] : r.stop ?? [];
    const id = this.nextId;
    this.nextId += n;
    const oid = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${id}`, created = Math.floor(Date.now() / 1000);
    const events = new Channel<Event>(() => cancel());
    const t0 = performance.now(), seed = r.seed ?? (temperature === 0 ? 0 : undefined);
    let live = n, ended = false, firstToken = true;
    const seqs: Sequence[] = [], choices: Choice[] = [];
    const stopAll = () => {
      for (const s of seqs) this.scheduler.cancel(s);
      if (!this.looping) this.scheduler.sweep();
      for (const c of choices) c.dispose();
    };
    const fail = (error: Error) => {
      if (ended) return;
      ended = true;
      o.signal?.removeEventListener('abort', onAbort);
      this.counts.failed++;
      stopAll();
      events.close(error);
    };
    const endChoice = (c: Choice, reason: FinishReason) => {
      if (ended) return;
      c.end(reason);
      if (--live > 0) return;
      ended = true;
      o.signal?.removeEventListener('abort', onAbort);
      this.counts.finished++;
      events.push({ usage: usage(prompt.length, seqs.reduce((a, s) => a + s.generated, 0)) });
      events.close();
    };
    const cancel = () => {
      if (ended) return;
      ended = true;
      o.signal?.removeEventListener('abort', onAbort);
      this.counts.cancelled++;
      stopAll();
      events.close(abortError());
    };
    const onAbort = () => cancel();
    for (let i = 0; i < n; i++) {
      const choice = new Choice(i, {
        tokenizer: this.tokenizer, lastPromptToken: prompt[prompt.length - 1], stops, top,
        frequency: r.frequency_penalty ?? 0, presence: r.presence_penalty ?? 0, bias, matcher: matchers[i], plan, tools,
      }, (e) => events.push(e));
      choices.push(choice);
      // choice i of a seeded request draws from seed + i: reproducible, and the choices differ
      const seq: Sequence = new Sequence(id + i, prompt, {
        maxTokens, temperature, topP: r.top_p ?? 1, topK: r.top_k ?? 0,
        seed: seed !== undefined ? seed + i : Math.floor(Math.random() * 2 ** 32), stop: this.opened.stop,
      }, {
        ...(choice.readsLogits ? { logits: (row: Float32Array) => choice.logits(row) } : {}),
        ...(matchers[i] ? { prepare: () => choice.prepare() } : {}),
        token: (tok, row) => {
          if (firstToken) { firstToken = false; this.observeTtft((performance.now() - t0) / 1000); }
          try {
            if (choice.token(tok, row)) { // a stop string: the text ends here
              this.scheduler.cancel(seq);
              endChoice(choice, 'stop');
            }
          } catch (e) {
            fail(e as Error);
          }
        },
        finish: (reason, error) => (error ? fail(error) : endChoice(choice, reason)),
      });
      seqs.push(seq);
    }
    o.signal?.addEventListener('abort', onAbort, { once: true });
    for (const s of seqs) this.scheduler.add(s);
    this.kick();

    const model = this.modelId, includeUsage = r.stream_options?.include_usage === true, withLogprobs = top !== undefined;
    if (!r.stream) return collect(events, kind, n, withLogprobs, oid, created, model);
    return kind === 'chat' ? chatChunks(events, n, withLogprobs, oid, created, model, includeUsage) : textChunks(events, withLogprobs, oid, created, model, includeUsage);
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
        const t = performance.now();
        await tick(); // let I/O (new requests, disconnects) in between steps
        this.loopGapMs += performance.now() - t;
      }
    } finally {
      this.looping = false;
    }
  }
}

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

/** response_format -> the grammar that constrains the output (none for text). */
function formatGrammar(f: ResponseFormat | undefined): GrammarSpec | undefined {
  if (f === undefined || f.type === 'text') return undefined;
  if (f.type === 'json_object') return { schema: { type: 'object' }, param: 'response_format' };
  if (f.type === 'grammar') return { ebnf: f.grammar, param: 'response_format.grammar' };
  return { schema: f.json_schema.schema ?? { type: 'object' }, param: 'response_format.json_schema.schema' };
}

/** Open a model (a path, or one already opened with openModel) on a backend and start an engine. */
export async function createEngine(modelOrPath?: string | OpenModel, o: EngineOptions = {}): Promise<Engine> {
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

export const modelId = (path: string) => path.replace(/[/\\]+$/, '').split(/[/\\]/).pop()!.replace(/\.(bin|comet|safetensors|gguf)$/, '');
