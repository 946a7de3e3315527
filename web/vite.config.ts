// The browser demo (web/) and the comet/web bundle.
//   vite --config web/vite.config.ts            dev server, http://127.0.0.1:5173
//   vite build --config web/vite.config.ts      static site in web/dist (models under dist/models/)
//   vite build --config web/vite.config.ts --mode lib    comet/web as one ES module, web/dist-lib/comet-web.js
//
// Models are served under /models/ from the repo's models/ (the embedded stories260K, float, llama2.c) and
// build/demo/ (the .comet files scripts/build-demo-model.ts writes); COMET_DEMO_MODELS puts directories
// first (colon-separated; the browser tests serve their own model and broken files from there). /models/index.json lists the demo's
// choices. The dev and preview servers send ETag and Content-Length, which the page's cache check uses.
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { defineConfig, type Plugin } from 'vite';

const REPO = resolve(import.meta.dirname, '..');
const SHIMS = resolve(import.meta.dirname, 'shims');

interface DemoModel { id: string; label: string; url: string; tokenizer?: string; bytes: number; prompt: string }

const modelDirs = () => [...(process.env.COMET_DEMO_MODELS ?? '').split(':').filter(Boolean), join(REPO, 'build/demo'), join(REPO, 'models')];

function findModel(name: string): string | undefined {
  if (!/^[\w.-]+$/.test(name)) return undefined;
  for (const d of modelDirs()) {
    const p = join(d, name);
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

/** A first prompt in the style of the model's training text (TinyStories, Wikipedia). */
const promptFor = (file: string) => (file.startsWith('stories') ? 'Once upon a time' : file.startsWith('wikillama') ? 'The history of' : 'Once upon a time');

/** The demo's model list: the W4A4KV4 .comet files first (the default: wikillama-28M when
 *  `npm run demo:model` built it into build/demo, else the stories260K.comet that ships in models/), then the
 *  float stories260K llama2.c checkpoint, as the float reference. */
function demoModels(): DemoModel[] {
  const out: DemoModel[] = [], seen = new Set<string>();
  for (const dir of [join(REPO, 'build/demo'), join(REPO, 'models')]) {
    const comets = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.comet') && !seen.has(f)).sort((a, b) => Number(b.startsWith('wikillama')) - Number(a.startsWith('wikillama'))) : [];
    for (const f of comets) {
      seen.add(f);
      out.push({ id: f.replace(/\.comet$/, ''), label: `${f.replace(/\.comet$/, '')} · W4A4KV4 .comet`, url: `models/${f}`, bytes: statSync(join(dir, f)).size, prompt: promptFor(f) });
    }
  }
  const s = join(REPO, 'models/stories260K.bin');
  if (existsSync(s)) out.push({ id: 'stories260K', label: 'stories260K · float32 llama2.c (embedded)', url: 'models/stories260K.bin', tokenizer: 'models/tok512.bin', bytes: statSync(s).size, prompt: promptFor('stories') });
  return out;
}

function serveModels(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const m = /^\/models\/([^?#]*)/.exec(req.url ?? '');
  if (!m || (req.method !== 'GET' && req.method !== 'HEAD')) return next();
  if (m[1] === 'index.json') {
    const body = JSON.stringify(demoModels());
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  const p = findModel(decodeURIComponent(m[1]));
  if (!p) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`no model ${m[1]}`);
    return;
  }
  const st = statSync(p);
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, { etag });
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size, etag, 'last-modified': st.mtime.toUTCString(), 'cache-control': 'no-cache' });
  if (req.method === 'HEAD') res.end();
  else createReadStream(p).pipe(res);
}

/** /models/ on the dev and preview servers, and copied into the static build. */
function models(): Plugin {
  return {
    name: 'comet-demo-models',
    configureServer: (s) => void s.middlewares.use(serveModels),
    configurePreviewServer: (s) => void s.middlewares.use(serveModels),
    async generateBundle() {
      const list = demoModels();
      this.emitFile({ type: 'asset', fileName: 'models/index.json', source: JSON.stringify(list) });
      const { readFileSync } = await import('node:fs');
      for (const m of list)
        for (const u of [m.url, m.tokenizer].filter((x): x is string => !!x))
          this.emitFile({ type: 'asset', fileName: u, source: readFileSync(findModel(u.replace(/^models\//, ''))!) });
    },
  };
}

/** src/engine/engine.ts also holds the Node entry (createEngine from a path: node:fs loaders, the CUDA addon).
 *  In the browser those parts are never called (comet/web opens models from bytes); swap them for stubs so
 *  the bundle neither carries them nor evaluates node:url at load. */
function browserEngine(): Plugin {
  const stub = join(SHIMS, 'node-engine.ts');
  return {
    name: 'comet-browser-engine',
    enforce: 'pre',
    resolveId(source, importer) {
      if (importer?.replace(/\\/g, '/').endsWith('/src/engine/engine.ts') && /^\.\.\/runtime\/(open|backends)\.ts$/.test(source)) return stub;
      return null;
    },
  };
}

export default defineConfig(({ mode }) => ({
  root: import.meta.dirname,
  base: './',
  publicDir: false,
  plugins: [browserEngine(), ...(mode === 'lib' ? [] : [models()])],
  // the engine's Worker (src/web/worker.ts) is bundled on its own: it needs the same stand-ins
  worker: { format: 'es', plugins: () => [browserEngine()] },
  server: { host: '127.0.0.1', port: 5173, fs: { allow: [REPO] } },
  preview: { host: '127.0.0.1', port: 4173 },
  build: mode === 'lib'
    ? { outDir: 'dist-lib', emptyOutDir: true, target: 'es2022', lib: { entry: join(REPO, 'src/web.ts'), formats: ['es'], fileName: 'comet-web' },
      // the package's own dependencies stay imports, so an app's bundler resolves and dedupes them
      rollupOptions: { external: [/^@huggingface\//, /^@petamoriken\//, 'zod'] } }
    : { outDir: 'dist', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 1024 },
}));
