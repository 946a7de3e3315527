// Decode steps as captured-graph replays (src/engine/graphs.ts, Backend.captureStep):
//   simulator      no capture: the engine takes the old path, nothing changes (no padding, no graph stats)
//   capture twin   a simulator that "captures" by keeping the step's closure and, on replay, writing the new
//                  step data into the captured arrays before re-running it (what the CUDA graph's input buffer
//                  does): tokens equal generate() alone and the engine without graphs, with sequences joining
//                  and leaving, crossing page buckets, greedy and sampled rows, LRU eviction, a failed capture;
//                  greedy steps chained (replayChained: the next step run at once on its own last argmax, as
//                  WebGPU does on the device), the speculated steps that were not the next one dropped, unread
//   CUDA, no GPU   CudaBackend over a recording addon: a capture uploads nothing, attention is launched for the
//                  bucket (the block tables' capacity), a replay writes one input image, bad replays are refused
//   CUDA (COMET_TEST_CUDA=1)  the engine's tokens with graphs equal those without (float and W4A4KV4 models)
import { afterAll, describe, expect, it } from 'vitest';
import { eachBackend } from './helpers/backends.ts';
import type { CapturedStep, StepInputs, Tensor } from '../backends/backend.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { argmax } from '../simulator/kernels/float.ts';
import { CudaBackend } from '../backends/cuda/cuda.ts'; // the class only: no addon is loaded here
import { createEngine, type Completion, type Engine, type EngineOptions } from '../src/engine/engine.ts';
import { DecodeGraphs, graphLimit } from '../src/engine/graphs.ts';
import { generate } from '../src/engine/generate.ts';
import { Llama } from '../src/model/llama.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { openModel, type OpenModel } from '../src/runtime/open.ts';
import { prometheus } from '../src/server/metrics.ts';

const opened = await openModel(new SimBackend());
const enc = (s: string) => opened.tokenizer.encode(s, { bos: true });

/** A simulator that can "capture": replay(inputs) copies inputs into the arrays the step closed over and runs
 *  it again; a shape change is an error (the real graph's launches are fixed). */
class CaptureSim extends SimBackend {
  captures = 0;
  replays = 0;
  topkReplays = 0; // replays whose rows came back as top-k lists (sampling with top_k)
  destroyed = 0;
  failNext = false;
  stale = false; // every graph held reports invalid (as CUDA's after new weights)
  chain = true; // offer replayChained
  chainedRuns = 0; // steps run by replayChained (used or dropped)
  captureStep(fn: () => Tensor, own?: StepInputs): CapturedStep {
    if (!own) throw new Error('capture twin: inputs must be declared');
    if (this.failNext) { this.failNext = false; throw new Error('capture twin: refused'); }
    this.captures++;
    const shape = (i: StepInputs) => [i.tokens.length, i.rows.length, i.layout.pos.length, ...i.layout.blockTables.map((b) => b.length)].join();
    const want = shape(own);
    const run = (inp?: StepInputs): Tensor => {
      this.replays++;
      if (inp && inp !== own) {
        if (shape(inp) !== want) throw new Error(`capture twin: replay of shape ${shape(inp)}, captured ${want}`);
        own.tokens.set(inp.tokens);
        own.rows.set(inp.rows);
        own.layout.pos.set(inp.layout.pos);
        own.layout.seq.set(inp.layout.seq);
        own.layout.blockTables.forEach((bt, i) => bt.set(inp.layout.blockTables[i]));
      }
      return fn();
    };
    let live = true, ids: Int32Array | undefined; // the argmax of the last replay, which a chained one is fed
    const check = () => { if (!live) throw new Error('capture twin: replay after destroy'); };
    // the step now, at the call (as a GPU queue orders it), and its argmax kept
    const runNow = (inp?: StepInputs) => { const t = run(inp); ids = argmax((t as unknown as { data: Float32Array }).data, t.shape[0], t.shape[1]); return t; };
    return {
      bytes: 1000,
      valid: () => !this.stale,
      replay: async (inp) => { check(); runNow(inp); this.endStep(); return ids!; },
      ...(this.chain ? {
        replayChained: async (inp: StepInputs) => {
          check();
          if (!ids) throw new Error('capture twin: a chained replay before any replay');
          this.chainedRuns++;
          runNow({ ...inp, tokens: ids });
          this.endStep();
          return ids;
        },
      } : {}),
      replayLogits: async (inp) => { check(); const r = await this.read(runNow(inp)); this.endStep(); return r; },
      replayTopK: async (inp, k) => { check(); this.topkReplays++; const r = await this.topk(runNow(inp), k); this.endStep(); return r; },
      destroy: () => { live = false; this.destroyed++; },
    };
  }
}

