// The OpenAI-compatible HTTP server: a thin layer over one Engine (hono + @hono/node-server).
//
//   POST /v1/chat/completions, POST /v1/completions   JSON, or SSE when "stream": true (OpenAI chunks, then
//                                                      `data: [DONE]`; stream_options.include_usage)
//   POST /tokenize, /detokenize                        vLLM's shapes ({prompt} or {messages} -> {count, max_model_len,
//                                                      tokens}; {tokens} -> {prompt}) and llama.cpp's ({content} ->
//                                                      {tokens}; {tokens} -> {content})
//   GET  /v1/models, /v1/models/:id, /health, /metrics (Prometheus text)
//
// Every error is OpenAI's shape, {error: {message, type, param, code}}:
//   400 invalid_json, unknown_parameter, invalid_value, missing_required_parameter, context_length_exceeded
//   403 forbidden_host (bound to loopback, and the Host header names another host: DNS rebinding)
//   404 model_not_found (and unknown routes: not_found)   413 body_too_large
//   415 unsupported_media_type (a POST body that is not Content-Type: application/json)   503 queue_full
//   500 internal_error (a bug; logged with its stack; the process keeps serving)
// Validation lives in the engine (src/engine/schema.ts), so the engine API rejects exactly what HTTP does.
// A client that disconnects aborts its request: its sequence leaves the batch and its pages return to the pool.
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import pino, { type Logger } from 'pino';
import { type Engine, EngineError, type RequestOptions } from '../engine/engine.ts';
import { prometheus } from './metrics.ts';

export interface ServerOptions {
  maxBodyBytes?: number; // default 1 MiB
  logger?: Logger;
  /** Host header names accepted (any port); undefined accepts any. startServer sets the loopback names when
   *  bound to loopback, so a web page cannot reach the server through DNS rebinding. */
  allowedHosts?: string[];
}

type Status = 400 | 403 | 404 | 413 | 415 | 500 | 503;
const LOOPBACK = ['127.0.0.1', 'localhost', '::1'];

const errorBody = (status: number, message: string, code: string, param: string | null = null) => ({
  error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param, code },
});

export function createApp(engine: Engine, o: ServerOptions = {}): Hono {
  const log = o.logger ?? pino({ level: 'silent' });
  const maxBody = o.maxBodyBytes ?? 1 << 20;
  const app = new Hono();
  const fail = (c: Context, status: Status, message: string, code: string, param: string | null = null) =>
    c.json(errorBody(status, message, code, param), status);

  app.use(async (c, next) => {
    const t0 = performance.now();
    await next();
    log.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: +(performance.now() - t0).toFixed(1) }, 'request');
  });
  if (o.allowedHosts) {
    const allowed = new Set(o.allowedHosts);
    app.use(async (c, next) => {
      const host = /^(\[[^\]]*\]|[^:]*)/.exec(c.req.header('host') ?? '')![1].replace(/^\[|\]$/g, '');
      if (!allowed.has(host)) return fail(c, 403, `Host '${host}' is not served here (allowed: ${[...allowed].join(', ')})`, 'forbidden_host');
      await next();
    });
  }
  // JSON only: a cross-site page can POST text/plain without asking, but not application/json
  const jsonOnly = async (c: Context, next: () => Promise<void>) => {
    if (c.req.method === 'POST' && !/^application\/json\b/i.test(c.req.header('content-type') ?? ''))
      return fail(c, 415, `send the body as JSON with 'Content-Type: application/json' (got '${c.req.header('content-type') ?? 'none'}')`, 'unsupported_media_type');
    await next();
  };
  const limit = bodyLimit({
    maxSize: maxBody,
    onError: (c) => fail(c, 413, `the request body is larger than ${maxBody} bytes`, 'body_too_large'),
  });
  for (const path of ['/v1/*', '/tokenize', '/detokenize']) app.use(path, jsonOnly, limit);
  const readJson = async (c: Context): Promise<{ body: unknown } | Response> => {
    try {
      return { body: JSON.parse(await c.req.text()) };
    } catch (e) {
      return fail(c, 400, `the body is not valid JSON (${(e as Error).message})`, 'invalid_json');
    }
  };

  const completion = (kind: 'chat' | 'text') => async (c: Context) => {
    const parsed = await readJson(c);
    if (parsed instanceof Response) return parsed;
    const body = parsed.body;
    // the request's signal aborts when the client goes away; streams also abort when their reader cancels
    const ac = new AbortController();
    const disconnect = () => ac.abort();
    c.req.raw.signal.addEventListener('abort', disconnect, { once: true });
    const create = (kind === 'chat' ? engine.chat.completions.create : engine.completions.create) as (p: unknown, o: RequestOptions) => Promise<unknown>;
    const result = await create(body, { signal: ac.signal });
    if (!(Symbol.asyncIterator in (result as object))) {
      c.req.raw.signal.removeEventListener('abort', disconnect);
      return c.json(result as object);
    }
    return sse(result as AsyncIterable<object>, ac, log);
  };
  app.post('/v1/chat/completions', completion('chat'));
  app.post('/v1/completions', completion('text'));
  for (const [path, f] of [['/tokenize', (b: unknown) => engine.tokenize(b as never)], ['/detokenize', (b: unknown) => engine.detokenize(b as never)]] as const)
    app.post(path, async (c) => {
      const parsed = await readJson(c);
      return parsed instanceof Response ? parsed : c.json(f(parsed.body));
    });

  const modelCard = () => ({ id: engine.modelId, object: 'model', created: 0, owned_by: 'comet', max_model_len: engine.contextLength });
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/:id', (c) =>
    c.req.param('id') === engine.modelId ? c.json(modelCard()) : fail(c, 404, `The model '${c.req.param('id')}' does not exist`, 'model_not_found', 'model'));
  app.get('/health', (c) => {
    const s = engine.stats();
    return c.json({ status: 'ok', model: engine.modelId, running: s.running, waiting: s.waiting, kv_pages_free: s.kv.free });
  });
  app.get('/metrics', (c) => c.text(prometheus(engine.stats()), 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }));

  app.notFound((c) => fail(c, 404, `no route for ${c.req.method} ${c.req.path}`, 'not_found'));
  app.onError((e, c) => {
    if (e instanceof EngineError) return fail(c, e.status as Status, e.message, e.code, e.param);
    if (e.name === 'AbortError') {
      log.info({ path: c.req.path }, 'client disconnected');
      return fail(c, 400, 'the request was aborted', 'aborted');
    }
    log.error({ err: e, path: c.req.path }, 'internal error');
    return fail(c, 500, 'internal server error', 'internal_error');
  });
  return app;
}

