// Request validation (zod), shared by the engine API and the HTTP server so both reject the same things.
//
// Policy: strict, as OpenAI's API is: an unknown field is a 400 ("Unrecognized request argument supplied"),
// a known field with a wrong type or out of range is a 400 naming the field (`param`). Fields OpenAI has and
// COMET does not implement are accepted only at their no-op value (n: 1, logprobs: false, penalties: 0).
// `null` means "absent" for every optional field (OpenAI's clients send it). `top_k` is an extension.
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
  n: opt(z.literal(1)),
  logprobs: opt(z.literal(false)),
  frequency_penalty: opt(z.literal(0)),
  presence_penalty: opt(z.literal(0)),
};

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });
const message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPart)], { error: "expected a string or an array of {type: 'text', text} parts" }),
  name: opt(z.string()),
});

export const chatSchema = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1),
  max_completion_tokens: opt(z.int().min(1).max(MAX_TOKENS_CAP)),
});

export const completionSchema = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.int().min(0)).min(1)], { error: 'expected a string or a non-empty array of token ids' }),
  echo: opt(z.literal(false)),
});

export type ChatParams = z.input<typeof chatSchema>;
export type CompletionParams = z.input<typeof completionSchema>;
export type ChatRequest = z.output<typeof chatSchema>;
export type CompletionRequest = z.output<typeof completionSchema>;

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
