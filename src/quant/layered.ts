// The layer-by-layer quantizer: the same algorithm as calibrate.ts + quantize.ts (and the same bytes, given a
// backend whose float ops are the simulator's), in host and device memory bounded by about one decoder layer
// plus the calibration activations, whatever the number of layers.
//
//   x_0[w] = embedding rows of calibration window w          (windows × ctx × D, host f32; rows read one by one)
//   pass 1 (only for a global INT8 budget, --int8-fraction > 0): for each layer l
//       load l's 9 tensors, run every window through decoderLayer (src/model/llama.ts) on the backend, collect
//       its sites' statistics (absmax, Σx², sample rows), smooth, and keep planSite's few numbers per site;
//       x_{l+1} = the layer's output; free the layer.   Then allocateInt8 over all sites: the plan.
//   pass 2: for each layer l, from x_0 again
//       load, run the windows, collect the statistics and GPTQ's Hessians (on the device when the backend has
//       GptqOps: backends/backend.ts; else on the host), smooth, fold down_proj's permutation, quantize the 7
//       linears (RTN, or GPTQ on the device or host), hand them to the streaming .comet writer, free.
// Pass 1 costs a second float forward; it is what lets every layer's INT8 blocks compete for one budget as in
// quantizeModel. With --int8-blocks (or a zero budget) each site's plan is its own and pass 1 is skipped.
import type { Backend, DeviceHessian, HostWeight, Tensor, Weight } from '../../backends/backend.ts';
import { actSpec } from '../../simulator/act.ts';
import { w4FromCodes } from '../../simulator/w4.ts';
import { Graph } from '../graph/graph.ts';
import { decoderLayer, ropeSpec, type LayerWeights } from '../model/llama.ts';
import { type LlamaConfig, weightNames, weightShape } from '../model/config.ts';
import { CometWriter, type CometHeader, type LinearLayout } from '../loaders/comet-writer.ts';
import { CometError } from '../errors.ts';
import { accumulate, newSiteStats, type SiteStats } from './calibrate.ts';
import { GPTQ_DAMP } from './gptq.ts';
import { allocateInt8, checkPlanOptions, planSite, type Plan, type SiteInput, type SitePlan } from './plan.ts';
import { HEAD, hostGptq, quantizeSites, quantMeta, type GptqFactor, type QuantMeta, type QuantizeOptions } from './quantize.ts';
import { smoothModel } from './smooth.ts';
import { sites, type Site } from './sites.ts';

type F32Weight = Extract<HostWeight, { kind: 'f32' }>;

/** A float model read one tensor at a time (loaders/hf.ts openHF; mapSource for a model already in memory). */
export interface LayerSource {
  config: LlamaConfig;
  weight(name: string): F32Weight;
  /** rows of a 2-D weight, [rows.length][cols] (the embedding lookup) */
  rows(name: string, rows: ArrayLike<number>): Float32Array;
  close(): void;
}

export function mapSource(config: LlamaConfig, weights: Map<string, HostWeight>): LayerSource {
  const get = (name: string): F32Weight => {
    const w = weights.get(name);
    if (!w || w.kind !== 'f32') throw new CometError(`quantize: '${name}' is missing or not a float weight`);
    return w;
  };
  return {
    config, weight: get, close() {},
    rows(name, rows) {
      const w = get(name), C = w.shape[1], out = new Float32Array(rows.length * C);
      for (let i = 0; i < rows.length; i++) out.set(w.data.subarray(rows[i] * C, (rows[i] + 1) * C), i * C);
      return out;
    },
  };
}

export interface LayeredProgress {
  pass: 'statistics' | 'quantize';
  layer: number; // layers finished in this pass
  layers: number;
  tensors: number; // written to the .comet so far
  totalTensors: number;
  bytes: number;
  totalBytes: number;
}

