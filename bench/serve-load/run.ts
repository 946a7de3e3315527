// Serving load test (issue 7): a fixed number of streaming completion requests, `--concurrency` in flight,
// against `comet serve` started as a child process on loopback (or an already running server, --url).
// Reports requests/s, output tokens/s, time to first token, inter-token latency and end-to-end latency
// percentiles; writes bench/results/serve-load-<date>-<device>.{md,json}. Bounded: no new request after
// --time-limit seconds, and anything still running at 1.5x that is aborted (counted as an error).
//   npx tsx bench/serve-load/run.ts [--backend sim|cuda|webgpu] [--model m] [--requests 64] [--concurrency 16]
//                                   [--max-tokens 64] [--time-limit 120] [--device name] [--tag t] [--url http://127.0.0.1:8000]
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort } from '../../testing/net.ts';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'sim' }, model: { type: 'string' }, url: { type: 'string' },
    requests: { type: 'string', default: '64' }, concurrency: { type: 'string', default: '16' },
    'max-tokens': { type: 'string', default: '64' }, 'time-limit': { type: 'string', default: '120' },
    'max-batch': { type: 'string', default: '32' }, device: { type: 'string' }, tag: { type: 'string' }, out: { type: 'string', default: 'bench/results' },
  },
});
const N = Number(a.requests), C = Number(a.concurrency), maxTokens = Number(a['max-tokens']), limitS = Number(a['time-limit']);

const SUBJECTS = ['a little dog', 'a small cat', 'Lily', 'Tom', 'a red bird', 'the sun', 'a big boat', 'Mom', 'a frog', 'Ben'];
const VERBS = ['saw', 'found', 'wanted', 'liked', 'lost', 'made'];
const prompt = (i: number) => `${i % 2 ? 'Once upon a time' : 'One day'}, ${SUBJECTS[i % SUBJECTS.length]} ${VERBS[Math.floor(i / SUBJECTS.length) % VERBS.length]}`;