interface Req { at: number; prompt: number[]; max: number; temperature?: number; seed?: number; topK?: number }

/** Requests joining at given steps (submitted just before that step runs, so every run of the scenario
 *  batches the same way) and leaving at their max_tokens; returns each one's text, in plan order. */
async function scenario(m: OpenModel, plan: Req[], o: EngineOptions): Promise<{ texts: string[]; e: Engine }> {
  const e = await createEngine(m, o);
  const results: Promise<Completion>[] = [];
  let submitted = 0, allIn: () => void = () => {};
  const all = new Promise<void>((r) => (allIn = r));
  const submit = (i: number) => {
    const r = plan[i];
    results[i] = e.completions.create({ prompt: r.prompt, max_tokens: r.max, temperature: r.temperature ?? 0, top_p: 0.9, seed: r.seed ?? 0, ...(r.topK ? { top_k: r.topK } : {}) });
    if (++submitted === plan.length) allIn();
  };
  const step = e.scheduler.step.bind(e.scheduler);
  let n = 0;
  e.scheduler.step = async () => {
    plan.forEach((r, i) => { if (r.at === n && n > 0) submit(i); });
    n++;
    return step();
  };
  plan.forEach((r, i) => { if (r.at > 0) expect(r.at, 'joins while the first request runs').toBeLessThan(plan[0].max - 2); });
  expect(plan[0].at).toBe(0);
  plan.forEach((r, i) => { if (r.at === 0) submit(i); });
  await all;
  const texts = (await Promise.all(results)).map((r) => r.choices[0].text);
  expect(e.scheduler.busy).toBe(false);
  const s = e.pool.stats();
  expect(s.free).toBe(s.total);
  return { texts, e };
}

async function alone(m: OpenModel, r: Req): Promise<string> {
  const dec = new TextDecoder();
  let prev = r.prompt[r.prompt.length - 1], text = '';
  const t = r.temperature ?? 0;
  for await (const id of generate(m.model, r.prompt, { maxTokens: r.max, stop: m.stop, temperature: t, topP: t ? 0.9 : 1, topK: r.topK ?? 0, seed: r.seed ?? 0 })) {
    text += dec.decode(m.tokenizer.pieceBytes(prev, id), { stream: true });
    prev = id;
  }
  return text + dec.decode();
}

// different lengths, joining at steps 0..9 (and 45) and leaving at their own max; request 0 runs from 6 tokens to 90
// (pageSize 4: 2 -> 24 pages, buckets 2, 4, 8, 16, 32 for B = 1 once the others have left). Request 2 samples with
// top_k (its steps copy back top-k lists), request 6 without (its steps copy back the logit rows).
const PLAN: Req[] = [
  { at: 0, prompt: enc('Once'), max: 90 },
  { at: 0, prompt: enc('The little dog ran to the park and'), max: 20 },
  { at: 3, prompt: enc('Lily and Tom went to'), max: 35, temperature: 0.8, seed: 7, topK: 40 },
  { at: 5, prompt: enc('One day, a big bird'), max: 12 },
  { at: 9, prompt: enc('Mom said'), max: 40 },
  { at: 9, prompt: enc('Once upon a time there was a girl named Sue. She liked to'), max: 25 },
  { at: 45, prompt: enc('The cat'), max: 12, temperature: 0.9, seed: 5 },
];

