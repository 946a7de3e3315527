// The tokenizer interface every format implements: llama2.c tokenizer.bin (llama2c.ts) and Hugging Face
// tokenizer.json (hf.ts). loadTokenizer (index.ts) picks one by file type.

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bos: number; // -1 when the tokenizer has none
  readonly eos: number[];
  /** Token ids of `text`; BOS first unless opts.bos is false (default: true, or the tokenizer config's
   *  add_bos_token). No EOS is added. */
  encode(text: string, opts?: { bos?: boolean }): number[];
  /** Text of a sequence; special tokens (BOS, EOS, ...) are skipped. */
  decode(ids: number[]): string;
  /** the vocabulary entry of `id` as written in the tokenizer file (e.g. '<s>', '<|begin_of_text|>', '▁the'); '' if none */
  tokenText(id: number): string;
  /** Bytes to print for `tok` following `prev`, exactly as llama2.c run.c prints them (after BOS a leading
   *  space is stripped; `<0xXX>` is the raw byte). For HF tokenizers: the bytes the token adds to the decoded
   *  text. Streaming these gives a UTF-8 stream (a character may span tokens). The array is shared: do not
   *  modify it. */
  pieceBytes(prev: number, tok: number): Uint8Array;
  readonly chatTemplate?: string; // from tokenizer_config.json when present
}
