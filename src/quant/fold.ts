// Function-preserving weight transforms (float in, float out).
//
// foldDownPerm: the SwiGLU channels permute freely (silu(g)·u is elementwise), so down_proj's input
// permutation is folded offline (DESIGN §3.2): gate and up ROWS and down COLUMNS take the order perm
// (new channel j = old channel perm[j]); at run time down_in's perm is the identity.
//
// outlierStress: the outlier stress transform of the accuracy report. At channels `chans` of the residual
// stream, RMSNorm weights (attn_norm, ffn_norm) are multiplied by α and the input columns of the linears that
// read them (wq, wk, wv; w_gate, w_up) divided by α. The float model computes the same function (exactly,
// for α a power of two, barring underflow), but the linear inputs now carry outlier channels α× larger.
import type { HostWeight } from '../../backends/backend.ts';
import type { LlamaConfig } from '../model/config.ts';
import { CometError } from '../errors.ts';

type F32Weight = Extract<HostWeight, { kind: 'f32' }>;

const get = (w: Map<string, HostWeight>, name: string): F32Weight => {
  const x = w.get(name);
  if (!x || x.kind !== 'f32') throw new CometError(`fold: '${name}' is missing or not a float weight`);
  return x;
};

/** Returns a new map; `perms.get(layer)` is down_in's permutation of that layer (length H). */
export function foldDownPerm(c: LlamaConfig, weights: Map<string, HostWeight>, perms: Map<number, Int32Array>): Map<string, HostWeight> {
  const out = new Map(weights);
  const H = c.hiddenDim, D = c.dim;
  for (const [l, perm] of perms) {
    if (perm.length !== H) throw new CometError(`fold: layer ${l} down permutation has length ${perm.length}, expected ${H}`);
    for (const n of ['w_gate', 'w_up']) {
      const w = get(weights, `l${l}.${n}`), d = new Float32Array(w.data.length);
      for (let j = 0; j < H; j++) d.set(w.data.subarray(perm[j] * D, (perm[j] + 1) * D), j * D); // rows
      out.set(w.name, { ...w, data: d });
    }
    const w = get(weights, `l${l}.w_down`), d = new Float32Array(w.data.length);
    for (let n = 0; n < D; n++) for (let j = 0; j < H; j++) d[n * H + j] = w.data[n * H + perm[j]]; // columns
    out.set(w.name, { ...w, data: d });
  }
  return out;
}

/** Returns a new map (inputs untouched). */
export function outlierStress(c: LlamaConfig, weights: Map<string, HostWeight>, chans: number[], alpha: number): Map<string, HostWeight> {
  const out = new Map(weights);
  if (alpha === 1) return out;
  const D = c.dim;
  for (const ch of chans) if (!(Number.isInteger(ch) && ch >= 0 && ch < D)) throw new CometError(`outlierStress: channel ${ch} outside [0, ${D})`);
  const scale = (name: string, f: (d: Float32Array) => void) => {
    const w = get(out, name), d = w.data.slice();
    f(d);
    out.set(name, { ...w, data: d });
  };
  for (let l = 0; l < c.nLayers; l++)
    for (const [norm, lins] of [['attn_norm', ['wq', 'wk', 'wv']], ['ffn_norm', ['w_gate', 'w_up']]] as const) {
      scale(`l${l}.${norm}`, (d) => { for (const ch of chans) d[ch] *= alpha; });
      for (const lin of lins)
        scale(`l${l}.${lin}`, (d) => {
          const N = d.length / D;
          for (let n = 0; n < N; n++) for (const ch of chans) d[n * D + ch] /= alpha;
        });
    }
  return out;
}

/** A few residual channels for the stress transform: max(2, D/128) channels, spread by a fixed stride. */
export function stressChannels(D: number): number[] {
  const n = Math.max(2, Math.round(D / 128));
  return Array.from({ length: n }, (_, i) => (7 + i * Math.floor(D / n) + 13 * i) % D);
}
