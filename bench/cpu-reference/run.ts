// CPU reference speed (issue 3): tokens/s of the float path on the simulator backend, single-threaded, for a
// random-weight llama2.c checkpoint of the stories15M shape; optionally beside llama2.c's own `run` built
// by the user (gcc -O3, no OpenMP) on the same checkpoint, in the same run.
//   npx tsx bench/cpu-reference/run.ts [--llama2c /path/to/run] [--tokens 256] [--repeat 3]
import { mkdtempSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { STORIES15M, writeSyntheticLlama2c } from '../../testing/synthetic.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { loadModel } from '../../src/loaders/index.ts';
import { Llama } from '../../src/model/llama.ts';
import { generate } from '../../src/engine/generate.ts';

const { values: a } = parseArgs({ options: { llama2c: { type: 'string' }, tokens: { type: 'string', default: '255' }, repeat: { type: 'string', default: '3' }, out: { type: 'string', default: 'bench/results' } } });
const steps = Number(a.tokens), repeat = Number(a.repeat);
const dir = mkdtempSync(join(tmpdir(), 'comet-cpu-'));
const ckpt = join(dir, 'stories15M-random.bin');
writeSyntheticLlama2c(ckpt, STORIES15M, 1234);

const loaded = await loadModel(ckpt);
const model = new Llama(new SimBackend(), loaded.config, loaded.weights);
const ours: number[] = [];
for (let r = 0; r < repeat; r++) {
  let n = 0, t1 = 0;
  for await (const _ of generate(model, [1], { maxTokens: steps, temperature: 0, topP: 0, topK: 0, seed: 0, stop: [] })) {
    if (n++ === 0) t1 = performance.now();
  }
  ours.push((n - 1) / ((performance.now() - t1) / 1000));
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
let theirs: number | undefined;
if (a.llama2c) {
  const tok = join(import.meta.dirname, '../../../shared/models/llama2-tokenizer/tokenizer.bin');
  if (!existsSync(tok)) throw new Error(`llama2.c needs a 32000-token tokenizer.bin: ${tok} is missing`);
  const runs: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const p = spawnSync(a.llama2c, [ckpt, '-z', tok, '-t', '0', '-n', String(steps + 1), '-i', ''], { encoding: 'utf8' });
    const m = /achieved tok\/s: ([\d.]+)/.exec(p.stderr);
    if (!m) throw new Error(`llama2.c run failed: ${p.stderr}`);
    runs.push(Number(m[1]));
  }
  theirs = med(runs);
}
const date = new Date().toISOString().slice(0, 10);
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const res = { date, device: cpu, command: `npx tsx bench/cpu-reference/run.ts ${process.argv.slice(2).join(' ')}`.trim(), shape: 'stories15M (dim 288, hidden 768, 6 layers, 6/6 heads, vocab 32000, seq 256), random weights', steps, repeat, comet_sim_tok_s: med(ours), comet_runs: ours, llama2c_tok_s: theirs, ratio: theirs ? med(ours) / theirs : undefined };
const md = `# CPU reference speed (${date})\n\nDevice: ${cpu}, one thread. Command: \`${res.command}\`\n\n| engine | tok/s (median of ${repeat}) |\n| --- | --- |\n| COMET sim backend (float path) | ${med(ours).toFixed(1)} |\n| llama2.c run (gcc -O3, no OpenMP) | ${theirs?.toFixed(1) ?? 'not run (pass --llama2c)'} |\n${theirs ? `\nRatio: ${(med(ours) / theirs).toFixed(2)}× llama2.c.\n` : ''}`;
console.log(md);
mkdirSync(a.out!, { recursive: true });
writeFileSync(join(a.out!, `cpu-reference-${date}.json`), JSON.stringify(res, null, 1));
writeFileSync(join(a.out!, `cpu-reference-${date}.md`), md);
