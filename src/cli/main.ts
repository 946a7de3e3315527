// `comet`: a thin shell over the runtime. Every command reports bad input as one line `comet: error: ...`
// and a non-zero exit; set COMET_DEBUG=1 for stacks.
import { Command, Option } from 'commander';
import { CometError } from '../errors.ts';
import { backendNames } from '../runtime/backends.ts';

const program = new Command('comet')
  .description('COMET: W4A4KV4 LLaMA runtime (simulator, CUDA, WebGPU)')
  .showHelpAfterError();

const backendOpt = () => new Option('--backend <name>', 'sim | cuda | webgpu').choices(backendNames).default('sim');
const int = (name: string, min = 0) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new CometError(`${name} must be an integer >= ${min}, got '${v}'`);
  return n;
};
const num = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new CometError(`${name} must be a number in [${min}, ${max}], got '${v}'`);
  return n;
};

program
  .command('run')
  .description('generate text from a prompt (the embedded stories260K model by default), streamed as llama2.c prints it')
  .argument('[prompt]', 'prompt text', '')
  .option('--model <path>', 'llama2.c .bin, Hugging Face directory, .gguf or .comet file (default: embedded stories260K)')
  .option('--tokenizer <path>', 'tokenizer.bin or tokenizer.json (default: found beside the model, or in the file)')
  .option('--max-tokens <n>', 'new tokens to generate', int('--max-tokens', 1), 256)
  .option('--steps <n>', 'llama2.c -n: total tokens printed, prompt included (overrides --max-tokens)', int('--steps', 1))
  .option('--temperature <t>', 'sampling temperature, 0 = greedy', num('--temperature', 0, 100), 1.0)
  .option('--top-p <p>', 'nucleus sampling threshold (0 or 1 = off)', num('--top-p', 0, 1), 0.9)
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', int('--top-k'), 0)
  .option('--seed <n>', 'random seed (default: time)', int('--seed'))
  .addOption(backendOpt())
  .action(async (prompt: string, o) => (await import('./run.ts')).run(prompt, o));

program
  .command('chat')
  .description('talk with a model: streamed replies, history, the model\'s chat template; Ctrl-C stops a reply, /reset, /exit')
  .option('--model <path>', 'llama2.c .bin, Hugging Face directory, .gguf or .comet file (default: embedded stories260K)')
  .option('--tokenizer <path>', 'tokenizer.bin or tokenizer.json (default: found beside the model, or in the file)')
  .option('--system <text>', 'system prompt, kept at the start of the conversation')
  .option('--max-tokens <n>', 'longest reply in tokens (default: up to the end of the context)', int('--max-tokens', 1))
  .option('--temperature <t>', 'sampling temperature, 0 = greedy', num('--temperature', 0, 100), 0.8)
  .option('--top-p <p>', 'nucleus sampling threshold (1 = off)', num('--top-p', 0, 1), 0.9)
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', int('--top-k'), 40)
  .option('--seed <n>', 'random seed (default: time)', int('--seed'))
  .option('--verbose', 'time each reply (stderr)')
  .addOption(backendOpt())
  .action(async (o) => (await import('./chat.ts')).chat(o));

program
  .command('export')
  .description('write a float model (llama2.c, Hugging Face, GGUF) as a GGUF file llama.cpp and Ollama run')
  .requiredOption('--model <path>', 'float model: llama2.c .bin, Hugging Face directory, or .gguf')
  .requiredOption('--gguf <file>', 'output .gguf file')
  .option('--tokenizer <path>', 'tokenizer (default: beside the model, or in the file)')
  .addOption(new Option('--type <t>', 'tensor type of the matrices (norms stay F32)').choices(['f32', 'f16', 'q8_0', 'q4_0']).default('f16'))
  .option('--json', 'print one JSON summary')
  .action(async (o) => (await import('./export.ts')).exportGguf(o));

program
  .command('build-cuda')
  .description('compile the CUDA addon for this installation (needs nvcc >= 13 and CMake; the --backend cuda prerequisite)')
  .option('--print', 'print the cmake commands instead of running them')
  .action(async (o) => (await import('./build-cuda.ts')).buildCuda(o));

program
  .command('info')
  .description('show a model: config, parameters, dtypes, bytes, quantization per layer')
  .argument('<model>', 'model path')
  .option('--json', 'machine-readable output')
  .action(async (path: string, o) => (await import('./info.ts')).info(path, o));

program
  .command('quantize')
  .description('FMPQ-quantize a float model (W4Ax weights, INT8 outlier blocks, optional KV4) into one .comet file')
  .requiredOption('--model <path>', 'float model: llama2.c .bin, Hugging Face directory, or .gguf (dequantized on load)')
  .requiredOption('--calib <file>', 'calibration text (its LAST --calib-tokens tokens are used)')
  .requiredOption('--out <file>', 'output .comet file')
  .option('--tokenizer <path>', 'tokenizer (default: beside the model; embedded in the .comet)')
  .option('--block <n>', 'FMPQ block size B: 32 | 64 | 128', int('--block', 32), 128)
  .option('--int8-fraction <f>', 'global budget: at most this fraction of GEMM MACs on INT8 activations, blocks placed greedily (default 0.15)', num('--int8-fraction', 0, 1))
  .option('--int8-blocks <n>', 'instead: this many INT8 blocks at every linear input', int('--int8-blocks'))
  .option('--weights <m>', 'weight rounding: rtn (clip search) | gptq', 'rtn')
  .option('--order <o>', 'channel order: absmax (FMPQ permutation) | identity', 'absmax')
  .option('--kv <dtype>', 'KV cache: kv4 | f32', 'kv4')
  .option('--kv-group <g>', 'KV4 group size (default head_dim)', int('--kv-group', 2))
  .option('--smooth <beta>', 'SmoothQuant channel scaling folded into norms/weights, migration strength β in [0, 1] (off by default)', num('--smooth', 0, 1))
  .option('--calib-tokens <n>', 'calibration tokens', int('--calib-tokens', 2), 2048)
  .option('--ctx <n>', 'calibration window length', int('--ctx', 2), 512)
  .option('--no-weight-error', 'skip measuring each linear\'s output error on the calibration sample (two f32 GEMMs per weight on the host)')
  .option('--json', 'print one JSON summary')
  .addOption(backendOpt())
  .action(async (o) => (await import('./quantize.ts')).quantize(o));

