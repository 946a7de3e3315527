// Fused quantizing kernels, defined as their two halves: the float op of float.ts, then quantizeAct
// (gather by spec.perm, f16 rounding, FMPQ) of act.ts. One definition of each half.
import type { ActQuantSpec, QAct } from '../formats.ts';
import { quantizeAct } from '../act.ts';
import { rmsnorm, siluMul } from './float.ts';

/** x [M][C] f32, w [C] -> QAct of rmsnorm(x)·w (spec.K = C) */
export function rmsnormQuant(x: Float32Array, M: number, C: number, w: Float32Array, eps: number, spec: ActQuantSpec): QAct {
  if (spec.K !== C) throw new RangeError(`rmsnormQuant: spec.K = ${spec.K} but the rows have C = ${C} channels`);
  return quantizeAct(rmsnorm(x, M, C, w, eps), M, spec);
}

/** g, u [M][K] -> QAct of silu(g)·u */
export function siluMulQuant(g: Float32Array, u: Float32Array, M: number, spec: ActQuantSpec): QAct {
  if (g.length !== u.length) throw new RangeError(`siluMulQuant: g has ${g.length} elements, u ${u.length}`);
  return quantizeAct(siluMul(g, u), M, spec);
}
