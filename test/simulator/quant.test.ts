import { describe, expect, it } from 'vitest';
import { actSpec, quantizeAct } from '../../simulator/act.ts';
import { rmsnorm, siluMul } from '../../simulator/kernels/float.ts';
import { rmsnormQuant, siluMulQuant } from '../../simulator/kernels/quant.ts';
import { activations, permutation, rng } from '../../testing/rng.ts';

describe('fused quantizing kernels = float op, then quantizeAct', () => {
  it('rmsnormQuant: rmsnorm, gather by perm, f16, FMPQ', () => {
    const r = rng(21), M = 5, C = 172, spec = actSpec(C, 32, 64, permutation(r, C));
    const x = activations(r, M, C, [7], 20), w = activations(r, 1, C).map((v) => 1 + 0.1 * v);
    const q = rmsnormQuant(x, M, C, w, 1e-5, spec);
    expect(q).toEqual(quantizeAct(rmsnorm(x, M, C, w, 1e-5), M, spec));
    expect(q.sa.every((s) => s !== 0)).toBe(true);
    expect(() => rmsnormQuant(x, M, C, w, 1e-5, actSpec(160, 32, 0))).toThrow(/spec.K = 160 but the rows have C = 172/);
  });
  it('siluMulQuant: silu(g)·u, gather by perm, f16, FMPQ', () => {
    const r = rng(22), M = 4, K = 352, spec = actSpec(K, 64, 64, permutation(r, K));
    const g = activations(r, M, K), u = activations(r, M, K, [3], 10);
    expect(siluMulQuant(g, u, M, spec)).toEqual(quantizeAct(siluMul(g, u), M, spec));
    expect(() => siluMulQuant(g, u.subarray(1), M, spec)).toThrow(/u 1407/);
  });
});
