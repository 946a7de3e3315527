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
