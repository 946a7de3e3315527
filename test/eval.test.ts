// comet eval ppl: the float reference path's perplexity on wikillama-28M against the reference value (DESIGN §8),
// and a model scored with its own KV cache: a KV4 model is evaluated on KV4 pages (not silently on an f32
// cache), with its KV group.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import type { KVCacheSpec } from '../backends/backend.ts';
import { loadModel } from '../src/loaders/index.ts';
import { Llama } from '../src/model/llama.ts';
import { perplexity } from '../src/eval/ppl.ts';
import { openModel } from '../src/runtime/open.ts';
import { checkFits } from '../src/runtime/fits.ts';
import { REPO, shared } from './helpers/shared.ts';

it('perplexity of the first 4 windows of wiki_heldout_a.txt at ctx 512 is 20.2819 ± 0.2% (wikillama-28M, float)', async () => {
  const m = await openModel(new SimBackend(), shared('wikillama-28M'));
  const tokens = m.tokenizer.encode(readFileSync(shared('texts/wiki_heldout_a.txt'), 'utf8'), { bos: false });
  expect(tokens.length).toBe(268430);
  const r = await perplexity(m.model, tokens, 512, 4);
  expect(r.windows).toBe(4);
  expect(r.scored).toBe(4 * 511);
  expect(Math.abs(r.ppl / 20.2819 - 1)).toBeLessThan(0.002);
}, 400_000);

it('perplexity runs on the model\'s KV dtype and group', async () => {
  const m = await loadModel(`${REPO}/models/stories260K.bin`);
  const specs: KVCacheSpec[] = [];
  class Spy extends SimBackend {
    override createKVCache(spec: KVCacheSpec) { specs.push(spec); return super.createKVCache(spec); }
  }
  const tokens = Array.from({ length: 256 }, (_, i) => 3 + ((i * 37) % 500));
  const f32 = await perplexity(new Llama(new Spy(), m.config, m.weights), tokens, 64, 2);
  const kv4 = await perplexity(new Llama(new Spy(), m.config, m.weights, 'kv4', 4), tokens, 64, 2);
  expect(specs.map((s) => [s.dtype, s.group])).toEqual([['f32', 8], ['kv4', 4]]);
  expect(kv4.ppl).not.toBe(f32.ppl); // 4-bit pages change the scores
  expect(Math.abs(kv4.ppl / f32.ppl - 1)).toBeLessThan(0.5);
});

it('a model too large for the device is a clear error before any weight is uploaded', async () => {
  const m = await loadModel(`${REPO}/models/stories260K.bin`);
  let uploads = 0;
  class Small extends SimBackend {
    memory() { return { free: 100_000, total: 200_000 }; }
    override uploadWeight(w: Parameters<SimBackend['uploadWeight']>[0]) { uploads++; return super.uploadWeight(w); }
  }
  const open = () => openModel(new Small(), `${REPO}/models/stories260K.bin`);
  await expect(open()).rejects.toThrow(/weights need 0\.00 GiB on sim, which has 0\.00 GiB free/);
  expect(uploads).toBe(0);
  await expect(open()).rejects.toMatchObject({ code: 'out_of_memory' });
  expect(() => checkFits(new Small(), m.weights.values())).toThrow(/0\.00 GiB free of 0\.00 GiB/);
});

it('lockstepDifference names the first step and tensor where two backends part (comet eval verify --explain)', async () => {
  const { lockstepDifference } = await import('../src/eval/verify.ts');
  const { SimTensor } = await import('../backends/sim/sim.ts');
  const m = await loadModel(`${REPO}/models/stories260K.bin`);
  // a backend whose residual add is off by one ulp-ish amount from position 5 on, in layer 2's attention residual
  let adds = 0;
  class Off extends SimBackend {
    override add(a: Parameters<SimBackend['add']>[0], b: Parameters<SimBackend['add']>[1]) {
      const t = super.add(a, b) as InstanceType<typeof SimTensor>;
      if (adds++ % 10 === 4 && t.shape[0] === 1) t.data[3] += 1e-3; // layer 2 attn_res of a decode step
      return t;
    }
  }
  const a = new Llama(new SimBackend(), m.config, m.weights, 'kv4'), b = new Llama(new Off(), m.config, m.weights, 'kv4');
  const seq = [1, 403, 407, 261, 378, 500, 300, 280];
  const lines = await lockstepDifference(a, b, seq, 4);
  expect(lines[0]).toMatch(/^first difference at step 1 \(positions 4\.\.4\)/);
  expect(lines[1]).toMatch(/^ {2}l2\.attn_res: 1 of 64 differ \(first at 3/);
  expect(lines.some((l) => /KV layer 3 page 0 head \d kCodes slot 4 \(position 4, written this step\)/.test(l)) || lines.some((l) => /^ {2}l3\./.test(l))).toBe(true);
  // the same backend twice: no difference
  expect(await lockstepDifference(a, new Llama(new SimBackend(), m.config, m.weights, 'kv4'), seq, 4)).toEqual(['no difference at any step (logits, named tensors, KV bytes)']);
});
