// The fuzz worker: a child process (forked by runCases in testing/fuzz/runner.ts) that runs cases one at a time.
// Per case it says 'start' (the parent arms the deadline), writes the case's files, loads them with the real
// loader under the allocation guard, exercises a valid load, and says 'done' with the outcome.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// ---- allocation guard: typed-array / ArrayBuffer / Buffer constructors check the size BEFORE allocating ----
class AllocLimit extends Error {}
const guard = { limit: Infinity, max: 0, total: 0 };
const note = (bytes: number) => {
  if (!(bytes <= guard.limit)) throw new AllocLimit(`allocation of ${bytes} bytes exceeds the bound ${guard.limit} (2 x input + 1 MiB)`);
  if (bytes > guard.max) guard.max = bytes;
  guard.total += bytes;
};
const sizeOf = (a: unknown, bpe: number): number =>
  typeof a === 'number' ? a * bpe
    : typeof a === 'bigint' ? Number(a) * bpe
    : a instanceof ArrayBuffer || a instanceof SharedArrayBuffer ? 0
    : a && typeof a === 'object' && typeof (a as { length?: unknown }).length === 'number' ? (a as { length: number }).length * bpe : 0;
const G = globalThis as unknown as Record<string, any>;
for (const name of ['ArrayBuffer', 'SharedArrayBuffer', 'Uint8Array', 'Uint8ClampedArray', 'Int8Array', 'Uint16Array', 'Int16Array', 'Uint32Array',
  'Int32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array']) {
  const orig = G[name], bpe = orig.BYTES_PER_ELEMENT ?? 1;
  const proxy: any = new Proxy(orig, {
    construct(t, args, nt) {
      note(sizeOf(args[0], bpe));
      return Reflect.construct(t, args, nt === proxy ? t : nt);
    },
  });
  G[name] = proxy;
}
for (const fn of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
  const orig = Buffer[fn].bind(Buffer) as (n: number, ...rest: unknown[]) => Buffer;
  (Buffer as any)[fn] = (n: number, ...rest: unknown[]) => { note(n); return orig(n, ...rest); };
}

const { CometError } = await import('../../src/errors.ts');
const { loadModel } = await import('../../src/loaders/index.ts');
const { SafetensorsFile } = await import('../../src/loaders/safetensors.ts');
const { loadTokenizer } = await import('../../src/tokenizer/index.ts');
const { loadModelBytes } = await import('../../src/loaders/bytes.ts');
const { weightNames } = await import('../../src/model/config.ts');
const { SimBackend } = await import('../../backends/sim/sim.ts');
const { Llama } = await import('../../src/model/llama.ts');
const { generate } = await import('../../src/engine/generate.ts');
const { caseOf } = await import('./cases.ts');
type Outcome = import('./cases.ts').Outcome;
type FuzzCase = import('./cases.ts').FuzzCase;
type Tokenizer = import('../../src/tokenizer/index.ts').Tokenizer;
type LoadedModel = import('../../src/loaders/index.ts').LoadedModel;

const MiB = 1 << 20;
const TEXT = 'Once upon a time, Lily saw a 🐶 and said "héllo"\n\t<s></s> <0x41> ▁▁ 日本語 \u0000 end.';
const RUN_LIMIT = 256 * MiB; // allocation bound while exercising a valid load (KV cache, activations: tiny models)

function rss(): number {
  return process.memoryUsage.rss();
}
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}
function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : rss();
}

async function exerciseModel(m: LoadedModel): Promise<{ nonFinite: number }> {
  const c = m.config;
  let nonFinite = 0;
  for (const name of weightNames(c)) {
    const w = m.weights.get(name);
    if (!w) throw new Error(`valid load without weight '${name}'`);
    if (w.kind === 'f32') {
      if (w.data.length !== w.shape.reduce((a, d) => a * d, 1)) throw new Error(`weight '${name}' has ${w.data.length} floats for shape [${w.shape}]`);
      for (const x of w.data) if (!Number.isFinite(x)) nonFinite++;
    }
  }
  const model = new Llama(new SimBackend(), c, m.weights, (m.meta?.kvDType as 'f32' | 'kv4' | undefined) ?? 'f32');
  const prompt = [Math.min(Math.max(0, Math.trunc(Number(c.bos)) || 0), c.vocabSize - 1), 3 % c.vocabSize];
  for await (const t of generate(model, prompt, { temperature: 0, topP: 0, topK: 0, maxTokens: 3, seed: 1, stop: [] }))
    if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new Error(`greedy run produced token ${t}, vocabulary is ${c.vocabSize}`);
  if ((m.format === 'comet' || m.format === 'gguf') && m.tokenizerPath) exerciseTokenizer(await loadTokenizer(m.tokenizerPath));
  return { nonFinite };
}

