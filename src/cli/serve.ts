// `comet serve`: the OpenAI-compatible HTTP server (src/server/server.ts) over one engine.
// Binds 127.0.0.1 unless --host says otherwise; there is no authentication (README, "Serving: security").
import { Command, type Option } from 'commander';
import { CometError } from '../errors.ts';

/** 1536, 64K, 512M, 4G (powers of 1024) -> bytes */
export function parseBytes(name: string) {
  return (v: string): number => {
    const m = /^(\d+(?:\.\d+)?)([KMG]i?B?)?$/i.exec(v.trim());
    if (!m) throw new CometError(`${name} must be a size such as 1048576, 512K, 64M or 4G, got '${v}'`);
    const mult = { '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[(m[2] ?? '').charAt(0).toUpperCase() as '' | 'K' | 'M' | 'G'];
    return Math.floor(Number(m[1]) * mult);
  };
}

const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new CometError(`${name} must be an integer in [${min}, ${max}], got '${v}'`);
  return n;
};

export interface ServeOptions {
  model?: string; tokenizer?: string; backend: string; host: string; port: number;
  maxBatch: number; kvMemory?: number; pageSize: number; maxQueue: number; maxStepTokens: number;
  maxBody: number; graphs: number; logLevel: string;
  tensorParallel?: number; // ranks one process shards the model over (src/parallel); 1 = off
}

export function serveCommand(backendOpt: Option): Command {
  return new Command('serve')
    .description('OpenAI-compatible HTTP server: POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics')
    .option('--model <path>', 'llama2.c .bin, Hugging Face directory, or .comet file (default: embedded stories260K)')
    .option('--tokenizer <path>', 'tokenizer.bin or tokenizer.json (default: found beside the model)')
    .addOption(backendOpt)
    .option('--host <addr>', 'address to bind (0.0.0.0 exposes the server to the network: there is no authentication)', '127.0.0.1')
    .option('--port <n>', 'port (0 = any free port)', int('--port', 0, 65535), 8000)
    .option('--max-batch <n>', 'sequences decoded together', int('--max-batch', 1), 32)
    .option('--kv-memory <size>', 'bytes for the KV page pool, e.g. 512M, 4G (default: max-batch full-context sequences)', parseBytes('--kv-memory'))
    .option('--page-size <n>', 'tokens per KV page', int('--page-size', 1, 4096), 16)
    .option('--max-queue <n>', 'requests waiting for a slot before new ones get 503', int('--max-queue', 0), 256)
    .option('--max-step-tokens <n>', 'tokens per forward step (decodes + prefill chunks)', int('--max-step-tokens', 1), 2048)
    .option('--graphs <n>', 'decode-step CUDA graphs kept (per batch size and context bucket; 0 = off)', int('--graphs', 0), 16)
    .option('--max-body <size>', 'largest request body; larger ones get 413', parseBytes('--max-body'), 1 << 20)
    .option('--tensor-parallel <n>', 'shard each layer over N ranks in this process (Megatron-style, src/parallel; the sim backend for now)', int('--tensor-parallel', 1, 64), 1)
    .option('--log-level <level>', 'pino log level: fatal | error | warn | info | debug | silent', 'info')
    .action(async (o: ServeOptions) => serve(o));
}

export async function serve(o: ServeOptions): Promise<void> {
  const { default: pino } = await import('pino');
  const { createEngine, modelId } = await import('../engine/engine.ts');
  const { startServer } = await import('../server/server.ts');
  const log = pino({ level: o.logLevel });
  // a server outlives a stray rejection: log it instead of exiting (the CLI's default for one-shot commands)
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', (e) => log.error({ err: e }, 'unhandled rejection'));
  const tp = o.tensorParallel ?? 1;
  // a sharded model is opened here (one backend per rank); the engine runs it as it runs one model
  const model = tp > 1 ? await (await import('../parallel/open.ts')).openSharded(tp, o.backend, o.model, o.tokenizer) : o.model;
  const engine = await createEngine(model, {
    modelName: tp > 1 ? modelId(o.model ?? 'stories260K') : undefined,
    backend: o.backend, tokenizer: o.tokenizer, maxBatch: o.maxBatch, kvMemory: o.kvMemory, pageSize: o.pageSize,
    maxQueue: o.maxQueue, maxStepTokens: o.maxStepTokens, graphs: o.graphs, onProgress: (p) => log.info(p.message),
  });
  const srv = await startServer(engine, { host: o.host, port: o.port, maxBodyBytes: o.maxBody, logger: log });
  log.info({ url: srv.url, model: engine.modelId, backend: o.backend, kvPages: engine.pool.total, ...(tp > 1 ? { tensorParallel: tp } : {}) }, `serving ${engine.modelId} at ${srv.url}/v1`);
  if (o.host !== '127.0.0.1' && o.host !== 'localhost' && o.host !== '::1')
    log.warn(`listening on ${o.host}: anyone who can reach this address can use the model (no authentication)`);
  const stop = async () => {
    log.info('shutting down');
    engine.close();
    await srv.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
