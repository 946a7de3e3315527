// The WebGPU backend's compute pipelines: every kernel it dispatches as (shader family, entry point, bindings in
// order, override constants), and the per-device cache that makes each shader module and pipeline once.
import type { GpuContext } from './device.ts';
import { type Family, moduleSource, type ShaderSources } from './shaders.ts';
import type { Binding, Pipe } from './stream.ts';

/** gemm_w4ax.wgsl: params, act, up to three weights (codes | scales) and their outputs (matmulMany's parts), and
 *  QIN's permutation (a dummy elsewhere): 8 storage buffers, WebGPU's default */
const W4_BIND: Binding[] = ['uniform', 'read', 'read', 'read', 'read', 'write', 'write', 'write', 'read'];

/** quant.wgsl: params, x, y, perm, the qact; and MODE 3's addend and sum (the other modes bind dummies there) */
const QUANT_BIND: Binding[] = ['uniform', 'read', 'read', 'read', 'write', 'read', 'write'];

/** norm.wgsl: params, x, w, y; and ADD's addend and sum (rmsnorm binds dummies there) */
const NORM_BIND: Binding[] = ['uniform', 'read', 'read', 'write', 'read', 'write'];

/** kv_append.wgsl: params, k, v, the step layout, the layer's cache range; and ROPE's q, (cos, sin) table and
 *  rope(q) (kv_append alone binds dummies there) */
const KV_BIND: Binding[] = ['uniform', 'read', 'read', 'read', 'write', 'read', 'read', 'write'];

/** attention.wgsl: params, q, the step layout, the layer's cache range (writable: attention_kv4_rope stores the
 *  step's keys there, and the module declares it once), the output; and the KV4 split's chunk states (attention_kv4
 *  SPLIT = 1 writes them, its combine reads them; the others bind a dummy) */
const ATT_BIND: Binding[] = ['uniform', 'read', 'read', 'write', 'write', 'write'];
/** attention_kv4_rope (the decode split with rope_kv_append folded in): ATT_BIND with the raw q, then k, v and the
 *  (cos, sin) table: 8 storage buffers, WebGPU's default limit */
const ATT_ROPE_BIND: Binding[] = [...ATT_BIND, 'read', 'read', 'read'];

/** The one-token matvec's shape (gemm_w4ax.wgsl SPL, TEAM, ROWS): segments (128 channels) per lane per chunk, lanes
 *  per row, rows per workgroup; chunks of TEAM · SPL · 128 channels. The 4-token matvec always takes 1, 16, 16 (its
 *  workgroup memory: 27 KB). */
export type MatvecShape = { segs: 1 | 2; team: number; rows: number };
/** 16 lanes x 16 rows, segments by K (2048- or 4096-channel chunks): every shape before matvecShape, and QIN's */
export const matvec16 = (Kp: number): MatvecShape => ({ segs: Kp <= 2048 ? 1 : 2, team: 16, rows: 16 });
/** The one-token matvec's shape for a padded K and the rows of all its parts (N), the fastest of floor.ts --variants
 *  on the H200 (bench/results/webgpu-matvec-variants-*; µs at a steady 1980 MHz, old 16x16 shapes -> these):
 *  N >= 8192 (gate+up, classifier): 8 lanes x 16 rows (8B gate+up 50.1 -> 29.2); K <= 2048: 16 lanes x 8 rows (1B
 *  q+k+v, o); N <= 4096 (down, 8B o): 32 lanes x 8 rows, one 4096-channel chunk a pass (8B down 23.2 -> 21.4, 8B o
 *  16.7 -> 12.9); else (8B q+k+v) 16 x 16 x 2 segments, as before. The same bits whatever the shape (each lane's t_b
 *  is exact; the chain adds a row's blocks in ascending order). QIN (the matvec quantizing its input: every
 *  workgroup quantizes the whole activation, so fewer workgroups are better) keeps 16 x 16. */
