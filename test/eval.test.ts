// comet eval ppl scores a model with its own KV cache: a KV4 model is evaluated on KV4 pages (not silently on
// an f32 cache), with its KV group.
import { expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import type { KVCacheSpec } from '../backends/backend.ts';
import { loadModel } from '../src/loaders/index.ts';
import { Llama } from '../src/model/llama.ts';
import { perplexity } from '../src/eval/ppl.ts';
import { REPO } from './helpers/shared.ts';

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
  expect(() => new Llama(new Small(), m.config, m.weights)).toThrow(/weights need 0\.00 GiB on sim, which has 0\.00 GiB free/);
  expect(uploads).toBe(0);
  try { new Llama(new Small(), m.config, m.weights); } catch (e) { expect((e as { code?: string }).code).toBe('out_of_memory'); }
});
