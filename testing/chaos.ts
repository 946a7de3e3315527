// Server chaos (issue 10): `comet serve` on loopback as a child process, hit by a seeded mix of valid greedy
// requests (chat / completions, plain / streamed), malformed ones, oversize bodies and prompts, clients that
// disconnect at random points (before the response, mid-stream, mid-body, raw sockets cut inside the headers),
// and bursts past the queue limit, with a KV pool small enough that preemption happens. Bounded: a fixed
// number of requests, a per-request client timeout and an overall deadline; it stops the server itself.
//
// What must hold afterwards (`failures` lists every violation):
//   - the server process is alive and answers GET /health
//   - no KV page is leaked: /metrics shows kv_pages_used 0 and free = total once requests drain
//   - memory: RSS after the last round is within `rssBoundMiB` of RSS after the first (warm) round
//   - every valid greedy request that was not cancelled (and not refused with 503 queue_full) got exactly the
//     text the same request gets alone on the idle server (the baseline, taken first)
//   - every malformed request got its documented 4xx status and OpenAI error JSON; never a 500 (malformed
//     schemas and tools included: a schema the grammar engine cannot compile is a 400, the server goes on)
// Used by bench/chaos/run.ts (bigger, writes bench/results) and test/chaos.test.ts (a small fixed sample).
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './net.ts';
import { rng } from './rng.ts';

export const REPO = fileURLToPath(new URL('../', import.meta.url));

export interface ChaosOptions {
  seed: number;
  requests: number; // per round
  rounds: number;
  concurrency: number;
  backend: string; // comet serve --backend (sim; cuda on the GPU machine)
  maxBatch: number;
  maxQueue: number;
  maxStepTokens?: number; // comet serve --max-step-tokens (default: max(64, maxBatch); larger = batched prefill)
  kvMemory: string; // '720K' = 36 pages of stories260K (f32 KV, 16 tokens): one full context is 32, so full batches preempt
  maxBody: number; // bytes
  deadlineS: number; // overall
  requestTimeoutMs: number;
  rssBoundMiB: number;
  log?: (s: string) => void;
}

export const DEFAULTS: ChaosOptions = {
  seed: 1, requests: 300, rounds: 3, concurrency: 8, backend: 'sim', maxBatch: 6, maxQueue: 12, kvMemory: '720K', maxBody: 64 << 10,
  deadlineS: 300, requestTimeoutMs: 60_000, rssBoundMiB: 64,
};

export type Outcome =
  | 'exact' // valid greedy request, 200, the text it gets alone
  | 'mismatch' // valid, 200, other text                                    -> failure
  | 'cancelled' // the client disconnected on purpose
  | 'queue_full' // 503 queue_full (bursts past the queue limit)
  | 'rejected_as_expected' // malformed / oversize: the documented 4xx and error JSON
  | 'wrong_status' // malformed got another status, or no OpenAI error JSON  -> failure
  | 'server_error' // 5xx other than 503 queue_full                            -> failure
  | 'timeout' // no answer within the client timeout                          -> failure
  | 'connection_error' // connection failed though the client did not cut it  -> failure
  | 'raw_cut'; // a raw socket cut on purpose (partial headers or body)

export const FAILURE_OUTCOMES: Outcome[] = ['mismatch', 'wrong_status', 'server_error', 'timeout', 'connection_error'];

export interface ChaosReport {
  options: ChaosOptions;
  counts: Record<string, Record<string, number>>; // request kind -> outcome -> count
  outcomes: Record<string, number>;
  failures: string[];
  leaks: number; // KV pages still used after draining
  crashes: number; // server process exits
  health: boolean;
  kv: { total: number; free: number; used: number };
  rssMiB: number[]; // server RSS after the baseline and after each round
  preemptions: number;
  peakStepSequences: number; // the most sequences one step carried (the server's /metrics)
  peakStepPrefills: number; // the most prompts prefilled in one step
  serverRequests: Record<string, number>; // the server's own requests_total{outcome} (/metrics)
  baselineRequests: number;
  seconds: number;
}



const rssOf = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

// ---- the requests ----

