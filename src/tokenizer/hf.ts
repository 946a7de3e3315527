// Hugging Face tokenizer.json through @huggingface/tokenizers (DESIGN §7), with tokenizer_config.json beside
// it for bos/eos tokens, add_bos_token and the chat template.
//
// pieceBytes is ours (the library decodes whole sequences only). Two piece styles cover LLaMA tokenizers:
//   byte-level (GPT-2 / Llama 3 / wikillama-28M): each char of a piece stands for one byte through GPT-2's
//     bytes_to_unicode table; mapping back gives the bytes exactly.
//   sentencepiece (Llama 2, stories260K): '▁' is a space, "<0xXX>" is the raw byte XX, and the decoder's
//     Strip drops one leading space of the first token: we do that for the token right after BOS, as run.c.
// Special tokens print nothing.

import { Tokenizer as HFLib } from '@huggingface/tokenizers';
import { CometError } from '../errors.ts';
import type { Tokenizer } from './tokenizer.ts';

type Json = Record<string, any>; // tokenizer.json / tokenizer_config.json as parsed

const utf8 = new TextEncoder();

/** GPT-2 bytes_to_unicode inverted: piece char -> byte. Printable Latin-1 bytes stand for themselves; the
 *  others (0-32, 127-160, 173) are mapped, in order, to U+0100 onwards. */
function byteLevelDecoder(): Map<string, number> {
  const m = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    m.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return m;
}

function decoderTypes(d: Json | null | undefined): string[] {
  if (typeof d !== 'object' || d === null) return [];
  return d.type === 'Sequence' ? (Array.isArray(d.decoders) ? d.decoders as Json[] : []).flatMap(decoderTypes) : [d.type as string];
}

const tokenContent = (t: unknown): string | undefined =>
  typeof t === 'string' ? t : typeof t === 'object' && t !== null && typeof (t as Json).content === 'string' ? (t as Json).content : undefined;

export class HFTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number[];
  readonly chatTemplate?: string;
  private readonly lib: HFLib;
  private readonly style: 'bytelevel' | 'sentencepiece' | 'other';
  private readonly special = new Set<number>();
  private readonly addBos: boolean;
  private readonly cache = new Map<number, Uint8Array>(); // id -> bytes; -1 - id -> bytes after BOS

  constructor(json: Json, config: Json, readonly path: string, chatTemplateFile?: string) {
    checkIds(json, path);
    checkRegexes(json, path);
    try {
      this.lib = new HFLib(json, config);
    } catch (e) {
      throw new CometError(`${path}: cannot build the tokenizer (${(e as Error).message})`);
    }
    let maxId = -1;
    for (const i of this.lib.get_vocab(true).values()) maxId = Math.max(maxId, i);
    this.vocabSize = maxId + 1;
    for (const t of (Array.isArray(json.added_tokens) ? json.added_tokens : []) as Json[]) if (t?.special) this.special.add(t.id);
    const types = decoderTypes(json.decoder);
    this.style = types.includes('ByteLevel') ? 'bytelevel'
      : types.includes('ByteFallback') || types.includes('Metaspace') || json.model?.byte_fallback ? 'sentencepiece' : 'other';
    const id = (field: string): number | undefined => {
      const c = tokenContent(config[field]);
      if (c === undefined) return undefined;
      const i = this.lib.token_to_id(c);
      if (i === undefined) throw new CometError(`${path}: tokenizer_config.json ${field} ${JSON.stringify(c)} is not in the vocabulary`);
      return i;
    };
    // BOS: tokenizer_config's bos_token, else the first special token of the post-processor's template
    const tmpl = (json.post_processor?.single ?? []) as Json[];
    const tmplBos = Array.isArray(tmpl) && tmpl[0]?.SpecialToken ? json.post_processor.special_tokens?.[tmpl[0].SpecialToken.id]?.ids?.[0] : undefined;
    this.bos = id('bos_token') ?? (Number.isInteger(tmplBos) && tmplBos >= 0 && tmplBos <= maxId ? tmplBos : -1);
    const eos = id('eos_token');
    this.eos = eos === undefined ? [] : [eos];
    this.addBos = config.add_bos_token ?? true;
    const ct = config.chat_template;
    const named = Array.isArray(ct) ? (ct.find((t: Json) => t?.name === 'default') ?? ct[0])?.template : undefined;
    this.chatTemplate = typeof ct === 'string' ? ct : typeof named === 'string' ? named : chatTemplateFile;
    // a tokenizer.json the library accepts may still fail on every text (a post-processor without its template,
    // a decoder of the wrong shape): try one at load, where the user can act, rather than on each request
    this.decode(this.encode('Hello, world! 123 \u00e9\u65e5\u{1F600}', { bos: false }));
  }

  /** The library's own exceptions on a malformed tokenizer.json become CometErrors naming the file. */
  private guarded<T>(what: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof CometError) throw e;
      throw new CometError(`${this.path}: the tokenizer failed to ${what} (${(e as Error)?.message ?? e}); is tokenizer.json intact?`);
    }
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = this.guarded('encode a text', () => this.lib.encode(text, { add_special_tokens: false }).ids);
    for (const i of ids) // a tokenizer.json whose model does not match its vocab (e.g. WordPiece without unk) yields junk
      if (!(Number.isInteger(i) && i >= 0 && i < this.vocabSize)) throw new CometError(`${this.path}: the tokenizer produced token id ${i}, outside 0..${this.vocabSize - 1}`);
    return (opts.bos ?? this.addBos) && this.bos >= 0 ? [this.bos, ...ids] : ids;
  }

  decode(ids: number[]): string {
    if (ids.length === 0) return '';
    return this.guarded('decode tokens', () => this.lib.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }));
  }

  tokenText(id: number): string {
    return this.lib.id_to_token(id) ?? '';
  }

  pieceBytes(prev: number, tok: number): Uint8Array {
    const afterBos = prev === this.bos && this.style === 'sentencepiece';
    const key = afterBos ? -1 - tok : tok;
    let b = this.cache.get(key);
    if (!b) this.cache.set(key, (b = this.computePiece(tok, afterBos)));
    return b;
  }

  private computePiece(tok: number, afterBos: boolean): Uint8Array {
    const piece = this.lib.id_to_token(tok);
    if (typeof piece !== 'string') throw new CometError(`${this.path}: token id ${tok} is outside the vocabulary (0..${this.vocabSize - 1}) or has no text`);
    if (this.special.has(tok)) return new Uint8Array(0);
    if (this.style === 'bytelevel') {
      const table = (BYTE_LEVEL ??= byteLevelDecoder());
      const out: number[] = [];
      for (const ch of piece) {
        const b = table.get(ch);
        if (b !== undefined) out.push(b);
        else out.push(...utf8.encode(ch)); // an added (non byte-level) token's own text
      }
      return Uint8Array.from(out);
    }
    if (this.style === 'sentencepiece') {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      if (byte) return Uint8Array.of(parseInt(byte[1], 16));
      const s = piece.replaceAll('▁', ' ');
      return utf8.encode(afterBos && s.startsWith(' ') ? s.slice(1) : s);
    }
    return utf8.encode(this.guarded('decode a token', () => this.lib.decode([tok], { clean_up_tokenization_spaces: false }))); // best effort
  }
}

