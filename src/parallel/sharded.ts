// The tensor-parallel forward in one process: N ranks, each a Llama of its shard (shard.ts) on its own backend
// (or N shards on one backend), driven layer by layer with the collectives of collective.ts:
//   x (replicated residual) -> per rank: attn_norm, q/k/v of its heads, rope + KV append into its KV heads, attention
//   -> gather the attention output (only when o_in's permutation crosses heads: ShardPlan.oGather)
//   -> per rank: its wo shard's f32 partial -> ALL-REDUCE (rank order, f16 once) -> x +=
//   -> per rank: ffn_norm, gate/up of its hidden channels, SwiGLU-quantize, its w_down shard's partial
//   -> ALL-REDUCE -> x +=        … final norm, the rank's vocabulary rows of the logits -> gathered on rank 0.
// ShardedLlama has Llama's public surface, so the engine, generate() and the server run it unchanged; its `be`
// is rank 0's backend except that its KV caches are one cache per rank (KV heads split) and it does not capture.
// Runs where the ranks' tensors are host arrays (the sim backend); CUDA needs the f32-partial GEMM and NCCL
// (src/parallel/README.md, "What remains").
import type { ActQuantSpec, Backend, KVCache, KVCacheSpec, OpSet, StepLayout, Tensor, Weight } from '../../backends/backend.ts';
import { SimTensor, SimWeight } from '../../backends/sim/sim.ts';
import { gemmW4AxPartials, type Schedule } from '../../simulator/kernels/gemm_w4ax.ts';
import { Graph, type Residual, type Tap } from '../graph/graph.ts';
import { Llama } from '../model/llama.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { KVDType } from '../../simulator/formats.ts';
import { CometError } from '../errors.ts';
import { HostCollective, hostData } from './collective.ts';
import type { ShardPlan } from './shard.ts';

/** Backends that run the sharded forward in one process. */
export const TP_BACKENDS = ['sim'];

/** One KV cache per rank (nKvHeads/N heads each), addressed by the same block tables. */
export class ShardedKVCache implements KVCache {
  constructor(readonly spec: KVCacheSpec, readonly ranks: KVCache[]) {}
  /** The ranks' layer bytes, rank after rank (each in its own §3.5 layout). */
  async readLayer(layer: number): Promise<Uint8Array> {
    const parts = await Promise.all(this.ranks.map((c) => c.readLayer(layer)));
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) out.set(p, (o += p.length) - p.length);
    return out;
  }
}

/** A row-parallel linear's partials: W4Ax f32 partials of the rank's k-slices (before the f16 rounding the
 *  all-reduce does once), or the f32 GEMM of a float shard. */
function partials(g: Graph, name: string, x: Tensor, w: Weight, slices: Map<ActQuantSpec, Schedule>): Tensor[] {
  if (!w.act) return [g.out(name, g.be.matmul(x, w))];
  if (x.dtype !== 'qact') x = g.out(`${name}.in_q`, g.be.quantizeAct(x, w.act));
  if (!(x instanceof SimTensor && w instanceof SimWeight && x.q && w.w4)) throw new CometError(`tensor parallelism: the ${g.be.name} backend has no f32-partial W4Ax GEMM`, 'unsupported');
  const ps = gemmW4AxPartials(x.q, w.w4, slices.get(w.act) ?? [[0, w.act.Kp / w.act.B]]);
  return ps.map((p, i) => g.out(`${name}.part${i}`, new SimTensor([x.shape[0], w.shape[0]], 'f32', p)));
}

export class ShardedLlama {
  readonly ranks: Llama[];
  readonly be: Backend;
  readonly kvGroup: number;
  private readonly coll: HostCollective;

  /** bes[r] runs rank r (one backend may run several ranks). */
  constructor(readonly plan: ShardPlan, bes: readonly Backend[], readonly kvDType: KVDType = 'f32', kvGroup?: number) {
    if (bes.length !== plan.n) throw new CometError(`tensor parallelism: ${plan.n} ranks need ${plan.n} backends (the same one may repeat), got ${bes.length}`, 'invalid_config');
    const other = bes.find((b) => !TP_BACKENDS.includes(b.name));
    if (other) throw new CometError(`tensor parallelism is not supported on the ${other.name} backend yet (it runs on ${TP_BACKENDS.join(', ')}; CUDA needs the f32-partial GEMM and an NCCL all-reduce: issue 22)`, 'unsupported');
    this.ranks = plan.ranks.map((s, r) => new Llama(bes[r], s.config, s.weights, kvDType, kvGroup));
    this.kvGroup = this.ranks[0].kvGroup;
    this.coll = new HostCollective(bes);
    this.be = frontBackend(bes);
  }

  get config(): LlamaConfig { return this.plan.config; }
  get rope() { return { ...this.ranks[0].rope, nHeads: this.config.nHeads }; }
  // Llama's weight fields: rank 0's shard (code that walks a model's weights sees one rank)
  get layers() { return this.ranks[0].layers; }
  get tokEmbed() { return this.ranks[0].tokEmbed; }
  get norm() { return this.ranks[0].norm; }
  get output() { return this.ranks[0].output; }

