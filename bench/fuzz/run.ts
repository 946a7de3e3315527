// Fuzz every file format COMET reads (issue 10): N seeded cases per format, each in a worker process with a
// deadline (testing/fuzz/cases.ts says what a case is and what counts as a failure). Prints the counts and writes
// bench/results/fuzz-<date>.md and .json.
//
//   npx tsx bench/fuzz/run.ts [--cases 10000] [--seed 1] [--formats hf,comet] [--deadline 10000] [--no-write]
//   npx tsx bench/fuzz/run.ts --replay hf-sharded:1:4711 [--keep DIR]   one case: its mutation, files and outcome
// Exit status 1 when any case failed (non-CometError, unnamed error, hang, crash, allocation or RSS bound).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FAILURES, FORMATS, type FuzzFormat, makeCase, type Outcome, parseId, REPO } from '../../testing/fuzz/cases.ts';
import { messageClass, runCases } from '../../testing/fuzz/runner.ts';

const { values: a } = parseArgs({
  options: {
    cases: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' }, formats: { type: 'string' },
    deadline: { type: 'string', default: '10000' }, replay: { type: 'string' }, keep: { type: 'string' }, 'no-write': { type: 'boolean' },
  },
});

if (a.replay) {
  const id = parseId(a.replay);
  const c = await makeCase(id.format, id.seed, id.index);
  console.log(`${c.id}  base ${c.base}  mutation: ${c.mutation}`);
  if (a.keep) {
    mkdirSync(a.keep, { recursive: true });
    for (const [f, b] of Object.entries(c.files)) writeFileSync(join(a.keep, f), b);
    console.log(`files written to ${a.keep} (load ${c.entry ? join(a.keep, c.entry) : a.keep})`);
  }
  const [o] = await runCases([id], { deadlineMs: Number(a.deadline) });
  console.log(JSON.stringify(o, null, 2));
  process.exit(FAILURES.includes(o.kind) ? 1 : 0);
}

export interface FormatStats {
  format: FuzzFormat;
  tried: number;
  kinds: Record<string, number>;
  failures: Outcome[]; // first 50
  errorClasses: Record<string, number>; // CometError messages, path and numbers taken out
  mutations: Record<string, number>; // mutation family -> count
  validWithNonFinite: number;
  runErrors: number; // CometErrors raised by the checked run of a valid load (allowed)
  maxAllocRatio: number; // largest single allocation while loading / input bytes
  maxAllocBytes: number;
  maxRssGrowthMiB: number;
  maxMs: number;
  meanMs: number;
  seconds: number;
}

