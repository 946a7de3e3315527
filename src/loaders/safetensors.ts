// safetensors on disk: SafetensorsFile, the format's one reader (Safetensors, formats/safetensors.ts: header
// checks, typed tensors) over a file descriptor (file-source.ts), so a 10 GB file is read one tensor at a time,
// never into one buffer; and the writer (DESIGN §7: no good npm one exists). The file layout is in
// formats/safetensors.ts.

import { closeSync, openSync, writeSync } from 'node:fs';
import { CometError } from '../errors.ts';
import { fileSource } from './file-source.ts';
import { DTYPE_SIZE, Safetensors, type StDType } from './formats/safetensors.ts';

/** An open safetensors file (regular files only). Call close() when done (loaders do it in `finally`). */
export class SafetensorsFile extends Safetensors {
  static open(path: string): SafetensorsFile {
    return new SafetensorsFile(fileSource(path, 'safetensors file'));
  }
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
