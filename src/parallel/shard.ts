// The tensor-parallel sharding plan (Megatron-style) of a loaded model over N ranks; src/parallel/README.md is the
// contract. Per layer:
//   wq rows of the rank's query heads, wk/wv rows of its KV heads       (column-parallel: whole output rows)
//   w_gate/w_up rows of the hidden channels its w_down shard reads      (column-parallel)
//   wo, w_down: a contiguous range of input channels in the PERMUTED order, on FMPQ B-block boundaries
//                                                                       (row-parallel: f32 partials, all-reduced)
//   norms replicated; tok_embed (and output unless tied) rows of the rank's vocabulary range.
// A w4 row-parallel shard keeps its blocks whole: codes [N][hi-lo], scales [N][(hi-lo)/B], and its own activation
// spec actSpec(K_r, B, K8_r) with no permutation: the rank's input is already gathered into the permuted order
// (oSrc: the channels of the full attention output it reads; w_down: its gate/up rows ARE those channels), the
// INT8 blocks of the range stay INT8 (K8_r = clamp(K8 - lo, 0, hi - lo)), and every block, its codes and its f16
// scale are the unsharded layer's, so the rank's quantizer computes the unsharded codes of its blocks.
import type { ActQuantSpec, HostWeight } from '../../backends/backend.ts';
import type { Schedule } from '../../simulator/kernels/gemm_w4ax.ts';
import { actSpec } from '../../simulator/act.ts';
import { type LlamaConfig, weightNames } from '../model/config.ts';
import { CometError } from '../errors.ts';

export interface RankShard {
  rank: number;
  /** the rank's own shape: nHeads/N, nKvHeads/N, its hidden channels and vocabulary rows (a Llama of it uploads) */
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  heads: [number, number]; // query heads [h0, h1)
  kvHeads: [number, number];
  vocab: [number, number]; // token ids [v0, v1) of its embedding and classifier rows
  /** per layer: the columns of the full attention output [T, nHeads·headDim] (head order) its wo shard reads, in
   *  the shard's channel order */
  oSrc: Int32Array[];
  /** the k-slices of each w4 row-parallel shard (keyed by the shard's activation spec), in the shard's blocks: the
   *  rank contributes one f32 partial per slice */
  slices: Map<ActQuantSpec, Schedule>;
}

export interface ShardPlan {
  n: number;
  config: LlamaConfig;
  ranks: RankShard[];
  /** per layer: does some rank's wo shard read attention channels of another rank's heads? (w4 with an o_in
   *  permutation across heads: an all-gather of the attention output before wo; identity or within-rank: none) */
  oGather: boolean[];
  /** k-slices of every w4 row-parallel weight (o, down); each rank holds whole slices */
  slices: number;
  /** the unsharded row-parallel weights' activation specs -> their k-slices in blocks (for referenceSchedule) */
  rowParallel: Map<ActQuantSpec, Schedule>;
}

export interface ShardOptions {
  /** k-slices S of each w4 o/down input (a multiple of N, default N): every slice is one f32 partial, the
   *  all-reduce adds all S in order. A fixed S makes TP = 1, 2, 4, … (each dividing S) give the same bits, with
   *  TP = 1 summing the same S slices (referenceSchedule). */
  slices?: number;
}

const bad = (msg: string): never => {
  throw new CometError(`tensor parallelism: ${msg}`, 'invalid_config');
};

/** Rows `idx` of a host weight [N][K] (f32, f16 or w4: codes and scales rows). */
export function gatherRows(w: HostWeight, idx: ArrayLike<number>, name = w.name): HostWeight {
  const n = idx.length;
  if (w.kind === 'w4') {
    const cb = w.act.Kp / 2, sb = w.act.Kp / w.act.B;
    const codes = new Uint8Array(n * cb), scales = new Uint16Array(n * sb);
    for (let i = 0; i < n; i++) {
      codes.set(w.codes.subarray(idx[i] * cb, (idx[i] + 1) * cb), i * cb);
      scales.set(w.scales.subarray(idx[i] * sb, (idx[i] + 1) * sb), i * sb);
    }
    return { kind: 'w4', name, N: n, codes, scales, act: w.act };
  }
  const K = w.shape[1], data = new (w.kind === 'f32' ? Float32Array : Uint16Array)(n * K);
  for (let i = 0; i < n; i++) data.set((w.data as Float32Array).subarray(idx[i] * K, (idx[i] + 1) * K), i * K);
  return w.kind === 'f32' ? { kind: 'f32', name, shape: [n, K], data: data as Float32Array } : { kind: 'f16', name, shape: [n, K], data: data as Uint16Array };
}

