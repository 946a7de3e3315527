// Device memory admission: a model too large for the device is refused before anything is uploaded (no partial
// allocation, one clear error), by whoever opens a model for serving (runtime/open.ts; the browser's WebGPU
// path asks its backend's own checkFits, which also counts the KV pool).
import { hostWeightBytes, type Backend, type HostWeight } from '../../backends/backend.ts';
import { fail } from '../errors.ts';

/** Throws CometError('out_of_memory') when the weights' bytes exceed the device's free memory. A backend that
 *  cannot say how much it has (no memory(), or it throws) is let through: the upload itself reports then. */
export function checkFits(be: Backend, weights: Iterable<HostWeight | undefined>): void {
  let mem: { free: number; total: number } | undefined;
  try { mem = be.memory?.(); } catch { mem = undefined; }
  let bytes = 0;
  for (const w of weights) bytes += w ? hostWeightBytes(w) : 0;
  const GiB = (b: number) => (b / 2 ** 30).toFixed(2);
  if (mem && bytes > mem.free)
    fail(`model: its weights need ${GiB(bytes)} GiB on ${be.name}, which has ${GiB(mem.free)} GiB free of ${GiB(mem.total)} GiB`, 'out_of_memory');
}
