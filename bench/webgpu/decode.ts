// Decode at batch 1 on WebGPU (Dawn in Node) beside the CUDA backend, same process, same random-weight
// W4A4KV4 model (LLaMA-3.2-1B shape by default), and the W4Ax matvec of its layer shapes against the WGSL copy
// bandwidth.
//   npx tsx bench/webgpu/decode.ts [--shape llama3.2-1b | stories110m | tiny] [--steps N] [--out DIR] [--no-cuda]
//     [--kernels serial | workgroup] [--decode-only] [--dawn-toggles a,b --same-as OTHER.json] [--matvec-s11]
// --kernels forces WebGPU's attention, KV-append and f16-GEMM kernels (the CPU adapters' serial ones, say, for their
// GPU profile); --decode-only skips the copy bandwidth and matvec part. The WebGPU step is profiled after the timed
// replays: host ms per phase, and each kernel's GPU time (printed, and in the JSON). --dawn-toggles runs WebGPU on a
// device with those Dawn toggles on (disable_robustness: what the WGSL bounds checks cost the step); --same-as says
// whether its greedy tokens equal another run's WebGPU tokens (the same weights: the same arguments but the toggles).
// Decode runs as the engine runs a greedy batch-1 step: a prefill, eager steps, then the step captured once
// (Backend.captureStep: a CUDA graph; on WebGPU the recorded command list) and replayed with new inputs, each
// replay reading back only the sampled id. tokens/s = steps / wall time of the replays, after warm-up.
// Weights are random codes and scales (not quantized from floats: speed does not depend on their values);
// the classifier is an untied W4 matrix (LLaMA-3.2-1B ties it to the embedding; a tied f32 classifier would
// read 1 GB per token on both backends, and the f16 classifier is another helper's work).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, HostWeight, StepInputs } from '../../backends/backend.ts';
import { loadShaderSources } from '../../backends/webgpu/shaders.ts';
import { createWebGPUBackend, WebGPUBackend, WebGPUStep } from '../../backends/webgpu/webgpu.ts';
import { w4Bytes } from '../../simulator/traits.ts';
import { type LlamaConfig, weightNames, weightShape } from '../../src/model/config.ts';
import { Llama } from '../../src/model/llama.ts';
import { singleSequenceCache } from '../../src/engine/generate.ts';
import { contextWith, copyBandwidth, perRep, randomW4, rnd } from './lib.ts';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
const shape = arg('--shape', 'llama3.2-1b'), outDir = arg('--out', 'bench/results'), steps = Number(arg('--steps', '128'));

const base = { normEps: 1e-5, ropeTheta: 500000, tiedEmbeddings: false, bos: 1, eos: [2], seqLen: 2048 };
const SHAPES: Record<string, LlamaConfig> = {
  'llama3.2-1b': { ...base, dim: 2048, hiddenDim: 8192, nLayers: 16, nHeads: 32, nKvHeads: 8, headDim: 64, vocabSize: 128256 },
  stories110m: { ...base, dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64, vocabSize: 32000 },
  tiny: { ...base, dim: 256, hiddenDim: 768, nLayers: 4, nHeads: 4, nKvHeads: 2, headDim: 64, vocabSize: 1024, seqLen: 512 }, // smoke test (SwiftShader)
};
const c = SHAPES[shape] ?? (() => { throw new Error(`--shape: one of ${Object.keys(SHAPES).join(', ')}`); })();

/** Random host weights: W4 linears (B = 128, one INT8 block) and classifier, f32 embedding and norms. */
function hostWeights(): { host: Map<string, HostWeight>; w4Bytes: number } {
  const host = new Map<string, HostWeight>();
  let bytes = 0;
  for (const name of weightNames(c)) {
    const s = weightShape(c, name);
    if (s.length === 2 && name !== 'tok_embed') {
      const w = randomW4(s[0], s[1]);
      host.set(name, { kind: 'w4', name, ...w });
      const b = w4Bytes(w.act, w.N);
      bytes += b.codes + b.scales;
    } else {
      const data = new Float32Array(s.reduce((a, d) => a * d, 1));
      if (s.length === 1) data.fill(1);
      else { // a random block tiled over the table (values do not matter for speed)
        const blk = Float32Array.from({ length: Math.min(data.length, 1 << 20) }, () => (rnd() * 2 - 1) * 0.05);
        for (let o = 0; o < data.length; o += blk.length) data.set(blk.subarray(0, Math.min(blk.length, data.length - o)), o);
      }
      host.set(name, { kind: 'f32', name, shape: s, data });
    }
  }
  return { host, w4Bytes: bytes };
}

