// GGUF's tokenizer (tokenizer.ggml.*) <-> the tokenizer files COMET reads (src/tokenizer): browser-safe.
//
//   tokenizer.ggml.model "llama" (sentencepiece BPE: tokens + scores, '▁' for space, <0xXX> byte tokens)
//       <-> llama2.c tokenizer.bin (score-ordered pair merging, as run.c and llama.cpp's SPM tokenizer both do)
//   tokenizer.ggml.model "gpt2" (byte-level BPE: tokens + merges "a b"; tokenizer.ggml.pre names the split regex)
//       <-> Hugging Face tokenizer.json (BPE, ByteLevel) + tokenizer_config.json (bos/eos, add_bos_token)
//   tokenizer.chat_template <-> chat_template.jinja (beside tokenizer.bin) / tokenizer_config.json chat_template
// token_type (llama.cpp llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
import { GGUFValueType, type MetadataValue } from '@huggingface/gguf';
import { CometError } from '../../errors.ts';
import type { LlamaConfig } from '../../model/config.ts';

/** A tokenizer as files (the same shape a .comet file embeds): `main` is the one loadTokenizer opens. */
export interface TokenizerFiles {
  main: string;
  files: Array<{ name: string; bytes: Uint8Array }>;
}

const TT = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, BYTE: 6 } as const;

// Pre-tokenizer regexes by tokenizer.ggml.pre (llama.cpp llama-vocab.cpp), as tokenizer.json pre_tokenizers.
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const PRE: Record<string, object> = {
  'gpt-2': { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  'llama-bpe': {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
};

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));
const hex2 = (b: number) => b.toString(16).toUpperCase().padStart(2, '0');

/** The tokenizer of a parsed GGUF (metadata as @huggingface/gguf returns it), as files. */
export function ggufTokenizerFiles(md: Record<string, MetadataValue>, p: string, vocabSize: number): TokenizerFiles {
  const model = md['tokenizer.ggml.model'];
  const tokens = md['tokenizer.ggml.tokens'];
  if (model === undefined) throw new CometError(`${p}: the GGUF file has no tokenizer (tokenizer.ggml.model); pass --tokenizer`);
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === 'string'))
    throw new CometError(`${p}: GGUF tokenizer.ggml.tokens is missing or not a list of strings`);
  if (tokens.length !== vocabSize) throw new CometError(`${p}: the GGUF tokenizer has ${tokens.length} tokens, the model's vocabulary is ${vocabSize}`);
  const types = md['tokenizer.ggml.token_type'];
  const typeOf = (i: number) => (Array.isArray(types) && typeof types[i] === 'number' ? types[i] as number : TT.NORMAL);
  const id = (key: string, dflt: number) => {
    const v = md[key] ?? dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n >= tokens.length) throw new CometError(`${p}: GGUF ${key} ${String(v)} is not a token id (0..${tokens.length - 1})`);
    return n;
  };
  const template = typeof md['tokenizer.chat_template'] === 'string' ? md['tokenizer.chat_template'] as string : undefined;
  const addBos = md['tokenizer.ggml.add_bos_token'] !== false;
  if (model === 'llama') {
    const scores = md['tokenizer.ggml.scores'];
    if (!Array.isArray(scores) || scores.length !== tokens.length) throw new CometError(`${p}: GGUF tokenizer.ggml.scores is missing or not one score per token`);
    // llama2.c's tokenizer (src/tokenizer/llama2c.ts) fixes <unk> 0, BOS 1, EOS 2 and byte b at 3 + b: the
    // layout of every sentencepiece LLaMA vocabulary (Llama 1/2, TinyLlama, stories*)
    const bos = id('tokenizer.ggml.bos_token_id', 1), eos = id('tokenizer.ggml.eos_token_id', 2);
    if (bos !== 1 || eos !== 2 || tokens.length < 259 || !Array.from({ length: 256 }, (_, b) => tokens[3 + b] === `<0x${hex2(b)}>`).every(Boolean))
      throw new CometError(`${p}: this sentencepiece vocabulary is not laid out as LLaMA's (<unk> 0, BOS 1, EOS 2, bytes <0x00>..<0xFF> at 3..258); COMET cannot run its tokenizer`);
    const pieces = (tokens as string[]).map((t) => enc.encode(t.replaceAll('▁', ' ')));
    const maxLen = Math.max(1, ...pieces.map((b) => b.length));
    const bin = new Uint8Array(4 + pieces.reduce((a, b) => a + 8 + b.length, 0));
    const dv = new DataView(bin.buffer);
    dv.setInt32(0, maxLen, true);
    let o = 4;
    pieces.forEach((b, i) => {
      dv.setFloat32(o, Number(scores[i]), true);
      dv.setInt32(o + 4, b.length, true);
      bin.set(b, o + 8);
      o += 8 + b.length;
    });
    const files = [{ name: 'tokenizer.bin', bytes: bin }];
    if (template) files.push({ name: 'chat_template.jinja', bytes: enc.encode(template) });
    return { main: 'tokenizer.bin', files };
  }
  if (model === 'gpt2') {
    const pre = String(md['tokenizer.ggml.pre'] ?? 'gpt-2');
    if (!(pre in PRE)) throw new CometError(`${p}: GGUF tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported (supported: ${Object.keys(PRE).join(', ')})`);
    const merges = md['tokenizer.ggml.merges'];
    if (!Array.isArray(merges) || !merges.every((m) => typeof m === 'string' && m.split(' ').length === 2))
      throw new CometError(`${p}: GGUF tokenizer.ggml.merges is missing or not a list of "a b" pairs`);
    const vocab: Record<string, number> = {};
    const added = [];
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i] as string, ty = typeOf(i);
      if (ty === TT.CONTROL || ty === TT.USER_DEFINED)
        added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: ty === TT.CONTROL });
      if (!(t in vocab)) vocab[t] = i;
    }
    const bos = id('tokenizer.ggml.bos_token_id', 0), eos = id('tokenizer.ggml.eos_token_id', 0);
    const tokJson = {
      version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
      pre_tokenizer: PRE[pre],
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe', vocab, merges: (merges as string[]).map((m) => m.split(' ')) },
    };
    const cfg = { bos_token: tokens[bos], eos_token: tokens[eos], add_bos_token: addBos, ...(template ? { chat_template: template } : {}) };
    return { main: 'tokenizer.json', files: [{ name: 'tokenizer.json', bytes: json(tokJson) }, { name: 'tokenizer_config.json', bytes: json(cfg) }] };
  }
  throw new CometError(`${p}: GGUF tokenizer.ggml.model ${JSON.stringify(model)} is not supported (llama, gpt2 are)`);
}