export function matvecShape(Kp: number, N: number, qin = false): MatvecShape {
  if (qin) return matvec16(Kp);
  if (N >= 8192) return { segs: 1, team: 8, rows: 16 };
  if (Kp <= 2048) return { segs: 1, team: 16, rows: 8 };
  if (N <= 4096) return { segs: 1, team: 32, rows: 8 };
  return { segs: 2, team: 16, rows: 16 };
}
/** The pipelines of the op set: family, entry point, bindings (in order), override constants. */
const PIPES = {
  // the matvec: MT tokens per workgroup; SPL, TEAM and ROWS come with the shape (matvecShape)
  gemm_matvec1: { family: 'gemm_w4ax', entry: 'matvec', bind: W4_BIND, constants: { MT: 1 } },
  gemm_matvec4: { family: 'gemm_w4ax', entry: 'matvec', bind: W4_BIND, constants: { MT: 4 } },
  gemm_matvec1_qin: { family: 'gemm_w4ax', entry: 'matvec', bind: W4_BIND, constants: { MT: 1, QIN: 1 } },
  gemm_matvec4_qin: { family: 'gemm_w4ax', entry: 'matvec', bind: W4_BIND, constants: { MT: 4, QIN: 1 } },
  gemm_rowwise: { family: 'gemm_w4ax', entry: 'rowwise', bind: W4_BIND },
  gemm_tiled: { family: 'gemm_w4ax', entry: 'tiled', bind: W4_BIND },
  gemm_f32: { family: 'gemm_f32', entry: 'gemm', bind: ['uniform', 'read', 'read', 'write'] },
  gemm_f16w: { family: 'gemm_f32', entry: 'gemm_f16w', bind: ['uniform', 'read', 'read', 'write'] },
  gemm_f16w_serial: { family: 'gemm_f32', entry: 'gemm', bind: ['uniform', 'read', 'read', 'write'], constants: { F16W: 1 } },
  quantize_act: { family: 'quant', entry: 'main', bind: QUANT_BIND, constants: { MODE: 0 } },
  rmsnorm_quant: { family: 'quant', entry: 'main', bind: QUANT_BIND, constants: { MODE: 1 } },
  silu_mul_quant: { family: 'quant', entry: 'main', bind: QUANT_BIND, constants: { MODE: 2 } },
  add_rmsnorm_quant: { family: 'quant', entry: 'main', bind: QUANT_BIND, constants: { MODE: 3 } },
  rmsnorm: { family: 'norm', entry: 'rmsnorm', bind: NORM_BIND },
  add_rmsnorm: { family: 'norm', entry: 'rmsnorm', bind: NORM_BIND, constants: { ADD: 1 } },
  rope: { family: 'rope', entry: 'rope', bind: ['uniform', 'read', 'read', 'write'] },
  kv_append_f32: { family: 'kv_append', entry: 'append_f32', bind: KV_BIND },
  kv_append_kv4: { family: 'kv_append', entry: 'append_kv4', bind: KV_BIND },
  kv_append_kv4_wg: { family: 'kv_append', entry: 'append_kv4_wg', bind: KV_BIND },
  rope_kv_append_f32: { family: 'kv_append', entry: 'append_f32', bind: KV_BIND, constants: { ROPE: 1 } },
  rope_kv_append_kv4: { family: 'kv_append', entry: 'append_kv4', bind: KV_BIND, constants: { ROPE: 1 } },
  rope_kv_append_kv4_wg: { family: 'kv_append', entry: 'append_kv4_wg', bind: KV_BIND, constants: { ROPE: 1 } },
  attention_f32: { family: 'attention', entry: 'attention', bind: ATT_BIND },
  attention_serial_f32: { family: 'attention', entry: 'attention_serial', bind: ATT_BIND },
  attention_kv4: { family: 'attention', entry: 'attention_kv4', bind: ATT_BIND },
  // decode: a workgroup per (token, head, 64-key chunk), then the chunks folded in the contract's order
  attention_kv4_split: { family: 'attention', entry: 'attention_kv4', bind: ATT_BIND, constants: { SPLIT: 1 } },
  // the same with the step's rope_kv_append (one token per sequence): its combine is attention_kv4_combine's
  attention_kv4_split_rope: { family: 'attention', entry: 'attention_kv4_rope', bind: ATT_ROPE_BIND, constants: { SPLIT: 1, ROPE: 1 } },
  attention_kv4_combine: { family: 'attention', entry: 'attention_kv4_combine', bind: ATT_BIND },
  attention_kv4_serial: { family: 'attention', entry: 'attention_kv4_serial', bind: ATT_BIND },
  add: { family: 'elementwise', entry: 'add', bind: ['uniform', 'read', 'read', 'write'] },
  silu_mul: { family: 'elementwise', entry: 'silu_mul', bind: ['uniform', 'read', 'read', 'write'] },
  embed: { family: 'embed', entry: 'embed', bind: ['uniform', 'read', 'read', 'write'] },
  embed_f16: { family: 'embed', entry: 'embed_f16', bind: ['uniform', 'read', 'read', 'write'] },
  // rows of up to 4096 columns: one dispatch; longer: a workgroup per 4096 columns, then the parts reduced
  argmax: { family: 'argmax', entry: 'argmax', bind: ['uniform', 'read', 'write', 'write'] },
  argmax_part: { family: 'argmax', entry: 'argmax_part', bind: ['uniform', 'read', 'write', 'write'] },
  argmax_parts: { family: 'argmax', entry: 'argmax', bind: ['uniform', 'read', 'write', 'write'], constants: { PARTS: 1 } },
  topk: { family: 'topk', entry: 'topk', bind: ['uniform', 'read', 'write'] },
  rows: { family: 'rows', entry: 'rows', bind: ['uniform', 'read', 'read', 'write'] },
} satisfies Record<string, { family: Family; entry: string; bind: Binding[]; constants?: Record<string, number> }>;
export type PipeName = keyof typeof PIPES;

