// GGUF (llama.cpp's model file, ggml/docs/gguf.md) read from a ByteSource and written to bytes: browser-safe.
// ../gguf.ts opens files and writes them.
//
//   "GGUF" · u32 version (2, 3) · u64 tensor_count · u64 kv_count · kv_count × (string key, u32 type, value)
//   · tensor_count × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset) · pad to alignment
//   · data: each tensor at data_start + offset (offset a multiple of general.alignment, default 32)
// ne[0] is the contiguous dimension, so a PyTorch [out, in] matrix is ne = [in, out]: the same bytes as COMET's
// row-major [N][K]. Header and metadata are parsed by @huggingface/gguf (DESIGN §7), fed from the ByteSource.
//
// LLaMA in GGUF (general.architecture "llama"; llama.cpp convert_hf_to_gguf.py):
//   token_embd.weight [V, D] · output_norm.weight [D] · output.weight [V, D] (absent: tied to token_embd)
//   blk.{i}.attn_norm · attn_q · attn_k · attn_v · attn_output · ffn_norm · ffn_gate · ffn_up · ffn_down (.weight)
//   attn_q/attn_k rows are in the interleaved RoPE order (the converter undoes HF's rotate-half), which is
//   COMET's internal order: no permutation either way.
//   llama.{context_length, embedding_length, block_count, feed_forward_length, attention.head_count,
//   attention.head_count_kv, attention.key_length, rope.dimension_count, rope.freq_base,
//   attention.layer_norm_rms_epsilon, vocab_size}; tokenizer.ggml.* (gguf-tokenizer.ts).
import { gguf, type GGUFParseOutput, GGUFValueType, type GGUFTypedMetadata, type MetadataValue, serializeGgufMetadata } from '@huggingface/gguf';
import type { HostWeight } from '../../../backends/backend.ts';
import { CometError } from '../../errors.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../../model/config.ts';
import type { ByteSource } from '../source.ts';
import { dequantize, GGML, GGML_BLOCK, type GgmlType, ggmlBytes, isGgmlType, quantize } from './ggml.ts';
import { ggufTokenizerFiles, type TokenizerFiles, tokenizerKVs } from './gguf-tokenizer.ts';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32

export const isGguf = (head: Uint8Array) => head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;

/** internal weight name -> GGUF tensor name */
export function ggufName(name: string): string {
  const m = /^l(\d+)\.(.+)$/.exec(name);
  if (!m) return { tok_embed: 'token_embd.weight', norm: 'output_norm.weight', output: 'output.weight' }[name] ?? name;
  const sub: Record<string, string> = {
    attn_norm: 'attn_norm', wq: 'attn_q', wk: 'attn_k', wv: 'attn_v', wo: 'attn_output',
    ffn_norm: 'ffn_norm', w_gate: 'ffn_gate', w_up: 'ffn_up', w_down: 'ffn_down',
  };
  return `blk.${m[1]}.${sub[m[2]]}.weight`;
}

export interface GgufParsed {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  tokenizer: TokenizerFiles;
  meta: { dtypes: Record<string, number>; version: number; name?: string; fileType?: number };
}

/** @huggingface/gguf reads through fetch with Range requests (it is made for remote files): answer them from
 *  the ByteSource. Reads past the end return what is there; the parser then fails on the short buffer. */
function rangeFetch(src: ByteSource): typeof fetch {
  return (async (_url: unknown, init?: { headers?: Record<string, string> }) => {
    const m = /bytes=(\d+)-(\d+)/.exec(init?.headers?.Range ?? '');
    const start = Math.min(m ? Number(m[1]) : 0, src.size), end = Math.min(m ? Number(m[2]) + 1 : src.size, src.size);
    const body = src.read(start, end - start, 'the GGUF header');
    return new Response(body as Uint8Array<ArrayBuffer>, { status: 206, headers: { 'content-range': `bytes ${start}-${Math.max(start, end - 1)}/${src.size}` } });
  }) as typeof fetch;
}

/** Header checks that need no parse: a bad count must not make the parser loop over millions of entries. */
function checkCounts(src: ByteSource): void {
  const p = src.name;
  if (src.size < 24) throw new CometError(`${p}: ${src.size} bytes is too short for a GGUF file (the header alone is 24 bytes)`);
  const dv = new DataView(src.read(0, 24).buffer);
  const version = dv.getUint32(4, true);
  if (version !== 2 && version !== 3) throw new CometError(`${p}: GGUF version ${version} is not supported (2 and 3 are; version 1 files predate 2023-08, re-convert them)`);
  const tensors = dv.getBigUint64(8, true), kvs = dv.getBigUint64(16, true);
  // a tensor entry takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes, a key-value 8 + 4 + 1
  if (tensors * 24n + kvs * 13n > BigInt(src.size))
    throw new CometError(`${p}: GGUF header claims ${tensors} tensors and ${kvs} metadata entries, more than a ${src.size}-byte file can hold (truncated or corrupt?)`);
}

