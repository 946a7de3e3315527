// `comet bench e2e` (issues 9, 16): end-to-end serving speed of a W4A4KV4 model of a given shape, beside the
// roofline (bandwidth measured in the run) and beside PyTorch FP16 / INT4 weight-only / FP8 (bench/e2e/torch_fast.py)
// run in the same call on the same GPU: decode steps per batch, TTFT, and a max-throughput run through the
// engine (serve-run.ts) against the same request set through PyTorch's own batched loop.
//
// The model: synthetic weights of the shape, made with realistic activation outliers and quantized by the
// real FMPQ path (src/quant: plan -> permutation + INT8 blocks -> fold -> RTN with clip search) from synthetic
// calibration statistics. Quantizing every layer of an 8B model in TS would take the host an hour, so ONE
// layer is made and quantized and its tensors are uploaded once per layer (each layer has its own device
// copy: the bytes moved per step are the real model's).
//
// Correctness first: before any timing, the backend's greedy tokens must equal the simulator's for the
// embedded stories260K model and any --check model (e.g. a wikillama-28M .comet); otherwise it refuses.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostWeightBytes, type Backend, type HostWeight, type KVCache } from '../../backends/backend.ts';
import { createBackend } from '../../src/runtime/backends.ts';
import { openModel, defaultModelPath } from '../../src/runtime/open.ts';
import { verifyAgainstSim } from '../../src/eval/verify.ts';
import { pageBytes } from '../../src/engine/kv-pages.ts';
import { Llama } from '../../src/model/llama.ts';
import { type LlamaConfig, validateConfig } from '../../src/model/config.ts';
import { CometError } from '../../src/errors.ts';
import { svgPlotAsync } from '../../src/cli/plot.ts';
import { syntheticQuantizedModel } from '../../testing/synthetic-quantized.ts';
import { prefixRuns, requestSet, serveRun, sharedPrefixSet, syntheticOpenModel, type PrefixRuns, type ServeRunResult } from './serve-run.ts';

export { syntheticQuantizedModel };

export const SHAPES: Record<string, LlamaConfig> = {
  'llama3-8b': { dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, headDim: 128, vocabSize: 128256, seqLen: 8192, normEps: 1e-5, ropeTheta: 500000, tiedEmbeddings: false, bos: 128000, eos: [128001] },
  'llama3-70b': { dim: 8192, hiddenDim: 28672, nLayers: 80, nHeads: 64, nKvHeads: 8, headDim: 128, vocabSize: 128256, seqLen: 8192, normEps: 1e-5, ropeTheta: 500000, tiedEmbeddings: false, bos: 128000, eos: [128001] },
};

export interface E2EOptions {
  shape: string; backend: string; batches: string; ctx: number; inLen: number; outLen: number;
  memBudget?: number; int8Fraction: number; block: number; check: string[]; baseline: boolean; out: string; steps: number;
  throughput: number; // requests of the max-throughput run through the engine (0: none)
  prefix: number; // requests sharing an inLen-token prefix, one after another, prefix cache on and off (0: none)
  mixed: number; // requests of the mixed-length run (0: none)
  stepTokens: number; // the engine's token budget per step (batched prefill)
  baselineVariants?: string; // torch_fast.py --variants (fp16,int4,fp8)
  baselineJson?: string; // torch_fast.py's JSON from a run on the same GPU in the same call (instead of running it)
  waitFor?: string; // wait for this file before the first GPU work (the baselines' JSON, run beside our host work)
}

/** Greedy tokens of `path` on `be` and on the simulator must be equal (src/eval/verify.ts), or no speed is reported. */
async function checkAgainstSim(be: Backend, path: string, log: (s: string) => void, references: Map<string, number[]>): Promise<void> {
  for (const r of await verifyAgainstSim(be, path, { references }))
    if (!r.equal) throw new CometError(`bench e2e: ${be.name} and the simulator disagree on ${path} for '${r.prompt}' at token ${r.firstDifference} (${r.tokens.slice(0, 8)}… vs ${r.reference.slice(0, 8)}…): refusing to report speed`);
  log(`check: ${path} greedy tokens on ${be.name} equal the simulator's`);
}

const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];