describe('decode graphs: simulator (no capture)', () => {
  it('the path is not taken: no graph stats, the same tokens as generate() alone', async () => {
    const { texts, e } = await scenario(opened, PLAN, { pageSize: 4 });
    expect(e.scheduler.graphs).toBeUndefined();
    expect(e.stats().graphs).toBeUndefined();
    for (const [i, r] of PLAN.entries()) expect(texts[i], `request ${i}`).toBe(await alone(opened, r));
  });

  it('graph limits: the option, default 16', () => {
    expect([graphLimit(), graphLimit(4), graphLimit(0)]).toEqual([16, 4, 0]);
  });

  it('buckets: next power of two of the page count, clamped to a full context; tables padded with page 0', () => {
    const g = new DecodeGraphs(opened.model, opened.model.be.createKVCache({ nLayers: 1, nKvHeads: 1, headDim: 8, pageSize: 4, numPages: 8, dtype: 'f32', group: 8 }), 4, 16);
    expect([1, 4, 5, 8, 9, 17, 33, 500, 512].map((c) => g.bucket(c))).toEqual([1, 1, 2, 2, 4, 8, 16, 128, 128]);
    const d = g.inputs(Int32Array.of(5, 6), Int32Array.of(4, 9), [[3, 1], [0, 2, 7]]);
    expect(d.key).toBe('2x4');
    expect(d.inputs.layout.blockTables.map((b) => [...b])).toEqual([[3, 1, 0, 0], [0, 2, 7, 0]]);
    expect([...d.inputs.layout.seq, ...d.inputs.rows]).toEqual([0, 1, 0, 1]);
  });
});

