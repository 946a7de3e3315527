// Loopback helpers for the server benchmarks (serve-load, chaos).
import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    }).on('error', rej);
  });
}
