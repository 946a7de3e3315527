// llama2.c tokenizer.bin and run.c's encode()/decode(), reproduced exactly.
//
// File layout (little-endian): int32 max_token_length, then per token until end of file:
//   float32 score · int32 len · len bytes (the piece; ' ' stands for sentencepiece's '▁'; byte-fallback
//   tokens are written "<0xXX>"; BOS/EOS are "\n<s>\n" / "\n</s>\n" in Llama 2's file).
// Ids: 0 <unk>, 1 BOS, 2 EOS, 3 + b is the raw byte b (run.c hard-codes all three).
//
// Pieces are kept as "binary" JS strings (one char per byte, latin1), so concatenation and lookup compare
// bytes the way run.c's strcmp does.

import { CometError } from '../errors.ts';
import type { Tokenizer } from './tokenizer.ts';

export const L2C_BOS = 1, L2C_EOS = 2;

export class Llama2cTokenizer implements Tokenizer {
  readonly bos = L2C_BOS;
  readonly eos = [L2C_EOS];
  readonly vocabSize: number;
  private readonly lookup = new Map<string, number>(); // piece -> id (first id of a duplicated piece)
  private readonly printed: Uint8Array[]; // run.c decode(): piece, or the raw byte of "<0xXX>"
  private readonly printedAfterBos: Uint8Array[]; // the same with one leading ' ' stripped

  private constructor(readonly pieces: string[], readonly scores: Float32Array, readonly maxTokenLength: number, readonly chatTemplate?: string) {
    this.vocabSize = pieces.length;
    pieces.forEach((p, i) => { if (!this.lookup.has(p)) this.lookup.set(p, i); });
    const bytesOf = (p: string) => {
      const m = /^<0x([0-9A-Fa-f]{1,2})/.exec(p); // run.c: sscanf(piece, "<0x%02hhX>", &byte)
      return m ? Uint8Array.of(parseInt(m[1], 16)) : Uint8Array.from(p, (ch) => ch.charCodeAt(0));
    };
    this.printed = pieces.map(bytesOf);
    this.printedAfterBos = pieces.map((p) => bytesOf(p[0] === ' ' ? p.slice(1) : p));
  }

