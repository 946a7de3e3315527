// Issue 19 through the official openai client on loopback (simulator, embedded stories260K: a 512-token
// byte-fallback vocabulary, no chat template of its own): schema-forced replies parse and validate (Ajv) for a
// table of schemas, streamed and not; forced tool calls parse and validate against their function's
// parameters; tools and tool results reach a chat template; logprobs are the log-softmax of the logits a
// reference decode loop computes (bit-exact rows, DESIGN §3), and so are penalties and logit_bias; n and
// seed reproduce single requests; /tokenize and /detokenize in vLLM's and llama.cpp's shapes.
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import { createEngine, type Engine } from '../src/engine/engine.ts';
import { singleSequenceCache } from '../src/engine/generate.ts';
import { parseToolCalls, type ToolCallDelta, ToolStream, toolPlan } from '../src/engine/tools.ts';
import { openModel, type OpenModel } from '../src/runtime/open.ts';
import { eachBackend } from './helpers/backends.ts';
import { startServer, type RunningServer } from '../src/server/server.ts';

// the tokenizer is the same on every backend (a sim open, cheap); each backend row opens its own model
const tok = (await openModel(new SimBackend())).tokenizer;
const MODEL = 'stories260K';
const USER = [{ role: 'user' as const, content: 'Once upon a time' }];
const ajv = new Ajv({ strict: false });

// a minimal Jinja chat template that takes tools, tool calls and tool results (stories260K has none)
const TEMPLATE = `{%- if tools %}Tools:{% for t in tools %} {{ t.function.name }}({{ t.function.parameters.required | join(', ') }}){% endfor %}{{ '\\n' }}{% endif %}
{%- for m in messages %}{{ m.role }}: {% if m.tool_calls %}{% for c in m.tool_calls %}call {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}
{%- elif m.role == 'tool' %}result {{ m.tool_call_id }} {{ m.content }}{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}
{%- if add_generation_prompt %}assistant:{% endif %}`;

interface Srv { engine: Engine; srv: RunningServer; client: OpenAI }
async function serveOn(opened: OpenModel, o: Parameters<typeof createEngine>[1] = {}): Promise<Srv> {
  const engine = await createEngine(opened, { modelName: MODEL, ...o });
  const srv = await startServer(engine, { port: 0 });
  return { engine, srv, client: new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 }) };
}

/** Greedy decoding alone, one token per forward, with the logits of every step (after `adjust`). */
async function referenceOn(opened: OpenModel, prompt: number[], steps: number, adjust: (row: Float32Array, counts: Map<number, number>) => void = () => {}) {
  const m = opened.model, total = Math.min(m.config.seqLen, prompt.length + steps);
  const { cache, blockTable } = singleSequenceCache(m, total);
  const tokens: number[] = [], rows: Float32Array[] = [], counts = new Map<number, number>();
  let feed = Int32Array.from(prompt), pos = 0;
  while (tokens.length < steps && pos < m.config.seqLen) {
    const T = feed.length;
    const layout = { pos: Int32Array.from({ length: T }, (_, i) => pos + i), seq: new Int32Array(T), blockTables: [blockTable] };
    const row = (await m.be.read(m.forward(feed, layout, cache, Int32Array.of(T - 1)))).slice();
    m.be.endStep();
    pos += T;
    adjust(row, counts);
    let next = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[next]) next = i;
    if (opened.stop.includes(next)) break;
    tokens.push(next);
    rows.push(row);
    counts.set(next, (counts.get(next) ?? 0) + 1);
    feed = Int32Array.of(next);
  }
  return { tokens, rows };
}

const text = (ids: number[], prev: number) => {
  const dec = new TextDecoder();
  let s = '';
  for (const t of ids) { s += dec.decode(tok.pieceBytes(prev, t), { stream: true }); prev = t; }
  return s + dec.decode();
};
const logSoftmax = (row: Float32Array, id: number) => {
  let max = -Infinity, sum = 0;
  for (const x of row) max = Math.max(max, x);
  for (const x of row) sum += Math.exp(x - max);
  return row[id] - max - Math.log(sum);
};