describe('decode graphs: capture twin on the simulator', () => {
  const m = { ...opened, model: new Llama(new CaptureSim(), opened.loaded.config, opened.loaded.weights, 'f32') };
  const be = m.model.be as CaptureSim;
  const want: string[] = [];

  it('tokens equal generate() alone and the engine without graphs; buckets crossed; greedy and sampled', async () => {
    for (const r of PLAN) want.push(await alone(opened, r));
    const on = await scenario(m, PLAN, { pageSize: 4 });
    const off = await scenario(m, PLAN, { pageSize: 4, graphs: 0 });
    expect(on.texts).toEqual(want);
    expect(off.texts).toEqual(want);
    const s = on.e.stats().graphs!, s0 = off.e.stats().graphs!;
    expect(s).toMatchObject({ enabled: true, failures: 0 });
    expect(s.captures).toBeGreaterThan(4);
    expect(s.replays).toBeGreaterThan(40);
    expect(be.topkReplays, 'steps of request 2 (top_k 40) replay with top-k lists').toBeGreaterThan(10);
    expect(s.eager).toBeGreaterThan(0);
    for (const k of ['1x16', '1x32']) expect(s.keys, `request 0 alone crosses into bucket ${k}`).toContain(k);
    expect(s0).toMatchObject({ enabled: false, live: 0, captures: 0, replays: 0 });
    expect(be.captures).toBe(s.captures);
    // greedy steps chained (25 here): not while request 2 samples, nor onto a new page (every 4th position at
    // pageSize 4); joins, leaves and bucket changes dropped some
    expect(s.chained, 'chained greedy steps').toBeGreaterThan(15);
    expect(s.dropped, 'speculated steps dropped').toBeGreaterThan(0);
    expect(be.chainedRuns).toBeGreaterThanOrEqual(s.chained + s.dropped);
    // the server's /metrics exposes them
    const metrics = prometheus(on.e.stats());
    expect(metrics).toContain(`comet_decode_graph_steps_total{how="replay"} ${s.replays}`);
    expect(metrics).toContain(`comet_decode_graph_steps_total{how="capture"} ${s.captures}`);
    expect(metrics).toMatch(new RegExp(`^comet_decode_graphs_live ${s.live}$`, 'm'));
    on.e.close();
    expect(be.destroyed).toBe(s.captures); // evicted ones at eviction, the rest at close
    // generate() alone on the capturing backend (comet run's path): its sampled top_k steps replay top-k lists too
    const before = be.topkReplays;
    expect(await alone(m, PLAN[2])).toBe(want[2]);
    expect(be.topkReplays - before).toBeGreaterThan(PLAN[2].max / 2);
  });

  it('requests that read or shape logits (json_schema grammar, logprobs, penalties) replay with full logits: same output as without graphs', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['name', 'n'] };
    const run = async (graphs?: number) => {
      const e = await createEngine(m, { pageSize: 4, ...(graphs === undefined ? {} : { graphs }) });
      const rs = await Promise.all([
        e.chat.completions.create({ messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 60, temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'x', schema } } }),
        e.chat.completions.create({ messages: [{ role: 'user', content: 'One day' }], max_tokens: 20, temperature: 0, logprobs: true, top_logprobs: 2 }),
        e.completions.create({ prompt: 'Lily saw', max_tokens: 20, temperature: 0, frequency_penalty: 1, logit_bias: { 300: 2 } }),
      ]);
      const replays = e.stats().graphs?.replays ?? 0;
      e.close();
      return { out: JSON.stringify(rs.map((r) => r.choices[0])), replays };
    };
    const on = await run(), off = await run(0);
    expect(on.replays).toBeGreaterThan(10);
    expect(on.out).toBe(off.out);
    expect(on.out).toContain('\\"name\\"');
  });

  it('at most `graphs` held: the least recently used is evicted, tokens unchanged', async () => {
    const before = be.destroyed;
    const { texts, e } = await scenario(m, PLAN, { pageSize: 4, graphs: 2 });
    expect(texts).toEqual(want);
    const s = e.stats().graphs!;
    expect(s.live).toBe(2);
    expect(s.evictions).toBeGreaterThan(0);
    expect(s.evictions).toBe(s.captures - 2);
    expect(be.destroyed - before).toBe(s.evictions);
  });

  it('a failed capture: that key runs eagerly from then on, tokens unchanged', async () => {
    be.failNext = true;
    const { texts, e } = await scenario(m, PLAN, { pageSize: 4 });
    expect(texts).toEqual(want);
    expect(e.stats().graphs!.failures).toBe(1);
  });

  it('stale graphs are dropped and captured again, tokens unchanged', async () => {
    const { texts, e } = await scenario(m, PLAN, { pageSize: 4 });
    expect(texts).toEqual(want);
    const s = e.stats().graphs!;
    be.stale = true;
    const again = await e.completions.create({ prompt: PLAN[1].prompt, max_tokens: 6, temperature: 0 });
    be.stale = false;
    expect(again.choices[0].text).toBe(want[1].slice(0, again.choices[0].text.length));
    const s2 = e.stats().graphs!;
    expect(s2.stale).toBeGreaterThan(0);
    expect(s2.captures).toBeGreaterThan(s.captures);
  });

  it('graphs: 0 turns them off', async () => {
    const { texts, e } = await scenario(m, PLAN.slice(0, 2), { pageSize: 4, graphs: 0 });
    expect(texts).toEqual(want.slice(0, 2));
    expect(e.stats().graphs).toMatchObject({ enabled: false, captures: 0, replays: 0 });
  });
});

