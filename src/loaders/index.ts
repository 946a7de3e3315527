// loadModel: one entry point for every model format. Dispatch:
//   a directory                                   -> Hugging Face layout (hf.ts)
//   a safetensors file with __metadata__.format 'comet' -> .comet (comet.ts, DESIGN §3.6)
//   a file that starts with "GGUF"                 -> llama.cpp GGUF (gguf.ts)
//   any other file                                 -> llama2.c checkpoint (llama2c.ts)
// and findTokenizerPath: the tokenizer that sits beside a model.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CometError } from '../errors.ts';
import { loadComet } from './comet.ts';
import { fileSource } from './file-source.ts';
import { isGguf } from './formats/gguf.ts';
import { isSafetensors } from './formats/safetensors.ts';
import { loadGguf } from './gguf.ts';
import { readHF } from './hf.ts';
import { readLlama2c } from './llama2c.ts';
import type { LoadedModel } from './model.ts';
import { SafetensorsFile } from './safetensors.ts';

export type { LoadedModel } from './model.ts';

export async function loadModel(path: string): Promise<LoadedModel> {
  if (!existsSync(path)) throw new CometError(`model not found: ${path}`, 'not_found');
  const stat = statSync(path);
  // a FIFO would block open() forever and a device never ends: only directories and regular files
  if (!stat.isDirectory() && !stat.isFile()) throw new CometError(`${path}: not a regular file or a directory`);
  if (stat.isDirectory()) {
    if (!existsSync(join(path, 'config.json')))
      throw new CometError(`${path}: a model directory needs config.json (Hugging Face layout)`, 'not_found');
    const { config, weights, dtypes } = readHF(path);
    return { config, weights, format: 'hf', path, tokenizerPath: findTokenizerPath(path), meta: { dtypes } };
  }
  const first = head(path, 9);
  if (isGguf(first)) return loadGguf(path);
  if (isSafetensors(first)) {
    const st = SafetensorsFile.open(path);
    const isComet = st.metadata.format === 'comet';
    st.close();
    if (isComet) return loadComet(path);
    throw new CometError(`${path}: a safetensors file that is not a .comet model; pass the Hugging Face directory that holds it (with config.json)`);
  }
  const { config, weights, version } = readLlama2c(path);
  return { config, weights, format: 'llama2c', path, tokenizerPath: findTokenizerPath(path), meta: { version, dtypes: { F32: weights.size } } };
}

/** The first (up to) n bytes of a file. */
function head(path: string, n: number): Uint8Array {
  const src = fileSource(path, 'model file');
  try {
    return src.read(0, Math.min(n, src.size));
  } finally {
    src.close();
  }
}

/** The tokenizer that belongs to a model: an HF directory's tokenizer.json; beside a file: tokenizer.bin,
 *  else the single tok*.bin, else tokenizer.json. undefined when none is found. */
export function findTokenizerPath(modelPath: string): string | undefined {
  if (existsSync(modelPath) && statSync(modelPath).isDirectory()) {
    const p = join(modelPath, 'tokenizer.json');
    return existsSync(p) ? p : undefined;
  }
  const dir = dirname(modelPath);
  if (existsSync(join(dir, 'tokenizer.bin'))) return join(dir, 'tokenizer.bin');
  const toks = existsSync(dir) ? readdirSync(dir).filter((f) => /^tok.*\.bin$/.test(f) && f !== basename(modelPath)) : [];
  if (toks.length === 1) return join(dir, toks[0]);
  return existsSync(join(dir, 'tokenizer.json')) ? join(dir, 'tokenizer.json') : undefined;
}
