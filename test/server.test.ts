// The HTTP server on loopback, simulator backend, embedded stories260K: the official openai client gets the
// same text generate() gives alone (plain and streamed, chat and completions, 32 at once); clients that
// disconnect free their pages; a pool too small for everyone preempts and still gives exact text; every
// malformed request gets its documented status and OpenAI error JSON, and the server keeps serving.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import { createEngine, type Engine } from '../src/engine/engine.ts';
import { generate } from '../src/engine/generate.ts';
import { pageBytes } from '../src/engine/kv-pages.ts';
import { openModel } from '../src/runtime/open.ts';
import { startServer, type RunningServer } from '../src/server/server.ts';

const opened = await openModel(new SimBackend());
const MODEL = 'stories260K';
const JSON_HEADERS = { 'content-type': 'application/json' };
const SUBJECTS = ['a dog', 'a cat', 'Lily', 'Tom', 'a bird', 'the sun', 'a boat', 'Mom'];
const VERBS = ['saw', 'found', 'wanted', 'liked'];
const PROMPTS = Array.from({ length: 32 }, (_, i) => `${i % 2 ? 'Once upon a time' : 'One day'}, ${SUBJECTS[i % 8]} ${VERBS[(i >> 3) % 4]}`);

const cache = new Map<string, string>();
/** generate() alone, as a UTF-8 stream of pieceBytes: what each request must return (greedy). */
async function alone(prompt: string, maxTokens: number): Promise<string> {
  const key = `${maxTokens}:${prompt}`;
  if (cache.has(key)) return cache.get(key)!;
  const { tokenizer: tok, model, stop } = opened, ids = tok.encode(prompt, { bos: true }), dec = new TextDecoder();
  let prev = ids[ids.length - 1], text = '';
  for await (const t of generate(model, ids, { maxTokens, stop, temperature: 0, topP: 1, topK: 0, seed: 0 })) {
    text += dec.decode(tok.pieceBytes(prev, t), { stream: true });
    prev = t;
  }
  cache.set(key, (text += dec.decode()));
  return text;
}

interface Srv { engine: Engine; srv: RunningServer; client: OpenAI }
async function serve(o: Parameters<typeof createEngine>[1] = {}, maxBodyBytes = 64 << 10): Promise<Srv> {
  const engine = await createEngine(opened, { modelName: MODEL, ...o });
  const srv = await startServer(engine, { port: 0, maxBodyBytes });
  return { engine, srv, client: new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 }) };
}

const idle = async (e: Engine) => {
  for (let i = 0; i < 1000 && e.scheduler.busy; i++) await new Promise((r) => setTimeout(r, 5));
};
async function expectNoLeak(s: Srv) {
  await idle(s.engine);
  const k = s.engine.pool.stats();
  expect(k.free).toBe(k.total);
  expect(k.allocated).toBe(k.released);
  const metrics = await (await fetch(`${s.srv.url}/metrics`)).text();
  expect(metrics).toMatch(/^comet_kv_pages_used 0$/m);
  expect(metrics).toMatch(/^comet_requests_running 0$/m);
}

/** POST a streaming request with fetch; read `upto` events (all when undefined), then drop the connection. */
async function rawStream(url: string, body: object, upto?: number): Promise<{ text: string; events: any[] }> {
  const ac = new AbortController();
  const res = await fetch(url, { method: 'POST', body: JSON.stringify({ ...body, stream: true }), headers: { 'content-type': 'application/json' }, signal: ac.signal });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader(), dec = new TextDecoder(), events: any[] = [];
  let buf = '', text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      expect(ev.startsWith('data: ')).toBe(true);
      const data = ev.slice(6);
      events.push(data === '[DONE]' ? data : JSON.parse(data));
      if (data !== '[DONE]') text += events.at(-1).choices[0]?.text ?? events.at(-1).choices[0]?.delta?.content ?? '';
      if (upto !== undefined && events.length >= upto) {
        ac.abort();
        return { text, events };
      }
    }
  }
  return { text, events };
}

