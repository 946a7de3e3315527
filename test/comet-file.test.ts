// .comet files (DESIGN §3.6): quantize -> write -> read is the identity on every tensor; a corrupt or truncated
// file fails with an error that names the tensor; a .comet runs from the file alone (embedded tokenizer);
// greedy generation of a quantized wikillama-28M stays close to the float model's.
import { copyFileSync, existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/tmp.ts';
import type { HostWeight } from '../backends/backend.ts';
import { f16Bits } from '../simulator/f16.ts';
import { SimBackend } from '../backends/sim/sim.ts';
import { CometError } from '../src/errors.ts';
import { loadModel, type LoadedModel } from '../src/loaders/index.ts';
import { loadComet, tokenizerFiles, writeComet } from '../src/loaders/comet.ts';
import { SafetensorsFile } from '../src/loaders/safetensors.ts';
import { loadTokenizer } from '../src/tokenizer/index.ts';
import { Llama } from '../src/model/llama.ts';
import { openModel } from '../src/runtime/open.ts';
import { generate, singleSequenceCache } from '../src/engine/generate.ts';
import { calibrate } from '../src/quant/calibrate.ts';
import { quantizeModel, type QuantizeOptions } from '../src/quant/quantize.ts';

const MODELS = fileURLToPath(new URL('../../shared/models/', import.meta.url));
if (!existsSync(MODELS)) throw new Error(`test data missing: ${MODELS} (DESIGN.md §8); these tests never skip`);
const S260K = join(MODELS, 'tinyllamas/stories260K.bin');
const WL28M = join(MODELS, 'wikillama-28M');
const tmp = tempDir('comet-file-');

/** Quantize a float model on the tail of a text and write it; returns the in-memory result too. */
async function makeComet(modelPath: string, text: string, out: string, o: Omit<QuantizeOptions, 'kv'> & { kv?: 'f32' | 'kv4' }, calibTokens: number) {
  const lm = await loadModel(modelPath);
  const tok = await loadTokenizer(lm.tokenizerPath!);
  const all = tok.encode(readFileSync(join(MODELS, 'texts', text), 'utf8').slice(-calibTokens * 8), { bos: false });
  const calib = all.slice(-calibTokens);
  const stats = await calibrate(new Llama(new SimBackend(), lm.config, lm.weights), calib, { ctx: Math.min(512, calib.length), hessian: o.weights === 'gptq' });
  const r = quantizeModel(lm.config, lm.weights, stats, { kv: 'kv4', ...o });
  r.meta.calib = { file: text, sha256: 'test', tokens: calib.length, slice: 'tail' };
  writeComet(out, { config: lm.config, weights: r.weights, quant: r.meta, weightError: r.weightError, tokenizer: tokenizerFiles(lm.tokenizerPath!, (p) => readFileSync(p)) });
  return { lm, r };
}

const bytesOf = (w: HostWeight): Uint8Array[] =>
  w.kind !== 'w4' ? [new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength)]
    : [w.codes, new Uint8Array(w.scales.buffer, w.scales.byteOffset, w.scales.byteLength), ...(w.act.perm ? [new Uint8Array(w.act.perm.buffer, w.act.perm.byteOffset, w.act.perm.byteLength)] : [])];

