// A model file held in memory (the browser, or any caller that already has the bytes) -> weights, config and
// tokenizer, through the format parsers in formats/ (browser-safe: none imports node:fs). Node code opens
// files through index.ts (loadModel) instead, which reads one tensor at a time.
//
//   sniff(head)              'safetensors' (u64 LE header length, high word 0, then '{') or 'llama2c'
//   loadModelBytes(bytes)    a .comet safetensors file (formats/comet.ts), a GGUF file (formats/gguf.ts) or a
//                            llama2.c checkpoint (formats/llama2c.ts); a plain safetensors file, a text file or anything
//                            unrecognised is refused with a message that says what was expected
// Every failure is a CometError whose message names the file and says what was expected. Host byte order is
// assumed little-endian (x86, ARM), as every typed-array view here is.
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { type CometParsed, parseComet, type Sha16 } from './formats/comet.ts';
import { isGguf, parseGguf } from './formats/gguf.ts';
import { parseLlama2c } from './formats/llama2c.ts';
import { isSafetensors, Safetensors } from './formats/safetensors.ts';
import { bytesSource } from './source.ts';

/** A llama2.c file never starts like safetensors: its second int32 is hidden_dim (v0) or the version (v1),
 *  both non-zero. */
export function sniff(head: Uint8Array): 'safetensors' | 'llama2c' {
  return isSafetensors(head) ? 'safetensors' : 'llama2c';
}


export interface BytesModel {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  format: 'llama2c' | 'comet' | 'gguf';
  path: string;
  meta: Record<string, unknown>;
  /** the tokenizer files a .comet or GGUF file carries (llama2.c checkpoints have none: the caller brings tokenizer.bin) */
  tokenizer?: CometParsed['tokenizer'];
}

/** A model file held in memory: a .comet file, a GGUF file or a llama2.c checkpoint. `name` (file name or URL) is only for
 *  messages. Plain safetensors files and anything unrecognised get a message that says what was expected. */
export async function loadModelBytes(bytes: ArrayBuffer | Uint8Array, name: string, o: { sha16?: Sha16; onTensor?: (done: number, total: number) => void | Promise<void> } = {}): Promise<BytesModel> {
  const src = bytesSource(bytes, name);
  if (src.size === 0) throw new CometError(`${name}: the file is empty`);
  if (sniff(src.read(0, Math.min(9, src.size))) === 'safetensors') {
    const st = new Safetensors(src);
    const c = await parseComet(st, name, o.sha16, o.onTensor);
    return { config: c.config, weights: c.weights, format: 'comet', path: name, meta: c.meta, tokenizer: c.tokenizer };
  }
  if (isGguf(src.read(0, Math.min(4, src.size)))) {
    const g = await parseGguf(src);
    return { config: g.config, weights: g.weights, format: 'gguf', path: name, meta: { ...g.meta, kvDType: 'f32' }, tokenizer: g.tokenizer };
  }
  const head = src.read(0, Math.min(16, src.size));
  if (/^\s*[[{<]/.test(new TextDecoder().decode(head)))
    throw new CometError(`${name}: this is a text file (JSON, HTML or XML), not a model; expected a .comet file (or a llama2.c checkpoint)`, 'not_comet');
  try {
    const { config, weights, version } = parseLlama2c(src);
    return { config, weights, format: 'llama2c', path: name, meta: { version, kvDType: 'f32' } };
  } catch (e) {
    if (e instanceof CometError && /is this a llama2.c checkpoint|not a llama2.c checkpoint/.test(e.message))
      throw new CometError(`${name}: not a .comet file (no safetensors header) and not a llama2.c checkpoint (${e.message.replace(`${name}: `, '')})`, 'not_comet');
    throw e;
  }
}
