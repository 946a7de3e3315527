// One request's output: its n choices (one Sequence each), each turning sampled tokens into OpenAI's shapes.
//
//   Sequence --logits(row)--> Choice: penalties, logit_bias, the grammar's mask, in place (sampler.ts, grammar.ts)
//            --token(id, row)--> Choice: logprobs from that row; text through TextOut (UTF-8, stop strings);
//                                then ToolStream (tools.ts) routes it as content or tool-call deltas
//   Choice --Event--> one Channel per request --> collect() (a ChatCompletion / Completion) or the chunk streams
//
// Logprobs are the log-softmax of the logits the token was drawn from after penalties, logit_bias and the
// grammar's mask (vLLM's "processed" logprobs), before temperature and top-p/top-k: with none of those
// adjustments they are the model's own distribution.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { Channel } from './channel.ts';
import type { Matcher } from './grammar.ts';
import { adjustLogits, logprobs } from './sampler.ts';
import type { FinishReason } from './scheduler.ts';
import { type Tool, type ToolCallDelta, type ToolPlan, ToolStream } from './tools.ts';

export type Finish = FinishReason | 'tool_calls';
export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }

export interface TopLogprob { token: string; logprob: number; bytes: number[] }
export interface LogprobEntry extends TopLogprob { top_logprobs: TopLogprob[] }
export interface ChatLogprobs { content: LogprobEntry[]; refusal: null }
export interface CompletionLogprobs { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[]; text_offset: number[] }
export interface ToolCallOut { id: string; type: 'function'; function: { name: string; arguments: string } }

export interface ChatMessageOut { role: 'assistant'; content: string | null; tool_calls?: ToolCallOut[]; refusal: null }
export interface ChatCompletion {
  id: string; object: 'chat.completion'; created: number; model: string;
  choices: { index: number; message: ChatMessageOut; logprobs: ChatLogprobs | null; finish_reason: Finish }[];
  usage: Usage;
}
export interface ChatDelta { role?: 'assistant'; content?: string; tool_calls?: ToolCallDelta[] }
export interface ChatCompletionChunk {
  id: string; object: 'chat.completion.chunk'; created: number; model: string;
  choices: { index: number; delta: ChatDelta; logprobs: ChatLogprobs | null; finish_reason: Finish | null }[];
  usage?: Usage | null;
}
export interface Completion {
  id: string; object: 'text_completion'; created: number; model: string;
  choices: { index: number; text: string; logprobs: CompletionLogprobs | null; finish_reason: Finish }[];
  usage: Usage;
}
export type CompletionChunk = Omit<Completion, 'choices' | 'usage'> & {
  choices: { index: number; text: string; logprobs: CompletionLogprobs | null; finish_reason: Finish | null }[];
  usage?: Usage | null;
};

export type Event =
  | { index: number; text: string; lp?: LogprobEntry[] }
  | { index: number; calls: ToolCallDelta[]; lp?: LogprobEntry[] }
  | { index: number; end: Finish; lp?: LogprobEntry[] }
  | { usage: Usage };

export interface ChoiceOptions {
  tokenizer: Tokenizer;
  lastPromptToken: number;
  stops: string[];
  top?: number; // logprobs: how many alternatives; undefined = no logprobs
  frequency: number;
  presence: number;
  bias: Map<number, number>;
  matcher?: Matcher;
  plan: ToolPlan;
  tools?: Tool[];
}

/** One choice: the owner side of its Sequence (SeqSink's logits/token) and its share of the event stream. */
export class Choice {
  readonly counts = new Map<number, number>(); // generated token -> times (penalties)
  private readonly out: TextOut;
  private readonly toolOut: ToolStream;
  private pending: LogprobEntry[] = []; // logprobs of tokens whose text is not out yet
  private allowed?: Int32Array; // the grammar's mask for this step, from prepare()
  private prev: number;
  private readonly dec = new TextDecoder(); // one token's own text (lossy for a partial character)