  /** Llama.forward over the ranks: logits (R, V) on rank 0's backend. `tap` sees rank 0's tensors and the sums. */
  forward(tokens: Int32Array, layout: StepLayout, cache: KVCache, logitRows: Int32Array, tap?: Tap): Tensor {
    if (!(cache instanceof ShardedKVCache)) throw new CometError('tensor parallelism: the KV cache must come from the sharded model\'s be.createKVCache');
    const c = this.config, eps = c.normEps, T = tokens.length;
    const gs = this.ranks.map((m, r) => new Graph(m.be, r === 0 ? tap : undefined));
    const each = <R>(f: (m: Llama, g: Graph, r: number) => R): R[] => this.ranks.map((m, r) => f(m, gs[r], r));

    // embedding: each token's row from the rank that holds its vocabulary range
    const x0 = new Float32Array(T * c.dim);
    for (const t of tokens) if (!(t >= 0 && t < c.vocabSize)) throw new CometError(`embed: token id ${t} outside the vocabulary [0, ${c.vocabSize})`);
    each((m, g, r) => {
      const [v0, v1] = this.plan.ranks[r].vocab, mine = [...tokens.keys()].filter((i) => tokens[i] >= v0 && tokens[i] < v1);
      if (!mine.length) return;
      const e = hostData(m.be.embed(m.tokEmbed, Int32Array.from(mine, (i) => tokens[i] - v0)));
      mine.forEach((i, j) => x0.set(e.subarray(j * c.dim, (j + 1) * c.dim), i * c.dim));
    });
    const xs: Residual[] = each((m, g) => g.residual(g.out('embed', m.be.fromHost(x0, [T, c.dim]))));

    for (let l = 0; l < c.nLayers; l++) {
      const att = each((m, g, r) => {
        const L = m.layers[l], h = g.norm(`l${l}.attn_norm`, xs[r], L.attnNorm, eps, L.wq);
        const [qp, k, v] = g.linears([`l${l}.q_proj`, `l${l}.k_proj`, `l${l}.v`], h, [L.wq, L.wk, L.wv]);
        const q = g.ropeKvAppend(`l${l}.q`, qp, k, v, cache.ranks[r], l, layout, m.rope);
        return g.attention(`l${l}.attn`, q, cache.ranks[r], l, layout, m.config.nHeads);
      });
      const full = this.coll.allGather(att), K = c.nHeads * c.headDim; // [T, nHeads·headDim], head order
      const o = each((m, g, r) => {
        const src = this.plan.ranks[r].oSrc[l], in_ = new Float32Array(T * src.length);
        for (let t = 0; t < T; t++) for (let j = 0; j < src.length; j++) in_[t * src.length + j] = full[t * K + src[j]];
        return partials(g, `l${l}.o_proj`, m.be.fromHost(in_, [T, src.length]), m.layers[l].wo, this.plan.ranks[r].slices);
      });
      this.coll.allReduce(o.flat(), !!this.ranks[0].layers[l].wo.act).forEach((y, r) => xs[r].add(`l${l}.attn_res`, y));
      const down = each((m, g, r) => {
        const L = m.layers[l], h2 = g.norm(`l${l}.ffn_norm`, xs[r], L.ffnNorm, eps, L.wGate);
        const [gate, up] = g.linears([`l${l}.gate`, `l${l}.up`], h2, [L.wGate, L.wUp]);
        return partials(g, `l${l}.down`, g.swiglu(`l${l}.swiglu`, gate, up, L.wDown), L.wDown, this.plan.ranks[r].slices);
      });
      this.coll.allReduce(down.flat(), !!this.ranks[0].layers[l].wDown.act).forEach((y, r) => xs[r].add(`l${l}.ffn_res`, y));
    }
    const logits = each((m, g, r) => {
      const last = g.rows('last', xs[r].value(), logitRows);
      return g.linear('logits', g.norm('norm', last, m.norm, eps, m.output), m.output);
    });
    return gs[0].out('logits.all', this.be.fromHost(this.coll.allGather(logits), [logitRows.length, c.vocabSize]));
  }
}

/** Rank 0's backend as the engine sees the sharded model (every other member is rank 0's, by prototype): KV caches
 *  are one per rank, no step capture, endStep and dispose reach every rank. */
function frontBackend(bes: readonly Backend[]): Backend {
  const be0 = bes[0], uniq = [...new Set(bes)];
  const front: Backend = Object.create(be0);
  return Object.assign(front, {
    name: be0.name,
    ops: be0.ops as OpSet,
    captureStep: undefined,
    createKVCache(spec: KVCacheSpec): KVCache {
      const n = bes.length;
      return new ShardedKVCache(spec, bes.map((b) => b.createKVCache({ ...spec, nKvHeads: spec.nKvHeads / n })));
    },
    endStep(): void { for (const b of uniq) b.endStep(); },
    dispose(): void { for (const b of uniq) b.dispose(); },
  });
}
