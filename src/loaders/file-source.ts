// A ByteSource (source.ts) over a file on disk: reads at an offset on a file descriptor, so the parsers take
// one tensor at a time and a 10 GB file is never one buffer. Node only (node:fs): the browser bundle must not
// import this module.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
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
