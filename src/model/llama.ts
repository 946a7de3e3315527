// LLaMA (RMSNorm, RoPE, GQA attention over a paged KV cache, SwiGLU), written once for every backend and
// every precision: the float reference and W4A4KV4 differ only in the dtypes of the weights and the cache.
//
//   x   = embed(tokens)                                   (T, D)
//   for each layer l:
//     h   = rmsnorm(x) · attn_norm                        (T, D)      [FMPQ-quantized when wq is w4]
//     q   = rope(h Wq^T), k = rope(h Wk^T), v = h Wv^T    (T, nH·hd), (T, nKV·hd)
//     cache[l] ← k, v                                     pages of P tokens (f32 or KV4)  [one op with the ropes]
//     x  += attention(q, cache[l]) Wo^T                   causal, GQA: head h reads KV head h / (nH/nKV)
//     h   = rmsnorm(x) · ffn_norm                                  [one op with the add before it]
//     x  += (silu(h Wgate^T) ⊙ h Wup^T) Wdown^T           (T, H) inside
//   logits = rmsnorm(x[rows]) · norm  Wout^T              (R, V), R = the rows that need logits
// x is a residual stream (src/graph): each `x +=` is done by the norm that next reads x, in its launch.
import { type Backend, type HostWeight, type KVCache, type KVDType, type RopeSpec, type StepLayout, type Tensor, type Weight } from '../../backends/backend.ts';
import { Graph, requireOps, type Residual, type Tap } from '../graph/graph.ts';
import { type LlamaConfig, weightNames, weightShape } from './config.ts';
import { fail } from '../errors.ts';

export interface LayerWeights {
  attnNorm: Tensor; wq: Weight; wk: Weight; wv: Weight; wo: Weight; // wq (nH·hd, D) · wk, wv (nKV·hd, D) · wo (D, nH·hd)
  ffnNorm: Tensor; wGate: Weight; wUp: Weight; wDown: Weight; // wGate, wUp (H, D) · wDown (D, H)
}

export class Llama {
  readonly layers: LayerWeights[];
  readonly tokEmbed: Weight; // (V, D)
  readonly norm: Tensor; // (D)
  readonly output: Weight; // (V, D), the embedding itself when tied
  readonly rope: RopeSpec;

  readonly kvGroup: number; // KV4 channels per (s, z) group (DESIGN §3.5), head_dim unless the .comet says

  /** kv4 for FMPQ models (DESIGN §3.5), f32 for the float reference */
  constructor(readonly be: Backend, readonly config: LlamaConfig, host: Map<string, HostWeight>, readonly kvDType: KVDType = 'f32', kvGroup?: number) {
    this.kvGroup = kvGroup ?? config.headDim;
    const up = (name: string): Weight => {
      const w = host.get(name) ?? fail(`model: weight '${name}' is missing`);
      const shape = w.kind === 'w4' ? [w.N, w.act.K] : w.shape;
      const want = weightShape(config, name);
      if (shape.join() !== want.join()) fail(`model: weight '${name}' has shape [${shape}], expected [${want}]`);
      return be.uploadWeight(w);
    };
    const names = weightNames(config);
    requireOps(be, host.values(), kvDType);
    const W = new Map(names.map((n) => [n, up(n)]));
    this.tokEmbed = W.get('tok_embed')!;
    this.norm = W.get('norm')!;
    this.output = config.tiedEmbeddings ? this.tokEmbed : W.get('output')!;
    this.layers = Array.from({ length: config.nLayers }, (_, l) => {
      const g = (n: string) => W.get(`l${l}.${n}`)!;
      return {
        attnNorm: g('attn_norm'), wq: g('wq'), wk: g('wk'), wv: g('wv'), wo: g('wo'),
        ffnNorm: g('ffn_norm'), wGate: g('w_gate'), wUp: g('w_up'), wDown: g('w_down'),
      };
    });
    this.rope = ropeSpec(config);
  }

  /** One step over T tokens (any mix of prefill chunks and decode tokens). Returns logits (R, V) for the
   *  token rows in `logitRows` (e.g. the last token of each sequence). */
  forward(tokens: Int32Array, layout: StepLayout, cache: KVCache, logitRows: Int32Array, tap?: Tap): Tensor {
    const c = this.config, g = new Graph(this.be, tap), eps = c.normEps;
    const x = g.residual(g.embed('embed', this.tokEmbed, tokens));
    this.layers.forEach((L, l) => decoderLayer(g, c, this.rope, l, L, x, layout, cache, l));
    const last = g.rows('last', x.value(), logitRows);
    return g.linear('logits', g.norm('norm', last, this.norm, eps, this.output), this.output);
  }
}

/** The RoPE of a config (query heads; the K rope is the same with nKvHeads). */
export const ropeSpec = (c: LlamaConfig): RopeSpec => ({ nHeads: c.nHeads, headDim: c.headDim, theta: c.ropeTheta, ...(c.ropeScaling ? { scaling: c.ropeScaling } : {}) });

/** Decoder layer `l` on the residual stream x (T, D). Its K/V go to layer `cacheLayer` of `cache` (the model: l;
 *  the layer-by-layer quantizer: 0 of a one-layer cache). Tensors are named `l{l}.*`. */
export function decoderLayer(g: Graph, c: LlamaConfig, rope: RopeSpec, l: number, L: LayerWeights, x: Residual, layout: StepLayout, cache: KVCache, cacheLayer: number): void {
  const eps = c.normEps;
  const h = g.norm(`l${l}.attn_norm`, x, L.attnNorm, eps, L.wq);
  const [qp, k, v] = g.linears([`l${l}.q_proj`, `l${l}.k_proj`, `l${l}.v`], h, [L.wq, L.wk, L.wv]);
  const q = g.ropeKvAppend(`l${l}.q`, qp, k, v, cache, cacheLayer, layout, rope); // cache ← rope(k), v
  const att = g.attention(`l${l}.attn`, q, cache, cacheLayer, layout, c.nHeads);
  x.add(`l${l}.attn_res`, g.linear(`l${l}.o_proj`, att, L.wo));
  const h2 = g.norm(`l${l}.ffn_norm`, x, L.ffnNorm, eps, L.wGate);
  const [gate, up] = g.linears([`l${l}.gate`, `l${l}.up`], h2, [L.wGate, L.wUp]);
  const ff = g.swiglu(`l${l}.swiglu`, gate, up, L.wDown);
  x.add(`l${l}.ffn_res`, g.linear(`l${l}.down`, ff, L.wDown));
}
