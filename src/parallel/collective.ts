// The collectives of the sharded forward and the reduction order the contract fixes (src/parallel/README.md):
// an all-reduce sums the ranks' partials in RANK order, from +0, with f32 adds, whatever order they arrive in;
// W4Ax partials (f32 sums before the GEMM's f16 rounding) are rounded to f16 once, after the last add.
// HostCollective runs them in one process over ranks whose tensors the host reads synchronously (the sim backend);
// across GPUs the same order is an NCCL all-gather of the partials + this ordered sum on every rank (for N = 2 any
// all-reduce gives it: +0 + p0 + p1 and +0 + p1 + p0 are the same f32 because one add is commutative).
import type { Backend, Tensor } from '../../backends/backend.ts';
import { SimTensor } from '../../backends/sim/sim.ts';
import { toF16 } from '../../simulator/f16.ts';
import { CometError } from '../errors.ts';

/** One all-reduce's slots: ranks put their partials in any order; the result is always the rank-order sum. */
export class OrderedSum {
  private readonly parts: (Float32Array | undefined)[];
  private left: number;
  constructor(readonly n: number, readonly length: number) {
    this.parts = new Array(n).fill(undefined);
    this.left = n;
  }

  put(rank: number, data: Float32Array): void {
    if (!(Number.isInteger(rank) && rank >= 0 && rank < this.n)) throw new CometError(`all-reduce: rank ${rank} outside [0, ${this.n})`);
    if (this.parts[rank]) throw new CometError(`all-reduce: rank ${rank} put its partial twice`);
    if (data.length !== this.length) throw new CometError(`all-reduce: rank ${rank} put ${data.length} values, expected ${this.length}`);
    this.parts[rank] = data;
    this.left--;
  }

  get complete(): boolean {
    return this.left === 0;
  }

  /** ((+0 + p_0) + p_1) + … + p_{n-1}, f32 adds; rounded to f16 when `f16`. */
  result(f16: boolean): Float32Array {
    if (!this.complete) throw new CometError(`all-reduce: ${this.left} of ${this.n} ranks have not put their partial`);
    const out = new Float32Array(this.length), fr = Math.fround;
    for (const p of this.parts as Float32Array[]) for (let i = 0; i < out.length; i++) out[i] = fr(out[i] + p[i]);
    if (f16) for (let i = 0; i < out.length; i++) out[i] = toF16(out[i]);
    return out;
  }
}

/** A tensor's values, for ranks whose tensors live on the host (the sim backend). */
export function hostData(t: Tensor): Float32Array {
  if (!(t instanceof SimTensor) || t.dtype !== 'f32') throw new CometError(`tensor parallelism: a collective needs f32 host tensors (the sim backend), got ${t.dtype}`, 'unsupported');
  return t.data;
}

/** The collectives over ranks in one process; rank r's tensors are on bes[r] (the same backend may appear twice). */
export class HostCollective {
  constructor(readonly bes: readonly Backend[]) {}

  /** Σ parts in order (OrderedSum), on every rank: the [T, C] partials in slice order (rank 0's slices, then rank
   *  1's, …). */
  allReduce(parts: readonly Tensor[], f16: boolean): Tensor[] {
    const s = new OrderedSum(parts.length, hostData(parts[0]).length);
    parts.forEach((p, r) => s.put(r, hostData(p)));
    const sum = s.result(f16);
    return this.bes.map((be) => be.fromHost(sum, parts[0].shape));
  }

  /** parts[r] [T, C_r] -> [T, Σ C_r] (columns in rank order), on the host. */
  allGather(parts: readonly Tensor[]): Float32Array {
    const T = parts[0].shape[0], widths = parts.map((p) => p.shape[1]), C = widths.reduce((a, b) => a + b, 0);
    const out = new Float32Array(T * C);
    let c0 = 0;
    parts.forEach((p, r) => {
      const d = hostData(p), w = widths[r];
      for (let t = 0; t < T; t++) out.set(d.subarray(t * w, (t + 1) * w), t * C + c0);
      c0 += w;
    });
    return out;
  }
}
