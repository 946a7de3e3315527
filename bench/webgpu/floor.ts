// What stops the WebGPU decode step (issue 21, item 4): the fixed cost of a dispatch and the streaming rate, apart.
//   npx tsx bench/webgpu/floor.ts [--out DIR] [--decode webgpu-decode-*.json] [--quick] [--variants]
// GPU time from timestamp queries at pass boundaries (a pass's start and end; nothing inside a pass), host time
// from submit to the timestamps' readback. Parts:
//   floor:   D = 1, 16, 64, 167 tiny dispatches (one workgroup of 64 invocations; and 132 of them, one an SM) in ONE compute pass,
//            each reading what the previous wrote (dependent: Dawn must put a barrier between them), or each on a
//            buffer of its own (independent), or each in a pass of its own (as profileGpu's kernels run apart).
//            µs per dispatch = the slope from D = 16 to 167.
//   stream:  a read kernel (what a matvec does: 16-byte loads, 4 in flight a lane) and the WGSL copy kernel at
//            0.25-256 MB, regions of one 512 MB buffer rotated so every dispatch streams from DRAM; a fit
//            time = floor + bytes / BW.
//   matvec:  the production W4Ax matvec (M = 1) at LLaMA-3.2-1B and LLaMA-3-8B shapes, µs, GB/s, of copy, of the
//            read kernel at the same bytes, and the same fit.
//   toggles: the tiny dependent floor and the 1B matvecs again on devices with Dawn's disable_robustness and
//            disable_workgroup_init (what the WGSL safety transforms cost; not usable in a browser).
//   model:   with --decode (decode.ts's JSON of the same call), the step's GPU time against dispatches × floor +
//            the matvecs as measured here.
// --variants: only the matvec, the production shape beside each of VARIANTS (lanes, rows, segments) at every shape.
// --quick (automatic on CPU adapters: SwiftShader) takes tiny sizes. Writes webgpu-floor-<date>.{json,md} to --out.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MatvecShape } from '../../backends/webgpu/pipes.ts';
import { createWebGPUBackend, WebGPUBackend } from '../../backends/webgpu/webgpu.ts';
import { w4Bytes } from '../../simulator/traits.ts';
import { contextWith, COPY_WGSL, copyBandwidth, perRep, randomW4, rnd } from './lib.ts';
import { floorMarkdown, type FloorResults, linearFit } from './floor-report.ts';

const args = process.argv.slice(2);
const arg = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const outDir = arg('--out') ?? 'bench/results', MB = 1 << 20;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** GPU µs from the first pass's start to the last pass's end (timestamp queries 0 and 1: `record` puts them on its
 *  passes) and host µs from submit to their readback; median of `reps` submits. */
async function span(dev: GPUDevice, reps: number, record: (enc: GPUCommandEncoder, qs: GPUQuerySet) => void): Promise<{ gpuUs: number; hostUs: number }> {
  const qs = dev.createQuerySet({ type: 'timestamp', count: 2 });
  const res = dev.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const rd = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const gpu: number[] = [], host: number[] = [];
  for (let i = 0; i <= reps; i++) { // the first is a warm-up
    const enc = dev.createCommandEncoder();
    record(enc, qs);
    enc.resolveQuerySet(qs, 0, 2, res, 0);
    enc.copyBufferToBuffer(res, 0, rd, 0, 16);
    dev.pushErrorScope('validation'); // an invalid command buffer would still resolve the map: time nothing silently
    const cb = enc.finish(), t0 = performance.now();
    dev.queue.submit([cb]);
    const e = await dev.popErrorScope();
    if (e) throw new Error(`floor.ts: ${e.message}`);
    await rd.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rd.getMappedRange().slice(0));
    rd.unmap();
    if (i) { host.push((performance.now() - t0) * 1000); gpu.push(Number(t[1] - t[0]) / 1000); }
  }
  qs.destroy(); res.destroy(); rd.destroy();
  return { gpuUs: median(gpu), hostUs: median(host) };
}
const ts = (qs: GPUQuerySet, first: boolean, last: boolean): GPUComputePassDescriptor =>
  ({ timestampWrites: { querySet: qs, ...(first ? { beginningOfPassWriteIndex: 0 } : {}), ...(last ? { endOfPassWriteIndex: 1 } : {}) } });

