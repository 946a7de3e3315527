// The markdown of bench/webgpu/floor.ts's results (written beside its JSON; also standalone on a JSON):
//   npx tsx bench/webgpu/floor-report.ts webgpu-floor-<date>.json   -> the .md beside it
import { readFileSync, writeFileSync } from 'node:fs';

export interface Fit { floorUs: number; GBs: number; r2: number }
type Rows = Array<{ shape: string; bytes: number; us: number; GBs: number }>;
export interface FloorResults {
  date: string; adapter: string; quick: boolean; copyBufferToBufferGBs?: number; copyKernelGBs?: number; copyGBs?: number;
  floor: Array<{ groups: number; mode: string; D: number; gpuUs: number; hostUs: number }>;
  stream: Array<{ kernel: 'read' | 'copy'; bytes: number; us: number; GBs: number }>;
  matvec: Rows;
  toggles: Array<{ toggle: string; floorUs: number; matvec: Rows; sameBits: boolean }>;
  fits?: { read: Fit; copy: Fit; matvec: Fit };
  /** decode.ts's JSON of the same call: its WebGPU step, and CUDA's tokens/s */
  decode?: { tokensPerS: number; dispatches?: number; profile?: { gpuStepMs: number; replayWallMs: number }; cudaTokensPerS?: number };
}

/** Least squares of µs = floor + bytes / BW over (bytes, µs) points. */
export function linearFit(pts: Array<[number, number]>): Fit {
  const n = pts.length, mx = pts.reduce((s, p) => s + p[0], 0) / n, my = pts.reduce((s, p) => s + p[1], 0) / n;
  const sxy = pts.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0), sxx = pts.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  const b = sxy / sxx, a = my - b * mx, syy = pts.reduce((s, [, y]) => s + (y - my) ** 2, 0);
  return { floorUs: a, GBs: 1 / b / 1e3, r2: syy ? (b * sxy) / syy : 1 };
}
const at = (f: Fit, bytes: number) => f.floorUs + bytes / f.GBs / 1e3; // µs
const f1 = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const fitLine = (name: string, f?: Fit) => (f ? `${name}: floor ${f1(f.floorUs, 2)} µs + bytes at ${f1(f.GBs, 0)} GB/s (r² ${f1(f.r2, 3)})` : '');

/** µs a dispatch: the slope of GPU time from the smallest D past 1 to the largest */
export function perDispatch(r: FloorResults, groups: number, mode: string): number {
  const rows = r.floor.filter((x) => x.groups === groups && x.mode === mode && x.D > 1).sort((a, b) => a.D - b.D);
  const [lo, hi] = [rows[0], rows[rows.length - 1]];
  return lo && hi && hi.D > lo.D ? (hi.gpuUs - lo.gpuUs) / (hi.D - lo.D) : NaN;
}

export function floorMarkdown(r: FloorResults): string {
  const L: string[] = [`# WebGPU dispatch floor and streaming rate (${r.date.slice(0, 16).replace('T', ' ')} UTC, ${r.adapter})`, '',
    'Command: `npx tsx bench/webgpu/floor.ts` (run by `bench/webgpu/h200.sh` after decode.ts). GPU µs from timestamp queries at',
    'pass boundaries; host µs from submit to the readback of the timestamps (one round trip included).', ''];
  const Ds = [...new Set(r.floor.map((x) => x.D))].sort((a, b) => a - b);
  L.push('## Dispatch floor: D dispatches of an add-1 kernel', '',
    '`dependent`: all on one buffer in one pass (each reads what the previous wrote); `independent`: a buffer each, one pass;',
    '`pass each`: a compute pass per dispatch. GPU µs (first pass start to last pass end):', '',
    `| workgroups | mode | ${Ds.map((D) => `D = ${D}`).join(' | ')} | µs a dispatch (slope) | host µs, D = ${Ds[Ds.length - 1]} |`, `| --- | --- | ${Ds.map(() => '---').join(' | ')} | --- | --- |`);
  for (const k of [...new Set(r.floor.map((x) => `${x.groups}|${x.mode}`))]) {
    const [g, mode] = k.split('|'), rows = r.floor.filter((x) => x.groups === +g && x.mode === mode);
    const cell = (D: number) => f1(rows.find((x) => x.D === D)?.gpuUs);
    L.push(`| ${g} | ${mode} | ${Ds.map(cell).join(' | ')} | **${f1(perDispatch(r, +g, mode), 2)}** | ${f1(rows.find((x) => x.D === Ds[Ds.length - 1])?.hostUs, 0)} |`);
  }
  const sizes = [...new Set(r.stream.map((s) => s.bytes))];
  L.push('', '## Streaming: a read kernel and the WGSL copy kernel, rotated past the L2', '',
    `Copy (lib.ts copyBandwidth, 1 GiB buffers, 16 MiB with --quick; read + write): copyBufferToBuffer ${f1(r.copyBufferToBufferGBs, 0)} GB/s, copy kernel ${f1(r.copyKernelGBs, 0)} GB/s.`, '',
    '| MB | read µs | read GB/s | copy µs | copy GB/s (read + write) |', '| --- | --- | --- | --- | --- |');
  for (const b of sizes) {
    const rd = r.stream.find((s) => s.kernel === 'read' && s.bytes === b), cp = r.stream.find((s) => s.kernel === 'copy' && s.bytes === b);
    L.push(`| ${f1(b / 2 ** 20, 2)} | ${f1(rd?.us, 2)} | ${f1(rd?.GBs, 0)} | ${f1(cp?.us, 2)} | ${f1(cp?.GBs, 0)} |`);
  }
  L.push('', fitLine('read kernel', r.fits?.read), '', fitLine('copy kernel (bytes read + written)', r.fits?.copy), '');
  const copy = r.copyGBs ?? NaN;
  L.push('## W4Ax matvec (M = 1, the decode kernel), back to back in one pass, weights rotated past the L2', '',
    '| shape (N x K) | MB | µs | GB/s | of copy | of the read kernel at these bytes (its fit) | fit floor / µs |', '| --- | --- | --- | --- | --- | --- | --- |');
  for (const m of r.matvec)
    L.push(`| ${m.shape} | ${f1(m.bytes / 1e6, 1)} | ${f1(m.us, 2)} | ${f1(m.GBs, 0)} | ${f1((100 * m.GBs) / copy, 0)}% | ${r.fits ? f1((100 * at(r.fits.read, m.bytes)) / m.us, 0) : '–'}% | ${r.fits ? f1((100 * r.fits.matvec.floorUs) / m.us, 0) : '–'}% |`);
  L.push('', fitLine('matvec', r.fits?.matvec), '');
  if (r.toggles.length) {
    L.push('## Dawn toggles (a device of its own each: the first row is the device above, the second a fresh one without toggles)', '',
      `| device | tiny dependent µs a dispatch | ${r.toggles[0].matvec.map((m) => m.shape).join(' | ')} | matvec bits as default |`, `| --- | --- | ${r.toggles[0].matvec.map(() => '---').join(' | ')} | --- |`);
    const def = r.toggles[0].matvec.map((m) => r.matvec.find((x) => x.shape === m.shape)?.us);
    L.push(`| default | ${f1(perDispatch(r, 1, 'dependent'), 2)} | ${def.map((u) => f1(u, 2)).join(' | ')} | – |`);
    for (const t of r.toggles) L.push(`| ${t.toggle} | ${f1(t.floorUs, 2)} | ${t.matvec.map((m) => f1(m.us, 2)).join(' | ')} | ${t.sameBits ? 'yes' : 'no'} |`);
    L.push('');
  }
  L.push(...modelMarkdown(r));
  return L.join('\n') + '\n';
}

