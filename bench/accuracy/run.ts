// Accuracy report: perplexity of every quantization row, ctx 512, on the CPU simulator (DESIGN §8 protocol).
//
//   npx tsx bench/accuracy/run.ts quantize <model> <alpha>   calibrate + write the .comet variants of one
//                                                            (model, outlier-stress α) to bench/results/accuracy/work/
//   npx tsx bench/accuracy/run.ts eval <shard>/<n> [rows]    evaluate the jobs of one shard (appends results.jsonl);
//                                                            rows: comma-separated row ids to restrict to
//   npx tsx bench/accuracy/run.ts report                     table (Markdown + JSON) and plot (SVG)
//   npx tsx bench/accuracy/run.ts all                        everything, one process
// Options (a bundled run on another machine): --shared DIR (../shared/models), --out DIR (bench/results/accuracy),
// --calib-windows N (4), --models a,b (only these models' jobs), --claim-dir DIR (workers sharing one job list
// take a job by mkdir there).
//
// Rows. "sim" rows are .comet files (the W4Ax formats of DESIGN §3), evaluated with src/quant/fake.ts: the
// simulator's own activation quantizer, KV4 store and weight codes, with the GEMM summed in f32 instead of the
// per-block epilogue order (test/quant.test.ts bounds the logit difference; the row 'fmpq-kv4-exact' runs the
// bit-exact simulator backend on 2 windows beside the same model on the fast path).
// "fake" rows are formats outside W4Ax, run as quantize-dequantize through the float path (src/quant/fake.ts):
//   FP32            float model                                                    sim (float path)
//   W8A8            INT8 weights (per row per 128-block, f16 scales), INT8 acts     fake
//   W4A16           W4 RTN (clip search) weights, float activations                 fake
//   W4A8KV4         W4 RTN, every activation block INT8 (K8 = Kp), KV4              sim
//   W4A4 RTN        identity channel order, no INT8 block                           sim
//   W4A4 reorder    absmax channel order, no INT8 block                             sim
//   FMPQ W4Ax       absmax order, INT8 blocks on 15% of GEMM MACs (global greedy)  sim
//   FMPQ W4AxKV4    the same + KV4 (G = head_dim)                                   sim
//   FMPQ GPTQ KV4   GPTQ weights instead of RTN                                     sim
//   sweep           FMPQ W4Ax at INT8 fractions 5/10/20/30% (0% is "W4A4 reorder"); B = 64 variants
// Calibration: the LAST 4 windows (2048 tokens; --calib-windows) of the model's calibration text (wikillama-28M:
// wiki_heldout_a.txt; stories260K: tinystories_valid_head.txt); evaluation: the FIRST windows of each text.
// The two never overlap. Outlier stress: outlierStress (src/quant/fold.ts) at α = 16, 128 on the float
// weights before calibration; the script asserts the float logits equal α = 1's to 1e-5 (relative).
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Backend, HostWeight } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { loadModel, type LoadedModel } from '../../src/loaders/index.ts';
import { loadComet, tokenizerFiles, writeComet } from '../../src/loaders/comet.ts';
import { loadTokenizer } from '../../src/tokenizer/index.ts';
import { Llama } from '../../src/model/llama.ts';
import { singleSequenceCache } from '../../src/engine/generate.ts';
import { calibrate, type SiteStats } from '../../src/quant/calibrate.ts';
import { quantizeModel, type QuantizeOptions } from '../../src/quant/quantize.ts';
import { outlierStress, stressChannels } from '../../src/quant/fold.ts';
import { FakeQuantBackend, fakeW8, w4ToFloat } from '../../src/quant/fake.ts';
import { sites } from '../../src/quant/sites.ts';
import { actSpec } from '../../simulator/act.ts';
import { quantizeW4 } from '../../simulator/w4.ts';
import type { ActQuantSpec, KVDType } from '../../simulator/formats.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: { shared: { type: 'string' }, out: { type: 'string' }, 'calib-windows': { type: 'string' }, models: { type: 'string' }, 'claim-dir': { type: 'string' } },
});
const SHARED = opt.shared ?? join(ROOT, '../shared/models');
const OUT = opt.out ?? join(ROOT, 'bench/results/accuracy');
const WORK = join(OUT, 'work'); // .comet variants (git-ignored by size; regenerate with `quantize`)
const RESULTS = join(OUT, 'results.jsonl');
const CTX = 512, CALIB_WINDOWS = Number(opt['calib-windows'] ?? 4);

