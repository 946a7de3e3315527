// llama.cpp (through npm node-llama-cpp, pinned 3.21.1, CPU) as a peer COMET is checked against. Kept out of the
// package's dependencies (~730 MB of binaries for every platform): ensureLlamaCpp() installs it once into a
// cache folder, and each run is a child process (`node --import tsx llama-cpp.ts job.json`), so a native crash fails the
// test that asked instead of the test runner.
//
// A job: { dir, model, prompts: number[][] (token ids, BOS included), steps, topProbs }. The answer, on stdout,
// one JSON object: per prompt, llama.cpp's greedy continuation (`steps` tokens) and, teacher-forced along
// prompt + continuation, the probabilities of the `topProbs` most likely next tokens at each position (softmax of
// the raw logits: temperature 1, no top-k/top-p/min-p), plus llama.cpp's own tokenization of `texts`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const LLAMA_CPP_VERSION = '3.21.1';

/** The folder that holds node_modules/node-llama-cpp (installed there on first use; npm's cache makes later
 *  installs on the same machine quick). COMET_TEST_LLAMA_CPP_DIR overrides the place. */
export interface LlamaCppJob {
  dir: string; // from ensureLlamaCpp
  tmp: string; // where the job file goes
  model: string;
  prompts: number[][];
  steps: number;
  topProbs: number;
  texts?: string[];
}
export interface LlamaCppAnswer {
  results: Array<{ greedy: number[]; probs: Array<Array<[number, number]>> }>;
  tokenized: number[][];
  bos: number | null;
  eos: number | null;
}

export function ensureLlamaCpp(): { dir: string; installedMs: number } {
  const dir = process.env.COMET_TEST_LLAMA_CPP_DIR ?? join(homedir(), '.cache', 'comet', `node-llama-cpp-${LLAMA_CPP_VERSION}`);
  const pkg = join(dir, 'node_modules', 'node-llama-cpp', 'package.json');
  if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).version === LLAMA_CPP_VERSION) return { dir, installedMs: 0 };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'comet-llama-cpp-peer', private: true, type: 'module' }));
  const t0 = Date.now();
  // --ignore-scripts: its postinstall would try to download or build llama.cpp; the prebuilt CPU binaries ship
  // in @node-llama-cpp/<platform> packages
  execFileSync('npm', ['install', `node-llama-cpp@${LLAMA_CPP_VERSION}`, '--save-exact', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  return { dir, installedMs: Date.now() - t0 };
}

/** Run one job in a child process; returns the parsed answer. */
export function runLlamaCpp(job: LlamaCppJob): LlamaCppAnswer {
  const file = join(job.tmp, `llama-cpp-job-${process.pid}-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(job));
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), file], { encoding: 'utf8', maxBuffer: 1 << 28, timeout: 300_000, stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out);
}

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(readFileSync(jobFile, 'utf8')) as LlamaCppJob;
  const { getLlama, LlamaLogLevel } = await import(pathToFileURL(join(job.dir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href);
  // build 'never': the prebuilt binaries or nothing (a source build would need cmake and minutes)
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: job.model });
  // one thread (2-core CI machines; more threads spin against each other there); the KV cache in F32, not
  // llama.cpp's default F16, so the comparison with COMET's f32 KV cache measures the weights and the math
  const ctxOptions = (tokens: number) => ({
    contextSize: Math.max(64, tokens + 8), batchSize: 512, threads: 1, sequences: 1,
    experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false,
  });
  const results: LlamaCppAnswer['results'] = [];
  for (const prompt of job.prompts) {
    const ctx = await model.createContext(ctxOptions(prompt.length + job.steps));
    const seq = ctx.getSequence();
    const greedy: number[] = [];
    for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
      greedy.push(t);
      if (greedy.length >= job.steps) break;
    }
    await ctx.dispose();
    // teacher-forced along the greedy sequence, in a fresh context
    const ctx2 = await model.createContext(ctxOptions(prompt.length + job.steps));
    const all = [...prompt, ...greedy];
    const opts = { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } };
    const res: Array<{ next: { probabilities?: Map<number, number> } } | undefined> = await ctx2.getSequence().controlledEvaluate(all.map((t) => [t, { generateNext: opts }]));
    const probs = res.map((r) => [...(r?.next.probabilities ?? new Map<number, number>())].slice(0, job.topProbs));
    await ctx2.dispose();
    results.push({ greedy, probs });
  }
  const tokenized = (job.texts ?? []).map((t) => [...model.tokenize(t)] as number[]);
  process.stdout.write(JSON.stringify({ results, tokenized, bos: model.tokens.bos, eos: model.tokens.eos }));
  await model.dispose();
  await llama.dispose();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main(process.argv[2]);
