// Structured output's cost (issue 19): generated tokens per second with and without a JSON-schema grammar,
// at batch 1 and 32, on the engine (simulator, embedded stories260K), in one run, alternating A/B so machine
// noise hits both; plus the grammar's own cost per token and sequence on a 32K vocabulary (Llama 2's
// tokenizer), the part that does not shrink when the model runs on a GPU.
//
//   npx tsx bench/structured/run.ts [--reps 3] [--tokens 96] [--out bench/results/structured-DATE]
//
// The constrained requests ask for {"story": string of 300-400 chars}, so the model writes the same kind of
// text as the plain ones (a story) inside the grammar, and every request of both kinds runs to max_tokens
// (same lengths, same contexts); tok/s counts completion tokens over the batch's wall time.
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { SimBackend } from '../../backends/sim/sim.ts';
import { createEngine, type Engine } from '../../src/engine/engine.ts';
import { Grammars } from '../../src/engine/grammar.ts';
import { argmax } from '../../src/engine/sampler.ts';
import { openModel } from '../../src/runtime/open.ts';
import { loadTokenizer } from '../../src/tokenizer/index.ts';

const { values: a } = parseArgs({ options: { reps: { type: 'string', default: '3' }, tokens: { type: 'string', default: '96' }, out: { type: 'string', default: 'bench/results/structured-2026-12-02' } } });
const REPS = Number(a.reps), TOKENS = Number(a.tokens);
const SUBJECTS = ['a dog', 'a cat', 'Lily', 'Tom', 'a bird', 'the sun', 'a boat', 'Mom'];
const PROMPTS = Array.from({ length: 32 }, (_, i) => `${i % 2 ? 'Once upon a time' : 'One day'}, ${SUBJECTS[i % 8]} ${['saw', 'found', 'wanted', 'liked'][(i >> 3) % 4]}`);
const SCHEMA = { type: 'object', properties: { story: { type: 'string', minLength: 300, maxLength: 400 } }, required: ['story'] };

type Mode = 'plain' | 'json_schema' | 'logprobs5';
async function run(e: Engine, batch: number, mode: Mode): Promise<{ tokens: number; seconds: number; cpuSeconds: number }> {
  const t0 = performance.now(), c0 = process.cpuUsage();
  const one = (p: string) => e.chat.completions.create({
    messages: [{ role: 'user', content: p }], max_tokens: TOKENS, temperature: 0,
    ...(mode === 'json_schema' ? { response_format: { type: 'json_schema' as const, json_schema: { name: 'story', schema: SCHEMA } } } : {}),
    ...(mode === 'logprobs5' ? { logprobs: true, top_logprobs: 5 } : {}),
  });
  // batch 1: 8 requests one after another (a sample of 8 × TOKENS tokens); batch 32: 32 at once
  const rs = batch === 1 ? [] as Awaited<ReturnType<typeof one>>[] : await Promise.all(PROMPTS.slice(0, batch).map(one));
  if (batch === 1) for (const p of PROMPTS.slice(0, 8)) rs.push(await one(p));
  const c = process.cpuUsage(c0);
  return { tokens: rs.reduce((s, r) => s + r.usage.completion_tokens, 0), seconds: (performance.now() - t0) / 1000, cpuSeconds: (c.user + c.system) / 1e6 };
}

const cpuMs = (c0: NodeJS.CpuUsage) => { const c = process.cpuUsage(c0); return (c.user + c.system) / 1000; };
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const opened = await openModel(new SimBackend());
const e = await createEngine(opened, { maxBatch: 32 });
await run(e, 1, 'json_schema'); // compile the grammar and warm up once, outside the timings
const rows: { batch: number; mode: Mode; tokPerS: number[]; tokPerCpuS: number[]; tokens: number }[] = [];
for (const batch of [1, 32]) {
  const modes: Mode[] = ['plain', 'json_schema', 'logprobs5'];
  const got = new Map<Mode, { tps: number[]; cps: number[]; tokens: number }>(modes.map((m) => [m, { tps: [], cps: [], tokens: 0 }]));
  for (let r = 0; r < REPS; r++) for (const m of r % 2 ? [...modes].reverse() : modes) {
    const x = await run(e, batch, m);
    got.get(m)!.tps.push(x.tokens / x.seconds);
    got.get(m)!.cps.push(x.tokens / x.cpuSeconds);
    got.get(m)!.tokens = x.tokens;
    console.log(`batch ${batch} ${m}: ${x.tokens} tokens in ${x.seconds.toFixed(2)} s (${x.cpuSeconds.toFixed(2)} CPU s) = ${(x.tokens / x.seconds).toFixed(1)} tok/s`);
  }
  for (const m of modes) rows.push({ batch, mode: m, tokPerS: got.get(m)!.tps, tokPerCpuS: got.get(m)!.cps, tokens: got.get(m)!.tokens });
}
e.close();

