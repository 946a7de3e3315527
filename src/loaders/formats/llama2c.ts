// llama2.c checkpoints (karpathy/llama2.c) read from a ByteSource (../source.ts): browser-safe, no node:fs.
// ../llama2c.ts opens them from a file and writes them.
//
// The legacy v0 file that run.c reads, and the versioned float32 export
// (export.py `version1_export`). Both are float32, little-endian, one flat array per weight group.
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

import type { HostWeight } from '../../../backends/backend.ts';
import { CometError } from '../../errors.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../../model/config.ts';
import type { ByteSource } from '../source.ts';

export const LLAMA2C_MAGIC = 0x616b3432; // "ak42"
export const LLAMA2C_V1_HEADER = 256;

/** One flat float32 group in file order: an internal weight name, or `skip` floats (freq_cis). */
export type Llama2cEntry = { name: string; floats: number } | { skip: number };

/** File order of the flat f32 groups (the layouts above); llama2c.ts' writer uses it too. */
export function llama2cLayout(c: LlamaConfig, version: 0 | 1): Llama2cEntry[] {
  const one = (name: string) => ({ name, floats: weightShape(c, name).reduce((a, d) => a * d, 1) });
  const per = (base: string) => Array.from({ length: c.nLayers }, (_, i) => one(`l${i}.${base}`));
  const linears = ['wq', 'wk', 'wv', 'wo'].flatMap(per);
  const ffn = ['w_gate', 'w_down', 'w_up'].flatMap(per); // w1, w2, w3
  const out: Llama2cEntry[] = version === 0
    ? [one('tok_embed'), ...per('attn_norm'), ...linears, ...per('ffn_norm'), ...ffn, one('norm'), { skip: c.seqLen * c.headDim }]
    : [...per('attn_norm'), ...per('ffn_norm'), one('norm'), one('tok_embed'), ...linears, ...ffn];
  if (!c.tiedEmbeddings) out.push(one('output'));
  return out;
}

function llama2cConfig(ints: Int32Array, shared: boolean, path: string): LlamaConfig {
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
  if (nHeads > 0 && dim % nHeads !== 0) throw new CometError(`${path}: llama2.c header (${what}): dim is not a multiple of n_heads; not a llama2.c checkpoint?`);
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

export function parseLlama2c(src: ByteSource): Llama2cCheckpoint {
  const path = src.name, size = src.size;
  if (size < 28) throw new CometError(`${path}: ${size} bytes is too short for a llama2.c checkpoint (header alone is 28 bytes)`);
  const head = src.read(0, Math.min(size, LLAMA2C_V1_HEADER));
  const dv = new DataView(head.buffer);
  let version: 0 | 1 = 0, config: LlamaConfig;
  if (dv.getUint32(0, true) === LLAMA2C_MAGIC) {
    if (size < LLAMA2C_V1_HEADER) throw new CometError(`${path}: llama2.c 'ak42' header is cut short: ${size} bytes, expected ${LLAMA2C_V1_HEADER}`);
    const v = dv.getInt32(4, true);
    if (v === 2)
      throw new CometError(`${path}: llama2.c version 2 (Q8_0, runq.c) checkpoints are not supported; export with version 0 or 1 (float32), or convert to .comet with 'comet quantize'`);
    if (v !== 1) throw new CometError(`${path}: unknown llama2.c checkpoint version ${v} (supported: legacy v0 and v1 float32)`);
    version = 1;
    const ints = new Int32Array(head.buffer.slice(8, 36));
    if (ints[5] <= 0) throw new CometError(`${path}: llama2.c v1 header has vocab_size ${ints[5]}, expected > 0`);
    config = llama2cConfig(ints, head[36] !== 0, path);
  } else {
    const ints = new Int32Array(head.buffer.slice(0, 28));
    config = llama2cConfig(ints, ints[5] > 0, path);
  }
  // the size the header implies, in closed form: a corrupt header may claim 2^24 layers, and listing 9 x 2^24
  // tensors (llama2cLayout) before this check hung and ran out of memory
  const D = config.dim, q = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
  const perLayer = 2 * D + 2 * q * D + 2 * kv * D + 3 * config.hiddenDim * D; // norms, wq + wo, wk + wv, w1 w2 w3
  const floats = config.vocabSize * D * (config.tiedEmbeddings ? 1 : 2) + config.nLayers * perLayer + D + (version === 0 ? config.seqLen * config.headDim : 0);
  const want = (version === 0 ? 28 : LLAMA2C_V1_HEADER) + 4 * floats;
  if (size !== want)
    throw new CometError(`${path}: llama2.c v${version} checkpoint with this header (dim ${config.dim}, hidden ${config.hiddenDim}, ` +
      `${config.nLayers} layers, ${config.nHeads}/${config.nKvHeads} heads, vocab ${config.vocabSize}${config.tiedEmbeddings ? '' : ' unshared'}, ` +
      `seq_len ${config.seqLen}) must be ${want} bytes, file is ${size} bytes${size < want ? ' (truncated?)' : ''}`);
  const weights = new Map<string, HostWeight>();
  let pos = version === 0 ? 28 : LLAMA2C_V1_HEADER;
  for (const e of llama2cLayout(config, version)) {
    if ('skip' in e) { pos += 4 * e.skip; continue; }
    const data = new Float32Array(src.read(pos, 4 * e.floats, `'${e.name}'`).buffer);
    pos += 4 * e.floats;
    weights.set(e.name, { kind: 'f32', name: e.name, shape: weightShape(config, e.name), data });
  }
  return { config, weights: new Map(weightNames(config).map((n) => [n, weights.get(n)!])), version }; // canonical order, not file order
}
