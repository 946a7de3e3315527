// The layer-by-layer quantizer (src/quant/layered.ts) and the streaming .comet writer: the same bytes as the
// whole-model path (calibrate + quantizeModel + writeComet) on the simulator, host memory near one layer,
// bad checkpoints refused before any backend is created; GPTQ's device kernels (Backend.gptq: CUDA) equal to
// src/quant/gptq.ts bit for bit on small layers, on the backends the run asks for (COMET_TEST_CUDA=1).
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, DeviceHessian, GptqOps } from '../backends/backend.ts';
import { SimBackend, SimTensor } from '../backends/sim/sim.ts';
import { actSpec } from '../simulator/act.ts';
import type { ActQuantSpec } from '../simulator/formats.ts';
import { ropeFreqs, type RopeScaling } from '../simulator/kernels/float.ts';
import { CometError } from '../src/errors.ts';
import { loadModel } from '../src/loaders/index.ts';
import { openHF } from '../src/loaders/hf.ts';
import { tokenizerFiles, writeComet } from '../src/loaders/comet.ts';
import { loadTokenizer } from '../src/tokenizer/index.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { Llama } from '../src/model/llama.ts';
import { accumulate, calibrate, newSiteStats } from '../src/quant/calibrate.ts';
import { GPTQ_DAMP, gptqW4, invCholUpper, permutedHessian } from '../src/quant/gptq.ts';
import { quantizeLayered, type LayeredProgress } from '../src/quant/layered.ts';
import { quantizeModel, type QuantizeOptions } from '../src/quant/quantize.ts';
import { quantize } from '../src/cli/quantize.ts';
import { eachBackend } from './helpers/backends.ts';
import { expectCometError } from './helpers/errors.ts';
import { shared } from './helpers/shared.ts';
import { syntheticWeights, writeSyntheticHF } from '../testing/synthetic.ts';
import { rng } from '../testing/rng.ts';

const S260K = shared('hf', 'stories260K');
const WL = shared('wikillama-28M');
const TEXT = shared('texts', 'tinystories_valid_head.txt');
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

let tmp: string;
beforeAll(() => { tmp = mkdtempSync(join(tmpdir(), 'comet-layered-')); });
afterAll(() => rmSync(tmp, { recursive: true, force: true }));


describe('layer by layer = whole model (simulator, stories260K)', async () => {
  const lm = await loadModel(S260K);
  const tok = await loadTokenizer(lm.tokenizerPath!);
  const all = tok.encode(readFileSync(TEXT, 'utf8').slice(-4000), { bos: false }); // the text's tail: 128 tokens are needed
  const tokens = all.slice(all.length - 128), ctx = 64;
  const tokenizer = tokenizerFiles(lm.tokenizerPath!, (p) => readFileSync(p));
  const cases: Array<[string, Omit<QuantizeOptions, 'B' | 'order' | 'kv'>]> = [
    ['RTN, 15% INT8 MACs (global budget: two passes)', { weights: 'rtn', int8Fraction: 0.15 }],
    ['GPTQ + SmoothQuant, 15% INT8 MACs', { weights: 'gptq', int8Fraction: 0.15, smooth: 0.5 }],
    ['GPTQ, 1 INT8 block per site (one pass)', { weights: 'gptq', int8Blocks: 1 }],
  ];
  it.each(cases)('%s: the same .comet bytes', async (_, c) => {
    const o: QuantizeOptions = { B: 32, order: 'absmax', kv: 'kv4', ...c };
    const stats = await calibrate(new Llama(new SimBackend(), lm.config, lm.weights), tokens, { ctx, hessian: c.weights === 'gptq' });
    const r = quantizeModel(lm.config, lm.weights, stats, o);
    writeComet(join(tmp, 'whole.comet'), { config: lm.config, weights: r.weights, quant: r.meta, weightError: r.weightError, tokenizer });
    const src = openHF(S260K);
    const seen: LayeredProgress[] = [];
    const l = await quantizeLayered(src, new SimBackend(), tokens, join(tmp, 'layered.comet'), { ...o, ctx, tokenizer, onProgress: (p) => seen.push(p) });
    src.close();
    expect(l.passes).toBe(c.int8Fraction ? 2 : 1);
    expect(l.plan.int8MacFraction).toBe(r.plan.int8MacFraction);
    expect(sha(join(tmp, 'layered.comet'))).toBe(sha(join(tmp, 'whole.comet')));
    // progress: layers in order, tensors and bytes growing to the file's totals
    const last = seen.at(-1)!, q = seen.filter((p) => p.pass === 'quantize');
    expect(last).toMatchObject({ pass: 'quantize', layer: lm.config.nLayers, layers: lm.config.nLayers });
    expect(last.tensors).toBe(last.totalTensors);
    expect(last.bytes).toBe(last.totalBytes);
    expect(q.every((p, i) => i === 0 || (p.bytes >= q[i - 1].bytes && p.layer >= q[i - 1].layer))).toBe(true);
    expect(seen.filter((p) => p.pass === 'statistics').length).toBe(c.int8Fraction ? lm.config.nLayers : 0);
  });
});