const MODELS = {
  'wikillama-28M': { path: join(SHARED, 'wikillama-28M'), calib: 'wiki_heldout_a.txt', texts: ['wiki_heldout_a.txt', 'wikitext2_test_raw_nonblank_crlf.txt'], B: 128 },
  stories260K: { path: join(SHARED, 'tinyllamas/stories260K.bin'), calib: 'tinystories_valid_head.txt', texts: ['tinystories_valid_head.txt'], B: 32 },
} as const;
type ModelName = keyof typeof MODELS;
const ALPHAS = [1, 16, 128];

interface RowDef { id: string; label: string; kind: 'sim' | 'fake'; quant?: Omit<QuantizeOptions, 'B'> & { B?: number }; int8MacFraction?: number }
const fmpq = (f: number, extra: Partial<QuantizeOptions> = {}) => ({ order: 'absmax' as const, int8Fraction: f, weights: 'rtn' as const, kv: 'f32' as KVDType, ...extra });
const ROWS: RowDef[] = [
  { id: 'fp32', label: 'FP32', kind: 'sim' },
  { id: 'w8a8', label: 'W8A8 (fake quant)', kind: 'fake' },
  { id: 'w4a16', label: 'W4A16 RTN (fake quant)', kind: 'fake' },
  { id: 'w4a8kv4', label: 'W4A8KV4', kind: 'sim', quant: { order: 'identity', int8Fraction: 1, weights: 'rtn', kv: 'kv4' } },
  { id: 'w4a4', label: 'W4A4 RTN (no reorder, no INT8)', kind: 'sim', quant: { order: 'identity', int8Blocks: 0, weights: 'rtn', kv: 'f32' } },
  { id: 'w4a4-reorder', label: 'W4A4 reorder only', kind: 'sim', quant: { order: 'absmax', int8Blocks: 0, weights: 'rtn', kv: 'f32' } },
  { id: 'fmpq', label: 'FMPQ W4Ax (15%)', kind: 'sim', quant: fmpq(0.15) },
  { id: 'fmpq-kv4', label: 'FMPQ W4AxKV4 (15%)', kind: 'sim', quant: fmpq(0.15, { kv: 'kv4' }) },
  { id: 'fmpq-gptq-kv4', label: 'FMPQ W4AxKV4 GPTQ (15%)', kind: 'sim', quant: fmpq(0.15, { kv: 'kv4', weights: 'gptq' }) },
  // knobs, wikillama-28M held-out text at α = 1 only
  { id: 'fmpq-kv4-exact', label: 'FMPQ W4AxKV4 (15%), bit-exact simulator', kind: 'sim', quant: fmpq(0.15, { kv: 'kv4' }) },
  { id: 'w4a4-exact', label: 'W4A4 RTN, bit-exact simulator', kind: 'sim', quant: { order: 'identity', int8Blocks: 0, weights: 'rtn', kv: 'f32' } },
  { id: 'fmpq-f05', label: 'FMPQ W4Ax 5%', kind: 'sim', quant: fmpq(0.05) },
  { id: 'fmpq-f10', label: 'FMPQ W4Ax 10%', kind: 'sim', quant: fmpq(0.1) },
  { id: 'fmpq-f20', label: 'FMPQ W4Ax 20%', kind: 'sim', quant: fmpq(0.2) },
  { id: 'fmpq-f30', label: 'FMPQ W4Ax 30%', kind: 'sim', quant: fmpq(0.3) },
  { id: 'fmpq-blk1', label: 'FMPQ W4Ax, 1 INT8 block at every input (uniform)', kind: 'sim', quant: { order: 'absmax', int8Blocks: 1, weights: 'rtn', kv: 'f32' } },
  { id: 'fmpq-smooth', label: 'FMPQ W4Ax + SmoothQuant β=0.5 (15%)', kind: 'sim', quant: fmpq(0.15, { smooth: 0.5 }) },
  { id: 'fmpq-smooth-kv4', label: 'FMPQ W4AxKV4 + SmoothQuant β=0.5 (15%)', kind: 'sim', quant: fmpq(0.15, { smooth: 0.5, kv: 'kv4' }) },
  { id: 'best-kv4', label: 'FMPQ W4AxKV4 B=64 GPTQ (25%)', kind: 'sim', quant: { ...fmpq(0.25, { kv: 'kv4', weights: 'gptq' }), B: 64 } },
  { id: 'best-smooth-kv4', label: 'FMPQ W4AxKV4 B=64 GPTQ + SmoothQuant β=0.5 (25%)', kind: 'sim', quant: { ...fmpq(0.25, { kv: 'kv4', weights: 'gptq', smooth: 0.5 }), B: 64 } },
  { id: 'best32-kv4', label: 'FMPQ W4AxKV4 B=32 GPTQ (25%)', kind: 'sim', quant: { ...fmpq(0.25, { kv: 'kv4', weights: 'gptq' }), B: 32 } },
  { id: 'fmpq-b64-kv4', label: 'FMPQ W4AxKV4 B=64 (15%)', kind: 'sim', quant: { ...fmpq(0.15, { kv: 'kv4' }), B: 64 } },
  { id: 'fmpq-b64-gptq-kv4', label: 'FMPQ W4AxKV4 B=64 GPTQ (15%)', kind: 'sim', quant: { ...fmpq(0.15, { kv: 'kv4', weights: 'gptq' }), B: 64 } },
];
const MAIN = ROWS.slice(0, 9).map((r) => r.id), KNOBS = ROWS.slice(11).map((r) => r.id);
/** Rows that reuse another row's .comet. */
const COMET_OF: Record<string, string> = { 'fmpq-kv4-exact': 'fmpq-kv4', 'w4a4-exact': 'w4a4' };

