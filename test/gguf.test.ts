// GGUF in and out, checked against llama.cpp (npm node-llama-cpp 3.21.1 on the CPU: a peer no one here wrote).
//   - COMET's F32 exports of stories260K and wikillama-28M give, in llama.cpp, COMET's float-path greedy tokens,
//     and next-token probabilities within PROB_TOL at every position (teacher-forced along those tokens).
//   - COMET's Q8_0 and Q4_0 exports of wikillama-28M (llama.cpp's block formats), read back by COMET, give
//     llama.cpp's greedy tokens on the same files, except at near-ties (llama.cpp also rounds each activation row
//     to Q8_0 there; COMET keeps f32): teacher-forced, COMET's top-2 margin where they part stays under TIE; and the
//     weights COMET read back, run by llama.cpp as an F32 file, give COMET's greedy tokens on every prompt.
//   - The GGUF tokenizer COMET writes tokenizes as llama.cpp does; round trips keep weights, config, tokenizer.
//   - Q4_K and Q6_K (which COMET reads but does not write) dequantize as ggml's own to_float does, on blocks
//     that ggml's quantizer made (test/peers/ggml_blocks.py loads llama.cpp's libggml-base through ctypes).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimBackend } from '../backends/sim/sim.ts';
import { f16Bits, fromF16Bits } from '../simulator/f16.ts';
import { generate, singleSequenceCache } from '../src/engine/generate.ts';
import { tokenizerFiles } from '../src/loaders/comet.ts';
import { dequantize, GGML } from '../src/loaders/formats/ggml.ts';
import type { GgufWriteType } from '../src/loaders/formats/gguf.ts';
import { writeGguf } from '../src/loaders/gguf.ts';
import { openModel, type OpenModel } from '../src/runtime/open.ts';
import { REPO, shared } from './helpers/shared.ts';
import { ensureLlamaCpp, runLlamaCpp } from './peers/llama-cpp.ts';