// Every feature on every backend present (sim on CI, CUDA on the GPU machine: npm run test:cuda): the references
// below run the same model on the same backend, so logprobs and penalties are checked against that backend's logits.
eachBackend('openai client features', (c) => {
  let opened: OpenModel;
  beforeAll(async () => { opened = await openModel(await c.create()); });
  const serve = (o: Parameters<typeof createEngine>[1] = {}) => serveOn(opened, o);
  const reference = (prompt: number[], steps: number, adjust?: Parameters<typeof referenceOn>[3]) => referenceOn(opened, prompt, steps, adjust);

  describe('structured output, tools, logprobs, n, penalties (openai client)', () => {
    let s: Srv;
    beforeAll(async () => { s = await serve({ chatTemplate: undefined }); });
    afterAll(async () => { await s.srv.close(); });

    const SCHEMAS: [string, Record<string, unknown>][] = [
      ['object with bounded fields', { type: 'object', properties: { name: { type: 'string', maxLength: 16 }, age: { type: 'integer', minimum: 0, maximum: 120 }, happy: { type: 'boolean' } }, required: ['name', 'age', 'happy'] }],
      ['enum and a short array', { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] }, tags: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 } }, required: ['color', 'tags'] }],
      ['$defs and $ref', { $defs: { pt: { type: 'object', properties: { x: { type: 'integer', minimum: -50, maximum: 50 }, y: { type: 'integer', minimum: -50, maximum: 50 } }, required: ['x', 'y'] } }, type: 'object', properties: { a: { $ref: '#/$defs/pt' }, b: { $ref: '#/$defs/pt' } }, required: ['a', 'b'] }],
      ['anyOf with null', { type: 'object', properties: { v: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'string', maxLength: 5 }, { type: 'null' }] } }, required: ['v'] }],
      ['top-level array of bounded numbers', { type: 'array', items: { type: 'integer', minimum: -10, maximum: 10 }, minItems: 2, maxItems: 4 }],
      ['pattern and const', { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{2}$' }, ok: { const: true } }, required: ['code', 'ok'] }],
    ];
    it.each(SCHEMAS)('json_schema %s: the reply parses and validates, streamed and not', async (_, schema) => {
      const body = { model: MODEL, messages: USER, max_tokens: 300, temperature: 0, response_format: { type: 'json_schema' as const, json_schema: { name: 'answer', schema, strict: true } } };
      // both at once: they decode in one batch
      const [r, stream] = await Promise.all([s.client.chat.completions.create(body), s.client.chat.completions.create({ ...body, stream: true })]);
      expect(r.choices[0].finish_reason).toBe('stop');
      const content = r.choices[0].message.content!;
      const validate = ajv.compile(schema);
      expect(validate(JSON.parse(content)), `${content}\n${JSON.stringify(validate.errors)}`).toBe(true);
      let streamed = '';
      for await (const ch of stream) streamed += ch.choices[0]?.delta.content ?? '';
      expect(streamed).toBe(content);
    });

    it('json_object (with logit_bias pushing quotes and braces: the output closes) parses to an object; completions take response_format too', async () => {
      const ids = (ch: string) => Array.from({ length: tok.vocabSize }, (_, i) => i).filter((i) => new TextDecoder().decode(tok.pieceBytes(0, i)) === ch);
      const bias = Object.fromEntries([...ids('"'), ...ids('}')].map((i) => [String(i), 30]));
      const r = await s.client.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 100, temperature: 0, response_format: { type: 'json_object' }, logit_bias: bias });
      expect(r.choices[0].finish_reason).toBe('stop');
      const v = JSON.parse(r.choices[0].message.content!);
      expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
      const schema = SCHEMAS[0][1];
      const c = await s.client.completions.create({ model: MODEL, prompt: 'One day', max_tokens: 200, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'p', schema } } } as never) as OpenAI.Completion;
      expect(ajv.validate(schema, JSON.parse(c.choices[0].text))).toBe(true);
    });

    it('a schema the grammar engine aborts on is a 400, and structured output still works after it', async () => {
      const bad = s.client.chat.completions.create({ model: MODEL, messages: USER, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', minProperties: 3 } } } });
      await expect(bad).rejects.toMatchObject({ status: 400, param: 'response_format.json_schema.schema' });
      const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 1, maximum: 3 } }, required: ['n'] };
      const r = await s.client.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 60, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'y', schema } } });
      expect(ajv.validate(schema, JSON.parse(r.choices[0].message.content!))).toBe(true);
    });

    it('response_format grammar (an extension: XGrammar EBNF) holds the text to it; a grammar it cannot parse is a 400', async () => {
      const GRAMMARS: [string, RegExp][] = [
        ['root ::= "The answer is " ("yes" | "no") "."', /^The answer is (yes|no)\.$/],
        ['root ::= [A-Z] [a-z]{2,6} " is " [0-9]{1,2} " years old"', /^[A-Z][a-z]{2,6} is [0-9]{1,2} years old$/],
      ];
      const rs = await Promise.all(GRAMMARS.map(([grammar]) => s.client.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 40, temperature: 0, response_format: { type: 'grammar', grammar } } as never) as Promise<OpenAI.ChatCompletion>));
      rs.forEach((r, i) => {
        expect(r.choices[0].finish_reason).toBe('stop');
        expect(r.choices[0].message.content).toMatch(GRAMMARS[i][1]);
      });
      await expect(s.client.chat.completions.create({ model: MODEL, messages: USER, response_format: { type: 'grammar', grammar: 'root ::= ("a" | ' } } as never))
        .rejects.toMatchObject({ status: 400, param: 'response_format.grammar' });
    });

    it('chat logprobs: the greedy token has the log-softmax of the logits decoding computes, the top list leads with it; streamed the same', async () => {
      const prompt = tok.encode(USER[0].content, { bos: true });
      const ref = await reference(prompt, 12);
      const body = { model: MODEL, messages: USER, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 5 };
      const r = await s.client.chat.completions.create(body);
      const lp = r.choices[0].logprobs!.content!;
      expect(lp.length).toBe(12);
      let prev = prompt[prompt.length - 1];
      lp.forEach((e, i) => {
        const id = ref.tokens[i];
        expect(e.logprob).toBeCloseTo(logSoftmax(ref.rows[i], id), 12);
        expect(e.bytes).toEqual(Array.from(tok.pieceBytes(prev, id)));
        expect(e.top_logprobs.length).toBe(5);
        expect(e.top_logprobs[0]).toEqual({ token: e.token, logprob: e.logprob, bytes: e.bytes });
        for (let k = 1; k < 5; k++) expect(e.top_logprobs[k].logprob).toBeLessThanOrEqual(e.top_logprobs[k - 1].logprob);
        prev = id;
      });
      expect(r.choices[0].message.content).toBe(text(ref.tokens, prompt[prompt.length - 1]));
      const streamed: typeof lp = [];
      for await (const ch of await s.client.chat.completions.create({ ...body, stream: true })) streamed.push(...(ch.choices[0]?.logprobs?.content ?? []));
      expect(streamed).toEqual(lp);
      const plain = await s.client.chat.completions.create({ ...body, logprobs: false, top_logprobs: undefined });
      expect(plain.choices[0].logprobs).toBeNull();
    });

    it('completions logprobs: tokens, token_logprobs, top_logprobs dicts and text offsets, streamed the same', async () => {
      const prompt = tok.encode('One day, a cat', { bos: true });
      const ref = await reference(prompt, 8);
      const r = await s.client.completions.create({ model: MODEL, prompt: 'One day, a cat', max_tokens: 8, temperature: 0, logprobs: 3 });
      const lp = r.choices[0].logprobs!;
      expect(lp.tokens!.join('')).toBe(r.choices[0].text);
      lp.token_logprobs!.forEach((x, i) => expect(x).toBeCloseTo(logSoftmax(ref.rows[i], ref.tokens[i]), 12));
      for (const d of lp.top_logprobs!) expect(Object.keys(d).length).toBeLessThanOrEqual(3);
      expect(lp.text_offset![0]).toBe(0);
      const toks: string[] = [], offsets: number[] = [];
      for await (const ch of await s.client.completions.create({ model: MODEL, prompt: 'One day, a cat', max_tokens: 8, temperature: 0, logprobs: 3, stream: true })) {
        toks.push(...(ch.choices[0]?.logprobs?.tokens ?? []));
        offsets.push(...(ch.choices[0]?.logprobs?.text_offset ?? []));
      }
      expect(toks).toEqual(lp.tokens);
      expect(offsets).toEqual(lp.text_offset);
    });

    it('frequency/presence penalties and logit_bias give exactly the reference decode with the same adjustment', async () => {
      const prompt = tok.encode('Lily and Tom', { bos: true });
      const [banned] = (await reference(prompt, 1)).tokens; // the greedy first token, banned by -100
      const liked = tok.encode(' dog', { bos: false }).at(-1)!;
      const bias = new Map([[banned, -100], [liked, 3]]);
      const ref = await reference(prompt, 40, (row, counts) => {
        for (const [j, c] of counts) row[j] -= c * 1.2 + 0.6;
        for (const [j, b] of bias) row[j] += b;
      });
      const body = { model: MODEL, prompt: 'Lily and Tom', max_tokens: 40, temperature: 0, frequency_penalty: 1.2, presence_penalty: 0.6, logit_bias: { [banned]: -100, [liked]: 3 } };
      const [r, stream] = await Promise.all([s.client.completions.create(body), s.client.completions.create({ ...body, stream: true })]);
      expect(r.choices[0].text).toBe(text(ref.tokens, prompt[prompt.length - 1]));
      let streamed = '';
      for await (const ch of stream) streamed += ch.choices[0]?.text ?? '';
      expect(streamed).toBe(r.choices[0].text);
      expect(ref.tokens).not.toContain(banned);
      const plain = await s.client.completions.create({ model: MODEL, prompt: 'Lily and Tom', max_tokens: 40, temperature: 0 });
      expect(plain.choices[0].text).not.toBe(r.choices[0].text);
    });

    it('n choices: choice i of a seeded request is the single request with seed + i; streamed the same; seeds reproduce', async () => {
      const body = { model: MODEL, prompt: 'One day, a bird', max_tokens: 24, temperature: 1 };
      const r = await s.client.completions.create({ ...body, n: 3, seed: 7 });
      expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
      for (let i = 0; i < 3; i++) expect(r.choices[i].text).toBe((await s.client.completions.create({ ...body, seed: 7 + i })).choices[0].text);
      expect(new Set(r.choices.map((c) => c.text)).size).toBeGreaterThan(1);
      expect(r.usage!.completion_tokens).toBe(r.choices.length * 24);
      const streamed = ['', '', ''];
      for await (const ch of await s.client.completions.create({ ...body, n: 3, seed: 7, stream: true })) for (const c of ch.choices) streamed[c.index] += c.text;
      expect(streamed).toEqual(r.choices.map((c) => c.text));
      const chat = await s.client.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 16, temperature: 0.8, seed: 3, n: 2 });
      const again = await s.client.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 16, temperature: 0.8, seed: 3, n: 2 });
      expect(again.choices.map((c) => c.message.content)).toEqual(chat.choices.map((c) => c.message.content));
    });

    it('/tokenize and /detokenize: vLLM and llama.cpp shapes, errors as elsewhere', async () => {
      const post = (path: string, body: unknown, type = 'application/json') => fetch(`${s.srv.url}${path}`, { method: 'POST', headers: { 'content-type': type }, body: JSON.stringify(body) });
      const ids = tok.encode('Once upon a time', { bos: true });
      expect(await (await post('/tokenize', { prompt: 'Once upon a time', return_token_strs: true })).json()).toEqual({ count: ids.length, max_model_len: 512, tokens: ids, token_strs: ids.map((i) => tok.tokenText(i)) });
      expect((await (await post('/tokenize', { prompt: 'Once upon a time', add_special_tokens: false })).json()).tokens).toEqual(ids.slice(1));
      expect((await (await post('/tokenize', { messages: USER })).json()).tokens).toEqual(ids); // the fallback template
      expect(await (await post('/tokenize', { content: 'Once upon a time', with_pieces: true })).json()).toEqual({ tokens: ids.slice(1).map((id) => ({ id, piece: tok.tokenText(id) })) });
      expect(await (await post('/detokenize', { tokens: ids })).json()).toEqual({ prompt: 'Once upon a time', content: 'Once upon a time' });
      const bad = await post('/detokenize', { tokens: [5, 100000] });
      expect(bad.status).toBe(400);
      expect((await bad.json()).error).toMatchObject({ code: 'invalid_value', param: 'tokens[1]' });
      expect((await post('/tokenize', { prompt: 'a', model: 'other' })).status).toBe(404);
      expect((await post('/tokenize', { nothing: 1 })).status).toBe(400);
      expect((await post('/tokenize', { prompt: 'a' }, 'text/plain')).status).toBe(415);
    });
  });

  describe('tool calling (a small chat template that renders tools)', () => {
    let s: Srv;
    beforeAll(async () => { s = await serve({ chatTemplate: TEMPLATE }); });
    afterAll(async () => { await s.srv.close(); });
    const weather = { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'] };
    const TOOLS: OpenAI.ChatCompletionFunctionTool[] = [
      { type: 'function', function: { name: 'get_weather', description: 'weather', parameters: weather } },
      { type: 'function', function: { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 99 }, b: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['a', 'b'] } } },
    ];
    const params = (name: string) => TOOLS.find((t) => t.function.name === name)!.function.parameters!;

    it('tools, tool calls and tool results reach the template; tool_choice none leaves the tools out', async () => {
      const messages: OpenAI.ChatCompletionMessageParam[] = [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "days": 2}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
      ];
      const r = await (await fetch(`${s.srv.url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages, tools: TOOLS }) })).json();
      const prompt = tok.decode(r.tokens);
      expect(prompt.startsWith('Tools: get_weather(city, days) add(a, b)\nuser: Weather in Paris?\n')).toBe(true);
      expect(prompt).toContain('\nassistant: call get_weather {"city": "Paris", "days": 2}\n'); // arguments reach the template as an object
      expect(prompt.endsWith('\ntool: result call_1 sunny\nassistant:')).toBe(true);
      const none = await s.client.chat.completions.create({ model: MODEL, messages, tools: TOOLS, tool_choice: 'none', max_tokens: 4, temperature: 0 });
      const auto = await s.client.chat.completions.create({ model: MODEL, messages, tools: TOOLS, max_tokens: 4, temperature: 0 });
      expect(none.usage!.prompt_tokens).toBeLessThan(auto.usage!.prompt_tokens);
      expect(auto.usage!.prompt_tokens).toBe(r.count);
    });

    it('a named tool_choice forces that call: arguments parse and validate, finish_reason stop; streamed as tool_call deltas', async () => {
      const body = { model: MODEL, messages: USER, tools: TOOLS, tool_choice: { type: 'function' as const, function: { name: 'get_weather' } }, max_tokens: 120, temperature: 0 };
      const [r, stream] = await Promise.all([s.client.chat.completions.create(body), s.client.chat.completions.create({ ...body, stream: true })]);
      const c = r.choices[0];
      expect(c.finish_reason).toBe('stop');
      expect(c.message.content).toBeNull();
      expect(c.message.tool_calls!.length).toBe(1);
      const call = c.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      expect(call).toMatchObject({ type: 'function', id: expect.stringMatching(/^call_\w+$/), function: { name: 'get_weather' } });
      expect(ajv.validate(weather, JSON.parse(call.function.arguments))).toBe(true);
      let args = '', name = '', id = '', finish = '';
      for await (const ch of stream) {
        for (const d of ch.choices[0]?.delta.tool_calls ?? []) {
          expect(d.index).toBe(0);
          name += d.function?.name ?? '';
          id += d.id ?? '';
          args += d.function?.arguments ?? '';
        }
        finish ||= ch.choices[0]?.finish_reason ?? '';
      }
      expect([name, args, finish]).toEqual(['get_weather', call.function.arguments, 'stop']);
      expect(id).toMatch(/^call_\w+$/);
    });

    it("tool_choice required: one call (parallel_tool_calls false) to a given function, arguments valid, finish_reason tool_calls; streamed too", async () => {
      const body = { model: MODEL, messages: USER, tools: TOOLS, tool_choice: 'required' as const, parallel_tool_calls: false, max_tokens: 150, temperature: 0 };
      const [r, stream] = await Promise.all([s.client.chat.completions.create(body), s.client.chat.completions.create({ ...body, stream: true })]);
      const c = r.choices[0];
      expect(c.finish_reason).toBe('tool_calls');
      expect(c.message.tool_calls!.length).toBe(1);
      const call = c.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
      expect(['get_weather', 'add']).toContain(call.function.name);
      expect(ajv.validate(params(call.function.name), JSON.parse(call.function.arguments))).toBe(true);
      const calls: ToolCallDelta[] = [];
      let finish = '';
      for await (const ch of stream) {
        calls.push(...((ch.choices[0]?.delta.tool_calls ?? []) as ToolCallDelta[]));
        finish ||= ch.choices[0]?.finish_reason ?? '';
      }
      expect(finish).toBe('tool_calls');
      expect(calls.map((d) => [d.function.name, d.function.arguments])).toEqual([[call.function.name, call.function.arguments]]);
    });

    it('tool_choice auto with a model that writes prose: content, no tool_calls (streamed the same)', async () => {
      const body = { model: MODEL, messages: USER, tools: TOOLS, max_tokens: 30, temperature: 0 };
      const [r, stream] = await Promise.all([s.client.chat.completions.create(body), s.client.chat.completions.create({ ...body, stream: true })]);
      expect(r.choices[0].message.tool_calls).toBeUndefined();
      expect(r.choices[0].message.content!.length).toBeGreaterThan(0);
      let streamed = '';
      for await (const ch of stream) {
        expect(ch.choices[0]?.delta.tool_calls).toBeUndefined();
        streamed += ch.choices[0]?.delta.content ?? '';
      }
      expect(streamed).toBe(r.choices[0].message.content);
    });
  });
});

describe('tool-call parsing (auto)', () => {
  const tools = [{ type: 'function' as const, function: { name: 'get_weather' } }, { type: 'function' as const, function: { name: 'add' } }];
  const names = new Set(['get_weather', 'add']);
  it('reads Hermes/Qwen tags, Llama 3 JSON, Mistral lists; unknown functions and prose stay content', () => {
    expect(parseToolCalls('Let me see. <tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>', names))
      .toEqual({ content: 'Let me see.', calls: [{ name: 'add', arguments: '{"a":1,"b":2}' }] });
    expect(parseToolCalls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}', names)?.calls).toEqual([{ name: 'get_weather', arguments: '{"city":"Oslo"}' }]);
    expect(parseToolCalls('[TOOL_CALLS][{"name": "add", "arguments": {}}, {"name": "get_weather", "arguments": {}}]', names)?.calls.map((c) => c.name)).toEqual(['add', 'get_weather']);
    expect(parseToolCalls('{"name": "rm_rf", "arguments": {}}', names)).toBeUndefined();
    expect(parseToolCalls('{"a": 1}', names)).toBeUndefined();
    expect(parseToolCalls('Once upon a time', names)).toBeUndefined();
  });
  it('streams prose at once, holds a tagged call (split across pieces) to the end', () => {
    const out: string[] = [], calls: ToolCallDelta[] = [];
    const ts = new ToolStream(toolPlan(tools, 'auto'), tools, (t) => out.push(t), (c) => calls.push(...c));
    for (const p of ['Sure', ', one moment <tool', '_call>{"name": "add", ', '"arguments": {"a": 1}}</tool_call>']) ts.text(p);
    expect(out.join('')).toBe('Sure, one moment ');
    expect(ts.end()).toBe('tool_calls');
    expect(calls).toMatchObject([{ index: 0, type: 'function', function: { name: 'add', arguments: '{"a":1}' } }]);
    const out2: string[] = [];
    const prose = new ToolStream(toolPlan(tools, 'auto'), tools, (t) => out2.push(t), () => { throw new Error('no call'); });
    for (const p of ['  {not json', ' at all']) prose.text(p);
    expect(out2).toEqual([]); // looked like JSON: held
    expect(prose.end()).toBeUndefined();
    expect(out2.join('')).toBe('  {not json at all');
  });
});
