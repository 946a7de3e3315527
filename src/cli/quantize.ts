// `comet quantize`: float model + calibration text -> .comet (FMPQ W4Ax weights, optional KV4).
// Calibration reads the LAST --calib-tokens tokens of --calib (default 2048 = 4 windows of 512), so that
// evaluating on the head of the same file (comet eval ppl --windows N) never scores a calibration token.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import cliProgress from 'cli-progress';
import { SimBackend } from '../../backends/sim/sim.ts';
import { loadModel } from '../loaders/index.ts';
import { tokenizerFiles, writeComet } from '../loaders/comet.ts';
import { loadTokenizer } from '../tokenizer/index.ts';
import { Llama } from '../model/llama.ts';
import { calibrate } from '../quant/calibrate.ts';
import { quantizeModel, type WeightMethod } from '../quant/quantize.ts';
import type { ChannelOrder } from '../quant/plan.ts';
import { CometError } from '../errors.ts';

export interface QuantizeCliOptions {
  model: string; calib: string; out: string; tokenizer?: string;
  block: number; int8Fraction?: number; int8Blocks?: number; weights: WeightMethod; order: ChannelOrder;
  kv: 'f32' | 'kv4'; kvGroup?: number; smooth?: number; calibTokens: number; ctx: number; json?: boolean;
}

export async function quantize(o: QuantizeCliOptions): Promise<void> {
  if (!['rtn', 'gptq'].includes(o.weights)) throw new CometError(`--weights must be rtn or gptq, got '${o.weights}'`);
  if (!['absmax', 'identity'].includes(o.order)) throw new CometError(`--order must be absmax or identity, got '${o.order}'`);
  if (!['kv4', 'f32'].includes(o.kv)) throw new CometError(`--kv must be kv4 or f32, got '${o.kv}'`);
  if (![32, 64, 128].includes(o.block)) throw new CometError(`--block must be 32, 64 or 128, got ${o.block}`);
  if (o.int8Fraction !== undefined && o.int8Blocks !== undefined) throw new CometError('give --int8-fraction or --int8-blocks, not both');
  const int8 = o.int8Fraction === undefined && o.int8Blocks === undefined ? { int8Fraction: 0.15 } : { int8Fraction: o.int8Fraction, int8Blocks: o.int8Blocks };
  const t0 = performance.now();
  const lm = await loadModel(o.model);
  if (lm.format === 'comet') throw new CometError(`${o.model}: already quantized; quantize the float model`);
  const tokPath = o.tokenizer ?? lm.tokenizerPath ?? (() => { throw new CometError(`${o.model}: no tokenizer found beside the model; pass --tokenizer`); })();
  const tok = await loadTokenizer(tokPath);
  let text: Buffer;
  try {
    text = readFileSync(o.calib);
  } catch (e) {
    throw new CometError(`${o.calib}: cannot read the calibration text (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  const all = tok.encode(text.toString('utf8'), { bos: false });
  const n = Math.min(o.calibTokens, all.length);
  const ctx = Math.min(o.ctx, lm.config.seqLen, n);
  const calibTokens = all.slice(all.length - n);
  if (o.kvGroup !== undefined && lm.config.headDim % o.kvGroup !== 0) throw new CometError(`--kv-group ${o.kvGroup} must divide head_dim ${lm.config.headDim}`);
  const log = (s: string) => { if (!o.json) console.error(s); };
  log(`${basename(o.model)}: ${lm.config.nLayers} layers, dim ${lm.config.dim}; calibrating on the last ${n} of ${all.length} tokens of ${basename(o.calib)} (windows of ${ctx})`);

  const bars = new cliProgress.MultiBar({ format: '{task} {bar} {value}/{total} {unit} | {eta}s', hideCursor: true, noTTYOutput: false, stream: process.stderr }, cliProgress.Presets.shades_classic);
  const show = process.stderr.isTTY && !o.json;
  const calBar = show ? bars.create(Math.floor(n / ctx), 0, { task: 'calibrate', unit: 'windows' }) : undefined;
  const model = new Llama(new SimBackend(), lm.config, lm.weights);
  const stats = await calibrate(model, calibTokens, { ctx, hessian: o.weights === 'gptq', onWindow: (d) => calBar?.update(d) });
  const qBar = show ? bars.create(lm.config.nLayers * 7, 0, { task: `weights (${o.weights})`, unit: 'linears' }) : undefined;
  const r = quantizeModel(lm.config, lm.weights, stats, { B: o.block, order: o.order, ...int8, weights: o.weights, smooth: o.smooth, kv: o.kv, kvGroup: o.kvGroup, onLinear: (d) => qBar?.update(d) });
  bars.stop();
  r.meta.calib = { file: basename(o.calib), sha256: createHash('sha256').update(text).digest('hex'), tokens: n, slice: `last ${n} tokens` };
  writeComet(o.out, { config: lm.config, weights: r.weights, quant: r.meta, weightError: r.weightError, tokenizer: tokenizerFiles(tokPath, (p) => readFileSync(p)) });
  const errs = Object.values(r.weightError);
  const summary = {
    out: o.out, B: o.block, weights: o.weights, kv: o.kv, int8MacFraction: r.plan.int8MacFraction,
    sites: r.meta.sites, meanWeightError: errs.reduce((a, b) => a + b, 0) / errs.length, seconds: (performance.now() - t0) / 1000,
  };
  if (o.json) console.log(JSON.stringify(summary));
  else console.log(`wrote ${o.out}: B=${o.block}, ${o.weights}, kv ${o.kv}, INT8 activations on ${(r.plan.int8MacFraction * 100).toFixed(1)}% of GEMM MACs, mean weight error ${summary.meanWeightError.toExponential(2)}, ${summary.seconds.toFixed(1)} s`);
}