describe('host memory stays near one layer', () => {
  // 16 layers of 3 MB (f32) read from bf16 shards: after each layer (and a forced GC, so that what is measured
  // is what the quantizer keeps, not garbage V8 has not collected yet) the live ArrayBuffer bytes must not grow
  // with depth: whatever layer l needed is released before layer l+1 (the whole-model path keeps all 16).
  // The peak within a layer is about 3 layers (float weights, their folded copies, codes); `comet quantize`
  // reports the process's peak RSS in its summary (bench/results/quant-layered-*.json).
  const c: LlamaConfig = { dim: 256, hiddenDim: 768, nLayers: 16, nHeads: 4, nKvHeads: 2, headDim: 64, vocabSize: 512, seqLen: 256, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2] };
  const layerBytes = 4 * (c.dim * (c.nHeads + 2 * c.nKvHeads) * c.headDim + c.dim * c.nHeads * c.headDim + 3 * c.dim * c.hiddenDim + 2 * c.dim);
  it(`live host memory after layer l does not grow with l (layer ${(layerBytes / 2 ** 20).toFixed(1)} MB, model ${(c.nLayers * layerBytes / 2 ** 20).toFixed(0)} MB)`, async () => {
    const dir = join(tmp, 'deep');
    writeSyntheticHF(dir, c, syntheticWeights(c, 5), { dtype: 'BF16', shards: 3 });
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const live: number[] = [];
    gc(); gc();
    const before = process.memoryUsage().arrayBuffers;
    const src = openHF(dir);
    const tokens = Array.from({ length: 64 }, (_, i) => (i * 37) % c.vocabSize);
    await quantizeLayered(src, new SimBackend(), tokens, join(tmp, 'deep.comet'), {
      B: 128, order: 'absmax', int8Blocks: 1, weights: 'rtn', clipSearch: false, weightError: false, kv: 'kv4', ctx: 32,
      tokenizer: tokenizerFiles(join(S260K, 'tokenizer.json'), (p) => readFileSync(p)),
      onProgress: (p) => { if (p.pass === 'quantize' && p.layer > 0) { gc(); gc(); live.push(process.memoryUsage().arrayBuffers); } },
    });
    src.close();
    const MB = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(`live ArrayBuffers after layers 1..${c.nLayers}: ${MB(Math.min(...live))}..${MB(Math.max(...live))} MB (one layer ${MB(layerBytes)} MB)`);
    expect(live).toHaveLength(c.nLayers);
    expect(Math.max(...live.slice(1)) - live[0]).toBeLessThan(layerBytes);
    expect(Math.max(...live) - before).toBeLessThan(layerBytes); // what one layer leaves behind is small
    expect((await loadModel(join(tmp, 'deep.comet'))).weights.get('l15.w_down')?.kind).toBe('w4');
  });
});

describe('bad checkpoints are refused before any backend is created', () => {
  // --backend cuda on a machine without the addon: an error about the checkpoint (not about CUDA) shows the
  // checks ran first
  const c: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 16, vocabSize: 8192, seqLen: 64, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2] };
  const run = (dir: string) => quantize({ model: dir, tokenizer: join(WL, 'tokenizer.json'), calib: TEXT, out: join(tmp, 'bad.comet'), block: 32, weights: 'gptq', order: 'absmax', kv: 'kv4', calibTokens: 64, ctx: 32, json: true, backend: 'cuda' });
  const make = (name: string, opts: Parameters<typeof writeSyntheticHF>[3] = {}, cfg = c) => {
    const dir = join(tmp, name);
    writeSyntheticHF(dir, cfg, syntheticWeights(cfg, 3), { dtype: 'BF16', shards: 2, ...opts });
    return dir;
  };
  it('a shard listed in the index is missing', async () => {
    const dir = make('no-shard');
    rmSync(join(dir, 'model-00002-of-00002.safetensors'));
    await expectCometError(() => run(dir), 'model-00002-of-00002.safetensors', 'cannot open');
  });
  it('a tensor of the wrong shape', async () => {
    const dir = make('bad-shape');
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 192 }));
    await expectCometError(() => run(dir), "mlp.gate_proj.weight' has shape [128,64], config.json implies [192,64]");
  });
  it('an unsupported RoPE scaling type', async () => {
    await expectCometError(() => run(make('yarn', { config: { rope_scaling: { rope_type: 'yarn', factor: 4 } } })), 'RoPE scaling type "yarn"', 'not supported');
  });
  it('tie_word_embeddings true with an lm_head that is not the embedding', async () => {
    await expectCometError(() => run(make('tie', { config: { tie_word_embeddings: true } })), 'tie_word_embeddings is true', 'lm_head.weight differs');
  });
  it('tied with a copy of the embedding as lm_head: accepted (the check reaches the backend)', async () => {
    const w = syntheticWeights(c, 3);
    w.set('output', { ...(w.get('tok_embed') as { kind: 'f32'; name: string; shape: number[]; data: Float32Array }), name: 'output' });
    const dir = join(tmp, 'tie-copy');
    writeSyntheticHF(dir, c, w, { dtype: 'BF16', config: { tie_word_embeddings: true } });
    expect(openHF(dir).config.tiedEmbeddings).toBe(true);
  });
});

