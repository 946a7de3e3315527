// Fake quantization for the accuracy report: formats that are not W4Ax (W8A8, W4A16) and a fast evaluation of
// W4Ax models. Activations go through the simulator's own quantizer (quantizeAct then dequantizeAct: the exact
// FMPQ codes and scales), weights are dequantized once at upload, and the GEMM is an f32 matmul of the two
// dequantized operands, rounded to f16 as gemm_w4ax's output is. The only difference from the bit-exact
// simulator is the order of the f32 additions inside a GEMM (tier 3 of DESIGN §3.7); the report checks the two
// against each other on a window.
import type { HostWeight, KVCache, KVCacheSpec, Tensor, Weight } from '../../backends/backend.ts';
import type { ActQuantSpec, W4Weight } from '../../simulator/formats.ts';
import { SimBackend, SimKVCache, SimTensor } from '../../backends/sim/sim.ts';
import { dequantizeAct, quantizeAct } from '../../simulator/act.ts';
import { dequantizeW4 } from '../../simulator/w4.ts';
import { KVStoreKV4 } from '../../simulator/kv4.ts';
import { KVStoreF32 } from '../../simulator/kv.ts';
import { matmul, rmsnorm, siluMul } from '../../simulator/kernels/float.ts';
import { f16Bits, fromF16Bits, roundHalfEven, toF16 } from '../../simulator/f16.ts';

/** A weight stored dequantized, [N][Kp] in its activation's permuted order. */
class FakeWeight extends SimTensor implements Weight {
  constructor(readonly name: string, shape: readonly number[], data: Float32Array, readonly act?: ActQuantSpec) {
    super(shape, 'f32', data);
  }
}

/** W4 weight -> f32 [N][K] in ORIGINAL column order (for weight-only rows: W4A16). */
export function w4ToFloat(w: W4Weight): Float32Array {
  const { K, Kp, perm } = w.act, d = dequantizeW4(w), out = new Float32Array(w.N * K);
  for (let n = 0; n < w.N; n++) for (let j = 0; j < K; j++) out[n * K + (perm ? perm[j] : j)] = d[n * Kp + j];
  return out;
}

/** INT8 symmetric per row per B-block with an f16 scale (RTN, absmax): the W of W8A8. Returns q·s, f32. */
export function fakeW8(w: Float32Array, N: number, K: number, B: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let n = 0; n < N; n++)
    for (let k0 = 0; k0 < K; k0 += B) {
      const k1 = Math.min(K, k0 + B);
      let amax = 0;
      for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      const s = fromF16Bits(f16Bits(amax / 127));
      for (let k = k0; k < k1; k++) out[n * K + k] = s === 0 ? 0 : Math.min(127, Math.max(-128, roundHalfEven(Math.fround(w[n * K + k] / s)))) * s;
    }
  return out;
}

export class FakeQuantBackend extends SimBackend {
  /** actFor: activation specs for float weights (W8A8: every block INT8); w4 weights carry their own. */
  constructor(private readonly actFor: Map<string, ActQuantSpec> = new Map()) {
    super();
  }
  override uploadWeight(w: HostWeight): Weight {
    if (w.kind === 'w4') return new FakeWeight(w.name, [w.N, w.act.Kp], dequantizeW4(w), w.act);
    const act = this.actFor.get(w.name);
    if (!act) return super.uploadWeight(w);
    const [N, K] = w.shape, { Kp, perm } = act, d = new Float32Array(N * Kp);
    for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) d[n * Kp + j] = w.data[n * K + (perm ? perm[j] : j)];
    return new FakeWeight(w.name, [N, Kp], d, act);
  }
  override createKVCache(spec: KVCacheSpec): KVCache {
    return new SimKVCache(spec, spec.dtype === 'kv4' ? new KVStoreKV4(spec) : new KVStoreF32(spec));
  }
  private qdq(x: Float32Array, M: number, spec: ActQuantSpec): Tensor {
    return new SimTensor([M, spec.Kp], 'qact', dequantizeAct(quantizeAct(x, M, spec)));
  }
  override rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): Tensor {
    const M = x.shape[0], C = x.shape[1];
    return this.qdq(rmsnorm((x as SimTensor).data, M, C, (w as SimTensor).data, eps), M, spec);
  }
  override quantizeAct(x: Tensor, spec: ActQuantSpec): Tensor {
    return this.qdq((x as SimTensor).data, x.shape[0], spec);
  }
  override siluMulQuant(g: Tensor, u: Tensor, spec: ActQuantSpec): Tensor {
    return this.qdq(siluMul((g as SimTensor).data, (u as SimTensor).data), g.shape[0], spec);
  }
  override async read(t: Tensor): Promise<Float32Array> {
    return (t as SimTensor).data;
  }
  override matmul(x: Tensor, w: Weight): Tensor {
    if (!(w instanceof FakeWeight)) return super.matmul(x, w);
    if (x.dtype !== 'qact') throw new Error(`fakequant: ${w.name} needs a quantized activation`);
    const M = x.shape[0], [N, Kp] = w.shape;
    const y = matmul((x as SimTensor).data, M, Kp, w.data, N);
    for (let i = 0; i < y.length; i++) y[i] = toF16(y[i]);
    return new SimTensor([M, N], 'f32', y);
  }
}
