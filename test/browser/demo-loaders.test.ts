// comet/web's loaders (src/loaders/bytes.ts) against the Node loaders on the same files: the browser must see
// the same config, weights (bit for bit) and tokenizer, and refuse the same broken files with clear messages.
// And the comet/web bundle other apps import (vite build --mode lib) runs the engine as Node does.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostWeight } from '../../backends/backend.ts';
import { buildDemoModel } from '../../scripts/build-demo-model.ts';
import { CometError } from '../../src/errors.ts';
import { loadModelBytes } from '../../src/loaders/bytes.ts';
import { loadModel } from '../../src/loaders/index.ts';
import { writeSafetensors } from '../../src/loaders/safetensors.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { openModelBytes } from '../../src/web.ts';
import { openModel } from '../../src/runtime/open.ts';
import { createEngine } from '../../src/engine/engine.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const S260K = join(REPO, 'models/stories260K.bin'), TOK = join(REPO, 'models/tok512.bin');
let dir: string, comet: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'comet-bytes-'));
  comet = await buildDemoModel('stories260K', { out: dir, calibTokens: 256, ctx: 128 });
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const buf = (x: ArrayBufferView) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString('base64');
/** Shape and spec as values, every array as its bytes: equal means bit for bit. */
const bits = (w: HostWeight) => (w.kind !== 'w4' ? [w.kind, w.shape, buf(w.data)]
  : [w.N, w.act.K, w.act.Kp, w.act.B, w.act.K8, w.act.perm ? buf(w.act.perm) : null, buf(w.codes), buf(w.scales)]);
const sameWeights = (a: Map<string, HostWeight>, b: Map<string, HostWeight>) => {
  expect([...a.keys()]).toEqual([...b.keys()]);
  for (const [k, w] of a) expect(bits(b.get(k)!), k).toEqual(bits(w));
};
const rejects = async (bytes: Uint8Array, ...fragments: (string | RegExp)[]) => {
  const e = await loadModelBytes(bytes, 'x.comet').then(() => undefined, (err) => err);
  expect(e, 'expected a CometError').toBeInstanceOf(CometError);
  for (const f of fragments) expect((e as Error).message).toMatch(f);
};

describe('comet/web loaders equal the Node loaders', () => {
  it('llama2.c stories260K.bin', async () => {
    const node = await loadModel(S260K), web = await loadModelBytes(readFileSync(S260K), 'stories260K.bin');
    expect(web.format).toBe('llama2c');
    expect(web.config).toEqual(node.config);
    sameWeights(node.weights, web.weights);
  });

  it('.comet: config, W4 weights, KV dtype and embedded tokenizer', async () => {
    const node = await loadModel(comet), web = await loadModelBytes(readFileSync(comet), comet);
    expect(web.format).toBe('comet');
    expect(web.config).toEqual(node.config);
    expect(web.meta.kvDType).toBe(node.meta!.kvDType);
    sameWeights(node.weights, web.weights);
    const be = new SimBackend();
    const a = await openModel(be, comet), b = await openModelBytes(be, readFileSync(comet), comet);
    expect(b.stop).toEqual(a.stop);
    expect(b.model.kvDType).toBe('kv4');
    expect(b.tokenizer.encode('Once upon a time')).toEqual(a.tokenizer.encode('Once upon a time'));
    expect(readFileSync(TOK).equals(Buffer.from(web.tokenizer!.files[0].bytes))).toBe(true);
  });

  it('refuses broken files with a message that says what is wrong', async () => {
    const good = readFileSync(comet);
    await rejects(good.subarray(0, 5), /too short|not a \.comet/);
    await rejects(good.subarray(0, Math.floor(good.length / 2)), /past the end of the file/, /truncated/);
    const flipped = Uint8Array.from(good);
    flipped[flipped.length - 100] ^= 0xff;
    await rejects(flipped, /corrupt \(checksum mismatch\)/);
    await rejects(new TextEncoder().encode('{"error": "not found"}'), /text file .* not a model/);
    await rejects(readFileSync(TOK), /not a \.comet file/);
    await rejects(readFileSync(S260K).subarray(0, 100_000), /must be \d+ bytes, file is 100000 bytes \(truncated\?\)/);
    const plain = join(dir, 'plain.safetensors');
    writeSafetensors(plain, [{ name: 'w', dtype: 'F32', shape: [2], data: new Float32Array(2) }]);
    await rejects(readFileSync(plain), /not a \.comet model/);
    await rejects(new Uint8Array(0), /empty/);
  });
});

describe('the demo model that ships in models/', () => {
  it('stories260K.comet is a W4A4KV4 model this version opens, and it tells a story', async () => {
    const shipped = join(REPO, 'models/stories260K.comet');
    const m = await loadModel(shipped);
    expect(m.meta!.kvDType).toBe('kv4');
    expect([...m.weights.values()].filter((w) => w.kind === 'w4').length).toBe(5 * 7); // q k v o gate up down per layer
    const e = await createEngine(shipped, { backend: 'sim' });
    const text = (await e.completions.create({ prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })).choices[0].text;
    expect(text).toMatch(/^[ ,.\w'"!?\n-]{40,}$/); // words, not noise (rebuild with: npm run demo:model -- --out models stories260K)
    e.close();
  });
});

describe('the comet/web library bundle (vite build --mode lib)', () => {
  it('builds, and its createEngine from bytes generates what the Node engine does', async () => {
    // inside the repo, so the bundle's bare imports (@huggingface/*, zod) resolve from node_modules
    const outDir = join(REPO, 'web/dist-lib');
    await build({ configFile: join(REPO, 'web/vite.config.ts'), mode: 'lib', logLevel: 'warn', build: { outDir } });
    const web = await import(/* @vite-ignore */ pathToFileURL(join(outDir, 'comet-web.js')).href);
    const request = { messages: [{ role: 'user' as const, content: 'Once upon a time' }], temperature: 0, max_tokens: 10 };
    const a = await web.createEngine(readFileSync(comet), { backend: 'sim' });
    let text = '';
    for await (const c of await a.chat.completions.create({ ...request, stream: true })) text += c.choices[0]?.delta.content ?? '';
    const b = await createEngine(comet, { backend: 'sim' });
    expect(text).toBe((await b.chat.completions.create(request)).choices[0].message.content);
    expect(a.mode).toBe('main'); // Node has no Worker: the engine runs on this thread
    expect(a.info.memory).toMatchObject({ modelBytes: web.weightBytes(b.opened.loaded) });
    a.close();
    b.close();
  });
});