function exerciseTokenizer(tok: Tokenizer): void {
  const ids = tok.encode(TEXT);
  for (const t of ids) if (!Number.isInteger(t) || t < 0 || t >= tok.vocabSize) throw new Error(`encode produced id ${t}, vocabulary is ${tok.vocabSize}`);
  if (typeof tok.decode(ids) !== 'string') throw new Error('decode did not return a string');
  tok.encode('');
  const prev = tok.bos >= 0 ? tok.bos : 0;
  for (let i = 0; i < Math.min(tok.vocabSize, 70000); i++) {
    if (!(tok.pieceBytes(prev, i) instanceof Uint8Array) || !(tok.pieceBytes(i, i) instanceof Uint8Array)) throw new Error(`pieceBytes(${i}) is not bytes`);
  }
}

async function load(c: FuzzCase, path: string): Promise<{ model?: LoadedModel; tok?: Tokenizer }> {
  switch (c.format) {
    case 'safetensors': {
      const st = SafetensorsFile.open(path);
      try {
        for (const t of st.tensors.values()) {
          st.get(t.name);
          if (t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16') st.getF32(t.name);
        }
      } finally {
        st.close();
      }
      return {};
    }
    case 'tokenizer-bin': case 'tokenizer-json':
      return { tok: await loadTokenizer(path) };
    case 'bytes-llama2c': case 'bytes-comet': case 'bytes-gguf':
      return { model: await loadModelBytes(readFileSync(path), path) as unknown as LoadedModel };
    default:
      return { model: await loadModel(path) };
  }
}

async function runOne(c: FuzzCase, caseDir: string): Promise<Outcome> {
  rmSync(caseDir, { recursive: true, force: true });
  let inputBytes = 0;
  for (const [f, b] of Object.entries(c.files)) {
    mkdirSync(dirname(join(caseDir, f)), { recursive: true });
    if (c.links?.[f]) continue;
    writeFileSync(join(caseDir, f), b);
    inputBytes += b.length;
  }
  for (const [f, target] of Object.entries(c.links ?? {})) {
    if (target === 'FIFO') execFileSync('mkfifo', [join(caseDir, f)]);
    else symlinkSync(target, join(caseDir, f));
  }
  const path = c.entry ? join(caseDir, c.entry) : caseDir;
  const base: Outcome = { id: c.id, kind: 'ok', mutation: c.mutation, inputBytes };
  const rss0 = rss();
  const hwm = resetPeak();
  const t0 = performance.now();
  let phase: 'load' | 'run' = 'load';
  guard.limit = 2 * inputBytes + MiB;
  guard.max = guard.total = 0;
  try {
    const r = await load(c, path);
    base.allocMax = guard.max;
    base.allocTotal = guard.total;
    phase = 'run';
    guard.limit = RUN_LIMIT;
    try {
      if (r.model) base.nonFinite = (await exerciseModel(r.model)).nonFinite;
      if (r.tok) exerciseTokenizer(r.tok);
    } catch (e) {
      if (!(e instanceof CometError)) throw e;
      base.runError = e.message.slice(0, 300);
    }
  } catch (e) {
    base.phase = phase;
    const err = e as Error;
    base.message = String(err?.message ?? err).slice(0, 400);
    base.errorName = err?.name;
    if (e instanceof AllocLimit) base.kind = 'alloc';
    else if (!(e instanceof CometError)) {
      base.kind = 'foreign';
      base.message += ` | ${String(err?.stack ?? '').split('\n').slice(1, 4).map((s) => s.trim()).join(' | ')}`.slice(0, 600);
    } else if (phase === 'load' && !err.message.includes(caseDir)) base.kind = 'unnamed';
    else base.kind = 'error';
    if (base.kind !== 'error') base.message = `${base.message}`;
    base.message = base.message.split(caseDir).join('<case>');
  } finally {
    guard.limit = Infinity;
    base.allocMax ??= guard.max;
    base.allocTotal ??= guard.total;
  }
  base.ms = performance.now() - t0;
  base.rssPeakGrowth = Math.max(0, (hwm ? peakRss() : rss()) - rss0);
  if (base.kind === 'ok' || base.kind === 'error')
    if (base.rssPeakGrowth > 8 * inputBytes + 128 * MiB) {
      base.message = `peak RSS grew by ${(base.rssPeakGrowth / MiB).toFixed(1)} MiB for ${inputBytes} input bytes (${base.kind}: ${base.message ?? ''})`;
      base.kind = 'rss';
    }
  rmSync(caseDir, { recursive: true, force: true });
  return base;
}

export async function replay(c: FuzzCase, dir: string): Promise<Outcome> {
  return runOne(c, dir);
}

if (process.send) {
  const work = process.argv[2];
  process.on('disconnect', () => process.exit(0)); // the runner is gone
  process.on('message', async (m: any) => {
    if (m.type !== 'run') return;
    for (let j = 0; j < m.cases.length; j++) {
      const i = m.offset + j, id = m.cases[j];
      const c = await caseOf(id); // bases are built on the first call: before the deadline
      process.send!({ type: 'start', i });
      const outcome = await runOne(c, join(work, `case-${process.pid}`));
      process.send!({ type: 'done', i, outcome });
    }
  });
}