/** Server-sent events: one `data: <chunk JSON>` per chunk, then `data: [DONE]`. An error after the stream
 *  started is sent as a last `data: {"error": ...}` event. */
function sse(chunks: AsyncIterable<object>, ac: AbortController, log: Logger): Response {
  const it = chunks[Symbol.asyncIterator]();
  const enc = new TextEncoder();
  const event = (data: string) => enc.encode(`data: ${data}\n\n`);
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        const { done, value } = await it.next();
        if (done) {
          ctrl.enqueue(event('[DONE]'));
          ctrl.close();
        } else ctrl.enqueue(event(JSON.stringify(value)));
      } catch (e) {
        if (ac.signal.aborted) return; // the client left; nobody reads this stream any more
        log.error({ err: e }, 'stream failed');
        const err = e instanceof EngineError ? errorBody(e.status, e.message, e.code, e.param) : errorBody(500, 'internal server error', 'internal_error');
        try {
          ctrl.enqueue(event(JSON.stringify(err)));
          ctrl.close();
        } catch { /* already closed */ }
      }
    },
    cancel() {
      ac.abort();
    },
  });
  return new Response(stream, { headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' } });
}

export interface RunningServer {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** Listen on host:port (127.0.0.1 unless told otherwise; port 0 picks a free one). */
export async function startServer(engine: Engine, o: ServerOptions & { host?: string; port?: number } = {}): Promise<RunningServer> {
  const host = o.host ?? '127.0.0.1';
  const app = createApp(engine, { allowedHosts: LOOPBACK.includes(host) ? LOOPBACK : undefined, ...o });
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: host, port: o.port ?? 8000 }, (info: AddressInfo) => {
      const h = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${h}:${info.port}`, port: info.port, server: server as Server,
        close: () => new Promise<void>((res) => {
          (server as Server).closeAllConnections?.();
          server.close(() => res());
        }),
      });
    }) as Server;
    // idle keep-alive sockets outlive the clients' own timeouts (undici: 4 s), so a client never reuses a
    // socket the server is closing, even when a long step delays both sides' timers
    server.keepAliveTimeout = 65_000;
    server.headersTimeout = 66_000;
    server.once('error', reject);
  });
}