type KV = { value: MetadataValue; type: GGUFValueType; subType?: GGUFValueType };
const str = (value: string): KV => ({ value, type: GGUFValueType.STRING });
const u32 = (value: number): KV => ({ value, type: GGUFValueType.UINT32 });
const arr = (value: MetadataValue[], subType: GGUFValueType): KV => ({ value, type: GGUFValueType.ARRAY, subType });

/** A tokenizer's files (tokenizer.bin, or a byte-level BPE tokenizer.json + tokenizer_config.json) as GGUF
 *  tokenizer.ggml.* entries. */
export function tokenizerKVs(tok: TokenizerFiles, config: LlamaConfig): Record<string, KV> {
  const file = (n: string) => tok.files.find((f) => f.name === n)?.bytes;
  const main = file(tok.main);
  if (!main) throw new CometError(`tokenizer: its main file ${tok.main} is not among its files`);
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  if (!tok.main.endsWith('.json')) {
    // llama2.c tokenizer.bin: i32 max_len, then (f32 score, i32 len, bytes) per token
    const dv = new DataView(main.buffer, main.byteOffset, main.byteLength);
    const tokens: string[] = [], scores: number[] = [], types: number[] = [];
    for (let o = 4; o + 8 <= main.length; ) {
      const len = dv.getInt32(o + 4, true), i = tokens.length;
      const piece = text(main.subarray(o + 8, o + 8 + len));
      scores.push(dv.getFloat32(o, true));
      // run.c's BOS/EOS pieces are "\n<s>\n", "\n</s>\n"; llama.cpp expects "<s>", "</s>"
      tokens.push(i < 3 ? piece.trim() : piece.replaceAll(' ', '▁'));
      types.push(i === 0 ? TT.UNKNOWN : i < 3 ? TT.CONTROL : i < 259 ? TT.BYTE : TT.NORMAL);
      o += 8 + len;
    }
    if (tokens.length !== config.vocabSize) throw new CometError(`tokenizer.bin has ${tokens.length} tokens, the model's vocabulary is ${config.vocabSize}`);
    const tmpl = file('chat_template.jinja');
    return {
      'tokenizer.ggml.model': str('llama'),
      'tokenizer.ggml.tokens': arr(tokens, GGUFValueType.STRING),
      'tokenizer.ggml.scores': arr(scores, GGUFValueType.FLOAT32),
      'tokenizer.ggml.token_type': arr(types, GGUFValueType.INT32),
      'tokenizer.ggml.bos_token_id': u32(1), 'tokenizer.ggml.eos_token_id': u32(2), 'tokenizer.ggml.unknown_token_id': u32(0),
      'tokenizer.ggml.add_bos_token': { value: true, type: GGUFValueType.BOOL },
      'tokenizer.ggml.add_eos_token': { value: false, type: GGUFValueType.BOOL },
      ...(tmpl ? { 'tokenizer.chat_template': str(text(tmpl)) } : {}),
    };
  }
  let j: Record<string, any>, cfg: Record<string, any> = {};
  try {
    j = JSON.parse(text(main));
    const c = file('tokenizer_config.json');
    if (c) cfg = JSON.parse(text(c));
  } catch (e) {
    throw new CometError(`${tok.main}: invalid JSON (${(e as Error).message})`);
  }
  const m = j.model ?? {};
  const pre = Object.entries(PRE).find(([, v]) => JSON.stringify(v) === JSON.stringify(j.pre_tokenizer))?.[0]
    ?? (j.pre_tokenizer?.type === 'ByteLevel' && j.pre_tokenizer.use_regex !== false ? 'gpt-2' : undefined);
  if (m.type !== 'BPE' || !pre || m.byte_fallback)
    throw new CometError(`${tok.main}: GGUF export writes byte-level BPE tokenizers (GPT-2 / Llama 3 style) and llama2.c tokenizer.bin; this one is ${m.type ?? 'unknown'}${m.byte_fallback ? ' with byte fallback (sentencepiece)' : ''}, pre-tokenizer ${JSON.stringify(j.pre_tokenizer?.type ?? null)}`);
  const tokens: string[] = new Array(config.vocabSize).fill('');
  const types: number[] = new Array(config.vocabSize).fill(TT.NORMAL);
  for (const [t, i] of Object.entries(m.vocab as Record<string, number>)) if (i < tokens.length) tokens[i] = t;
  for (const a of (j.added_tokens ?? []) as Array<{ id: number; content: string; special?: boolean }>)
    if (a.id < tokens.length) { tokens[a.id] = a.content; types[a.id] = a.special ? TT.CONTROL : TT.USER_DEFINED; }
  // ids the vocabulary leaves out (a model whose embedding is padded past the tokenizer) get unused names
  tokens.forEach((t, i) => { if (t === '') { tokens[i] = `[PAD${i}]`; types[i] = TT.USER_DEFINED; } });
  const merges = (m.merges as Array<string | [string, string]>).map((x) => (Array.isArray(x) ? x.join(' ') : x));
  const idOf = (v: unknown) => {
    const c = typeof v === 'string' ? v : (v as { content?: string } | undefined)?.content;
    const i = c === undefined ? -1 : tokens.indexOf(c);
    return i >= 0 ? i : undefined;
  };
  const bos = idOf(cfg.bos_token) ?? config.bos, eos = idOf(cfg.eos_token) ?? config.eos[0];
  const tmpl = typeof cfg.chat_template === 'string' ? cfg.chat_template : file('chat_template.jinja') ? text(file('chat_template.jinja')!) : undefined;
  return {
    'tokenizer.ggml.model': str('gpt2'),
    'tokenizer.ggml.pre': str(pre),
    'tokenizer.ggml.tokens': arr(tokens, GGUFValueType.STRING),
    'tokenizer.ggml.token_type': arr(types, GGUFValueType.INT32),
    'tokenizer.ggml.merges': arr(merges, GGUFValueType.STRING),
    'tokenizer.ggml.bos_token_id': u32(bos), 'tokenizer.ggml.eos_token_id': u32(eos),
    'tokenizer.ggml.add_bos_token': { value: cfg.add_bos_token ?? true, type: GGUFValueType.BOOL },
    'tokenizer.ggml.add_eos_token': { value: false, type: GGUFValueType.BOOL },
    ...(tmpl ? { 'tokenizer.chat_template': str(tmpl) } : {}),
  };
}