  constructor(readonly index: number, private readonly o: ChoiceOptions, private readonly push: (e: Event) => void) {
    this.prev = o.lastPromptToken;
    const lp = () => this.take();
    this.toolOut = new ToolStream(o.plan, o.tools, (text) => push({ index, text, lp: lp() }), (calls) => push({ index, calls, lp: lp() }));
    this.out = new TextOut(o.tokenizer, o.lastPromptToken, o.stops, (s) => this.toolOut.text(s));
  }

  /** whether the sequence must hand its logits to logits()/token() */
  get readsLogits(): boolean {
    const o = this.o;
    return o.top !== undefined || o.frequency !== 0 || o.presence !== 0 || o.bias.size > 0 || o.matcher !== undefined;
  }

  /** The grammar's mask for the next token, computed while the device runs the forward (SeqSink.prepare). */
  async prepare(): Promise<void> {
    this.allowed = await this.o.matcher?.allowed();
  }

  async logits(row: Float32Array): Promise<void> {
    adjustLogits(row, this.counts, this.o.frequency, this.o.presence, this.o.bias);
    await this.o.matcher?.mask(row, this.allowed);
    this.allowed = undefined;
  }

  /** Returns true when a stop string ended the text (the caller cancels the sequence). */
  token(id: number, row?: Float32Array): boolean {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    if (this.o.matcher && !this.o.matcher.accept(id)) throw new Error(`the grammar rejected token ${id}, which its mask allowed`);
    if (this.o.top !== undefined && row) {
      const tok = this.o.tokenizer, entry = (t: number, logprob: number): TopLogprob => {
        const bytes = tok.pieceBytes(this.prev, t);
        return { token: this.dec.decode(bytes), logprob, bytes: Array.from(bytes) };
      };
      const { logprob, top } = logprobs(row, id, this.o.top);
      this.pending.push({ ...entry(id, logprob), top_logprobs: top.map((t) => entry(t.id, t.logprob)) });
    }
    this.prev = id;
    return this.out.token(id);
  }

  /** The choice ended: flush held text (stop strings, tool calls) and send its end event. */
  end(reason: FinishReason): void {
    this.out.end();
    const calls = this.toolOut.end();
    this.o.matcher?.dispose();
    this.push({ index: this.index, end: calls && reason === 'stop' ? calls : reason, lp: this.take() });
  }

  dispose(): void {
    this.o.matcher?.dispose();
  }

  private take(): LogprobEntry[] | undefined {
    if (this.pending.length === 0) return undefined;
    const lp = this.pending;
    this.pending = [];
    return lp;
  }
}

/** Token ids -> text, as a UTF-8 stream (a character may span tokens), with OpenAI stop strings: the text
 *  ends before the first one, and up to (longest stop - 1) characters are held back until they cannot start
 *  one. Returns true from token() when a stop string was found. */
const isAscii = (b: Uint8Array) => {
  for (let i = 0; i < b.length; i++) if (b[i] >= 0x80) return false;
  return true;
};