async function startChild(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const args = ['bin/comet.js', 'serve', '--backend', a.backend!, '--port', String(port), '--max-batch', a['max-batch']!, '--max-queue', String(N), '--log-level', 'warn'];
  if (a.model) args.push('--model', a.model);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`comet serve exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, child };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error('comet serve did not come up in 60 s');
}

interface Result { ok: boolean; ttft?: number; itl: number[]; e2e?: number; tokens: number; error?: string }

async function one(url: string, i: number, hard: AbortSignal): Promise<Result> {
  const t0 = performance.now(), itl: number[] = [];
  let tPrev = 0, ttft: number | undefined, tokens = 0, buf = '';
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST', signal: hard, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: prompt(i), max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
    });
    if (!res.ok) return { ok: false, itl, tokens, error: `HTTP ${res.status}` };
    const dec = new TextDecoder();
    for await (const part of res.body!) {
      buf += dec.decode(part as Uint8Array, { stream: true });
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const data = buf.slice(6, k);
        buf = buf.slice(k + 2);
        if (data === '[DONE]') continue;
        const ev = JSON.parse(data);
        if (ev.error) return { ok: false, itl, tokens, error: ev.error.code };
        if (ev.usage) tokens = ev.usage.completion_tokens;
        if (!ev.choices?.[0]?.text) continue;
        const t = performance.now();
        if (ttft === undefined) ttft = t - t0;
        else itl.push(t - tPrev);
        tPrev = t;
      }
    }
    return { ok: true, ttft, itl, e2e: performance.now() - t0, tokens };
  } catch (e) {
    return { ok: false, itl, tokens, error: (e as Error).name };
  }
}

const pct = (x: number[], p: number) => {
  if (x.length === 0) return NaN;
  const s = [...x].sort((u, v) => u - v);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const stats = (x: number[]) => ({ p50: pct(x, 50), p90: pct(x, 90), p99: pct(x, 99), mean: x.reduce((u, v) => u + v, 0) / Math.max(1, x.length) });

const srv = a.url ? { url: a.url, child: undefined } : await startChild();
try {
  const hard = AbortSignal.timeout(limitS * 1500);
  const results: Result[] = [];
  let next = 0;
  const t0 = performance.now();
  await one(srv.url, 0, hard); // warm-up (JIT, first allocations), not counted
  const tStart = performance.now();
  await Promise.all(Array.from({ length: C }, async () => {
    while (next < N && performance.now() - t0 < limitS * 1000) results.push(await one(srv.url, next++, hard));
  }));
  const wall = (performance.now() - tStart) / 1000;
  const ok = results.filter((r) => r.ok);
  const tokens = ok.reduce((u, r) => u + r.tokens, 0);
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  const device = a.device ?? deviceName();
  const report = {
    date: new Date().toISOString(), device, backend: a.backend, model: a.model ?? 'stories260K (embedded)',
    config: { requests: N, concurrency: C, maxTokens, maxBatch: Number(a['max-batch']), timeLimitS: limitS },
    completed: ok.length, errors: results.length - ok.length, errorKinds: countBy(results.filter((r) => !r.ok).map((r) => r.error!)),
    wallS: +wall.toFixed(3), requestsPerS: +(ok.length / wall).toFixed(2), outputTokensPerS: +(tokens / wall).toFixed(1), outputTokens: tokens,
    ttftMs: round(stats(ok.map((r) => r.ttft!).filter((x) => x !== undefined))),
    itlMs: round(stats(ok.flatMap((r) => r.itl))),
    e2eMs: round(stats(ok.map((r) => r.e2e!))),
    kvPagesUsedAfter: Number(/^comet_kv_pages_used (\d+)/m.exec(metrics)?.[1]),
    preemptions: Number(/^comet_preemptions_total (\d+)/m.exec(metrics)?.[1]),
  };
  mkdirSync(a.out!, { recursive: true });
  const base = join(a.out!, `serve-load-${report.date.slice(0, 10)}-${device.replace(/[^A-Za-z0-9._-]+/g, '-')}${a.tag ? `-${a.tag}` : ''}`);
  writeFileSync(`${base}.json`, JSON.stringify(report, null, 2) + '\n');
  const row = (name: string, s: Record<string, number>) => `| ${name} | ${s.p50} | ${s.p90} | ${s.p99} | ${s.mean} |`;
  writeFileSync(`${base}.md`, [
    `# Serving load (${report.date.slice(0, 10)}, ${device}, backend ${a.backend})`, '',
    `Command: \`npx tsx bench/serve-load/run.ts ${process.argv.slice(2).join(' ')}\``, '',
    `Model ${report.model}; ${N} streaming completions (greedy, max_tokens ${maxTokens}), ${C} in flight, server max-batch ${a['max-batch']}; loopback, server in its own process.`, '',
    `Completed ${ok.length}, errors ${report.errors}; wall ${report.wallS} s; **${report.requestsPerS} requests/s, ${report.outputTokensPerS} output tokens/s**; KV pages in use afterwards: ${report.kvPagesUsedAfter}; preemptions: ${report.preemptions}.`, '',
    '| latency (ms) | p50 | p90 | p99 | mean |', '| --- | --- | --- | --- | --- |',
    row('time to first token', report.ttftMs), row('inter-token', report.itlMs), row('end to end', report.e2eMs), '',
  ].join('\n'));
  console.log(JSON.stringify(report, null, 2));
  console.log(`wrote ${base}.md and .json`);
} finally {
  srv.child?.kill('SIGTERM');
}

function countBy(x: string[]) {
  return x.reduce<Record<string, number>>((m, k) => ((m[k] = (m[k] ?? 0) + 1), m), {});
}
function round(s: Record<string, number>) {
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, +v.toFixed(2)]));
}
function deviceName(): string {
  if (a.backend === 'cuda') {
    try {
      return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' }).split('\n')[0].trim();
    } catch { /* fall through */ }
  }
  return `cpu-${cpus()[0]?.model.split(' ').slice(0, 2).join('-') ?? 'unknown'}`;
}
