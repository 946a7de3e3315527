// The decode step's rope_kv_append folded into the split KV4 attention (attention.wgsl attention_kv4_rope, webgpu.ts
// ropeKvAppend): q' and the append are left lazy, and the split's chunk workgroups rope q and quantize the new key
// themselves. The fold must change dispatches, never bits: its attention output, its q' (read after, rope(q) on its
// own) and the cache's bytes equal those of rope_kv_append then the split attention and its combine on this adapter
// (the reference: q' read before the attention, which records the rope_kv_append as it was). Positions inside a
// chunk, a chunk's first and last key, the new key alone in chunk 0 (position 0), 1-3 live chunks of a 3-chunk grid,
// and a step of three sequences; GQA 32/8 at hd 64 and 8/2 at hd 128 with two KV4 groups. Also captured: a replay at
// new positions remakes the RoPE table and the layout the fold binds. WebGPU row only (SwiftShader on CI).
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { KVCache, StepInputs, StepLayout, Tensor } from '../backends/backend.ts';
import { WebGPUBackend, type WebGPUStep } from '../backends/webgpu/webgpu.ts';
import { loadShaderSources } from '../backends/webgpu/shaders.ts';
import { randn } from '../testing/rng.ts';
import { eachBackend } from './helpers/backends.ts';

type Geom = { nKv: number; nH: number; hd: number; G: number };
const GEOMS: Array<[string, Geom]> = [
  ['GQA 32/8, hd 64', { nKv: 8, nH: 32, hd: 64, G: 64 }],
  // (lanes.wgsl, without subgroups, gives lanes_sg.wgsl's bits: test/webgpu-dispatches.test.ts; not repeated here
  // for CI's time)
  ['GQA 8/2, hd 128, G 64', { nKv: 2, nH: 8, hd: 128, G: 64 }],
];
/** 3 sequences of 12 pages of 16 (192 keys: the split's grid is 3 chunks whatever the positions) */
const P = 16, PAGES = 12, SEQS = 3;
/** decode steps, one position per sequence (sequence i at steps[j][i]), run in this order on one cache */
const STEPS = [[5], [63], [64], [127], [128], [150, 64, 0], [191, 100, 127]];

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
/** the pipelines b records from now on, by name, in order (its private `run`, wrapped: every dispatch goes through it) */
function pipelinesRun(b: WebGPUBackend): string[] {
  const names: string[] = [], be = b as unknown as { run: (name: string, ...rest: unknown[]) => void }, run = be.run.bind(b);
  be.run = (name, ...rest) => { names.push(name); run(name, ...rest); };
  return names;
}

