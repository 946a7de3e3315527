// llama2.c checkpoints (karpathy/llama2.c) on disk: readLlama2c is formats/llama2c.ts' parseLlama2c (the one
// parser, browser and Node alike) over a file descriptor; writeLlama2c writes v0 (as run.c reads it) or v1.
// Both layouts are in formats/llama2c.ts.

import { closeSync, openSync } from 'node:fs';
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import { type LlamaConfig, weightShape } from '../model/config.ts';
import { fileSource } from './file-source.ts';
import { LLAMA2C_MAGIC, LLAMA2C_V1_HEADER, type Llama2cCheckpoint, llama2cLayout, parseLlama2c } from './formats/llama2c.ts';
import { writeAll } from './safetensors.ts';

export function readLlama2c(path: string): Llama2cCheckpoint {
  const src = fileSource(path, 'model file');
  try {
    return parseLlama2c(src);
  } finally {
    src.close();
  }
}

/** Write a llama2.c checkpoint (v0 as run.c reads it, or v1). The format stores neither norm eps nor RoPE
 *  theta (llama2.c fixes them at 1e-5 and 10000) and needs head_dim = dim / n_heads. */
export function writeLlama2c(path: string, c: LlamaConfig, weights: Map<string, HostWeight>, opts: { version: 0 | 1 } = { version: 0 }): void {
  if (c.headDim * c.nHeads !== c.dim)
    throw new CometError(`${path}: llama2.c format needs head_dim * n_heads = dim, got ${c.headDim} * ${c.nHeads} != ${c.dim}`);
  const { version } = opts;
  const ints = new Int32Array([c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.vocabSize, c.seqLen]);
  let header: Uint8Array;
  if (version === 0) {
    if (!c.tiedEmbeddings) ints[5] = -c.vocabSize;
    header = new Uint8Array(ints.buffer);
  } else {
    header = new Uint8Array(LLAMA2C_V1_HEADER);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, LLAMA2C_MAGIC, true);
    dv.setInt32(4, 1, true);
    header.set(new Uint8Array(ints.buffer), 8);
    header[36] = c.tiedEmbeddings ? 1 : 0;
  }
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, header);
    for (const e of llama2cLayout(c, version)) {
      let data: Float32Array;
      if ('skip' in e) data = freqCis(c);
      else {
        const w = weights.get(e.name);
        if (!w || w.kind !== 'f32') throw new CometError(`${path}: writing llama2.c: weight '${e.name}' is ${w ? w.kind : 'missing'}, expected f32`);
        if (w.data.length !== e.floats)
          throw new CometError(`${path}: writing llama2.c: weight '${e.name}' has ${w.data.length} floats, expected ${e.floats} ${JSON.stringify(weightShape(c, e.name))}`);
        data = w.data;
      }
      writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  } finally {
    closeSync(fd);
  }
}

/** freq_cis_real then freq_cis_imag, (seq_len, head_dim/2) each, as llama2.c's model.py precomputes them. */
function freqCis(c: LlamaConfig): Float32Array {
  const half = c.headDim / 2, out = new Float32Array(2 * c.seqLen * half);
  for (let t = 0; t < c.seqLen; t++)
    for (let i = 0; i < half; i++) {
      const a = t * Math.pow(c.ropeTheta, -(2 * i) / c.headDim);
      out[t * half + i] = Math.cos(a);
      out[c.seqLen * half + t * half + i] = Math.sin(a);
    }
  return out;
}
