// safetensors on disk: SafetensorsFile, the format's one reader (Safetensors, formats/safetensors.ts: header
// checks, typed tensors) over a file descriptor (file-source.ts), so a 10 GB file is read one tensor at a time,
// never into one buffer; and the writer (DESIGN §7: no good npm one exists). The file layout is in
// formats/safetensors.ts.

import { writeSync } from 'node:fs';
import { CometError } from '../errors.ts';
import { fileSource } from './file-source.ts';
import { DTYPE_SIZE, Safetensors, type StDType } from './formats/safetensors.ts';
import { StreamingSafetensors } from './st-writer.ts';
import type { ByteSource } from './source.ts';

/** An open safetensors file (regular files only). Call close() when done (loaders do it in `finally`). */
export class SafetensorsFile extends Safetensors {
  static open(path: string): SafetensorsFile {
    return new SafetensorsFile(fileSource(path, 'safetensors file'));
  }
  private constructor(private readonly file: ByteSource) {
    super(file);
  }
  /** `length` bytes at `offset` inside tensor `name` (one embedding row without reading the table). */
  range(name: string, offset: number, length: number): Uint8Array {
    const t = this.info(name);
    if (!(offset >= 0 && length >= 0 && offset + length <= t.end - t.begin)) throw new CometError(`${this.path}: bytes [${offset}, ${offset + length}) outside tensor '${name}'`);
    return this.file.read(this.dataStart + t.begin + offset, length, `tensor '${name}'`);
  }
}

// ---- writer ----

export interface StTensor {
  name: string;
  dtype: StDType;
  shape: readonly number[];
  data: ArrayBufferView; // element size must match dtype (F16/BF16 as Uint16Array bits)
}

/** Write tensors in the given order (through the streaming writer, st-writer.ts, with nothing to stream). */
export function writeSafetensors(path: string, tensors: readonly StTensor[], metadata: Record<string, string> = {}): void {
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, d) => a * d, 1) * DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== bytes)
      throw new CometError(`${path}: tensor '${t.name}': ${t.dtype} ${JSON.stringify(t.shape)} needs ${bytes} bytes, data has ${t.data.byteLength}`);
  }
  const w = new StreamingSafetensors(path, tensors, 0, metadata);
  try {
    for (const t of tensors) w.write(t.name, t.data);
  } catch (e) {
    w.abort();
    throw e;
  }
  w.finish();
}

export function writeAll(fd: number, b: Uint8Array): void {
  for (let done = 0; done < b.length; ) done += writeSync(fd, b, done, Math.min(b.length - done, 1 << 30));
}
