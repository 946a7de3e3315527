// Every model format parsed once, from a ByteSource (source.ts): a random-access view of one file. Node
// passes fileSource (file-source.ts: reads at an offset on a file descriptor, one tensor at a time); the
// browser, and any caller that already holds a file in memory, passes bytesSource. No node:fs here.
//
//   sniff(head)              'safetensors' (u64 LE header length, high word 0, then '{') or 'llama2c'
//   Safetensors              header checked entry by entry (dtype, shape × size = bytes, in bounds, no overlap),
//                            then tensors read one at a time (SafetensorsFile in safetensors.ts: over a file)
//   parseLlama2c(src)        llama2.c v0 / v1 float32 checkpoints
//   parseComet(st)           a .comet file (DESIGN §3.6) from its Safetensors reader
//   loadModelBytes(bytes)    dispatch: llama2.c, or a .comet safetensors file; a plain safetensors file is
//                            refused with a message that says what it is
// Every failure is a CometError whose message names the file and says what was expected. Host byte order is
// assumed little-endian (x86, ARM), as every typed-array view here is.
import type { HostWeight } from '../../backends/backend.ts';
import { actSpec } from '../../simulator/act.ts';
import { checkW4 } from '../../simulator/w4.ts';
import { CometError } from '../errors.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../model/config.ts';
import { type ByteSource, bytesSource } from './source.ts';

/** safetensors starts with a u64 LE header length (< 4 GB: high word 0) then '{'. A llama2.c file never
 *  does: its second int32 is hidden_dim (v0) or the version (v1), both non-zero. */
export function sniff(head: Uint8Array): 'safetensors' | 'llama2c' {
  if (head.length < 9) return 'llama2c';
  const dv = new DataView(head.buffer, head.byteOffset, 9);
  return dv.getUint32(4, true) === 0 && dv.getUint32(0, true) > 1 && head[8] === 0x7b ? 'safetensors' : 'llama2c';
}

// ---- safetensors (https://github.com/huggingface/safetensors, "Format") ----
//   u64 LE  N                       header length in bytes
//   N bytes JSON header             { "__metadata__"?: {str: str}, name: { dtype, shape, data_offsets: [begin, end] } }
//   data                            tensors, row-major little-endian; offsets are relative to byte 8+N

export const DTYPE_SIZE = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
} as const;
export type StDType = keyof typeof DTYPE_SIZE;

export interface TensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  begin: number; // byte offsets into the data section, [begin, end)
  end: number;
}

export type StTypedArray =
  | Float64Array | Float32Array | Uint16Array | Int32Array | Int16Array | Int8Array | Uint8Array
  | BigInt64Array | BigUint64Array | Uint32Array;

const MAX_HEADER = 100 << 20; // the spec's own limit on the JSON header (100 MB)