/** Per device: shader modules and pipelines, made once. */
export class PipelineCache {
  private modules = new Map<Family, GPUShaderModule>();
  private pipes = new Map<string, Pipe>();
  constructor(readonly gpu: GpuContext, readonly src: ShaderSources) {}
  get(name: PipeName, extra?: Record<string, number>): Pipe {
    const key = extra ? `${name}:${JSON.stringify(extra)}` : name;
    let p = this.pipes.get(key);
    if (p) return p;
    const base = PIPES[name] as { family: Family; entry: string; bind: Binding[]; constants?: Record<string, number> };
    const d = extra ? { ...base, constants: { ...base.constants, ...extra } } : base;
    const dev = this.gpu.device;
    let module = this.modules.get(d.family);
    if (!module) this.modules.set(d.family, (module = dev.createShaderModule({ label: d.family, code: moduleSource(this.src, d.family, this.gpu.dot4, this.gpu.subgroups) })));
    const layout = dev.createBindGroupLayout({
      label: name,
      entries: d.bind.map((b, i) => ({
        binding: i, visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b === 'uniform' ? 'uniform' : b === 'read' ? 'read-only-storage' : 'storage' },
      })) as GPUBindGroupLayoutEntry[],
    });
    const pipeline = dev.createComputePipeline({
      label: name, layout: dev.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: d.entry, constants: d.constants },
    });
    this.pipes.set(key, (p = { pipeline, layout, name }));
    return p;
  }
}

/** The cache of a device context, made on first use (keyed by context: dot4 and subgroups are part of the key). */
export function pipelineCache(gpu: GpuContext, src: ShaderSources): PipelineCache {
  let pc = caches.get(gpu);
  if (!pc) caches.set(gpu, (pc = new PipelineCache(gpu, src)));
  return pc;
}
const caches = new WeakMap<GpuContext, PipelineCache>();