interface Job { model: ModelName; text: string; alpha: number; row: string; windows: number }
/** In priority order: what is done first is what a cut-short run still reports. The CPU budget (2 shared
 *  cores) sets the windows: wikillama-28M held-out 16 windows for the main rows (FP32 there is DESIGN §8's
 *  transformers reference, which our float path reproduces: see the 2-window fp32 row); WikiText-2, the INT8 sweep
 *  and B = 64 at 4 windows; outlier stress at 2 windows. stories260K: everything at 16 windows. */
function jobs(): Job[] {
  const out: Job[] = [];
  const add = (model: ModelName, text: string, alpha: number, rows: string[], windows: number) => rows.forEach((row) => out.push({ model, text, alpha, row, windows }));
  for (const a of ALPHAS) add('stories260K', 'tinystories_valid_head.txt', a, a === 1 ? [...MAIN, ...KNOBS] : [...MAIN, 'fmpq-smooth'], 16);
  const H = 'wiki_heldout_a.txt', W2 = 'wikitext2_test_raw_nonblank_crlf.txt';
  add('wikillama-28M', H, 1, ['fp32'], 2);
  add('wikillama-28M', H, 1, ['w4a4', 'fmpq-kv4', 'fmpq', 'w4a4-reorder', 'fmpq-gptq-kv4', 'w4a8kv4', 'w4a16', 'w8a8'], 16);
  add('wikillama-28M', W2, 1, ['fp32', 'w4a4', 'fmpq-kv4', 'fmpq-gptq-kv4'], 4);
  add('wikillama-28M', H, 1, ['fp32', 'fmpq-f05', 'fmpq-f10', 'fmpq-f20', 'fmpq-f30', 'fmpq-b64-kv4', 'fmpq', 'w4a4-reorder', 'fmpq-blk1'], 4);
  for (const a of [16, 128]) add('wikillama-28M', H, a, ['w4a4', 'w4a4-reorder', 'fmpq', 'fmpq-kv4', 'w4a16'], 2);
  add('wikillama-28M', H, 1, ['fmpq-smooth', 'fmpq-smooth-kv4'], 4);
  add('wikillama-28M', H, 1, ['best-kv4', 'best-smooth-kv4', 'best32-kv4'], 16);
  add('wikillama-28M', W2, 1, ['best-kv4', 'best32-kv4'], 4);
  for (const a of [16, 128]) add('wikillama-28M', H, a, ['fmpq-smooth'], 2);
  add('wikillama-28M', H, 1, ['fmpq-kv4', 'fmpq-kv4-exact', 'w4a4', 'w4a4-exact', 'w4a4-reorder'], 2);
  const models = opt.models?.split(','); // restrict to these models (a machine that lacks the others)
  return models ? out.filter((j) => models.includes(j.model)) : out;
}
const jobKey = (j: Job) => `${j.model}|${j.text}|a${j.alpha}|${j.row}|w${j.windows}`;
const cometPath = (model: string, alpha: number, row: string) => join(WORK, `${model}-a${alpha}-${COMET_OF[row] ?? row}.comet`);