const SUBJECTS = ['a dog', 'a cat', 'Lily', 'Tom', 'a bird', 'the sun', 'a boat', 'Mom'];
const PROMPTS = SUBJECTS.map((s, i) => `${i % 2 ? 'Once upon a time' : 'One day'}, ${s} ${i % 3 ? 'saw' : 'wanted'}`);
const MAX_TOKENS = [1, 9, 33, 33, 160]; // 160: ~11 pages a sequence, so a full batch runs the small pool dry (preemption)

// structured requests are greedy too, so their text (the JSON, or a forced call's arguments) is exact as well
const SCHEMA = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, n: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['name', 'n'] };
const TOOLS = [{ type: 'function', function: { name: 'lookup', parameters: SCHEMA } }];
type Format = 'schema' | 'tool';
interface Valid { kind: 'chat' | 'text'; prompt: string; maxTokens: number; stream: boolean; stop?: string; slow?: boolean; format?: Format }
const keyOf = (v: Valid) => `${v.kind}|${v.maxTokens}|${v.stop ?? ''}|${v.format ?? ''}|${v.prompt}`;
function bodyOf(v: Valid): object {
  const common = {
    max_tokens: v.maxTokens, temperature: 0, ...(v.stop ? { stop: v.stop } : {}), ...(v.stream ? { stream: true, stream_options: { include_usage: true } } : {}),
    ...(v.format === 'schema' ? { response_format: { type: 'json_schema', json_schema: { name: 'thing', schema: SCHEMA } } } : {}),
    ...(v.format === 'tool' ? { tools: TOOLS, tool_choice: { type: 'function', function: { name: 'lookup' } } } : {}),
  };
  return v.kind === 'chat' ? { messages: [{ role: 'user', content: v.prompt }], ...common } : { prompt: v.prompt, ...common };
}

interface Malformed { name: string; path: string; body: string | Uint8Array; contentType?: string; method?: string; status: number[] }
function malformed(r: () => number, maxBody: number): Malformed {
  const J = 'application/json';
  const list: Malformed[] = [
    { name: 'bad JSON', path: '/v1/completions', body: '{"prompt": "Once", ', status: [400] },
    { name: 'not an object', path: '/v1/completions', body: '[1,2,3]', status: [400] },
    { name: 'wrong type', path: '/v1/completions', body: JSON.stringify({ prompt: 5, max_tokens: 4 }), status: [400] },
    { name: 'negative max_tokens', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', max_tokens: -3 }), status: [400] },
    { name: 'huge max_tokens', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', max_tokens: 2 ** 53 }), status: [400] },
    { name: 'max_tokens past the context', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 100000 }), status: [400] },
    { name: 'unknown field', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', bogus: 1 }), status: [400] },
    { name: 'empty messages', path: '/v1/chat/completions', body: JSON.stringify({ messages: [] }), status: [400] },
    { name: 'bad role', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'robot', content: 'x' }] }), status: [400] },
    { name: 'temperature NaN-ish', path: '/v1/completions', body: '{"prompt":"Once","temperature":1e999}', status: [400] },
    { name: 'token id past the vocabulary', path: '/v1/completions', body: JSON.stringify({ prompt: [1, 99999], max_tokens: 2 }), status: [400] },
    { name: 'unknown model', path: '/v1/completions', body: JSON.stringify({ model: 'gpt-9', prompt: 'Once', max_tokens: 2 }), status: [404] },
    { name: 'text/plain body', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once' }), contentType: 'text/plain', status: [415] },
    { name: 'invalid UTF-8', path: '/v1/completions', body: Uint8Array.from([0x7b, 0x22, 0x70, 0x72, 0x6f, 0x6d, 0x70, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), status: [200, 400] },
    { name: 'deep nesting', path: '/v1/completions', body: `{"prompt":"x","user":${'['.repeat(5000)}${']'.repeat(5000)}}`, status: [400] },
    { name: 'oversize body', path: '/v1/completions', body: JSON.stringify({ prompt: 'a'.repeat(maxBody + 100) }), status: [413] },
    { name: 'oversize prompt (past the context)', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once upon a time there was a dog. '.repeat(Math.min(300, Math.floor(maxBody / 40))), max_tokens: 4 }), status: [400, 413] },
    { name: 'unknown route', path: '/v1/engines', body: '{}', status: [404] },
    { name: 'GET on a POST route', path: '/v1/completions', body: '', method: 'GET', status: [404, 405] },
    { name: 'empty body', path: '/v1/chat/completions', body: '', status: [400] },
    { name: 'bad response_format', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'yaml' } }), status: [400] },
    { name: 'invalid JSON Schema', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', minimum: 'low' } } } }), status: [400] },
    { name: 'schema the grammar engine aborts on', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', minProperties: 4 } } } }), status: [400] },
    { name: 'schema nested 100 deep', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'json_schema', json_schema: { name: 'x', schema: JSON.parse('{"items":'.repeat(100) + '{}' + '}'.repeat(100)) } } }), status: [400] },
    { name: 'tool_choice without tools', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], tool_choice: 'required' }), status: [400] },
    { name: 'tool_choice naming no tool', path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }), status: [400] },
    { name: 'logprobs past 20', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', logprobs: 50 }), status: [400] },
    { name: 'logit_bias past the vocabulary', path: '/v1/completions', body: JSON.stringify({ prompt: 'Once', logit_bias: { 123456: 5 } }), status: [400] },
    { name: 'detokenize past the vocabulary', path: '/detokenize', body: JSON.stringify({ tokens: [1, 1e6] }), status: [400] },
  ];
  const m = list[Math.floor(r() * list.length)];
  return { contentType: J, method: 'POST', ...m };
}

