// The simulator's quantized kernels, gathered in one table so the float path loads without them.
import type { ActQuantSpec, KVCacheSpec, QAct, W4Weight } from '../../simulator/formats.ts';
import type { KVStore } from '../../simulator/kv.ts';

export interface QuantOps {
  quantizeAct(x: Float32Array, M: number, spec: ActQuantSpec): QAct;
  dequantizeAct(q: QAct): Float32Array;
  rmsnormQuant(x: Float32Array, M: number, C: number, w: Float32Array, eps: number, spec: ActQuantSpec): QAct;
  siluMulQuant(g: Float32Array, u: Float32Array, M: number, spec: ActQuantSpec): QAct;
  gemmW4Ax(a: QAct, w: W4Weight): Float32Array;
  kv4Store(spec: KVCacheSpec): KVStore;
}

const missing = (op: string) => (): never => {
  throw new Error(`sim: quantized op '${op}' is not available yet`);
};

export const simQuantOps: QuantOps = {
  quantizeAct: missing('quantize_act'),
  dequantizeAct: missing('dequantize_act'),
  rmsnormQuant: missing('rmsnorm_quant'),
  siluMulQuant: missing('silu_mul_quant'),
  gemmW4Ax: missing('gemm_w4ax'),
  kv4Store: missing('kv4'),
};