interface DecodeResult {
  eagerMsPerToken: number; msPerToken: number; tokensPerS: number; tokens: number[]; dispatches?: number; profile?: StepProfile;
  /** the next `steps` replays chained as the engine chains greedy steps where the backend can (CapturedStep.replayChained,
   *  src/engine/graphs.ts: each step submitted before the one ahead of it is read back, its token fed on the device);
   *  where it cannot (CUDA), replayed plainly again; the same positions as the plain replays, from the same token:
   *  sameAsPlain counts the tokens equal to theirs */
  chained: { how: 'chained' | 'plain'; msPerToken: number; tokensPerS: number; sameAsPlain: string; hostMs?: Record<string, number> };
}
/** Where a WebGPU step's time goes: host ms per phase per replayed step (WebGPUBackend.profile), the eager step's
 *  recording (the model code enqueuing ops), one replay's GPU time as run and per kernel run apart, and the
 *  round trip of an empty submit and of a 4-byte readback (Dawn's callback delivery). */
interface StepProfile {
  replayWallMs: number; hostMs: Record<string, number>; eagerRecordMs: number;
  gpuStepMs: number; gpuKernelsMs: number; kernels: Array<{ name: string; n: number; ms: number }>;
  roundTrip: { submitDoneMs: number; mapReadMs: number };
}

