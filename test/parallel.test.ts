// Tensor parallelism on the simulator (src/parallel, README there): the sharding plan's errors, the sharded forward
// at TP = 2 and 4 against the unsharded model (bit for bit against the unsharded model summed in the ranks' block
// ranges; greedy tokens and a measured logit bound against the plain unsharded run), the rank-order reduction,
// the engine and server on a sharded model, and two replicas on loopback behind a round-robin client.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { SimBackend } from '../backends/sim/sim.ts';
import type { Backend, HostWeight } from '../backends/backend.ts';
import { loadModel } from '../src/loaders/index.ts';
import { Llama } from '../src/model/llama.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { singleSequenceCache } from '../src/engine/generate.ts';
import { createEngine } from '../src/engine/engine.ts';
import { startServer, type RunningServer } from '../src/server/server.ts';
import { openModel } from '../src/runtime/open.ts';
import { CometError } from '../src/errors.ts';
import { referenceSchedule, shardModel } from '../src/parallel/shard.ts';
import { ShardedLlama } from '../src/parallel/sharded.ts';
import { OrderedSum } from '../src/parallel/collective.ts';
import { openSharded } from '../src/parallel/open.ts';
import { syntheticQuantizedModel } from '../testing/synthetic-quantized.ts';

const COMET = fileURLToPath(new URL('../models/stories260K.comet', import.meta.url));
const comet = await loadModel(COMET);

/** Prefill `prompt`, then `steps` greedy decode steps; the logits of every step and the tokens. */
async function greedy(model: Llama | ShardedLlama, prompt: number[], steps: number): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const m = model as Llama, { cache, blockTable } = singleSequenceCache(m, prompt.length + steps + 1);
  const tokens: number[] = [], logits: Float32Array[] = [];
  let feed = Int32Array.from(prompt), pos = 0;
  for (let s = 0; s <= steps; s++) {
    const T = feed.length, layout = { pos: Int32Array.from({ length: T }, (_, i) => pos + i), seq: new Int32Array(T), blockTables: [blockTable] };
    const lg = await m.be.read(m.forward(feed, layout, cache, Int32Array.of(T - 1)));
    m.be.endStep();
    logits.push(lg.slice());
    const next = lg.indexOf(Math.max(...lg));
    tokens.push(next);
    pos += T;
    feed = Int32Array.of(next);
  }
  return { tokens, logits };
}

const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const PROMPT = [1, 403, 407, 261, 378, 285, 63, 261]; // BOS + a few story tokens

function sharded(c: LlamaConfig, w: Map<string, HostWeight>, n: number, kv: 'f32' | 'kv4', bes?: Backend[], slices?: number) {
  const plan = shardModel(c, w, n, { slices });
  return { plan, model: new ShardedLlama(plan, bes ?? Array.from({ length: n }, () => new SimBackend()), kv) };
}

