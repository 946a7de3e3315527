// Tool calling with OpenAI's tool_choice semantics:
//   none       the tools are not rendered and nothing is parsed: plain text
//   auto       the tools are rendered through the chat template; the model's text is scanned for calls in the
//              formats LLaMA-family chat models use, and what is not a call is content
//   required   the output is constrained (grammar.ts) to a JSON array of calls to the given functions, each
//              {"name": <one of them>, "parameters": <its parameters schema>} (at most one unless
//              parallel_tool_calls), returned as tool_calls with finish_reason "tool_calls"
//   {function} the output is constrained to that function's parameters schema: it is the call's arguments;
//              finish_reason "stop", as OpenAI answers a forced function
// Formats recognised under auto (whole text, or tagged blocks anywhere):
//   <tool_call>{"name": ..., "arguments": {...}}</tool_call>          Hermes, Qwen 2.5/3
//   {"name": ..., "parameters"|"arguments": {...}}  or a list of them   Llama 3.x JSON (after <|python_tag|>),
//   [TOOL_CALLS][{...}, ...]                                           Mistral
// A call to a function that is not in `tools`, or text that is not JSON, stays content.
import type { GrammarSpec } from './grammar.ts';
import type { ToolChoice } from './schema.ts';

/** A tool as tools.ts reads it (schema.ts's Tool, or one built by hand) */
export interface Tool { type: 'function'; function: { name: string; parameters?: Record<string, unknown> | undefined } }

export type ToolMode = 'none' | 'auto' | 'required' | 'named';
export interface ToolPlan { mode: ToolMode; name?: string; grammar?: GrammarSpec }

export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

const ANY_OBJECT = { type: 'object' };

/** What a request's tools and tool_choice ask for (schema.ts has checked that a named function exists). */
export function toolPlan(tools: Tool[] | undefined, choice: ToolChoice | undefined, parallel = true): ToolPlan {
  if (!tools?.length || choice === 'none') return { mode: 'none' };
  if (choice === undefined || choice === 'auto') return { mode: 'auto' };
  if (choice === 'required') {
    const call = (t: Tool) => ({
      type: 'object',
      properties: { name: { type: 'string', const: t.function.name }, parameters: t.function.parameters ?? ANY_OBJECT },
      required: ['name', 'parameters'], additionalProperties: false,
    });
    const item = tools.length === 1 ? call(tools[0]) : { anyOf: tools.map(call) };
    return { mode: 'required', grammar: { schema: { type: 'array', items: item, minItems: 1, ...(parallel ? {} : { maxItems: 1 }) }, param: 'tools' } };
  }
  const i = tools.findIndex((t) => t.function.name === choice.function.name);
  return { mode: 'named', name: choice.function.name, grammar: { schema: tools[i].function.parameters ?? ANY_OBJECT, param: `tools[${i}].function.parameters` } };
}

export const callId = () => `call_${crypto.randomUUID().replaceAll('-', '').slice(0, 24)}`;