/** Median wall time of `fn` (which must end with a device->host read, so the device is idle after it). */
async function time(fn: () => Promise<unknown>, warm: number, iters: number): Promise<number> {
  for (let i = 0; i < warm; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

/** Device copy bandwidth (bytes read + written per second), measured now on a backend that exposes its device
 *  copy (CUDA: 1 GiB device-to-device, 20 copies after 3 warm-ups); undefined elsewhere (no roofline then). */
function measureCopy(be: Backend): number | undefined {
  const a = (be as Backend & { addon?: { malloc(n: number): number; free(p: number): void; copy(d: number, s: number, n: number): void; sync(): void } }).addon;
  if (!a || typeof a.copy !== 'function') return undefined;
  const n = 2 ** 30, src = a.malloc(n), dst = a.malloc(n);
  try {
    for (let i = 0; i < 3; i++) a.copy(dst, src, n);
    a.sync();
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) a.copy(dst, src, n);
    a.sync();
    return (2 * n * 20) / ((performance.now() - t0) / 1e3);
  } finally {
    a.free(src);
    a.free(dst);
  }
}

/** Ask V8 for a full collection so device buffers held only by dropped JS objects (KV caches of finished runs)
 *  go back through the backend's FinalizationRegistry before the next run sizes itself from free memory. */
async function collectGarbage(): Promise<void> {
  const v8 = await import('node:v8'), vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
}

type BaselineVariant = { mode?: string; dtype?: string; compile_error?: string; error?: string; skipped?: string; weight_bytes?: number; decode: { batch: number; step_ms?: number; tok_s?: number; error?: string; skipped?: string }[]; ttft_ms?: number; ttft_error?: string; throughput?: Record<string, number | string> };
type Baseline = { device?: string; torch?: string; copy_gbps?: number; variants: Record<string, BaselineVariant>; partial?: boolean; failed?: string };

/** The PyTorch baselines (torch_fast.py), bounded; a run cut short reports what it measured (its partial JSON). */
function runBaselines(o: E2EOptions, seconds: number, log: (s: string) => void): Baseline | undefined {
  const script = [join(import.meta.dirname, 'torch_fast.py'), join(process.cwd(), 'bench/e2e/torch_fast.py')].find((p) => existsSync(p));
  if (!script) { log('baseline: torch_fast.py not found'); return undefined; }
  mkdirSync(o.out, { recursive: true });
  const partial = join(o.out, `.e2e-baseline-partial-${process.pid}.json`);
  const args = [script, '--shape', o.shape, '--batches', o.batches, '--ctx', String(o.ctx), '--in-len', String(o.inLen), '--out-len', String(o.outLen),
    '--requests', String(o.throughput), '--deadline-s', String(Math.max(10, seconds - 15)), '--partial', partial,
    ...(o.baselineVariants ? ['--variants', o.baselineVariants] : [])];
  log(`baseline: python3 ${args.join(' ')}`);
  const py = spawnSync('python3', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24, timeout: seconds * 1e3, killSignal: 'SIGKILL' });
  try {
    if (py.status === 0) return JSON.parse(py.stdout.trim().split('\n').pop()!) as Baseline;
    try {
      log(`baseline stopped (exit ${py.status}, signal ${py.signal}); reporting what it measured`);
      return { ...(JSON.parse(readFileSync(partial, 'utf8')) as Baseline), partial: true, failed: `exit ${py.status}, signal ${py.signal}` };
    } catch {
      log(`baseline failed (exit ${py.status}, signal ${py.signal}) before measuring anything`);
      return undefined;
    }
  } finally {
    try { unlinkSync(partial); } catch { /* none written */ }
  }
}