let BYTE_LEVEL: Map<string, number> | undefined;

/** Token ids in model.vocab and added_tokens must be integers in 0..n-1, n = the number of entries (real
 *  tokenizers are dense). Checked before the library sees them: it builds tables as long as the largest id
 *  (an id of 1e9 took 80 s), and a string or fractional id comes back out of encode(). */
function checkIds(json: Json, path: string): void {
  const vocab = json.model?.vocab, added = json.added_tokens ?? [];
  // a string where a list is expected is iterated char by char by the library (a 1 MB string: 1M tokens)
  if (!Array.isArray(added)) throw new CometError(`${path}: added_tokens is ${typeof added}, expected a list`);
  for (const k of ['vocab', 'merges'] as const)
    if (typeof json.model?.[k] === 'string') throw new CometError(`${path}: model.${k} is a string, expected a ${k === 'vocab' ? 'map or list' : 'list'}`);
  if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) return; // Unigram: ids are positions
  const entries = Object.entries(vocab);
  const n = entries.length + added.length;
  const check = (what: string, id: unknown) => {
    if (!(Number.isSafeInteger(id) && (id as number) >= 0 && (id as number) < n))
      throw new CometError(`${path}: ${what} has id ${JSON.stringify(id)}, expected an integer in 0..${n - 1} (${n} tokens)`);
  };
  for (const [piece, id] of entries) check(`token ${JSON.stringify(piece).slice(0, 40)}`, id);
  for (const t of added) check(`added token ${JSON.stringify(t?.content)?.slice(0, 40)}`, t?.id);
}

/** The library runs a tokenizer.json's `Regex` patterns (Split pre-tokenizers, Replace normalizers/decoders)
 *  with JS RegExp, which backtracks: a nested quantifier such as `(.*)*x` takes minutes on a short text. Real
 *  tokenizers (GPT-2, Llama 3) never repeat a group that itself repeats, so such a pattern is refused. So is a
 *  Replace / Prepend string longer than 256 characters (real ones are '▁' or ' '): one such string per space
 *  turns a short prompt into megabytes for the BPE. */
function checkRegexes(json: Json, path: string): void {
  const walk = (x: unknown, where: string): void => {
    if (typeof x !== 'object' || x === null) return;
    for (const [k, v] of Object.entries(x)) {
      if (k === 'vocab' || k === 'merges') continue;
      if (k === 'Regex' && typeof v === 'string' && nestedQuantifier(v))
        throw new CometError(`${path}: ${where}.Regex ${JSON.stringify(v).slice(0, 60)} repeats a group that itself repeats (catastrophic backtracking)`);
      if ((k === 'content' || k === 'prepend') && typeof v === 'string' && v.length > 256)
        throw new CometError(`${path}: ${where}.${k} is a ${v.length}-character string (expected a short replacement such as '▁')`);
      walk(v, `${where}.${k}`);
    }
  };
  for (const k of ['normalizer', 'pre_tokenizer', 'decoder']) walk(json[k], k);
}

/** True when a group that contains *, + or {n,} / {n,m} is itself followed by one of them. */
function nestedQuantifier(re: string): boolean {
  const stack: boolean[] = []; // per open group: does it contain a repeating quantifier?
  let inner = false; // the group just closed contained one
  const repeats = (i: number) => re[i] === '*' || re[i] === '+' || (re[i] === '{' && /^\{\d*,?\d*\}/.test(re.slice(i)) && !/^\{\d*,?1?\}/.test(re.slice(i)));
  for (let i = 0; i < re.length; i++) {
    const ch = re[i];
    if (ch === '\\') { i++; inner = false; continue; }
    if (ch === '[') { // a character class: skip to its closing ]
      for (i++; i < re.length && re[i] !== ']'; i++) if (re[i] === '\\') i++;
      inner = false;
      continue;
    }
    if (ch === '(') { stack.push(false); inner = false; continue; }
    if (ch === ')') {
      inner = stack.pop() ?? false;
      if (inner && stack.length) stack[stack.length - 1] = true;
      continue;
    }
    if (repeats(i)) {
      if (inner) return true;
      if (stack.length) stack[stack.length - 1] = true;
    }
    if (ch !== '?') inner = false;
  }
  return false;
}
