// The browser demo (web/) in real headless Chromium (Debian's /usr/bin/chromium through playwright-core),
// served by `vite preview` on 127.0.0.1 from a fresh `vite build`. What must hold (issues 8, 21):
//   - the engine runs in a Web Worker; greedy text in the page equals the Node engine's on the same backend,
//     for the same .comet file; so does the main-thread mode (?worker=0)
//   - Stop mid-stream ends the stream across the Worker and leaves the page usable; a reload reads the model
//     from OPFS with no network request at all
//   - a full storage quota (estimate, or QuotaExceededError while writing), a lost GPU device (device.destroy()
//     in the Worker) and a model above the adapter's limits give their messages; the page stays usable
//   - no WebGPU (navigator.gpu removed; no adapter; an adapter below the limits the kernels need): the page
//     says so and runs on the simulator
//   - a bad model file (404, truncated, not a .comet) shows a clear message in the page
//   - no console error and no uncaught exception anywhere (the 404 test allows the browser's own line for it)
// The model is stories260K quantized to W4A4KV4 by scripts/build-demo-model.ts into a temporary directory.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDemoModel } from '../../scripts/build-demo-model.ts';
import { createEngine } from '../../src/engine/engine.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const PROMPT = 'Once upon a time';
// WebGPU on (SwiftShader here), and nothing that reaches for the network at start (the machine's is closed)
const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--disable-default-apps', '--disable-domain-reliability'];

let dir: string, server: PreviewServer, base: string, browser: Browser;
// screenshots go to the test's temporary directory; COMET_TEST_SCREENSHOTS=bench/results refreshes the tracked ones
const shot = (page: Page, name: string) => {
  const to = process.env.COMET_TEST_SCREENSHOTS ? join(REPO, process.env.COMET_TEST_SCREENSHOTS) : dir;
  mkdirSync(to, { recursive: true });
  return page.screenshot({ path: join(to, name), fullPage: true });
};
const nodeText = new Map<string, string>(); // backend:max_tokens -> the Node engine's greedy text

/** Greedy chat completion in Node, same file and request as the page, on `backend` (sim, or WebGPU through
 *  Dawn on SwiftShader: the Vulkan driver Debian's chromium package ships, DESIGN §6). */
async function nodeGreedy(maxTokens: number, backend: 'sim' | 'webgpu' = 'sim'): Promise<string> {
  const key = `${backend}:${maxTokens}`;
  if (!nodeText.has(key)) {
    if (backend === 'webgpu') {
      process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
      process.env.XDG_RUNTIME_DIR ??= '/tmp';
    }
    const engine = await createEngine(join(dir, 'stories260K.comet'), { backend, maxBatch: 1 });
    const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: maxTokens });
    nodeText.set(key, r.choices[0].message.content ?? '');
    engine.close();
  }
  return nodeText.get(key)!;
}

interface Watched { page: Page; errors: string[] }

/** A page whose console errors and uncaught exceptions are collected (asserted empty by each test). */
async function open(ctx: BrowserContext, query: string, timeout?: number): Promise<Watched> {
  const page = await ctx.newPage(), errors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  // the engine's Worker: its console and uncaught errors count too
  page.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') errors.push(`worker console: ${m.text()}`); }));
  await page.goto(`${base}${query}`);
  await settle(page, timeout);
  return { page, errors };
}

const settle = (page: Page, timeout = 30_000) =>
  page.waitForFunction(() => ['idle', 'ready'].includes(document.body.dataset.state ?? ''), null, { timeout });