// ---- models and texts ----
const tokCache = new Map<string, number[]>();
async function textTokens(lm: LoadedModel, text: string): Promise<number[]> {
  const key = `${lm.path}|${text}`;
  if (!tokCache.has(key)) {
    const tok = await loadTokenizer(lm.tokenizerPath!);
    tokCache.set(key, tok.encode(readFileSync(join(SHARED, 'texts', text), 'utf8'), { bos: false }));
  }
  return tokCache.get(key)!;
}

async function floatModel(model: ModelName, alpha: number): Promise<LoadedModel> {
  const lm = await loadModel(MODELS[model].path);
  return { ...lm, weights: outlierStress(lm.config, lm.weights, stressChannels(lm.config.dim), alpha) };
}

/** Float logits of the stressed model equal the original's (the transform preserves the function). */
async function checkStress(model: ModelName, alpha: number, lm: LoadedModel): Promise<number> {
  const base = await loadModel(MODELS[model].path), toks = (await textTokens(lm, MODELS[model].texts[0])).slice(0, 64);
  const logits = async (w: Map<string, HostWeight>) => {
    const m = new Llama(new SimBackend(), lm.config, w);
    const { cache, blockTable } = singleSequenceCache(m, toks.length);
    const layout = { pos: Int32Array.from(toks, (_, i) => i), seq: new Int32Array(toks.length), blockTables: [blockTable] };
    return m.be.read(m.forward(Int32Array.from(toks), layout, cache, Int32Array.from(toks, (_, i) => i)));
  };
  const a = await logits(base.weights), b = await logits(lm.weights);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += a[i] ** 2; }
  const rel = Math.sqrt(num / den);
  if (!(rel <= 1e-5)) throw new Error(`outlier stress α=${alpha}: float logits differ by ${rel} (relative), expected <= 1e-5`);
  return rel;
}

// ---- phase 1: calibrate and quantize one (model, α) ----
async function quantizePhase(model: ModelName, alpha: number, only?: string[]): Promise<void> {
  mkdirSync(WORK, { recursive: true });
  const lm = await floatModel(model, alpha);
  const stressRel = await checkStress(model, alpha, lm);
  const calibText = MODELS[model].calib, all = await textTokens(lm, calibText);
  const calibTokens = all.slice(all.length - CALIB_WINDOWS * CTX);
  const t0 = performance.now();
  const stats = await calibrate(new Llama(new SimBackend(), lm.config, lm.weights), calibTokens, { ctx: CTX, hessian: true, onWindow: (d, n) => process.stderr.write(`\r${model} α=${alpha}: calibration ${d}/${n}`) });
  process.stderr.write(` (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  const sha = createHash('sha256').update(readFileSync(join(SHARED, 'texts', calibText))).digest('hex');
  const tok = tokenizerFiles(lm.tokenizerPath!, (p) => readFileSync(p));
  for (const r of ROWS) {
    if (!r.quant || COMET_OF[r.id] || (alpha !== 1 && !MAIN.includes(r.id) && !only?.includes(r.id)) || (only && !only.includes(r.id))) continue;
    const t1 = performance.now();
    const { B = MODELS[model].B, ...q } = r.quant;
    const res = quantizeModel(lm.config, lm.weights, stats, { B, ...q });
    res.meta.calib = { file: calibText, sha256: sha, tokens: calibTokens.length, slice: `last ${CALIB_WINDOWS} windows of ${CTX}` };
    writeComet(cometPath(model, alpha, r.id), { config: lm.config, weights: res.weights, quant: res.meta, weightError: res.weightError, tokenizer: tok });
    console.error(`  ${r.id}: INT8 MACs ${(res.plan.int8MacFraction * 100).toFixed(1)}%, ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  }
  writeFileSync(join(WORK, `${model}-a${alpha}.stress.json`), JSON.stringify({ alpha, channels: stressChannels(lm.config.dim), floatLogitsRelDiff: stressRel }));
}