export class TextOut {
  private text = '';
  private sent = 0;
  private stopped = false;
  private readonly decoder = new TextDecoder();
  private inChar = false; // the decoder may hold the first bytes of a character
  private readonly hold: number;
  constructor(private readonly tok: Tokenizer, private prev: number, private readonly stops: string[], private readonly emit: (s: string) => void) {
    this.hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }
  token(id: number): boolean {
    const bytes = this.tok.pieceBytes(this.prev, id);
    this.prev = id;
    // ASCII pieces while the decoder holds no partial character: the bytes are the text (a TextDecoder call
    // per token is ~3 us, a tenth of the engine's host time per decode step at batch 256)
    if (!this.inChar && isAscii(bytes)) this.text += String.fromCharCode.apply(null, bytes as unknown as number[]);
    else {
      this.text += this.decoder.decode(bytes, { stream: true });
      this.inChar = !(bytes.length > 0 && bytes[bytes.length - 1] < 0x80); // ends in ASCII: nothing held back
    }
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

// ---- OpenAI shapes ----

/** Completions' logprobs for a run of tokens; `offset` is the text length before them (text_offset). */
function completionLogprobs(lp: LogprobEntry[], offset: number): CompletionLogprobs {
  const text_offset: number[] = [];
  for (const e of lp) { text_offset.push(offset); offset += e.token.length; }
  return {
    tokens: lp.map((e) => e.token), token_logprobs: lp.map((e) => e.logprob), text_offset,
    top_logprobs: lp.map((e) => Object.fromEntries(e.top_logprobs.map((t) => [t.token, t.logprob]))),
  };
}

interface Acc { text: string; calls: ToolCallOut[]; lp: LogprobEntry[]; end?: Finish }

function accumulate(acc: Acc, e: Exclude<Event, { usage: Usage }>): void {
  if (e.lp) acc.lp.push(...e.lp);
  if ('text' in e) acc.text += e.text;
  else if ('calls' in e) {
    for (const d of e.calls) {
      const c = acc.calls[d.index] ??= { id: d.id ?? '', type: 'function', function: { name: d.function.name ?? '', arguments: '' } };
      c.function.arguments += d.function.arguments;
    }
  } else acc.end = e.end;
}

export async function collect(events: Channel<Event>, kind: 'chat' | 'text', n: number, withLogprobs: boolean, id: string, created: number, model: string): Promise<ChatCompletion | Completion> {
  const accs: Acc[] = Array.from({ length: n }, () => ({ text: '', calls: [], lp: [] }));
  for await (const e of events) {
    if (!('usage' in e)) { accumulate(accs[e.index], e); continue; }
    if (kind === 'chat')
      return {
        id, object: 'chat.completion', created, model, usage: e.usage,
        choices: accs.map((a, index) => ({
          index, finish_reason: a.end!,
          message: { role: 'assistant', content: a.calls.length && !a.text ? null : a.text, ...(a.calls.length ? { tool_calls: a.calls } : {}), refusal: null },
          logprobs: withLogprobs ? { content: a.lp, refusal: null } : null,
        })),
      };
    return {
      id, object: 'text_completion', created, model, usage: e.usage,
      choices: accs.map((a, index) => ({ index, text: a.text, logprobs: withLogprobs ? completionLogprobs(a.lp, 0) : null, finish_reason: a.end! })),
    };
  }
  throw new Error('unreachable: the channel ends with a usage event or an error');
}

export async function* chatChunks(events: Channel<Event>, n: number, withLogprobs: boolean, id: string, created: number, model: string, includeUsage: boolean): AsyncGenerator<ChatCompletionChunk> {
  const base = { id, object: 'chat.completion.chunk' as const, created, model, ...(includeUsage ? { usage: null } : {}) };
  const chunk = (index: number, delta: ChatDelta, lp?: LogprobEntry[], finish: Finish | null = null): ChatCompletionChunk =>
    ({ ...base, choices: [{ index, delta, logprobs: withLogprobs && lp ? { content: lp, refusal: null } : null, finish_reason: finish }] });
  for (let i = 0; i < n; i++) yield chunk(i, { role: 'assistant', content: '' });
  for await (const e of events) {
    if ('usage' in e) {
      if (includeUsage) yield { ...base, choices: [], usage: e.usage };
      continue;
    }
    if ('text' in e) yield chunk(e.index, { content: e.text }, e.lp);
    else if ('calls' in e) yield chunk(e.index, { tool_calls: e.calls }, e.lp);
    else yield chunk(e.index, {}, e.lp, e.end);
  }
}

export async function* textChunks(events: Channel<Event>, withLogprobs: boolean, id: string, created: number, model: string, includeUsage: boolean): AsyncGenerator<CompletionChunk> {
  const base = { id, object: 'text_completion' as const, created, model, ...(includeUsage ? { usage: null } : {}) };
  const offsets = new Map<number, number>();
  const chunk = (index: number, text: string, lp?: LogprobEntry[], finish: Finish | null = null): CompletionChunk => {
    const at = offsets.get(index) ?? 0;
    offsets.set(index, at + text.length);
    return { ...base, choices: [{ index, text, logprobs: withLogprobs && lp ? completionLogprobs(lp, at) : null, finish_reason: finish }] };
  };
  for await (const e of events) {
    if ('usage' in e) {
      if (includeUsage) yield { ...base, choices: [], usage: e.usage };
      continue;
    }
    if ('text' in e) yield chunk(e.index, e.text, e.lp);
    else if ('end' in e) yield chunk(e.index, '', e.lp, e.end);
  }
}