describe('server (openai client, loopback, sim backend)', () => {
  let s: Srv;
  beforeAll(async () => { s = await serve({ maxBatch: 32 }); });
  afterAll(async () => { await s.srv.close(); });

  it('binds 127.0.0.1 and lists its model', async () => {
    expect(s.srv.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const models = await s.client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect(await (await fetch(`${s.srv.url}/health`)).json()).toMatchObject({ status: 'ok', model: MODEL });
  });

  it('completions and chat, plain and streamed, equal generate() alone', async () => {
    const want = await alone(PROMPTS[0], 48);
    const c = await s.client.completions.create({ model: MODEL, prompt: PROMPTS[0], max_tokens: 48, temperature: 0 });
    expect(c.choices[0].text).toBe(want);
    expect(c.choices[0].finish_reason).toBe('length');
    expect(c.usage?.completion_tokens).toBe(48);
    const chat = await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: PROMPTS[0] }], max_tokens: 48, temperature: 0 });
    expect(chat.choices[0].message.content).toBe(want);
    expect(chat.choices[0].message.role).toBe('assistant');

    let text = '', usage: OpenAI.CompletionUsage | undefined | null, finish: string | null = null;
    for await (const ch of await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: PROMPTS[0] }], max_tokens: 48, temperature: 0, stream: true, stream_options: { include_usage: true } })) {
      text += ch.choices[0]?.delta.content ?? '';
      finish = ch.choices[0]?.finish_reason ?? finish;
      usage = ch.usage ?? usage;
    }
    expect(text).toBe(want);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ completion_tokens: 48 });
    text = '';
    for await (const ch of await s.client.completions.create({ model: MODEL, prompt: PROMPTS[0], max_tokens: 48, temperature: 0, stream: true })) text += ch.choices[0]?.text ?? '';
    expect(text).toBe(want);
    await expectNoLeak(s);
  });

  it('32 concurrent greedy requests each get exactly their text alone; every page returns', async () => {
    const got = await Promise.all(PROMPTS.map(async (p, i) => {
      if (i % 4 === 0) return (await s.client.completions.create({ model: MODEL, prompt: p, max_tokens: 40, temperature: 0 })).choices[0].text;
      if (i % 4 === 1) return (await s.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: p }], max_tokens: 40, temperature: 0 })).choices[0].message.content;
      let t = '';
      for await (const ch of await s.client.completions.create({ model: MODEL, prompt: p, max_tokens: 40, temperature: 0, stream: true })) t += ch.choices[0]?.text ?? '';
      return t;
    }));
    for (let i = 0; i < PROMPTS.length; i++) expect(got[i], PROMPTS[i]).toBe(await alone(PROMPTS[i], 40));
    expect(s.engine.stats().running).toBe(0);
    await expectNoLeak(s);
  });

  it('half of 32 streams disconnect mid-stream: they are cancelled, the rest are exact, no page leaks', async () => {
    const before = s.engine.stats().requests.cancelled;
    const url = `${s.srv.url}/v1/completions`;
    const got = await Promise.all(PROMPTS.map((p, i) => rawStream(url, { prompt: p, max_tokens: 60, temperature: 0 }, i % 2 ? 3 + (i % 5) : undefined)));
    for (let i = 0; i < PROMPTS.length; i += 2) {
      expect(got[i].text).toBe(await alone(PROMPTS[i], 60));
      expect(got[i].events.at(-1)).toBe('[DONE]');
    }
    await expectNoLeak(s);
    expect(s.engine.stats().requests.cancelled - before).toBe(16);
    // still serving
    const c = await s.client.completions.create({ model: MODEL, prompt: PROMPTS[5], max_tokens: 10, temperature: 0 });
    expect(c.choices[0].text).toBe(await alone(PROMPTS[5], 10));
  });

  it('a non-streaming client that hangs up is cancelled too', async () => {
    const before = s.engine.stats().requests.cancelled;
    const ac = new AbortController();
    const req = fetch(`${s.srv.url}/v1/completions`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ prompt: PROMPTS[7], max_tokens: 400, temperature: 0 }), signal: ac.signal });
    while (s.engine.stats().running === 0) await new Promise((r) => setTimeout(r, 2));
    ac.abort();
    await expect(req).rejects.toMatchObject({ name: 'AbortError' });
    await expectNoLeak(s);
    expect(s.engine.stats().requests.cancelled - before).toBe(1);
  });

  const long = 'Once upon a time '.repeat(200);
  const CASES: [string, string | object, number, string, string | null][] = [
    // name, body (string = raw), status, code, param
    ['bad JSON', '{"prompt": ', 400, 'invalid_json', null],
    ['not an object', '[1, 2]', 400, 'invalid_request', null],
    ['empty body', '', 400, 'invalid_json', null],
    ['missing prompt', { max_tokens: 5 }, 400, 'missing_required_parameter', 'prompt'],
    ['prompt wrong type', { prompt: 42 }, 400, 'invalid_value', 'prompt'],
    ['max_tokens a string', { prompt: 'a', max_tokens: '10' }, 400, 'invalid_value', 'max_tokens'],
    ['max_tokens negative', { prompt: 'a', max_tokens: -5 }, 400, 'invalid_value', 'max_tokens'],
    ['max_tokens zero', { prompt: 'a', max_tokens: 0 }, 400, 'invalid_value', 'max_tokens'],
    ['max_tokens fractional', { prompt: 'a', max_tokens: 1.5 }, 400, 'invalid_value', 'max_tokens'],
    ['max_tokens huge', { prompt: 'a', max_tokens: 1e12 }, 400, 'invalid_value', 'max_tokens'],
    ['max_tokens above the context', { prompt: 'a', max_tokens: 100000 }, 400, 'invalid_value', 'max_tokens'],
    ['temperature out of range', { prompt: 'a', temperature: 3 }, 400, 'invalid_value', 'temperature'],
    ['top_p out of range', { prompt: 'a', top_p: -0.1 }, 400, 'invalid_value', 'top_p'],
    ['seed not an integer', { prompt: 'a', seed: 'x' }, 400, 'invalid_value', 'seed'],
    ['five stop strings', { prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'invalid_value', 'stop'],
    ['n > 16', { prompt: 'a', n: 17 }, 400, 'invalid_value', 'n'],
    ['unknown field', { prompt: 'a', frobnicate: true }, 400, 'unknown_parameter', 'frobnicate'],
    ['token id outside the vocabulary', { prompt: [1, 99999] }, 400, 'invalid_value', 'prompt'],
    ['unknown model', { prompt: 'a', model: 'gpt-4o' }, 404, 'model_not_found', 'model'],
    ['prompt longer than the context', { prompt: long }, 400, 'context_length_exceeded', 'prompt'],
    ['body too large', { prompt: 'x'.repeat(70 << 10) }, 413, 'body_too_large', null],
    ['chat: empty messages', { messages: [] }, 400, 'invalid_value', 'messages'],
    ['chat: messages not an array', { messages: 'hi' }, 400, 'invalid_value', 'messages'],
    ['chat: message without role', { messages: [{ content: 'hi' }] }, 400, 'invalid_value', 'messages[0].role'],
    ['chat: unknown role', { messages: [{ role: 'wizard', content: 'hi' }] }, 400, 'invalid_value', 'messages[0].role'],
    ['chat: content wrong type', { messages: [{ role: 'user', content: 7 }] }, 400, 'invalid_value', 'messages[0].content'],
    ['chat: unknown field in a message', { messages: [{ role: 'user', content: 'hi', mood: 'x' }] }, 400, 'unknown_parameter', 'mood'],
    ['__proto__ key', '{"prompt": "a", "__proto__": {"max_tokens": 1}}', 400, 'unknown_parameter', '__proto__'],
    ['deeply nested JSON', '{"prompt": ' + '['.repeat(20000) + ']'.repeat(20000) + '}', 400, 'invalid_value', 'prompt'],
    ['chat: prompt longer than the context', { messages: [{ role: 'user', content: long }] }, 400, 'context_length_exceeded', 'messages'],
    // sampling, logprobs, structured output, tools (issue 19)
    ['presence_penalty out of range', { prompt: 'a', presence_penalty: 3 }, 400, 'invalid_value', 'presence_penalty'],
    ['frequency_penalty a string', { prompt: 'a', frequency_penalty: 'x' }, 400, 'invalid_value', 'frequency_penalty'],
    ['logit_bias key not a token id', { prompt: 'a', logit_bias: { abc: 1 } }, 400, 'invalid_value', 'logit_bias.abc'],
    ['logit_bias value above 100', { prompt: 'a', logit_bias: { 5: 101 } }, 400, 'invalid_value', 'logit_bias.5'],
    ['logit_bias token outside the vocabulary', { prompt: 'a', logit_bias: { 99999: 1 } }, 400, 'invalid_value', 'logit_bias'],
    ['completions logprobs above 20', { prompt: 'a', logprobs: 21 }, 400, 'invalid_value', 'logprobs'],
    ['chat: top_logprobs without logprobs', { messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 }, 400, 'invalid_value', 'top_logprobs'],
    ['chat: top_logprobs above 20', { messages: [{ role: 'user', content: 'hi' }], logprobs: true, top_logprobs: 21 }, 400, 'invalid_value', 'top_logprobs'],
    ['chat: response_format unknown type', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'xml' } }, 400, 'invalid_value', 'response_format.type'],
    ['chat: json_schema without its object', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema' } }, 400, 'invalid_value', 'response_format.json_schema'],
    ['chat: json_schema name with spaces', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a b', schema: {} } } }, 400, 'invalid_value', 'response_format.json_schema.name'],
    ['chat: schema not an object', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: 'x' } } }, 400, 'invalid_value', 'response_format.json_schema.schema'],
    ['chat: schema of an unknown type', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'foo' } } } }, 400, 'invalid_value', 'response_format.json_schema.schema'],
    ['chat: schema with a bad regex', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'string', pattern: '([' } } } }, 400, 'invalid_value', 'response_format.json_schema.schema'],
    ['chat: schema with a dangling $ref', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { $ref: '#/$defs/nope' } } } }, 400, 'invalid_value', 'response_format.json_schema.schema'],
    ['chat: schema keyword the grammar cannot hold', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object', properties: { x: { not: { type: 'string' } } } } } } }, 400, 'invalid_value', 'response_format.json_schema.schema.properties.x.not'],
    ['chat: schema nested too deep', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: JSON.parse('{"type":"array","items":'.repeat(40) + '{}' + '}'.repeat(40)) } } }, 400, 'invalid_value', 'response_format.json_schema.schema' + '.items'.repeat(13)],
    ['chat: schema the grammar engine cannot compile', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object', minProperties: 2 } } } }, 400, 'invalid_value', 'response_format.json_schema.schema'],
    ['chat: tools not a list', { messages: [{ role: 'user', content: 'hi' }], tools: { type: 'function' } }, 400, 'invalid_value', 'tools'],
    ['chat: tool without a function', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function' }] }, 400, 'invalid_value', 'tools[0].function'],
    ['chat: tool name with spaces', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'get weather' } }] }, 400, 'invalid_value', 'tools[0].function.name'],
    ['chat: tool parameters not a schema', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'foo' } } }], tool_choice: 'required' }, 400, 'invalid_value', 'tools'],
    ['chat: two tools with one name', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }, { type: 'function', function: { name: 'f' } }] }, 400, 'invalid_value', 'tools[1].function.name'],
    ['chat: tool_choice without tools', { messages: [{ role: 'user', content: 'hi' }], tool_choice: 'auto' }, 400, 'invalid_value', 'tool_choice'],
    ['chat: tool_choice names no given function', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }, 400, 'invalid_value', 'tool_choice.function.name'],
    ['chat: tool_choice unknown value', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'always' }, 400, 'invalid_value', 'tool_choice'],
    ['chat: tool message without tool_call_id', { messages: [{ role: 'tool', content: '42' }] }, 400, 'invalid_value', 'messages[0].tool_call_id'],
    ['chat: null content outside a tool call', { messages: [{ role: 'user', content: null }] }, 400, 'invalid_value', 'messages[0].content'],
  ];
  it.each(CASES)('malformed: %s -> %i %s', async (name, body, status, code, param) => {
    const path = name.startsWith('chat') ? '/v1/chat/completions' : '/v1/completions';
    const res = await fetch(`${s.srv.url}${path}`, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(status);
    const j = await res.json();
    expect(j).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param, code } });
    expect((await fetch(`${s.srv.url}/health`)).status).toBe(200);
  });

  it('refuses non-JSON bodies (415) and foreign Host headers (403, DNS rebinding) on a loopback server', async () => {
    const body = JSON.stringify({ prompt: 'a', max_tokens: 2 });
    const plain = await fetch(`${s.srv.url}/v1/completions`, { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
    expect(plain.status).toBe(415);
    expect((await plain.json()).error).toMatchObject({ type: 'invalid_request_error', code: 'unsupported_media_type' });
    const http = await import('node:http');
    const status = await new Promise<number>((res, rej) => {
      http.request(`${s.srv.url}/v1/models`, { headers: { host: 'evil.example:80' } }, (r) => { r.resume(); res(r.statusCode!); }).on('error', rej).end();
    });
    expect(status).toBe(403);
    expect((await fetch(`${s.srv.url}/v1/models`, { headers: { host: `localhost:${s.srv.port}` } })).status).toBe(200);
  });

  it('unknown routes are OpenAI-style 404s; the openai client surfaces errors as APIError', async () => {
    const res = await fetch(`${s.srv.url}/v1/nothing`);
    expect(res.status).toBe(404);
    expect((await res.json()).error.code).toBe('not_found');
    await expect(s.client.completions.create({ model: 'nope', prompt: 'a' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    await expectNoLeak(s);
  });

  it('metrics: Prometheus text with running/waiting, KV pages, tokens/s, TTFT', async () => {
    const m = await (await fetch(`${s.srv.url}/metrics`)).text();
    for (const name of ['requests_running', 'requests_waiting', 'kv_pages_used', 'kv_pages_free', 'tokens_per_second', 'time_to_first_token_seconds_count', 'requests_total{outcome="finished"}'])
      expect(m).toContain(`comet_${name}`);
    expect(Number(/^comet_time_to_first_token_seconds_count (\d+)$/m.exec(m)![1])).toBeGreaterThan(32);
  });
});

describe('server limits', () => {
  it('a pool too small for all requests at once preempts, and all get their text alone', async () => {
    const c = opened.model.config;
    const bytes = pageBytes({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: 16, dtype: opened.model.kvDType, group: c.headDim });
    const s = await serve({ kvMemory: 40 * bytes }); // 40 pages; 10 requests need ~11 each at the end
    try {
      const got = await Promise.all(PROMPTS.slice(0, 10).map((p) => s.client.completions.create({ model: MODEL, prompt: p, max_tokens: 160, temperature: 0 })));
      expect(s.engine.stats().preemptions).toBeGreaterThan(0);
      for (let i = 0; i < 10; i++) expect(got[i].choices[0].text).toBe(await alone(PROMPTS[i], 160));
      await expectNoLeak(s);
    } finally {
      await s.srv.close();
    }
  });

  it('a full queue answers 503 queue_full; the accepted requests complete', async () => {
    const s = await serve({ maxBatch: 1, maxQueue: 2 });
    try {
      const res = await Promise.all(Array.from({ length: 6 }, () =>
        fetch(`${s.srv.url}/v1/completions`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ prompt: PROMPTS[3], max_tokens: 30, temperature: 0 }) })));
      const status = res.map((r) => r.status).sort();
      expect(status.filter((x) => x === 503).length).toBeGreaterThan(0);
      for (const r of res) {
        const j = await r.json();
        if (r.status === 503) expect(j.error).toMatchObject({ type: 'server_error', code: 'queue_full', param: null });
        else expect(j.choices[0].text).toBe(await alone(PROMPTS[3], 30));
      }
      await expectNoLeak(s);
    } finally {
      await s.srv.close();
    }
  });
});

describe('comet serve (CLI)', () => {
  it('starts on loopback, serves, and exits cleanly on SIGTERM', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['bin/comet.js', 'serve', '--port', '0', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const url = await new Promise<string>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no URL in 30 s: ${out}`)), 30_000);
      child.stdout.on('data', () => {
        const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out);
        if (m) { clearTimeout(t); res(m[1]); }
      });
    });
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ prompt: PROMPTS[0], max_tokens: 12, temperature: 0 }) });
    expect((await r.json()).choices[0].text).toBe(await alone(PROMPTS[0], 12));
    const code = new Promise<number | null>((res) => child.on('exit', res));
    child.kill('SIGTERM');
    expect(await code).toBe(0);
  }, 60_000);
});