  /** Parse tokenizer.bin. `vocabSize`, when given (the model's), must equal the number of pieces. `chatTemplate`:
   *  a chat_template.jinja beside it (a GGUF sentencepiece model's tokenizer.chat_template). */
  static fromBytes(buf: Uint8Array, path: string, vocabSize?: number, chatTemplate?: string): Llama2cTokenizer {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (buf.length < 4) throw new CometError(`${path}: ${buf.length} bytes is too short for a llama2.c tokenizer (no max_token_length)`);
    const maxLen = dv.getInt32(0, true);
    if (maxLen <= 0 || maxLen > 1 << 16) throw new CometError(`${path}: max_token_length ${maxLen} is not plausible (expected 1..65536); not a llama2.c tokenizer.bin?`);
    const pieces: string[] = [], scores: number[] = [];
    let pos = 4;
    while (pos < buf.length) {
      const i = pieces.length;
      if (pos + 8 > buf.length) throw new CometError(`${path}: file is cut short inside token ${i}: ${buf.length - pos} bytes left, its score and length need 8`);
      const score = dv.getFloat32(pos, true), len = dv.getInt32(pos + 4, true);
      if (len < 0 || len > maxLen) throw new CometError(`${path}: token ${i} has length ${len}, expected 0..${maxLen} (max_token_length)`);
      if (pos + 8 + len > buf.length) throw new CometError(`${path}: file is cut short inside token ${i}: its ${len} bytes run past the end (${buf.length} bytes)`);
      pieces.push(String.fromCharCode(...buf.subarray(pos + 8, pos + 8 + len)));
      scores.push(score);
      pos += 8 + len;
    }
    if (pieces.length < 3 + 256) throw new CometError(`${path}: only ${pieces.length} tokens; a llama2.c tokenizer has <unk>, BOS, EOS and 256 byte tokens`);
    if (vocabSize !== undefined && pieces.length !== vocabSize)
      throw new CometError(`${path}: ${pieces.length} tokens, the model's vocab_size is ${vocabSize}`);
    return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxLen, chatTemplate);
  }

  /** run.c encode(text, bos, eos=0): dummy ' ' prefix, UTF-8 code points (byte fallback +3), then repeatedly
   *  merge the adjacent pair whose concatenation is the piece of best score (first such pair on ties). */
  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (opts.bos ?? true) ids.push(L2C_BOS);
    const bytes = new TextEncoder().encode(text);
    if (bytes.length > 0) ids.push(this.lookup.get(' ') ?? ' '.charCodeAt(0) + 3);
    // code points: a lead byte starts a group; up to 4 bytes; unknown groups fall back to their bytes
    let buf: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) buf = [];
      buf.push(bytes[i]);
      if (i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && buf.length < 4) continue;
      const id = this.lookup.get(String.fromCharCode(...buf));
      if (id !== undefined) ids.push(id);
      else for (const b of buf) ids.push(b + 3);
      buf = [];
    }
    return this.merge(ids);
  }

  /** run.c's merge loop is O(n^2) per text; this is the same greedy order with a heap over a linked list:
   *  pop the best (score desc, position asc) pair, skip it if stale, merge, push the two new neighbour pairs.
   *  Positions keep their original index, so "smallest index" is "leftmost", as run.c's scan finds it. */
  private merge(ids: number[]): number[] {
    const n = ids.length;
    const id = Int32Array.from(ids), next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
    const heap = new PairHeap(3 * n + 1);
    const push = (l: number) => {
      if (l < 0 || next[l] < 0) return;
      const r = next[l];
      const m = this.lookup.get(this.pieces[id[l]] + this.pieces[id[r]]);
      if (m !== undefined && this.scores[m] > -1e10) heap.push(this.scores[m], l, r, id[l], id[r], m);
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    while (heap.size > 0) {
      const e = heap.pop();
      const l = heap.left[e], r = heap.right[e];
      if (next[l] !== r || id[l] !== heap.leftId[e] || id[r] !== heap.rightId[e]) continue; // stale
      id[l] = heap.merged[e];
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      next[r] = -2; // dead
      push(prev[l]);
      push(l);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]) out.push(id[i]);
    return out;
  }

  decode(ids: number[]): string {
    const parts: Uint8Array[] = [];
    let prev = L2C_BOS;
    for (const t of ids) {
      if (t !== L2C_BOS && t !== L2C_EOS) parts.push(this.pieceBytes(prev, t));
      prev = t;
    }
    return new TextDecoder().decode(concat(parts));
  }

  tokenText(id: number): string {
    return this.pieces[id] ?? '';
  }

  /** run.c decode(prev, tok): after BOS a leading ' ' is stripped; "<0xXX>" is the byte XX. (run.c then prints
   *  it through safe_printf, which drops a lone non-printable byte: see runcPrintable.) */
  pieceBytes(prev: number, tok: number): Uint8Array {
    if (!(tok >= 0 && tok < this.vocabSize)) throw new CometError(`token id ${tok} is outside the vocabulary (0..${this.vocabSize - 1})`);
    return (prev === L2C_BOS ? this.printedAfterBos : this.printed)[tok];
  }
}

/** run.c safe_printf: a single-byte piece that is neither isprint nor isspace (C locale) is not printed. */
export function runcPrintable(piece: Uint8Array): Uint8Array {
  if (piece.length !== 1) return piece;
  const b = piece[0];
  return (b >= 0x20 && b < 0x7f) || (b >= 9 && b <= 13) ? piece : new Uint8Array(0);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** A binary max-heap of candidate merges, ordered by score (desc) then left position (asc); entries live in
 *  parallel typed arrays (a 1 MB text makes ~3M of them). */
class PairHeap {
  readonly score: Float64Array; readonly left: Int32Array; readonly right: Int32Array;
  readonly leftId: Int32Array; readonly rightId: Int32Array; readonly merged: Int32Array;
  private readonly heap: Int32Array;
  private count = 0; // entries made
  size = 0;
  constructor(cap: number) {
    this.score = new Float64Array(cap); this.left = new Int32Array(cap); this.right = new Int32Array(cap);
    this.leftId = new Int32Array(cap); this.rightId = new Int32Array(cap); this.merged = new Int32Array(cap);
    this.heap = new Int32Array(cap);
  }
  private better(a: number, b: number): boolean {
    return this.score[a] > this.score[b] || (this.score[a] === this.score[b] && this.left[a] < this.left[b]);
  }
  push(score: number, l: number, r: number, lid: number, rid: number, m: number): void {
    const e = this.count++;
    this.score[e] = score; this.left[e] = l; this.right[e] = r; this.leftId[e] = lid; this.rightId[e] = rid; this.merged[e] = m;
    const h = this.heap;
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(e, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }
  pop(): number {
    const h = this.heap, top = h[0], last = h[--this.size];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.size) break;
      if (c + 1 < this.size && this.better(h[c + 1], h[c])) c++;
      if (!this.better(h[c], last)) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
    return top;
  }
}