// Measured 2026-12-02 (this machine, llama.cpp with an F32 KV cache): F32 files max |dp| ~1e-5; Q8_0/Q4_0 files,
// where llama.cpp's CPU kernels also quantize each activation row to Q8_0 (COMET reads the weights to float and
// keeps activations in f32), worst margin (below) 0.099 (Q8_0) and 0.069 (Q4_0), max |dp| 0.039 and 0.027.
const PROB_TOL = { f32: 2e-3, q8_0: 0.08, q4_0: 0.08 }; // |p_llama.cpp - p_COMET| over llama.cpp's top-8, every position
const TIE = { f32: 2e-3, q8_0: 0.2, q4_0: 0.2 }; // logits: COMET's max minus its logit of llama.cpp's greedy token
const tmp = mkdtempSync(join(tmpdir(), 'comet-gguf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let peer: { dir: string; installedMs: number };
beforeAll(() => {
  peer = ensureLlamaCpp();
  if (peer.installedMs) console.log(`node-llama-cpp ${peer.dir}: installed in ${(peer.installedMs / 1000).toFixed(1)} s`);
}, 600_000);

async function greedy(m: OpenModel, prompt: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(m.model, prompt, { maxTokens: n, temperature: 0, topP: 0, topK: 0, seed: 0, stop: [] })) out.push(t);
  return out;
}

/** logits at every position of `tokens` (one prefill) */
async function logitsAll(m: OpenModel, tokens: number[]): Promise<Float32Array[]> {
  const T = tokens.length, V = m.loaded.config.vocabSize;
  const { cache, blockTable } = singleSequenceCache(m.model, T);
  const layout = { pos: Int32Array.from({ length: T }, (_, i) => i), seq: new Int32Array(T), blockTables: [blockTable] };
  const logits = await m.model.be.read(m.model.forward(Int32Array.from(tokens), layout, cache, Int32Array.from({ length: T }, (_, i) => i)));
  return Array.from({ length: T }, (_, t) => logits.subarray(t * V, (t + 1) * V));
}
const softmax = (row: Float32Array) => {
  let mx = -Infinity;
  for (const x of row) mx = Math.max(mx, x);
  const e = Float64Array.from(row, (x) => Math.exp(x - mx));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
};

/**
 * COMET (model `m`) against llama.cpp on the GGUF file `file`, per prompt: teacher-forced along llama.cpp's greedy
 * tokens, COMET's logits and probabilities at every position (one prefill). Where COMET's argmax is llama.cpp's
 * token at every position, COMET's own greedy run is that same sequence: `identical` counts those prompts
 * (`freeRun` also runs COMET's decode loop for the first prompt, to tie this to generate()). `margin`: the worst
 * COMET max logit minus its logit of llama.cpp's token (0 where both pick the same); `dp`: the worst probability
 * difference over llama.cpp's top 8.
 */
async function compare(m: OpenModel, file: string, texts: string[], steps: number, freeRun = false) {
  const prompts = texts.map((t) => m.tokenizer.encode(t));
  const ans = runLlamaCpp({ dir: peer.dir, tmp, model: file, prompts, steps, topProbs: 8, texts });
  let identical = 0, margin = 0, dp = 0;
  for (let i = 0; i < prompts.length; i++) {
    const theirs = ans.results[i].greedy;
    if (freeRun && i === 0) expect(await greedy(m, prompts[i], steps), `${texts[i]}: COMET's decode loop`).toEqual(theirs);
    const rows = await logitsAll(m, [...prompts[i], ...theirs]);
    let worst = 0;
    theirs.forEach((tok, k) => {
      const row = rows[prompts[i].length - 1 + k];
      worst = Math.max(worst, row.reduce((a, b) => Math.max(a, b), -Infinity) - row[tok]);
    });
    if (worst === 0) identical++;
    margin = Math.max(margin, worst);
    ans.results[i].probs.forEach((top, t) => {
      const p = softmax(rows[t]);
      for (const [tok, q] of top) dp = Math.max(dp, Math.abs(q - p[tok]));
    });
  }
  return { identical, margin, dp, ans };
}

const opened = new Map<string, Promise<OpenModel>>(); // wikillama-28M takes seconds to open: once per file
const open = (path: string) => opened.get(path) ?? (opened.set(path, openModel(new SimBackend(), path)), opened.get(path)!);

const exportOf = (m: OpenModel, name: string, type: GgufWriteType) => {
  const out = join(tmp, `${name}-${type}.gguf`);
  const types = writeGguf(out, m.loaded.config, m.loaded.weights, tokenizerFiles(m.loaded.tokenizerPath!, (p) => readFileSync(p)), type);
  return { out, types };
};

describe('COMET GGUF exports in llama.cpp', () => {
  const cases = [
    ['stories260K', shared('tinyllamas/stories260K.bin'), ['Once upon a time', 'Lily and her mom went to', 'Tom had a red ball'], 48],
    ['wikillama-28M', shared('wikillama-28M'), ['The history of', 'In 1887, the'], 24],
  ] as const;
  it.each(cases)('%s F32: llama.cpp gives COMET\'s float-path greedy tokens, probabilities within 2e-3', async (name, path, texts, steps) => {
    const m = await open(path);
    const { out } = exportOf(m, name, 'f32');
    const r = await compare(m, out, [...texts], steps, true);
    console.log(`${name} F32 GGUF in llama.cpp: ${r.identical}/${texts.length} prompts x ${steps} tokens identical; worst margin ${r.margin.toExponential(2)}; max |dp| ${r.dp.toExponential(2)}`);
    expect(r.identical).toBe(texts.length);
    expect(r.dp).toBeLessThan(PROB_TOL.f32);
    // the tokenizer written as tokenizer.ggml.* tokenizes as COMET's own (llama.cpp adds no BOS in tokenize())
    texts.forEach((t, i) => expect(r.ans.tokenized[i], t).toEqual(m.tokenizer.encode(t, { bos: false })));
  });

  it('wikillama-28M: the byte-level BPE tokenizer COMET writes tokenizes odd text as llama.cpp does', async () => {
    const m = await open(shared('wikillama-28M'));
    const out = existsSync(join(tmp, 'wikillama-28M-f32.gguf')) ? join(tmp, 'wikillama-28M-f32.gguf') : exportOf(m, 'wikillama-28M', 'f32').out;
    const texts = ['Hello, world! 123 4567', "It's   spaced\tout\nand new-lined  ", 'naïve café 日本 🙂', "don't STOP'S"];
    const ans = runLlamaCpp({ dir: peer.dir, tmp, model: out, prompts: [], steps: 0, topProbs: 0, texts });
    texts.forEach((t, i) => expect(ans.tokenized[i], t).toEqual(m.tokenizer.encode(t, { bos: false })));
  });

  it.each(['q8_0', 'q4_0'] as const)('wikillama-28M %s written by COMET, read back by COMET: llama.cpp\'s greedy tokens', async (type) => {
    const { out, types } = exportOf(await open(shared('wikillama-28M')), 'wikillama-28M', type);
    expect(types['blk.0.attn_q.weight']).toBe(type.toUpperCase());
    const m = await openModel(new SimBackend(), out);
    expect(m.loaded.format).toBe('gguf');
    const texts = ['The history of', 'Music is', 'The first', 'In 1887, the'];
    const r = await compare(m, out, texts, 16);
    console.log(`wikillama-28M ${type} GGUF: COMET vs llama.cpp greedy identical on ${r.identical}/${texts.length} prompts x 16 tokens; worst margin ${r.margin.toExponential(2)} (limit ${TIE[type]}); max |dp| ${r.dp.toExponential(2)}`);
    expect(r.margin).toBeLessThan(TIE[type]);
    expect(r.dp).toBeLessThan(PROB_TOL[type]);
    expect(r.identical).toBeGreaterThanOrEqual(2);
    // The partings above are llama.cpp's own Q8_0 activation rounding at near-ties. With that taken out (the weights
    // COMET read from the blocks, written back as F32 so llama.cpp runs them in float as COMET does), llama.cpp
    // gives COMET's greedy tokens on every prompt: what COMET reads is exactly what the blocks hold.
    const src = await open(shared('wikillama-28M'));
    const f32 = join(tmp, `wikillama-28M-${type}-read-back-f32.gguf`);
    writeGguf(f32, m.loaded.config, m.loaded.weights, tokenizerFiles(src.loaded.tokenizerPath!, (p) => readFileSync(p)), 'f32');
    const back = await compare(m, f32, texts, 16);
    console.log(`wikillama-28M ${type} read back, as F32 GGUF in llama.cpp: identical on ${back.identical}/${texts.length}; max |dp| ${back.dp.toExponential(2)}`);
    expect(back.identical).toBe(texts.length);
    expect(back.dp).toBeLessThan(PROB_TOL.f32);
  });
});

describe('GGUF round trips', () => {
  it('F32 keeps every weight bit for bit, the config and the tokenizer; F16 rounds each matrix to f16 (norms stay F32)', async () => {
    const src = await openModel(new SimBackend(), shared('tinyllamas/stories260K.bin'));
    const tok = tokenizerFiles(src.loaded.tokenizerPath!, (p) => readFileSync(p));
    for (const type of ['f32', 'f16'] as const) {
      const out = join(tmp, `rt-${type}.gguf`);
      writeGguf(out, src.loaded.config, src.loaded.weights, tok, type);
      const back = await openModel(new SimBackend(), out);
      expect({ ...back.loaded.config, eos: [] }).toEqual({ ...src.loaded.config, eos: [] });
      for (const [k, w] of src.loaded.weights) {
        const b = back.loaded.weights.get(k)!;
        if (w.kind !== 'f32' || b.kind !== 'f32') throw new Error('float weights expected');
        const want = type === 'f32' || w.shape.length === 1 ? w.data : w.data.map((x) => fromF16Bits(f16Bits(x)));
        expect(b.data, k).toEqual(want);
      }
      for (const t of ['Once upon a time', 'Tom and Sam played ball. "Hi!" said Tom 123.', 'naïve'])
        expect(back.tokenizer.encode(t), t).toEqual(src.tokenizer.encode(t));
      const ids = src.tokenizer.encode('Once upon a time, there was a little dog.');
      expect(back.tokenizer.decode(ids)).toBe(src.tokenizer.decode(ids));
    }
  });

  it('the chat template travels: tokenizer.chat_template in the file, the tokenizer\'s template on load', async () => {
    const tmpl = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>";
    for (const [name, path] of [['s260k', shared('tinyllamas/stories260K.bin')], ['wl28m', shared('wikillama-28M')]] as const) {
      const m = name === 'wl28m' ? await open(path) : await openModel(new SimBackend(), path);
      const tok = tokenizerFiles(m.loaded.tokenizerPath!, (p) => readFileSync(p));
      tok.files = [...tok.files.filter((f) => f.name !== 'chat_template.jinja'), { name: 'chat_template.jinja', bytes: new TextEncoder().encode(tmpl) }];
      if (name === 'wl28m') { // a tokenizer.json model keeps its template in tokenizer_config.json
        const cfg = tok.files.find((f) => f.name === 'tokenizer_config.json')!;
        cfg.bytes = new TextEncoder().encode(JSON.stringify({ ...JSON.parse(new TextDecoder().decode(cfg.bytes)), chat_template: tmpl }));
      }
      const out = join(tmp, `tmpl-${name}.gguf`);
      writeGguf(out, m.loaded.config, m.loaded.weights, tok, 'f16');
      expect((await openModel(new SimBackend(), out)).tokenizer.chatTemplate, name).toBe(tmpl);
    }
  });
});

describe('the CLI on GGUF files', () => {
  const comet = (...args: string[]) => spawnSync(process.execPath, [join(REPO, 'bin/comet.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  it('comet export --gguf, then run / info / quantize on the .gguf: the same text as the source model', () => {
    const out = join(tmp, 'cli.gguf');
    const e = comet('export', '--model', shared('tinyllamas/stories260K.bin'), '--gguf', out, '--type', 'f32', '--json');
    expect(e.status, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout).tensors).toEqual({ F32: 47 });
    const run = (model: string) => comet('run', 'Once upon a time', '--model', model, '--temperature', '0', '--max-tokens', '40').stdout;
    expect(run(out)).toBe(run(shared('tinyllamas/stories260K.bin')));
    const info = comet('info', out, '--json');
    expect(info.status, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/gguf/);
    const q = comet('quantize', '--model', out, '--calib', shared('texts/tinystories_valid_head.txt'), '--out', join(tmp, 'cli.comet'), '--block', '32', '--calib-tokens', '256', '--ctx', '128', '--json');
    expect(q.status, q.stderr).toBe(0);
    const r = comet('run', 'Once upon a time', '--model', join(tmp, 'cli.comet'), '--temperature', '0', '--max-tokens', '16');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan('Once upon a time'.length + 10);
  });

  it('a file that is not a LLaMA GGUF, or is cut short, is one clear error line', () => {
    const src = readFileSync(join(tmp, 'cli.gguf'));
    const cut = join(tmp, 'cut.gguf');
    writeFileSync(cut, src.subarray(0, src.length - 1000));
    const r = comet('run', '--model', cut);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^comet: error: .*cut\.gguf: tensor '.*' .* runs past the end of the file \(truncated\?\)\n$/);
    // general.architecture "llama" -> "qwen2"-like: same length, another model family
    const other = Buffer.from(src), key = other.indexOf('general.architecture'), at = other.indexOf('llama', key);
    other.write('lxama', at);
    writeFileSync(join(tmp, 'other.gguf'), other);
    const o = comet('info', join(tmp, 'other.gguf'));
    expect(o.status).toBe(1);
    expect(o.stderr).toMatch(/^comet: error: .*other\.gguf: GGUF architecture "lxama" is not supported \(COMET runs general.architecture "llama"\)\n$/);
  });
});

