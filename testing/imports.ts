// The repository's import graph, read from the sources (no compiler needed): every static `import`/`export ...
// from`, side-effect `import '...'` and `import('...')` with a literal path, between the repository's own
// .ts/.js files. Two rules a maintainer checks (test/imports.test.ts; `npm run check:imports` prints them):
//   1. no import cycles (type-only edges included: a cycle of types is still a circle to read);
//   2. imports between top folders point one way, down the layers below (a folder imports its own layer or a
//      lower one, never a higher or a sibling one outside LAYERS' allowances).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../', import.meta.url));

/** Top folders and what each may import (besides itself). simulator → nothing; backends → simulator;
 *  src → backends, simulator; testing (generators and harnesses shared by test/ and bench/) → the product;
 *  the consumers (test, bench, scripts, web, bin) → testing and the product; scripts/ (the demo model's
 *  builder) is also used by the browser tests. */
export const LAYERS: Record<string, readonly string[]> = {
  simulator: [],
  backends: ['simulator'],
  src: ['backends', 'simulator'],
  testing: ['src', 'backends', 'simulator'],
  scripts: ['testing', 'src', 'backends', 'simulator'],
  web: ['src', 'backends', 'simulator'],
  bench: ['testing', 'src', 'backends', 'simulator'],
  test: ['testing', 'scripts', 'web', 'src', 'backends', 'simulator'],
  bin: ['src', 'backends', 'simulator'],
};
/** Cycles known and owned elsewhere, each with the issue that removes it: reported, not failed. An entry that
 *  no longer occurs is reported too (delete it); any other cycle fails. */
export const KNOWN_CYCLES: Record<string, string> = {};

/** Imports against the layers that are there by design, each with its reason. */
export const ALLOWED: Record<string, string> = {
  'src/cli/main.ts -> bench/e2e/e2e.ts': 'the thin `comet bench e2e` entry: a dynamic import of the benchmark, which lives under bench/',
  'bin/comet.js -> dist/src/cli/main.js': 'an installed package runs its build (dist/ is src/ compiled by scripts/build.mjs); a checkout runs src/ through tsx',
};
const SKIP = new Set(['node_modules', 'build', 'dist', 'dist-lib', '.git', '.device', 'results', 'models', 'shared', 'tmp']);

function* sources(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name) || e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (/\.(ts|js|mjs)$/.test(e.name) && !e.name.endsWith('.d.ts')) yield p;
  }
}

/** Strip comments, keeping string literals (a `//` inside a string is not a comment). */
function stripComments(s: string): string {
  return s.replace(/\/\*[\s\S]*?\*\/|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|\/\/[^\n]*/g, (m, str) => str ?? '');
}

const SPEC = [
  /(?:^|[\n;])\s*(?:import|export)\s[^'";]*?\sfrom\s*['"]([^'"]+)['"]/g, // import x from '...', export { y } from '...'
  /(?:^|[\n;])\s*import\s*['"]([^'"]+)['"]/g, // import '...'
  /\bimport\(\s*(?:\/\*[^*]*\*\/\s*)?['"]([^'"]+)['"]\s*\)/g, // import('...')
];

export interface Graph { files: string[]; edges: Map<string, Set<string>> }

/** Relative imports between repository files, as repository-relative paths with '/' separators. */
export function importGraph(root = REPO): Graph {
  const files = [...new Set(Object.keys(LAYERS).filter((d) => existsSync(join(root, d))).flatMap((d) => [...sources(join(root, d))]))];
  const rel = (p: string) => relative(root, p).split(sep).join('/');
  const edges = new Map<string, Set<string>>();
  for (const f of files) {
    const text = stripComments(readFileSync(f, 'utf8'));
    const out = new Set<string>();
    for (const re of SPEC)
      for (const m of text.matchAll(re)) {
        const spec = m[1];
        if (!spec.startsWith('.')) continue; // a package
        const target = resolve(dirname(f), spec.split('?')[0]);
        if (existsSync(target) && statSync(target).isFile()) out.add(rel(target));
      }
    edges.set(rel(f), out);
  }
  return { files: files.map(rel), edges };
}

const top = (f: string) => f.split('/')[0];

/** Imports that cross top folders against LAYERS: "from -> to". */
export function upwardImports(g: Graph): string[] {
  const bad: string[] = [];
  for (const [from, tos] of g.edges)
    for (const to of tos) {
      const a = top(from), b = top(to);
      if (a !== b && !(LAYERS[a] ?? []).includes(b) && !(`${from} -> ${to}` in ALLOWED)) bad.push(`${from} -> ${to}`);
    }
  return bad.sort();
}

/** The import cycles: each strongly connected component of more than one file (or a file importing itself),
 *  as a list of its files (Tarjan's algorithm). */
export function importCycles(g: Graph): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), on = new Set<string>(), stack: string[] = [];
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); on.add(v);
    for (const w of g.edges.get(v) ?? []) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do { w = stack.pop()!; on.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1 || g.edges.get(v)?.has(v)) out.push(comp.sort());
    }
  };
  for (const f of g.edges.keys()) if (!idx.has(f)) visit(f);
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const g = importGraph();
  const up = upwardImports(g), cycles = importCycles(g);
  console.log(`${g.files.length} files, ${[...g.edges.values()].reduce((n, s) => n + s.size, 0)} imports`);
  for (const e of up) console.log(`upward import: ${e}`);
  const named = cycles.map((c) => c.join(' <-> ')), fresh = named.filter((c) => !(c in KNOWN_CYCLES));
  for (const c of named) console.log(`cycle: ${c}${c in KNOWN_CYCLES ? ` (known: ${KNOWN_CYCLES[c]})` : ''}`);
  for (const k of Object.keys(KNOWN_CYCLES)) if (!named.includes(k)) console.log(`KNOWN_CYCLES entry no longer occurs (delete it): ${k}`);
  process.exit(up.length || fresh.length ? 1 : 0);
}