// every invocation adds 1 to its word: a dispatch reads what the previous one on the same buffer wrote
const BUMP = `@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) { d[g.x] = d[g.x] + 1u; }`;
// what a matvec does to its weights: 16-byte loads, 4 a lane issued together, coalesced (a workgroup reads 16 KB)
const READ = `@group(0) @binding(0) var<storage, read> s: array<vec4<u32>>; @group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let base = (w.x + w.y * 65535u) * 1024u + l; let n = arrayLength(&s); var a = vec4<u32>(0u);
  for (var k = 0u; k < 4u; k++) { let i = base + k * 256u; if (i < n) { a ^= s[i]; } }
  if (a.x == 0x9e3779b9u && a.y == 0x7f4a7c15u) { o[0] = a.z; } }`; // never true for our data; keeps the loads
const pipeOf = (dev: GPUDevice, code: string) => dev.createComputePipeline({ layout: 'auto', compute: { module: dev.createShaderModule({ code }), entryPoint: 'main' } });
const grid = (groups: number): [number, number] => [Math.min(groups, 65535), Math.ceil(groups / 65535)];

/** (a) dependent, (b) independent, (c) a pass each: D dispatches of `groups` workgroups of the bump kernel. */
async function floor(dev: GPUDevice, groups: number, Ds: number[], modes: string[], reps: number) {
  const pipe = pipeOf(dev, BUMP), maxD = Math.max(...Ds);
  const bufs = Array.from({ length: maxD }, () => dev.createBuffer({ size: groups * 256, usage: GPUBufferUsage.STORAGE }));
  const bgs = bufs.map((b) => dev.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: b } }] }));
  const rows: FloorResults['floor'] = [];
  for (const mode of modes)
    for (const D of Ds) {
      const r = await span(dev, reps, (enc, qs) => {
        let pass = enc.beginComputePass(ts(qs, true, mode !== 'pass each' || D === 1));
        pass.setPipeline(pipe);
        for (let i = 0; i < D; i++) {
          if (mode === 'pass each' && i > 0) { pass.end(); pass = enc.beginComputePass(i === D - 1 ? ts(qs, false, true) : undefined); pass.setPipeline(pipe); }
          pass.setBindGroup(0, bgs[mode === 'dependent' ? 0 : i]);
          pass.dispatchWorkgroups(groups);
        }
        pass.end();
      });
      rows.push({ groups, mode, D, ...r });
      console.log(`floor ${groups} workgroups, ${mode}, D = ${D}: GPU ${r.gpuUs.toFixed(1)} µs (${(r.gpuUs / D).toFixed(2)} a dispatch), host ${r.hostUs.toFixed(0)} µs`);
    }
  for (const b of bufs) b.destroy();
  return rows;
}