async function generate(page: Page, maxTokens: number): Promise<string> {
  await page.fill('#prompt', PROMPT);
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', String(maxTokens));
  await page.click('#generate');
  await page.waitForFunction(() => document.body.dataset.state === 'generating' || document.getElementById('finish')!.textContent !== '');
  await settle(page);
  expect(await page.locator('#error').isHidden(), await page.textContent('#error') ?? '').toBe(true);
  return (await page.textContent('#generated')) ?? '';
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (the browser tests never skip)`);
  dir = mkdtempSync(join(tmpdir(), 'comet-demo-'));
  // the model, and the broken files the bad-file test asks for (served under /models/ through COMET_DEMO_MODELS)
  const comet = await buildDemoModel('stories260K', { out: dir, calibTokens: 512, ctx: 256 });
  const bytes = readFileSync(comet);
  writeFileSync(join(dir, 'truncated.comet'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  writeFileSync(join(dir, 'notes.comet'), '<!doctype html><title>Not Found</title><p>this is a web page, not a model\n');
  copyFileSync(join(REPO, 'models/tok512.bin'), join(dir, 'tokenizer-only.comet'));
  process.env.COMET_DEMO_MODELS = dir;
  const outDir = join(dir, 'dist');
  await build({ configFile: join(REPO, 'web/vite.config.ts'), logLevel: 'warn', build: { outDir } });
  server = await preview({ configFile: join(REPO, 'web/vite.config.ts'), logLevel: 'warn', build: { outDir }, preview: { port: 0, host: '127.0.0.1', strictPort: false } });
  base = server.resolvedUrls!.local[0];
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}, 90_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  delete process.env.COMET_DEMO_MODELS;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const MODEL = '?model=models/stories260K.comet';

describe('browser demo', () => {
  test('in a Worker: greedy text equals the Node engine; Stop keeps the page usable; a reload reads OPFS, no request', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // every text the progress line shows, in order
    await ctx.addInitScript(() => {
      const seen: string[] = ((window as unknown as { progressSeen: string[] }).progressSeen = []);
      new MutationObserver(() => {
        const t = document.getElementById('progress-text')?.textContent ?? '';
        if (seen[seen.length - 1] !== t) seen.push(t);
      }).observe(document, { subtree: true, childList: true, characterData: true });
    });
    const requests: string[] = [];
    ctx.on('request', (r) => { if (new URL(r.url()).pathname.endsWith('/models/stories260K.comet')) requests.push(r.method()); });
    const { page, errors } = await open(ctx, `${MODEL}&backend=sim&autoload=1`);
    expect(await page.textContent('#error')).toBe('');
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready');
    expect(await page.textContent('#progress-text')).toContain('ready on sim');
    expect(await page.textContent('#stat-backend')).toContain('in a Worker');
    expect(page.workers().length).toBe(1);
    expect(await page.textContent('#cached')).toMatch(/models\/stories260K\.comet · .* · OPFS/);
    expect(await page.evaluate(() => (document.getElementById('progress') as HTMLProgressElement).value)).toBe(1);
    const progress = await page.evaluate(() => (window as unknown as { progressSeen: string[] }).progressSeen);
    expect(progress.some((t) => /^Downloading: .* \/ .* \(100%\)$/.test(t)), progress.join(' | ')).toBe(true);
    expect(progress.some((t) => /^Checking: \d+ \/ \d+ tensors/.test(t)), progress.join(' | ')).toBe(true);
    expect(progress.some((t) => /^Uploading to the device: /.test(t)), progress.join(' | ')).toBe(true);

    expect(await generate(page, 48)).toBe(await nodeGreedy(48));
    expect(await page.textContent('#finish')).toContain('token limit');
    for (const k of ['prefill', 'decode', 'model-bytes', 'kv-bytes']) expect(await page.textContent(`#stat-${k}`)).toMatch(/\d/);
    await shot(page, 'web-demo-sim.png');

    // Stop mid-stream: the stream ends, the page says so, and the next request works
    await page.fill('#max-tokens', '450');
    await page.click('#generate');
    await page.waitForFunction(() => (document.getElementById('generated')!.textContent ?? '').length > 40);
    await page.click('#stop');
    await settle(page);
    expect(await page.textContent('#finish')).toBe('Stopped.');
    const stopped = (await page.textContent('#generated'))!;
    expect(stopped.length).toBeLessThan((await nodeGreedy(450)).length);
    expect((await nodeGreedy(450)).startsWith(stopped)).toBe(true);
    // the Worker's engine counted it as cancelled (it stopped there, not only on the page)
    await expect.poll(() => page.textContent('#stat-requests')).toMatch(/^1 finished · 1 stopped · 0 failed$/);
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));

    // reload: the model comes from OPFS, with no request of any kind for it
    expect(requests).toEqual(['GET']);
    await page.reload();
    await settle(page);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready');
    expect(await page.evaluate(() => (window as unknown as { progressSeen: string[] }).progressSeen.some((t) => t.startsWith('Reading from the browser cache')))).toBe(true);
    expect(requests).toEqual(['GET']);
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));

    // a file picked from disk takes the same path
    await page.setInputFiles('#file', join(dir, 'stories260K.comet'));
    await settle(page);
    expect(await page.textContent('#progress-text')).toContain('ready on sim');
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    expect(errors).toEqual([]);
    await ctx.close();
  });

  test('on WebGPU (SwiftShader in Chromium) greedy text equals the Node engine on WebGPU (Dawn)', async () => {
    // the Node reference first: run beside the page, Dawn's work can hold up this process's preview server
    const reference = await nodeGreedy(6, 'webgpu');
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const { page, errors } = await open(ctx, `${MODEL}&backend=webgpu&autoload=1`);
    await page.waitForFunction(() => ['idle', 'ready'].includes(document.body.dataset.state ?? '') && !document.getElementById('progress-text')!.textContent!.endsWith('…'), null, { timeout: 90_000 });
    expect(await page.textContent('#error')).toBe('');
    expect(await page.textContent('#stat-backend')).toMatch(/^webgpu/);
    expect(await page.textContent('#stat-adapter')).not.toBe('none');
    const text = await generate(page, 6);
    expect(text.length).toBeGreaterThan(0);
    expect(text).toBe(reference);
    await shot(page, 'web-demo-webgpu.png');

    // the GPU device is lost mid-request (device.destroy() inside the engine's Worker, at its next command
    // encoder): the request fails with that message, and the page loads the model again
    const [worker] = page.workers();
    await worker.evaluate(() => {
      const proto = GPUDevice.prototype, real = proto.createCommandEncoder;
      proto.createCommandEncoder = function (this: GPUDevice, d?: GPUCommandEncoderDescriptor) {
        proto.createCommandEncoder = real;
        this.destroy();
        return real.call(this, d);
      };
    });
    await page.fill('#max-tokens', '6');
    await page.click('#generate');
    await page.waitForFunction(() => document.body.dataset.state === 'idle', null, { timeout: 60_000 });
    expect(await page.textContent('#error')).toMatch(/^webgpu: the GPU device was lost \(destroyed: [^)]*\); this engine cannot continue: create it again\. Press Load to start the model again\.$/);
    expect(await page.isDisabled('#generate')).toBe(true);
    await page.selectOption('#backend', 'sim');
    await page.click('#load');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 30_000 });
    expect(await page.isHidden('#error')).toBe(true);
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    expect(errors).toEqual([]);
    await ctx.close();
  }, 180_000);

  test('a model above the GPU adapter\'s limits is refused before upload, saying what it needs', async () => {
    const ctx = await browser.newContext();
    // an adapter whose buffers hold at most 32 KiB (the model's largest weight, its f16 embedding, is 64 KiB); the
    // engine on the page thread (?worker=0), where this script reaches the adapter
    await ctx.addInitScript(() => {
      const real = GPU.prototype.requestAdapter;
      GPU.prototype.requestAdapter = async function (o) {
        const a = await real.call(this, o);
        if (!a) return a;
        const small = new Set(['maxBufferSize', 'maxStorageBufferBindingSize']);
        const limits = new Proxy(a.limits, { get: (t, k) => (small.has(k as string) ? 32768 : Reflect.get(t, k)) });
        return new Proxy(a, { get: (t, k) => { const v = k === 'limits' ? limits : Reflect.get(t, k); return typeof v === 'function' ? v.bind(t) : v; } });
      };
    });
    const { page, errors } = await open(ctx, `${MODEL}&backend=webgpu&worker=0&autoload=1`, 60_000);
    const text = (await page.textContent('#error'))!;
    expect(text).toMatch(/^Could not load the model\. webgpu: this model does not fit the GPU adapter \(.*\), which allows buffers of at most 32\.0 KiB and bindings of at most 32\.0 KiB: /);
    expect(text).toMatch(/\w+ needs one 64\.0 KiB buffer/);
    expect(await page.textContent('#stat-model-bytes')).toBe('–'); // nothing was uploaded
    await page.selectOption('#backend', 'sim');
    await page.click('#load');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 30_000 });
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    expect(errors).toEqual([]);
    await ctx.close();
  }, 120_000);

  test('without OPFS the Cache API keeps the model: a reload makes no request; Delete removes it', async () => {
    const ctx = await browser.newContext();
    await ctx.addInitScript(() => { delete (StorageManager.prototype as { getDirectory?: unknown }).getDirectory; });
    const requests: string[] = [];
    ctx.on('request', (r) => { if (new URL(r.url()).pathname.endsWith('/models/stories260K.comet')) requests.push(r.method()); });
    const { page, errors } = await open(ctx, `${MODEL}&backend=sim&autoload=1`);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready');
    await expect.poll(() => page.textContent('#cached')).toMatch(/^models\/stories260K\.comet · [\d.]+ KiB · Cache API Delete$/);
    await page.reload();
    await settle(page);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready');
    expect(requests).toEqual(['GET']);
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    await page.click('#cached button');
    await expect.poll(() => page.textContent('#cached')).toBe('none');
    expect(errors).toEqual([]);
    await ctx.close();
  });

  test('a full storage quota gives its message, keeps no partial file, and the page stays usable', async () => {
    const ctx = await browser.newContext();
    // window.quota: 'estimate' (the browser reports 1 KiB left), 'write' (QuotaExceededError while writing), else real
    await ctx.addInitScript(() => {
      const w = window as unknown as { quota: string };
      w.quota = 'estimate';
      const estimate = StorageManager.prototype.estimate, write = FileSystemWritableFileStream.prototype.write;
      StorageManager.prototype.estimate = async function () { return w.quota === 'estimate' ? { quota: 100 * 1024, usage: 99 * 1024 } : estimate.call(this); };
      FileSystemWritableFileStream.prototype.write = async function (this: FileSystemWritableFileStream, d: FileSystemWriteChunkType) {
        if (w.quota === 'write') throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
        return write.call(this, d);
      };
    });
    const requests: string[] = [];
    ctx.on('request', (r) => { if (new URL(r.url()).pathname.endsWith('/models/stories260K.comet')) requests.push(r.method()); });
    const { page, errors } = await open(ctx, `${MODEL}&backend=sim&autoload=1`);
    expect(await page.textContent('#error')).toMatch(/^Could not load the model\. Not enough browser storage to keep .*\/models\/stories260K\.comet \([\d.]+ KiB\)\. The browser allows this site 100\.0 KiB and 99\.0 KiB are in use\. Delete cached models/);
    expect(await page.isEnabled('#load')).toBe(true);
    await page.evaluate(() => { (window as unknown as { quota: string }).quota = 'write'; });
    await page.click('#load');
    await settle(page);
    expect(await page.textContent('#error')).toMatch(/^Could not load the model\. Not enough browser storage to keep .*stories260K\.comet \([\d.]+ KiB\)\. Delete cached models/);
    expect(await page.textContent('#cached')).toBe('none'); // the partial file was removed
    await page.evaluate(() => { (window as unknown as { quota: string }).quota = 'none'; });
    await page.click('#load');
    await settle(page);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready');
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    expect(await page.textContent('#cached')).toMatch(/stories260K\.comet · .* · OPFS/);
    // the estimate refusal downloaded nothing (the request was cancelled before its body); the write failure one file, the last load one
    expect(requests.length).toBe(3);
    expect(errors).toEqual([]);
    await ctx.close();
  });

  test('without WebGPU the page says so and runs on the simulator', async () => {
    const ctx = await browser.newContext();
    await ctx.addInitScript(() => { Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }); });
    const { page, errors } = await open(ctx, `${MODEL}&worker=0`);
    await expect.poll(() => page.isVisible('#no-webgpu')).toBe(true);
    expect(await page.textContent('#no-webgpu')).toContain('WebGPU is not available');
    expect(await page.textContent('#no-webgpu-reason')).toContain('navigator.gpu is undefined');
    expect(await page.isDisabled('#backend option[value=webgpu]')).toBe(true);
    await shot(page, 'web-demo-no-webgpu.png');
    await page.click('#use-sim');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 30_000 });
    expect(await page.textContent('#stat-backend')).toMatch(/^sim .* on the page thread$/);
    expect(page.workers()).toHaveLength(0);
    expect(await generate(page, 12)).toBe(await nodeGreedy(12));
    expect(errors).toEqual([]);
    await ctx.close();

    // WebGPU present but no adapter: the same offer, with that reason
    const ctx2 = await browser.newContext();
    await ctx2.addInitScript(() => { GPU.prototype.requestAdapter = async () => null; });
    const p2 = await open(ctx2, MODEL);
    await expect.poll(() => p2.page.isVisible('#no-webgpu')).toBe(true);
    expect(await p2.page.textContent('#no-webgpu-reason')).toContain('no GPU adapter');
    expect(p2.errors).toEqual([]);
    await ctx2.close();

    // an adapter below what the kernels need (here: 4 storage buffers per stage)
    const ctx3 = await browser.newContext();
    await ctx3.addInitScript(() => {
      const real = GPU.prototype.requestAdapter;
      GPU.prototype.requestAdapter = async function (o) {
        const a = await real.call(this, o);
        if (!a) return a;
        const limits = new Proxy(a.limits, { get: (t, k) => (k === 'maxStorageBuffersPerShaderStage' ? 4 : Reflect.get(t, k)) });
        return new Proxy(a, { get: (t, k) => (k === 'limits' ? limits : Reflect.get(t, k)) });
      };
    });
    const p3 = await open(ctx3, MODEL);
    await expect.poll(() => p3.page.isVisible('#no-webgpu')).toBe(true);
    expect(await p3.page.textContent('#no-webgpu-reason')).toMatch(/too limited: maxStorageBuffersPerShaderStage 4 < 8/);
    expect(p3.errors).toEqual([]);
    await ctx3.close();
  });

  test('the demo opens a W4A4KV4 .comet by default, with the float model as a choice', async () => {
    const ctx = await browser.newContext();
    const { page, errors } = await open(ctx, '');
    expect(await page.$eval('#model-select', (s: HTMLSelectElement) => s.selectedOptions[0].textContent)).toMatch(/W4A4KV4 \.comet/);
    expect(await page.$$eval('#model-select option', (o) => o.map((x) => x.textContent))).toContainEqual(expect.stringMatching(/stories260K · float32/));
    expect(errors).toEqual([]);
    await ctx.close();
  });

  test.each([
    ['404', 'models/missing.comet', /HTTP 404/],
    ['truncated', 'models/truncated.comet', /truncated|past the end|runs past/],
    ['not a model (HTML)', 'models/notes.comet', /not a model; expected a \.comet file/],
    ['not a .comet (a tokenizer)', 'models/tokenizer-only.comet', /not a \.comet file/],
  ])('a bad model file (%s) shows a clear message', async (_, url, message) => {
    const ctx = await browser.newContext();
    const { page, errors } = await open(ctx, `?model=${url}&backend=sim&autoload=1`);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('idle');
    expect(await page.isVisible('#error')).toBe(true);
    const text = (await page.textContent('#error'))!;
    expect(text).toMatch(/^Could not load the model\./);
    expect(text).toMatch(message);
    expect(await page.isDisabled('#generate')).toBe(true);
    expect(await page.isEnabled('#load')).toBe(true); // the page stays usable
    // the browser itself logs a failed resource load for the 404; nothing else may appear
    expect(errors.filter((e) => !(url.includes('missing') && /Failed to load resource.*404/.test(e)))).toEqual([]);
    await ctx.close();
  });
});