/** The LLaMA-3.2-1B step's GPU time against dispatches × floor, the matvecs as measured here, and streaming. */
function modelMarkdown(r: FloorResults): string[] {
  const d = r.decode, step = d?.profile?.gpuStepMs, D = d?.dispatches;
  const mv = (s: string) => r.matvec.find((m) => m.shape.startsWith(`1b ${s} `));
  const layer = ['q+k+v', 'o', 'gate+up', 'down'].map(mv), cls = mv('classifier');
  if (!d || !step || !D || layer.some((m) => !m) || !cls) return ['## Model of the decode step', '', 'Not made: no decode JSON (--decode) or no LLaMA-3.2-1B matvec rows (--quick).'];
  const nL = 16, fDep = perDispatch(r, 1, 'dependent'), fPass = perDispatch(r, 1, 'pass each');
  const mvUs = nL * layer.reduce((s, m) => s + m!.us, 0) + cls.us, bytes = nL * layer.reduce((s, m) => s + m!.bytes, 0) + cls.bytes;
  const nMv = 4 * nL + 1, rest = step * 1000 - mvUs, readUs = r.fits ? bytes / r.fits.read.GBs / 1e3 : NaN;
  const target = d.cudaTokensPerS ? 1000 / (0.8 * d.cudaTokensPerS) : NaN;
  return ['## Model of the decode step (LLaMA-3.2-1B shape, this call\'s decode.ts)', '',
    '| term | ms a step | how |', '| --- | --- | --- |',
    `| GPU step as measured (profileGpu) | ${f1(step, 3)} | ${D} dispatches in one pass |`,
    `| dispatch floor | ${f1((D * fDep) / 1000, 3)} | ${D} × ${f1(fDep, 2)} µs (tiny dependent dispatches, slope) |`,
    `| weights streamed at the read kernel's rate | ${f1(readUs / 1000, 3)} | ${f1(bytes / 1e6, 0)} MB / ${f1(r.fits?.read.GBs, 0)} GB/s |`,
    `| floor + streaming (the model) | ${f1((D * fDep + readUs) / 1000, 3)} | a lower bound for this dispatch count |`,
    `| the ${nMv} matvecs as measured here (chained) | ${f1(mvUs / 1000, 3)} | 16 × (q+k+v, o, gate+up, down) + classifier |`,
    `| the other ${D - nMv} dispatches (step − matvecs) | ${f1(rest / 1000, 3)} | ${f1(rest / (D - nMv), 2)} µs each, against the floor's ${f1(fDep, 2)} |`,
    `| a dispatch in a pass of its own (for the profile's "run apart" column) | – | ${f1(fPass, 2)} µs each |`,
    `| 0.8 × CUDA's tokens/s | ${f1(target, 3)} | host and GPU: the whole token (WebGPU replay wall ${f1(d.profile?.replayWallMs, 3)} ms) |`, ''];
}

if (process.argv[1]?.endsWith('floor-report.ts')) {
  const file = process.argv[2];
  if (!file?.endsWith('.json')) throw new Error('usage: floor-report.ts webgpu-floor-<date>.json');
  writeFileSync(file.replace(/\.json$/, '.md'), floorMarkdown(JSON.parse(readFileSync(file, 'utf8')) as FloorResults));
}