describe('Q4_K and Q6_K blocks as ggml dequantizes them', () => {
  const python = (() => {
    try {
      execFileSync('python3', ['-c', 'import ctypes'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  it.each(['Q4_K', 'Q6_K', 'Q8_0', 'Q4_0'])(`%s: ggml's quantizer makes the blocks, COMET's dequantize equals ggml's to_float${python ? '' : ' (SKIPPED: no python3 to load libggml-base through ctypes)'}`, (name) => {
    if (!python) return;
    const lib = join(peer.dir, 'node_modules', '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64', 'libggml-base.so');
    expect(existsSync(lib), lib).toBe(true);
    const n = 256 * 16, x = new Float32Array(n);
    let s = 12345;
    for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2 ** 31; x[i] = ((s / 2 ** 31) - 0.5) * (i % 97 === 0 ? 40 : 2); }
    const inF = join(tmp, `x-${name}.f32`);
    writeFileSync(inF, new Uint8Array(x.buffer));
    execFileSync('python3', [join(import.meta.dirname, 'peers', 'ggml_blocks.py'), lib, name, inF, String(256)], { stdio: ['ignore', 'inherit', 'inherit'] });
    const blocks = readFileSync(`${inF}.${name}`), want = readFileSync(`${inF}.${name}.f32`);
    const type = GGML[name as keyof typeof GGML];
    const got = dequantize(type, new Uint8Array(blocks), n);
    expect(Buffer.from(got.buffer)).toEqual(want);
  });
});
