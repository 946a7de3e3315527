// WebGPU benchmark (Dawn in Node): copy bandwidth (the roofline), W4Ax matvec GB/s at LLaMA-3-8B layer
// shapes, the tiled prefill GEMM, and decode tokens/s of a stories110M-shaped W4A4KV4 model (random
// weights, FMPQ-quantized with the simulator's quantizeW4).
//   npx tsx bench/webgpu/bench.ts [--out DIR] [--quick]
// Timing: everything of one measurement is recorded first, then one submit is timed from flush to the end of
// the read-back (host time, so it holds the submit latency: reps are chosen for >= ~20 ms of GPU work).
// Weights rotate over copies that together exceed the L2 cache, so every matvec streams from HBM.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createWebGPUBackend, WebGPUBackend } from '../../backends/webgpu/webgpu.ts';
import type { Weight } from '../../backends/backend.ts';
import { actSpec } from '../../simulator/act.ts';
import { quantizeW4 } from '../../simulator/w4.ts';
import { w4Bytes } from '../../simulator/traits.ts';
import { Llama } from '../../src/model/llama.ts';
import { weightNames, weightShape, type LlamaConfig } from '../../src/model/config.ts';
import type { HostWeight } from '../../backends/backend.ts';
import { generate } from '../../src/engine/generate.ts';
import { copyBandwidth, perRep, randomW4, rnd, timeIt } from './lib.ts';

const args = process.argv.slice(2);
const outDir = args.includes('--out') ? args[args.indexOf('--out') + 1] : 'bench/results';
const quick = args.includes('--quick');