/** The read and copy kernels at each size: µs a dispatch, back to back in one pass over rotated regions. */
async function stream(dev: GPUDevice, sizes: number[], big: number, l2: number) {
  const a = dev.createBuffer({ size: big, usage: GPUBufferUsage.STORAGE }), b = dev.createBuffer({ size: big, usage: GPUBufferUsage.STORAGE });
  const o = dev.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
  const rows: FloorResults['stream'] = [];
  for (const [kernel, code] of [['read', READ], ['copy', COPY_WGSL]] as const) {
    const pipe = pipeOf(dev, code);
    for (const bytes of sizes) {
      const regions = Math.floor(big / bytes), reps = Math.min(1000, Math.max(20, Math.ceil((4 * l2) / bytes)));
      const bgs = Array.from({ length: Math.min(regions, reps) }, (_, r) => dev.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [
        { binding: 0, resource: { buffer: a, offset: r * bytes, size: bytes } },
        { binding: 1, resource: kernel === 'read' ? { buffer: o } : { buffer: b, offset: r * bytes, size: bytes } }] }));
      const [gx, gy] = grid(Math.ceil(bytes / 16 / (kernel === 'read' ? 1024 : 256)));
      const r = await span(dev, 3, (enc, qs) => {
        const pass = enc.beginComputePass(ts(qs, true, true));
        pass.setPipeline(pipe);
        for (let i = 0; i < reps; i++) { pass.setBindGroup(0, bgs[i % bgs.length]); pass.dispatchWorkgroups(gx, gy); }
        pass.end();
      });
      const us = r.gpuUs / reps, moved = kernel === 'read' ? bytes : 2 * bytes;
      rows.push({ kernel, bytes, us, GBs: moved / us / 1e3 });
      console.log(`${kernel} ${(bytes / MB).toFixed(2)} MB: ${us.toFixed(2)} µs, ${(moved / us / 1e3).toFixed(0)} GB/s`);
    }
  }
  a.destroy(); b.destroy(); o.destroy();
  return rows;
}

/** a matvec's weights: name, the rows of each part (one dispatch), K */
type Shape = [string, number[], number];
const S1B: Shape[] = [['1b q+k+v', [2048, 512, 512], 2048], ['1b o', [2048], 2048], ['1b gate+up', [8192, 8192], 2048],
  ['1b down', [2048], 8192], ['1b classifier', [128256], 2048]]; // LLaMA-3.2-1B
const S8B: Shape[] = [['8b qkv', [6144], 4096], ['8b o', [4096], 4096], ['8b gate+up', [28672], 4096], ['8b down', [4096], 14336]]; // LLaMA-3-8B
const hostData = new Map<string, { ws: ReturnType<typeof randomW4>[]; x: Float32Array }>(); // by shape: the toggles' runs reuse it
const mvName = (v: MatvecShape) => `${v.team}x${v.rows}x${v.segs}`;
/** --variants: the one-token matvec shapes swept beside the production one (gemm_w4ax.wgsl TEAM lanes a row x ROWS
 *  rows a workgroup x SPL segments a lane a chunk; team · rows <= 256) */
const VARIANTS: MatvecShape[] = ['16x16x1', '16x16x2', '16x8x1', '16x8x2', '16x4x1', '16x4x2', '16x2x1', '8x32x1', '8x16x1', '8x8x1', '32x8x1', '32x4x1']
  .map((t) => { const [team, rows, segs] = t.split('x').map(Number); return { team, rows, segs: segs as 1 | 2 }; });
type VariantRow = { shape: string; variant: string; us: number; GBs: number; sameBits: boolean };

/** The W4Ax matvec (M = 1) at each shape: µs a dispatch, back to back in one pass, weights rotating past the L2;
 *  with `variants`, each matvec shape again on the same weights (be.opts.matvec forced), its bits against the default's. */
