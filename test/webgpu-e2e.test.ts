// End to end on WebGPU (Node, Dawn; SwiftShader on CI): stories260K from ../shared (fails loudly without it)
// on the four golden prompts, 150 tokens each (as the llama2.c runs in ../shared/models/golden).
//   float path  greedy tokens equal the simulator's and llama2.c's (up to a golden near-tie).
//   W4A4KV4     the model quantized here (calibration on the golden texts; FMPQ B = 32, a quarter of the blocks
//               INT8, RTN weights, KV4 cache). The GEMM and the quantizers are bit-exact on WebGPU, but
//               attention, softmax, rmsnorm and silu are f32 here (tier 3; the simulator computes them in f64),
//               and an activation that lands within an ulp of a rounding boundary gets the neighbouring code:
//               one INT4 code moves a value by amax/7, which moves later logits by ~0.1-3 (traced with the
//               Graph taps: first l2.o_proj.in_q, 3 of 68 bytes, 67 vs 68, then everything downstream).
//               So the contract is measured agreement: teacher-forced on the simulator's greedy text, the
//               logits agree to 1e-4 at most steps and the next-token choice agrees at nearly all; free-running
//               greedy tokens agree for a long prefix. The thresholds sit well below what was measured.
import { beforeAll, describe, expect, it } from 'vitest';
import type { Backend, HostWeight } from '../backends/backend.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { openModel } from '../src/runtime/open.ts';
import { generate, singleSequenceCache } from '../src/engine/generate.ts';
import { Llama } from '../src/model/llama.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { assertTokensMatch, golden, shared } from './helpers/shared.ts';
import { createWebGPUBackend, type WebGPUBackend } from '../backends/webgpu/webgpu.ts';

/** The WebGPU backend, once per file. No adapter is a failure, never a skip: the message says why and how
 *  (SwiftShader's env vars; .ci/webgpu-env.sh sets them on CI). */
let gpuBackend: Promise<WebGPUBackend> | undefined;
const webgpu = (): Promise<WebGPUBackend> =>
  (gpuBackend ??= createWebGPUBackend().catch((e) => { throw new Error(`WebGPU tests need an adapter and have none: ${(e as Error).message}`); }));

const GOLDEN = ['s260k_Once_upon_a_time.json', 's260k_Lily_and_her_mom_went_to.json', 's260k_EMPTY.json', 's260k_The_sun_was_shining.json'];

async function greedy(model: Llama, prompt: number[], n: number, stop: number[]): Promise<number[]> {
  const out = [...prompt];
  for await (const t of generate(model, prompt, { maxTokens: n, temperature: 0, topP: 0, topK: 0, seed: 0, stop })) out.push(t);
  return out;
}

