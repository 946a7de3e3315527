// GGUF files on disk: loadGguf is formats/gguf.ts' parser over a file descriptor (one tensor at a time), with
// the tokenizer written out as files for loadTokenizer; writeGguf writes a float model as F32, F16, Q8_0 or
// Q4_0 (llama.cpp's block formats, formats/ggml.ts). The file layout is in formats/gguf.ts.
import { closeSync, openSync, renameSync } from 'node:fs';
import type { HostWeight } from '../../backends/backend.ts';
import type { LlamaConfig } from '../model/config.ts';
import { extractTokenizer } from './comet.ts';
import { fileSource } from './file-source.ts';
import { encodeGguf, type GgufWriteType, parseGguf } from './formats/gguf.ts';
import type { TokenizerFiles } from './formats/gguf-tokenizer.ts';
import type { LoadedModel } from './model.ts';
import { writeAll } from './safetensors.ts';

export async function loadGguf(path: string): Promise<LoadedModel> {
  const src = fileSource(path, 'GGUF file');
  try {
    const g = await parseGguf(src);
    const tokenizerPath = extractTokenizer(g.tokenizer.main, g.tokenizer.files);
    return { config: g.config, weights: g.weights, format: 'gguf', path, tokenizerPath, meta: { ...g.meta, tokenizerFiles: g.tokenizer.files } };
  } finally {
    src.close();
  }
}

/** Write `weights` (all f32) as a GGUF file of `type`; returns the ggml type each tensor got. */
export function writeGguf(path: string, config: LlamaConfig, weights: Map<string, HostWeight>, tokenizer: TokenizerFiles, type: GgufWriteType, name?: string): Record<string, string> {
  const { chunks, types } = encodeGguf(config, weights, tokenizer, type, name);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const c of chunks) writeAll(fd, c);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path); // never a half-written file under the final name
  return types;
}
