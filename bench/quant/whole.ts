// The whole-model quantizer (calibrate.ts + quantizeModel + writeComet: every float weight and every Hessian in
// host memory at once), as `comet quantize` ran before the layer-by-layer path (src/quant/layered.ts): the
// reference that bench/quant/run.sh compares the layered files with (bytes, perplexity, time, peak memory).
//   npx tsx bench/quant/whole.ts MODEL_DIR CALIB_TEXT OUT.comet rtn|gptq [calibTokens=2048] [ctx=512]
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { SimBackend } from '../../backends/sim/sim.ts';
import { loadModel } from '../../src/loaders/index.ts';
import { tokenizerFiles, writeComet } from '../../src/loaders/comet.ts';
import { loadTokenizer } from '../../src/tokenizer/index.ts';
import { Llama } from '../../src/model/llama.ts';
import { calibrate } from '../../src/quant/calibrate.ts';
import { quantizeModel, type WeightMethod } from '../../src/quant/quantize.ts';

const [model, calib, out, method, nTok = '2048', ctxArg = '512'] = process.argv.slice(2);
const t0 = performance.now(), rss0 = process.memoryUsage.rss();
const lm = await loadModel(model);
const tok = await loadTokenizer(lm.tokenizerPath!);
const text = readFileSync(calib);
const all = tok.encode(text.toString('utf8'), { bos: false });
const n = Math.min(Number(nTok), all.length), ctx = Math.min(Number(ctxArg), lm.config.seqLen, n);
const stats = await calibrate(new Llama(new SimBackend(), lm.config, lm.weights), all.slice(all.length - n), { ctx, hessian: method === 'gptq' });
const r = quantizeModel(lm.config, lm.weights, stats, { B: 128, order: 'absmax', int8Fraction: 0.15, weights: method as WeightMethod, kv: 'kv4' });
r.meta.calib = { file: basename(calib), sha256: createHash('sha256').update(text).digest('hex'), tokens: n, slice: `last ${n} tokens` };
writeComet(out, { config: lm.config, weights: r.weights, quant: r.meta, weightError: r.weightError, tokenizer: tokenizerFiles(lm.tokenizerPath!, (p) => readFileSync(p)) });
console.log(JSON.stringify({ out, weights: method, int8MacFraction: r.plan.int8MacFraction, seconds: (performance.now() - t0) / 1000, peakRssBytes: process.resourceUsage().maxRSS * 1024, startRssBytes: rss0 }));
