// A ByteSource (source.ts) over a file on disk: reads at an offset on a file descriptor, so the parsers take
// one tensor at a time and a 10 GB file is never one buffer. Node only (node:fs): the browser bundle must not
// import this module.
import { closeSync, constants, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { CometError } from '../errors.ts';
import { type ByteSource, endedMessage } from './source.ts';

/** Open `path` (`kind`, e.g. 'safetensors file', names it in messages). Regular files only: a FIFO would block
 *  a read forever and a link to /dev/zero never ends. Call close() when done. */
export function fileSource(path: string, kind: string): ByteSource & { close(): void } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK); // a FIFO must not block open(): fstat refuses it
  } catch (e) {
    throw new CometError(`${path}: cannot open ${kind} (${(e as NodeJS.ErrnoException).code ?? e})`, 'not_found');
  }
  let size: number;
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new CometError(`${path}: not a regular file (a directory?), cannot read it as a ${kind}`);
    size = stat.size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return {
    name: path,
    size,
    read(offset, length, what) {
      const out = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const n = readSync(fd, out, done, Math.min(length - done, 1 << 30), offset + done);
        if (n === 0) throw new CometError(endedMessage(path, offset + done, offset, length, what));
        done += n;
      }
      return out;
    },
    close() {
      if (fd >= 0) closeSync(fd);
      fd = -1;
    },
  };
}

/** A whole small file (config, tokenizer), regular files only (a link to a device or a FIFO would be read
 *  forever). */
export function readRegularFile(path: string): Buffer {
  let regular: boolean;
  try {
    regular = statSync(path).isFile();
  } catch (e) {
    throw new CometError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? e})`, 'not_found');
  }
  if (!regular) throw new CometError(`${path}: not a regular file (a link to a device or a FIFO would be read forever)`);
  return readFileSync(path);
}

/** A JSON file whose top level must be an object. */
export function readJsonObject(path: string): Record<string, any> {
  const text = readRegularFile(path).toString('utf8');
  try {
    const j = JSON.parse(text);
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('not a JSON object');
    return j;
  } catch (e) {
    throw new CometError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}
