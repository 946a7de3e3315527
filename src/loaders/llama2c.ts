// llama2.c checkpoints (karpathy/llama2.c): the legacy v0 file that run.c reads, and the versioned float32
// export (export.py `version1_export`). Both are float32, little-endian, one flat array per weight group.
//
// v0 (legacy):  int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len   (28 bytes)
//   vocab_size < 0 means the classifier is NOT shared with the embedding (then wcls follows at the end).
//   token_embedding (V, D) · rms_att (L, D) · wq (L, D, D) · wk (L, kvD, D) · wv (L, kvD, D) · wo (L, D, D)
//   · rms_ffn (L, D) · w1 (L, H, D) · w2 (L, D, H) · w3 (L, H, D) · rms_final (D)
//   · freq_cis_real (seq_len, hd/2) · freq_cis_imag (seq_len, hd/2)   [unused by run.c: skipped]
//   · wcls (V, D) if unshared
// v1: 256-byte header: u32 magic 0x616b3432 ("ak42"), int32 version = 1, the same 7 int32 (vocab > 0),
//   u8 shared_classifier, zero padding. Then norms FIRST: rms_att (L, D) · rms_ffn (L, D) · rms_final (D)
//   · token_embedding · wq · wk · wv · wo · w1 · w2 · w3 · [wcls]; no freq_cis.
//   v2 (Q8_0, runq.c) is not read: it is int8 with per-group scales, a different file.
// head_size = dim / n_heads and kvD = n_kv_heads * head_size (run.c). q/k rows are in llama2.c's interleaved
// RoPE order already, which is COMET's internal order. w1 = w_gate, w2 = w_down, w3 = w_up.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../model/config.ts';
import { writeAll } from './safetensors.ts';

export const LLAMA2C_MAGIC = 0x616b3432;
const V1_HEADER = 256;

/** One flat float32 group in file order: an internal weight name, or `skip` floats (freq_cis). */
type Entry = { name: string; floats: number } | { skip: number };

function layout(c: LlamaConfig, version: 0 | 1): Entry[] {
  const per = (base: string) =>
    Array.from({ length: c.nLayers }, (_, i) => {
      const name = `l${i}.${base}`;
      return { name, floats: weightShape(c, name).reduce((a, d) => a * d, 1) };
    });
  const one = (name: string) => ({ name, floats: weightShape(c, name).reduce((a, d) => a * d, 1) });
  const linears = ['wq', 'wk', 'wv', 'wo'].flatMap(per);
  const ffn = ['w_gate', 'w_down', 'w_up'].flatMap(per); // w1, w2, w3
  const out: Entry[] = version === 0
    ? [one('tok_embed'), ...per('attn_norm'), ...linears, ...per('ffn_norm'), ...ffn, one('norm'), { skip: c.seqLen * c.headDim }]
    : [...per('attn_norm'), ...per('ffn_norm'), one('norm'), one('tok_embed'), ...linears, ...ffn];
  if (!c.tiedEmbeddings) out.push(one('output'));
  return out;
}

const headerBytes = (version: 0 | 1) => (version === 0 ? 28 : V1_HEADER);
/** The file size the header implies, in closed form (not through layout(): a corrupt header may claim 2^24
 *  layers, and the size check must refuse it before anything of that size is built). */
const expectedBytes = (c: LlamaConfig, version: 0 | 1) => {
  const D = c.dim, q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const perLayer = 2 * D + 2 * q * D + 2 * kv * D + 3 * c.hiddenDim * D; // norms, wq + wo, wk + wv, w1 w2 w3
  const floats = c.vocabSize * D * (c.tiedEmbeddings ? 1 : 2) + c.nLayers * perLayer + D + (version === 0 ? c.seqLen * c.headDim : 0);
  return headerBytes(version) + 4 * floats;
};