export async function benchE2E(o: E2EOptions): Promise<void> {
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const c = SHAPES[o.shape] ?? (() => {
    try {
      return JSON.parse(readFileSync(o.shape, 'utf8')) as LlamaConfig;
    } catch (e) {
      throw new CometError(`bench e2e: --shape ${o.shape} is neither ${Object.keys(SHAPES).join(' | ')} nor a readable LlamaConfig JSON (${(e as Error).message})`);
    }
  })();
  validateConfig(c, `--shape ${o.shape}`);
  const batches = o.batches.split(',').map(Number);
  const be = await createBackend(o.backend);
  // 0. the synthetic model on the host (minutes of CPU at 8B: done first, so a GPU run can overlap it with the
  //    PyTorch baselines, which then hand over through --baseline-json; --wait-for names the file to wait for)
  // COMET_E2E_CLIP_SEARCH=0: plain RTN (no clip search): minutes less on a slow host, same bytes and speed
  const { weights, int8MacFraction } = syntheticQuantizedModel(c, { ...o, clipSearch: process.env.COMET_E2E_CLIP_SEARCH !== '0' }, log);
  if (o.waitFor) {
    log(`waiting for ${o.waitFor} (the baselines on the same GPU) before touching the GPU`);
    while (!existsSync(o.waitFor)) await new Promise((r) => setTimeout(r, 500));
  }
  // 1. correctness gate
  const models = [defaultModelPath, ...o.check], references = models.map(() => new Map<string, number[]>());
  for (const [i, path] of models.entries()) await checkAgainstSim(be, path, log, references[i]);
  // 2. the model, and the device's own numbers: memory (no assumed card) and copy bandwidth (the roofline)
  const model = new Llama(be, c, weights, 'kv4');
  // bytes read per step: every weight but the embedding table, of which a step reads only its tokens' rows
  const weightBytes = [...weights.values()].reduce((a, w) => a + (w.name === 'tok_embed' ? 0 : hostWeightBytes(w)), 0);
  weights.clear(); // the host copies (GBs at 8B) are on the device now
  const mem = be.memory?.();
  const budget = o.memBudget !== undefined ? o.memBudget * 2 ** 30 : mem?.total;
  if (budget === undefined) throw new CometError(`bench e2e: backend ${be.name} does not report device memory; pass --mem-budget <GiB>`);
  const copyBps = measureCopy(be);
  log(`device memory ${mem ? `${(mem.free / 2 ** 30).toFixed(1)} GiB free of ${(mem.total / 2 ** 30).toFixed(1)} GiB` : 'not reported'}; budget ${(budget / 2 ** 30).toFixed(1)} GiB; copy bandwidth ${copyBps ? `${(copyBps / 1e9).toFixed(0)} GB/s (measured)` : 'not measured on this backend: no roofline'}`);
  const P = 16, G = c.headDim;
  const kvSpec = { nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: P, dtype: 'kv4' as const, group: G };
  const pageB = pageBytes(kvSpec), tokenKvBytes = pageB / P;
  // the step arena (every op's output lives until the step ends): ~all f32 activations of all layers per token
  const q = c.nHeads * c.headDim, kvd = c.nKvHeads * c.headDim;
  const arenaPerToken = c.nLayers * 4 * (3 * q + 3 * kvd + 4 * c.dim + 2 * c.hiddenDim + Math.ceil((2 * c.dim + q + c.hiddenDim) * 0.6 / 4)) + 2 * c.dim * 4;
  const pagesFor = (n: number) => Math.ceil(n / P);
  // 3. fixed-batch decode steps: one cache of max(batches) sequences of ctx+1 tokens
  const numPages = Math.max(...batches) * pagesFor(o.ctx + 1);
  log(`decode cache: ${numPages} KV4 pages of ${P} tokens (${((numPages * pageB) / 2 ** 30).toFixed(1)} GiB); weights read per step ${(weightBytes / 2 ** 30).toFixed(2)} GiB`);
  let cache: KVCache | undefined = be.createKVCache({ ...kvSpec, numPages });
  const stepData = (B: number, pos: number, perSeq: number) => {
    const tokens = Int32Array.from({ length: B }, (_, i) => (i * 7919 + pos) % c.vocabSize);
    const layout = { pos: new Int32Array(B).fill(pos), seq: Int32Array.from({ length: B }, (_, i) => i), blockTables: Array.from({ length: B }, (_, i) => Int32Array.from({ length: perSeq }, (_, j) => i * perSeq + j)) };
    return { forward: () => model.forward(tokens, layout, cache!, Int32Array.from({ length: B }, (_, i) => i)) };
  };
  const step = (B: number, pos: number, perSeq: number) => {
    const d = stepData(B, pos, perSeq);
    return async () => {
      const r = await be.argmax(d.forward());
      be.endStep();
      return r;
    };
  };
  // CUDA graph of a whole decode step (backends that can capture one: cuda) and per-op GPU timing
  const graphs = be;
  const prof = be.profiler;
  const useGraphs = !!graphs.captureStep && process.env.COMET_E2E_GRAPHS !== '0';
  const decode: DecodeRow[] = [];
  const opBreakdown: OpBreakdown[] = [];
  /** Decode step of B sequences at context ctx: eager, and replayed as a CUDA graph where the backend captures. */
  const decodeStep = async (B: number): Promise<{ eager: number; graph?: number; ms: number }> => {
    const eager = await time(step(B, o.ctx, pagesFor(o.ctx + 1)), 2, o.steps);
    let graph: number | undefined;
    if (useGraphs) {
      try {
        const g = graphs.captureStep!(stepData(B, o.ctx, pagesFor(o.ctx + 1)).forward);
        if (g.kernels !== undefined) log(`decode batch ${B}: the step graph holds ${g.kernels} kernel launches (${(g.kernels / c.nLayers).toFixed(2)} per layer over ${c.nLayers} layers, head and tail included)`);
        graph = await time(() => g.replay(), 2, Math.max(o.steps, 10));
        g.destroy();
      } catch (e) {
        log(`decode batch ${B}: CUDA graph capture failed (${(e as Error).message}); eager only`);
      }
    }
    return { eager, graph, ms: graph !== undefined ? Math.min(graph, eager) : eager };
  };
  const roofline = (B: number) => (copyBps ? ((weightBytes + B * (o.ctx + 1) * tokenKvBytes) / copyBps) * 1e3 : undefined);
  for (const B of batches) {
    const { eager, graph, ms } = await decodeStep(B);
    decode.push({ batch: B, step_ms: ms, eager_ms: eager, graph_ms: graph, tok_s: (B / ms) * 1e3, roofline_ms: roofline(B) });
    log(`decode batch ${B}: ${ms.toFixed(2)} ms/step (eager ${eager.toFixed(2)}, graph ${graph?.toFixed(2) ?? '-'}), ${((B / ms) * 1e3).toFixed(0)} tok/s`);
    if (prof && process.env.COMET_E2E_OPS !== '0') {
      prof.setOpTiming(true);
      await step(B, o.ctx, pagesFor(o.ctx + 1))();
      const t = prof.opTimings();
      prof.setOpTiming(false);
      const ops = [...t].map(([op, v]) => ({ op, launches: v.n, ms: v.ms })).sort((a, b) => b.ms - a.ms);
      opBreakdown.push({ batch: B, wall_ms: ms, ops });
    }
  }
  // (c) time to first token: one inLen prompt, prefill + logits of its last token, in one step unless its arena
  //     would not fit in half the free memory (LLaMA-3-70B: ~38 MiB per token), then in chunks as the engine does
  const prompt = Int32Array.from({ length: o.inLen }, (_, i) => (i * 31) % c.vocabSize);
  const pLayout = { pos: Int32Array.from({ length: o.inLen }, (_, i) => i), seq: new Int32Array(o.inLen), blockTables: [Int32Array.from({ length: pagesFor(o.inLen) }, (_, j) => j)] };
  const freeNow = be.memory?.().free ?? budget;
  const chunk = Math.min(o.inLen, 2 ** Math.floor(Math.log2(Math.max(16, (0.5 * freeNow) / arenaPerToken))));
  const prefill = async () => {
    let r: Int32Array | undefined;
    for (let p0 = 0; p0 < o.inLen; p0 += chunk) {
      const n = Math.min(chunk, o.inLen - p0);
      const lay = { pos: pLayout.pos.subarray(p0, p0 + n), seq: new Int32Array(n), blockTables: pLayout.blockTables };
      r = await be.argmax(model.forward(prompt.subarray(p0, p0 + n), lay, cache!, Int32Array.of(n - 1)));
      be.endStep();
    }
    return r;
  };
  let ttft = NaN;
  try {
    ttft = await time(prefill, 1, 3);
    log(`ttft ${o.inLen} tokens${chunk < o.inLen ? ` (prefill in chunks of ${chunk})` : ''}: ${ttft.toFixed(1)} ms`);
  } catch (e) {
    log(`ttft: ${(e as Error).message}`);
  }
  // (b) max throughput as a run through the engine (serve-run.ts): the request set submitted at once
  cache = undefined;
  const serve: Report['serve'] = {};
  if (o.throughput > 0) {
    const L = o.inLen + o.outLen, perSeq = pagesFor(L) * pageB;
    const sizeRun = async (n: number, meanLen: number) => {
      await collectGarbage();
      const free = be.memory?.().free ?? budget - weightBytes;
      // room besides the pool: the arena of the largest step (a full prefill budget, or a decode of the whole
      // batch with its logits) and 2 GiB for workspaces and graphs
      const stepTokens = Math.max(o.stepTokens, Math.min(n, 4096));
      const reserve = stepTokens * (arenaPerToken + 64) + Math.min(n, 4096) * c.vocabSize * 4 + (mem ? 2 * 2 ** 30 : 0);
      const room = Math.min(budget, free) - reserve;
      // (at least one full context: the engine's rule, so preemption can always make progress)
      const kvMemory = Math.max(pagesFor(c.seqLen), Math.floor(Math.min(room, n * pagesFor(Math.max(L, 2 * meanLen)) * pageB) / pageB)) * pageB;
      const maxBatch = Math.max(1, Math.min(n, Math.floor(kvMemory / (pagesFor(meanLen) * pageB)), stepTokens));
      return { free, reserve, kvMemory, maxBatch, maxStepTokens: Math.max(o.stepTokens, maxBatch) };
    };
    // a bounded GPU call (COMET_E2E_DEADLINE_S: seconds after the process start) gets as many requests as fit in
    // its time, estimated from the steps measured above (prefill ~0.7 x TTFT per prompt, out_len decode steps)
    const endAt = Number(process.env.COMET_E2E_DEADLINE_S ?? Infinity) - 20, remaining = () => endAt - performance.now() / 1e3;
    const deadline = remaining();
    const big = decode[decode.length - 1];
    const est = (n: number) => (n * 0.7 * (Number.isFinite(ttft) ? ttft : 100) + o.outLen * (big?.step_ms ?? 50) * Math.max(1, n / (big?.batch ?? 1)) ** 0.5) / 1e3;
    let nReq = o.throughput;
    while (nReq > 8 && 1.3 * est(nReq) > deadline) nReq = Math.floor(nReq / 2);
    if (nReq !== o.throughput) log(`serve run: ${o.throughput} requests would not finish in the ${deadline.toFixed(0)} s left (estimated ${est(o.throughput).toFixed(0)} s): ${nReq}`);
    try {
      const opened = syntheticOpenModel(model);
      const z = await sizeRun(nReq, L);
      serve.sizing = z;
      log(`serve run: ${nReq} requests of ${o.inLen} in / ${o.outLen} out; KV pool ${(z.kvMemory / 2 ** 30).toFixed(1)} GiB (${Math.floor(z.kvMemory / perSeq)} full sequences), max batch ${z.maxBatch}, ${z.maxStepTokens} tokens per step`);
      serve.fixed = await serveRun(opened, requestSet(c, nReq, o.inLen, o.outLen, false), { ...z, log });
      if (o.mixed > 0 && remaining() > 60) {
        const reqs = requestSet(c, o.mixed, o.inLen, o.outLen, true, 2);
        const mean = Math.ceil(reqs.reduce((a, r) => a + r.prompt.length + r.maxTokens, 0) / reqs.length);
        const zm = await sizeRun(o.mixed, mean);
        log(`serve run (mixed lengths, mean ${mean} tokens): ${o.mixed} requests; max batch ${zm.maxBatch}`);
        serve.mixed = await serveRun(opened, reqs, { ...zm, log });
      }
      if (o.prefix > 0 && remaining() > 10) {
        // prefix caching (issue 19 §4): requests sharing a long system prompt, submitted one after another
        // (each arrives once the previous finished: a chat's turns), with the cache on and off
        const reqs = sharedPrefixSet(c, o.prefix, o.inLen, 32, 16);
        const zp = await sizeRun(1, o.inLen + 48);
        serve.prefix = await prefixRuns(opened, reqs, zp);
        log(`prefix cache: TTFT p50 ${serve.prefix.on.ttft_ms.p50.toFixed(1)} ms on vs ${serve.prefix.off.ttft_ms.p50.toFixed(1)} ms off; prefill tokens ${serve.prefix.on.prefill_tokens} vs ${serve.prefix.off.prefill_tokens}`);
      }
    } catch (e) {
      serve.error = (e as Error).message;
      log(`serve run: ${serve.error}`);
    }
  }
  const deviceName = (be as Backend & { device?: { name?: string } }).device?.name;
  be.dispose();
  // 4. the baselines, same GPU, same call (our memory is released first)
  let baseline: Baseline | undefined;
  if (o.baselineJson) {
    try {
      baseline = JSON.parse(readFileSync(o.baselineJson, 'utf8')) as Baseline;
      log(`baseline: ${o.baselineJson} (torch_fast.py, run on this GPU in this call)`);
    } catch (e) {
      log(`baseline: cannot read ${o.baselineJson} (${(e as Error).message}); reporting ours alone`);
    }
  } else if (o.baseline) {
    baseline = runBaselines(o, Number(process.env.COMET_E2E_BASELINE_TIMEOUT ?? 600), log);
    if (!baseline) log('baseline: no numbers; reporting ours alone');
  }
  await report({ o, c, int8MacFraction, weightBytes, tokenKvBytes, decode, ttft, ttftChunk: chunk, serve, baseline, copyGBs: copyBps ? copyBps / 1e9 : undefined, budget, device: be.name, deviceName, opBreakdown });
}