/** Input channels [lo, hi) of a weight [N][K]: w4 on block boundaries of its permuted order (spec: the shard's),
 *  float weights any range. */
export function sliceCols(w: HostWeight, lo: number, hi: number, spec?: ActQuantSpec): HostWeight {
  if (w.kind === 'w4') {
    const { Kp, B } = w.act, cb = Kp / 2, sb = Kp / B, c = (hi - lo) / 2, s = (hi - lo) / B;
    const codes = new Uint8Array(w.N * c), scales = new Uint16Array(w.N * s);
    for (let r = 0; r < w.N; r++) {
      codes.set(w.codes.subarray(r * cb + lo / 2, r * cb + hi / 2), r * c);
      scales.set(w.scales.subarray(r * sb + lo / B, r * sb + hi / B), r * s);
    }
    return { kind: 'w4', name: w.name, N: w.N, codes, scales, act: spec! };
  }
  const [N, K] = w.shape, data = new (w.kind === 'f32' ? Float32Array : Uint16Array)(N * (hi - lo));
  for (let r = 0; r < N; r++) data.set((w.data as Float32Array).subarray(r * K + lo, r * K + hi), r * (hi - lo));
  return w.kind === 'f32' ? { kind: 'f32', name: w.name, shape: [N, hi - lo], data: data as Float32Array } : { kind: 'f16', name: w.name, shape: [N, hi - lo], data: data as Uint16Array };
}

const range = (a: number, b: number) => Int32Array.from({ length: b - a }, (_, i) => a + i);

/** A row-parallel weight's split: per rank, the input range [lo, hi) (permuted order for w4), the shard's spec,
 *  its k-slices (w4; in the shard's blocks) and the original input channels the range reads (padding dropped).
 *  w4: slice s = blocks [⌊s·nb/S⌋, ⌊(s+1)·nb/S⌋), rank r the slices [r·S/N, (r+1)·S/N): whole blocks, as even as nb
 *  allows (wikillama-28M's w_down, 11 blocks of 128: 5 + 6 at TP = 2); `even` (wo, whose ranks must be alike:
 *  each a Llama of nHeads/N heads) refuses an uneven split. Float weights: N equal-as-possible ranges. */
function rowSplit(w: HostWeight, n: number, S: number, what: string, even: boolean): Array<{ lo: number; hi: number; spec?: ActQuantSpec; slices?: Schedule; src: Int32Array }> {
  const cut = (K: number, parts: number, unit: string) => {
    if (even ? K % parts : K < parts) bad(`${what} (${w.name}): its input has ${K} ${unit}, which ${n} ranks${parts !== n ? ` in ${parts} slices` : ''} cannot split ${even ? 'evenly ' : ''}on block boundaries`);
    return (i: number) => Math.floor((i * K) / parts);
  };
  if (w.kind === 'w4') {
    const { K, Kp, B, K8, perm } = w.act, nb = Kp / B, per = S / n;
    const at = cut(nb, S, `FMPQ blocks of ${B} channels (K = ${K}${Kp > K ? `, padded to ${Kp}` : ''})`);
    return Array.from({ length: n }, (_, r) => {
      const b0 = at(r * per), lo = b0 * B, hi = at((r + 1) * per) * B, real = Math.min(hi, K) - lo;
      const src = perm ? perm.slice(lo, lo + real) : range(lo, lo + real);
      const slices = Array.from({ length: per }, (_, i): [number, number] => [at(r * per + i) - b0, at(r * per + i + 1) - b0]);
      return { lo, hi, spec: actSpec(real, B, Math.min(Math.max(K8 - lo, 0), hi - lo)), slices, src };
    });
  }
  const at = cut(w.shape[1], n, 'channels');
  return Array.from({ length: n }, (_, r) => ({ lo: at(r), hi: at(r + 1), src: range(at(r), at(r + 1)) }));
}