/** An addon that runs nothing and records every call (and whether a capture was open). */
function recordingAddon() {
  const calls: { name: string; args: unknown[]; capturing: boolean }[] = [];
  let next = 1 << 20, capturing = false, graphs = 0;
  const rec = (name: string, ret?: (...a: any[]) => unknown) => (...args: unknown[]) => {
    calls.push({ name, args: args.map((a) => (ArrayBuffer.isView(a) && a.byteLength % 4 === 0 ? new Int32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength)) : a)), capturing });
    return ret?.(...args);
  };
  const facts = { name: 'recording', count: 1, major: 9, minor: 0, sms: 132, freeBytes: 2 ** 34, totalBytes: 2 ** 34, driverVersion: 0, runtimeVersion: 0 };
  const names = ['free', 'copy', 'memset', 'sync', 'w4Destroy', 'gemmW4ax', 'gemmForce', 'embed', 'rmsnorm', 'add', 'siluMul', 'rope', 'gemmF32', 'rows',
    'argmax', 'quantizeAct', 'rmsnormQuant', 'siluMulQuant', 'kvAppendF32', 'kvAppendKv4', 'attentionF32', 'attentionKv4', 'profSpin', 'profMark', 'graphLaunch', 'graphDestroy',
    'addRmsnorm', 'addRmsnormQuant', 'ropeKvAppendF32', 'ropeKvAppendKv4', 'gemmW4axMany', 'embedF16', 'gemmF16w'];
  const addon: Record<string, unknown> = Object.fromEntries(names.map((n) => [n, rec(n)]));
  Object.assign(addon, {
    init: () => facts, deviceInfo: () => facts,
    malloc: rec('malloc', (b: number) => { const p = next; next += Math.ceil(b / 256) * 256 + 256; return p; }),
    upload: rec('upload', () => { if (capturing) throw new Error('upload while capturing'); }),
    download: rec('download', (_p: number, n: number) => new ArrayBuffer(n)),
    graphBegin: rec('graphBegin', () => { capturing = true; }),
    graphEnd: rec('graphEnd', () => { capturing = false; return ++graphs; }),
    attentionWorkspace: rec('attentionWorkspace', () => 4096),
    gemmSchedule: () => Int32Array.of(0, 1),
    w4Create: rec('w4Create', () => ++next),
    profRead: () => new Float32Array(0),
    hostAlloc: (n: number) => new ArrayBuffer(n),
  });
  return { addon, calls, facts };
}