/** Read an SSE body; `cutAfter` events then drop the connection. Returns the concatenated text. */
async function readSse(res: Response, cutAfter: number | undefined, ac: AbortController, pauseMs = 0): Promise<{ text: string; done: boolean; error?: unknown }> {
  const reader = res.body!.getReader(), dec = new TextDecoder();
  let buf = '', text = '', n = 0;
  for (;;) {
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs)); // a slow reader: the server must buffer, not lose or block
    const { done, value } = await reader.read();
    if (done) return { text, done: false };
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev.replace(/^data: /, '');
      if (data === '[DONE]') return { text, done: true };
      const j = JSON.parse(data);
      if (j.error) return { text, done: false, error: j.error };
      const c = j.choices?.[0];
      text += c?.text ?? c?.delta?.content ?? c?.delta?.tool_calls?.[0]?.function?.arguments ?? '';
      if (cutAfter !== undefined && ++n >= cutAfter) {
        ac.abort();
        return { text, done: false };
      }
    }
  }
}

const isErrorJson = (j: any) => j && typeof j.error === 'object' && typeof j.error.message === 'string' && typeof j.error.code === 'string';

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  const deadline = t0 + o.deadlineS * 1000;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const args = [join(REPO, 'bin/comet.js'), 'serve', '--backend', o.backend, '--port', String(port), '--max-batch', String(o.maxBatch),
    '--max-queue', String(o.maxQueue), '--kv-memory', o.kvMemory, '--max-body', String(o.maxBody), '--max-step-tokens', String(o.maxStepTokens ?? Math.max(64, o.maxBatch)), '--log-level', 'error'];
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  const report: ChaosReport = {
    options: o, counts: {}, outcomes: {}, failures: [], leaks: 0, crashes: 0, health: false, kv: { total: 0, free: 0, used: 0 },
    rssMiB: [], preemptions: 0, peakStepSequences: 0, peakStepPrefills: 0, serverRequests: {}, baselineRequests: 0, seconds: 0,
  };
  const count = (kind: string, out: Outcome, detail?: string) => {
    (report.counts[kind] ??= {})[out] = (report.counts[kind][out] ?? 0) + 1;
    report.outcomes[out] = (report.outcomes[out] ?? 0) + 1;
    if (FAILURE_OUTCOMES.includes(out) && report.failures.length < 100) report.failures.push(`${kind}: ${out}${detail ? ` (${detail})` : ''}`);
  };
  const metrics = async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    const g = (n: string) => Number(new RegExp(`^comet_${n} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    for (const [, k, v] of text.matchAll(/^comet_requests_total\{outcome="(\w+)"\} (\S+)$/gm)) report.serverRequests[k] = Number(v);
    return { used: g('kv_pages_used'), free: g('kv_pages_free'), total: g('kv_pages_total'), running: g('requests_running'), waiting: g('requests_waiting'), preemptions: g('preemptions_total'), maxBatch: g('step_sequences_max'), maxPrefills: g('step_prefills_max') };
  };
  const drain = async () => {
    for (let i = 0; i < 600 && performance.now() < deadline; i++) {
      const m = await metrics();
      if (m.running === 0 && m.waiting === 0) return m;
      await new Promise((r) => setTimeout(r, 50));
    }
    return metrics();
  };

  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`comet serve exited with ${child.exitCode}: ${stderr}`);
      if (i > 600) throw new Error(`comet serve did not answer /health in 60 s: ${stderr}`);
      try {
        if ((await fetch(`${url}/health`)).ok) break;
      } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
    log(`comet serve up at ${url} (pid ${child.pid}) after ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const post = async (path: string, body: string | Uint8Array, signal?: AbortSignal, contentType = 'application/json', method = 'POST') =>
      fetch(`${url}${path}`, { method, body: method === 'GET' ? undefined : (body as unknown as BodyInit), headers: { 'content-type': contentType }, signal: signal ?? AbortSignal.timeout(o.requestTimeoutMs) });

    /** One valid greedy request, read fully: its text (plain or streamed). */
    const runValid = async (v: Valid, ac: AbortController, cutAfter?: number): Promise<{ status: number; text?: string; json?: any; done?: boolean; error?: unknown }> => {
      const timer = setTimeout(() => ac.abort(new Error('timeout')), o.requestTimeoutMs);
      try {
        const res = await post(v.kind === 'chat' ? '/v1/chat/completions' : '/v1/completions', JSON.stringify(bodyOf(v)), ac.signal);
        if (res.status !== 200) return { status: res.status, json: await res.json().catch(() => undefined) };
        if (v.stream) return { status: 200, ...(await readSse(res, cutAfter, ac, v.slow ? 40 : 0)) };
        const j = await res.json();
        const c = j.choices[0];
        return { status: 200, text: v.kind === 'chat' ? c.message.content ?? c.message.tool_calls[0].function.arguments : c.text, done: true };
      } finally {
        clearTimeout(timer);
      }
    };

    // 1. the baseline: each distinct valid request alone on the idle server
    const r = rng(o.seed);
    const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)];
    const planned: Valid[] = [];
    const validOf = (over: Partial<Valid> = {}): Valid => {
      const v: Valid = { kind: r() < 0.5 ? 'chat' : 'text', prompt: pick(PROMPTS), maxTokens: pick(MAX_TOKENS), stream: r() < 0.5, stop: r() < 0.1 ? '.' : undefined, slow: r() < 0.15, ...over };
      const f = r(); // a fifth constrained by a schema, a tenth of the chats a forced tool call
      if (f < 0.2) v.format = 'schema';
      else if (f < 0.3 && v.kind === 'chat') v.format = 'tool';
      planned.push(v); // its baseline is taken before the chaos
      return v;
    };
    const baseline = new Map<string, string>();
    /** The text a request gets alone: computed before the chaos (baselineAll), on the idle server. */
    const baselineOf = async (v: Valid): Promise<string> => {
      const k = keyOf(v);
      if (!baseline.has(k)) {
        const got = await runValid({ ...v, stream: false }, new AbortController());
        if (got.status !== 200) throw new Error(`baseline request ${k} got ${got.status}: ${JSON.stringify(got.json)}`);
        baseline.set(k, got.text!);
        report.baselineRequests++;
      }
      return baseline.get(k)!;
    };
    const want = async (v: Valid): Promise<string> => {
      const w = baseline.get(keyOf(v));
      if (w === undefined) throw new Error(`no baseline for ${keyOf(v)}`);
      return w;
    };

    // the plan, seeded: every request of every round is decided up front
    type Item = { kind: string; run: () => Promise<void> };
    const makeItem = (): Item => {
      const x = r();
      if (x < 0.4) {
        const v = validOf();
        const kind = (v.stream ? (v.slow ? 'valid-stream-slow-reader' : 'valid-stream') : 'valid-plain') + (v.format ? `-${v.format}` : '');
        return { kind, run: async () => {
          const w = await want(v);
          try {
            const got = await runValid(v, new AbortController());
            if (got.status === 503 && got.json?.error?.code === 'queue_full') return count(kind, 'queue_full');
            if (got.status !== 200) return count(kind, got.status >= 500 ? 'server_error' : 'wrong_status', `${got.status} ${JSON.stringify(got.json)}`);
            if (v.stream && !got.done) return count(kind, 'server_error', `stream ended without [DONE]: ${JSON.stringify(got.error)}`);
            count(kind, got.text === w ? 'exact' : 'mismatch', got.text === w ? undefined : `${keyOf(v)}: got ${JSON.stringify(got.text)}, alone ${JSON.stringify(w)}`);
          } catch (e) {
            count(kind, (e as Error).name === 'TimeoutError' || String(e).includes('timeout') ? 'timeout' : 'connection_error', String(e));
          }
        } };
      }
      if (x < 0.62) {
        const how = pick(['before-response', 'mid-stream', 'mid-plain'] as const);
        const v = validOf({ maxTokens: pick([24, 48]), ...(how === 'mid-stream' ? { stream: true } : how === 'mid-plain' ? { stream: false } : {}) });
        const delay = Math.floor(r() * 60), cut = 1 + Math.floor(r() * 6);
        return { kind: `disconnect-${how}`, run: async () => {
          const ac = new AbortController();
          if (how !== 'mid-stream') setTimeout(() => ac.abort(), delay);
          try {
            const got = await runValid(v, ac, how === 'mid-stream' ? cut : undefined);
            if (got.status === 503) return count(`disconnect-${how}`, 'queue_full');
            if (got.status !== 200) return count(`disconnect-${how}`, got.status >= 500 ? 'server_error' : 'wrong_status', String(got.status));
            if (got.done) { // finished before the cut: then it must be exact too
              const w = await want(v);
              return count(`disconnect-${how}`, got.text === w ? 'exact' : 'mismatch', got.text === w ? undefined : keyOf(v));
            }
            count(`disconnect-${how}`, 'cancelled');
          } catch (e) {
            count(`disconnect-${how}`, ac.signal.aborted ? 'cancelled' : 'connection_error', String(e));
          }
        } };
      }
      if (x < 0.85) {
        const m = malformed(r, o.maxBody);
        return { kind: 'malformed', run: async () => {
          try {
            const res = await post(m.path, m.body, undefined, m.contentType, m.method);
            const j = await res.json().catch(() => undefined);
            if (m.status.includes(200) && (res.status === 200 || (res.status === 503 && j?.error?.code === 'queue_full'))) // accepted as a (lossy) valid request
              return count('malformed', res.status === 200 ? 'rejected_as_expected' : 'queue_full');
            if (res.status >= 500) return count('malformed', 'server_error', `${m.name}: ${res.status} ${JSON.stringify(j)}`);
            count('malformed', m.status.includes(res.status) && isErrorJson(j) ? 'rejected_as_expected' : 'wrong_status', `${m.name}: ${res.status} ${JSON.stringify(j)?.slice(0, 200)}`);
          } catch (e) {
            count('malformed', 'connection_error', `${m.name}: ${e}`);
          }
        } };
      }
      if (x < 0.96) {
        const how = pick(['partial-headers', 'partial-body', 'headers-then-close', 'garbage']);
        return { kind: `raw-${how}`, run: () => new Promise<void>((resolve) => {
          const sock = connect(port, '127.0.0.1');
          const body = JSON.stringify({ prompt: 'Once upon a time', max_tokens: 32, temperature: 0 });
          const head = `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
          sock.on('error', () => {});
          sock.on('connect', () => {
            if (how === 'partial-headers') sock.write(head.slice(0, 40));
            else if (how === 'partial-body') sock.write(head + body.slice(0, 10));
            else if (how === 'headers-then-close') sock.write(head + body);
            else sock.write(Uint8Array.from({ length: 200 }, () => Math.floor(r() * 256)));
            setTimeout(() => { sock.destroy(); count(`raw-${how}`, 'raw_cut'); resolve(); }, 5 + Math.floor(r() * 80));
          });
        }) };
      }
      // a burst: many valid requests at once, past the queue limit
      const n = o.maxBatch + o.maxQueue + 2 + Math.floor(r() * 4), vs = Array.from({ length: n }, () => validOf());
      return { kind: 'burst', run: async () => {
        await Promise.all(vs.map(async (v) => {
          const w = await want(v);
          try {
            const got = await runValid(v, new AbortController());
            if (got.status === 503 && got.json?.error?.code === 'queue_full') return count('burst', 'queue_full');
            if (got.status !== 200) return count('burst', got.status >= 500 ? 'server_error' : 'wrong_status', `${got.status} ${JSON.stringify(got.json)}`);
            count('burst', got.done && got.text === w ? 'exact' : 'mismatch', got.text === w ? undefined : keyOf(v));
          } catch (e) {
            count('burst', 'connection_error', String(e));
          }
        }));
      } };
    };
    const rounds = Array.from({ length: o.rounds }, () => Array.from({ length: o.requests }, makeItem));
    const after = { kind: 'text' as const, prompt: PROMPTS[1], maxTokens: 33, stream: false };
    // baselines for every valid request in the plan, first, each alone on the idle server
    for (const v of [...planned, after]) await baselineOf(v);
    await drain();
    report.rssMiB.push(rssOf(child.pid!));
    log(`baseline: ${report.baselineRequests} distinct requests alone, RSS ${report.rssMiB[0].toFixed(0)} MiB, ${((performance.now() - t0) / 1000).toFixed(0)} s`);

    for (const [ri, items] of rounds.entries()) {
      let next = 0;
      const workers = Array.from({ length: o.concurrency }, async () => {
        while (next < items.length && performance.now() < deadline) await items[next++].run();
      });
      await Promise.all(workers);
      const m = await drain();
      report.rssMiB.push(rssOf(child.pid!));
      log(`round ${ri + 1}/${o.rounds}: ${items.length} requests, kv used ${m.used}/${m.total}, preemptions ${m.preemptions}, RSS ${report.rssMiB.at(-1)!.toFixed(0)} MiB, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      if (performance.now() > deadline) { report.failures.push(`deadline of ${o.deadlineS} s reached in round ${ri + 1}`); break; }
    }

    // afterwards: alive, healthy, no page leaked, memory bounded
    const m = await drain();
    report.kv = { total: m.total, free: m.free, used: m.used };
    report.preemptions = m.preemptions;
    report.peakStepSequences = m.maxBatch;
    report.peakStepPrefills = m.maxPrefills;
    report.leaks = m.used + (m.total - m.free - m.used);
    if (m.used !== 0 || m.free !== m.total) report.failures.push(`KV pages leaked: used ${m.used}, free ${m.free} of ${m.total}`);
    const h = await fetch(`${url}/health`);
    report.health = h.ok && (await h.json()).status === 'ok';
    if (!report.health) report.failures.push(`/health answered ${h.status}`);
    const growth = report.rssMiB.at(-1)! - report.rssMiB[Math.min(1, report.rssMiB.length - 1)];
    if (growth > o.rssBoundMiB) report.failures.push(`server RSS grew by ${growth.toFixed(0)} MiB after the first round (bound ${o.rssBoundMiB} MiB): ${report.rssMiB.map((x) => x.toFixed(0)).join(' -> ')}`);
    // and it still answers a valid request exactly
    const again = await runValid({ ...after, stream: true }, new AbortController());
    if (again.text !== await want(after)) report.failures.push('a valid request after the chaos was not exact');
  } catch (e) {
    report.failures.push(`chaos run stopped: ${(e as Error)?.stack ?? e}`);
  } finally {
    const exited = child.exitCode !== null || child.signalCode !== null;
    if (exited) report.failures.push(`comet serve died: exit ${child.exitCode} ${child.signalCode ?? ''}: ${stderr.slice(-1000)}`);
    report.crashes = exited ? 1 : 0;
    child.kill('SIGTERM');
    await new Promise((res) => (child.exitCode !== null || child.signalCode !== null ? res(null) : child.once('exit', res)));
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}