describe('stories260K .comet (B = 32, GPTQ, KV4)', () => {
  const path = join(tmp, 's260.comet');
  let made: Awaited<ReturnType<typeof makeComet>>;
  let loaded: LoadedModel;
  beforeAll(async () => {
    made = await makeComet(S260K, 'tinystories_valid_head.txt', path, { B: 32, order: 'absmax', int8Fraction: 0.15, weights: 'gptq' }, 1024);
    loaded = await loadComet(path);
  }, 120_000);

  it('the classifier (the tied embedding) is stored in f16: the float model\'s values rounded to nearest even', () => {
    const w = loaded.weights.get('tok_embed')!, f = made.lm.weights.get('tok_embed')!;
    expect(w.kind).toBe('f16');
    if (w.kind !== 'f16' || f.kind !== 'f32') return;
    expect(SafetensorsFile.open(path).tensors.get('tok_embed')?.dtype).toBe('F16');
    let bad = -1;
    for (let i = 0; i < f.data.length && bad < 0; i++) if (w.data[i] !== f16Bits(f.data[i])) bad = i;
    expect(bad).toBe(-1);
  });

  it('round trip: every tensor, spec and the config come back identical', () => {
    expect(loaded.config).toEqual(made.lm.config);
    expect([...loaded.weights.keys()].sort()).toEqual([...made.r.weights.keys()].sort());
    for (const [name, w] of made.r.weights) {
      const v = loaded.weights.get(name)!;
      expect(v.kind, name).toBe(w.kind);
      if (w.kind === 'w4' && v.kind === 'w4') expect({ ...v.act, perm: undefined }, name).toEqual({ ...w.act, perm: undefined });
      const a = bytesOf(w), b = bytesOf(v);
      expect(b.length, name).toBe(a.length);
      a.forEach((x, i) => expect(Buffer.compare(Buffer.from(x), Buffer.from(b[i])), name).toBe(0));
    }
    const meta = loaded.meta as Record<string, any>;
    expect(meta.kvDType).toBe('kv4');
    expect(meta.quant.B).toBe(32);
    expect(meta.weightError).toEqual(made.r.weightError);
  });

  it('loadModel dispatches .comet files to loadComet', async () => {
    const m = await loadModel(path);
    expect(m.format).toBe('comet');
  });

  it('runs end to end from the file alone: embedded tokenizer, W4Ax GEMMs, KV4 cache', async () => {
    const be = new SimBackend();
    const { model, tokenizer, stop } = await openModel(be, path);
    expect(model.kvDType).toBe('kv4');
    const prompt = tokenizer.encode('Once upon a time', { bos: true });
    const out: number[] = [];
    for await (const t of generate(model, prompt, { maxTokens: 24, temperature: 0, topP: 1, topK: 0, seed: 1, stop })) out.push(t);
    expect(out.length).toBeGreaterThan(8);
    const text = tokenizer.decode(out);
    expect(text).toMatch(/[a-z]{3}/); // words, not noise
  });

  it('a flipped byte inside a tensor is an error naming that tensor', async () => {
    const bad = join(tmp, 'corrupt.comet');
    copyFileSync(path, bad);
    const st = SafetensorsFile.open(bad);
    const t = st.info('l2.w_up.codes'), at = st.dataStart + t.begin + 5;
    st.close();
    const buf = readFileSync(bad);
    buf[at] ^= 0x10;
    writeFileSync(bad, buf);
    await expect(loadComet(bad)).rejects.toThrow(/tensor 'l2\.w_up\.codes' is corrupt/);
    await expect(loadComet(bad)).rejects.toBeInstanceOf(CometError);
  });

  it('a truncated file is an error naming the first tensor that no longer fits', async () => {
    const bad = join(tmp, 'truncated.comet');
    copyFileSync(path, bad);
    const st = SafetensorsFile.open(bad);
    const last = [...st.tensors.values()].sort((a, b) => b.end - a.end)[0];
    st.close();
    truncateSync(bad, statSync(bad).size - 3);
    await expect(loadComet(bad)).rejects.toThrow(new RegExp(`tensor '${last.name.replace(/[./]/g, '\\$&')}'`));
  });

  it('a wrong shape or a broken permutation names the tensor', async () => {
    const { weights } = made.r;
    const wq = weights.get('l0.wq')!;
    if (wq.kind !== 'w4' || !wq.act.perm) throw new Error('expected a permuted w4 weight');
    const perm = wq.act.perm.slice();
    perm[1] = perm[0]; // no longer a permutation
    const bad = join(tmp, 'badperm.comet');
    const w2 = new Map(weights);
    w2.set('l0.wq', { ...wq, act: { ...wq.act, perm } });
    writeComet(bad, { config: made.lm.config, weights: w2, quant: made.r.meta, weightError: made.r.weightError, tokenizer: tokenizerFiles(made.lm.tokenizerPath!, (p) => readFileSync(p)) });
    await expect(loadComet(bad)).rejects.toThrow(/linear 'l0\.wq'.*not a permutation/);
  });
});

