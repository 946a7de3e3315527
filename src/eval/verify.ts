// A backend against the simulator on a whole model: greedy tokens of each prompt on `be` and on the simulator
// summing every W4Ax GEMM in the order `be`'s kernels report (DESIGN §3.4), so a quantized model must agree
// token for token (`comet eval verify`, and the correctness gate of `comet bench e2e`).
import type { Backend, KVCache, KVDType, Tensor } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { kv4Layout } from '../../simulator/kv4.ts';
import type { Llama } from '../model/llama.ts';
import { openModel, type OpenModel } from '../runtime/open.ts';
import { generate, singleSequenceCache } from '../engine/generate.ts';

export const VERIFY_PROMPTS = ['Once upon a time', 'The history of', 'Lily and her mom'];

export interface VerifyResult {
  model: string; backend: string; prompt: string; steps: number; equal: boolean;
  tokens: number[]; reference: number[]; firstDifference: number; // -1 when equal
  explain?: string[]; // with `explain`: where the two backends part (lockstepDifference)
}

export interface VerifyOptions {
  prompts?: string[]; // default VERIFY_PROMPTS
  steps?: number; // new tokens per prompt (default 32)
  tokenizer?: string;
  explain?: boolean; // on a difference, lockstepDifference
  /** The simulator's tokens per prompt, filled on first use: a second verify of the same model (another kernel
   *  choice of the backend) reuses them instead of running the simulator again. */
  references?: Map<string, number[]>;
}

export async function verifyAgainstSim(be: Backend, path: string, o: VerifyOptions = {}): Promise<VerifyResult[]> {
  const steps = o.steps ?? 32, refs = o.references ?? new Map<string, number[]>();
  const sim = new SimBackend({ gemmSchedule: be.gemmSchedule?.bind(be) });
  const a = await openModel(be, path, o.tokenizer);
  let b: OpenModel | undefined; // the simulator's copy, opened only when needed
  const simModel = async () => (b ??= await openModel(sim, path, o.tokenizer));
  const out: VerifyResult[] = [];
  try {
    for (const prompt of o.prompts ?? VERIFY_PROMPTS) {
      const ids = a.tokenizer.encode(prompt);
      const run = async (m: OpenModel) => {
        const t: number[] = [];
        for await (const x of generate(m.model, ids, { maxTokens: steps, temperature: 0, topP: 0, topK: 0, seed: 0, stop: m.stop })) t.push(x);
        return t;
      };
      const tokens = await run(a);
      let reference = refs.get(prompt);
      if (!reference) refs.set(prompt, (reference = await run(await simModel())));
      let d = 0;
      while (d < Math.max(tokens.length, reference.length) && tokens[d] === reference[d]) d++;
      const equal = d === tokens.length && d === reference.length;
      const r: VerifyResult = { model: path, backend: be.name, prompt, steps, equal, tokens, reference, firstDifference: equal ? -1 : d };
      if (!equal && o.explain) r.explain = await lockstepDifference((await simModel()).model, a.model, [...ids, ...reference], ids.length);
      out.push(r);
    }
  } finally {
    sim.dispose();
  }
  return out;
}

/** Raw bytes of one layer of a backend's KV cache, in the simulator's layout (kv4: KVStoreKV4.data[layer];
 *  f32: K pages then V pages). A GPU backend's cache exposes readLayer(layer); the simulator's, its store. */
export const kvLayerBytes = (cache: KVCache, layer: number): Promise<Uint8Array> => cache.readLayer(layer);

/** Two models (same weights, two backends) fed the same tokens in lockstep: prefill seq[0, promptLen), then one
 *  token per step. Reports the first step where the logits, any named tensor (Graph taps) or any KV-cache byte
 *  differ: which tensors (in model order, with the largest |d|) and which cache byte (layer, page, head,
 *  K|V codes|scales, slot, and whether it was written this step or is an OLD slot). */
export async function lockstepDifference(a: Llama, b: Llama, seq: number[], promptLen: number, maxLines = 40): Promise<string[]> {
  const kv: KVDType = a.kvDType;
  const ca = singleSequenceCache(a, seq.length, kv), cb = singleSequenceCache(b, seq.length, kv);
  const spec = ca.cache.spec, L = kv === 'kv4' ? kv4Layout(spec) : undefined;
  for (let pos = 0, step = 0; pos < seq.length; step++) {
    const T = step === 0 ? promptLen : 1;
    const layout = { pos: Int32Array.from({ length: T }, (_, i) => pos + i), seq: new Int32Array(T), blockTables: [ca.blockTable] };
    const snaps: Array<Map<string, Float32Array | Uint8Array>> = [];
    for (const [m, c] of [[a, ca.cache], [b, cb.cache]] as const) {
      const tapped: Array<[string, Tensor]> = [];
      const out = m.forward(Int32Array.from(seq.slice(pos, pos + T)), layout, c, Int32Array.of(T - 1), (n, t) => tapped.push([n, t]));
      const snap = new Map<string, Float32Array | Uint8Array>();
      for (const [n, t] of tapped) snap.set(n, t.dtype === 'qact' ? await m.be.readRaw!(t) : await m.be.read(t));
      snap.set('logits', await m.be.read(out));
      snaps.push(snap);
      m.be.endStep();
    }
    const diffs: string[] = [];
    for (const [n, x] of snaps[0]) {
      const y = snaps[1].get(n)!;
      let cnt = 0, mx = 0, at = -1;
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) { cnt++; if (at < 0) at = i; mx = Math.max(mx, Math.abs(x[i] - y[i])); }
      if (cnt) diffs.push(`  ${n}: ${cnt} of ${x.length} differ (first at ${at}: ${x[at]} vs ${y[at]})${x instanceof Float32Array ? `, max |d| ${mx.toExponential(2)}` : ' (bytes)'}`);
    }
    for (let l = 0; l < spec.nLayers; l++) {
      const x = await kvLayerBytes(ca.cache, l), y = await kvLayerBytes(cb.cache, l);
      for (let i = 0; i < x.length; i++) {
        if (x[i] === y[i]) continue;
        if (!L) { diffs.push(`  KV layer ${l} byte ${i} differs`); break; }
        const page = Math.floor(i / L.pageBytes), r = i % L.pageBytes, head = Math.floor(r / L.headBytes), o = r % L.headBytes;
        const part = o < L.vCodes ? 'kCodes' : o < L.kSZ ? 'vCodes' : o < L.vSZ ? 'kSZ' : 'vSZ';
        const slot = part.endsWith('Codes') ? Math.floor((o % L.codeBytes) / (spec.headDim / 2)) : Math.floor(((o - L.kSZ) % L.szBytes) / (4 * (spec.headDim / spec.group)));
        const p = page * spec.pageSize + slot;
        diffs.push(`  KV layer ${l} page ${page} head ${head} ${part} slot ${slot} (position ${p}, ${p >= pos ? 'written this step' : 'OLD'}): ${x[i]} vs ${y[i]}`);
        break;
      }
    }
    if (diffs.length) return [`first difference at step ${step} (positions ${pos}..${pos + T - 1}), ${a.be.name} vs ${b.be.name}:`, ...diffs.slice(0, maxLines)];
    pos += T;
  }
  return ['no difference at any step (logits, named tensors, KV bytes)'];
}