// the grammar alone on a 32K byte-fallback vocabulary: mask + accept per token, for one sequence
const tok32 = await loadTokenizer('../shared/models/llama2-tokenizer/tokenizer.json');
const g = new Grammars(tok32, tok32.vocabSize, tok32.eos);
let t = performance.now(), c0 = process.cpuUsage();
const m0 = await g.matcher({ schema: SCHEMA, param: 'bench' });
const compileMs = performance.now() - t, compileCpuMs = cpuMs(c0);
// a walk through the grammar: random logits each step (seeded), masked, the best allowed token accepted
let seed = 1;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const row = new Float32Array(tok32.vocabSize), ids: number[] = [];
let maskMs = 0, maskCpuMs = 0; // mask, argmax, accept: not the random fill
while (ids.length < 200 && !m0.terminated) {
  for (let i = 0; i < row.length; i++) row[i] = rand();
  const w0 = performance.now(), c1 = process.cpuUsage();
  await m0.mask(row);
  const best = argmax(row);
  if (row[best] === -Infinity) throw new Error('the grammar allows no token');
  if (tok32.eos.includes(best)) break; // the reply is complete
  if (!m0.accept(best)) throw new Error(`the grammar refused token ${best}, which its mask allowed`);
  maskMs += performance.now() - w0;
  maskCpuMs += cpuMs(c1);
  ids.push(best);
}
maskMs /= ids.length;
maskCpuMs /= ids.length;
m0.dispose();

const ratio = (b: number, m: Mode, k: 'tokPerS' | 'tokPerCpuS') => median(rows.find((r) => r.batch === b && r.mode === m)![k]) / median(rows.find((r) => r.batch === b && r.mode === 'plain')![k]);
const device = `${cpus()[0]?.model ?? 'CPU'} (${cpus().length} cores, shared with other jobs), Node ${process.version}`;
const result = { date: '2026-12-02', device, command: `npx tsx bench/structured/run.ts --reps ${REPS} --tokens ${TOKENS}`, model: 'stories260K (sim backend)', rows, vocab32k: { tokens: ids.length, compileMs, compileCpuMs, maskMsPerToken: maskMs, maskCpuMsPerToken: maskCpuMs } };
writeFileSync(`${a.out}.json`, JSON.stringify(result, null, 2) + '\n');
const md = [
  `# Structured output cost (2026-12-02)`,
  ``,
  `Device: ${device}. Command: \`${result.command}\`. Engine on the simulator backend, embedded stories260K (512-token vocabulary), greedy, ${TOKENS} tokens per request (all run to max_tokens); batch 1 = 8 requests in turn, batch 32 = 32 at once; median of ${REPS} alternating runs. json_schema: \`${JSON.stringify(SCHEMA)}\` (XGrammar 0.1.27 WASM mask each step); logprobs5: \`logprobs: true, top_logprobs: 5\`.`,
  ``,
  `The machine is shared (2 cores, other jobs running): wall-clock tok/s swing with their load, so the table also gives tokens per CPU second of this process (the engine is one JS thread on the simulator), which contention does not change much.`,
  ``,
  `| batch | mode | generated tok/s (median) | runs | vs plain | tok per CPU s (median) | vs plain |`,
  `| --- | --- | --- | --- | --- | --- | --- |`,
  ...rows.map((r) => `| ${r.batch} | ${r.mode} | ${median(r.tokPerS).toFixed(1)} | ${r.tokPerS.map((x) => x.toFixed(1)).join(', ')} | ${(ratio(r.batch, r.mode, 'tokPerS') * 100).toFixed(1)}% | ${median(r.tokPerCpuS).toFixed(1)} | ${(ratio(r.batch, r.mode, 'tokPerCpuS') * 100).toFixed(1)}% |`),
  ``,
  `The grammar alone on Llama 2's 32K vocabulary: vocabulary + compile ${compileMs.toFixed(0)} ms wall, ${compileCpuMs.toFixed(0)} ms CPU (the vocabulary once per engine, the schema once, then cached); mask + accept ${maskMs.toFixed(3)} ms wall, ${maskCpuMs.toFixed(3)} ms CPU per token per sequence (a ${ids.length}-token walk through the grammar with random logits). This part does not shrink on a GPU: at batch 32 it adds 32 × that to each decode step on the JS thread, unless computed while the GPU runs the forward (not done yet).`,
  ``,
].join('\n');
writeFileSync(`${a.out}.md`, md);
console.log(md);