async function matvec(be: WebGPUBackend, shapes: Shape[], l2: number, variants: MatvecShape[] = [], vrows: VariantRow[] = []) {
  const rows: FloorResults['matvec'] = [];
  const outs: Float32Array[] = [];
  for (const [name, Ns, K] of shapes) {
    const h = hostData.get(name) ?? hostData.set(name, { ws: Ns.map((N) => randomW4(N, K)), x: Float32Array.from({ length: K }, () => rnd() * 2 - 1) }).get(name)!;
    const one = h.ws, bytes = one.reduce((s, w) => s + w4Bytes(w.act, w.N).codes + w4Bytes(w.act, w.N).scales, 0);
    const copies = Math.max(2, Math.ceil((4 * l2) / bytes)); // the same bytes uploaded again: the L2 sees other addresses
    const sets = Array.from({ length: copies }, () => one.map((w, j) => be.uploadWeight({ kind: 'w4', name: `${name}${j}`, ...w })));
    const x = be.quantizeAct(be.fromHost(h.x, [1, K]), one[0].act);
    await be.read(x); be.endStep();
    // x's buffer went back to the step pool at endStep, as in decode.ts: an output of its size would take it (and
    // bind it read and write), so the shapes give outputs of other sizes; checked here
    const y = be.matmulMany(x, sets[0])[0], buf = (t: unknown) => (t as { buf: GPUBuffer }).buf;
    if (buf(y) === buf(x)) throw new Error(`matvec ${name}: the output took the input's buffer; pick another N`);
    outs.push(new Float32Array(await be.read(y))); be.endStep(); // the bits, for the toggles' check
    // passes of >= 20 ms (a first short one to size them): the GPU's clocks go up in a long pass, and the weights'
    // upload and host generation before it leave the GPU idle (the 8B shapes ran at 600 GB/s after them, s11)
    const reps = (us1: number) => Math.max(4 * copies, 20, Math.ceil(20000 / us1));
    const once = (r: number) => be.matmulMany(x, sets[r % copies])[0];
    const us = 1000 * (await perRep(be, reps(1000 * (await perRep(be, 4 * copies, once))), once));
    rows.push({ shape: `${name} ${Ns.join('+')}x${K}`, bytes, us, GBs: bytes / us / 1e3 });
    console.log(`matvec ${name} ${Ns.join('+')}x${K} (${(bytes / MB).toFixed(1)} MB): ${us.toFixed(2)} µs, ${(bytes / us / 1e3).toFixed(0)} GB/s`);
    const forced = be.opts.matvec;
    for (const v of variants) {
      be.opts.matvec = v;
      const yv = be.matmulMany(x, sets[0])[0], o = new Float32Array(await be.read(yv)); be.endStep();
      const sameBits = o.every((a, j) => Object.is(a, outs[outs.length - 1][j]));
      const vus = 1000 * (await perRep(be, reps(us), once));
      vrows.push({ shape: `${name} ${Ns.join('+')}x${K}`, variant: mvName(v), us: vus, GBs: bytes / vus / 1e3, sameBits });
      console.log(`  variant ${mvName(v)}: ${vus.toFixed(2)} µs (${(us / vus).toFixed(2)}x), ${(bytes / vus / 1e3).toFixed(0)} GB/s, bits ${sameBits ? 'same' : 'DIFFER'}`);
    }
    be.opts.matvec = forced;
    for (const s of sets) for (const w of s) (w as unknown as { buf: GPUBuffer }).buf.destroy();
  }
  return { rows, outs };
}

/** --variants: the production matvec and each shape of VARIANTS at every shape, nothing else; a table of µs to
 *  webgpu-matvec-variants-<date>.md (the fastest with the same bits in bold). */
async function sweep(be: WebGPUBackend, quick: boolean, L2: number, date: string) {
  const shapes: Shape[] = quick ? [['tiny a', [256], 512], ['tiny b', [40, 24], 2304]] : [...S1B, ...S8B];
  const vrows: VariantRow[] = [], base = await matvec(be, shapes, L2, VARIANTS, vrows);
  const L = [`# W4Ax matvec shapes (${date}, ${be.adapterName})`, '', 'µs a dispatch (floor.ts --variants: back to back in one pass, weights rotated past the L2); variant = lanes a row x rows a workgroup x segments a lane; bold: the fastest with the default\'s bits.', '',
    `| shape | MB | default | ${VARIANTS.map(mvName).join(' | ')} |`, `| --- | --- | --- | ${VARIANTS.map(() => '---').join(' | ')} |`];
  for (const m of base.rows) {
    const vs = vrows.filter((v) => v.shape === m.shape), best = Math.min(m.us, ...vs.filter((v) => v.sameBits).map((v) => v.us));
    const cell = (us: number, same = true) => `${us === best ? '**' : ''}${us.toFixed(2)}${us === best ? '**' : ''}${same ? '' : ' (bits differ)'}`;
    L.push(`| ${m.shape} | ${(m.bytes / 1e6).toFixed(1)} | ${cell(m.us)} | ${vs.map((v) => cell(v.us, v.sameBits)).join(' | ')} |`);
  }
  const file = join(outDir, `webgpu-matvec-variants-${date.slice(0, 10)}${quick ? '-quick' : ''}`);
  writeFileSync(`${file}.json`, JSON.stringify({ date, adapter: be.adapterName, rows: base.rows, variants: vrows }, null, 2));
  writeFileSync(`${file}.md`, L.join('\n') + '\n');
  console.log(L.join('\n'));
  if (vrows.some((v) => !v.sameBits)) { console.log('variants: some bits differ'); process.exitCode = 1; }
}