// ---- phase 2: evaluate ----
/** DESIGN §8 perplexity with the model's own KV dtype and group (src/eval/ppl.ts uses an f32 cache). */
async function ppl(model: Llama, tokens: number[], windows: number, kv: KVDType, group?: number): Promise<{ ppl: number; scored: number; windows: number }> {
  const { cache, blockTable } = singleSequenceCache(model, CTX, kv, 16, group);
  const layout = { pos: Int32Array.from({ length: CTX }, (_, i) => i), seq: new Int32Array(CTX), blockTables: [blockTable] };
  const rows = Int32Array.from({ length: CTX - 1 }, (_, i) => i), V = model.config.vocabSize;
  let nll = 0, scored = 0;
  const n = Math.min(windows, Math.floor(tokens.length / CTX));
  for (let w = 0; w < n; w++) {
    const win = Int32Array.from(tokens.slice(w * CTX, (w + 1) * CTX));
    const logits = await model.be.read(model.forward(win, layout, cache, rows));
    model.be.endStep();
    for (let i = 0; i < CTX - 1; i++) {
      const row = logits.subarray(i * V, (i + 1) * V);
      let max = -Infinity, sum = 0;
      for (let j = 0; j < V; j++) if (row[j] > max) max = row[j];
      for (let j = 0; j < V; j++) sum += Math.exp(row[j] - max);
      nll += Math.log(sum) + max - row[win[i + 1]];
      scored++;
    }
  }
  return { ppl: Math.exp(nll / scored), scored, windows: n };
}

async function buildRow(j: Job): Promise<{ model: Llama; kv: KVDType; group?: number; info: Record<string, unknown> }> {
  const def = ROWS.find((r) => r.id === j.row)!;
  if (def.quant) {
    const lm = await loadComet(cometPath(j.model, j.alpha, j.row));
    const meta = lm.meta as { kvDType: KVDType; kvGroup: number; quant: { int8MacFraction: number; B: number }; weightError: Record<string, number> };
    const errs = Object.values(meta.weightError);
    return {
      model: new Llama(j.row.endsWith('-exact') ? new SimBackend() : new FakeQuantBackend(), lm.config, lm.weights, meta.kvDType), kv: meta.kvDType, group: meta.kvGroup,
      info: { int8MacFraction: meta.quant.int8MacFraction, B: meta.quant.B, meanWeightError: errs.reduce((a, b) => a + b, 0) / errs.length },
    };
  }
  const lm = await floatModel(j.model, j.alpha), c = lm.config, B = MODELS[j.model].B;
  if (j.row === 'fp32') return { model: new Llama(new SimBackend(), c, lm.weights), kv: 'f32', info: {} };
  const linears = new Set(sites(c).flatMap((s) => s.consumers));
  const w = new Map(lm.weights), actFor = new Map<string, ActQuantSpec>();
  for (const name of linears) {
    const f = lm.weights.get(name) as Extract<HostWeight, { kind: 'f32' }>;
    const [N, K] = f.shape;
    if (j.row === 'w4a16') w.set(name, { ...f, data: w4ToFloat(quantizeW4(f.data, N, actSpec(K, B, 0))) });
    else {
      w.set(name, { ...f, data: fakeW8(f.data, N, K, B) });
      const Kp = Math.ceil(K / B) * B;
      actFor.set(name, actSpec(K, B, Kp));
    }
  }
  const be: Backend = j.row === 'w4a16' ? new SimBackend() : new FakeQuantBackend(actFor);
  return { model: new Llama(be, c, w), kv: 'f32', info: { int8MacFraction: j.row === 'w8a8' ? 1 : 0, B } };
}

function done(): Set<string> {
  if (!existsSync(RESULTS)) return new Set();
  return new Set(readFileSync(RESULTS, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).key));
}

