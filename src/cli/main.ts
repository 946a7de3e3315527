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
  .option('--model <path>', 'llama2.c .bin, Hugging Face directory, or .comet file (default: embedded stories260K)')
  .option('--tokenizer <path>', 'tokenizer.bin or tokenizer.json (default: found beside the model)')
  .option('--max-tokens <n>', 'new tokens to generate', int('--max-tokens', 1), 256)
  .option('--steps <n>', 'llama2.c -n: total tokens printed, prompt included (overrides --max-tokens)', int('--steps', 1))
  .option('--temperature <t>', 'sampling temperature, 0 = greedy', num('--temperature', 0, 100), 1.0)
  .option('--top-p <p>', 'nucleus sampling threshold (0 or 1 = off)', num('--top-p', 0, 1), 0.9)
  .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', int('--top-k'), 0)
  .option('--seed <n>', 'random seed (default: time)', int('--seed'))
  .addOption(backendOpt())
  .action(async (prompt: string, o) => (await import('./run.ts')).run(prompt, o));

program
  .command('info')
  .description('show a model: config, parameters, dtypes, bytes, quantization per layer')
  .argument('<model>', 'model path')
  .option('--json', 'machine-readable output')
  .action(async (path: string, o) => (await import('./info.ts')).info(path, o));

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
  .option('--json', 'print one JSON object')
  .addOption(backendOpt())
  .action(async (o) => (await import('./eval.ts')).evalPpl(o));

program.addCommand((await import('./serve.ts')).serveCommand(backendOpt()));

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
