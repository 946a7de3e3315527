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
  if (!d) return [];
  return d.type === 'Sequence' ? (d.decoders as Json[]).flatMap(decoderTypes) : [d.type as string];
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
    try {
      this.lib = new HFLib(json, config);
    } catch (e) {
      throw new CometError(`${path}: cannot build the tokenizer (${(e as Error).message})`);
    }
    let maxId = -1;
    for (const i of this.lib.get_vocab(true).values()) maxId = Math.max(maxId, i);
    this.vocabSize = maxId + 1;
    for (const t of (json.added_tokens ?? []) as Json[]) if (t.special) this.special.add(t.id);
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
    const tmplBos = tmpl[0]?.SpecialToken ? json.post_processor.special_tokens?.[tmpl[0].SpecialToken.id]?.ids?.[0] : undefined;
    this.bos = id('bos_token') ?? tmplBos ?? -1;
    const eos = id('eos_token');
    this.eos = eos === undefined ? [] : [eos];
    this.addBos = config.add_bos_token ?? true;
    const ct = config.chat_template;
    this.chatTemplate = typeof ct === 'string' ? ct
      : Array.isArray(ct) ? (ct.find((t: Json) => t.name === 'default') ?? ct[0])?.template : chatTemplateFile;
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = this.lib.encode(text, { add_special_tokens: false }).ids;
    return (opts.bos ?? this.addBos) && this.bos >= 0 ? [this.bos, ...ids] : ids;
  }

  decode(ids: number[]): string {
    if (ids.length === 0) return '';
    return this.lib.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
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
    if (piece === undefined) throw new CometError(`${this.path}: token id ${tok} is outside the vocabulary (0..${this.vocabSize - 1})`);
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
    return utf8.encode(this.lib.decode([tok], { clean_up_tokenization_spaces: false })); // best effort
  }
}

let BYTE_LEVEL: Map<string, number> | undefined;