async function evalPhase(shard: number, n: number, only?: string[]): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const have = done();
  const mine = jobs().filter((j) => !only || only.includes(j.row)).filter((_, i) => i % n === shard).filter((j) => !have.has(jobKey(j)));
  const claims = opt['claim-dir']; // several workers share one job list: a job is theirs by mkdir
  let blocked = 0;
  for (const j of mine) {
    const def = ROWS.find((r) => r.id === j.row)!;
    if (def.quant && !existsSync(cometPath(j.model, j.alpha, j.row))) { blocked++; continue; }
    if (claims) {
      try { mkdirSync(join(claims, createHash('sha1').update(jobKey(j)).digest('hex'))); } catch { continue; }
    }
    const t0 = performance.now();
    const { model, kv, group, info } = await buildRow(j);
    const lm = await loadModel(MODELS[j.model].path);
    const r = await ppl(model, await textTokens(lm, j.text), j.windows, kv, group);
    const rec = { key: jobKey(j), ...j, label: def.label, backend: j.row.endsWith('-exact') ? 'sim' : def.quant ? 'sim-fast' : def.kind, kv, ...info, ...r, seconds: (performance.now() - t0) / 1000, date: new Date().toISOString() };
    appendFileSync(RESULTS, JSON.stringify(rec) + '\n');
    console.error(`${jobKey(j)}: ppl ${r.ppl.toFixed(4)} (${rec.seconds.toFixed(0)} s)`);
  }
  if (blocked) console.error(`${blocked} jobs wait for their .comet (run quantize)`);
  process.exitCode = blocked ? 0 : 3; // 3: nothing of this list is left to start
}

// ---- report ----
/** FP32 perplexities of DESIGN §8 (transformers, FP32), used where the table did not compute FP32 itself; our
 *  float path reproduces them to 4 decimals where it did (2 and 4 windows). The stress transform keeps the float
 *  function (checked to 1e-5 on the logits), so they hold for every α. */
const FP32_REF: Record<string, Record<number, number>> = {
  'wiki_heldout_a.txt': { 2: 15.8847, 4: 20.2819, 16: 29.156 },
  // not wikitext2_test_raw_nonblank_crlf.txt: our tokenization of that CRLF text gives 100.8300 at 4 windows where
  // DESIGN §8 has 96.5908 (held-out text: identical), so FP32 there is always computed here
};
const colName = (r: { model: string; text: string; alpha: number; windows: number }) => `${r.model} · ${r.text.replace('.txt', '').replace('_raw_nonblank_crlf', '')} · α=${r.alpha} · ${r.windows}w`;
const fmt = (x: number) => (x >= 1000 ? x.toExponential(1) : x.toFixed(2));

function loadResults(): any[] {
  const recs = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const latest = new Map<string, any>();
  for (const r of recs) latest.set(r.key, r);
  const rs = [...latest.values()];
  // FP32 cells from the reference where not computed
  for (const r of [...rs]) {
    const ref = r.model === 'wikillama-28M' ? FP32_REF[r.text]?.[r.windows] : undefined;
    if (ref && !rs.some((x) => x.row === 'fp32' && colName(x) === colName(r)))
      rs.push({ key: `ref|${colName(r)}`, model: r.model, text: r.text, alpha: r.alpha, windows: r.windows, row: 'fp32', ppl: ref, ref: true });
  }
  return rs;
}

