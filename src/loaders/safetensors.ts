// A small safetensors reader and writer (DESIGN §7: no good npm one exists).
//
// File layout (https://github.com/huggingface/safetensors, "Format"):
//   u64 LE  N                       header length in bytes
//   N bytes JSON header             { "__metadata__"?: {str: str}, name: { dtype, shape, data_offsets: [begin, end] } }
//   data                            tensors, row-major little-endian; offsets are relative to byte 8+N
// The reader checks every header entry (dtype, shape × dtype size == end - begin, offsets inside the file, no
// overlaps) before it allocates anything, then reads one tensor at a time at its offset: a 10 GB file is never
// read into one buffer. Host byte order is assumed little-endian (x86, ARM), as every typed-array view here is.

import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { CometError } from '../errors.ts';

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

/** An open safetensors file. Call close() when done (loaders do it in `finally`). */
export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string> = {};
  private constructor(readonly path: string, private fd: number, readonly dataStart: number, readonly fileSize: number) {}

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK); // a FIFO must not block: fstat below refuses it
    } catch (e) {
      throw new CometError(`${path}: cannot open safetensors file (${(e as NodeJS.ErrnoException).code ?? e})`, 'not_found');
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) throw new CometError(`${path}: not a regular file (a directory?), cannot read it as safetensors`);
      const size = stat.size;
      const head = readAt(fd, 0, Math.min(8, size));
      if (head.length < 8) throw new CometError(`${path}: not a safetensors file: ${size} bytes, shorter than the 8-byte header length`);
      const n = Number(new DataView(head.buffer).getBigUint64(0, true));
      if (n > size - 8) throw new CometError(`${path}: safetensors header length ${n} runs past the end of the file (${size} bytes)`);
      if (n > MAX_HEADER) throw new CometError(`${path}: safetensors header length ${n} exceeds the ${MAX_HEADER}-byte limit`);
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder().decode(readAt(fd, 8, n)));
      } catch (e) {
        throw new CometError(`${path}: safetensors header is not valid JSON (${(e as Error).message})`);
      }
      const f = new SafetensorsFile(path, fd, 8 + n, size);
      f.parseHeader(header);
      return f;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Validate every entry before anything is allocated; throws CometError naming the tensor. */
  private parseHeader(header: unknown): void {
    const p = this.path;
    if (typeof header !== 'object' || header === null || Array.isArray(header))
      throw new CometError(`${p}: safetensors header is not a JSON object`);
    const dataLen = this.fileSize - this.dataStart;
    for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof v !== 'object' || v === null) throw new CometError(`${p}: __metadata__ is not an object`);
        for (const [k, s] of Object.entries(v)) {
          if (typeof s !== 'string') throw new CometError(`${p}: __metadata__.${k} is not a string`);
          this.metadata[k] = s;
        }
        continue;
      }
      const bad = (what: string): never => { throw new CometError(`${p}: tensor '${name}': ${what}`); };
      const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e !== 'object' || e === null) bad('header entry is not an object');
      if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_SIZE))
        bad(`dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(DTYPE_SIZE).join(', ')})`);
      const dtype = e.dtype as StDType;
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        bad(`shape ${JSON.stringify(e.shape)} (expected an array of non-negative integers)`);
      const shape = e.shape as number[];
      const o = e.data_offsets;
      if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isSafeInteger(x) && x >= 0) || o[0] > o[1])
        bad(`data_offsets ${JSON.stringify(o)} (expected [begin, end] with 0 <= begin <= end)`);
      const [begin, end] = o as [number, number];
      const bytes = shape.reduce((a, d) => a * d, 1) * DTYPE_SIZE[dtype];
      if (end - begin !== bytes)
        bad(`${dtype} ${JSON.stringify(shape)} needs ${bytes} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`);
      if (end > dataLen)
        bad(`data_offsets [${begin}, ${end}] point past the end of the file (data section is ${dataLen} bytes, file ${this.fileSize})`);
      this.tensors.set(name, { name, dtype, shape, begin, end });
    }
    const sorted = [...this.tensors.values()].sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++)
      if (sorted[i].begin < sorted[i - 1].end)
        throw new CometError(`${p}: tensors '${sorted[i - 1].name}' [${sorted[i - 1].begin}, ${sorted[i - 1].end}) and '${sorted[i].name}' [${sorted[i].begin}, ${sorted[i].end}) overlap`);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new CometError(`${this.path}: no tensor '${name}'`);
    return t;
  }

  /** Raw bytes of one tensor, in a fresh (hence aligned) buffer. */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    return readAt(this.fd, this.dataStart + t.begin, t.end - t.begin, this.path);
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
    const t = this.info(name);
    const raw = this.get(name);
    switch (t.dtype) {
      case 'F32': return raw as Float32Array;
      case 'F16': return f16ToF32(raw as Uint16Array);
      case 'BF16': return bf16ToF32(raw as Uint16Array);
      default: throw new CometError(`${this.path}: tensor '${name}' has dtype ${t.dtype}, expected a float tensor (F32, F16 or BF16)`);
    }
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

function readAt(fd: number, pos: number, len: number, path = ''): Uint8Array {
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const n = readSync(fd, out, done, Math.min(len - done, 1 << 30), pos + done);
    if (n === 0) throw new CometError(`${path}: file ended at byte ${pos + done}, expected ${len - done} more bytes`);
    done += n;
  }
  return out;
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
  const table = (F16_TABLE ??= buildF16Table());
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
}

// ---- writer ----

export interface StTensor {
  name: string;
  dtype: StDType;
  shape: readonly number[];
  data: ArrayBufferView; // element size must match dtype (F16/BF16 as Uint16Array bits)
}

/** Write tensors in the given order. The header is padded with spaces so the data starts 8-byte aligned. */
export function writeSafetensors(path: string, tensors: readonly StTensor[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) throw new CometError(`${path}: duplicate or reserved tensor name '${t.name}'`);
    const bytes = t.shape.reduce((a, d) => a * d, 1) * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== bytes)
      throw new CometError(`${path}: tensor '${t.name}': ${t.dtype} ${JSON.stringify(t.shape)} needs ${bytes} bytes, data has ${t.data.byteLength}`);
    const el = (t.data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
    if (el !== 1 && el !== DTYPE_SIZE[t.dtype])
      throw new CometError(`${path}: tensor '${t.name}': dtype ${t.dtype} is ${DTYPE_SIZE[t.dtype]} bytes per element, data is a ${t.data.constructor.name}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  const json = JSON.stringify(header);
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  hb = enc.encode(json + ' '.repeat((8 - (hb.length % 8)) % 8));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, hb);
    for (const t of tensors) writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  } finally {
    closeSync(fd);
  }
}

export function writeAll(fd: number, b: Uint8Array): void {
  for (let done = 0; done < b.length; ) done += writeSync(fd, b, done, Math.min(b.length - done, 1 << 30));
}
