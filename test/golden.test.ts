// Issue 3's contract: the float reference path reproduces llama2.c (stories260K, .bin and HF layouts) and
// Hugging Face transformers (wikillama-28M) token for token, with logits within 1e-4 / 1e-3.
import { describe, expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import { openModel } from '../src/runtime/open.ts';
import { generate } from '../src/engine/generate.ts';
import { singleSequenceCache } from '../src/engine/generate.ts';
import { perplexity } from '../src/eval/ppl.ts';
import { readFileSync } from 'node:fs';
import { golden, readF32, shared, assertTokensMatch, type Golden } from './helpers/shared.ts';
import type { OpenModel } from '../src/runtime/open.ts';

async function greedy(m: OpenModel, g: Golden): Promise<number[]> {
  const n = g.tokens.length - g.prompt_tokens.length;
  const out = [...g.prompt_tokens];
  for await (const t of generate(m.model, g.prompt_tokens, { maxTokens: n, temperature: 0, topP: 0, topK: 0, seed: 0, stop: m.stop })) out.push(t);
  return out;
}

/** logits of every position of `tokens`, one prefill step */
async function allLogits(m: OpenModel, tokens: number[]): Promise<Float32Array> {
  const T = tokens.length;
  const { cache, blockTable } = singleSequenceCache(m.model, T);
  const layout = { pos: Int32Array.from({ length: T }, (_, i) => i), seq: new Int32Array(T), blockTables: [blockTable] };
  return m.model.be.read(m.model.forward(Int32Array.from(tokens), layout, cache, Int32Array.from({ length: T }, (_, i) => i)));
}

const maxAbsDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

const s260k = ['s260k_Once_upon_a_time.json', 's260k_Lily_and_her_mom_went_to.json', 's260k_EMPTY.json', 's260k_The_sun_was_shining.json'];

describe.each([
  ['llama2.c .bin', shared('tinyllamas/stories260K.bin'), shared('tinyllamas/tok512.bin')],
  ['Hugging Face dir', shared('hf/stories260K'), undefined],
])('stories260K from %s', (_, path, tok) => {
  it.each(s260k)('greedy tokens equal llama2.c: %s', async (file) => {
    const m = await openModel(new SimBackend(), path, tok);
    const g = golden(file);
    expect(m.tokenizer.encode(g.prompt)).toEqual(g.prompt_tokens);
    const got = await greedy(m, g);
    expect(assertTokensMatch(got, g)).toBeGreaterThan(g.prompt_tokens.length + 40);
  });

  it('logits match s260k_Once_upon_a_time.logits.f32 to 1e-4', async () => {
    const m = await openModel(new SimBackend(), path, tok);
    const g = golden('s260k_Once_upon_a_time.json');
    const want = readF32(shared('golden/s260k_Once_upon_a_time.logits.f32'));
    const got = await allLogits(m, g.tokens.slice(0, 150));
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4);
  });
});

describe('wikillama-28M (HF sharded BF16) against transformers', () => {
  const path = shared('wikillama-28M');
  it.each(['wl28m_The_history_of.json', 'wl28m_Music_is.json', 'wl28m_The_city_is_located.json', 'wl28m_The_first.json'])(
    'greedy tokens: %s', async (file) => {
      const m = await openModel(new SimBackend(), path);
      const g = golden(file);
      expect(m.tokenizer.encode(g.prompt)).toEqual(g.prompt_tokens);
      const got = await greedy(m, g);
      expect(assertTokensMatch(got, g)).toBeGreaterThan(g.prompt_tokens.length);
    });

  it('logits match wl28m_The_history_of.logits.f32 to 1e-3', async () => {
    const m = await openModel(new SimBackend(), path);
    const g = golden('wl28m_The_history_of.json');
    const want = readF32(shared('golden/wl28m_The_history_of.logits.f32'));
    const got = await allLogits(m, g.tokens);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-3);
  });

  it('perplexity of the first 4 windows of wiki_heldout_a.txt at ctx 512 is 20.2819 ± 0.2%', async () => {
    const m = await openModel(new SimBackend(), path);
    const tokens = m.tokenizer.encode(readFileSync(shared('texts/wiki_heldout_a.txt'), 'utf8'), { bos: false });
    expect(tokens.length).toBe(268430);
    const r = await perplexity(m.model, tokens, 512, 4);
    expect(r.windows).toBe(4);
    expect(r.scored).toBe(4 * 511);
    expect(Math.abs(r.ppl / 20.2819 - 1)).toBeLessThan(0.002);
  }, 400_000);
});
