// Full-text perplexity (DESIGN.md §8 protocol) sharded over worker processes: each worker runs
// `comet eval ppl --start-window s --windows n --json` on its slice; NLL sums are combined exactly.
//   npx tsx bench/ppl/run.ts --model M --text FILE [--ctx 512] [--workers 16] [--backend sim] [--windows N]
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const { values: a } = parseArgs({ options: {
  model: { type: 'string' }, text: { type: 'string' }, ctx: { type: 'string', default: '512' },
  workers: { type: 'string', default: String(cpus().length) }, backend: { type: 'string', default: 'sim' },
  windows: { type: 'string' }, reference: { type: 'string' }, out: { type: 'string', default: 'bench/results' }, label: { type: 'string' },
} });
if (!a.model || !a.text) throw new Error('usage: --model M --text FILE [--ctx 512] [--workers N] [--windows N] [--reference PPL]');
const comet = fileURLToPath(new URL('../../bin/comet.js', import.meta.url));
const ctx = Number(a.ctx);
// count windows with one tiny run (it tokenizes the text once)
const probe = await runWorker(0, 1);
const total = a.windows ? Math.min(Number(a.windows), probe.totalWindows) : probe.totalWindows;
const W = Math.min(Number(a.workers), total);
const t0 = performance.now();
const per = Math.ceil(total / W);
const parts = await Promise.all(Array.from({ length: W }, (_, i) => i * per).filter((s) => s < total).map((s) => runWorker(s, Math.min(per, total - s))));
const nll = parts.reduce((acc, p) => acc + p.nll * p.scored, 0), scored = parts.reduce((acc, p) => acc + p.scored, 0);
const ppl = Math.exp(nll / scored);
const seconds = (performance.now() - t0) / 1000;
const date = new Date().toISOString().slice(0, 10);
const ref = a.reference ? Number(a.reference) : undefined;
const res = { date, device: `${cpus()[0]?.model} (${W} workers)`, command: `npx tsx bench/ppl/run.ts ${process.argv.slice(2).join(' ')}`, model: a.model, text: a.text, backend: a.backend, ctx, windows: total, scored, ppl, reference: ref, relErr: ref ? ppl / ref - 1 : undefined, seconds };
console.log(JSON.stringify(res, null, 1));
mkdirSync(a.out!, { recursive: true });
const name = a.label ?? `ppl-${basename(a.model)}-${basename(a.text, '.txt')}-${a.backend}-${date}`;
writeFileSync(join(a.out!, `${name}.json`), JSON.stringify(res, null, 1));

function runWorker(start: number, windows: number): Promise<{ nll: number; scored: number; totalWindows: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [comet, 'eval', 'ppl', '--model', a.model!, '--text', a.text!, '--ctx', String(ctx), '--backend', a.backend!, '--start-window', String(start), '--windows', String(windows), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker ${start} exited ${code}`))));
  });
}