const N = Number(a.cases), seed = Number(a.seed);
const formats = (a.formats ? a.formats.split(',') : [...FORMATS]) as FuzzFormat[];
const results: FormatStats[] = [];
const t00 = performance.now();
for (const format of formats) {
  const t0 = performance.now();
  const s: FormatStats = { format, tried: 0, kinds: {}, failures: [], errorClasses: {}, mutations: {}, validWithNonFinite: 0, runErrors: 0, maxAllocRatio: 0, maxAllocBytes: 0, maxRssGrowthMiB: 0, maxMs: 0, meanMs: 0, seconds: 0 };
  let msSum = 0;
  const ids = Array.from({ length: N }, (_, index) => ({ format, seed, index }));
  await runCases(ids, {
    deadlineMs: Number(a.deadline),
    onOutcome: (o, done) => {
      s.tried++;
      s.kinds[o.kind] = (s.kinds[o.kind] ?? 0) + 1;
      if (FAILURES.includes(o.kind) && s.failures.length < 50) s.failures.push(o);
      if (o.kind === 'error' && o.message) {
        const k = messageClass(o.message);
        s.errorClasses[k] = (s.errorClasses[k] ?? 0) + 1;
      }
      const fam = (o.mutation ?? o.kind).replace(/^[^:]*: /, '').split(/[ =(]/)[0] + (o.mutation?.includes('json:') ? ' ' + o.mutation.split('json:')[1].split(' ')[0] : '');
      s.mutations[fam] = (s.mutations[fam] ?? 0) + 1;
      if (o.nonFinite) s.validWithNonFinite++;
      if (o.runError) s.runErrors++;
      if (o.inputBytes) s.maxAllocRatio = Math.max(s.maxAllocRatio, (o.allocMax ?? 0) / o.inputBytes);
      s.maxAllocBytes = Math.max(s.maxAllocBytes, o.allocMax ?? 0);
      s.maxRssGrowthMiB = Math.max(s.maxRssGrowthMiB, (o.rssPeakGrowth ?? 0) / 2 ** 20);
      s.maxMs = Math.max(s.maxMs, o.ms ?? 0);
      msSum += o.ms ?? 0;
      if (FAILURES.includes(o.kind)) console.log(`  FAIL ${o.kind} ${o.id} [${o.mutation ?? ''}] ${o.message ?? ''}`);
      if (done % 1000 === 0) console.error(`  ${format}: ${done}/${N}`);
    },
  });
  s.meanMs = msSum / Math.max(1, s.tried);
  s.seconds = (performance.now() - t0) / 1000;
  results.push(s);
  const fails = FAILURES.reduce((x, k) => x + (s.kinds[k] ?? 0), 0);
  console.log(`${format.padEnd(15)} tried ${s.tried}  valid ${s.kinds.ok ?? 0}  errors ${s.kinds.error ?? 0}  failures ${fails} ` +
    `(${FAILURES.map((k) => `${k} ${s.kinds[k] ?? 0}`).join(', ')})  non-finite loads ${s.validWithNonFinite}  ` +
    `largest alloc ${(s.maxAllocBytes / 1024).toFixed(0)} KiB  max RSS growth ${s.maxRssGrowthMiB.toFixed(1)} MiB  ${s.seconds.toFixed(0)} s`);
}

const total = (k: string) => results.reduce((x, s) => x + (s.kinds[k] ?? 0), 0);
const failures = FAILURES.reduce((x, k) => x + total(k), 0);
console.log(`\nall formats: ${results.reduce((x, s) => x + s.tried, 0)} cases, valid ${total('ok')}, CometErrors ${total('error')}, ` +
  `crashes (non-CometError) ${total('foreign')}, hangs ${total('hang')}, worker crashes ${total('crash')}, unnamed errors ${total('unnamed')}, ` +
  `allocation bound ${total('alloc')}, RSS bound ${total('rss')}; ${((performance.now() - t00) / 1000).toFixed(0)} s`);

if (!a['no-write']) {
  const date = new Date().toISOString().slice(0, 10);
  const dir = join(REPO, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const meta = { date: new Date().toISOString(), seed, casesPerFormat: N, deadlineMs: Number(a.deadline), node: process.version, host: `${process.platform} ${process.arch}`, failures };
  writeFileSync(join(dir, `fuzz-${date}.json`), JSON.stringify({ meta, results }, null, 1));
  const md = [`# Fuzz: every file format (${meta.date})`, '',
    `${N} cases per format, seed ${seed}, a ${meta.deadlineMs} ms deadline per case, one worker process (node ${process.version}). ` +
    'A case is `format:seed:index`; replay one with `npx tsx bench/fuzz/run.ts --replay <id> --keep DIR`. ' +
    'valid = the file loaded and its checked run (greedy decode / encode-decode) did not crash; error = a CometError naming the file; ' +
    'failures = non-CometError, unnamed error, hang, worker crash, an allocation above 2 x input + 1 MiB, or peak RSS growth above 8 x input + 128 MiB.', '',
    '| format | cases | valid | CometError | failures | non-finite weights loaded | run-time CometErrors | largest single allocation | max peak RSS growth | mean ms | max ms |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...results.map((s) => `| ${s.format} | ${s.tried} | ${s.kinds.ok ?? 0} | ${s.kinds.error ?? 0} | ${FAILURES.reduce((x, k) => x + (s.kinds[k] ?? 0), 0)} | ${s.validWithNonFinite} | ${s.runErrors} | ${(s.maxAllocBytes / 1024).toFixed(0)} KiB | ${s.maxRssGrowthMiB.toFixed(1)} MiB | ${s.meanMs.toFixed(1)} | ${s.maxMs.toFixed(0)} |`),
    '', 'Inputs are small (a few KB to 1 MB for the mutated huge headers), so the largest allocation is often the 256 KiB f16 table or a file-sized buffer; every allocation is checked against 2 × the input + 1 MiB before it is made.',
    '', `**crashes (non-CometError) = ${total('foreign')}, hangs = ${total('hang')}, worker crashes = ${total('crash')}, unnamed errors = ${total('unnamed')}, allocation bound = ${total('alloc')}, RSS bound = ${total('rss')}**`, '',
    ...results.flatMap((s) => [`## ${s.format}`, '', 'Most frequent error classes:', '',
      ...Object.entries(s.errorClasses).sort((x, y) => y[1] - x[1]).slice(0, 12).map(([k, v]) => `- ${v} × \`${k.replaceAll('`', "'")}\``), '',
      ...(s.failures.length ? ['Failures:', '', ...s.failures.slice(0, 20).map((o) => `- ${o.kind} \`${o.id}\` [${o.mutation}]: ${o.message}`), ''] : [])]),
  ];
  writeFileSync(join(dir, `fuzz-${date}.md`), md.join('\n') + '\n');
  console.log(`wrote bench/results/fuzz-${date}.md and .json`);
}
process.exit(failures ? 1 : 0);