async function main() {
  const be = await createWebGPUBackend({ gemm: 'matvec' }); // the GPU adapters' decode kernel (CPU adapters pick rowwise)
  const quick = args.includes('--quick') || be.cpu, dev = be.dev, date = new Date().toISOString();
  console.log(`WebGPU adapter: ${be.adapterName}${quick ? ' (quick: tiny sizes)' : ''}`);
  const r: FloorResults = { date, adapter: be.adapterName, quick, floor: [], stream: [], matvec: [], toggles: [] };
  const file = join(outDir, `webgpu-floor-${date.slice(0, 10)}${quick ? '-quick' : ''}`);
  mkdirSync(outDir, { recursive: true });
  const save = () => { writeFileSync(`${file}.json`, JSON.stringify(r, null, 2)); writeFileSync(`${file}.md`, floorMarkdown(r)); };
  const Ds = [1, 16, 64, 167], L2 = quick ? MB / 4 : 50 * MB;
  if (args.includes('--variants')) { await sweep(be, quick, L2, date); be.dispose(); return; }

  r.floor = await floor(dev, 1, Ds, ['dependent', 'independent', 'pass each'], quick ? 3 : 20);
  r.floor.push(...await floor(dev, 132, Ds, ['dependent', 'independent'], quick ? 2 : 20));
  save();
  Object.assign(r, await copyBandwidth(be, quick ? 16 * MB : 1 << 30));
  const sizes = quick ? [MB / 16, MB / 4] : [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256].map((m) => m * MB);
  r.stream = await stream(dev, sizes, quick ? MB : 512 * MB, L2);
  save();
  const s1b: Shape[] = quick ? [['tiny a', [256], 512]] : S1B;
  const s8b: Shape[] = quick ? [['tiny b', [512], 1024]] : [['1b k/v', [512], 2048], ...S8B]; // k/v: a small point for the fit
  const base = await matvec(be, [...s1b, ...s8b], L2);
  r.matvec = base.rows;
  save();
  // a second device without toggles first: the control for what a device of its own changes
  for (const toggle of ['', 'disable_robustness', 'disable_workgroup_init']) {
    const ctx = await contextWith(toggle ? [toggle] : []), tb = new WebGPUBackend(ctx, be.src, { gemm: 'matvec' });
    const fl = await floor(ctx.device, 1, [16, 167], ['dependent'], quick ? 3 : 20);
    const mv = await matvec(tb, s1b, L2);
    const same = mv.outs.every((o, i) => o.every((v, j) => Object.is(v, base.outs[i][j])));
    r.toggles.push({ toggle: toggle || 'none (a second device)', floorUs: (fl[1].gpuUs - fl[0].gpuUs) / 151, matvec: mv.rows, sameBits: same });
    tb.dispose(); ctx.device.destroy();
    save();
  }
  const dec = arg('--decode');
  if (dec) { const j = JSON.parse(readFileSync(dec, 'utf8')), { tokens: _, ...web } = j.webgpu; r.decode = { ...web, cudaTokensPerS: j.cuda?.tokensPerS }; }
  r.fits = { read: linearFit(r.stream.filter((s) => s.kernel === 'read').map((s) => [s.bytes, s.us])), copy: linearFit(r.stream.filter((s) => s.kernel === 'copy').map((s) => [2 * s.bytes, s.us])),
    matvec: linearFit(r.matvec.map((m) => [m.bytes, m.us])) };
  save();
  console.log(floorMarkdown(r));
  console.log(`wrote ${file}.json and .md`);
  be.dispose();
}

await main();
process.exit(0);
