// The report of bench/webgpu/decode.ts: a markdown table and an SVG bar plot beside its JSON.
//   npx tsx bench/webgpu/report.ts bench/results/webgpu-decode-2026-12-02-llama3.2-1b.json [--device "NVIDIA H200"] [--command "..."]
import { readFileSync, writeFileSync } from 'node:fs';
import { renderSvg } from '../../src/cli/plot.ts';

const args = process.argv.slice(2), file = args[0];
const opt = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
if (!file?.endsWith('.json')) throw new Error('usage: report.ts RESULT.json [--device NAME] [--command CMD]');
interface Profile {
  replayWallMs: number; hostMs: Record<string, number>; eagerRecordMs: number; gpuStepMs: number; gpuKernelsMs: number;
  kernels: Array<{ name: string; n: number; ms: number }>; roundTrip: { submitDoneMs: number; mapReadMs: number };
}
interface Decode {
  tokensPerS: number; msPerToken: number; eagerMsPerToken: number; dispatches?: number; profile?: Profile;
  chained?: { how: 'chained' | 'plain'; msPerToken: number; tokensPerS: number; sameAsPlain?: string };
}
const r = JSON.parse(readFileSync(file, 'utf8')) as {
  date: string; shape: string; adapter: string; w4MBPerToken: number; steps: number; config: Record<string, unknown>;
  webgpu?: Decode; cuda?: Decode & { error?: string }; webgpuOverCuda?: number; webgpuChainedOverCuda?: number; sameTokens?: string;
  copyBufferToBufferGBs?: number; copyKernelGBs?: number; copyGBs?: number;
  matvec?: Array<{ shape: string; us: number; GBs: number; ofCopy: number; ofReadRoofline: number }>;
};
const f = (x: number | undefined, d = 1) => (x === undefined ? '–' : x.toFixed(d));
const rows: string[] = [];
for (const [name, d] of [['WebGPU (Dawn, Vulkan)', r.webgpu], ['CUDA backend', r.cuda]] as Array<[string, Decode & { error?: string } | undefined]>)
  rows.push(d && !d.error
    ? `| ${name} | ${f(d.tokensPerS)} | ${d.chained ? `${f(d.chained.tokensPerS)} (${d.chained.how}${d.chained.sameAsPlain ? `; tokens ${d.chained.sameAsPlain} as plain` : ''})` : '–'} | ${f(d.msPerToken, 2)} | ${f(d.eagerMsPerToken, 2)} | ${d.dispatches ?? '–'} |`
    : `| ${name} | not run${d?.error ? ` (${d.error})` : ''} | | | | |`);