/** Prefill seq[0, P), then one decode step per later token: the logits of every step (step i predicts seq[P + i]). */
async function teacherForced(model: Llama, seq: number[], P: number): Promise<Float32Array[]> {
  const { cache, blockTable } = singleSequenceCache(model, seq.length, model.kvDType);
  const out: Float32Array[] = [];
  for (let pos = 0; pos < seq.length - 1;) {
    const T = pos === 0 ? P : 1;
    const layout = { pos: Int32Array.from({ length: T }, (_, i) => pos + i), seq: new Int32Array(T), blockTables: [blockTable] };
    out.push(await model.be.read(model.forward(Int32Array.from(seq.slice(pos, pos + T)), layout, cache, Int32Array.of(T - 1))));
    model.be.endStep();
    pos += T;
  }
  return out;
}
const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('webgpu end to end: stories260K', () => {
  let gpu: Backend, config: LlamaConfig, weights: Map<string, HostWeight>, stop: number[];
  beforeAll(async () => {
    gpu = await webgpu();
    const m = await openModel(new SimBackend(), shared('tinyllamas/stories260K.bin'), shared('tinyllamas/tok512.bin'));
    config = m.loaded.config; weights = m.loaded.weights; stop = m.stop;
  });

  it('float path: greedy tokens equal the simulator and llama2.c on the golden prompts', async () => {
    const sim = new Llama(new SimBackend(), config, weights, 'f32'), model = new Llama(gpu, config, weights, 'f32');
    for (const file of GOLDEN) {
      const g = golden(file), n = g.tokens.length - g.prompt_tokens.length;
      const got = await greedy(model, g.prompt_tokens, n, stop);
      expect(got, file).toEqual(await greedy(sim, g.prompt_tokens, n, stop));
      assertTokensMatch(got, g);
    }
  });

  it('W4A4KV4: teacher-forced logits and choices agree with the simulator; greedy prefixes agree', async () => {
    const { calibrate } = await import('../src/quant/calibrate.ts');
    const { quantizeModel } = await import('../src/quant/quantize.ts');
    const gs = GOLDEN.map(golden);
    const stats = await calibrate(new Llama(new SimBackend(), config, weights), gs.flatMap((g) => g.tokens), { ctx: 64 });
    const q = quantizeModel(config, weights, stats, { B: 32, order: 'absmax', int8Fraction: 0.25, weights: 'rtn', kv: 'kv4' });
    const sim = new Llama(new SimBackend(), config, q.weights, 'kv4'), model = new Llama(gpu, config, q.weights, 'kv4');
    const report: string[] = [];
    let steps = 0, close = 0, same = 0, prefix = 0;
    for (const g of gs) {
      const n = g.tokens.length - g.prompt_tokens.length, P = g.prompt_tokens.length;
      const want = await greedy(sim, g.prompt_tokens, n, stop);
      const a = await teacherForced(sim, want, P), b = await teacherForced(model, want, P);
      // greedy on WebGPU runs exactly these steps until its first different choice: its identical prefix
      const d = b.findIndex((x, i) => argmax(x) !== want[P + i]), agree = d < 0 ? b.length : d;
      let c = 0, s = 0;
      a.forEach((x, i) => { if (maxAbs(x, b[i]) < 1e-4) c++; if (argmax(x) === argmax(b[i])) s++; });
      steps += a.length; close += c; same += s; prefix += agree;
      report.push(`${JSON.stringify(g.prompt)}: greedy identical for ${agree} of ${want.length - P} tokens; teacher-forced |dlogit| < 1e-4 at ${c}/${a.length} steps, same choice at ${s}/${a.length}`);
      expect(agree, report.join('\n')).toBeGreaterThanOrEqual(16);
    }
    console.log(`webgpu W4A4KV4 stories260K:\n${report.join('\n')}`);
    expect(close / steps, report.join('\n')).toBeGreaterThan(0.5);
    expect(same / steps, report.join('\n')).toBeGreaterThan(0.9);
    expect(prefix / gs.length, report.join('\n')).toBeGreaterThan(40);
  });
});

// wikillama-28M (hidden 512, B = 128 blocks, GQA 8/4, head_dim 64) as a .comet file, quantized here by the CLI's
// path (`comet quantize`, 512 calibration tokens taken from the end of wiki_heldout_a.txt, never the prompts).
// SwiftShader runs it at ~1 s per token, so: 4 golden prompts × 6 new tokens, same contract as above.
describe('webgpu end to end: wikillama-28M .comet (W4A4KV4, B = 128)', () => {
  it('greedy tokens agree with the simulator (measured agreement, as for stories260K)', async () => {
    const gpu = await webgpu();
    const { mkdtempSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { quantize } = await import('../src/cli/quantize.ts');
    const out = join(mkdtempSync(join(tmpdir(), 'comet-wg-')), 'wl.comet');
    await quantize({ model: shared('wikillama-28M'), calib: shared('texts/wiki_heldout_a.txt'), out, calibTokens: 512, ctx: 512, block: 128, weights: 'rtn', order: 'absmax', kv: 'kv4', json: true });
    const sim = await openModel(new SimBackend(), out), model = await openModel(gpu, out);
    expect(sim.model.kvDType).toBe('kv4');
    let agree = 0, total = 0;
    const report: string[] = [];
    for (const file of ['wl28m_The_history_of.json', 'wl28m_Music_is.json', 'wl28m_The_city_is_located.json', 'wl28m_The_first.json']) {
      const g = golden(file), P = g.prompt_tokens.length;
      const want = await greedy(sim.model, g.prompt_tokens, 6, sim.stop), got = await greedy(model.model, g.prompt_tokens, 6, model.stop);
      let d = P;
      while (d < want.length && got[d] === want[d]) d++;
      agree += d - P; total += want.length - P;
      report.push(`${JSON.stringify(g.prompt)}: identical for ${d - P} of ${want.length - P}`);
    }
    console.log(`webgpu W4A4KV4 wikillama-28M:\n${report.join('\n')}`);
    expect(agree / total, report.join('\n')).toBeGreaterThanOrEqual(0.75);
  }, 400_000);
});