/** The plan for `n` ranks, or a CometError saying which dimension `n` does not divide. */
export function shardModel(c: LlamaConfig, weights: Map<string, HostWeight>, n: number, o: ShardOptions = {}): ShardPlan {
  if (!Number.isInteger(n) || n < 1) bad(`the rank count must be a positive integer, got ${n}`);
  const S = o.slices ?? n;
  if (!Number.isInteger(S) || S < n || S % n) bad(`${S} k-slices do not split evenly over ${n} ranks`);
  if (c.nHeads % n) bad(`${n} ranks do not divide the ${c.nHeads} query heads`);
  if (c.nKvHeads % n) bad(`${n} ranks do not divide the ${c.nKvHeads} KV heads (each rank keeps whole KV heads and the query heads that read them)`);
  if (c.vocabSize < n) bad(`${n} ranks for a vocabulary of ${c.vocabSize}`);
  const get = (name: string) => weights.get(name) ?? bad(`weight '${name}' is missing`);
  for (const name of weightNames(c)) get(name);
  const hd = c.headDim, qh = c.nHeads / n, kh = c.nKvHeads / n, vs = Math.ceil(c.vocabSize / n);
  const ranks: RankShard[] = Array.from({ length: n }, (_, r) => ({
    rank: r, config: c, weights: new Map(), heads: [r * qh, (r + 1) * qh], kvHeads: [r * kh, (r + 1) * kh],
    vocab: [Math.min(r * vs, c.vocabSize), Math.min((r + 1) * vs, c.vocabSize)], oSrc: [], slices: new Map(),
  }));
  if (ranks.some((s) => s.vocab[1] <= s.vocab[0])) bad(`${n} ranks leave a rank without vocabulary rows (vocabulary ${c.vocabSize})`);
  const oGather: boolean[] = [], rowParallel = new Map<ActQuantSpec, Schedule>();
  for (let l = 0; l < c.nLayers; l++) {
    const wo = get(`l${l}.wo`), wd = get(`l${l}.w_down`);
    if (wo.kind === 'w4' && wo.act.Kp !== wo.act.K) bad(`layer ${l}: o_proj's input (${wo.act.K} channels) is padded to ${wo.act.Kp}; tensor parallelism needs nHeads·headDim to be a multiple of B = ${wo.act.B}`);
    const os = rowSplit(wo, n, S, `layer ${l} o_proj`, true), ds = rowSplit(wd, n, S, `layer ${l} down_proj`, false);
    for (const [w, split] of [[wo, os], [wd, ds]] as const)
      if (w.kind === 'w4') rowParallel.set(w.act, split.flatMap(({ lo, slices }) => slices!.map(([a, b]): [number, number] => [a + lo / w.act.B, b + lo / w.act.B])));
    oGather.push(os.some(({ src }, r) => src.some((ch) => ch < r * qh * hd || ch >= (r + 1) * qh * hd)));
    for (const s of ranks) {
      const r = s.rank, put = (w: HostWeight) => s.weights.set(w.name, w), o = os[r], d = ds[r];
      put(gatherRows(get(`l${l}.wq`), range(r * qh * hd, (r + 1) * qh * hd)));
      for (const k of ['wk', 'wv']) put(gatherRows(get(`l${l}.${k}`), range(r * kh * hd, (r + 1) * kh * hd)));
      put(sliceCols(wo, o.lo, o.hi, o.spec));
      s.oSrc.push(o.src);
      for (const k of ['w_gate', 'w_up']) put(gatherRows(get(`l${l}.${k}`), d.src));
      put(sliceCols(wd, d.lo, d.hi, d.spec));
      for (const x of [o, d]) if (x.spec) s.slices.set(x.spec, x.slices!);
      for (const k of ['attn_norm', 'ffn_norm']) put(get(`l${l}.${k}`));
    }
  }
  for (const s of ranks) {
    const [v0, v1] = s.vocab;
    s.weights.set('norm', get('norm'));
    s.weights.set('tok_embed', gatherRows(get('tok_embed'), range(v0, v1)));
    if (!c.tiedEmbeddings) s.weights.set('output', gatherRows(get('output'), range(v0, v1)));
    const h = s.weights.get('l0.w_gate')!, rows = h.kind === 'w4' ? h.N : h.shape[0];
    s.config = { ...c, nHeads: qh, nKvHeads: kh, hiddenDim: rows, vocabSize: v1 - v0 };
  }
  return { n, config: c, ranks, oGather, slices: S, rowParallel };
}

/** The unsharded model's W4Ax schedule that the sharded run equals bit for bit (src/parallel/README.md): the
 *  row-parallel weights (wo, w_down) summed as one partial per k-slice, added in slice (= rank) order; every other
 *  weight in one range. For `new SimBackend({ gemmSchedule: referenceSchedule(plan) })`. */
export function referenceSchedule(plan: ShardPlan): (N: number, spec: ActQuantSpec) => Array<[number, number]> {
  return (_N, spec) => plan.rowParallel.get(spec) ?? [[0, spec.Kp / spec.B]];
}