describe('--smooth with GPTQ on a device', () => {
  // A device Hessian holds the unsmoothed activations' XᵀX (backends/backend.ts DeviceHessian); with SmoothQuant the
  // factor divides it by s·sᵀ, as the host's statistics are (smooth.ts scaleStats). A backend whose GptqOps run
  // gptq.ts on the host (a device that computes exactly what the contract says) must give the simulator's bytes.
  class HostGptq extends SimBackend {
    readonly gptq: GptqOps = {
      hessian: (K: number): DeviceHessian => {
        const st = newSiteStats(K, 0, true);
        return {
          K, add: (x) => accumulate(st, (x as SimTensor).data, (x as SimTensor).data.length / K, 0), read: async () => st.H!, free: () => {},
          factor: (perm, Kp, damp, s) => {
            const H = s ? st.H!.map((v, i) => v / (s[Math.floor(i / K)] * s[i % K])) : st.H!;
            const U = invCholUpper(permutedHessian(H, { K, Kp, perm } as ActQuantSpec, damp), Kp);
            return {
              Kp, read: async () => U, free: () => {},
              quantize: (w, N, spec, grid) => {
                const q = gptqW4(w, N, spec, U, { grid }), codes = new Int8Array(N * Kp);
                for (let i = 0; i < codes.length; i++) codes[i] = ((q.codes[i >> 1] >> (4 * (i & 1))) << 28) >> 28;
                return { codes, scales: q.scales };
              },
            };
          },
        };
      },
    };
  }
  it('the device factor gets each site\'s smoothing scales: the same bytes as GPTQ on the host', async () => {
    const lm = await loadModel(S260K);
    const tok = await loadTokenizer(lm.tokenizerPath!);
    const all = tok.encode(readFileSync(TEXT, 'utf8').slice(-4000), { bos: false }), tokens = all.slice(all.length - 128);
    const o = { B: 32, order: 'absmax' as const, kv: 'kv4' as const, weights: 'gptq' as const, int8Blocks: 1, smooth: 0.5, ctx: 64, tokenizer: tokenizerFiles(lm.tokenizerPath!, (p) => readFileSync(p)) };
    const be = new HostGptq();
    let factors = 0;
    const h0 = be.gptq.hessian;
    (be.gptq as { hessian: GptqOps['hessian'] }).hessian = (K) => { const h = h0(K), f0 = h.factor; return { ...h, factor: (...a) => { factors++; return f0(...a); } }; };
    for (const [b, out] of [[new SimBackend(), 'host.comet'], [be, 'device.comet']] as const) {
      const src = openHF(S260K);
      await quantizeLayered(src, b, tokens, join(tmp, out), o);
      src.close();
    }
    expect(factors, 'the device path was taken').toBeGreaterThan(0);
    expect(sha(join(tmp, 'device.comet'))).toBe(sha(join(tmp, 'host.comet')));
  });
});

