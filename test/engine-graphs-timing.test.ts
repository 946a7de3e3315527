// Timing of the engine's decode step with CUDA graphs on and off (COMET_TEST_CUDA=1 only), on a synthetic W4A4KV4
// model of LLaMA-3-8B's layer shape (dim 4096, hidden 14336, 32 heads, 8 KV heads, head_dim 128; COMET_TEST_GRAPHS_LAYERS
// layers, default 32) with the embedded tokenizer's 512-token vocabulary (so the classifier is tiny and the step is
// the layers' ~11 launches each). Random W4 codes and f16 scales (the kernels' speed does not depend on values).
// B requests of a 150-token prompt decode 48 tokens each through the whole engine (scheduler, sampling on the
// device, text out); the decode-only steps are timed on the host, the first three of each run left out (the
// eager warm-up and the capture). Also checks that the tokens with graphs equal those without.
// Prints a table, and writes it to $OUT/engine-graphs-timing.json when OUT is set.
import { afterAll, describe, expect, it } from 'vitest';
import { eachBackend } from './helpers/backends.ts';
import { writeFileSync } from 'node:fs';
import type { Backend, HostWeight } from '../backends/backend.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { createEngine } from '../src/engine/engine.ts';
import { Llama } from '../src/model/llama.ts';
import { weightNames, weightShape, type LlamaConfig } from '../src/model/config.ts';
import { openModel, type OpenModel } from '../src/runtime/open.ts';


/** Host weights of `c`: every linear W4 (B = 128, a quarter of the blocks INT8, identity permutation) with random
 *  codes and scales ~ 1/(4.6·sqrt(K)) (unit-variance rows); norms 1; embedding and classifier f32. One set of
 *  arrays shared by every layer. */
export function randomW4(c: LlamaConfig): Map<string, HostWeight> {
  let s = 0x9e3779b9;
  const next = () => ((s ^= s << 13), (s ^= s >>> 17), (s ^= s << 5), s >>> 0);
  const f16 = (x: number) => { // positive normal f16 bits
    const e = Math.floor(Math.log2(x));
    return ((e + 15) << 10) | Math.round((x / 2 ** e - 1) * 1024);
  };
  const shared = new Map<string, HostWeight>();
  const out = new Map<string, HostWeight>();
  for (const name of weightNames(c)) {
    const base = name.replace(/^l\d+\./, ''), shape = weightShape(c, name);
    let w = shared.get(base);
    if (!w) {
      if (/^(wq|wk|wv|wo|w_gate|w_up|w_down)$/.test(base)) {
        const [N, K] = shape, B = 128, Kp = Math.ceil(K / B) * B, K8 = Math.floor(Kp / B / 4) * B;
        const codes = new Uint8Array((N * Kp) / 2);
        for (let i = 0; i < codes.length; i++) codes[i] = next() & 255;
        const scales = new Uint16Array((N * Kp) / B).fill(f16(1 / (4.6 * Math.sqrt(K))));
        w = { kind: 'w4', name, N, codes, scales, act: { K, B, Kp, K8 } };
      } else {
        const n = shape.reduce((a, b) => a * b, 1);
        const data = new Float32Array(n);
        if (shape.length === 1) data.fill(1);
        else for (let i = 0; i < n; i++) data[i] = ((next() / 2 ** 32) * 2 - 1) * 0.05;
        w = { kind: 'f32', name, shape, data };
      }
      shared.set(base, w);
    }
    out.set(name, { ...w, name });
  }
  return out;
}

const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];

eachBackend('decode graphs: timing', ({ create }) => {
  let be: Backend | undefined;
  afterAll(() => be?.dispose());

  it('decode step, graphs on and off, batch 1 and 16 (tokens equal)', async () => {
    be = await create();
    const base = await openModel(new SimBackend());
    const nLayers = Number(process.env.COMET_TEST_GRAPHS_LAYERS ?? 32);
    const c: LlamaConfig = { dim: 4096, hiddenDim: 14336, nLayers, nHeads: 32, nKvHeads: 8, headDim: 128, vocabSize: base.loaded.config.vocabSize, seqLen: 2048, normEps: 1e-5, ropeTheta: 500000, tiedEmbeddings: false, bos: 1, eos: [2] };
    const t0 = performance.now();
    const m: OpenModel = { ...base, model: new Llama(be, c, randomW4(c), 'kv4'), stop: [] };
    console.log(`model: ${nLayers} layers of LLaMA-3-8B shape, vocab ${c.vocabSize}, made and uploaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const rows: { batch: number; graphs: boolean; step_ms: number; p10: number; p90: number; tok_s: number; first_ms: number[]; steps: number; stats?: unknown }[] = [];
    for (const B of [1, 16]) {
      const texts: string[][] = [];
      for (const graphs of [0, 16]) {
        const e = await createEngine(m, { maxBatch: 16, pageSize: 16, graphs });
        const step = e.scheduler.step.bind(e.scheduler), times: number[] = [];
        e.scheduler.step = async () => {
          const sc = e.scheduler; // a decode-only step of all B: every running sequence has one token pending
          const decode = sc.waiting.length === 0 && sc.running.length === B && sc.running.every((q) => q.computed === q.tokens.length - 1);
          const t = performance.now(), r = await step();
          if (decode) times.push(performance.now() - t);
          return r;
        };
        const got = await Promise.all(Array.from({ length: B }, (_, i) =>
          e.completions.create({ prompt: Array.from({ length: 150 }, (_, j) => 3 + ((i * 31 + j * 7) % 500)), max_tokens: 48, temperature: 0 })));
        texts.push(got.map((r) => r.choices[0].text));
        const steady = times.slice(3), sorted = [...steady].sort((a, b) => a - b);
        const ms = median(steady);
        rows.push({ batch: B, graphs: graphs > 0, step_ms: ms, p10: sorted[Math.floor(sorted.length / 10)], p90: sorted[Math.floor((sorted.length * 9) / 10)], tok_s: (B / ms) * 1e3, first_ms: times.slice(0, 3), steps: steady.length, stats: e.stats().graphs });
        e.close();
      }
      expect(texts[1], `batch ${B}: tokens with graphs equal those without`).toEqual(texts[0]);
    }
    const table = ['| batch | graphs | decode step ms (median) | p10 | p90 | tok/s | first 3 steps ms | steps timed |', '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...rows.map((r) => `| ${r.batch} | ${r.graphs ? 'on' : 'off'} | ${r.step_ms.toFixed(3)} | ${r.p10.toFixed(3)} | ${r.p90.toFixed(3)} | ${r.tok_s.toFixed(0)} | ${r.first_ms.map((x) => x.toFixed(1)).join(', ')} | ${r.steps} |`)];
    console.log(table.join('\n'));
    for (const r of rows) if (r.graphs) console.log(`batch ${r.batch} graphs: ${JSON.stringify(r.stats)}`);
    if (process.env.OUT) writeFileSync(`${process.env.OUT}/engine-graphs-timing.json`, JSON.stringify({ config: c, rows, table }, null, 1));
    for (const r of rows) if (r.graphs) expect((r.stats as { failures: number }).failures).toBe(0);
  });
}, (c) => c.name === 'cuda');
