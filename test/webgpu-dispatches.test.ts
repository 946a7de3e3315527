// The WebGPU decode step's shape of work (issue 21, item 4): dispatches per layer as few as the CUDA step's (one
// per fused op of src/graph: the norm with the residual add and the quantizer, q/k/v and gate/up as one GEMM
// dispatch each, rope with the KV append, SwiGLU with its quantizer; on the matvec, the quantizer of o_proj's input
// inside its GEMM; the KV4 attention split over 64-key chunks with a combine on a GPU's
// kernels, its chunks' dispatch doing the step's rope_kv_append), all in one compute pass of one command buffer, one submit per step (eager or
// replayed), and nothing read back but the sampled ids. A change that adds a dispatch to every layer fails here;
// bench/results/webgpu-dispatches-*.md records the counts.
// Runs on the WebGPU row only (SwiftShader on CI).
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { StepInputs } from '../backends/backend.ts';
import { WebGPUBackend, type WebGPUStep } from '../backends/webgpu/webgpu.ts';
import { loadShaderSources } from '../backends/webgpu/shaders.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { Llama } from '../src/model/llama.ts';
import { singleSequenceCache } from '../src/engine/generate.ts';
import { syntheticQuantizedModel } from '../testing/synthetic-quantized.ts';
import { syntheticWeights } from '../testing/synthetic.ts';
import { randn } from '../testing/rng.ts';
import { eachBackend } from './helpers/backends.ts';

const C: LlamaConfig = {
  dim: 256, hiddenDim: 512, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 64, vocabSize: 256, seqLen: 256,
  normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2],
};

/** Dispatches of one decode step by what they do: every layer's, and the step's once (embed, the last residual
 *  add, the logit row, the final norm, the classifier, argmax). Pipeline names map to a role so the kernel a
 *  shape or adapter picks (serial or workgroup attention, matvec or rowwise GEMM) does not matter. */
const ROLE: Array<[RegExp, string]> = [
  [/^(add_)?rmsnorm(_quant)?$/, 'norm'], [/^gemm_/, 'gemm'], [/^rope_kv_append_/, 'rope_kv_append'], [/^attention_/, 'attention'],
  [/^quantize_act$/, 'quantize_act'], [/^silu_mul(_quant)?$/, 'swiglu'], [/^embed(_f16)?$/, 'embed'], [/^(add|rows|argmax)$/, '$&'],
];
const role = (name: string) => { const r = ROLE.find(([re]) => re.test(name)); return !r || r[1] === '$&' ? name : r[1]; };

/** W4A4KV4: 10 a layer, as CUDA's step (norm, qkv, rope_kv_append, attention, quantize_act for o_proj, o, norm,
 *  gate/up, swiglu, down). With a GPU adapter's decode kernels (forced here): 9, where o_proj's GEMM is the matvec,
 *  which quantizes its f32 input itself, and the KV4 attention is split over 64-key chunks, a dispatch for the chunks
 *  (which also does the step's rope_kv_append: attention_kv4_split_rope) and one folding them. The float reference:
 *  12, no quantizers and one GEMM per linear (CUDA's too). */
const PER_LAYER = {
  w4: { norm: 2, gemm: 4, rope_kv_append: 1, attention: 1, quantize_act: 1, swiglu: 1 },
  'w4 gpu': { norm: 2, gemm: 4, attention: 2, swiglu: 1 },
  f32: { norm: 2, gemm: 7, rope_kv_append: 1, attention: 1, swiglu: 1 },
};
const TITLE = {
  w4: 'W4A4KV4', 'w4 gpu': 'W4A4KV4, a GPU\'s kernels (matvec GEMM, split attention)', f32: 'float (f32 weights and cache)',
};
/** the GPU kinds' options: the matvec GEMM and the workgroup kernels, which a GPU adapter takes by default */
const OPTS = { 'w4 gpu': { gemm: 'matvec', kernels: 'workgroup' } } as const;
const PER_STEP = { embed: 1, add: 1, rows: 1, norm: 1, gemm: 1, argmax: 1 };