describe('decode graphs: the CUDA backend\'s capture, over a recording addon (no GPU)', () => {
  const { addon, calls, facts } = recordingAddon();
  const be = new CudaBackend(addon as never, facts);
  const model = new Llama(be, opened.loaded.config, opened.loaded.weights, 'f32');
  const cache = be.createKVCache({ nLayers: model.config.nLayers, nKvHeads: model.config.nKvHeads, headDim: model.config.headDim, pageSize: 4, numPages: 64, dtype: 'f32', group: model.config.headDim });
  const g = new DecodeGraphs(model, cache, 4, 16);
  const step = (toks: number[], pos: number[], pages: number[][]) => g.inputs(Int32Array.from(toks), Int32Array.from(pos), pages);
  const LEN = 13; // attentionF32(q, kc, vc, pos, seq, bt, btOff, T, nKv, hd, P, group, nHeads, LEN, ws, out)
  const a = step([5, 6], [5, 9], [[0, 1], [2, 3, 4]]); // longest context 10 tokens: 3 pages -> bucket 4 pages, 16 keys
  let graph: CapturedStep;

  it('an eager step of the bucketed shape launches attention for the bucket (16 keys, not 10)', async () => {
    calls.length = 0;
    await be.read(model.forward(a.inputs.tokens, a.inputs.layout, cache, a.inputs.rows));
    be.endStep();
    const att = calls.filter((c) => c.name === 'attentionF32');
    expect(att.length).toBe(model.config.nLayers);
    for (const c of att) expect(c.args[LEN]).toBe(16);
    expect(calls.filter((c) => c.name === 'attentionWorkspace').every((c) => c.args[3] === 16)).toBe(true);
  });

  it('capture: nothing uploaded or allocated inside; the inputs live in the graph\'s own buffer', () => {
    calls.length = 0;
    graph = be.captureStep(() => model.forward(a.inputs.tokens, a.inputs.layout, cache, a.inputs.rows), a.inputs);
    const inside = calls.filter((c) => c.capturing);
    expect(inside.length).toBeGreaterThan(10);
    expect(inside.filter((c) => c.name === 'malloc' || c.name === 'upload')).toEqual([]);
    const up = calls.filter((c) => c.name === 'upload');
    expect(up.length).toBe(1); // the input image, before the capture
    const img = up[0].args[1] as Int32Array;
    expect([...img.subarray(0, 2)]).toEqual([5, 6]); // tokens
    // layout at word 64: pos | seq | btOff | bt (2 tables of 4)
    expect([...img.subarray(64, 64 + 2 + 2 + 2 + 8)]).toEqual([5, 9, 0, 1, 0, 4, 0, 1, 0, 0, 2, 3, 4, 0]);
    expect([...img.subarray(128, 130)]).toEqual([0, 1]); // rows
    const embed = inside.find((c) => c.name === 'embed')!;
    expect(embed.args[2]).toBe(up[0].args[0]); // the embedding reads the tokens from the image
    for (const c of inside.filter((c) => c.name === 'attentionF32')) expect(c.args[LEN]).toBe(16);
  });

  it('replay on the next step: one upload of the new image, then the launch; the same positions as captured need none', async () => {
    const b = step([7, 8], [6, 14], [[0, 1], [2, 3, 4, 9]]); // 15 tokens: still 4 pages
    expect(b.key).toBe(a.key);
    calls.length = 0;
    await graph.replay(b.inputs);
    expect(calls.map((c) => c.name)).toEqual(['upload', 'graphLaunch', 'argmax', 'download']);
    const img = calls[0].args[1] as Int32Array;
    expect([...img.subarray(0, 2)]).toEqual([7, 8]);
    expect([...img.subarray(64, 78)]).toEqual([6, 14, 0, 1, 0, 4, 0, 1, 0, 0, 2, 3, 4, 9]);
    calls.length = 0;
    await graph.replayLogits(b.inputs);
    expect(calls.map((c) => c.name)).toEqual(['graphLaunch', 'download']);
  });

  it('a replay of another shape, a page outside the pool or a position past the tables is refused', async () => {
    await expect(graph.replay(step([1, 2], [5, 40], [[0, 1], [2, 3, 4]]).inputs)).rejects.toThrow(/another shape/); // 8 pages
    await expect(graph.replay(step([1, 2], [5, 9], [[0, 99], [2, 3, 4]]).inputs)).rejects.toThrow(/outside the pool/);
    const bad = step([1, 2], [5, 9], [[0, 1], [2, 3, 4]]);
    bad.inputs.layout.pos[1] = 16;
    await expect(graph.replay(bad.inputs)).rejects.toThrow(/past the sequence/);
  });

  it('a step that uploads undeclared data is not captured, and the backend stays usable', () => {
    calls.length = 0;
    expect(() => be.captureStep(() => be.embed(model.tokEmbed, Int32Array.of(1, 2)), a.inputs)).toThrow(/not one of its declared inputs/);
    expect(calls.filter((c) => c.name === 'graphDestroy').length).toBe(1);
    calls.length = 0;
    be.embed(model.tokEmbed, Int32Array.of(1, 2));
    be.endStep();
    expect(calls.map((c) => c.name)).toEqual(['upload', 'embed']);
  });

  it('a W4 weight uploaded after the capture makes the graph stale (the GEMM workspace may have moved)', async () => {
    expect(graph.valid!()).toBe(true);
    const spec = { K: 128, B: 128, Kp: 128, K8: 0 };
    be.uploadWeight({ kind: 'w4', name: 'extra', N: 2, codes: new Uint8Array(128), scales: new Uint16Array(2), act: spec });
    expect(graph.valid!()).toBe(false);
    await expect(graph.replay()).rejects.toThrow(/stale/);
  });

  it('destroy frees the graph and its buffers', () => {
    calls.length = 0;
    graph.destroy();
    expect(calls.map((c) => c.name)).toEqual(['graphDestroy', 'free', 'free']);
    return expect(graph.replay()).rejects.toThrow(/destroyed/);
  });
});

