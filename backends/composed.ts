// The fused decode ops (Backend.addRmsnorm, addRmsnormQuant, ropeKvAppend) written as the compositions of unfused
// ops they stand for. This is their definition: the simulator runs them so (sim.ts), WebGPU too (but with
// add_rmsnorm_quant in one kernel, and q and k's rope in one dispatch), and a backend with fused kernels (CUDA) must give exactly these bits (test/ops.test.ts).
import type { ActQuantSpec, Backend, KVCache, RopeSpec, StepLayout, Tensor } from './backend.ts';

type Ops = Pick<Backend, 'add' | 'rmsnorm' | 'rmsnormQuant' | 'rope' | 'kvAppend'>;

export const composed = {
  /** [x + y, rmsnorm(x + y)] */
  addRmsnorm(be: Ops, x: Tensor, y: Tensor, w: Tensor, eps: number): [Tensor, Tensor] {
    const s = be.add(x, y);
    return [s, be.rmsnorm(s, w, eps)];
  },
  /** [x + y, rmsnormQuant(x + y)] */
  addRmsnormQuant(be: Ops, x: Tensor, y: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): [Tensor, Tensor] {
    const s = be.add(x, y);
    return [s, be.rmsnormQuant(s, w, eps, spec)];
  },
  /** rope(q); rope(k) (the cache's KV heads) and v appended to `layer` */
  ropeKvAppend(be: Ops, q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor {
    const kr = be.rope(k, layout, { ...spec, nHeads: cache.spec.nKvHeads });
    const qr = be.rope(q, layout, spec);
    be.kvAppend(cache, layer, kr, v, layout);
    return qr;
  },
};
