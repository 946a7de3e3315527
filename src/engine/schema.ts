// Request validation (zod), shared by the engine API and the HTTP server so both reject the same things.
//
// Policy: strict, as OpenAI's API is: an unknown field is a 400 ("Unrecognized request argument supplied"),
// a known field with a wrong type or out of range is a 400 naming the field (`param`), and so are fields that
// contradict each other (top_logprobs without logprobs, tool_choice without tools). `echo` is accepted only
// at its no-op value. `null` means "absent" for every optional field (OpenAI's clients send it). `top_k` is
// an extension, and so is `response_format` on completions (vLLM has it). JSON Schemas themselves are checked
// later, by Ajv and the grammar engine (grammar.ts), with the same 400 shape.
import { z } from 'zod';
import { CometError } from '../errors.ts';

/** An error with its HTTP status and OpenAI error fields. */
export class EngineError extends CometError {
  constructor(message: string, code: string, readonly status = 400, readonly param: string | null = null) {
    super(message, code);
    this.name = 'EngineError';
  }
}

const opt = <T extends z.ZodType>(t: T) => t.nullish().transform((v) => v ?? undefined);
const MAX_TOKENS_CAP = 1 << 20; // above any context; the model's own limit is checked against its config
const MAX_N = 16; // choices per request (each is a sequence in the batch)
export const MAX_TOP_LOGPROBS = 20;

const sampling = {
  model: opt(z.string()),
  max_tokens: opt(z.int().min(1).max(MAX_TOKENS_CAP)),
  temperature: opt(z.number().min(0).max(2)),
  top_p: opt(z.number().min(0).max(1)),
  top_k: opt(z.int().min(0)),
  seed: opt(z.int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER)),
  stop: opt(z.union([z.string().min(1), z.array(z.string().min(1)).max(4)], { error: 'expected a non-empty string or an array of at most 4 of them' })),
  stream: opt(z.boolean()),
  stream_options: opt(z.strictObject({ include_usage: opt(z.boolean()) })),
  user: opt(z.string()),
  n: opt(z.int().min(1).max(MAX_N)),
  frequency_penalty: opt(z.number().min(-2).max(2)),
  presence_penalty: opt(z.number().min(-2).max(2)),
  // token id (as a string, OpenAI's JSON) -> bias added to its logit; ids are checked against the vocabulary
  logit_bias: opt(z.record(z.string().regex(/^\d{1,9}$/, 'keys must be token ids'), z.number().min(-100).max(100))
    .refine((b) => Object.keys(b).length <= 1024, 'at most 1024 entries')),
};

// JSON Schema objects are kept as given (Ajv and XGrammar read them); only their outer type is checked here
const jsonSchemaObject = z.record(z.string(), z.unknown());
const name64 = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'expected 1-64 characters a-z, A-Z, 0-9, _ or -');

export const responseFormat = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    json_schema: z.strictObject({ name: name64, description: opt(z.string()), schema: opt(jsonSchemaObject), strict: opt(z.boolean()) }),
  }),
  // an extension: XGrammar's EBNF (root rule `root`), as vLLM's guided grammar and llama.cpp's GBNF
  z.strictObject({ type: z.literal('grammar'), grammar: z.string().min(1).max(16 << 10) }),
], { error: "expected {type: 'text' | 'json_object' | 'json_schema' | 'grammar'}" });

const tool = z.strictObject({
  type: z.literal('function'),
  function: z.strictObject({ name: name64, description: opt(z.string()), parameters: opt(jsonSchemaObject), strict: opt(z.boolean()) }),
});
const toolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string() }) }),
], { error: "expected 'none', 'auto', 'required' or {type: 'function', function: {name}}" });
const toolCall = z.strictObject({
  id: z.string(),
  type: z.literal('function'),
  function: z.strictObject({ name: z.string(), arguments: z.string() }),
});

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });
const message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  // null only for an assistant message that calls tools
  content: z.union([z.string(), z.array(textPart), z.null()], { error: "expected a string or an array of {type: 'text', text} parts" }),
  name: opt(z.string()),
  tool_calls: opt(z.array(toolCall)),
  tool_call_id: opt(z.string()),
  refusal: opt(z.string()),
}).superRefine((m, ctx) => {
  if (m.role === 'tool' && m.tool_call_id === undefined) ctx.addIssue({ code: 'custom', path: ['tool_call_id'], message: "a 'tool' message needs the id of the call it answers" });
  if (m.tool_calls !== undefined && m.role !== 'assistant') ctx.addIssue({ code: 'custom', path: ['tool_calls'], message: "only 'assistant' messages have tool_calls" });
  if (m.content === null && !(m.role === 'assistant' && m.tool_calls?.length)) ctx.addIssue({ code: 'custom', path: ['content'], message: 'content may be null only in an assistant message with tool_calls' });
});