function configFrom(ints: Int32Array, shared: boolean, path: string): LlamaConfig {
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = ints;
  const c: LlamaConfig = {
    dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), seqLen,
    headDim: nHeads > 0 ? dim / nHeads : 0,
    normEps: 1e-5, ropeTheta: 10000, // fixed in llama2.c (run.c rmsnorm and RoPE)
    tiedEmbeddings: shared,
    bos: 1,
    eos: [1, 2], // run.c stops when it samples BOS (1): the TinyStories data delimits stories with BOS; 2 is EOS
  };
  const what = `dim=${dim} hidden_dim=${hiddenDim} n_layers=${nLayers} n_heads=${nHeads} n_kv_heads=${nKvHeads} vocab_size=${vocab} seq_len=${seqLen}`;
  if (nHeads > 0 && dim % nHeads !== 0) throw new CometError(`${path}: llama2.c header (${what}): dim is not a multiple of n_heads`);
  try {
    validateConfig(c, path);
  } catch (e) {
    throw new CometError(`${(e as Error).message} (llama2.c header: ${what}; is this a llama2.c checkpoint?)`);
  }
  return c;
}

export interface Llama2cCheckpoint {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  version: 0 | 1;
}

export function readLlama2c(path: string): Llama2cCheckpoint {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new CometError(`${path}: cannot open model file (${(e as NodeJS.ErrnoException).code ?? e})`, 'not_found');
  }
  try {
    const size = fstatSync(fd).size;
    const head = new Uint8Array(Math.min(size, V1_HEADER));
    readSync(fd, head, 0, head.length, 0);
    if (size < 28) throw new CometError(`${path}: ${size} bytes is too short for a llama2.c checkpoint (header alone is 28 bytes)`);
    const dv = new DataView(head.buffer);
    let version: 0 | 1 = 0, config: LlamaConfig;
    if (dv.getUint32(0, true) === LLAMA2C_MAGIC) {
      if (size < V1_HEADER) throw new CometError(`${path}: llama2.c 'ak42' header is cut short: ${size} bytes, expected ${V1_HEADER}`);
      const v = dv.getInt32(4, true);
      if (v === 2)
        throw new CometError(`${path}: llama2.c version 2 (Q8_0, runq.c) checkpoints are not supported; export with version 0 or 1 (float32), or convert to .comet with 'comet quantize'`);
      if (v !== 1) throw new CometError(`${path}: unknown llama2.c checkpoint version ${v} (supported: legacy v0 and v1 float32)`);
      version = 1;
      const ints = new Int32Array(head.buffer.slice(8, 36));
      if (ints[5] <= 0) throw new CometError(`${path}: llama2.c v1 header has vocab_size ${ints[5]}, expected > 0`);
      config = configFrom(ints, head[36] !== 0, path);
    } else {
      const ints = new Int32Array(head.buffer.slice(0, 28));
      config = configFrom(ints, ints[5] > 0, path);
    }
    const want = expectedBytes(config, version);
    if (size !== want)
      throw new CometError(`${path}: llama2.c v${version} checkpoint with this header (dim ${config.dim}, hidden ${config.hiddenDim}, ` +
        `${config.nLayers} layers, ${config.nHeads}/${config.nKvHeads} heads, vocab ${config.vocabSize}${config.tiedEmbeddings ? '' : ' unshared'}, ` +
        `seq_len ${config.seqLen}) must be ${want} bytes, file is ${size} bytes${size < want ? ' (truncated?)' : ''}`);
    const weights = new Map<string, HostWeight>();
    let pos = headerBytes(version);
    for (const e of layout(config, version)) {
      if ('skip' in e) {
        pos += 4 * e.skip;
        continue;
      }
      const data = new Float32Array(e.floats);
      const bytes = new Uint8Array(data.buffer);
      for (let done = 0; done < bytes.length; ) {
        const n = readSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), pos + done);
        if (n === 0) throw new CometError(`${path}: file ended while reading '${e.name}'`);
        done += n;
      }
      pos += bytes.length;
      weights.set(e.name, { kind: 'f32', name: e.name, shape: weightShape(config, e.name), data });
    }
    const ordered = new Map(weightNames(config).map((n) => [n, weights.get(n)!])); // canonical order, not file order
    return { config, weights: ordered, version };
  } finally {
    closeSync(fd);
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
    header = new Uint8Array(V1_HEADER);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, LLAMA2C_MAGIC, true);
    dv.setInt32(4, 1, true);
    header.set(new Uint8Array(ints.buffer), 8);
    header[36] = c.tiedEmbeddings ? 1 : 0;
  }
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, header);
    for (const e of layout(c, version)) {
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