async function main() {
  const be = await createWebGPUBackend();
  const device = be.adapterName;
  console.log(`adapter: ${device}, dot4I8Packed: ${be.gpu.dot4}`);
  const results: Record<string, unknown> = { date: new Date().toISOString(), adapter: device, dot4: be.gpu.dot4 };

  // ---- copy bandwidth (read + write bytes per second), 1 GiB buffers
  Object.assign(results, await copyBandwidth(be, quick ? 1 << 26 : 1 << 30));
  const copy = results.copyGBs as number;

  // ---- W4Ax matvec at LLaMA-3-8B layer shapes (M = 1 decode token; also M = 4, 8), each kernel
  const shapes: Array<[string, number, number]> = [['q/o 4096x4096', 4096, 4096], ['k/v 1024x4096', 1024, 4096], ['gate/up 14336x4096', 14336, 4096], ['down 4096x14336', 4096, 14336]];
  const L2 = quick ? 1 << 20 : 50 << 20;
  const rows: Array<Record<string, unknown>> = [];
  for (const [name, N, K] of quick ? [['smoke 512x1024', 512, 1024] as [string, number, number]] : shapes) {
    const w0 = randomW4(N, K), wb = w4Bytes(w0.act, N), wbytes = wb.codes + wb.scales;
    const copies = Math.max(2, Math.ceil((4 * L2) / wbytes));
    const ws: Weight[] = [be.uploadWeight({ kind: 'w4', name, ...w0 })];
    for (let i = 1; i < copies; i++) ws.push(be.uploadWeight({ kind: 'w4', name, ...randomW4(N, K) }));
    for (const M of [1, 4]) {
      const x = be.fromHost(Float32Array.from({ length: M * K }, () => rnd() * 2 - 1), [M, K]);
      const q = be.quantizeAct(x, w0.act);
      await be.read(q); be.endStep();
      // matvec variants (segments per lane per chunk: 2048- or 4096-channel chunks; the first is the default), rowwise;
      // tiled is the prefill kernel (32-token tiles), far off at these M
      const variants: Array<[string, ConstructorParameters<typeof WebGPUBackend>[2]]> = M === 1
        ? [['matvec (default)', { gemm: 'matvec' }], ['matvec 1 segment per lane', { gemm: 'matvec', matvec: { segs: 1 } }],
          ['matvec 2 segments per lane', { gemm: 'matvec', matvec: { segs: 2 } }], ['rowwise', { gemm: 'rowwise' }]]
        : [['matvec (4 tokens)', { gemm: 'matvec' }]];
      for (const [kern, o] of variants) {
        const kb = new WebGPUBackend(be.gpu, be.src, o);
        const reps = quick ? copies : Math.max(copies, Math.ceil((0.01 * copy * 1e9) / wbytes / copies) * copies);
        await timeIt(kb, () => kb.matmul(q, ws[0])); // warm-up (pipeline)
        const us = 1000 * (await perRep(kb, reps, (r) => kb.matmul(q, ws[r % copies]))), gbs = wbytes / (us * 1e-6) / 1e9;
        const row = { shape: name, N, K, M, kernel: kern, us: +us.toFixed(2), GBs: +gbs.toFixed(0), ofCopy: +(gbs / copy).toFixed(3) };
        console.log(JSON.stringify(row));
        rows.push(row);
        kb.dispose();
      }
    }
  }
  results.matvec = rows;

  // ---- prefill: tiled W4Ax GEMM, M = 512 tokens, gate/up shape (INT ops = 2·M·N·K)
  {
    const N = quick ? 512 : 14336, K = quick ? 512 : 4096, M = quick ? 64 : 512, w0 = randomW4(N, K);
    const w = be.uploadWeight({ kind: 'w4', name: 'up', ...w0 });
    const q = be.quantizeAct(be.fromHost(Float32Array.from({ length: M * K }, () => rnd() * 2 - 1), [M, K]), w0.act);
    await be.read(q); be.endStep();
    await timeIt(be, () => be.matmul(q, w));
    const ms = await perRep(be, 5, () => be.matmul(q, w));
    const tops = (2 * M * N * K) / (ms * 1e-3) / 1e12;
    console.log(`prefill tiled M=${M} ${N}x${K}: ${ms.toFixed(3)} ms, ${tops.toFixed(1)} TOPS`);
    results.prefill = { M, N, K, ms, TOPS: tops };
  }

  // ---- decode tokens/s, stories110M shape, W4A4KV4, untied W4 classifier, random weights
  {
    const c: LlamaConfig = { dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKvHeads: 12, headDim: 64, vocabSize: 32000, seqLen: 1024,
      normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, bos: 1, eos: [2] };
    const host = new Map<string, HostWeight>();
    let wBytes = 0;
    const t0 = performance.now();
    for (const name of weightNames(c)) {
      const shape = weightShape(c, name), n = shape.reduce((a, d) => a * d, 1);
      const data = Float32Array.from({ length: n }, () => (shape.length === 1 ? 1 : 0) + (rnd() * 2 - 1) * 0.05);
      if (shape.length === 2 && name !== 'tok_embed') {
        const w = quantizeW4(data, shape[0], actSpec(shape[1], 128, 128), { clipSearch: false });
        host.set(name, { kind: 'w4', name, ...w });
        const b = w4Bytes(w.act, w.N); wBytes += b.codes + b.scales;
      } else host.set(name, { kind: 'f32', name, shape, data });
    }
    console.log(`stories110M-shaped model quantized in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${(wBytes / 1e6).toFixed(1)} MB of W4 weights per token`);
    const model = new Llama(be, c, host, 'kv4');
    const prompt = Array.from({ length: 16 }, (_, i) => 1 + i * 7);
    const n = quick ? 16 : 128;
    const run = async () => {
      const times: number[] = [];
      let last = performance.now();
      for await (const _ of generate(model, prompt, { maxTokens: n, temperature: 0, topP: 0, topK: 0, seed: 0, stop: [] })) { const now = performance.now(); times.push(now - last); last = now; }
      return times;
    };
    await run();
    const times = (await run()).slice(1); // decode steps (the first includes the prefill)
    // the same steps without a read-back per token (one submit per step, one read at the end): GPU-bound rate
    const { singleSequenceCache } = await import('../../src/engine/generate.ts');
    const steps = async (nSteps: number) => {
      const { cache, blockTable } = singleSequenceCache(model, nSteps + 1, 'kv4');
      const t0 = performance.now();
      let out;
      for (let pos = 0; pos < nSteps; pos++) {
        out = model.forward(Int32Array.of(1 + (pos % 100)), { pos: Int32Array.of(pos), seq: Int32Array.of(0), blockTables: [blockTable] }, cache, Int32Array.of(0));
        if (pos < nSteps - 1) be.endStep();
      }
      await be.read(out!); be.endStep();
      return performance.now() - t0;
    };
    await steps(8);
    const pipelinedMs = ((await steps(2 * n)) - (await steps(n))) / n;
    const x = be.fromHost(new Float32Array(4), [4]);
    let rtt = Infinity;
    for (let i = 0; i < 20; i++) { const t0 = performance.now(); await be.read(be.add(x, x)); be.endStep(); rtt = Math.min(rtt, performance.now() - t0); }
    console.log(`decode without per-token read-back: ${(1000 / pipelinedMs).toFixed(0)} tokens/s (${pipelinedMs.toFixed(2)} ms/token); one tiny op + read-back round trip: ${rtt.toFixed(2)} ms`);
    const ms = times.reduce((a, b) => a + b, 0) / times.length;
    const tps = 1000 / ms, roof = (copy * 1e9) / 2 / wBytes; // copy GB/s counts read + write: read roofline = copy/2
    console.log(`decode: ${tps.toFixed(0)} tokens/s (${ms.toFixed(2)} ms/token), W4 weights ${(wBytes / 1e6).toFixed(1)} MB -> ${(wBytes / (ms * 1e-3) / 1e9).toFixed(0)} GB/s; HBM roofline ~${roof.toFixed(0)} tokens/s`);
    results.decode = { config: 'stories110M-shaped (dim 768, 12 layers, 12 heads, hidden 2048, vocab 32000), W4A4KV4, B=128, K8=128, untied W4 classifier', tokens: times.length, msPerToken: ms, tokensPerS: tps, pipelinedMsPerToken: pipelinedMs, pipelinedTokensPerS: 1000 / pipelinedMs, readRoundTripMs: rtt, weightMB: wBytes / 1e6, rooflineTokensPerS: roof };
  }

  const tag = device.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40);
  const date = new Date().toISOString().slice(0, 10);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `webgpu-${date}-${tag}.json`), JSON.stringify(results, null, 2));
  const mv = rows.map((r) => `| ${r.shape} | ${r.M} | ${r.kernel} | ${r.us} | ${r.GBs} | ${(100 * (r.ofCopy as number)).toFixed(0)}% |`).join('\n');
  const dcd = results.decode as Record<string, number>, pf = results.prefill as Record<string, number>;
  writeFileSync(join(outDir, `webgpu-${date}-${tag}.md`), `# WebGPU (Dawn in Node) on ${device}, ${results.date}

\`npx tsx bench/webgpu/bench.ts\` (raw numbers: the .json beside this file). dot4I8Packed: ${be.gpu.dot4}.

Copy bandwidth (read + write): copyBufferToBuffer ${(results.copyBufferToBufferGBs as number).toFixed(0)} GB/s, WGSL copy kernel ${(results.copyKernelGBs as number).toFixed(0)} GB/s; the roofline below is the larger, ${copy.toFixed(0)} GB/s.

## W4Ax GEMM, LLaMA-3-8B layer shapes (N x K, B = 128, one INT8 block), weights streamed from HBM
GB/s = weight bytes (codes + scales) / time; % of the copy bandwidth.

| shape | M | kernel | us | GB/s | of copy |
| --- | --- | --- | --- | --- | --- |
${mv}

Prefill (tiled kernel, M = ${pf.M}, ${pf.N}x${pf.K}): ${pf.ms.toFixed(3)} ms, ${pf.TOPS.toFixed(1)} TOPS (dot4I8Packed on CUDA cores; WGSL has no tensor cores).

## Decode, ${(results.decode as Record<string, string>).config}
- greedy generate() (read-back of the logits every token): ${dcd.tokensPerS.toFixed(0)} tokens/s (${dcd.msPerToken.toFixed(2)} ms/token)
- the same steps without a per-token read-back (one submit per step): ${dcd.pipelinedTokensPerS.toFixed(0)} tokens/s (${dcd.pipelinedMsPerToken.toFixed(2)} ms/token)
- one tiny op + read-back round trip: ${dcd.readRoundTripMs.toFixed(2)} ms
- W4 weights per token ${dcd.weightMB.toFixed(1)} MB: HBM roofline ~${dcd.rooflineTokensPerS.toFixed(0)} tokens/s
`);
  console.log(`wrote ${join(outDir, `webgpu-${date}-${tag}.json`)} and .md`);
  be.dispose();
}

await main();
process.exit(0);
