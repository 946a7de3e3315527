// The graph executor: the model calls these builders, each names its output by layer (`l3.attn_norm`) and
// runs the backend op. Quantization is decided here by dtype, never in the model: a norm or SwiGLU whose
// consumer weight is w4 fuses the FMPQ quantizer (rmsnorm_quant, silu_mul_quant); a linear on w4 quantizes an
// f32 input first (quantize_act, with the channel gather of its spec).
// `tap` sees every named tensor (dumps, cross-backend diffs); ops enqueue, so tapping costs nothing unset.
import { type Backend, type HostWeight, type KVCache, type KVDType, type OpDType, type OpName, type RopeSpec, type StepLayout, supports, type Tensor, type Weight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';

export type Tap = (name: string, t: Tensor) => void;

export class Graph {
  constructor(readonly be: Backend, readonly tap?: Tap) {}

  private out<T extends Tensor>(name: string, t: T): T {
    this.tap?.(name, t);
    return t;
  }

  embed(name: string, table: Weight, tokens: Int32Array): Tensor {
    return this.out(name, this.be.embed(table, tokens));
  }

  /** RMSNorm; quantized for `consumer` when it is a w4 weight. */
  norm(name: string, x: Tensor, w: Tensor, eps: number, consumer: Weight): Tensor {
    const act = consumer.act;
    return this.out(name, act ? this.be.rmsnormQuant(x, w, eps, act) : this.be.rmsnorm(x, w, eps));
  }

  linear(name: string, x: Tensor, w: Weight): Tensor {
    if (w.act && x.dtype !== 'qact') x = this.out(`${name}.in_q`, this.be.quantizeAct(x, w.act));
    return this.out(name, this.be.matmul(x, w));
  }

  /** Several linears over one input (q/k/v, gate/up), in one launch where the backend can. */
  linears(names: readonly string[], x: Tensor, ws: readonly Weight[]): Tensor[] {
    const act = ws[0].act;
    if (ws.some((w) => (w.act === undefined) !== (act === undefined))) throw new Error(`${names.join(', ')}: weights of mixed dtypes`);
    if (!this.be.matmulMany || ws.length === 1) return ws.map((w, i) => this.linear(names[i], x, w));
    if (act && x.dtype !== 'qact') x = this.out(`${names[0]}.in_q`, this.be.quantizeAct(x, act));
    return this.be.matmulMany(x, ws).map((y, i) => this.out(names[i], y));
  }

  /** silu(gate) · up, quantized for `down` when it is a w4 weight. */
  swiglu(name: string, gate: Tensor, up: Tensor, down: Weight): Tensor {
    const act = down.act;
    return this.out(name, act ? this.be.siluMulQuant(gate, up, act) : this.be.siluMul(gate, up));
  }

  rope(name: string, x: Tensor, layout: StepLayout, spec: RopeSpec): Tensor {
    return this.out(name, this.be.rope(x, layout, spec));
  }

  kvAppend(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout): void {
    this.be.kvAppend(cache, layer, k, v, layout);
  }

  attention(name: string, q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor {
    return this.out(name, this.be.attention(q, cache, layer, layout, nHeads));
  }

  add(name: string, a: Tensor, b: Tensor): Tensor {
    return this.out(name, this.be.add(a, b));
  }

  rows(name: string, x: Tensor, rows: Int32Array): Tensor {
    return this.out(name, this.be.rows(x, rows));
  }
}

/** The ops (with their dtypes) this graph runs for a model of these weights and KV cache dtype: the norms and
 *  SwiGLU fuse the quantizer where their consumer is w4, linears are gemm_w4ax or gemm_f32 by weight. */
export function opsNeeded(weights: Iterable<HostWeight>, kv: KVDType): Array<[OpName, OpDType]> {
  const need = new Map<string, [OpName, OpDType]>();
  const add = (op: OpName, dt: OpDType) => need.set(`${op}:${dt}`, [op, dt]);
  for (const op of ['rope', 'add', 'rows', 'argmax'] as const) add(op, 'f32');
  add('kv_append', kv);
  add('attention', kv);
  for (const w of weights) {
    if (w.name === 'tok_embed') add('embed', w.kind);
    if (w.kind === 'w4') {
      for (const op of ['quantize_act', 'rmsnorm_quant', 'silu_mul_quant'] as const) add(op, 'qact');
      add('gemm_w4ax', 'w4');
    } else if (w.shape.length === 2) {
      for (const op of ['rmsnorm', 'silu_mul'] as const) add(op, 'f32');
      add('gemm_f32', w.kind); // f32 or f16 weights (a .comet's classifier)
    }
  }
  return [...need.values()];
}

/** Refuse a model that needs an op the backend does not declare (Backend.ops), before anything is uploaded. */
export function requireOps(be: Backend, weights: Iterable<HostWeight>, kv: KVDType): void {
  const missing = opsNeeded(weights, kv).filter(([op, dt]) => !supports(be, op, dt));
  if (missing.length) throw new CometError(`model: the ${be.name} backend does not run ${missing.map(([op, dt]) => `${op} on ${dt}`).join(', ')} (backends/${be.name}: its declared op set)`, 'unsupported');
}
