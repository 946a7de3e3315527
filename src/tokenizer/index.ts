// loadTokenizer: a tokenizer by file type. tokenizer.bin (or any other file) -> llama2.c format;
// *.json -> Hugging Face tokenizer.json (+ tokenizer_config.json beside it); a directory -> its tokenizer.json.

import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CometError } from '../errors.ts';
import { readJsonObject, readRegularFile } from '../loaders/file-source.ts';
import { HFTokenizer } from './hf.ts';
import { Llama2cTokenizer } from './llama2c.ts';
import type { Tokenizer } from './tokenizer.ts';

export type { Tokenizer } from './tokenizer.ts';
export { HFTokenizer } from './hf.ts';
export { Llama2cTokenizer, runcPrintable } from './llama2c.ts';

/** `vocabSize` (the model's), when given, is checked against a tokenizer.bin's token count. */
export async function loadTokenizer(path: string, opts: { vocabSize?: number } = {}): Promise<Tokenizer> {
  if (!existsSync(path)) throw new CometError(`tokenizer not found: ${path}`, 'not_found');
  if (statSync(path).isDirectory()) {
    const p = join(path, 'tokenizer.json');
    if (!existsSync(p)) throw new CometError(`${path}: directory has no tokenizer.json`, 'not_found');
    path = p;
  }
  if (path.endsWith('.model'))
    throw new CometError(`${path}: sentencepiece .model files are not read; use its tokenizer.json or llama2.c tokenizer.bin`);
  const dir = dirname(path);
  const tmplPath = join(dir, 'chat_template.jinja');
  const template = existsSync(tmplPath) ? readRegularFile(tmplPath).toString('utf8') : undefined;
  if (!path.endsWith('.json')) return Llama2cTokenizer.fromBytes(readRegularFile(path), path, opts.vocabSize, template);
  const json = readJsonObject(path);
  const cfgPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(cfgPath) ? readJsonObject(cfgPath) : {};
  if (typeof json.model !== 'object' || json.model === null) throw new CometError(`${path}: no 'model' object; not a Hugging Face tokenizer.json`);
  return new HFTokenizer(json, config, path, template);
}

/** A regular file's bytes: a tokenizer that links to /dev/zero, or a FIFO, would be read forever. */