const evalCmd = program.command('eval').description('evaluate a model');
evalCmd
  .command('ppl')
  .description('perplexity over a text (DESIGN.md §8 protocol: non-overlapping windows of --ctx tokens)')
  .requiredOption('--model <path>', 'model path')
  .requiredOption('--text <file>', 'evaluation text')
  .option('--tokenizer <path>', 'tokenizer (default: beside the model)')
  .option('--ctx <n>', 'window length in tokens', int('--ctx', 2), 512)
  .option('--windows <n>', 'score only the first N windows', int('--windows', 1))
  .option('--start-window <n>', 'skip the first N windows (to shard a long text)', int('--start-window', 0))
  .option('--keep-newlines', 'score CRLF line ends as they are (default: LF, as Python reads text files)')
  .option('--json', 'print one JSON object')
  .addOption(backendOpt())
  .action(async (o) => (await import('./eval.ts')).evalPpl(o));
evalCmd
  .command('verify')
  .description("greedy tokens on a backend vs the simulator summing each W4Ax GEMM in that backend's order (exit 1 on any difference)")
  .option('--model <path>', 'model path (default: the embedded stories260K)')
  .option('--tokenizer <path>', 'tokenizer (default: beside the model)')
  .option('--prompt <text>', 'a prompt (repeatable; default: three built-in prompts)', (v: string, p: string[] = []) => [...p, v])
  .option('--steps <n>', 'new tokens per prompt', int('--steps', 1), 32)
  .option('--json', 'one JSON object per prompt')
  .option('--explain', 'on a difference, replay the simulator\'s tokens on both backends in lockstep and name the first tensor or KV byte that differs')
  .addOption(backendOpt())
  .action(async (o) => (await import('./eval.ts')).evalVerify(o));

program.addCommand((await import('./serve.ts')).serveCommand(backendOpt()));

const bench = program.command('bench').description('benchmarks');
bench
  .command('e2e')
  .description('end-to-end W4A4KV4 serving speed of a model shape beside PyTorch FP16 / INT4 / FP8: decode steps, TTFT, a max-throughput run through the engine (GPU machine)')
  .option('--shape <name|config.json>', 'llama3-8b | llama3-70b | a LlamaConfig JSON', 'llama3-8b')
  .addOption(backendOpt().default('cuda'))
  .option('--batches <list>', 'decode batch sizes', '1,8,32,64,128,256')
  .option('--ctx <n>', 'context of the decode steps', int('--ctx', 1), 1024)
  .option('--in-len <n>', 'prompt tokens (max throughput, TTFT)', int('--in-len', 1), 1024)
  .option('--out-len <n>', 'generated tokens (max throughput)', int('--out-len', 1), 512)
  .option('--mem-budget <GiB>', 'device memory COMET may use (default: what the device reports)', num('--mem-budget', 0.001, 1e6))
  .option('--int8-fraction <f>', 'FMPQ INT8 MAC budget', num('--int8-fraction', 0, 1), 0.1)
  .option('--block <B>', 'FMPQ block size', int('--block', 32), 128)
  .option('--check <paths...>', 'models whose greedy tokens must equal the simulator\'s before timing', [])
  .option('--steps <n>', 'timed steps per measurement', int('--steps', 1), 10)
  .option('--throughput <n>', 'requests of the max-throughput run through the engine, all submitted at once (0: none)', int('--throughput', 0), 256)
  .option('--prefix <n>', 'requests sharing an in-len-token prefix, one after another, prefix cache on and off (0: none)', int('--prefix', 0), 0)
  .option('--mixed <n>', 'requests of a mixed-length run through the engine (0: none)', int('--mixed', 0), 0)
  .option('--step-tokens <n>', 'the engine\'s tokens per step (batched prefill budget) in those runs', int('--step-tokens', 1), 4096)
  .option('--baseline-variants <list>', 'PyTorch baselines: fp16,int4,fp8', 'fp16,int4,fp8')
  .option('--baseline-json <file>', 'the baselines\' JSON (bench/e2e/torch_fast.py) from the same GPU in the same call, instead of running them')
  .option('--wait-for <file>', 'wait for this file before the first GPU work (the baselines run meanwhile)')
  .option('--no-baseline', 'skip the PyTorch baselines')
  .option('--out <dir>', 'results folder', 'bench/results')
  .action(async (o) => (await import('../../bench/e2e/e2e.ts')).benchE2E(o));

// `comet info m | head` closes the pipe early: that is the reader's choice, not an error
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

program.hook('preAction', () => {
  process.on('unhandledRejection', report);
});

function report(e: unknown): never {
  const msg = e instanceof Error ? e.message : String(e);
  if (process.env.COMET_DEBUG && e instanceof Error) console.error(e.stack);
  console.error(`comet: error: ${msg}`);
  process.exit(e instanceof CometError ? 1 : 2);
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  report(e);
}
