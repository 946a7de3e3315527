// A model file as the parsers (bytes.ts) see it: a name for messages, a size, and reads at an offset. Two
// sources: bytesSource here (a file already in memory: the browser), and fileSource (file-source.ts: a file
// descriptor, so a 10 GB file is read one tensor at a time; node:fs, so only Node entry points import it).
import { CometError } from '../errors.ts';

/** A random-access view of one file. `read` returns exactly `length` bytes in a buffer of their own (byte
 *  offset 0: typed arrays may view it, and keeping it keeps nothing else alive), or throws a CometError that
 *  names the file and, when given, `what` was being read. */
export interface ByteSource {
  readonly name: string; // file name or URL, for messages
  readonly size: number;
  read(offset: number, length: number, what?: string): Uint8Array;
  close?(): void;
}

/** The message every source gives when a read runs past the end of the file. */
export const endedMessage = (name: string, end: number, offset: number, length: number, what?: string) =>
  `${name}: file ended at byte ${end}${what ? ` while reading ${what}` : ''}, expected ${offset + length - end} more bytes`;

export function bytesSource(b: ArrayBuffer | Uint8Array, name: string): ByteSource {
  // a plain Uint8Array view even when given a Node Buffer: Buffer's slice() is a view, not the copy that read
  // must return (a view gave every tensor the whole file's pool)
  const u8 = b instanceof Uint8Array ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : new Uint8Array(b);
  return {
    name,
    size: u8.length,
    read(offset, length, what) {
      if (offset < 0 || offset + length > u8.length) throw new CometError(endedMessage(name, u8.length, offset, length, what));
      return u8.slice(offset, offset + length);
    },
  };
}