eachBackend('WebGPU decode step: dispatches, passes, submits', ({ create }) => {
  let be: WebGPUBackend;
  beforeAll(async () => { be = (await create()) as WebGPUBackend; });
  afterAll(() => be?.dispose());

  for (const kind of ['w4', 'w4 gpu', 'f32'] as const) {
    const perLayer = Object.values(PER_LAYER[kind]).reduce((a, b) => a + b, 0);
    it(`${TITLE[kind]}: a captured decode step is ${perLayer} dispatches a layer and 6 a step, in one compute pass; eager and replayed steps submit once`, async () => {
      const host = kind === 'f32' ? syntheticWeights(C, 5) : syntheticQuantizedModel(C, { block: 64, int8Fraction: 0.25, clipSearch: false }).weights;
      const b = kind === 'w4 gpu' ? new WebGPUBackend(be.gpu, await loadShaderSources(), OPTS[kind]) : be;
      const model = new Llama(b, C, host, kind === 'f32' ? 'f32' : 'kv4');
      // 160 positions: three 64-key chunks, so the workgroup KV4 attention splits (one chunk: it would not)
      const { cache, blockTable } = singleSequenceCache(model, 160);
      const layout = (pos: number[]) => ({ pos: Int32Array.from(pos), seq: new Int32Array(pos.length), blockTables: [blockTable] });
      // count submits and maps (readbacks) on this device
      const q = be.dev.queue, submit = q.submit.bind(q);
      let submits = 0;
      q.submit = (cbs: Iterable<GPUCommandBuffer>) => { submits++; submit(cbs); };
      try {
        const ids0 = await b.argmax(model.forward(Int32Array.of(1, 5, 9), layout([0, 1, 2]), cache, Int32Array.of(2)));
        b.endStep();
        submits = 0;
        const ids1 = await b.argmax(model.forward(Int32Array.of(ids0[0]), layout([3]), cache, Int32Array.of(0)));
        b.endStep();
        expect(submits, 'an eager decode step: one submit').toBe(1);

        const inp = (tok: number, pos: number): StepInputs => ({ tokens: Int32Array.of(tok), layout: layout([pos]), rows: Int32Array.of(0) });
        const first = inp(ids1[0], 4);
        const g = b.captureStep(() => model.forward(first.tokens, first.layout, cache, first.rows), first) as WebGPUStep;
        const census = g.census();
        const want: Record<string, number> = {};
        const addTo = (m: Record<string, number>, n: number) => { for (const [k, v] of Object.entries(m)) want[k] = (want[k] ?? 0) + n * v; };
        // the default kinds take a GPU adapter's kernels on a GPU (the H200 runs this file too)
        const table = kind === 'w4' && !b.cpu ? PER_LAYER['w4 gpu'] : PER_LAYER[kind];
        addTo(table, C.nLayers);
        addTo(PER_STEP, 1);
        const got: Record<string, number> = {};
        for (const [name, n] of Object.entries(census.dispatches)) got[role(name)] = (got[role(name)] ?? 0) + n;
        expect(got, `dispatches by role (pipelines: ${JSON.stringify(census.dispatches)})`).toEqual(want);
        expect(g.dispatches).toBe(C.nLayers * Object.values(table).reduce((a, c) => a + c, 0) + 6);
        expect({ passes: census.passes, clears: census.clears, copies: census.copies }, 'one compute pass, nothing that ends it').toEqual({ passes: 1, clears: 0, copies: 0 });

        submits = 0;
        let tok = ids1[0];
        const tokens = [ids0[0], ids1[0]];
        for (let pos = 4; pos < 8; pos++) {
          const ids = await g.replay(inp(tok, pos));
          b.endStep();
          expect(ids.length).toBe(1);
          tokens.push((tok = ids[0]));
        }
        expect(submits, 'a replay: one submit').toBe(4);
        // greedy chaining (replayChained, src/engine/graphs.ts): two steps in flight, each fed the ids of the one
        // before on the device, one submit each; the same tokens as plain replays fed by the host (which write
        // the same KV rows again)
        submits = 0;
        const p8 = g.replayChained(inp(0, 8)), p9 = g.replayChained(inp(0, 9));
        const chained = [(await p8)[0], (await p9)[0]];
        expect(submits, 'a chained replay: one submit').toBe(2);
        for (const [i, pos] of [8, 9].entries()) {
          const ids = await g.replay(inp(i === 0 ? tok : chained[0], pos));
          b.endStep();
          expect(ids[0], `position ${pos}: chained vs fed by the host`).toBe(chained[i]);
        }
        // the split attention's grid covers the captured tables' 160 keys in three chunks: a replay past them is refused
        if (kind === 'w4 gpu') await expect(g.replay(inp(tok, 192))).rejects.toThrow(/position 192, past the 192 keys/);
        g.destroy();
        if (kind === 'w4 gpu') {
          // the matvec's steps (QIN = 0 and 1; its q/k/v and gate/up parts; captured and replayed) decode
          // the tokens of the rowwise GEMM, eagerly, with the same attention kernels: both GEMMs are DESIGN §3.4's bits
          const r = new WebGPUBackend(be.gpu, await loadShaderSources(), { ...OPTS[kind], gemm: 'rowwise' });
          const ref = new Llama(r, C, host, 'kv4'), rc = singleSequenceCache(ref, 160);
          const rl = (pos: number[]) => ({ pos: Int32Array.from(pos), seq: new Int32Array(pos.length), blockTables: [rc.blockTable] });
          const want = [(await r.argmax(ref.forward(Int32Array.of(1, 5, 9), rl([0, 1, 2]), rc.cache, Int32Array.of(2))))[0]];
          r.endStep();
          for (let pos = 3; pos < 8; pos++) {
            want.push((await r.argmax(ref.forward(Int32Array.of(want[want.length - 1]), rl([pos]), rc.cache, Int32Array.of(0))))[0]);
            r.endStep();
          }
          r.dispose();
          expect(tokens, 'greedy tokens of the matvec steps vs the rowwise GEMM').toEqual(want);
        }
      } finally {
        q.submit = submit;
        if (b !== be) b.dispose();
      }
    }, 120_000);
  }

  // The workgroup KV4 attention's lane reductions: subgroupMax and the bfly's levels below the subgroup size by
  // subgroupShuffleXor (shaders/lanes_sg.wgsl) add the contract's pairs in its order, so they give the bits of the
  // plain ones (lanes.wgsl); and the split (a workgroup per 64-key chunk, then the combine) folds the chunks in the
  // unsplit kernel's order: the same bits too. test/ops.test.ts holds all of them to the simulator (tier 3).
  it('KV4 attention: subgroup reductions and the split give the plain unsplit kernel\'s bits (the adapter has subgroups)', async () => {
    expect(be.gpu.subgroups, `this adapter (${be.adapterName}) has no subgroups (or WGSL lacks subgroup_id): lanes_sg.wgsl is untested here`).toBe(true);
    const src = await loadShaderSources(), nKv = 2, nH = 8, hd = 64, P = 16, T = 3;
    const kinds = [
      ['subgroups, split', be.gpu, { kernels: 'workgroup', attentionSplit: true }],
      ['subgroups, unsplit', be.gpu, { kernels: 'workgroup', attentionSplit: false }],
      ['plain, split', { ...be.gpu, subgroups: false }, { kernels: 'workgroup', attentionSplit: true }],
      ['plain, unsplit', { ...be.gpu, subgroups: false }, { kernels: 'workgroup', attentionSplit: false }],
    ] as const;
    // 3 sequences of 300, 130 and 20 keys (5, 3 and 1 chunks; segments crossed), one decode token each
    const lens = [300, 130, 20], tables = lens.map((n, i) => Int32Array.from({ length: Math.ceil((n + 1) / P) }, (_, j) => i * 32 + j));
    const fill = { pos: Int32Array.from(lens.flatMap((n) => [...Array(n + 1).keys()])), seq: Int32Array.from(lens.flatMap((n, i) => Array(n + 1).fill(i))), blockTables: tables };
    const step = { pos: Int32Array.from(lens), seq: Int32Array.of(0, 1, 2), blockTables: tables };
    const N = fill.pos.length, k = randn(1, N * nKv * hd, 2), v = randn(2, N * nKv * hd), q = randn(3, T * nH * hd, 0.5);
    const outs: Array<[string, Float32Array]> = [];
    for (const [name, gpu, opts] of kinds) {
      const b = new WebGPUBackend(gpu, src, opts);
      try {
        const cache = b.createKVCache({ nLayers: 1, nKvHeads: nKv, headDim: hd, pageSize: P, numPages: 96, dtype: 'kv4', group: hd });
        b.kvAppend(cache, 0, b.fromHost(k, [N, nKv * hd]), b.fromHost(v, [N, nKv * hd]), fill);
        outs.push([name, await b.read(b.attention(b.fromHost(q, [T, nH * hd]), cache, 0, step, nH))]);
        b.endStep();
      } finally { b.dispose(); }
    }
    const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    for (const [name, o] of outs.slice(1)) expect(bits(o).equals(bits(outs[0][1])), `${name} vs ${outs[0][0]}`).toBe(true);
    expect(outs[0][1].every(Number.isFinite) && outs[0][1].some((x) => x !== 0)).toBe(true);
  }, 120_000);
}, (c) => c.name === 'webgpu');
