// Tokenizers: golden ids (golden/tokenizer_*.json, made with llama2.c's encode and HF tokenizers), the bytes
// run.c prints (golden/s260k_*.txt), wikillama-28M's prompts, our heap BPE against run.c's O(n^2) loop, and
// corrupt files.

import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expectCometError } from './helpers/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import { CometError } from '../src/errors.ts';
import { type Tokenizer, Llama2cTokenizer, loadTokenizer, runcPrintable } from '../src/tokenizer/index.ts';
import { rng } from '../testing/rng.ts';

const MODELS = fileURLToPath(new URL('../../shared/models/', import.meta.url));
if (!existsSync(MODELS)) throw new Error(`test data missing: ${MODELS} must hold ../shared/models (DESIGN.md §8); these tests never skip`);
const G = (f: string) => JSON.parse(readFileSync(join(MODELS, 'golden', f), 'utf8'));
const tmp = tempDir('comet-tok-');

const TOKENIZERS = {
  llama2_bin: 'llama2-tokenizer/tokenizer.bin',
  llama2_json: 'llama2-tokenizer/tokenizer.json',
  tok512_bin: 'tinyllamas/tok512.bin',
  tok512_json: 'hf/stories260K/tokenizer.json',
  wl28m_json: 'wikillama-28M/tokenizer.json',
};
const cache = new Map<string, Promise<Tokenizer>>();
const tok = (k: keyof typeof TOKENIZERS) => {
  if (!cache.has(k)) cache.set(k, loadTokenizer(join(MODELS, TOKENIZERS[k])));
  return cache.get(k)!;
};

const concat = (parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));
/** The bytes of a sequence as streamed: pieceBytes(prev, tok) for every token after the first. */
const streamed = (t: Tokenizer, ids: number[], printable = false) =>
  concat(ids.slice(1).map((id, i) => (printable ? runcPrintable : (x: Uint8Array) => x)(t.pieceBytes(ids[i], id))));

describe.each([
  ['tokenizer_llama2_32k.json', 'llama2_bin'], ['tokenizer_llama2_32k.json', 'llama2_json'],
  ['tokenizer_tok512.json', 'tok512_bin'], ['tokenizer_tok512.json', 'tok512_json'],
] as const)('%s with %s', (golden, key) => {
  const cases: { text: string; ids: number[] }[] = G(golden).cases;
  it('ids equal the golden ids', async () => {
    const t = await tok(key);
    expect(cases.length).toBe(40);
    for (const c of cases) expect(t.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
  });
  it('decode round-trips; streamed pieceBytes equal the decoded text', async () => {
    const t = await tok(key);
    for (const c of cases) {
      expect(t.decode(c.ids), JSON.stringify(c.text)).toBe(c.text);
      expect(streamed(t, c.ids).toString('utf8'), JSON.stringify(c.text)).toBe(c.text);
    }
    expect(t.encode('')).toEqual([1]);
    expect(t.encode('', { bos: false })).toEqual([]);
    expect(t.decode([1])).toBe('');
    expect(t.bos).toBe(1);
    expect(t.eos).toEqual([2]);
  });
});

describe('stories260K golden outputs: the bytes run.c prints', () => {
  const files = readdirSync(join(MODELS, 'golden')).filter((f) => /^s260k_.*\.json$/.test(f));
  it.each(['tok512_bin', 'tok512_json'] as const)('%s', async (key) => {
    const t = await tok(key);
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      const g = G(f);
      expect(t.encode(g.prompt), f).toEqual(g.prompt_tokens);
      const txt = readFileSync(join(MODELS, 'golden', f.replace('.json', '.txt')));
      // run.c: for each token after BOS print decode(prev, tok) through safe_printf, then "\n"
      expect(Buffer.concat([streamed(t, g.tokens, true), Buffer.from('\n')]).equals(txt), f).toBe(true);
      expect(streamed(t, g.tokens).toString('utf8'), f).toBe(t.decode(g.tokens));
    }
  });
});

describe('wikillama-28M tokenizer.json (byte-level BPE)', () => {
  const files = readdirSync(join(MODELS, 'golden')).filter((f) => /^wl28m_.*\.json$/.test(f));
  it('prompt tokens, decode and pieceBytes', async () => {
    const t = await tok('wl28m_json');
    expect(t.bos).toBe(0);
    expect(t.eos).toEqual([1]);
    expect(t.vocabSize).toBe(8192);
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      const g = G(f);
      expect(t.encode(g.prompt), f).toEqual(g.prompt_tokens);
      expect(t.decode(g.tokens), f).toBe(g.text);
      expect(streamed(t, g.tokens).toString('utf8'), f).toBe(g.text);
    }
  });
  it('byte-level pieces are exact for any text', async () => {
    const t = await tok('wl28m_json');
    const text = 'Zürich 東京 🙂 naïve\ttabs\r\n  two spaces, x³ — end';
    const ids = t.encode(text);
    expect(ids[0]).toBe(0);
    expect(t.decode(ids)).toBe(text);
    expect(streamed(t, ids).toString('utf8')).toBe(text);
    expect(t.pieceBytes(ids[0], 1)).toEqual(new Uint8Array(0)); // EOS prints nothing
  });
});