async function report(): Promise<void> {
  const rs = loadResults();
  const cols = [...new Set(rs.map(colName))].sort((a, b) => {
    const pa = a.split(' · '), pb = b.split(' · ');
    return pb[0].localeCompare(pa[0]) || pb[1].localeCompare(pa[1]) || Number(pa[2].slice(2)) - Number(pb[2].slice(2)) || Number(pb[3].slice(0, -1)) - Number(pa[3].slice(0, -1));
  });
  const fp = new Map(rs.filter((r) => r.row === 'fp32').map((r) => [colName(r), r.ppl]));
  const lines = ['| row | INT8 MACs | ' + cols.join(' | ') + ' |', '| --- | --- | ' + cols.map(() => '---').join(' | ') + ' |'];
  for (const def of ROWS) {
    const cells = cols.map((c) => {
      const r = rs.find((x) => x.row === def.id && colName(x) === c);
      if (!r) return '';
      const base = fp.get(c);
      if (def.id === 'fp32') return `${r.ppl.toFixed(4)}${r.ref ? '†' : ''}`;
      return base ? `${fmt(r.ppl)} (${r.ppl / base - 1 >= 10 ? '×' + (r.ppl / base).toFixed(0) : `${((r.ppl / base - 1) * 100).toFixed(1)}%`})` : fmt(r.ppl);
    });
    if (cells.every((c) => !c)) continue;
    const fr = rs.find((x) => x.row === def.id && x.model === 'wikillama-28M' && x.alpha === 1 && x.int8MacFraction !== undefined)?.int8MacFraction ?? rs.find((x) => x.row === def.id)?.int8MacFraction;
    lines.push(`| ${def.label} | ${fr === undefined ? '-' : `${(fr * 100).toFixed(1)}%`} | ${cells.join(' | ')} |`);
  }
  const md = ['# Accuracy: perplexity at ctx 512 (CPU simulator)', '', `Generated ${new Date().toISOString()} by bench/accuracy/run.ts. Cells: perplexity (change vs FP32 on the same windows).`,
    'Columns: model · evaluation text · outlier-stress α · windows scored (the FIRST N windows of ctx 512 of the text).',
    `Calibration: the LAST ${CALIB_WINDOWS} windows of 512 tokens of wiki_heldout_a.txt (wikillama-28M) or tinystories_valid_head.txt (stories260K): never an evaluated token.`,
    'INT8 MACs: share of the quantized GEMMs\' multiply-accumulates that read INT8 activations (wikillama-28M at α=1 where run, else stories260K).',
    '† FP32 from DESIGN.md §8 (transformers, FP32); our float path reproduces those values to 4 decimals at 2 and 4 windows. The outlier-stress transform keeps the float function (logits checked to 1e-5), so FP32 holds for every α.',
    'W8A8 and W4A16 are fake quant (quantize-dequantize through the float path); every other row is a .comet file (W4Ax codes, f16 scales, KV4 pages) run on the simulator\'s quantizers with an f32-summed GEMM (src/quant/fake.ts; the "bit-exact" row runs the exact simulator backend).',
    '', ...lines, ''].join('\n');
  writeFileSync(join(OUT, 'accuracy.md'), md);
  writeFileSync(join(OUT, 'accuracy.json'), JSON.stringify({ generated: new Date().toISOString(), ctx: CTX, calibration: { windows: CALIB_WINDOWS, slice: 'tail' }, rows: ROWS, results: rs }, null, 1));
  await plot(rs);
  console.log(md);
}

async function plot(rs: any[]): Promise<void> {
  const { renderSvg } = await import('../../src/cli/plot.ts');
  const data = rs.filter((r) => r.row !== 'fp32').map((r) => {
    const base = rs.find((x) => x.row === 'fp32' && colName(x) === colName(r))?.ppl;
    return { row: ROWS.find((d) => d.id === r.row)!.label, panel: `${r.model} · ${r.text.replace('.txt', '').slice(0, 18)} · ${r.windows}w`, alpha: `α=${r.alpha}`, delta: base ? Math.min((r.ppl / base - 1) * 100, 1e4) : null };
  }).filter((d) => d.delta !== null);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json', data: { values: data },
    facet: { row: { field: 'panel', type: 'nominal', title: null } },
    spec: {
      width: 420, height: { step: 9 },
      layer: [
        { mark: 'bar', encoding: { y: { field: 'row', type: 'nominal', sort: ROWS.map((d) => d.label), title: null, axis: { labelLimit: 360 } }, yOffset: { field: 'alpha' }, x: { field: 'delta', type: 'quantitative', title: 'perplexity increase over FP32 (%)', scale: { type: 'symlog', domain: [0, 10000] } }, color: { field: 'alpha', type: 'nominal', title: 'outlier stress' } } },
        { mark: { type: 'rule', strokeDash: [4, 3], color: 'black' }, encoding: { x: { datum: 8 } } },
      ],
    },
    title: 'COMET accuracy: W4A4KV4 rows vs FP32 (dashed: +8% goal)',
  };
  writeFileSync(join(OUT, 'accuracy.svg'), await renderSvg(spec as Parameters<typeof renderSvg>[0]));
}

const [cmd, a, b, c] = positionals;
if (cmd === 'quantize') await quantizePhase(a as ModelName, Number(b), c?.split(','));
else if (cmd === 'eval') { const [s, n] = (a ?? '0/1').split('/').map(Number); await evalPhase(s, n, b?.split(',')); }
else if (cmd === 'report') await report();
else if (cmd === 'all') {
  for (const m of Object.keys(MODELS) as ModelName[]) for (const al of ALPHAS) await quantizePhase(m, al);
  await evalPhase(0, 1);
  await report();
} else {
  console.error('usage: run.ts quantize <model> <alpha> | eval <shard>/<n> | report | all');
  process.exit(2);
}
