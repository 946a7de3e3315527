// The quantization sites of a LLaMA: every linear layer's input, named once per layer. Linears that read the
// same tensor share one site, hence one activation spec (one quantizer feeds them all):
//   l{i}.attn_in  = rmsnorm(x)·attn_norm   (D)       -> wq, wk, wv     tapped as `l{i}.attn_norm`
//   l{i}.o_in     = attention output       (nH·hd)   -> wo             tapped as `l{i}.attn`
//   l{i}.ffn_in   = rmsnorm(x)·ffn_norm    (D)       -> w_gate, w_up   tapped as `l{i}.ffn_norm`
//   l{i}.down_in  = silu(gate)·up          (H)       -> w_down         tapped as `l{i}.swiglu`
// The classifier (tied or not) and the embedding stay float, as in the paper.
import type { LlamaConfig } from '../model/config.ts';

export type SiteKind = 'attn_in' | 'o_in' | 'ffn_in' | 'down_in';

export interface Site {
  name: string; // l{i}.{kind}
  layer: number;
  kind: SiteKind;
  tap: string; // the graph tensor that holds this input (src/model/llama.ts names)
  K: number; // input channels
  consumers: string[]; // weight names that read it
}

export function sites(c: LlamaConfig): Site[] {
  const out: Site[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `l${l}.`;
    out.push(
      { name: `${p}attn_in`, layer: l, kind: 'attn_in', tap: `${p}attn_norm`, K: c.dim, consumers: [`${p}wq`, `${p}wk`, `${p}wv`] },
      { name: `${p}o_in`, layer: l, kind: 'o_in', tap: `${p}attn`, K: c.nHeads * c.headDim, consumers: [`${p}wo`] },
      { name: `${p}ffn_in`, layer: l, kind: 'ffn_in', tap: `${p}ffn_norm`, K: c.dim, consumers: [`${p}w_gate`, `${p}w_up`] },
      { name: `${p}down_in`, layer: l, kind: 'down_in', tap: `${p}swiglu`, K: c.hiddenDim, consumers: [`${p}w_down`] },
    );
  }
  return out;
}

/** The quantized linear weights, in model order. */
export const linearNames = (c: LlamaConfig): string[] => sites(c).flatMap((s) => s.consumers);