describe('sharding plan', () => {
  it('refuses rank counts that do not divide heads, KV heads or FMPQ blocks, saying which', () => {
    const c = comet.config; // 8 heads, 4 KV heads; o_proj: 2 blocks of 32, down_proj: 192 = 6 blocks (K = 172)
    expect(() => shardModel(c, comet.weights, 3)).toThrow(/3 ranks do not divide the 8 query heads/);
    expect(() => shardModel({ ...c, nKvHeads: 2 }, comet.weights, 4)).toThrow(/4 ranks do not divide the 2 KV heads/);
    expect(() => shardModel(c, comet.weights, 4)).toThrow(/layer 0 o_proj \(l0\.wo\): its input has 2 FMPQ blocks of 32 channels \(K = 64\), which 4 ranks cannot split/);
    expect(() => shardModel(c, comet.weights, 0)).toThrow(CometError);
    const noDown = new Map(comet.weights);
    noDown.delete('l2.w_down');
    expect(() => shardModel(c, noDown, 2)).toThrow(/weight 'l2.w_down' is missing/);
  });

  it('keeps blocks whole: a w4 shard holds the unsharded codes and scales of its block range, INT8 blocks included', () => {
    const plan = shardModel(comet.config, comet.weights, 2), wd = comet.weights.get('l0.w_down')!;
    if (wd.kind !== 'w4') throw new Error('expected w4');
    const [s0, s1] = plan.ranks.map((r) => r.weights.get('l0.w_down')!);
    if (s0.kind !== 'w4' || s1.kind !== 'w4') throw new Error('expected w4 shards');
    // K = 172 padded to 192, K8 = 96: rank 0 gets the 3 INT8 blocks, rank 1 the INT4 ones and the padding
    expect([s0.act.K, s0.act.Kp, s0.act.K8, s1.act.K, s1.act.Kp, s1.act.K8]).toEqual([96, 96, wd.act.K8, 76, 96, 0]);
    expect(Array.from(s1.codes.subarray(0, 48))).toEqual(Array.from(wd.codes.subarray(48, 96)));
    expect(Array.from(s1.scales.subarray(0, 3))).toEqual(Array.from(wd.scales.subarray(3, 6)));
    // gate/up rows are the hidden channels each down shard reads (down's permutation is folded: identity)
    expect(plan.ranks[1].weights.get('l0.w_gate')!.kind === 'w4' && (plan.ranks[1].weights.get('l0.w_gate') as { N: number }).N).toBe(76);
    // o_in's absmax permutation mixes heads: the plan says an all-gather of the attention output is needed
    expect(plan.oGather.every(Boolean)).toBe(true);
  });
});

