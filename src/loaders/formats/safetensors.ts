// The safetensors format (https://github.com/huggingface/safetensors, "Format"), read from a ByteSource
// (../source.ts): browser-safe, no node:fs. The Node reader over a file and the writer are ../safetensors.ts.
//
//   u64 LE  N                       header length in bytes
//   N bytes JSON header             { "__metadata__"?: {str: str}, name: { dtype, shape, data_offsets: [begin, end] } }
//   data                            tensors, row-major little-endian; offsets are relative to byte 8+N
//
// The header is checked entry by entry (dtype, shape x size = bytes, in bounds, no overlap) before anything of
// the sizes it claims is allocated; tensors are then read one at a time.
import { f16ArrayToF32 } from '../../../simulator/f16.ts';
import { CometError } from '../../errors.ts';
import type { ByteSource } from '../source.ts';

/** safetensors starts with a u64 LE header length (< 4 GB: high word 0) then '{'. */
export function isSafetensors(head: Uint8Array): boolean {
  if (head.length < 9) return false;
  const dv = new DataView(head.buffer, head.byteOffset, 9);
  return dv.getUint32(4, true) === 0 && dv.getUint32(0, true) > 1 && head[8] === 0x7b;
}

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
      case 'F16': return f16ArrayToF32(raw as Uint16Array);
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
