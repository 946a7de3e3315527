// The package build (`npm run build`; runs at `npm install` of a checkout through `prepare` and at `npm pack`
// through `prepack`): plain JavaScript, so it needs nothing but the devDependencies.
//   1. tsc -p tsconfig.build.json: src/, backends/, simulator/ -> dist/ as JS + .d.ts (relative .ts imports
//      rewritten to .js, in the .d.ts files here); dist/ mirrors the repo root, so asset URLs (../../models, ../../shaders) resolve alike
//   2. the assets those URLs name, copied beside: models/ (the embedded stories260K), shaders/, cuda/ (the
//      sources `comet build-cuda` compiles into dist/build/Release, where backends/cuda/addon looks)
//   3. comet/web: the Vite library bundle (dist/web/comet-web.js, WGSL inlined; `npm run build:lib` makes the
//      same bundle in web/dist-lib for the demo and the browser tests)
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const t0 = Date.now();
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(bin('tsc'), ['-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
// tsc rewrites `.ts` import paths in the JS it emits but not in the .d.ts files: there they must name .js too
for (const f of readdirSync(join(root, 'dist'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.d.ts'))) {
  const p = join(root, 'dist', f), text = readFileSync(p, 'utf8');
  const fixed = text.replace(/(from\s+|import\()(['"])(\.{1,2}\/[^'"]*?)\.ts\2/g, '$1$2$3.js$2');
  if (fixed !== text) writeFileSync(p, fixed);
}
for (const d of ['models', 'shaders', 'cuda']) cpSync(join(root, d), join(root, 'dist', d), { recursive: true, filter: (p) => !/NOTES-.*\.md$/.test(p) });
execFileSync(bin('vite'), ['build', '--config', join(root, 'web/vite.config.ts'), '--mode', 'lib', '--outDir', join(root, 'dist/web'), '--emptyOutDir', '--logLevel', 'warn'], { stdio: 'inherit', cwd: root });
console.log(`comet: built dist/ in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
