// `comet quantize`: float model + calibration text -> .comet (FMPQ W4Ax weights, optional KV4), layer by layer
// (src/quant/layered.ts) on --backend: host and device memory hold about one decoder layer.
// Calibration reads the LAST --calib-tokens tokens of --calib (default 2048 = 4 windows of 512), so that
// evaluating on the head of the same file (comet eval ppl --windows N) never scores a calibration token.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import cliProgress from 'cli-progress';
import { findTokenizerPath, loadModel } from '../loaders/index.ts';
import { openHF } from '../loaders/hf.ts';
import { tokenizerFiles } from '../loaders/comet.ts';
import { loadTokenizer } from '../tokenizer/index.ts';
import { createBackend } from '../runtime/backends.ts';
import { mapSource, quantizeLayered } from '../quant/layered.ts';
import type { WeightMethod } from '../quant/quantize.ts';
import type { ChannelOrder } from '../quant/plan.ts';
import { CometError } from '../errors.ts';

export interface QuantizeCliOptions {
  model: string; calib: string; out: string; tokenizer?: string;
  block: number; int8Fraction?: number; int8Blocks?: number; weights: WeightMethod; order: ChannelOrder;
  kv: 'f32' | 'kv4'; kvGroup?: number; smooth?: number; calibTokens: number; ctx: number; json?: boolean;
  backend?: string; weightError?: boolean;
}


export async function quantize(o: QuantizeCliOptions): Promise<void> {
  if (!['rtn', 'gptq'].includes(o.weights)) throw new CometError(`--weights must be rtn or gptq, got '${o.weights}'`);
  if (!['absmax', 'identity'].includes(o.order)) throw new CometError(`--order must be absmax or identity, got '${o.order}'`);
  if (!['kv4', 'f32'].includes(o.kv)) throw new CometError(`--kv must be kv4 or f32, got '${o.kv}'`);
  if (![32, 64, 128].includes(o.block)) throw new CometError(`--block must be 32, 64 or 128, got ${o.block}`);
  if (o.int8Fraction !== undefined && o.int8Blocks !== undefined) throw new CometError('give --int8-fraction or --int8-blocks, not both');
  const int8 = o.int8Fraction === undefined && o.int8Blocks === undefined ? { int8Fraction: 0.15 } : { int8Fraction: o.int8Fraction, int8Blocks: o.int8Blocks };
  const t0 = performance.now();
  // everything that can be wrong with the inputs is found before a backend (a GPU) is touched: an HF directory
  // is opened tensor by tensor (its shards, shapes, dtypes and config checked now, read layer by layer later)
  const isDir = existsSync(o.model) && statSync(o.model).isDirectory();
  if (isDir && !existsSync(join(o.model, 'config.json'))) throw new CometError(`${o.model}: a model directory needs config.json (Hugging Face layout)`, 'not_found');
  const lm = isDir ? undefined : await loadModel(o.model);
  if (lm?.format === 'comet') throw new CometError(`${o.model}: already quantized; quantize the float model`);
  const src = isDir ? openHF(o.model) : mapSource(lm!.config, lm!.weights);
  try {
    const config = src.config;
    const tokPath = o.tokenizer ?? (isDir ? findTokenizerPath(o.model) : lm!.tokenizerPath) ?? (() => { throw new CometError(`${o.model}: no tokenizer found beside the model; pass --tokenizer`); })();
    const tok = await loadTokenizer(tokPath);
    let text: Buffer;
    try {
      text = readFileSync(o.calib);
    } catch (e) {
      throw new CometError(`${o.calib}: cannot read the calibration text (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
    const all = tok.encode(text.toString('utf8'), { bos: false });
    const n = Math.min(o.calibTokens, all.length);
    const ctx = Math.min(o.ctx, config.seqLen, n);
    const calibTokens = all.slice(all.length - n);
    if (o.kvGroup !== undefined && config.headDim % o.kvGroup !== 0) throw new CometError(`--kv-group ${o.kvGroup} must divide head_dim ${config.headDim}`);
    const log = (s: string) => { if (!o.json) console.error(s); };
    log(`${basename(o.model)}: ${config.nLayers} layers, dim ${config.dim}; calibrating on the last ${n} of ${all.length} tokens of ${basename(o.calib)} (windows of ${ctx}), layer by layer on ${o.backend ?? 'sim'}`);

    const rss0 = process.memoryUsage.rss(); // the model's headers and the tokenizer are in: the peak's baseline
    const be = await createBackend(o.backend ?? 'sim');
    const show = process.stderr.isTTY && !o.json;
    const bars = new cliProgress.MultiBar({ format: '{task} {bar} {value}/{total} layers | {tensors}/{totalTensors} tensors | {mb}/{totalMb} MB | {duration}s', hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic);
    const bar: Record<string, cliProgress.SingleBar> = {};
    const MB = (b: number) => (b / 2 ** 20).toFixed(0);
    const layerDone: Record<string, number[]> = {}; // seconds since start at which each layer finished, per pass
    let r;
    try {
      r = await quantizeLayered(src, be, calibTokens, o.out, {
        B: o.block, order: o.order, ...int8, weights: o.weights, smooth: o.smooth, kv: o.kv, kvGroup: o.kvGroup, weightError: o.weightError,
        ctx, calib: { file: basename(o.calib), sha256: createHash('sha256').update(text).digest('hex'), tokens: n, slice: `last ${n} tokens` },
        tokenizer: tokenizerFiles(tokPath, (p) => readFileSync(p)),
        onProgress: (p) => {
          if (p.layer > 0) (layerDone[p.pass] ??= [])[p.layer - 1] = +((performance.now() - t0) / 1000).toFixed(2);
          if (!show) return;
          const b = (bar[p.pass] ??= bars.create(p.layers, 0, { task: p.pass === 'statistics' ? 'pass 1: statistics' : `pass 2: ${o.weights}    `, tensors: 0, totalTensors: 0, mb: 0, totalMb: 0 }));
          b.update(p.layer, { tensors: p.tensors, totalTensors: p.totalTensors, mb: MB(p.bytes), totalMb: MB(p.totalBytes) });
        },
      });
    } finally {
      bars.stop();
      be.dispose();
    }
    const errs = Object.values(r.weightError);
    const summary = {
      out: o.out, backend: o.backend ?? 'sim', B: o.block, weights: o.weights, kv: o.kv, int8MacFraction: r.plan.int8MacFraction,
      sites: r.meta.sites, meanWeightError: errs.length ? errs.reduce((a, b) => a + b, 0) / errs.length : null, passes: r.passes,
      seconds: (performance.now() - t0) / 1000, phaseSeconds: r.seconds, layerDone, peakRssBytes: process.resourceUsage().maxRSS * 1024, startRssBytes: rss0,
    };
    if (o.json) console.log(JSON.stringify(summary));
    else console.log(`wrote ${o.out}: B=${o.block}, ${o.weights}, kv ${o.kv}, INT8 activations on ${(r.plan.int8MacFraction * 100).toFixed(1)}% of GEMM MACs, ` +
      `mean weight error ${summary.meanWeightError?.toExponential(2) ?? 'not measured'}, ${summary.seconds.toFixed(1)} s, peak host memory ${(summary.peakRssBytes / 2 ** 30).toFixed(2)} GiB`);
  } finally {
    src.close();
  }
}