/** Read and check the header: every entry before anything of the sizes it claims is allocated. */
function readHeader(src: ByteSource): { dataStart: number; metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  const p = src.name, size = src.size;
  if (size < 8) throw new CometError(`${p}: not a safetensors file: ${size} bytes, shorter than the 8-byte header length`);
  const n = Number(new DataView(src.read(0, 8).buffer).getBigUint64(0, true));
  if (n > size - 8) throw new CometError(`${p}: safetensors header length ${n} runs past the end of the file (${size} bytes; truncated?)`);
  if (n > MAX_HEADER) throw new CometError(`${p}: safetensors header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(src.read(8, n, 'the safetensors header')));
  } catch (e) {
    throw new CometError(`${p}: safetensors header is not valid JSON (${(e as Error).message})`);
  }
  const metadata: Record<string, string> = {}, tensors = new Map<string, TensorInfo>(), dataLen = size - 8 - n;
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new CometError(`${p}: safetensors header is not a JSON object`);
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null) throw new CometError(`${p}: __metadata__ is not an object`);
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw new CometError(`${p}: __metadata__.${k} is not a string`);
        metadata[k] = s;
      }
      continue;
    }
    const bad = (what: string): never => { throw new CometError(`${p}: tensor '${name}': ${what}`); };
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) bad('header entry is not an object');
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_SIZE)) bad(`dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(DTYPE_SIZE).join(', ')})`);
    const dtype = e.dtype as StDType;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`shape ${JSON.stringify(e.shape)} (expected an array of non-negative integers)`);
    const shape = e.shape as number[];
    const o = e.data_offsets;
    if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x) && x >= 0) || o[0] > o[1])
      bad(`data_offsets ${JSON.stringify(o)} (expected [begin, end] with 0 <= begin <= end)`);
    const [begin, end] = o as [number, number];
    const bytes = shape.reduce((a, d) => a * d, 1) * DTYPE_SIZE[dtype];
    if (end - begin !== bytes) bad(`${dtype} ${JSON.stringify(shape)} needs ${bytes} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`);
    if (end > dataLen) bad(`data_offsets [${begin}, ${end}] point past the end of the file (data section is ${dataLen} bytes, file ${size}; truncated?)`);
    tensors.set(name, { name, dtype, shape, begin, end });
  }
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++)
    if (sorted[i].begin < sorted[i - 1].end)
      throw new CometError(`${p}: tensors '${sorted[i - 1].name}' [${sorted[i - 1].begin}, ${sorted[i - 1].end}) and '${sorted[i].name}' [${sorted[i].begin}, ${sorted[i].end}) overlap`);
  return { dataStart: 8 + n, metadata, tensors };
}

/** A safetensors file read through a ByteSource, one tensor at a time. It owns `src`: close() closes it, and
 *  so does a header that fails its checks. */
export class Safetensors {
  readonly dataStart: number;
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorInfo>;
  constructor(private readonly src: ByteSource) {
    try {
      ({ dataStart: this.dataStart, metadata: this.metadata, tensors: this.tensors } = readHeader(src));
    } catch (e) {
      src.close?.();
      throw e;
    }
  }

  get path(): string {
    return this.src.name;
  }

  info(name: string): TensorInfo {
    return this.tensors.get(name) ?? (() => { throw new CometError(`${this.src.name}: no tensor '${name}'`); })();
  }

  /** Raw bytes of one tensor, in a buffer of their own (hence aligned). */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.src.read(this.dataStart + t.begin, t.end - t.begin, `tensor '${name}'`);
  }

  /** One tensor as the typed array of its dtype (F16/BF16 as raw Uint16 bits, F8 and BOOL as Uint8). */
  get(name: string): StTypedArray {
    const t = this.info(name), b = this.bytes(name).buffer;
    switch (t.dtype) {
      case 'F64': return new Float64Array(b);
      case 'F32': return new Float32Array(b);
      case 'F16': case 'BF16': case 'U16': return new Uint16Array(b);
      case 'I64': return new BigInt64Array(b);
      case 'U64': return new BigUint64Array(b);
      case 'I32': return new Int32Array(b);
      case 'U32': return new Uint32Array(b);
      case 'I16': return new Int16Array(b);
      case 'I8': return new Int8Array(b);
      default: return new Uint8Array(b);
    }
  }

  /** A float tensor (F32, F16 or BF16; all exact in f32) as Float32Array. */
  getF32(name: string): Float32Array {
    const t = this.info(name), raw = this.get(name);
    switch (t.dtype) {
      case 'F32': return raw as Float32Array;
      case 'F16': return f16ToF32(raw as Uint16Array);
      case 'BF16': return bf16ToF32(raw as Uint16Array);
      default: throw new CometError(`${this.src.name}: tensor '${name}' has dtype ${t.dtype}, expected a float tensor (F32, F16 or BF16)`);
    }
  }

  close(): void {
    this.src.close?.();
  }
}

/** bf16 is the top half of an f32: widening is a 16-bit shift, exact. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

let F16_TABLE: Float32Array | undefined;
/** IEEE half -> float (exact), through a 64K-entry table built once. */
export function f16ToF32(src: Uint16Array): Float32Array {
  const t = (F16_TABLE ??= Float32Array.from({ length: 65536 }, (_, h) => {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }));
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

// ---- llama2.c (karpathy/llama2.c): the legacy v0 file that run.c reads, and the versioned float32 export
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

// ---- .comet (DESIGN §3.6; the tensor and metadata layout is comet.ts' header comment) ----

export interface CometParsed {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  meta: Record<string, unknown>; // quant, kvDType, kvGroup, weightError, dtypes
  tokenizer: { main: string; files: Array<{ name: string; bytes: Uint8Array }> };
}

export const COMET_FORMAT_VERSION = '1';

/** First 16 hex digits of SHA-256, as comet.ts' checksums. WebCrypto here (browsers: secure contexts only,
 *  which http://127.0.0.1 and https are); Node would pass node:crypto's. */
export type Sha16 = (b: Uint8Array) => Promise<string>;
export const webSha16: Sha16 = async (b) => {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>));
  return Array.from(d.subarray(0, 8), (x) => x.toString(16).padStart(2, '0')).join('');
};

/** Weights, config and tokenizer files of a .comet file, each tensor checked against its checksum, its dtype
 *  and shape, and its scales for non-finite values. `onTensor(done, total)` reports progress. */
export async function parseComet(st: Safetensors, path: string, sha16: Sha16 = webSha16, onTensor?: (done: number, total: number) => void | Promise<void>): Promise<CometParsed> {
  const md = st.metadata;
  if (md.format !== 'comet') throw new CometError(`${path}: a safetensors file, but not a .comet model (metadata format ${JSON.stringify(md.format ?? null)}); convert it with 'comet quantize'`, 'not_comet');
  if (md.version !== COMET_FORMAT_VERSION) throw new CometError(`${path}: .comet version ${md.version} is not supported (this build reads version ${COMET_FORMAT_VERSION})`);
  const json = <T>(key: string): T => {
    if (md[key] === undefined) throw new CometError(`${path}: .comet metadata has no '${key}'`);
    try {
      return JSON.parse(md[key]) as T;
    } catch (e) {
      throw new CometError(`${path}: .comet metadata '${key}' is not valid JSON (${(e as Error).message})`);
    }
  };
  const config = json<LlamaConfig>('config');
  try {
    validateConfig(config, path);
  } catch (e) {
    throw new CometError((e as Error).message);
  }
  // every layer has at least 9 tensors: a config claiming more layers than the file has tensors is refused
  // before weightNames lists them (2^24 layers ran the process out of memory)
  // validateConfig does not look at RoPE theta; a string or a negative one makes every activation NaN
  if (!(typeof config.ropeTheta === 'number' && config.ropeTheta > 0 && Number.isFinite(config.ropeTheta)))
    throw new CometError(`${path}: .comet config ropeTheta is ${JSON.stringify(config.ropeTheta)?.slice(0, 40)}, expected a positive number`);
  if (config.nLayers > st.tensors.size) throw new CometError(`${path}: .comet config has ${config.nLayers} layers, the file holds only ${st.tensors.size} tensors`);
  const object = <T>(key: string): T => {
    const v = json<T>(key);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CometError(`${path}: .comet metadata '${key}' is ${JSON.stringify(v)?.slice(0, 40)}, expected a JSON object`);
    return v;
  };
  const quant = object<{ kv: 'f32' | 'kv4'; kvGroup: number }>('quant');
  if (quant.kv !== 'f32' && quant.kv !== 'kv4') throw new CometError(`${path}: .comet metadata quant.kv is ${JSON.stringify(quant.kv)?.slice(0, 40)}, expected "kv4" or "f32"`);
  if (!(Number.isInteger(quant.kvGroup) && quant.kvGroup > 0 && config.headDim % quant.kvGroup === 0 && quant.kvGroup % 2 === 0))
    throw new CometError(`${path}: .comet metadata quant.kvGroup is ${JSON.stringify(quant.kvGroup)?.slice(0, 40)}, expected an even divisor of head_dim ${config.headDim}`);
  const linears = object<Record<string, { K: number; Kp: number; B: number; K8: number }>>('linears');
  const checksums = object<Record<string, string>>('checksums');
  const total = st.tensors.size;
  let done = 0;
  const read = async (name: string) => {
    const want = checksums[name];
    if (want === undefined) throw new CometError(`${path}: tensor '${name}' has no checksum in the metadata`);
    const data = st.get(name);
    if ((await sha16(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))) !== want) throw new CometError(`${path}: tensor '${name}' is corrupt (checksum mismatch)`);
    await onTensor?.(++done, total);
    return data;
  };
  const expect = (name: string, dtype: string, shape: number[]) => {
    const t = st.tensors.get(name);
    if (!t) throw new CometError(`${path}: tensor '${name}' is missing`);
    if (t.dtype !== dtype || t.shape.join() !== shape.join()) throw new CometError(`${path}: tensor '${name}' is ${t.dtype} [${t.shape}], expected ${dtype} [${shape}]`);
  };
  const weights = new Map<string, HostWeight>();
  for (const name of weightNames(config)) {
    const shape = weightShape(config, name), lin = linears[name];
    if (!lin) {
      expect(name, 'F32', shape);
      const data = (await read(name)) as Float32Array;
      // the quantized path needs finite activations (quantizeAct refuses NaN), as the scales below are checked
      const bad = data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new CometError(`${path}: tensor '${name}' holds a non-finite value (${data[bad]}) at element ${bad}`);
      weights.set(name, { kind: 'f32', name, shape, data });
      continue;
    }
    const [N, K] = shape;
    if (lin.K !== K) throw new CometError(`${path}: linear '${name}' has K = ${lin.K}, the config says ${K}`);
    let perm: Int32Array | undefined;
    if (st.tensors.has(`${name}.perm`)) {
      expect(`${name}.perm`, 'I32', [K]);
      perm = (await read(`${name}.perm`)) as Int32Array;
    }
    let spec;
    try {
      spec = actSpec(K, lin.B, lin.K8, perm);
    } catch (e) {
      throw new CometError(`${path}: linear '${name}': ${(e as Error).message}`);
    }
    if (spec.Kp !== lin.Kp) throw new CometError(`${path}: linear '${name}' has Kp = ${lin.Kp}, expected ${spec.Kp}`);
    expect(`${name}.codes`, 'U8', [N, spec.Kp / 2]);
    expect(`${name}.scales`, 'F16', [N, spec.Kp / spec.B]);
    const w = { N, codes: (await read(`${name}.codes`)) as Uint8Array, scales: (await read(`${name}.scales`)) as Uint16Array, act: spec };
    checkW4(w);
    for (let i = 0; i < w.scales.length; i++)
      if ((w.scales[i] & 0x7c00) === 0x7c00) throw new CometError(`${path}: tensor '${name}.scales' holds a non-finite f16 at element ${i}`);
    weights.set(name, { kind: 'w4', name, ...w });
  }
  const tok = object<{ main: string; files: string[] }>('tokenizer');
  if (!Array.isArray(tok.files)) throw new CometError(`${path}: .comet metadata 'tokenizer' has no 'files' list`);
  const files = [];
  for (const f of tok.files) {
    if (typeof f !== 'string' || !/^[\w.-]+$/.test(f)) throw new CometError(`${path}: embedded tokenizer file name '${f}' is not a plain file name`);
    if (st.tensors.get(`tokenizer/${f}`)?.dtype !== 'U8') throw new CometError(`${path}: tensor 'tokenizer/${f}' is missing or not U8`);
    files.push({ name: f, bytes: (await read(`tokenizer/${f}`)) as Uint8Array });
  }
  if (!tok.files.includes(tok.main)) throw new CometError(`${path}: the embedded tokenizer's main file '${tok.main}' is not among its files`);
  const dtypes = Object.fromEntries(['F32', 'U8', 'F16', 'I32'].map((d) => [d, [...st.tensors.values()].filter((t) => t.dtype === d).length]));
  return {
    config, weights,
    meta: { dtypes, quant, kvDType: quant.kv, kvGroup: quant.kvGroup, weightError: json<Record<string, number>>('weight_error') },
    tokenizer: { main: tok.main, files },
  };
}

// ---- one entry point ----

export interface BytesModel {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  format: 'llama2c' | 'comet';
  path: string;
  meta: Record<string, unknown>;
  /** the tokenizer files a .comet file embeds (llama2.c checkpoints have none: the caller brings tokenizer.bin) */
  tokenizer?: CometParsed['tokenizer'];
}

/** A model file held in memory: a .comet file or a llama2.c checkpoint. `name` (file name or URL) is only for
 *  messages. Plain safetensors files and anything unrecognised get a message that says what was expected. */
export async function loadModelBytes(bytes: ArrayBuffer | Uint8Array, name: string, o: { sha16?: Sha16; onTensor?: (done: number, total: number) => void | Promise<void> } = {}): Promise<BytesModel> {
  const src = bytesSource(bytes, name);
  if (src.size === 0) throw new CometError(`${name}: the file is empty`);
  if (sniff(src.read(0, Math.min(9, src.size))) === 'safetensors') {
    const st = new Safetensors(src);
    const c = await parseComet(st, name, o.sha16, o.onTensor);
    return { config: c.config, weights: c.weights, format: 'comet', path: name, meta: c.meta, tokenizer: c.tokenizer };
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
