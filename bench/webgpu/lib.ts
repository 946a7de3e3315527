// Shared by the WebGPU benchmarks (bench.ts: kernels at LLaMA-3-8B shapes; decode.ts: decode beside CUDA):
// random W4 weights, GPU-timestamp timing of repeated dispatches, and the copy bandwidth roofline.
import { openGpu, type GpuContext } from '../../backends/webgpu/device.ts';
import type { WebGPUBackend } from '../../backends/webgpu/webgpu.ts';
import { actSpec } from '../../simulator/act.ts';
import { w4Bytes } from '../../simulator/traits.ts';
import type { W4Weight } from '../../simulator/formats.ts';

let seed = 12345;
export const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);

/** random W4 codes (every byte is a valid pair of int4) and scales ~ U[0.5, 1.5)·2^-6 as f16 bits */
export function randomW4(N: number, K: number, B = 128, K8 = 128): W4Weight {
  const spec = actSpec(K, B, K8), { codes, scales } = w4Bytes(spec, N);
  const c = new Uint8Array(codes);
  for (let i = 0; i < codes; i += 4) { const r = (rnd() * 4294967296) >>> 0; c[i] = r; c[i + 1] = r >>> 8; c[i + 2] = r >>> 16; c[i + 3] = r >>> 24; }
  const s = new Uint16Array(scales / 2);
  for (let i = 0; i < s.length; i++) s[i] = 0x2000 + Math.floor(rnd() * 0x400); // 2^-7 .. 2^-6
  return { N, codes: c, scales: s, act: spec };
}

export async function timeIt(be: WebGPUBackend, record: () => unknown): Promise<number> {
  const out = record(); // recorded, not submitted
  const t0 = performance.now();
  await be.read(out as never);
  const ms = performance.now() - t0;
  be.endStep();
  return ms;
}

/** GPU ms per repetition: `reps` dispatches recorded into one compute pass, timed by the pass's GPU
 *  timestamps (timestamp-query); best of 3. */
export async function perRep(be: WebGPUBackend, reps: number, one: (r: number) => unknown): Promise<number> {
  const dev = be.dev;
  if (!dev.features.has('timestamp-query')) throw new Error('bench: the device has no timestamp-query');
  const qs = dev.createQuerySet({ type: 'timestamp', count: 2 });
  const res = dev.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const rd = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    be.endStep(); // no pass open: the next dispatch starts the timed pass
    be.timeNextPass({ querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 });
    let y;
    for (let r = 0; r < reps; r++) y = one(r);
    await be.read(y as never);
    be.endStep();
    const enc = dev.createCommandEncoder();
    enc.resolveQuerySet(qs, 0, 2, res, 0);
    enc.copyBufferToBuffer(res, 0, rd, 0, 16);
    dev.queue.submit([enc.finish()]);
    await rd.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rd.getMappedRange().slice(0));
    rd.unmap();
    best = Math.min(best, Number(t[1] - t[0]) / 1e6 / reps);
  }
  qs.destroy(); res.destroy(); rd.destroy();
  return best;
}


/** The WGSL copy kernel: one 16-byte word an invocation, workgroups of 256 on a 2D grid (x up to 65535). */
export const COPY_WGSL = `@group(0) @binding(0) var<storage, read> s: array<vec4<u32>>; @group(0) @binding(1) var<storage, read_write> d: array<vec4<u32>>;
    @compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) { let i = g.x + g.y * 65535u * 256u; if (i < arrayLength(&d)) { d[i] = s[i]; } }`;

/** Copy bandwidth (read + write bytes per second) of `bytes`-sized buffers: copyBufferToBuffer, and a WGSL
 *  copy kernel (16-byte words) timed by the slope over 10 and 20 copies. The roofline is the larger. */
export async function copyBandwidth(be: WebGPUBackend, bytes: number): Promise<{ copyBufferToBufferGBs: number; copyKernelGBs: number; copyGBs: number }> {
  const results = {} as { copyBufferToBufferGBs: number; copyKernelGBs: number; copyGBs: number };
  const dev = be.dev;
  const a = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  const b = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | GPUBufferUsage.STORAGE });
  let best = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    const enc = dev.createCommandEncoder();
    for (let i = 0; i < 10; i++) enc.copyBufferToBuffer(i % 2 ? b : a, 0, i % 2 ? a : b, 0, bytes);
    const t0 = performance.now();
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
    best = Math.min(best, (performance.now() - t0) / 10);
  }
  const gbs = (2 * bytes) / (best * 1e-3) / 1e9;
  console.log(`copyBufferToBuffer: ${gbs.toFixed(0)} GB/s (read+write, ${bytes >> 20} MiB buffers)`);
  results.copyBufferToBufferGBs = gbs;
  // a WGSL copy kernel (16-byte words, one per invocation), timed by the slope over 10 and 20 copies
  const pipe = dev.createComputePipeline({ layout: 'auto', compute: { module: dev.createShaderModule({ code: COPY_WGSL }), entryPoint: 'main' } });
  const bgs = [[a, b], [b, a]].map(([x, y]) => dev.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: x } }, { binding: 1, resource: { buffer: y } }] }));
  const groups = bytes / 16 / 256, gx = Math.min(groups, 65535), gy = Math.ceil(groups / 65535);
  const runK = async (n: number) => {
    const enc = dev.createCommandEncoder(), pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    for (let i = 0; i < n; i++) { pass.setBindGroup(0, bgs[i % 2]); pass.dispatchWorkgroups(gx, gy); }
    pass.end();
    const t0 = performance.now();
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  // warm-up long enough for the SM clock to rise (it drops between short passes: H200 2026-12-03, and one slope of
  // a single 10/20 pair came out negative), then the slope of the fastest of 5 runs at each count
  for (let i = 0; i < 3; i++) await runK(20);
  let t10 = Infinity, t20 = Infinity;
  for (let i = 0; i < 5; i++) { t10 = Math.min(t10, await runK(10)); t20 = Math.min(t20, await runK(20)); }
  const kbest = (t20 - t10) / 10;
  const kgbs = kbest > 0 ? (2 * bytes) / (kbest * 1e-3) / 1e9 : NaN; // NaN: the host timing could not resolve it
  console.log(`copy kernel: ${kgbs.toFixed(0)} GB/s (read+write)${kbest > 0 ? '' : ': not measured (20 copies timed no slower than 10)'}`);
  results.copyGBs = Number.isNaN(kgbs) ? gbs : Math.max(gbs, kgbs);
  results.copyKernelGBs = kgbs;
  a.destroy(); b.destroy();
  return results;
}

/** A device of its own with Dawn toggles on (`disable_robustness`, ...: what the WGSL safety transforms cost), for
 *  `new WebGPUBackend(ctx, src, opts)`; benchmarks only: the product's device is getGpu's, with Dawn's defaults. */
export const contextWith = (toggles: string[]): Promise<GpuContext> =>
  openGpu(toggles.length ? [`enable-dawn-features=${toggles.join(',')}`] : []);
