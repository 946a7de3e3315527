// Server chaos benchmark (issue 10): testing/chaos.ts against `comet serve --backend sim` on loopback.
// Prints the counts (requests by kind and outcome, leaks, crashes) and writes bench/results/chaos-<date>.md/.json.
//   npx tsx bench/chaos/run.ts [--seed 1] [--requests 300] [--rounds 3] [--concurrency 12] [--no-write]
//     [--backend cuda --max-batch 256 --max-queue 64 --kv-memory 16M --max-step-tokens 4096] [--out dir]
// Exit status 1 on any failure (a wrong text, a 500, a wrong status, a timeout, a leak, a crash, RSS growth).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULTS, FAILURE_OUTCOMES, REPO, runChaos } from '../../testing/chaos.ts';

const { values: a } = parseArgs({
  options: {
    seed: { type: 'string' }, requests: { type: 'string' }, rounds: { type: 'string' }, concurrency: { type: 'string' },
    deadline: { type: 'string' }, 'no-write': { type: 'boolean' }, backend: { type: 'string' }, 'max-batch': { type: 'string' },
    'max-queue': { type: 'string' }, 'kv-memory': { type: 'string' }, 'max-step-tokens': { type: 'string' }, out: { type: 'string' },
  },
});
const o = {
  ...DEFAULTS,
  ...(a.seed ? { seed: Number(a.seed) } : {}), ...(a.requests ? { requests: Number(a.requests) } : {}),
  ...(a.rounds ? { rounds: Number(a.rounds) } : {}), ...(a.concurrency ? { concurrency: Number(a.concurrency) } : {}),
  ...(a.deadline ? { deadlineS: Number(a.deadline) } : {}),
  ...(a.backend ? { backend: a.backend } : {}), ...(a['max-batch'] ? { maxBatch: Number(a['max-batch']) } : {}),
  ...(a['max-queue'] ? { maxQueue: Number(a['max-queue']) } : {}), ...(a['kv-memory'] ? { kvMemory: a['kv-memory'] } : {}),
  ...(a['max-step-tokens'] ? { maxStepTokens: Number(a['max-step-tokens']) } : {}),
  log: (s: string) => console.error(s),
};
const r = await runChaos(o);
const kinds = Object.keys(r.counts).sort();
const outcomes = [...new Set(kinds.flatMap((k) => Object.keys(r.counts[k])))].sort();
const total = Object.values(r.outcomes).reduce((x, y) => x + y, 0);
console.log(`chaos: ${total} requests in ${r.options.rounds} rounds (+${r.baselineRequests} baseline requests alone), ${r.seconds.toFixed(0)} s`);
for (const k of kinds) console.log(`  ${k.padEnd(28)} ${Object.entries(r.counts[k]).map(([x, n]) => `${x} ${n}`).join(', ')}`);
console.log(`outcomes: ${Object.entries(r.outcomes).map(([x, n]) => `${x} ${n}`).join(', ')}`);
console.log(`leaks = ${r.leaks} (kv pages used ${r.kv.used}, free ${r.kv.free}/${r.kv.total}), crashes = ${r.crashes}, health ${r.health ? 'ok' : 'FAILED'}, ` +
  `preemptions ${r.preemptions}, peak step ${r.peakStepSequences} sequences / ${r.peakStepPrefills} prefills, server RSS ${r.rssMiB.map((x) => x.toFixed(0)).join(' -> ')} MiB`);
console.log(`server's own counts (requests_total): ${Object.entries(r.serverRequests).map(([x, n]) => `${x} ${n}`).join(', ')}`);
for (const f of r.failures) console.log(`  FAIL ${f}`);
console.log(r.failures.length ? `${r.failures.length} failure(s)` : 'no failures');

if (!a['no-write']) {
  const date = new Date().toISOString().slice(0, 10), dir = a.out ?? join(REPO, 'bench/results');
  const name = `chaos-${date}${o.backend === 'sim' ? '' : `-${o.backend}`}`;
  mkdirSync(dir, { recursive: true });
  const { log: _log, ...opts } = o;
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ date: new Date().toISOString(), node: process.version, ...r, options: opts }, null, 1));
  const md = [`# Server chaos (${new Date().toISOString()})`, '',
    `\`comet serve --backend ${o.backend}\` (embedded stories260K) on 127.0.0.1 as a child process: max-batch ${o.maxBatch}, max-queue ${o.maxQueue}, ` +
    `kv-memory ${o.kvMemory} (preemption happens), max-step-tokens ${o.maxStepTokens ?? Math.max(64, o.maxBatch)}, max-body ${o.maxBody} bytes. ${o.rounds} rounds of ${o.requests} seeded requests (seed ${o.seed}), ` +
    `${o.concurrency} clients at a time, plus bursts of max-batch + max-queue + 2..5 requests at once; 15% of valid streams are read slowly (40 ms per read). Every valid request is greedy; ` +
    `its text is compared with the same request sent alone to the idle server first (${r.baselineRequests} distinct requests).`, '',
    `Command: \`npx tsx bench/chaos/run.ts ${process.argv.slice(2).join(' ')}\`${process.env.COMET_DEVICE_NAME ? `; device: ${process.env.COMET_DEVICE_NAME}` : ''}.`, '',
    `| request kind | ${outcomes.join(' | ')} |`, `| --- | ${outcomes.map(() => '---').join(' | ')} |`,
    ...kinds.map((k) => `| ${k} | ${outcomes.map((x) => r.counts[k][x] ?? 0).join(' | ')} |`), '',
    `Failure outcomes: ${FAILURE_OUTCOMES.join(', ')}. **failures = ${r.failures.length}, leaks = ${r.leaks}, crashes = ${r.crashes}**, ` +
    `/health after: ${r.health ? 'ok' : 'FAILED'}; KV pages after draining: used ${r.kv.used}, free ${r.kv.free} of ${r.kv.total}; preemptions ${r.preemptions}; ` +
    `the server's own requests_total: ${Object.entries(r.serverRequests).map(([x, n]) => `${x} ${n}`).join(', ')}; ` +
    `server RSS (MiB) after the baseline and after each round: ${r.rssMiB.map((x) => x.toFixed(0)).join(' → ')} (bound: ${o.rssBoundMiB} MiB growth after round 1); ${r.seconds.toFixed(0)} s.`,
    ...(r.failures.length ? ['', 'Failures:', '', ...r.failures.map((f) => `- ${f}`)] : []), ''];
  writeFileSync(join(dir, `${name}.md`), md.join('\n'));
  console.log(`wrote ${join(dir, name)}.md and .json`);
}
process.exit(r.failures.length ? 1 : 0);