/** Calls in `text` (see the formats above), or undefined when it holds none that name a given function. */
export function parseToolCalls(text: string, names: Set<string>): { content: string; calls: { name: string; arguments: string }[] } | undefined {
  const toCalls = (v: unknown) => {
    const list = Array.isArray(v) ? v : [v];
    const calls = list.map((c) => {
      if (typeof c !== 'object' || c === null) return undefined;
      const { name } = c as { name?: unknown }, args = (c as Record<string, unknown>).arguments ?? (c as Record<string, unknown>).parameters ?? {};
      if (typeof name !== 'string' || !names.has(name)) return undefined;
      return { name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
    });
    return calls.length > 0 && calls.every((c) => c !== undefined) ? calls as { name: string; arguments: string }[] : undefined;
  };
  const json = (s: string) => {
    try { return JSON.parse(s) as unknown; } catch { return undefined; }
  };
  const tagged = [...text.matchAll(/<tool_call>([\s\S]*?)(?:<\/tool_call>|$)/g)];
  if (tagged.length > 0) {
    const calls = tagged.map((m) => toCalls(json(m[1].trim())));
    if (calls.every((c) => c !== undefined)) return { content: text.slice(0, tagged[0].index).trim(), calls: calls.flat() as { name: string; arguments: string }[] };
    return undefined;
  }
  const body = text.trim().replace(/^(\[TOOL_CALLS\]|<\|python_tag\|>)/, '').trim();
  if (!body.startsWith('{') && !body.startsWith('[')) return undefined;
  const calls = toCalls(json(body));
  return calls ? { content: '', calls } : undefined;
}

const JSON_STARTS = ['{', '[', '[TOOL_CALLS]', '<|python_tag|>'];
const TAG = '<tool_call>';

/** One choice's text, routed by its tool mode: content deltas, or tool-call deltas. Under `auto` the text
 *  streams as content until it may be a call: a reply that starts like JSON is held to the end, and so is
 *  everything from a `<tool_call>` tag on (a tail that could begin the tag waits for the next piece). */
export class ToolStream {
  private held = ''; // text not emitted yet
  private state: 'start' | 'text' | 'call' = 'start';
  private readonly names: Set<string>;
  constructor(private readonly plan: ToolPlan, tools: Tool[] | undefined,
    private readonly emitText: (s: string) => void, private readonly emitCalls: (c: ToolCallDelta[]) => void) {
    this.names = new Set((tools ?? []).map((t) => t.function.name));
    if (plan.mode === 'named') emitCalls([{ index: 0, id: callId(), type: 'function', function: { name: plan.name!, arguments: '' } }]);
  }

  text(s: string): void {
    const mode = this.plan.mode;
    if (mode === 'none') return this.emitText(s);
    if (mode === 'named') return this.emitCalls([{ index: 0, function: { arguments: s } }]);
    this.held += s;
    if (mode === 'required' || this.state === 'call') return;
    if (this.state === 'start') {
      const t = this.held.trimStart();
      if (t === '' || JSON_STARTS.some((m) => m.startsWith(t))) return; // could still be either
      if (JSON_STARTS.some((m) => t.startsWith(m))) { this.state = 'call'; return; }
      this.state = 'text';
    }
    // text: emit up to a <tool_call> tag, or up to a tail that could begin one
    const at = this.held.indexOf(TAG);
    if (at >= 0) {
      if (at > 0) this.emitText(this.held.slice(0, at));
      this.held = this.held.slice(at);
      this.state = 'call';
      return;
    }
    let keep = 0;
    for (let k = Math.min(TAG.length - 1, this.held.length); k > 0; k--) if (TAG.startsWith(this.held.slice(-k))) { keep = k; break; }
    if (this.held.length > keep) this.emitText(this.held.slice(0, this.held.length - keep));
    this.held = this.held.slice(this.held.length - keep);
  }

  /** At the end of the choice: parse what was held. Returns the finish reason when calls were made. */
  end(): 'tool_calls' | undefined {
    const mode = this.plan.mode;
    if (mode === 'none' || mode === 'named') return undefined;
    const text = this.held;
    this.held = '';
    let parsed: ReturnType<typeof parseToolCalls>;
    if (mode === 'required') {
      try {
        const list = JSON.parse(text) as { name: string; parameters: unknown }[];
        parsed = { content: '', calls: list.map((c) => ({ name: c.name, arguments: JSON.stringify(c.parameters) })) };
      } catch { parsed = undefined; } // cut short by max_tokens: the text is returned as it is
    } else parsed = parseToolCalls(text, this.names);
    if (!parsed) {
      if (text) this.emitText(text);
      return undefined;
    }
    if (parsed.content) this.emitText(parsed.content);
    this.emitCalls(parsed.calls.map((c, index) => ({ index, id: callId(), type: 'function', function: { name: c.name, arguments: c.arguments } })));
    return 'tool_calls';
  }
}

/** Messages as chat templates expect them (Hugging Face's convention): a call's arguments as an object. */
export function templateMessages<M extends { tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: string } }[] }>(messages: M[]): object[] {
  return messages.map((m) => m.tool_calls === undefined ? m : {
    ...m,
    tool_calls: m.tool_calls.map((c) => {
      let args: unknown = c.function.arguments;
      try { args = JSON.parse(c.function.arguments); } catch { /* a string the template may print as it is */ }
      return { id: c.id, type: c.type, function: { name: c.function.name, arguments: args } };
    }),
  });
}