const p = r.webgpu?.profile, f3 = (x: number) => x.toFixed(3);
const HOST: Record<string, string> = {
  remake: 'the replay\'s inputs (token, positions, block tables, RoPE rows) rewritten in the upload arena',
  upload: 'the upload arena written (queue.writeBuffer)', encode: 'command encoding on the critical path',
  submit: 'queue.submit (Dawn records the Vulkan commands here)', 'encode next': 'the next replay encoded while the GPU runs this one',
  wait: 'mapAsync of the sampled id until its promise resolves', read: 'the mapped bytes copied out, unmap', other: 'the rest of the step (JS)',
};
const prof = p ? `
## Where a WebGPU step's time goes (profiled replays after the timed ones)
Host ms per replayed step, mean of 32 replays (\`WebGPUBackend.profile\`); wall ${f3(p.replayWallMs)} ms a step:

| phase | ms | what |
| --- | --- | --- |
${Object.entries(p.hostMs).map(([k, v]) => `| ${k} | ${f3(v)} | ${HOST[k] ?? ''} |`).join('\n')}

GPU (timestamp queries, \`WebGPUStep.profileGpu\`): one replay as it runs, first pass start to last pass end, ${f3(p.gpuStepMs)} ms; its
${r.webgpu?.dispatches ?? '?'} dispatches each run in a compute pass of its own (so each with its own launch and drain) sum to ${f3(p.gpuKernelsMs)} ms.
Round trips: an empty submit until onSubmittedWorkDone ${f3(p.roundTrip.submitDoneMs)} ms, a 4-byte copy until its mapAsync resolves
${f3(p.roundTrip.mapReadMs)} ms (Dawn's callback delivery in Node is not what costs). An eager step's model code records its ops in
${f3(p.eagerRecordMs)} ms (a replay skips it).

| kernel | dispatches | ms (run apart) | µs each |
| --- | --- | --- | --- |
${p.kernels.map((k) => `| ${k.name} | ${k.n} | ${f3(k.ms)} | ${((k.ms / k.n) * 1000).toFixed(1)} |`).join('\n')}
` : '';
const mv = (r.matvec ?? []).map((m) => `| ${m.shape} | ${m.us} | ${m.GBs} | ${(100 * m.ofCopy).toFixed(0)}% | ${(100 * m.ofReadRoofline).toFixed(0)}% |`);
const md = `# WebGPU decode beside CUDA, ${r.shape} shape, W4A4KV4, batch 1 (${r.date.slice(0, 10)}${opt('--device') ? `, ${opt('--device')}` : ''})

Command: \`${opt('--command') ?? `npx tsx bench/webgpu/decode.ts --shape ${r.shape}`}\`; raw numbers in the .json beside this file.
WebGPU adapter: ${r.adapter}. Random W4A4KV4 weights (B = 128, one INT8 block per linear, untied W4 classifier),
${f(r.w4MBPerToken)} MB of W4 weights per token. Both backends run the same host weights in one process, greedy,
prefill 16 tokens, then ${r.steps} steps replayed from one captured step (CUDA graph / recorded WebGPU command list),
each reading back only the sampled id, then the same ${r.steps} positions again from the same token, chained where the backend can (the engine's greedy decode,
src/engine/graphs.ts: each step submitted before the one ahead of it is read back, its token fed on the device; CUDA's
replay reads back before it returns, so it replays them plainly again).

| backend | tokens/s (plain replays) | tokens/s (again) | ms/token (plain) | ms/token (eager) | dispatches per step |
| --- | --- | --- | --- | --- | --- |
${rows.join('\n')}

WebGPU / CUDA: **${f(r.webgpuOverCuda, 2)}×** plain${r.webgpuChainedOverCuda !== undefined ? `, **${f(r.webgpuChainedOverCuda, 2)}×** chained (against CUDA's faster run)` : ''}${r.sameTokens ? `; greedy tokens equal at ${r.sameTokens} positions (the WebGPU attention and quantizers are tier 2-3, DESIGN §3.7)` : ''}.

## W4Ax matvec (M = 1) at this model's layer shapes, against the WGSL copy bandwidth
Copy bandwidth (read + write): copyBufferToBuffer ${f(r.copyBufferToBufferGBs, 0)} GB/s, WGSL copy kernel ${f(r.copyKernelGBs, 0)} GB/s;
the roofline is the larger (${f(r.copyGBs, 0)} GB/s); a matvec only reads, so its own roofline is half of that.
GPU time from compute-pass timestamps; weights rotate over copies that exceed the L2.

| shape (N x K) | µs | GB/s | of copy | of the read roofline (copy / 2) |
| --- | --- | --- | --- | --- |
${mv.join('\n')}
${prof}`;
writeFileSync(file.replace(/\.json$/, '.md'), md);
const data = [
  ...(r.webgpu ? [{ what: 'decode tokens/s', backend: 'WebGPU', v: r.webgpu.tokensPerS }] : []),
  ...(r.webgpu?.chained?.how === 'chained' ? [{ what: 'decode tokens/s', backend: 'WebGPU chained', v: r.webgpu.chained.tokensPerS }] : []),
  ...(r.cuda && !r.cuda.error ? [{ what: 'decode tokens/s', backend: 'CUDA', v: r.cuda.tokensPerS }] : []),
];
const svg = await renderSvg({
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title: `${r.shape} W4A4KV4 decode, batch 1: WebGPU vs CUDA, same GPU, same run`,
  width: 360, height: 220, data: { values: data },
  mark: 'bar',
  encoding: { x: { field: 'backend', type: 'nominal', title: null }, y: { field: 'v', type: 'quantitative', title: 'tokens/s' }, color: { field: 'backend', type: 'nominal', legend: null } },
});
writeFileSync(file.replace(/\.json$/, '.svg'), svg);
console.log(`wrote ${file.replace(/\.json$/, '.md')} and .svg`);