/** Greedy batch-1 decode: prefill 16 tokens, 4 eager steps (timed), then `n` replays of the captured step. */
async function decode(be: Backend, host: Map<string, HostWeight>, n: number): Promise<DecodeResult> {
  const model = new Llama(be, c, host, 'kv4');
  const P = 16, { cache, blockTable } = singleSequenceCache(model, P + n + 64, 'kv4');
  const layout = (pos: number[]) => ({ pos: Int32Array.from(pos), seq: new Int32Array(pos.length), blockTables: [blockTable] });
  const argmax = async (logits: ReturnType<Llama['forward']>) => { const r = await be.argmax(logits); be.endStep(); return r[0]; };
  let tok = await argmax(model.forward(Int32Array.from({ length: P }, (_, i) => 1 + i * 7), layout([...Array(P).keys()]), cache, Int32Array.of(P - 1)));
  const tokens = [tok];
  let pos = P;
  const t0 = performance.now();
  let recordMs = 0;
  for (let i = 0; i < 4; i++, pos++) {
    const r0 = performance.now(), logits = model.forward(Int32Array.of(tok), layout([pos]), cache, Int32Array.of(0));
    recordMs += performance.now() - r0;
    tokens.push((tok = await argmax(logits)));
  }
  const eagerMsPerToken = (performance.now() - t0) / 4;
  const inputs = (t: number, p: number): StepInputs => ({ tokens: Int32Array.of(t), layout: layout([p]), rows: Int32Array.of(0) });
  const first = inputs(tok, pos);
  const g = be.captureStep!(() => model.forward(first.tokens, first.layout, cache, first.rows), first);
  const step = async (inp: StepInputs) => { const r = await g.replay(inp); be.endStep(); return r[0]; };
  for (let i = 0; i < 4; i++, pos++) tokens.push((tok = await step(inputs(tok, pos)))); // warm-up
  const t1 = performance.now();
  for (let i = 0; i < n; i++, pos++) tokens.push((tok = await step(inputs(tok, pos))));
  const ms = (performance.now() - t1) / n;
  // the same positions again from the same token (the same greedy tokens, the same KV rows rewritten), chained: one step
  // in flight ahead (DecodeGraphs.run does this for a greedy batch whose next position is in its pages)
  pos -= n;
  tok = tokens[tokens.length - n - 1];
  const again: number[] = [];
  const t3 = performance.now(), chain = g.replayChained?.bind(g);
  const chainHost: Record<string, number> | undefined = chain && be instanceof WebGPUBackend ? (be.profile = {}) : undefined;
  if (chain) {
    let pending = g.replay(inputs(tok, pos));
    for (let i = 0; i < n; i++, pos++) {
      const ahead = i + 1 < n ? chain(inputs(0, pos + 1)) : undefined;
      again.push((tok = (await pending)[0]));
      be.endStep();
      if (ahead) pending = ahead;
    }
  } else for (let i = 0; i < n; i++, pos++) again.push((tok = await step(inputs(tok, pos))));
  const msChained = (performance.now() - t3) / n;
  if (be instanceof WebGPUBackend) be.profile = undefined;
  if (chainHost) for (const k of Object.keys(chainHost)) chainHost[k] = +(chainHost[k] / n).toFixed(4);
  const sameAsPlain = again.filter((t, i) => t === tokens[tokens.length - n + i]).length;
  const chained = { how: chain ? 'chained' as const : 'plain' as const, msPerToken: msChained, tokensPerS: 1000 / msChained, sameAsPlain: `${sameAsPlain}/${n}`, ...(chainHost ? { hostMs: chainHost } : {}) };
  const dispatches = (g as { dispatches?: number }).dispatches; // WebGPU: compute dispatches per step
  let profile: StepProfile | undefined;
  if (be instanceof WebGPUBackend && g instanceof WebGPUStep) {
    // host phases over 32 more replays (not in the tokens/s above), then one replay's GPU time
    const N = 32, hostMs: Record<string, number> = (be.profile = {}), t2 = performance.now();
    for (let i = 0; i < N; i++, pos++) tokens.push((tok = await step(inputs(tok, pos))));
    const replayWallMs = (performance.now() - t2) / N;
    be.profile = undefined;
    for (const k of Object.keys(hostMs)) hostMs[k] /= N;
    hostMs.other = replayWallMs - Object.values(hostMs).reduce((a, b) => a + b, 0);
    const gp = await g.profileGpu();
    const by = new Map<string, { n: number; ms: number }>();
    for (const k of gp.kernels) { const e = by.get(k.name) ?? by.set(k.name, { n: 0, ms: 0 }).get(k.name)!; e.n++; e.ms += k.ms; }
    const kernels = [...by].map(([name, e]) => ({ name, ...e })).sort((a, b) => b.ms - a.ms);
    profile = { replayWallMs, hostMs, eagerRecordMs: recordMs / 4, gpuStepMs: gp.stepMs, gpuKernelsMs: gp.kernels.reduce((a, k) => a + k.ms, 0), kernels, roundTrip: await roundTrip(be) };
  }
  g.destroy();
  return { eagerMsPerToken, msPerToken: ms, tokensPerS: 1000 / ms, tokens, dispatches, profile, chained };
}

/** ms of an empty submit until onSubmittedWorkDone, and of a 4-byte copy until its mapAsync resolves (mean of 50) */
async function roundTrip(be: WebGPUBackend): Promise<{ submitDoneMs: number; mapReadMs: number }> {
  const dev = be.dev, a = dev.createBuffer({ size: 256, usage: GPUBufferUsage.COPY_SRC });
  const rd = dev.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const R = 50;
  let t = performance.now();
  for (let i = 0; i < R; i++) { dev.queue.submit([dev.createCommandEncoder().finish()]); await dev.queue.onSubmittedWorkDone(); }
  const submitDoneMs = (performance.now() - t) / R;
  t = performance.now();
  for (let i = 0; i < R; i++) {
    const enc = dev.createCommandEncoder();
    enc.copyBufferToBuffer(a, 0, rd, 0, 4);
    dev.queue.submit([enc.finish()]);
    await rd.mapAsync(GPUMapMode.READ, 0, 4);
    rd.unmap();
  }
  const mapReadMs = (performance.now() - t) / R;
  a.destroy(); rd.destroy();
  return { submitDoneMs, mapReadMs };
}

