// GPTQ's device half on CUDA (backends/backend.ts GptqOps; kernels in cuda/quant_gptq.cu, which follow
// src/quant/gptq.ts and calibrate.ts operation for operation). Buffers are the quantizer's own allocations,
// freed by the free() it calls (in a finally): a Hessian [K][K] f64 per site of the current layer, a factor
// U [Kp][Kp] f64 per site while its consumers are quantized.
import type { ActQuantSpec, DeviceGptqFactor, DeviceHessian, GptqOps, Tensor } from '../backend.ts';
import { CometError } from '../errors.ts';
import type { CudaAddon, Ptr } from './addon.ts';

type GptqAddon = CudaAddon & Required<Pick<CudaAddon, 'gptqHessianAdd' | 'gptqPermute' | 'gptqInvCholUpper' | 'gptqQuantize'>>;

export const hasGptq = (a: CudaAddon): a is GptqAddon => typeof a.gptqQuantize === 'function';

export function cudaGptq(a: GptqAddon, ptrOf: (t: Tensor) => Ptr): GptqOps {
  const upload = (data: ArrayBufferView): Ptr => {
    const p = a.malloc(Math.max(1, data.byteLength));
    a.upload(p, data);
    return p;
  };
  const freeAll = (...ps: Ptr[]) => { for (const p of ps) if (p) a.free(p); };
  return {
    hessian(K: number): DeviceHessian {
      let H = a.malloc(K * K * 8);
      a.memset(H, 0, K * K * 8);
      const live = () => H || (() => { throw new CometError('cuda gptq: Hessian used after free()'); })();
      return {
        K,
        add(x: Tensor) {
          if (x.dtype !== 'f32' || x.shape.length !== 2 || x.shape[1] !== K) throw new CometError(`cuda gptq: Hessian of ${K} channels given a ${x.dtype} [${x.shape}] tensor`);
          a.gptqHessianAdd(ptrOf(x), x.shape[0], K, live());
        },
        async read() {
          return new Float64Array(a.download(live(), K * K * 8));
        },
        factor(perm: Int32Array | undefined, Kp: number, damp: number, scale?: Float64Array): DeviceGptqFactor {
          if (perm && perm.length !== K) throw new CometError(`cuda gptq: permutation of ${perm.length}, Hessian of ${K}`);
          if (scale && scale.length !== K) throw new CometError(`cuda gptq: ${scale.length} smoothing scales, Hessian of ${K}`);
          const permDev = perm ? upload(perm) : 0, scaleDev = scale ? upload(scale) : 0, P = a.malloc(Kp * Kp * 8);
          let U: Ptr = 0;
          try {
            a.gptqPermute(live(), K, Kp, permDev, scaleDev, damp, P);
            U = a.malloc(Kp * Kp * 8);
            a.gptqInvCholUpper(P, Kp, U);
          } catch (e) {
            freeAll(U);
            throw e;
          } finally {
            freeAll(P, permDev, scaleDev);
          }
          return factor(U, Kp);
        },
        free() {
          freeAll(H);
          H = 0;
        },
      };
    },
  };

  function factor(U: Ptr, Kp: number): DeviceGptqFactor {
    return {
      Kp,
      quantize(w: Float32Array, N: number, spec: ActQuantSpec, grid: number) {
        const { K, B, perm } = spec;
        if (spec.Kp !== Kp) throw new CometError(`cuda gptq: weight spec has Kp ${spec.Kp}, factor ${Kp}`);
        if (w.length !== N * K) throw new CometError(`cuda gptq: weight has ${w.length} elements, expected ${N}×${K}`);
        const wDev = upload(w), permDev = perm ? upload(perm) : 0, codes = a.malloc(N * Kp), scales = a.malloc((N * Kp / B) * 2);
        try {
          a.gptqQuantize(wDev, N, K, Kp, B, permDev, U, grid, codes, scales);
          return { codes: new Int8Array(a.download(codes, N * Kp)), scales: new Uint16Array(a.download(scales, (N * Kp / B) * 2)) };
        } finally {
          freeAll(wDev, permDev, codes, scales);
        }
      },
      async read() {
        return new Float64Array(a.download(U, Kp * Kp * 8));
      },
      free() {
        freeAll(U);
        U = 0;
      },
    };
  }
}