describe('Llama-3.1 RoPE scaling (rope_type llama3)', () => {
  const scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
  it('is read from config.json, kept in the .comet and applied to the rotary frequencies', async () => {
    const c: LlamaConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 2, nKvHeads: 1, headDim: 32, vocabSize: 512, seqLen: 256, normEps: 1e-5, ropeTheta: 500000, tiedEmbeddings: true, bos: 1, eos: [2] };
    const dir = join(tmp, 'l31');
    writeSyntheticHF(dir, c, syntheticWeights(c, 9), { dtype: 'BF16', config: { rope_scaling: scaling } });
    const want = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 };
    expect(openHF(dir).config.ropeScaling).toEqual(want);
    writeFileSync(join(tmp, 'calib.txt'), readFileSync(TEXT, 'utf8').slice(0, 2000)); // tokenizing all of TEXT takes longer than the rest
    await quantize({ model: dir, tokenizer: join(S260K, 'tokenizer.json'), calib: join(tmp, 'calib.txt'), out: join(tmp, 'l31.comet'), block: 32, weights: 'rtn', order: 'absmax', kv: 'kv4', calibTokens: 64, ctx: 32, json: true });
    expect((await loadModel(join(tmp, 'l31.comet'))).config.ropeScaling).toEqual(want);
    // high-frequency pairs (wavelength < 64/4) keep theta^(-2i/hd), low-frequency ones (> 64/1) are divided by 8,
    // those between are a blend, so strictly between the two
    const base = ropeFreqs(32, 500000), f = ropeFreqs(32, 500000, want as RopeScaling);
    let kept = 0, divided = 0, blended = 0;
    for (let i = 0; i < 16; i++) {
      const wl = (2 * Math.PI) / base[i];
      if (wl < 16) { expect(f[i]).toBe(base[i]); kept++; }
      else if (wl > 64) { expect(f[i]).toBe(Math.fround(base[i] / 8)); divided++; }
      else { expect(f[i]).toBeLessThan(base[i]); expect(f[i]).toBeGreaterThan(base[i] / 8); blended++; }
    }
    expect(kept * divided * blended).toBeGreaterThan(0);
  });
});

// Only the CUDA backend has device GPTQ ops (cuda/quant_gptq.cu); on the others the quantizer runs gptq.ts on
// the host, so there is nothing to compare.
eachBackend('GPTQ on the device = gptq.ts', ({ create }) => {
  let be: Backend;
  beforeAll(async () => { be = await create(); });
  afterAll(() => be?.dispose());
  const rnd = rng(11);
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  // activations with a few outlier channels, as real ones (DESIGN §8)
  const acts = (T: number, K: number) => Float32Array.from({ length: T * K }, (_, i) => gauss() * (i % K < 3 ? 20 : 1));
  it.each([[96, 40, 32], [200, 64, 64], [300, 130, 128], [520, 90, 64], [330, 50, 32]])('K %i, T %i, B %i: Hessian, U, codes and scales bit-equal', async (K, T, B) => {
    const g = be.gptq!;
    expect(g, 'backend has GPTQ ops').toBeDefined();
    const x1 = acts(T, K), x2 = acts(T + 1, K);
    const st = newSiteStats(K, 0, true);
    accumulate(st, x1, T, 0);
    accumulate(st, x2, T + 1, 0);
    const h = g.hessian(K);
    h.add(be.fromHost(x1, [T, K]));
    h.add(be.fromHost(x2, [T + 1, K]));
    const H = await h.read();
    expect(Buffer.from(H.buffer).equals(Buffer.from(st.H!.buffer))).toBe(true);
    const perm = Int32Array.from({ length: K }, (_, i) => i).sort((a, b) => ((a * 7919) % K) - ((b * 7919) % K));
    const spec = actSpec(K, B, B, perm);
    const U = invCholUpper(permutedHessian(st.H!, spec, GPTQ_DAMP), spec.Kp);
    const f = h.factor(perm, spec.Kp, GPTQ_DAMP);
    expect(Buffer.from((await f.read()).buffer).equals(Buffer.from(U.buffer))).toBe(true);
    // with SmoothQuant's scales (the device Hessian is of the unsmoothed x; the host divides its copy by s·sᵀ)
    const s = Float64Array.from({ length: K }, (_, i) => 0.5 + ((i * 37) % 11) / 7);
    const Hs = st.H!.map((v, idx) => v / (s[Math.floor(idx / K)] * s[idx % K]));
    const fs = h.factor(perm, spec.Kp, GPTQ_DAMP, s);
    expect(Buffer.from((await fs.read()).buffer).equals(Buffer.from(invCholUpper(permutedHessian(Hs, spec, GPTQ_DAMP), spec.Kp).buffer))).toBe(true);
    fs.free();
    // 70 rows: two row tiles of the device's trailing update, the second partial
    const N = 70, w = Float32Array.from({ length: N * K }, () => gauss() * 0.05);
    const want = gptqW4(w, N, spec, U);
    const got = f.quantize(w, N, spec, 20);
    const codes = new Int8Array(N * spec.Kp);
    for (let i = 0; i < codes.length; i++) codes[i] = ((want.codes[i >> 1] >> (4 * (i & 1))) << 28) >> 28;
    expect(Buffer.from(got.codes.buffer).equals(Buffer.from(codes.buffer))).toBe(true);
    expect(Buffer.from(got.scales.buffer).equals(Buffer.from(want.scales.buffer))).toBe(true);
    f.free();
    h.free();
  });
}, (c) => c.name === 'cuda');
