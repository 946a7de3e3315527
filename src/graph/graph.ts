// The graph executor: the model calls these builders, each names its output by layer (`l3.attn_norm`) and
// runs the backend op. Quantization is decided here by dtype, never in the model: a norm or SwiGLU whose
// consumer weight is w4 fuses the FMPQ quantizer (rmsnorm_quant, silu_mul_quant); a linear on w4 quantizes an
// f32 input first (quantize_act, with the channel gather of its spec).
// The residual stream is a Residual: `x += y` waits for the next norm that reads x, which does both in one launch
// (add_rmsnorm[_quant]); RoPE of q and k goes with the KV append (rope_kv_append). Every fused op is, bit for bit,
// the composition it replaces (Backend), so fusing changes launches, never results.
// `tap` sees every named tensor (dumps, cross-backend diffs); ops enqueue, so tapping costs nothing unset.
import { type Backend, type HostWeight, type KVCache, type KVDType, type OpDType, type OpName, type RopeSpec, type StepLayout, supports, type Tensor, type Weight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';

export type Tap = (name: string, t: Tensor) => void;

export class Graph {
  constructor(readonly be: Backend, readonly tap?: Tap) {}

  /** t, shown to the tap as `name` */
  out<T extends Tensor>(name: string, t: T): T {
    this.tap?.(name, t);
    return t;
  }

  embed(name: string, table: Weight, tokens: Int32Array): Tensor {
    return this.out(name, this.be.embed(table, tokens));
  }

  /** The residual stream starting at x (Residual). */
  residual(x: Tensor): Residual {
    return new Residual(this, x);
  }

  /** RMSNorm; quantized for `consumer` when it is a w4 weight. Of a residual stream with an add pending, the add
   *  and the norm in one op (add_rmsnorm[_quant]). */
  norm(name: string, x: Tensor | Residual, w: Tensor, eps: number, consumer: Weight): Tensor {
    const act = consumer.act, be = this.be;
    if (x instanceof Residual && x.pending)
      return this.out(name, x.addThen((a, y) => (act ? be.addRmsnormQuant(a, y, w, eps, act) : be.addRmsnorm(a, y, w, eps))));
    const v = x instanceof Residual ? x.value() : x;
    return this.out(name, act ? be.rmsnormQuant(v, w, eps, act) : be.rmsnorm(v, w, eps));
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

  /** rope(q), named `name`; rope(k) and v appended to the cache's `layer` (k's heads: the cache's). */
  ropeKvAppend(name: string, q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor {
    return this.out(name, this.be.ropeKvAppend(q, k, v, cache, layer, layout, spec));
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

/** The residual stream x, with at most one add not done yet: add() records `x += y`, and the next Graph.norm
 *  of the stream does it in the norm's launch (addThen); value() does it alone (an add op). */
export class Residual {
  /** the add not done yet: its operand and the name of the sum */
  pending?: { name: string; y: Tensor };
  constructor(private readonly g: Graph, private x: Tensor) {}

  /** x += y; `name` names the sum. */
  add(name: string, y: Tensor): void {
    this.value();
    this.pending = { name, y };
  }

  /** x with every add done. */
  value(): Tensor {
    const p = this.pending;
    this.pending = undefined;
    if (p) this.x = this.g.add(p.name, this.x, p.y);
    return this.x;
  }

  /** The pending add done by `op` (x, y) -> [x + y, out], a fused op; x + y becomes the stream. Returns out. */
  addThen(op: (x: Tensor, y: Tensor) => [Tensor, Tensor]): Tensor {
    const p = this.pending!;
    this.pending = undefined;
    const [sum, out] = op(this.x, p.y);
    this.x = this.g.out(p.name, sum);
    return out;
  }
}

/** The ops (with their dtypes) this graph runs for a model of these weights and KV cache dtype: the norms and
 *  SwiGLU fuse the quantizer where their consumer is w4, linears are gemm_w4ax or gemm_f32 by weight. */
export function opsNeeded(weights: Iterable<HostWeight>, kv: KVDType): Array<[OpName, OpDType]> {
  const need = new Map<string, [OpName, OpDType]>();
  const add = (op: OpName, dt: OpDType) => need.set(`${op}:${dt}`, [op, dt]);
  for (const op of ['add', 'rows', 'argmax'] as const) add(op, 'f32');
  add('rope_kv_append', kv);
  add('attention', kv);
  for (const w of weights) {
    if (w.name === 'tok_embed') add('embed', w.kind);
    if (w.kind === 'w4') {
      for (const op of ['quantize_act', 'rmsnorm_quant', 'add_rmsnorm_quant', 'silu_mul_quant'] as const) add(op, 'qact');
      add('gemm_w4ax', 'w4');
    } else if (w.shape.length === 2) {
      for (const op of ['rmsnorm', 'add_rmsnorm', 'silu_mul'] as const) add(op, 'f32');
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