describe('sharded forward on the simulator', () => {
  it('the reduction is in rank order whatever order the ranks finish (and that order matters)', () => {
    const parts = [1e8, 1, -1e8, 1].map((v, r) => Float32Array.of(v, 0.1 * (r + 1), -3.5e-4 * r, 65504 * (r % 2 ? 1 : -1)));
    const orders = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
    for (const f16 of [false, true]) {
      const results = orders.map((o) => {
        const s = new OrderedSum(4, 4);
        for (const r of o) s.put(r, parts[r]);
        return s.result(f16);
      });
      for (const r of results) expect(sameBits(r, results[0])).toBe(true);
    }
    // summing in arrival order would not be deterministic for these partials: f32 addition is not associative
    const arrival = orders.map((o) => o.reduce((acc, r) => Math.fround(acc + parts[r][0]), 0));
    expect(new Set(arrival).size).toBeGreaterThan(1);
    const s = new OrderedSum(2, 4);
    s.put(1, parts[1]);
    expect(() => s.result(false)).toThrow(/1 of 2 ranks have not put/);
    expect(() => s.put(1, parts[1])).toThrow(/put its partial twice/);
  });

  it('TP = 2 on stories260K.comet (W4A4KV4): bit for bit the unsharded model summed in the ranks\' block ranges; same greedy tokens as the plain run', async () => {
    const { plan, model } = sharded(comet.config, comet.weights, 2, 'kv4');
    const ref = new Llama(new SimBackend({ gemmSchedule: referenceSchedule(plan) }), comet.config, comet.weights, 'kv4');
    const plain = new Llama(new SimBackend(), comet.config, comet.weights, 'kv4');
    const [tp, r, p] = await Promise.all([greedy(model, PROMPT, 12), greedy(ref, PROMPT, 12), greedy(plain, PROMPT, 12)]);
    tp.logits.forEach((l, i) => expect(sameBits(l, r.logits[i])).toBe(true));
    expect(tp.tokens).toEqual(r.tokens);
    expect(tp.tokens).toEqual(p.tokens);
    // against the plain (one-range) sum, o/down outputs differ by an f16 ulp where the two orders round apart, so
    // the logits differ a little (measured 2026-12-02: max |Δ| 4.5e-4 of logits up to 20, 41 steps), tokens not
    expect(tp.logits.some((l, i) => !sameBits(l, p.logits[i]))).toBe(true);
    expect(Math.max(...tp.logits.map((l, i) => maxAbsDiff(l, p.logits[i])))).toBeLessThan(0.02);
  });

  it('TP = 2 and 4 on a synthetic W4A4KV4 model (w_down: 7 blocks, split 3 + 4 and 1 + 2 + 2 + 2): bit for bit the reference schedule; one backend may run every rank', async () => {
    const c: LlamaConfig = { dim: 128, hiddenDim: 224, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 96, seqLen: 64, headDim: 16, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2] };
    const { weights } = syntheticQuantizedModel(c, { block: 32, int8Fraction: 0.25, clipSearch: false });
    const plain = await greedy(new Llama(new SimBackend(), c, weights, 'kv4'), [1, 5, 9, 33, 70], 6);
    for (const n of [2, 4]) {
      const one = new SimBackend();
      const { plan, model } = sharded(c, weights, n, 'kv4', Array.from({ length: n }, () => one));
      expect(plan.ranks.map((r) => (r.weights.get('l0.w_down') as { act: { Kp: number } }).act.Kp / 32)).toEqual(n === 2 ? [3, 4] : [1, 2, 2, 2]);
      const [tp, ref] = await Promise.all([greedy(model, [1, 5, 9, 33, 70], 6), greedy(new Llama(new SimBackend({ gemmSchedule: referenceSchedule(plan) }), c, weights, 'kv4'), [1, 5, 9, 33, 70], 6)]);
      tp.logits.forEach((l, i) => expect(sameBits(l, ref.logits[i]), `TP ${n} step ${i}`).toBe(true));
      expect(tp.tokens, `TP ${n}`).toEqual(plain.tokens);
      expect(Math.max(...tp.logits.map((l, i) => maxAbsDiff(l, plain.logits[i]))), `TP ${n}`).toBeLessThan(1e-3); // measured 7.2e-5 at TP 2 and 4 (31 steps, logits up to 3.3)
    }
  });

  it('with a fixed number of k-slices, TP = 1, 2 and 4 give the same bits', async () => {
    const c: LlamaConfig = { dim: 128, hiddenDim: 320, nLayers: 1, nHeads: 8, nKvHeads: 4, vocabSize: 64, seqLen: 32, headDim: 16, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: true, bos: 1, eos: [2] };
    const { weights } = syntheticQuantizedModel(c, { block: 32, int8Fraction: 0.25, clipSearch: false });
    const prompt = [1, 7, 30, 12, 50, 3];
    const runs = await Promise.all([1, 2, 4].map((n) => {
      const plan = shardModel(c, weights, n, { slices: 4 });
      // w_down: 10 blocks of 32 in 4 slices [0,2) [2,5) [5,7) [7,10), whichever rank holds them
      expect(plan.rowParallel.get((weights.get('l0.w_down') as { act: import('../backends/backend.ts').ActQuantSpec }).act)).toEqual([[0, 2], [2, 5], [5, 7], [7, 10]]);
      return greedy(n === 1 ? new Llama(new SimBackend({ gemmSchedule: referenceSchedule(plan) }), c, weights, 'kv4') : sharded(c, weights, n, 'kv4', undefined, 4).model, prompt, 5);
    }));
    for (const r of runs.slice(1)) r.logits.forEach((l, i) => expect(sameBits(l, runs[0].logits[i])).toBe(true));
    expect(() => shardModel(c, weights, 4, { slices: 6 })).toThrow(/6 k-slices do not split evenly over 4 ranks/);
    expect(() => shardModel(c, weights, 2, { slices: 8 })).toThrow(/layer 0 o_proj \(l0\.wo\): its input has 4 FMPQ blocks of 32 channels \(K = 128\), which 2 ranks in 8 slices cannot split evenly/);
  });

  it('TP = 2 and 4 on the float stories260K: same greedy tokens, logits within f32 rounding of the unsharded run', async () => {
    const f = await loadModel(fileURLToPath(new URL('../models/stories260K.bin', import.meta.url)));
    const plain = await greedy(new Llama(new SimBackend(), f.config, f.weights), PROMPT, 10);
    for (const n of [2, 4]) {
      const tp = await greedy(sharded(f.config, f.weights, n, 'f32').model, PROMPT, 10);
      expect(tp.tokens, `TP ${n}`).toEqual(plain.tokens);
      const rel = Math.max(...tp.logits.map((l, i) => maxAbsDiff(l, plain.logits[i]) / Math.max(...plain.logits[i].map(Math.abs))));
      expect(rel, `TP ${n}`).toBeLessThan(1e-5); // measured 3.6e-6, 4.4e-6 absolute of logits up to 22
    }
  });

  it('refuses a backend without the sharded path, and a cache that is not the sharded model\'s', () => {
    const plan = shardModel(comet.config, comet.weights, 2);
    const fake = Object.assign(Object.create(new SimBackend()), { name: 'cuda' }) as Backend;
    expect(() => new ShardedLlama(plan, [fake, fake], 'kv4')).toThrow(/not supported on the cuda backend yet/);
    const { model } = sharded(comet.config, comet.weights, 2, 'kv4');
    const cache = new SimBackend().createKVCache({ nLayers: 5, nKvHeads: 4, headDim: 8, pageSize: 16, numPages: 1, dtype: 'kv4', group: 8 });
    expect(() => model.forward(Int32Array.of(1), { pos: Int32Array.of(0), seq: Int32Array.of(0), blockTables: [Int32Array.of(0)] }, cache, Int32Array.of(0))).toThrow(/sharded model/);
  });
});

