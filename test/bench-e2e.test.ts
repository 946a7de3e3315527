// `comet bench e2e` runs end to end on the simulator at a toy shape (the GPU run uses the same code): the
// correctness gate, the synthetic FMPQ model, all three measurements (the max-throughput run through the engine) and
// the report files.
import { expect, it } from 'vitest';
import { tempDir } from './helpers/tmp.ts';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './helpers/shared.ts';

it('bench e2e on the simulator writes its table, JSON and plots', () => {
  const dir = tempDir('comet-e2e-');
  const shape = join(dir, 'tiny.json');
  writeFileSync(shape, JSON.stringify({ dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512, seqLen: 512, normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2] }));
  const r = spawnSync(process.execPath, [join(REPO, 'bin/comet.js'), 'bench', 'e2e', '--shape', shape, '--backend', 'sim', '--batches', '1,2', '--ctx', '32', '--in-len', '16', '--out-len', '4', '--mem-budget', '0.05', '--block', '32', '--no-baseline', '--steps', '2', '--throughput', '6', '--mixed', '5', '--prefix', '3', '--step-tokens', '40', '--out', dir], { encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/greedy tokens on sim equal the simulator's/);
  const files = readdirSync(dir);
  expect(files.filter((f) => f.endsWith('.svg'))).toHaveLength(2);
  const j = JSON.parse(readFileSync(join(dir, files.find((f) => f.endsWith('.json') && f.startsWith('e2e'))!), 'utf8'));
  expect(j.decode.map((d: { batch: number }) => d.batch)).toEqual([1, 2]);
  expect(j.int8MacFraction).toBeGreaterThan(0);
  // the max-throughput run went through the engine: every request streamed all its tokens, several prompts were
  // prefilled in one step (budget 40 tokens, prompts of 16), no KV page leaked
  const sv = j.serve.fixed;
  expect(sv.requests).toBe(6);
  expect(sv.output_tokens).toBe(6 * 4);
  expect(sv.errors).toEqual([]);
  expect(sv.peak_prefills).toBeGreaterThan(1);
  expect(sv.kv_pages_leaked).toBe(0);
  expect(sv.ttft_ms.p50).toBeGreaterThan(0);
  expect(sv.step_time.mixed.steps + sv.step_time.decode.steps).toBe(sv.steps);
  expect(j.serve.mixed.requests).toBe(5);
  expect(j.serve.mixed.kv_pages_leaked).toBe(0);
  // prefix caching: the second and third requests hit the shared 16-token prefix's page; same tokens on and off
  expect(j.serve.prefix.equal).toBe(true);
  expect(j.serve.prefix.on.hit_pages).toBe(2);
  expect(j.serve.prefix.off.prefill_tokens - j.serve.prefix.on.prefill_tokens).toBe(2 * 16);
  expect(readFileSync(join(dir, files.find((f) => f.endsWith('-tokens.svg'))!), 'utf8')).toMatch(/^<svg/);
});