const u = (md: Record<string, MetadataValue>, key: string): unknown => md[key];

/** GGUF stores eps and theta as f32: 1e-5 comes back as 9.99999974738e-6. The shortest decimal that rounds to
 *  the same f32 is what the writer meant (llama.cpp computes with the f32 itself: the same number). */
const shortestF32 = (v: number): number => {
  for (let d = 1; d <= 9; d++) if (Math.fround(Number(v.toPrecision(d))) === Math.fround(v)) return Number(v.toPrecision(d));
  return v;
};

/** A whole GGUF LLaMA: config, weights dequantized to f32, and the tokenizer as files COMET's loaders read. */
export async function parseGguf(src: ByteSource): Promise<GgufParsed> {
  const p = src.name;
  checkCounts(src);
  let parsed: GGUFParseOutput<{ strict: false }>;
  try {
    parsed = await gguf(`https://comet.invalid/${encodeURIComponent(p)}`, { fetch: rangeFetch(src), computeParametersCount: true }) as GGUFParseOutput<{ strict: false }>;
  } catch (e) {
    if (e instanceof CometError) throw e;
    throw new CometError(`${p}: not a readable GGUF file (${(e as Error).message})`);
  }
  const md = parsed.metadata as Record<string, MetadataValue>;
  const arch = u(md, 'general.architecture');
  if (arch !== 'llama')
    throw new CometError(`${p}: GGUF architecture ${JSON.stringify(arch)} is not supported (COMET runs general.architecture "llama")`);
  const int = (key: string, dflt?: number): number => {
    const v = u(md, key) ?? dflt;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new CometError(`${p}: GGUF metadata ${key} is ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)?.slice(0, 40)}, expected a non-negative integer`);
    return n;
  };
  const num = (key: string, dflt: number): number => {
    const v = u(md, key) ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new CometError(`${p}: GGUF metadata ${key} is ${JSON.stringify(v)?.slice(0, 40)}, expected a positive number`);
    return shortestF32(v);
  };
  for (const k of ['llama.rope.scaling.type', 'llama.rope.scaling.factor'])
    if (u(md, k) !== undefined && u(md, k) !== 'none' && u(md, k) !== 1)
      throw new CometError(`${p}: ${k} = ${JSON.stringify(u(md, k))}: RoPE scaling is not supported (COMET runs plain RoPE)`);

  const tensors = new Map(parsed.tensorInfos.map((t) => [t.name, t]));
  const tokens = u(md, 'tokenizer.ggml.tokens');
  const embd = tensors.get('token_embd.weight');
  const dim = int('llama.embedding_length'), nHeads = int('llama.attention.head_count');
  const config: LlamaConfig = {
    dim,
    hiddenDim: int('llama.feed_forward_length'),
    nLayers: int('llama.block_count'),
    nHeads,
    nKvHeads: int('llama.attention.head_count_kv', nHeads),
    headDim: int('llama.attention.key_length', nHeads > 0 ? Math.floor(dim / nHeads) : 0),
    vocabSize: int('llama.vocab_size', Array.isArray(tokens) ? tokens.length : embd ? Number(embd.shape[1] ?? 0) : 0),
    seqLen: int('llama.context_length', 2048),
    normEps: num('llama.attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: num('llama.rope.freq_base', 10000),
    tiedEmbeddings: !tensors.has('output.weight'),
    bos: int('tokenizer.ggml.bos_token_id', 1),
    // generation ends at any end-of-generation token, as llama.cpp's does (llama_vocab_is_eog): EOS, and the
    // end-of-turn / end-of-message tokens chat models emit (Llama 3's <|eot_id|>, <|eom_id|>)
    eos: [...new Set(['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']
      .filter((k, i) => i === 0 || u(md, k) !== undefined).map((k) => int(k, 2)))],
  };
  try {
    validateConfig(config, p);
  } catch (e) {
    throw new CometError((e as Error).message);
  }
  const rot = int('llama.rope.dimension_count', config.headDim);
  if (rot !== config.headDim) throw new CometError(`${p}: llama.rope.dimension_count ${rot} differs from head_dim ${config.headDim} (partial RoPE is not supported)`);
  if (config.nLayers * 9 > tensors.size) throw new CometError(`${p}: llama.block_count ${config.nLayers}, but the file holds only ${tensors.size} tensors (a LLaMA layer has 9)`);
  const known = new Set(weightNames(config).map(ggufName));
  if (tensors.has('rope_freqs.weight'))
    throw new CometError(`${p}: the file has rope_freqs.weight (Llama 3.1-style RoPE frequency scaling), which COMET does not run (plain RoPE only)`);
  for (const name of tensors.keys())
    if (!known.has(name))
      throw new CometError(`${p}: unexpected tensor '${name}' for a LLaMA with ${config.nLayers} layers (no biases, no extra tensors)`);

  const alignment = int('general.alignment', 32);
  const dataStart = Number(parsed.tensorDataOffset), dataLen = src.size - dataStart;
  if (dataLen < 0) throw new CometError(`${p}: the GGUF tensor data would start at byte ${dataStart}, past the end of the file (${src.size} bytes)`);
  const weights = new Map<string, HostWeight>();
  const dtypes: Record<string, number> = {};
  for (const name of weightNames(config)) {
    const gn = ggufName(name), t = tensors.get(gn);
    if (!t) throw new CometError(`${p}: tensor '${gn}' is missing`);
    const shape = weightShape(config, name);
    const ne = t.shape.map(Number);
    const want = [...shape].reverse(); // GGUF lists ne0 (columns) first
    if (ne.length !== want.length || ne.some((d, i) => d !== want[i]))
      throw new CometError(`${p}: tensor '${gn}' has ne [${ne}], the metadata implies [${want}]`);
    if (!isGgmlType(t.dtype))
      throw new CometError(`${p}: tensor '${gn}' has ggml type ${t.dtype}; COMET reads ${Object.values(GGML_BLOCK).map((b) => b.name).join(', ')} (requantize with llama-quantize, or export F16 from the source model)`);
    const type = t.dtype as GgmlType, n = shape.reduce((a, d) => a * d, 1);
    const bytes = ggmlBytes(type, ne[0], n, `${p}: tensor '${gn}'`);
    const off = Number(t.offset);
    if (off % alignment !== 0) throw new CometError(`${p}: tensor '${gn}' starts at data offset ${off}, not a multiple of the alignment ${alignment}`);
    if (off + bytes > dataLen) throw new CometError(`${p}: tensor '${gn}' (${GGML_BLOCK[type].name}, ${bytes} bytes at data offset ${off}) runs past the end of the file (truncated?)`);
    const data = dequantize(type, src.read(dataStart + off, bytes, `tensor '${gn}'`), n);
    const bad = data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new CometError(`${p}: tensor '${gn}' holds a non-finite value (${data[bad]}) at element ${bad}`);
    dtypes[GGML_BLOCK[type].name] = (dtypes[GGML_BLOCK[type].name] ?? 0) + 1;
    weights.set(name, { kind: 'f32', name, shape, data });
  }
  const tokenizer = ggufTokenizerFiles(md, p, config.vocabSize);
  const name = u(md, 'general.name'), fileType = u(md, 'general.file_type');
  return { config, weights, tokenizer, meta: { dtypes, version: Number(parsed.metadata.version), ...(typeof name === 'string' ? { name } : {}), ...(typeof fileType === 'number' ? { fileType } : {}) } };
}

// ---- writer ----

export type GgufWriteType = 'f32' | 'f16' | 'q8_0' | 'q4_0';
const WRITE: Record<GgufWriteType, { type: GgmlType; fileType: number }> = {
  f32: { type: GGML.F32, fileType: 0 }, f16: { type: GGML.F16, fileType: 1 }, // llama_ftype: ALL_F32, MOSTLY_F16,
  q8_0: { type: GGML.Q8_0, fileType: 7 }, q4_0: { type: GGML.Q4_0, fileType: 2 }, // MOSTLY_Q8_0, MOSTLY_Q4_0
};
export const GGUF_WRITE_TYPES = Object.keys(WRITE) as GgufWriteType[];

export interface GgufEncoded {
  /** header + metadata + tensor infos + padding, then each tensor's bytes (each padded to the alignment) */
  chunks: Uint8Array[];
  /** per tensor, the ggml type it was written in (1-D norms stay F32; rows that are not whole blocks fall back to F16, as llama-quantize does) */
  types: Record<string, string>;
}

const ALIGN = 32;
const pad = (n: number) => (n + ALIGN - 1) & ~(ALIGN - 1);

/** A float LLaMA (every weight f32 on the host) as a GGUF v3 file of `type`, tokenizer included. */
export function encodeGguf(config: LlamaConfig, weights: Map<string, HostWeight>, tok: TokenizerFiles, type: GgufWriteType, name = 'comet'): GgufEncoded {
  // llama.cpp takes Llama-3.1's scaled frequencies as a rope_freqs tensor, not written here: refuse, never export a wrong model
  if (config.ropeScaling) throw new CometError(`gguf: a model with ${config.ropeScaling.type} RoPE scaling cannot be exported to GGUF yet`);
  const w = WRITE[type];
  const le = new TextEncoder();
  const tensors: Array<{ name: string; ne: number[]; type: GgmlType; bytes: Uint8Array }> = [];
  const types: Record<string, string> = {};
  for (const n of weightNames(config)) {
    const hw = weights.get(n);
    if (!hw || hw.kind !== 'f32')
      throw new CometError(`GGUF export needs a float model: weight '${n}' is ${hw ? hw.kind : 'missing'} (export from the float checkpoint, not a .comet file)`);
    const shape = weightShape(config, n), ne = [...shape].reverse();
    let t: GgmlType = shape.length === 1 ? GGML.F32 : w.type; // llama.cpp keeps norms in F32 in every file type
    if (ne[0] % GGML_BLOCK[t].elems !== 0) t = GGML.F16;
    tensors.push({ name: ggufName(n), ne, type: t, bytes: quantize(t, hw.data) });
    types[ggufName(n)] = GGML_BLOCK[t].name;
  }
  const kv: Record<string, { value: MetadataValue; type: GGUFValueType; subType?: GGUFValueType }> = {
    'general.architecture': { value: 'llama', type: GGUFValueType.STRING },
    'general.name': { value: name, type: GGUFValueType.STRING },
    'general.file_type': { value: w.fileType, type: GGUFValueType.UINT32 },
    ...(type.startsWith('q') ? { 'general.quantization_version': { value: 2, type: GGUFValueType.UINT32 } } : {}),
    'llama.context_length': { value: config.seqLen, type: GGUFValueType.UINT32 },
    'llama.embedding_length': { value: config.dim, type: GGUFValueType.UINT32 },
    'llama.block_count': { value: config.nLayers, type: GGUFValueType.UINT32 },
    'llama.feed_forward_length': { value: config.hiddenDim, type: GGUFValueType.UINT32 },
    'llama.rope.dimension_count': { value: config.headDim, type: GGUFValueType.UINT32 },
    'llama.attention.head_count': { value: config.nHeads, type: GGUFValueType.UINT32 },
    'llama.attention.head_count_kv': { value: config.nKvHeads, type: GGUFValueType.UINT32 },
    'llama.attention.key_length': { value: config.headDim, type: GGUFValueType.UINT32 },
    'llama.attention.value_length': { value: config.headDim, type: GGUFValueType.UINT32 },
    'llama.attention.layer_norm_rms_epsilon': { value: config.normEps, type: GGUFValueType.FLOAT32 },
    'llama.rope.freq_base': { value: config.ropeTheta, type: GGUFValueType.FLOAT32 },
    'llama.vocab_size': { value: config.vocabSize, type: GGUFValueType.UINT32 },
    ...tokenizerKVs(tok, config),
  };
  const typed = {
    version: { value: 3, type: GGUFValueType.UINT32 },
    tensor_count: { value: BigInt(tensors.length), type: GGUFValueType.UINT64 },
    kv_count: { value: BigInt(Object.keys(kv).length), type: GGUFValueType.UINT64 },
    ...kv,
  } as GGUFTypedMetadata;
  const head = serializeGgufMetadata(typed, { alignment: 1 }); // tensor infos follow the metadata unpadded
  const infos: Uint8Array[] = [];
  let off = 0;
  for (const t of tensors) {
    const nameBytes = le.encode(t.name);
    const b = new Uint8Array(8 + nameBytes.length + 4 + 8 * t.ne.length + 4 + 8), dv = new DataView(b.buffer);
    dv.setBigUint64(0, BigInt(nameBytes.length), true);
    b.set(nameBytes, 8);
    let o = 8 + nameBytes.length;
    dv.setUint32(o, t.ne.length, true);
    o += 4;
    for (const d of t.ne) { dv.setBigUint64(o, BigInt(d), true); o += 8; }
    dv.setUint32(o, t.type, true);
    dv.setBigUint64(o + 4, BigInt(off), true);
    infos.push(b);
    off = pad(off + t.bytes.length);
  }
  const headLen = head.length + infos.reduce((a, b) => a + b.length, 0);
  const chunks = [head, ...infos, new Uint8Array(pad(headLen) - headLen)];
  for (const t of tensors) chunks.push(t.bytes, new Uint8Array(pad(t.bytes.length) - t.bytes.length));
  return { chunks, types };
}
