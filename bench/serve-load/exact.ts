// Batching exactness on any backend: N concurrent greedy requests through the engine against generate()
// alone on the same backend; prints how many match exactly, where the others first differ, and whether
// every KV page came back. (On the simulator test/engine.test.ts asserts this; a GPU backend whose kernels
// are not per-row deterministic may differ, and this says by how much.)
//   npx tsx bench/serve-load/exact.ts --backend cuda [--model m] [--requests 32] [--max-tokens 64] [--kv-pages n] [--max-step-tokens n]
import { parseArgs } from 'node:util';
import { createBackend } from '../../src/runtime/backends.ts';
import { openModel } from '../../src/runtime/open.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { generate } from '../../src/engine/generate.ts';

const { values: a } = parseArgs({ options: { backend: { type: 'string', default: 'sim' }, model: { type: 'string' }, requests: { type: 'string', default: '32' }, 'max-tokens': { type: 'string', default: '64' }, 'kv-pages': { type: 'string' }, 'max-step-tokens': { type: 'string' } } });
const N = Number(a.requests), maxTokens = Number(a['max-tokens']);
const be = await createBackend(a.backend!);
const m = await openModel(be, a.model);
const SUBJECTS = ['a little dog', 'a small cat', 'Lily', 'Tom', 'a red bird', 'the sun', 'a big boat', 'Mom'];
const prompts = Array.from({ length: N }, (_, i) => `${i % 2 ? 'Once upon a time' : 'One day'}, ${SUBJECTS[i % 8]}${' and a friend'.repeat(i % 5)}`);
const ids = prompts.map((p) => m.tokenizer.encode(p, { bos: true }));

const alone: number[][] = [];
const t0 = performance.now();
for (const p of ids) {
  const out: number[] = [];
  for await (const t of generate(m.model, p, { maxTokens, temperature: 0, topP: 1, topK: 0, seed: 0, stop: m.stop })) out.push(t);
  alone.push(out);
}
const tAlone = performance.now() - t0;
// --kv-pages small forces preemption; --max-step-tokens small forces chunked prefill
const c = m.model.config, pageBytes = (await import('../../src/engine/kv-pages.ts')).pageBytes({ nLayers: c.nLayers, nKvHeads: c.nKvHeads, headDim: c.headDim, pageSize: 16, dtype: m.model.kvDType, group: c.headDim });
const e = await createEngine(m, { maxBatch: N, kvMemory: a['kv-pages'] ? Number(a['kv-pages']) * pageBytes : undefined, maxStepTokens: a['max-step-tokens'] ? Number(a['max-step-tokens']) : undefined });
const t1 = performance.now();
const got = await Promise.all(ids.map((p) => e.completions.create({ prompt: p, max_tokens: maxTokens, temperature: 0 })));
const tBatch = performance.now() - t1;
const text = (toks: number[], p: number[]) => {
  const d = new TextDecoder();
  let prev = p[p.length - 1], s = '';
  for (const t of toks) { s += d.decode(m.tokenizer.pieceBytes(prev, t), { stream: true }); prev = t; }
  return s + d.decode();
};
let same = 0;
const diffs: { i: number; at: number }[] = [];
got.forEach((g, i) => {
  const want = text(alone[i], ids[i]), have = g.choices[0].text;
  if (want === have) same++;
  else diffs.push({ i, at: [...want].findIndex((c, k) => c !== [...have][k]) });
});
const kv = e.pool.stats();
console.log(JSON.stringify({
  backend: be.name, model: a.model ?? 'stories260K', kvDType: m.model.kvDType, requests: N, maxTokens,
  exact: same, differ: diffs, kvPagesLeaked: kv.used, aloneTokPerS: +(alone.flat().length / (tAlone / 1000)).toFixed(1),
  batchedTokPerS: +(got.reduce((u, g) => u + g.usage.completion_tokens, 0) / (tBatch / 1000)).toFixed(1), stats: e.stats(),
}, null, 1));
be.dispose();