eachBackend('WebGPU: rope_kv_append folded into the split KV4 attention', ({ create }) => {
  let base: WebGPUBackend;
  beforeAll(async () => { base = (await create()) as WebGPUBackend; });
  afterAll(() => base?.dispose());

  for (const [title, g] of GEOMS) {
    it(`${title}: the fold gives rope_kv_append then the split attention's bits (output, q', cache), eager and replayed`, async () => {
      // a GPU's kernels, forced (SwiftShader would take the serial ones, which do not fold)
      const b = new WebGPUBackend(base.gpu, await loadShaderSources(), { kernels: 'workgroup' });
      const names = pipelinesRun(b);
      try {
        const rope = { nHeads: g.nH, headDim: g.hd, theta: 500000 }, C = g.nKv * g.hd, Q = g.nH * g.hd;
        const spec = { nLayers: 2, nKvHeads: g.nKv, headDim: g.hd, pageSize: P, numPages: SEQS * PAGES + 1, dtype: 'kv4' as const, group: g.G };
        // interleaved pages (sequence i: pages i + 1, i + 1 + SEQS, ...)
        const tables = Array.from({ length: SEQS }, (_, i) => Int32Array.from({ length: PAGES }, (_, j) => 1 + i + SEQS * j));
        const fused = b.createKVCache(spec), ref = b.createKVCache(spec);
        // both caches: every slot of every sequence holds a key and value (layer 1; layer 0 stays empty)
        const N = PAGES * P, fill: StepLayout = {
          pos: Int32Array.from({ length: SEQS * N }, (_, i) => i % N), seq: Int32Array.from({ length: SEQS * N }, (_, i) => Math.floor(i / N)), blockTables: tables,
        };
        const hk = randn(1, SEQS * N * C, 2), hv = randn(2, SEQS * N * C);
        for (const c of [fused, ref]) b.kvAppend(c, 1, b.fromHost(hk, [SEQS * N, C]), b.fromHost(hv, [SEQS * N, C]), fill);
        b.endStep();
        const layout = (pos: number[]): StepLayout => ({ pos: Int32Array.from(pos), seq: Int32Array.from(pos.keys()), blockTables: tables });
        const inputs = (T: number, seed: number) => ({
          q: b.fromHost(randn(seed, T * Q, 0.7), [T, Q]), k: b.fromHost(randn(seed + 1, T * C, 2), [T, C]), v: b.fromHost(randn(seed + 2, T * C), [T, C]),
        });
        /** the reference: rope_kv_append recorded as it was (its q' read first), then the split attention */
        const reference = async (x: { q: Tensor; k: Tensor; v: Tensor }, l: StepLayout) => {
          const q1 = b.ropeKvAppend(x.q, x.k, x.v, ref, 1, l, rope), qr = await b.read(q1);
          const out = await b.read(b.attention(q1, ref, 1, l, g.nH));
          return { qr, out };
        };
        const same = async (what: string) => {
          const [a, r] = [await fused.readLayer(1), await ref.readLayer(1)];
          expect(Buffer.from(a).equals(Buffer.from(r)), `${what}: cache bytes`).toBe(true);
          return a;
        };
        let before = await same('filled');
        for (const [j, pos] of STEPS.entries()) {
          const l = layout(pos), x = inputs(pos.length, 10 * j + 3), what = `positions ${pos}`;
          names.length = 0;
          const q1 = b.ropeKvAppend(x.q, x.k, x.v, fused, 1, l, rope);
          const out = await b.read(b.attention(q1, fused, 1, l, g.nH));
          const qf = await b.read(q1); // after the attention: rope(q) alone
          expect(names, `${what}: the fused dispatches`).toEqual(['attention_kv4_split_rope', 'attention_kv4_combine', 'rope']);
          names.length = 0;
          const want = await reference(x, l);
          expect(names, `${what}: the reference's dispatches`).toEqual(['rope_kv_append_kv4_wg', 'attention_kv4_split', 'attention_kv4_combine']);
          expect(bits(out), `${what}: attention output bits`).toEqual(bits(want.out));
          expect(bits(qf), `${what}: q' bits`).toEqual(bits(want.qr));
          expect(out.every(Number.isFinite) && out.some((v) => v !== 0), `${what}: a real output`).toBe(true);
          const now = await same(what);
          expect(Buffer.from(now).equals(Buffer.from(before)), `${what}: the step wrote its keys`).toBe(false);
          before = now;
          b.endStep();
        }
        expect((await fused.readLayer(0)).every((v) => v === 0), 'layer 0 untouched').toBe(true);

        // captured: one fold a layer in the recorded step; replays at new positions (the RoPE table and the layout
        // remade) equal the eager reference there
        const x = inputs(2, 77), first: StepInputs = { tokens: new Int32Array(2), layout: layout([70, 9]), rows: Int32Array.of(0, 1) };
        const step = b.captureStep(() => b.attention(b.ropeKvAppend(x.q, x.k, x.v, fused, 1, first.layout, rope), fused, 1, first.layout, g.nH), first) as WebGPUStep;
        try {
          expect(step.census().dispatches).toEqual({ attention_kv4_split_rope: 1, attention_kv4_combine: 1, argmax: 1 });
          for (const pos of [[70, 9], [128, 63], [0, 191]]) {
            const got = await step.replayLogits({ ...first, layout: layout(pos) });
            b.endStep();
            const want = await reference(x, layout(pos));
            b.endStep();
            expect(bits(got), `replay at ${pos}: attention output bits`).toEqual(bits(want.out));
            await same(`replay at ${pos}`);
          }
          // a replay with two tokens of one sequence is refused (the fold needs one token per sequence)
          await expect(step.replayLogits({ ...first, layout: { ...layout([80, 81]), seq: Int32Array.of(0, 0) } })).rejects.toThrow(/one token per sequence/);
        } finally { step.destroy(); }
      } finally { b.dispose(); }
    }, 300_000);
  }

  it('not folded where it cannot be: a prefill chunk (two tokens of a sequence), a one-chunk grid, the serial kernels', async () => {
    const src = await loadShaderSources(), g = GEOMS[1][1], rope = { nHeads: g.nH, headDim: g.hd, theta: 10000 };
    const C = g.nKv * g.hd, Q = g.nH * g.hd;
    for (const [kernels, pages, pos, seq] of [['workgroup', 4, [5, 6], [0, 0]], ['workgroup', 4, [5], [0]], ['serial', PAGES, [70], [0]]] as const) {
      const b = new WebGPUBackend(base.gpu, src, { kernels });
      const names = pipelinesRun(b);
      try {
        const cache: KVCache = b.createKVCache({ nLayers: 1, nKvHeads: g.nKv, headDim: g.hd, pageSize: P, numPages: pages, dtype: 'kv4', group: g.G });
        const l: StepLayout = { pos: Int32Array.from(pos), seq: Int32Array.from(seq), blockTables: [Int32Array.from({ length: pages }, (_, i) => i)] };
        const T = pos.length;
        b.attention(b.ropeKvAppend(b.fromHost(randn(1, T * Q), [T, Q]), b.fromHost(randn(2, T * C), [T, C]), b.fromHost(randn(3, T * C), [T, C]), cache, 0, l, rope), cache, 0, l, g.nH);
        b.endStep();
        expect(names.some((n) => n.startsWith('rope_kv_append')) && !names.includes('attention_kv4_split_rope'), `${kernels}, ${pages} pages, positions ${pos}: ${names}`).toBe(true);
      } finally { b.dispose(); }
    }
  }, 120_000);
}, (c) => c.name === 'webgpu');