type DecodeRow = { batch: number; step_ms: number; eager_ms: number; graph_ms?: number; tok_s: number; roofline_ms?: number };
type OpBreakdown = { batch: number; wall_ms: number; ops: { op: string; launches: number; ms: number }[] };
interface Report {
  o: E2EOptions; c: LlamaConfig; int8MacFraction: number; weightBytes: number; tokenKvBytes: number; decode: DecodeRow[];
  ttft: number; ttftChunk: number;
  serve: { fixed?: ServeRunResult; mixed?: ServeRunResult; prefix?: PrefixRuns; error?: string; sizing?: Record<string, number> };
  baseline?: Baseline; copyGBs?: number; budget: number; device: string; deviceName?: string; opBreakdown: OpBreakdown[];
}

const VARIANTS: [string, string][] = [['fp16', 'PyTorch FP16'], ['int4', 'PyTorch INT4 weight-only'], ['fp8', 'PyTorch FP8']];
const f = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));

/** The KV4 attention kernel alone against the bandwidth: its per-op time per step vs the KV4 bytes it must read. */
function attentionRoofline(r: Report): string[] {
  const rows = r.opBreakdown.flatMap(({ batch, ops }) => {
    const ms = ops.filter((x) => x.op.startsWith('attention')).reduce((a, x) => a + x.ms, 0);
    if (!ms) return [];
    const bytes = batch * (r.o.ctx + 1) * r.tokenKvBytes, gbs = bytes / (ms * 1e6);
    return [`| ${batch} | ${ms.toFixed(3)} | ${(bytes / 2 ** 30).toFixed(2)} | ${gbs.toFixed(0)} | ${r.copyGBs ? `${((100 * gbs) / r.copyGBs).toFixed(0)}%` : '-'} |`];
  });
  return rows.length ? ['KV4 attention alone (per-op GPU time, all layers):', '', '| batch | attention ms | KV4 GiB read | GB/s | of copy bandwidth |', '| --- | --- | --- | --- | --- |', ...rows, ''] : [];
}