describe('serving', () => {
  it('the engine on a TP = 2 model gives the unsharded engine\'s greedy completions, three requests at once', async () => {
    const tp = await createEngine(await openSharded(2, 'sim', COMET), { maxBatch: 4 });
    const one = await createEngine(await openModel(new SimBackend(), COMET), { maxBatch: 4 });
    // three requests at once: one batch of three sequences, prefills beside decodes, through the ranks' caches
    const asks = ['Once upon a time', 'The little dog', 'Lily and Tom went to'].map((prompt) => ({ prompt, max_tokens: 16, temperature: 0 }));
    const [a, b] = await Promise.all([tp, one].map((e) => Promise.all(asks.map((q) => e.completions.create(q)))));
    expect(a.every((r) => r.choices[0].text.length > 0)).toBe(true);
    expect(a.map((r) => r.choices[0].text)).toEqual(b.map((r) => r.choices[0].text));
    tp.close();
    one.close();
    await expect(openSharded(2, 'cuda', COMET)).rejects.toThrow(/not supported on the cuda backend yet/);
  });

  it('comet serve --tensor-parallel 2 on a backend without the sharded path exits with the reason', () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../bin/comet.js', import.meta.url)), 'serve', '--tensor-parallel', '2', '--backend', 'cuda', '--port', '0'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--tensor-parallel 2: tensor parallelism is not supported on the cuda backend yet/);
  });

  it('two replicas on loopback: a round-robin client gets completions from both, /health answers on both', async () => {
    const servers: RunningServer[] = [];
    try {
      for (let i = 0; i < 2; i++) servers.push(await startServer(await createEngine(undefined, { maxBatch: 2 }), { port: 0 }));
      expect(servers[0].port).not.toBe(servers[1].port);
      for (const s of servers) {
        const h = await (await fetch(`${s.url}/health`)).json();
        expect(h.status).toBe('ok');
      }
      const texts: string[] = [];
      for (let i = 0; i < 4; i++) { // round robin: request i goes to replica i % 2
        const res = await fetch(`${servers[i % 2].url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8, temperature: 0 }) });
        expect(res.status).toBe(200);
        const body = await res.json();
        expect(body.object).toBe('text_completion');
        texts.push(body.choices[0].text);
      }
      expect(texts[0].length).toBeGreaterThan(0);
      expect(new Set(texts).size).toBe(1); // stateless replicas of one model: the same greedy answer from both
    } finally {
      await Promise.all(servers.map((s) => s.close()));
    }
  });
});
