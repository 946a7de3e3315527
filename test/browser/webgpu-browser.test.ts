// The same WGSL in headless Chromium (Debian's /usr/bin/chromium through playwright-core, navigator.gpu on
// SwiftShader) and in Node (Dawn): the page (test/browser/webgpu-page, built by Vite, served from
// http://127.0.0.1) runs the cases of webgpu-cases.ts (W4Ax GEMM, quantize_act, KV4 append + attention) on
// seeded inputs, and every result is byte-identical to Node's. No browser or no adapter fails, never skips.
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWebGPUBackend, WebGPUBackend } from '../../backends/webgpu/webgpu.ts';
import { runCases } from './webgpu-cases.ts';
import { actSpec } from '../../simulator/act.ts';
import { quantizeW4 } from '../../simulator/w4.ts';
import { activations, permutation, rng } from '../../testing/rng.ts';
import { createEngine } from '../../src/engine/engine.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--disable-default-apps', '--disable-domain-reliability'];
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

let dir: string, server: Server, base: string, browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (this test never skips)`);
  dir = mkdtempSync(join(tmpdir(), 'comet-webgpu-page-'));
  await build({
    configFile: false, logLevel: 'warn', root: fileURLToPath(new URL('./webgpu-page/', import.meta.url)), base: './',
    build: { outDir: dir, emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 4096 },
  });
  server = createServer((req, res) => {
    if (req.url === '/favicon.ico') { res.writeHead(204); res.end(); return; }
    const path = normalize(join(dir, decodeURIComponent((req.url ?? '/').split('?')[0]).replace(/\/$/, '/index.html')));
    if (!path.startsWith(dir) || !existsSync(path)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' });
    res.end(readFileSync(path));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
});

afterAll(async () => {
  await browser?.close();
  server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('webgpu in the browser', () => {
  it('headless Chromium runs the WGSL ops with results byte-identical to Node (Dawn)', async () => {
    const page = await browser.newPage(), errors: string[] = [];
    page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    await page.goto(base);
    await page.waitForFunction(() => document.body.dataset.state === 'ready');
    const web = await page.evaluate(() => (window as unknown as { cometCases: () => Promise<{ adapter: string; results: Record<string, string> }> }).cometCases());
    expect(errors).toEqual([]);
    const be = await createWebGPUBackend();
    const node = await runCases(be);
    console.log(`browser adapter: ${web.adapter}; Node adapter: ${be.adapterName}; ${Object.keys(node).length} results compared`);
    expect(Object.keys(web.results)).toEqual(Object.keys(node));
    for (const k of Object.keys(node)) expect(web.results[k], k).toBe(node[k]);
  });
});

describe('webgpu failures reach the caller as clear errors (Node, Dawn)', () => {
  it('an uncaptured GPU error fails the next read; a lost device fails every read and the next device is new', async () => {
    const be = await createWebGPUBackend();
    const x = be.fromHost(Float32Array.of(1, 2, 3, 4), [1, 4]);
    expect(Array.from(await be.read(x))).toEqual([1, 2, 3, 4]);
    be.dev.createBuffer({ size: 16, usage: 0 }); // a validation error no scope catches
    await expect(be.read(x)).rejects.toMatchObject({ code: 'gpu_error', message: expect.stringMatching(/^webgpu: a GPU command failed \([\s\S]+\)$/) });
    expect(Array.from(await be.read(x))).toEqual([1, 2, 3, 4]); // reported once
    be.dev.destroy();
    await expect(be.read(x)).rejects.toMatchObject({ code: 'device_lost', message: expect.stringMatching(/^webgpu: the GPU device was lost \(destroyed.*\); this engine cannot continue: create it again$/) });
    await expect(be.whenLost).resolves.toMatchObject({ reason: 'destroyed' });
    const again = await createWebGPUBackend();
    expect(again.dev).not.toBe(be.dev);
    expect(Array.from(await again.read(again.fromHost(Float32Array.of(5), [1, 1])))).toEqual([5]);
  });

  it('weights or a KV cache above the adapter\'s limits are refused before upload, with what they need', async () => {
    const real = await createWebGPUBackend();
    const be = new WebGPUBackend({ ...real.gpu, limits: { ...real.gpu.limits, maxBuffer: 1 << 20, maxBinding: 1 << 16 } }, real.src);
    const small = { kind: 'f32' as const, name: 'norm', shape: [64], data: new Float32Array(64) };
    const big = { kind: 'f32' as const, name: 'tok_embeddings', shape: [512, 64], data: new Float32Array(512 * 64) };
    expect(() => be.checkFits([small])).not.toThrow();
    expect(() => be.checkFits([small, big])).toThrow(/does not fit the GPU adapter .* buffers of at most 1\.0 MiB and bindings of at most 64\.0 KiB: tok_embeddings needs one 128\.0 KiB buffer$/);
    const kv = { nLayers: 8, nKvHeads: 4, headDim: 64, pageSize: 16, numPages: 64, dtype: 'kv4' as const, group: 64 };
    expect(() => be.checkFits([], kv)).toThrow(/one layer of the KV cache \(64 pages\) needs [\d.]+ KiB bound at once; the KV cache \(8 layers × 64 pages\) needs one [\d.]+ MiB buffer/);
    expect(() => be.createKVCache(kv)).toThrow(/does not fit/);
    await expect(be.uploadModel([big])).rejects.toMatchObject({ code: 'too_large' });
  });
});

describe('webgpu W4Ax GEMM of several weights in one dispatch (Node, Dawn)', () => {
  // the matvec in its 2048-channel chunking (the default at K = 512)
  it.each(['matvec', 'rowwise', 'tiled'] as const)('%s: matmulMany equals one matmul per weight, bit for bit', async (gemm) => {
    const real = await createWebGPUBackend(), be = new WebGPUBackend(real.gpu, real.src, { gemm, matvec: { segs: 1 } });
    const shapes = { matvec: [[1, 512, 128, 128]], tiled: [[20, 256, 32, 0]], rowwise: [[1, 512, 128, 128], [3, 300, 64, 64], [20, 256, 32, 0]] }[gemm];
    for (const [M, K, B, K8] of shapes) {
      const r = rng(M + K), spec = actSpec(K, B, K8, permutation(r, K));
      const q = be.quantizeAct(be.fromHost(activations(r, M, K, [1], 20), [M, K]), spec);
      const ws = [70, 9, 130].map((N, i) => be.uploadWeight({ kind: 'w4', name: `w${i}`, ...quantizeW4(activations(r, N, K).map((v) => v * 0.05), N, spec, { clipSearch: false }) }));
      for (const n of [2, 3]) {
        const many = be.matmulMany(q, ws.slice(0, n));
        for (let i = 0; i < n; i++) expect(Array.from(await be.read(many[i])), `M=${M} K=${K} part ${i} of ${n}`).toEqual(Array.from(await be.read(be.matmul(q, ws[i]))));
      }
      be.endStep();
    }
  });
});

describe('webgpu captured decode steps (Node, Dawn)', () => {
  it('the engine with captured steps gives the tokens of the engine without; greedy steps read back only the ids', async () => {
    const model = fileURLToPath(new URL('../../models/stories260K.comet', import.meta.url));
    const be = await createWebGPUBackend();
    const reads: number[] = [], read = be.readBytes.bind(be), replay = be.readReplay.bind(be);
    be.readBytes = (buf, bytes) => { reads.push(bytes); return read(buf, bytes); };
    be.readReplay = (...a) => { reads.push(a[1].bytes); return replay(...a); };
    const run = async (graphs: number, temperature: number) => {
      const e = await createEngine(model, { backend: be, maxBatch: 2, graphs });
      reads.length = 0;
      const out = await Promise.all(['Once upon a time', 'The cat'].map((prompt) =>
        e.completions.create({ prompt, max_tokens: 24, temperature, seed: 7 }))); // two sequences, past two page buckets
      const stats = e.stats().graphs!;
      e.close();
      return { texts: out.map((r) => r.choices[0].text), stats, reads: [...reads] };
    };
    for (const temperature of [0, 0.8]) { // greedy: the device's argmax; sampled: the logit rows
      const eager = await run(0, temperature), captured = await run(16, temperature);
      expect(eager.stats.replays).toBe(0);
      expect(captured.stats.captures).toBeGreaterThan(0);
      expect(captured.stats.replays).toBeGreaterThan(10);
      // greedy: steps chained on the device (src/engine/graphs.ts); sampled: none
      if (temperature === 0) expect(captured.stats.chained).toBeGreaterThan(5);
      else expect(captured.stats.chained).toBe(0);
      expect(captured.texts).toEqual(eager.texts);
      expect(captured.texts[0].length).toBeGreaterThan(30);
      // greedy: every step reads back the sampled ids alone (4 or 8 bytes); sampled: the logit rows (2 KiB each)
      for (const r of [captured, eager]) expect(r.reads.every((n) => (temperature === 0 ? n <= 8 : n >= 512 * 4)), String(r.reads)).toBe(true);
    }
  });
});