describe('wikillama-28M .comet (B = 128, RTN, FMPQ 15% INT8 MACs, KV4): greedy tokens near the float model', () => {
  // Eight prompts: the first 12 tokens of eight lines of wikitext2 (not the calibration text).
  // The float model continues each greedily for 16 tokens; the quantized model reads the same prompt + float
  // continuation (teacher forcing, so one early flip does not decide the rest) and we count the positions where
  // its argmax is the float model's next token. Free-running greedy diverges early on a 28M model whose top-2
  // logits are often close (a 15%-perplexity model flips the first token of some prompts), so the per-position
  // agreement is the stable measure. MEASURED below; the bound keeps a margin of ~0.1 (about 14 of 128 positions)
  // for changes of calibration or rounding that move a few near-ties.
  // 97/128 positions, first token equal on 7/8 prompts (2026-11-24); 94/128 and 4/8 (2026-12-02) since the KV4
  // attention contract (INT8 q, 15-bit softmax weights) and the f16 classifier: three more first tokens moved (not
  // examined further); a .comet of the same recipe scores 30.890 on CUDA over all 524 windows of wiki_heldout_a, the
  // accuracy table's row 30.896 (bench/results/decode)
  const MEASURED = 0.734, BOUND = 0.65;
  const path = join(tmp, 'wl28m.comet');
  beforeAll(async () => {
    await makeComet(WL28M, 'wiki_heldout_a.txt', path, { B: 128, order: 'absmax', int8Fraction: 0.15, weights: 'rtn' }, 512);
  }, 300_000);

  it(`agrees with the float model on >= ${BOUND} of the greedy tokens (teacher-forced)`, async () => {
    const be = new SimBackend();
    const q = await openModel(be, path), f = await openModel(be, WL28M);
    const lines = readFileSync(join(MODELS, 'texts/wikitext2_test_raw_nonblank_crlf.txt'), 'utf8').split('\n').filter((l) => l.length > 200 && !l.trim().startsWith('='));
    const opts = { maxTokens: 16, temperature: 0, topP: 1, topK: 0, seed: 1, stop: [] as number[] };
    let agree = 0, total = 0, firstFree = 0;
    for (let i = 0; i < 8; i++) {
      const ids = f.tokenizer.encode(lines[i * 7], { bos: true }).slice(0, 12);
      const cont: number[] = [];
      for await (const t of generate(f.model, ids, opts)) cont.push(t);
      const seq = [...ids, ...cont];
      const { cache, blockTable } = singleSequenceCache(q.model, seq.length, 'kv4');
      const rows = Int32Array.from(cont, (_, j) => ids.length - 1 + j);
      const layout = { pos: Int32Array.from(seq, (_, j) => j), seq: new Int32Array(seq.length), blockTables: [blockTable] };
      const am = await be.argmax(q.model.forward(Int32Array.from(seq), layout, cache, rows));
      cont.forEach((t, j) => { if (am[j] === t) agree++; });
      if (am[0] === cont[0]) firstFree++;
      total += cont.length;
    }
    console.log(`wikillama-28M .comet: teacher-forced greedy agreement ${agree}/${total} = ${(agree / total).toFixed(3)}; first token equal on ${firstFree}/8 prompts (MEASURED ${MEASURED})`);
    expect(agree / total).toBeGreaterThanOrEqual(BOUND);
    expect(firstFree).toBeGreaterThanOrEqual(4);
  }, 300_000);
});
