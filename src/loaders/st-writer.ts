// A safetensors file written as its tensors are produced, with no buffer of the whole file: the tensor list
// (names, dtypes, shapes) is fixed at open, so every tensor's offset is known; data is written in place
// (positioned writes, tensors in any order, each one's chunks in order); the JSON header is written last, into
// `reserve` bytes kept at the front of the file (the metadata that depends on the data, such as checksums, is
// known only then). The header is padded with spaces to the reserve, which keeps the data 8-byte aligned.
// The file is written under a temporary name and renamed at finish(): never a half-written file under `path`.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { CometError } from '../errors.ts';
import { DTYPE_SIZE, type StDType } from './formats/safetensors.ts';

export interface StEntry {
  name: string;
  dtype: StDType;
  shape: readonly number[];
}

const enc = new TextEncoder();

/** The header JSON of `entries` (data laid out in list order) and `metadata`, unpadded. */
export function stHeader(path: string, entries: readonly StEntry[], metadata: Record<string, string>): { json: Uint8Array; offsets: Map<string, [number, number]> } {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  const offsets = new Map<string, [number, number]>();
  let off = 0;
  for (const t of entries) {
    if (t.name === '__metadata__' || t.name in header) throw new CometError(`${path}: duplicate or reserved tensor name '${t.name}'`);
    const bytes = t.shape.reduce((a, d) => a * d, 1) * DTYPE_SIZE[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    offsets.set(t.name, [off, off + bytes]);
    off += bytes;
  }
  return { json: enc.encode(JSON.stringify(header)), offsets };
}

export class StreamingSafetensors {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly offsets: Map<string, [number, number]>;
  private readonly filled = new Map<string, number>(); // bytes written so far per tensor
  private readonly hashes = new Map<string, Hash>();
  readonly digests = new Map<string, string>(); // sha256 hex of every complete tensor
  readonly dataStart: number;
  readonly totalBytes: number;
  bytesWritten = 0;
  tensorsDone = 0;

  /** `reserve`: bytes kept for the header (0: exactly what the header with `metadata` at open needs). */
  constructor(readonly path: string, readonly entries: readonly StEntry[], reserve = 0, private readonly metadata: Record<string, string> = {}) {
    const { json, offsets } = stHeader(path, entries, metadata);
    this.offsets = offsets;
    const need = Math.max(reserve, json.length);
    this.dataStart = 8 + need + ((8 - (need % 8)) % 8);
    this.totalBytes = [...offsets.values()].reduce((a, [b, e]) => a + e - b, 0);
    this.tmp = `${path}.tmp-${process.pid}`;
    try {
      this.fd = openSync(this.tmp, 'w');
    } catch (e) {
      throw new CometError(`${path}: cannot write (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
  }

  /** Append `data` to tensor `name` (its bytes in order; a tensor may come in several chunks). */
  write(name: string, data: ArrayBufferView): void {
    const span = this.offsets.get(name);
    if (!span) throw new CometError(`${this.path}: tensor '${name}' is not in the file's tensor list`);
    const done = this.filled.get(name) ?? 0, b = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const entry = this.entries.find((e) => e.name === name)!;
    const el = (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
    if (el !== 1 && el !== DTYPE_SIZE[entry.dtype])
      throw new CometError(`${this.path}: tensor '${name}': dtype ${entry.dtype} is ${DTYPE_SIZE[entry.dtype]} bytes per element, data is a ${data.constructor.name}`);
    if (done + b.length > span[1] - span[0])
      throw new CometError(`${this.path}: tensor '${name}': ${entry.dtype} [${entry.shape}] needs ${span[1] - span[0]} bytes, got ${done + b.length}`);
    let h = this.hashes.get(name);
    if (!h) this.hashes.set(name, (h = createHash('sha256')));
    h.update(b);
    for (let o = 0; o < b.length; ) o += writeSync(this.fd, b, o, Math.min(b.length - o, 1 << 30), this.dataStart + span[0] + done + o);
    this.filled.set(name, done + b.length);
    this.bytesWritten += b.length;
    if (done + b.length === span[1] - span[0]) {
      this.digests.set(name, h.digest('hex'));
      this.hashes.delete(name);
      this.tensorsDone++;
    }
  }

  /** Write the header (the open-time metadata overridden by `metadata`) and move the file to its name. */
  finish(metadata: Record<string, string> = {}): void {
    try {
      for (const [name, [b, e]] of this.offsets) {
        if (e === b && !this.digests.has(name)) this.write(name, new Uint8Array(0));
        if ((this.filled.get(name) ?? 0) !== e - b) throw new CometError(`${this.path}: tensor '${name}' was not written (${this.filled.get(name) ?? 0} of ${e - b} bytes)`);
      }
      const { json } = stHeader(this.path, this.entries, { ...this.metadata, ...metadata });
      const room = this.dataStart - 8;
      if (json.length > room) throw new CometError(`${this.path}: the header needs ${json.length} bytes, ${room} were reserved`);
      const head = new Uint8Array(this.dataStart).fill(0x20);
      new DataView(head.buffer).setBigUint64(0, BigInt(room), true);
      head.set(json, 8);
      for (let o = 0; o < head.length; ) o += writeSync(this.fd, head, o, head.length - o, o);
      closeSync(this.fd);
      renameSync(this.tmp, this.path);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** Close and delete the temporary file (after an error). */
  abort(): void {
    try { closeSync(this.fd); } catch { /* already closed */ }
    rmSync(this.tmp, { force: true });
  }
}
