// The simulator's quantized kernels as the sim backend calls them: each op IS the simulator's definition.
import { quantizeAct, dequantizeAct } from '../../simulator/act.ts';
import { rmsnormQuant, siluMulQuant } from '../../simulator/kernels/quant.ts';
import { gemmW4Ax } from '../../simulator/kernels/gemm_w4ax.ts';
import { KVStoreKV4 } from '../../simulator/kv4.ts';

export const simQuantOps = { quantizeAct, dequantizeAct, rmsnormQuant, siluMulQuant, gemmW4Ax, kv4Store: (spec: ConstructorParameters<typeof KVStoreKV4>[0]) => new KVStoreKV4(spec) };
export type QuantOps = typeof simQuantOps;