export interface LayeredOptions extends QuantizeOptions {
  ctx: number;
  samplePerWindow?: number; // as calibrate.ts (default 64)
  calib?: QuantMeta['calib'];
  tokenizer: CometHeader['tokenizer'];
  onProgress?: (p: LayeredProgress) => void;
}

export interface LayeredResult {
  plan: Plan;
  meta: QuantMeta;
  weightError: Record<string, number>;
  passes: number;
  /** wall seconds by phase, both passes: reading the checkpoint, the calibration forward with its statistics and
   *  Hessians, the plan, quantizing the linears (RTN or GPTQ), writing the .comet */
  seconds: { read: number; calibrate: number; plan: number; quantize: number; write: number };
}

const LINEARS = ['wq', 'wk', 'wv', 'wo', 'w_gate', 'w_up', 'w_down'];
const EMBED_CHUNK = 1024; // embedding / classifier rows per write

/** Quantize `src` calibrated on `tokens` into the .comet file `out`, one layer at a time on `be`. */
export async function quantizeLayered(src: LayerSource, be: Backend, tokens: number[], out: string, o: LayeredOptions): Promise<LayeredResult> {
  const c = src.config;
  checkPlanOptions(o);
  if (o.kvGroup !== undefined && c.headDim % o.kvGroup !== 0) throw new CometError(`quantize: --kv-group ${o.kvGroup} must divide head_dim ${c.headDim}`);
  const ctx = Math.min(o.ctx, tokens.length);
  if (ctx < 2) throw new CometError(`calibrate: ${tokens.length} calibration tokens are too few`);
  for (const t of tokens) if (!(Number.isInteger(t) && t >= 0 && t < c.vocabSize)) throw new CometError(`calibrate: token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
  const windows = Math.floor(tokens.length / ctx), perWin = Math.min(o.samplePerWindow ?? 64, ctx);
  const allSites = sites(c), layerSites = (l: number) => allSites.filter((s) => s.layer === l);
  const onDevice = o.weights === 'gptq' && be.gptq !== undefined;
  const seconds = { read: 0, calibrate: 0, plan: 0, quantize: 0, write: 0 };
  const timed = <T>(phase: keyof typeof seconds, f: () => T): T => { const t = performance.now(); try { return f(); } finally { seconds[phase] += (performance.now() - t) / 1000; } };
  const run = new LayerRunner(src, be, tokens, ctx, windows, seconds);

  // the plan: global (pass 1) or per site (pass 2 makes it; the sizes the header needs are known already)
  const global = o.int8Blocks === undefined && (o.int8Fraction ?? 0) > 0;
  let plan: Plan | undefined;
  if (global) {
    const inputs: SiteInput[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const { weights, stats } = await run.layer(l, layerSites(l), perWin, false);
      const sm = o.smooth === undefined ? { weights, stats } : smoothModel(c, weights, stats, o.smooth, l);
      timed('plan', () => { for (const s of layerSites(l)) inputs.push(planSite(s, sm.stats.get(s.name)!, sm.weights, o)); });
      o.onProgress?.({ pass: 'statistics', layer: l + 1, layers: c.nLayers, tensors: 0, totalTensors: 0, bytes: 0, totalBytes: 0 });
    }
    plan = timed('plan', () => allocateInt8(inputs, o));
    run.restart();
  }
  const shape = plan ?? allocateInt8(allSites.map((site) => shapeOnly(c, site, o)), o); // K8 and MACs need no data
  const meta: QuantMeta = { ...quantMeta(shape, o, c), ...(o.calib ? { calib: o.calib } : {}) };
  const linears = new Map<string, LinearLayout>();
  for (const p of shape.sites)
    for (const name of p.site.consumers)
      linears.set(name, { K: p.spec.K, Kp: p.spec.Kp, B: p.spec.B, K8: p.spec.K8, perm: o.order === 'absmax' && p.site.kind !== 'down_in' });
  // the classifier and embedding in f16 unless o.head says f32 (QuantizeOptions.head; CometWriter rounds their rows)
  const f16 = (o.head ?? 'f16') === 'f16' ? HEAD.filter((n) => weightNames(c).includes(n)) : [];
  const writer = new CometWriter(out, { config: c, linears, quant: meta, tokenizer: o.tokenizer, weightError: o.weightError ?? true, f16 });
  const progress = (l: number) => o.onProgress?.({ pass: 'quantize', layer: l, layers: c.nLayers, ...rename(writer.progress) });
  try {
    for (const name of weightNames(c).filter((n) => !/^l\d+\./.test(n))) {
      const rows = weightShape(c, name)[0];
      if (weightShape(c, name).length === 1) writer.put(src.weight(name));
      else for (let r = 0; r < rows; r += EMBED_CHUNK) { const x = timed('read', () => src.rows(name, range(r, Math.min(rows, r + EMBED_CHUNK)))); timed('write', () => writer.floatRows(name, x)); }
      progress(0);
    }
    const sitePlans: SitePlan[] = [], weightError: Record<string, number> = {};
    for (let l = 0; l < c.nLayers; l++) {
      const { weights, stats, hessians } = await run.layer(l, layerSites(l), perWin, o.weights === 'gptq' && !onDevice, onDevice);
      try {
        const sm = o.smooth === undefined ? { weights, stats, scales: undefined } : smoothModel(c, weights, stats, o.smooth, l);
        const plans = plan ? plan.sites.filter((p) => p.site.layer === l) : timed('plan', () => allocateInt8(layerSites(l).map((s) => planSite(s, sm.stats.get(s.name)!, sm.weights, o)), o).sites);
        sitePlans.push(...plans);
        const gptq: GptqFactor = onDevice ? deviceGptq(hessians, sm.scales) : hostGptq;
        const q = timed('quantize', () => quantizeSites(c, sm.weights, plans, sm.stats, o, gptq));
        Object.assign(weightError, q.weightError);
        timed('write', () => {
          for (const n of ['attn_norm', 'ffn_norm']) writer.put(sm.weights.get(`l${l}.${n}`)!);
          for (const n of LINEARS) writer.put(q.weights.get(`l${l}.${n}`)!);
        });
      } finally {
        for (const h of hessians.values()) h.free();
      }
      progress(l + 1);
    }
    const final: Plan = plan ?? { sites: sitePlans, int8MacFraction: shape.int8MacFraction };
    timed('write', () => writer.finish(weightError));
    return { plan: final, meta, weightError, passes: global ? 2 : 1, seconds };
  } catch (e) {
    writer.abort();
    throw e;
  }
}

/** A site's plan with no statistics: identity order, no INT8 gains (enough for K8 under --int8-blocks and for
 *  every site's MACs). */
function shapeOnly(c: LlamaConfig, site: Site, o: QuantizeOptions): SiteInput {
  const spec = actSpec(site.K, o.B, 0), N = site.consumers.reduce((a, n) => a + weightShape(c, n)[0], 0);
  return { site, spec, macs: spec.Kp * N, int8Macs: 0, blockGain: [], N };
}

/** GPTQ with the layer's Hessians on the device; `scales`: the smoothing of each site (the device Hessians are of
 *  the unsmoothed activations; the host's statistics were divided by s·sᵀ in smoothModel). */
function deviceGptq(hessians: Map<string, DeviceHessian>, scales?: Map<string, Float64Array>): GptqFactor {
  return (p, _st, spec) => {
    const f = hessians.get(p.site.name)!.factor(p.spec.perm, spec.Kp, GPTQ_DAMP, scales?.get(p.site.name));
    return { quantize: (w, N) => { const r = f.quantize(w, N, spec, 20); return w4FromCodes(N, r.codes, r.scales, spec); }, free: () => f.free() };
  };
}

const range = (a: number, b: number) => Int32Array.from({ length: b - a }, (_, i) => a + i);
const rename = (p: CometWriter['progress']) => ({ tensors: p.tensors, totalTensors: p.totalTensors, bytes: p.bytes, totalBytes: p.totalBytes });

/** Runs the calibration windows through one layer at a time, keeping the residual stream of every window on
 *  the host between layers (windows × ctx × D f32). */
class LayerRunner {
  private x: Float32Array[] = [];
  private readonly layout;

  constructor(private readonly src: LayerSource, private readonly be: Backend, private readonly tokens: number[], private readonly ctx: number, private readonly windows: number,
    private readonly seconds: { read: number; calibrate: number }) {
    this.layout = { pos: Int32Array.from({ length: ctx }, (_, i) => i), seq: new Int32Array(ctx), blockTables: [Int32Array.from({ length: Math.ceil(ctx / 16) }, (_, i) => i)] };
    this.restart();
  }

  /** Back to the embeddings (pass 2 starts over). */
  restart(): void {
    this.x = Array.from({ length: this.windows }, (_, w) => this.src.rows('tok_embed', this.tokens.slice(w * this.ctx, (w + 1) * this.ctx)));
  }

  /** Layer l over every window: its float weights (host) and its sites' statistics; x moves to layer l+1. */
  async layer(l: number, ss: Site[], perWin: number, hostHessian: boolean, deviceHessian = false):
    Promise<{ weights: Map<string, HostWeight>; stats: Map<string, SiteStats>; hessians: Map<string, DeviceHessian> }> {
    const { be, src, ctx } = this, c = src.config;
    const weights = new Map<string, HostWeight>();
    let t = performance.now();
    for (const n of ['attn_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w_gate', 'w_up', 'w_down']) weights.set(`l${l}.${n}`, src.weight(`l${l}.${n}`));
    this.seconds.read += (performance.now() - t) / 1000;
    t = performance.now();
    const up = new Map<string, Weight>([...weights].map(([n, w]) => [n, be.uploadWeight(w)]));
    const g = (n: string) => up.get(`l${l}.${n}`)!;
    const L: LayerWeights = {
      attnNorm: g('attn_norm'), wq: g('wq'), wk: g('wk'), wv: g('wv'), wo: g('wo'),
      ffnNorm: g('ffn_norm'), wGate: g('w_gate'), wUp: g('w_up'), wDown: g('w_down'),
    };
    const stats = new Map(ss.map((s) => [s.name, newSiteStats(s.K, this.windows * perWin, hostHessian)]));
    const hessians = new Map<string, DeviceHessian>(deviceHessian ? ss.map((s) => [s.name, be.gptq!.hessian(s.K)]) : []);
    const byTap = new Map(ss.map((s) => [s.tap, s.name]));
    const cache = be.createKVCache({ nLayers: 1, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: 16, numPages: Math.ceil(ctx / 16), dtype: 'f32', group: c.headDim });
    try {
      for (let w = 0; w < this.windows; w++) {
        const seen = new Map<string, Tensor>();
        const graph = new Graph(be, (name, t) => { if (byTap.has(name)) seen.set(byTap.get(name)!, t); });
        const x = be.fromHost(this.x[w], [ctx, c.dim]);
        const res = graph.residual(x);
        decoderLayer(graph, c, ropeSpec(c), l, L, res, this.layout, cache, 0);
        const y = res.value();
        for (const [site, t] of seen) {
          accumulate(stats.get(site)!, await be.read(t), ctx, perWin);
          hessians.get(site)?.add(t);
        }
        this.x[w] = await be.read(y);
        be.endStep();
        be.release?.(x);
      }
    } catch (e) {
      for (const h of hessians.values()) h.free();
      throw e;
    } finally {
      for (const w of up.values()) be.release?.(w);
      be.release?.(cache);
    }
    this.seconds.calibrate += (performance.now() - t) / 1000;
    for (const [name, s] of stats) if (s.count === 0) throw new CometError(`calibrate: site ${name} was never seen`);
    return { weights, stats, hessians };
  }
}