function printProfile(p: StepProfile) {
  const f = (x: number) => x.toFixed(3);
  console.log(`webgpu step profile: replay ${f(p.replayWallMs)} ms wall; host ${Object.entries(p.hostMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}; eager recording ${f(p.eagerRecordMs)} ms`);
  console.log(`  GPU: the step as run ${f(p.gpuStepMs)} ms; its kernels run apart sum to ${f(p.gpuKernelsMs)} ms; round trips: empty submit ${f(p.roundTrip.submitDoneMs)} ms, 4-byte readback ${f(p.roundTrip.mapReadMs)} ms`);
  for (const k of p.kernels) console.log(`  ${k.name.padEnd(22)} ${String(k.n).padStart(4)} x  ${f(k.ms)} ms  (${f((k.ms / k.n) * 1000)} us each)`);
}

async function main() {
  const date = new Date().toISOString();
  const kernels = arg('--kernels', '') as '' | 'serial' | 'workgroup';
  // --matvec-s11: the one-token matvec's shapes as before 2026-12-03 evening (16 lanes x 16 rows, 2 segments a lane
  // above K = 2048), for an A/B of the shape rule (pipes.ts matvecShape) in one call
  const legacy = args.includes('--matvec-s11') ? { matvec: {} } : {};
  const toggles = arg('--dawn-toggles', ''), opts = { ...(kernels ? { kernels } : {}), ...legacy };
  const wgpu = toggles ? new WebGPUBackend(await contextWith(toggles.split(',')), await loadShaderSources(), opts) : await createWebGPUBackend(opts);
  console.log(`WebGPU adapter: ${wgpu.adapterName}; dot4I8Packed ${wgpu.gpu.dot4}; ${shape}: dim ${c.dim}, ${c.nLayers} layers, hidden ${c.hiddenDim}, vocab ${c.vocabSize}`);
  const t0 = performance.now();
  const { host, w4Bytes: wb } = hostWeights();
  console.log(`random W4A4KV4 weights in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${(wb / 1e6).toFixed(1)} MB of W4 weights per token`);
  const results: Record<string, unknown> = { date, shape, config: c, adapter: wgpu.adapterName, w4MBPerToken: wb / 1e6, steps, ...(toggles ? { dawnToggles: toggles } : {}) };
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `webgpu-decode-${date.slice(0, 10)}-${shape}${kernels ? `-${kernels}` : ''}${toggles ? `-${toggles.replace(/,/g, '+')}` : ''}${legacy.matvec ? '-matvec-s11' : ''}.json`);
  const save = () => writeFileSync(file, JSON.stringify(results, null, 2)); // after each part: a timeout keeps what ran

  // ---- decode, WebGPU then CUDA, the same weights
  const web = await decode(wgpu, host, steps);
  console.log(`webgpu: ${web.tokensPerS.toFixed(1)} tok/s (${web.msPerToken.toFixed(2)} ms/token replayed, ${web.eagerMsPerToken.toFixed(2)} eager), ${web.dispatches} dispatches per step; ${web.chained.how} ${web.chained.tokensPerS.toFixed(1)} tok/s (tokens equal to the plain replays' at ${web.chained.sameAsPlain}; host ms a step ${JSON.stringify(web.chained.hostMs ?? {})})`);
  if (web.profile) printProfile(web.profile);
  results.webgpu = web;
  const other = arg('--same-as', '');
  if (other) { // the tokens both runs made (each makes as many as its --steps say)
    const o = (JSON.parse(readFileSync(other, 'utf8')) as { webgpu: { tokens: number[] } }).webgpu.tokens, L = Math.min(o.length, web.tokens.length);
    results.sameAs = { file: other, sameTokens: `${web.tokens.slice(0, L).filter((t, i) => t === o[i]).length}/${L}` };
    console.log(`greedy tokens equal to ${other}'s at ${(results.sameAs as { sameTokens: string }).sameTokens} positions`);
  }
  save();
  if (!args.includes('--no-cuda')) {
    try {
      const { createCudaBackend } = await import('../../backends/cuda/cuda.ts');
      const cuda = await createCudaBackend();
      const r = await decode(cuda, host, steps);
      console.log(`cuda: ${r.tokensPerS.toFixed(1)} tok/s (${r.msPerToken.toFixed(2)} ms/token replayed, ${r.eagerMsPerToken.toFixed(2)} eager); ${r.chained.how} again ${r.chained.tokensPerS.toFixed(1)} tok/s`);
      results.cuda = r;
      results.webgpuOverCuda = web.tokensPerS / r.tokensPerS;
      // the engine's greedy decode on each: WebGPU chained, CUDA plain (its replay reads back before returning)
      const best = (d: DecodeResult) => Math.max(d.tokensPerS, d.chained.tokensPerS);
      results.webgpuChainedOverCuda = web.chained.tokensPerS / best(r);
      console.log(`WebGPU chained / CUDA: ${(web.chained.tokensPerS / best(r)).toFixed(2)}x`);
      const L = Math.min(web.tokens.length, r.tokens.length), same = web.tokens.slice(0, L).filter((t, i) => t === r.tokens[i]).length;
      results.sameTokens = `${same}/${L}`;
      console.log(`WebGPU / CUDA: ${(web.tokensPerS / r.tokensPerS).toFixed(2)}x; greedy tokens equal at ${same} of ${L} positions`);
      cuda.dispose();
    } catch (e) {
      console.log(`cuda: not run (${(e as Error).message})`);
      results.cuda = { error: (e as Error).message };
    }
    save();
  }

  if (args.includes('--decode-only')) { wgpu.dispose(); console.log(`wrote ${file}`); return; }
  // ---- the roofline, and the matvec (M = 1) at this model's layer shapes, q/k/v and gate/up as one dispatch
  // (matmulMany), weights rotating over copies that exceed the L2 (H200: 50 MB)
  const copy = await copyBandwidth(wgpu, shape === 'tiny' ? 1 << 24 : 1 << 30);
  Object.assign(results, copy);
  const L2 = shape === 'tiny' ? 1 << 20 : 50 << 20;
  const kv = c.nKvHeads * c.headDim, q = c.nHeads * c.headDim;
  const mv: Array<Record<string, number | string>> = (results.matvec = []);
  for (const [name, Ns, K] of [['q+k+v', [q, kv, kv], c.dim], ['o', [c.dim], q], ['gate+up', [c.hiddenDim, c.hiddenDim], c.dim], ['down', [c.dim], c.hiddenDim], ['classifier', [c.vocabSize], c.dim]] as Array<[string, number[], number]>) {
    const one = Ns.map((N) => randomW4(N, K)), bytes = one.reduce((a, w) => a + w4Bytes(w.act, w.N).codes + w4Bytes(w.act, w.N).scales, 0);
    const copies = Math.max(2, Math.ceil((4 * L2) / bytes));
    const sets = Array.from({ length: copies }, (_, i) => (i === 0 ? one : Ns.map((N) => randomW4(N, K))).map((w, j) => wgpu.uploadWeight({ kind: 'w4', name: `${name}${j}`, ...w })));
    const x = wgpu.quantizeAct(wgpu.fromHost(Float32Array.from({ length: K }, () => rnd() * 2 - 1), [1, K]), one[0].act);
    await wgpu.read(x); wgpu.endStep();
    const ms = await perRep(wgpu, 4 * copies, (r) => wgpu.matmulMany(x, sets[r % copies])[0]);
    const gbs = bytes / (ms * 1e-3) / 1e9;
    mv.push({ shape: `${name} ${Ns.join('+')}x${K}`, us: +(ms * 1000).toFixed(2), GBs: +gbs.toFixed(0), ofCopy: +(gbs / copy.copyGBs).toFixed(3), ofReadRoofline: +(gbs / (copy.copyGBs / 2)).toFixed(3) });
    console.log(JSON.stringify(mv[mv.length - 1]));
    for (const s of sets) for (const w of s) (w as unknown as { buf: GPUBuffer }).buf.destroy();
    save();
  }
  wgpu.dispose();
  console.log(`wrote ${file}`);
}

await main();
process.exit(0);