export const chatSchema = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1),
  max_completion_tokens: opt(z.int().min(1).max(MAX_TOKENS_CAP)),
  logprobs: opt(z.boolean()),
  top_logprobs: opt(z.int().min(0).max(MAX_TOP_LOGPROBS)),
  response_format: opt(responseFormat),
  tools: opt(z.array(tool).max(128)),
  tool_choice: opt(toolChoice),
  parallel_tool_calls: opt(z.boolean()),
}).superRefine((r, ctx) => {
  if (r.top_logprobs !== undefined && r.logprobs !== true) ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: "'logprobs' must be true when 'top_logprobs' is given" });
  if (r.tool_choice !== undefined && r.tools === undefined) ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: "'tool_choice' is only allowed when 'tools' are given" });
  const names = new Set<string>();
  r.tools?.forEach((t, i) => {
    if (names.has(t.function.name)) ctx.addIssue({ code: 'custom', path: ['tools', i, 'function', 'name'], message: `the function name '${t.function.name}' is given twice` });
    names.add(t.function.name);
  });
  if (typeof r.tool_choice === 'object' && r.tools && !names.has(r.tool_choice.function.name))
    ctx.addIssue({ code: 'custom', path: ['tool_choice', 'function', 'name'], message: `no function named '${r.tool_choice.function.name}' in 'tools'` });
});

export const completionSchema = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.int().min(0)).min(1)], { error: 'expected a string or a non-empty array of token ids' }),
  echo: opt(z.literal(false)),
  logprobs: opt(z.int().min(0).max(MAX_TOP_LOGPROBS)), // completions: the number of top alternatives (0: the token's own)
  response_format: opt(responseFormat),
});

// vLLM's /tokenize (prompt or messages) and llama.cpp's (content); /detokenize takes {tokens}
export const tokenizeSchema = z.union([
  z.strictObject({ model: opt(z.string()), prompt: z.string(), add_special_tokens: opt(z.boolean()), return_token_strs: opt(z.boolean()) }),
  z.strictObject({ model: opt(z.string()), messages: z.array(message).min(1), add_generation_prompt: opt(z.boolean()), return_token_strs: opt(z.boolean()), tools: opt(z.array(tool).max(128)) }),
  z.strictObject({ content: z.string(), add_special: opt(z.boolean()), with_pieces: opt(z.boolean()) }),
], { error: "expected {prompt}, {messages} or {content}" });
export const detokenizeSchema = z.strictObject({ model: opt(z.string()), tokens: z.array(z.int().min(0)) });

export type ChatParams = z.input<typeof chatSchema>;
export type CompletionParams = z.input<typeof completionSchema>;
export type ChatRequest = z.output<typeof chatSchema>;
export type CompletionRequest = z.output<typeof completionSchema>;
export type TokenizeParams = z.input<typeof tokenizeSchema>;
export type DetokenizeParams = z.input<typeof detokenizeSchema>;
export type ResponseFormat = z.output<typeof responseFormat>;
export type Tool = z.output<typeof tool>;
export type ToolChoice = z.output<typeof toolChoice>;
export type ToolCall = z.output<typeof toolCall>;

/** Parse or throw a 400 EngineError naming the first bad field. */
export function parseRequest<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new EngineError('the request body must be a JSON object', 'invalid_request');
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  if (issue.code === 'unrecognized_keys')
    throw new EngineError(`Unrecognized request argument supplied: ${issue.keys.join(', ')}`, 'unknown_parameter', 400, issue.keys[0]);
  const param = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i ? `.${String(p)}` : String(p))).join('');
  const missing = issue.path.length === 1 && (body as Record<string, unknown>)[String(issue.path[0])] === undefined;
  throw new EngineError(missing ? `'${param}' is required` : `'${param}': ${issue.message}`, missing ? 'missing_required_parameter' : 'invalid_value', 400, param || null);
}