async function report(r: Report): Promise<void> {
  const date = new Date().toISOString().slice(0, 10);
  const vs = r.baseline?.variants ?? {};
  const gpu = r.baseline?.device ?? r.deviceName ?? r.device;
  const cmd = `comet ${process.argv.slice(2).join(' ')}`;
  const bDecode = (v: string, B: number) => vs[v]?.decode.find((d) => d.batch === B);
  const why = (v: string, B: number) => { const d = bDecode(v, B); return d?.error ? 'failed' : d?.skipped ? 'skipped' : vs[v]?.error ? 'failed' : '-'; };
  const rows = r.decode.map((d) => {
    const cells = VARIANTS.map(([v]) => { const b = bDecode(v, d.batch); return b?.step_ms !== undefined ? f(b.step_ms) : why(v, d.batch); });
    const fp = bDecode('fp16', d.batch)?.step_ms;
    const best = Math.min(...VARIANTS.map(([v]) => bDecode(v, d.batch)?.step_ms ?? Infinity));
    return `| ${d.batch} | ${f(d.step_ms)} | ${f(d.eager_ms)} | ${f(d.graph_ms)} | ${f(d.roofline_ms)} | ${d.roofline_ms ? `${(d.step_ms / d.roofline_ms).toFixed(2)}×` : '-'} | ${d.tok_s.toFixed(0)} | ${cells.join(' | ')} | ${fp ? `${(fp / d.step_ms).toFixed(2)}×` : '-'} | ${Number.isFinite(best) ? `${(best / d.step_ms).toFixed(2)}×` : '-'} |`;
  });
  const modes = VARIANTS.filter(([v]) => vs[v]).map(([v, name]) => `${name}: ${vs[v].mode ?? '-'}${vs[v].compile_error ? ` (compile error: ${vs[v].compile_error})` : ''}${vs[v].error ? ` — failed: ${vs[v].error}` : ''}${vs[v].skipped ? ` — skipped: ${vs[v].skipped}` : ''}`);
  const sv = r.serve.fixed, mx = r.serve.mixed;
  const tp = (v: string) => vs[v]?.throughput as Record<string, number> & { error?: string; cut?: string; skipped?: string } | undefined;
  const serveRow = (name: string, x?: ServeRunResult) => x
    ? `| ${name} | ${x.requests} | ${x.max_batch} | ${x.peak_batch} | ${x.output_tok_s.toFixed(0)} | ${f(x.ttft_ms.p50, 0)} / ${f(x.ttft_ms.p99, 0)} | ${f(x.itl_ms.p50, 1)} / ${f(x.itl_ms.p99, 1)} | ${x.kv_pages_peak} / ${x.kv_pages_total} | ${x.wall_s.toFixed(1)} |` : `| ${name} | not run |  |  |  |  |  |  |  |`;
  const fpTp = tp('fp16')?.output_tok_s;
  const losses: string[] = [];
  for (const d of r.decode) for (const [v, name] of VARIANTS) { const b = bDecode(v, d.batch)?.step_ms; if (b !== undefined && b < d.step_ms) losses.push(`decode batch ${d.batch}: ${name} ${b.toFixed(2)} ms < COMET ${d.step_ms.toFixed(2)} ms (${(d.step_ms / b).toFixed(2)}× slower)`); }
  for (const [v, name] of VARIANTS) { const t = vs[v]?.ttft_ms; if (t !== undefined && Number.isFinite(r.ttft) && t < r.ttft) losses.push(`TTFT: ${name} ${t.toFixed(1)} ms < COMET ${r.ttft.toFixed(1)} ms`); }
  for (const [v, name] of VARIANTS) { const t = tp(v)?.output_tok_s; if (t !== undefined && sv && t > sv.output_tok_s) losses.push(`max throughput: ${name} ${t.toFixed(0)} output tok/s > COMET ${sv.output_tok_s.toFixed(0)}`); }
  const hostLine = (name: string, x?: ServeRunResult) => {
    if (!x) return [];
    const d = x.step_time.decode, m = x.step_time.mixed, tot = d.wallMs + m.wallMs;
    return [`| ${name} | ${d.steps} | ${d.steps ? (d.wallMs / d.steps).toFixed(2) : '-'} | ${d.wallMs ? ((100 * d.hostMs) / d.wallMs).toFixed(1) : '-'}% | ${m.steps} | ${m.steps ? (m.wallMs / m.steps).toFixed(2) : '-'} | ${m.wallMs ? ((100 * m.hostMs) / m.wallMs).toFixed(1) : '-'}% | ${m.wallMs ? ((100 * m.launchMs) / m.wallMs).toFixed(1) : '-'}% | ${tot ? ((100 * x.loop_gap_ms) / tot).toFixed(1) : '-'}% |`];
  };
  const md = [
    `# End-to-end serving: COMET W4A4KV4 vs PyTorch FP16 / INT4 / FP8, ${r.o.shape} (${date})`, '',
    `Device: ${gpu}. Command: \`${cmd}\`. Backend: ${r.device}. Memory budget ${(r.budget / 2 ** 30).toFixed(1)} GiB (${r.o.memBudget !== undefined ? '--mem-budget' : 'the device\'s total'}).`,
    `Model: synthetic ${r.o.shape} weights, FMPQ (B=${r.o.block}, INT8 MAC fraction ${(r.int8MacFraction * 100).toFixed(1)}%), KV4 (G=head_dim, pages of 16). Weights read per step: ${(r.weightBytes / 2 ** 30).toFixed(2)} GiB; KV4 ${r.tokenKvBytes} B per token.`,
    `Gate (before any timing): greedy tokens on ${r.device} equal the simulator's (summing each W4Ax GEMM in the kernel's order), 3 prompts × 32 tokens, for ${[defaultModelPath, ...r.o.check].map((p) => p.split('/').pop()).join(', ')}.`,
    `Roofline: (weight bytes + KV4 bytes read per step) / copy bandwidth measured in this run: ${r.copyGBs ? `${r.copyGBs.toFixed(0)} GB/s (COMET's process)` : 'not measured (no roofline)'}${r.baseline?.copy_gbps ? `; PyTorch's process measured ${r.baseline.copy_gbps.toFixed(0)} GB/s` : ''}.`,
    `Baselines (bench/e2e/torch_fast.py, same GPU, same call, after COMET released its memory; a compact LLaMA of our own, static KV cache, SDPA with GQA, random weights): ${r.baseline ? `${modes.join('; ')}; torch ${r.baseline.torch}${r.baseline.partial ? ` (cut short: ${r.baseline.failed}; what it measured)` : ''}` : 'not run'}.`, '',
    `## (a) Decode step at context ${r.o.ctx}`, '',
    '| batch | COMET ms | eager ms | CUDA graph ms | roofline ms | vs roofline | COMET tok/s | FP16 ms | INT4-wo ms | FP8 ms | speedup vs FP16 | vs best PyTorch |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |', ...rows, '',
    'COMET ms = the better of eager (one launch per op from TypeScript) and the CUDA graph of the whole step (replayed). KV4 attention: the one kernel, bit-equal to the simulator\'s KV4 attention contract (README; greedy tokens equal the simulator\'s: the gate above). Speedup > 1: COMET faster.', '',
    ...attentionRoofline(r),
    `## (b) Max throughput, run: ${r.o.throughput} requests of ${r.o.inLen} in / ${r.o.outLen} out submitted at once`, '',
    'COMET: the engine (scheduler with batched chunked prefill, KV4 page pool, decode-step CUDA graphs, sampler, OpenAI-shaped streams), greedy, every request to max_tokens; TTFT from submission (all at t=0) to the first streamed token; ITL = gaps between a request\'s streamed tokens. PyTorch: the same request set through its own loop (prompts prefilled together in chunks of ≤ 8192 tokens, then the batch decoded as CUDA graph replays, tokens synchronised to the host every step); its batch is what its memory holds.', '',
    '| engine | requests | max batch | peak batch | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | KV pages peak / pool | wall s |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    serveRow('COMET W4A4KV4 (engine)', sv),
    ...VARIANTS.map(([v, name]) => { const t = tp(v); return t && t.output_tok_s !== undefined ? `| ${name} (${vs[v].mode?.startsWith('torch.compile') ? 'compiled' : 'eager'} + CUDA graphs) | ${t.requests} | ${t.slots} | ${t.peak_batch} | ${t.output_tok_s.toFixed(0)} | ${f(t.ttft_p50_ms, 0)} / ${f(t.ttft_p99_ms, 0)} | ${f(t.itl_p50_ms, 1)} / ${f(t.itl_p99_ms, 1)} | - | ${f(t.wall_s, 1)} |` : `| ${name} | ${t?.error ? `failed: ${t.error}` : t?.skipped ? `skipped: ${t.skipped}` : t?.cut ?? (vs[v]?.error ? `failed: ${vs[v].error}` : vs[v]?.skipped ? `skipped: ${vs[v].skipped}` : vs[v] ? 'not run (time)' : 'no baseline')} |  |  |  |  |  |  |  |`; }),
    ...(mx ? [serveRow('COMET, mixed lengths', mx)] : []), '',
    sv && fpTp ? `COMET / compiled FP16 output tok/s on the same request set: **${(sv.output_tok_s / fpTp).toFixed(2)}×** (aim ≥ 2×; aim ≥ 18,000 tok/s: ${sv.output_tok_s >= 18000 ? 'reached' : 'not reached'}).` : '',
    ...(r.serve.error ? [`COMET serve run failed: ${r.serve.error}`] : []),
    ...(sv?.errors.length ? [`COMET serve run errors: ${sv.errors.join('; ')}`] : []),
    ...(mx ? [`Mixed-length set: prompts uniform in [${Math.max(1, Math.floor(r.o.inLen / 8))}, ${2 * r.o.inLen}], outputs in [${Math.max(1, Math.floor(r.o.outLen / 8))}, ${2 * r.o.outLen}] tokens (seeded), ${mx.prompt_tokens} prompt and ${mx.output_tokens} output tokens; ${mx.preemptions} preemptions.`] : []), '',
    ...(r.serve.prefix ? [
      `### Prefix caching: ${r.serve.prefix.on.requests} requests sharing a ${r.o.inLen}-token prefix (+32 own tokens, 16 out), one after another`, '',
      '| prefix cache | TTFT p50 / max ms | prefill tokens through the model | prefix pages hit | outputs equal |', '| --- | --- | --- | --- | --- |',
      ...(['on', 'off'] as const).map((k) => { const x = r.serve.prefix![k]; return `| ${k} | ${f(x.ttft_ms.p50, 1)} / ${f(x.ttft_ms.max, 1)} | ${x.prefill_tokens} | ${x.hit_pages} | ${r.serve.prefix!.equal ? 'yes' : 'NO'} |`; }), ''] : []),
    '### Where the engine\'s step time goes (scheduler.ts StepTime)', '',
    'host = the scheduler\'s serial TypeScript work per step (sweep, planning, block tables, sampling, handing tokens to the streams); launch = TypeScript launching the ops of an eager (mixed) step while the GPU runs; loop gap = the engine loop between steps (streaming to clients, I/O) against all step time.', '',
    '| run | decode steps | ms/step | host | mixed steps | ms/step | host | launch | loop gap |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...hostLine(`${r.o.inLen}/${r.o.outLen} set`, sv), ...hostLine('mixed set', mx), '',
    `## (c) Time to first token, ${r.o.inLen}-token prompt`, '',
    `COMET ${Number.isFinite(r.ttft) ? `${r.ttft.toFixed(1)} ms${r.ttftChunk < r.o.inLen ? ` (prefill in chunks of ${r.ttftChunk} tokens)` : ''}` : 'failed'}; ${VARIANTS.map(([v, name]) => `${name} ${vs[v]?.ttft_ms !== undefined ? `${vs[v].ttft_ms!.toFixed(1)} ms` : vs[v]?.ttft_error ?? '-'}`).join('; ')} (PyTorch: eager prefill, causal SDPA).`, '',
    '## Where COMET loses', '', ...(losses.length ? losses.map((x) => `- ${x}`) : [r.baseline ? '- nowhere in this run\'s measurements' : '- unknown: no baseline ran']), '',
    ...opTables(r.opBreakdown),
    'Method: (a) median of timed steps after warm-up, each ending with the argmax copied to the host; (b) one run each, wall time from the first submission to the last token; (c) median of 3 (PyTorch: of 5).', '',
  ].join('\n');
  console.log(md);
  mkdirSync(r.o.out, { recursive: true });
  const base = join(r.o.out, `e2e-${r.o.shape.replace(/[^\w.-]/g, '_')}-${date}`);
  writeFileSync(`${base}.md`, md);
  writeFileSync(`${base}.json`, JSON.stringify({ ...r, date, device: gpu, backend: r.device, command: cmd, o: undefined, options: r.o }, null, 1));
  const pts = [
    ...r.decode.map((d) => ({ batch: d.batch, series: 'COMET W4A4KV4', tok_s: d.tok_s, ms: d.step_ms })),
    ...VARIANTS.flatMap(([v, name]) => (vs[v]?.decode ?? []).filter((b) => b.tok_s).map((b) => ({ batch: b.batch, series: name, tok_s: b.tok_s!, ms: b.step_ms! }))),
    ...r.decode.filter((d) => d.roofline_ms).map((d) => ({ batch: d.batch, series: 'W4A4KV4 roofline', tok_s: (d.batch / d.roofline_ms!) * 1e3, ms: d.roofline_ms! })),
  ];
  writeFileSync(`${base}-tokens.svg`, await svgPlotAsync({ title: `${r.o.shape}: decode throughput at context ${r.o.ctx} (${gpu})`, data: pts, x: 'batch', y: 'tok_s', series: 'series', logX: true, logY: true }));
  writeFileSync(`${base}-step.svg`, await svgPlotAsync({ title: `${r.o.shape}: decode step time (${gpu})`, data: pts, x: 'batch', y: 'ms', series: 'series', logX: true, logY: true }));
}

/** Per-op GPU time of one profiled eager step per batch (cuda: a spin kernel before each op, events around it),
 *  grouped by op kind (GEMMs by weight). */
function opTables(b: { batch: number; wall_ms: number; ops: { op: string; launches: number; ms: number }[] }[]): string[] {
  if (!b.length) return [];
  const kind = (op: string) => op.replace(/ M=\d+$/, '');
  const kinds = new Map<string, number[]>();
  b.forEach((x, i) => {
    for (const o of x.ops) {
      const k = kind(o.op);
      if (!kinds.has(k)) kinds.set(k, new Array(b.length).fill(0));
      kinds.get(k)![i] += o.ms;
    }
  });
  const sums = b.map((x) => x.ops.reduce((a, o) => a + o.ms, 0));
  const rows = [...kinds].sort((p, q) => q[1][q[1].length - 1] - p[1][p[1].length - 1]).map(([k, v]) => `| ${k} | ${v.map((ms, i) => `${ms.toFixed(3)} (${((100 * ms) / sums[i]).toFixed(0)}%)`).join(' | ')} |`);
  return [
    '## Per-op GPU time of one decode step (ms, share of the sum)', '',
    'One eager step per batch with COMET op timing on (backends/cuda/cuda.ts setOpTiming: a spin kernel before each op so its launches queue up, then CUDA events around it): the GPU time of each op alone, summed over the layers. The sum against the step time shows the host (launch) overhead.', '',
    `| op | ${b.map((x) => `batch ${x.batch}`).join(' | ')} |`, `| --- | ${b.map(() => '---').join(' | ')} |`, ...rows,
    `| **sum of ops** | ${sums.map((x) => `**${x.toFixed(3)}**`).join(' | ')} |`,
    `| step (table a) | ${b.map((x) => x.wall_ms.toFixed(3)).join(' | ')} |`, '',
  ];
}