/** run.c encode(), written the slow way it is written there (O(n^2) merge scan), as the reference. */
function runcEncode(t: Llama2cTokenizer, text: string): number[] {
  const find = (s: string) => t.pieces.indexOf(s);
  const bytes = Buffer.from(text, 'utf8');
  const ids = [1];
  if (bytes.length) ids.push(find(' '));
  let buf = '';
  for (let i = 0; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) !== 0x80) buf = '';
    buf += String.fromCharCode(bytes[i]);
    if ((bytes[i + 1] & 0xc0) === 0x80 && buf.length < 4) continue;
    const id = find(buf);
    if (id >= 0) ids.push(id);
    else for (const ch of buf) ids.push(ch.charCodeAt(0) + 3);
    buf = '';
  }
  for (;;) {
    let best = -1e10, bestId = -1, bestIdx = -1;
    for (let i = 0; i < ids.length - 1; i++) {
      const id = find(t.pieces[ids[i]] + t.pieces[ids[i + 1]]);
      if (id !== -1 && t.scores[id] > best) { best = t.scores[id]; bestId = id; bestIdx = i; }
    }
    if (bestIdx === -1) return ids;
    ids.splice(bestIdx, 2, bestId);
  }
}

describe('llama2.c BPE', () => {
  it.each(['tok512_bin', 'llama2_bin'] as const)('heap merge equals run.c\'s loop on random text (%s)', async (key) => {
    const t = (await tok(key)) as Llama2cTokenizer;
    const rnd = rng(42);
    const alphabet = [...'abcdefghijklmnopqrstuvwxyz     eeettaaoo.,!?\'"\n\t0123456789ABCZ', 'é', 'ü', '東', '京', '🙂', '—', '\u0000'];
    for (let n = 0; n < 60; n++) {
      let s = '';
      for (let i = 0, len = Math.floor(rnd() * 60); i < len; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      s = s.replaceAll('\u0000', ''); // run.c stops at NUL
      expect(t.encode(s), JSON.stringify(s)).toEqual(runcEncode(t, s));
    }
    // equal-score pairs: run.c merges the leftmost first ("llll" -> " l" "ll" "l", not " l" "l" "ll")
    for (const ch of 'lo e.') for (let n = 2; n < 9; n++) expect(t.encode(ch.repeat(n))).toEqual(runcEncode(t, ch.repeat(n)));
  });

  it('encodes 1 MB of text fast and losslessly', async () => {
    const t = await tok('tok512_bin');
    const text = readFileSync(join(MODELS, 'texts/tinystories_valid_head.txt'), 'utf8');
    const t0 = performance.now();
    const ids = t.encode(text, { bos: false });
    expect(performance.now() - t0).toBeLessThan(10_000); // ~0.5 s here; run.c's own loop takes minutes
    expect(ids.length).toBeGreaterThan(300_000);
    expect(t.decode(ids)).toBe(text);
  });

  it('pieceBytes: leading space stripped only after BOS, <0xXX> is the raw byte', async () => {
    const t = (await tok('llama2_bin')) as Llama2cTokenizer;
    const the = t.encode(' the', { bos: false }).at(-1)!; // "▁the"
    expect(Buffer.from(t.pieceBytes(1, the)).toString()).toBe('the');
    expect(Buffer.from(t.pieceBytes(500, the)).toString()).toBe(' the');
    expect(t.pieceBytes(1, 3 + 0x0a)).toEqual(Uint8Array.of(0x0a));
    expect(t.pieceBytes(5, 3 + 0xe6)).toEqual(Uint8Array.of(0xe6));
    expect(runcPrintable(Uint8Array.of(0xe6))).toEqual(new Uint8Array(0));
    expect(() => t.pieceBytes(1, 32000)).toThrow(CometError);
  });
});

describe('loadTokenizer errors', () => {
  const bin = readFileSync(join(MODELS, TOKENIZERS.tok512_bin));

  it('tokenizer.bin cut short, bad lengths, wrong vocab size', async () => {
    const cut = join(tmp, 'cut.bin');
    writeFileSync(cut, bin.subarray(0, bin.length - 3));
    await expectCometError(() => loadTokenizer(cut), cut, 'cut short inside token 511');
    writeFileSync(cut, bin.subarray(0, 2));
    await expectCometError(() => loadTokenizer(cut), cut, 'too short');
    writeFileSync(cut, bin.subarray(0, 1000));
    await expectCometError(() => loadTokenizer(cut), cut, 'cut short inside token');
    const bad = Buffer.from(bin);
    bad.writeInt32LE(100, 8); // token 0's length
    writeFileSync(cut, bad);
    await expectCometError(() => loadTokenizer(cut), cut, 'token 0 has length 100, expected 0..7');
    await expectCometError(() => loadTokenizer(join(MODELS, TOKENIZERS.tok512_bin), { vocabSize: 32000 }), '512 tokens, the model\'s vocab_size is 32000');
  });

  it('missing file, bad JSON, sentencepiece .model', async () => {
    await expectCometError(() => loadTokenizer(join(tmp, 'nope.bin')), 'tokenizer not found', 'nope.bin');
    const j = join(tmp, 'tokenizer.json');
    writeFileSync(j, readFileSync(join(MODELS, TOKENIZERS.tok512_json)).subarray(0, 500));
    await expectCometError(() => loadTokenizer(j), j, 'invalid JSON');
    await expectCometError(() => loadTokenizer(tmp), j, 'invalid JSON'); // a directory -> its tokenizer.json
    await expectCometError(() => loadTokenizer(join(MODELS, 'llama2-tokenizer/tokenizer.model')), 'tokenizer.model', 'not read');
  });

  it('chat template from tokenizer_config.json', async () => {
    const dir = tempDir('comet-chat-');
    copyFileSync(join(MODELS, TOKENIZERS.wl28m_json), join(dir, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(MODELS, 'wikillama-28M/tokenizer_config.json'), 'utf8'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: '{{ messages }}' }));
    expect((await loadTokenizer(dir)).chatTemplate).toBe('{{ messages }}');
    expect((await tok('wl28m_json')).chatTemplate).toBeUndefined();
  });
});