describe('the fused decode step: launches per layer, over a recording addon (no GPU)', () => {
  // what one decoder layer of a W4A4KV4 model enqueues (the model through src/graph): the residual add inside the
  // next norm (addRmsnormQuant), RoPE inside the KV append (ropeKvAppendKv4), q/k/v and gate/up each one GEMM
  // (gemmW4axMany). Unfused it was 14: rmsnormQuant, gemm q/k/v, rope ×2, kvAppendKv4, attention, quantizeAct,
  // gemm o, add, rmsnormQuant, gemm gate/up, siluMulQuant, gemm down, add.
  const KERNELS = new Set(['embed', 'embedF16', 'rmsnorm', 'add', 'siluMul', 'rope', 'gemmF32', 'gemmF16w', 'rows', 'argmax', 'quantizeAct', 'rmsnormQuant', 'siluMulQuant', 'kvAppendF32', 'kvAppendKv4',
    'attentionF32', 'attentionKv4', 'gemmW4ax', 'gemmW4axMany', 'addRmsnorm', 'addRmsnormQuant', 'ropeKvAppendF32', 'ropeKvAppendKv4']);
  it('a W4A4KV4 decode layer is 10 ops (was 14)', async () => {
    const { addon, calls, facts } = recordingAddon();
    const be = new CudaBackend(addon as never, facts);
    const m = (await syntheticW4(be)).model, c = m.config;
    const cache = be.createKVCache({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: 16, numPages: 4, dtype: 'kv4', group: c.headDim });
    calls.length = 0;
    m.forward(Int32Array.of(3, 4), { pos: Int32Array.of(7, 2), seq: Int32Array.of(0, 1), blockTables: [Int32Array.of(0), Int32Array.of(1)] }, cache, Int32Array.of(0, 1));
    const ops = calls.map((x) => x.name).filter((n) => KERNELS.has(n));
    const layer = ['addRmsnormQuant', 'gemmW4axMany', 'ropeKvAppendKv4', 'attentionKv4', 'quantizeAct', 'gemmW4ax', 'addRmsnormQuant', 'gemmW4axMany', 'siluMulQuant', 'gemmW4ax'];
    expect(ops.slice(1, -4)).toEqual(['rmsnormQuant', ...layer.slice(1), ...Array.from({ length: c.nLayers - 1 }, () => layer).flat()]);
    expect(ops.slice(-4, -1)).toEqual(['add', 'rows', 'rmsnorm']); // the last layer's add, the rows, the final norm, the classifier
    be.endStep();
  });
});

// ---- on the GPU ----------------------------------------------------------------------------------------------

/** A small W4A4KV4 model with synthetic weights (the e2e benchmark's), head_dim 64 (the KV4 attention fast path),
 *  GQA 2, the embedded tokenizer's vocabulary. */
export async function syntheticW4(be: import('../backends/backend.ts').Backend, c: Partial<LlamaConfig> = {}): Promise<OpenModel> {
  const { syntheticQuantizedModel } = await import('../testing/synthetic-quantized.ts');
  const config: LlamaConfig = { dim: 256, hiddenDim: 768, nLayers: 4, nHeads: 4, nKvHeads: 2, headDim: 64, vocabSize: opened.loaded.config.vocabSize, seqLen: 512, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2], ...c };
  const { weights } = syntheticQuantizedModel(config, { block: 128, int8Fraction: 0.25, clipSearch: false });
  return { ...opened, model: new Llama(be, config, weights, 'kv4'), stop: [] };
}

// the backend that captures steps (CUDA); the row is a skipped suite, with its reason, where it cannot run
eachBackend('decode graphs', ({ create }) => {
  let cuda: import('../backends/backend.ts').Backend;
  afterAll(() => cuda?.dispose());

  it.each(['stories260K float', 'synthetic W4A4KV4'])('%s: tokens with graphs equal those without (joins, leaves, buckets, sampling)', async (which) => {
    cuda ??= await create();
    const m = which.startsWith('stories') ? { ...opened, model: new Llama(cuda, opened.loaded.config, opened.loaded.weights, 'f32') } : await syntheticW4(cuda);
    const on = await scenario(m, PLAN, { pageSize: 4 });
    const off = await scenario(m, PLAN, { pageSize: 4, graphs: 0 });
    const s = on.e.stats().graphs!;
    console.log(`${which}: graphs ${JSON.stringify({ ...s, keys: s.keys.join(' ') })}`);
    expect(s.failures, 'every capture succeeded').toBe(0);
    expect(s.replays).toBeGreaterThan(40);
    for (const k of ['1x16', '1x32']) expect(s.keys).toContain(k);
    expect(off.e.stats().graphs).toMatchObject({ enabled: false, replays: 0 });
    expect(on.texts).toEqual(off.texts);
    on.e.close();
  });
}, (c) => c.name === 'cuda');
