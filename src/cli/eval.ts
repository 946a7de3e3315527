// `comet eval ppl`
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { createBackend } from '../runtime/backends.ts';
import { defaultModelPath, openModel } from '../runtime/open.ts';
import { perplexity } from '../eval/ppl.ts';
import { verifyAgainstSim } from '../eval/verify.ts';
import { CometError } from '../errors.ts';

export async function evalPpl(o: { model: string; text: string; tokenizer?: string; ctx: number; windows?: number; startWindow?: number; json?: boolean; keepNewlines?: boolean; backend: string }): Promise<void> {
  let text: string;
  try {
    text = readFileSync(o.text, 'utf8');
  } catch (e) {
    throw new CometError(`${o.text}: cannot read the evaluation text (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  // Python reads text files with universal newlines, so the reference perplexities (DESIGN.md §8, from
  // transformers) were computed on LF text: CRLF / CR become LF unless --keep-newlines
  if (!o.keepNewlines) text = text.replace(/\r\n?/g, '\n');
  const be = await createBackend(o.backend);
  const { model, tokenizer } = await openModel(be, o.model, o.tokenizer);
  const t0 = performance.now();
  const tokens = tokenizer.encode(text, { bos: false });
  const bar = process.stderr.isTTY && !o.json ? new cliProgress.SingleBar({ format: 'ppl {bar} {value}/{total} windows | {eta}s left' }, cliProgress.Presets.shades_classic) : undefined;
  let started = false;
  const r = await perplexity(model, tokens, o.ctx, o.windows ?? Infinity, (done, total) => {
    if (bar && !started) { bar.start(total, 0); started = true; }
    bar?.update(done);
  }, o.startWindow ?? 0);
  bar?.stop();
  const seconds = (performance.now() - t0) / 1000;
  const result = { model: o.model, text: o.text, backend: be.name, tokens: tokens.length, ...r, seconds };
  if (o.json) console.log(JSON.stringify(result));
  else console.log(`perplexity ${r.ppl.toFixed(4)} over ${r.windows}/${r.totalWindows} windows of ${r.ctx} tokens (${r.scored} scored, ${tokens.length} in the text), ${seconds.toFixed(1)} s on ${be.name}`);
  be.dispose();
}

/** `comet eval verify`: greedy tokens on a backend vs the simulator in that backend's GEMM order; exit 1 on a difference. */
export async function evalVerify(o: { model?: string; tokenizer?: string; prompt?: string[]; steps: number; json?: boolean; explain?: boolean; backend: string }): Promise<void> {
  const be = await createBackend(o.backend);
  try {
    const rs = await verifyAgainstSim(be, o.model ?? defaultModelPath, { prompts: o.prompt?.length ? o.prompt : undefined, steps: o.steps, tokenizer: o.tokenizer, explain: o.explain });
    for (const r of rs) {
      if (o.json) console.log(JSON.stringify(r));
      else console.log(`${r.equal ? 'equal' : 'DIFFERENT'}  ${JSON.stringify(r.prompt)}: ${r.tokens.length} tokens on ${r.backend}` +
        (r.equal ? '' : `, first difference at ${r.firstDifference}: ${r.tokens[r.firstDifference]} vs ${r.reference[r.firstDifference]} (simulator)`));
      if (!o.json && r.explain) console.log(r.explain.map((l) => '    ' + l).join('\n'));
    }
    if (rs.some((r) => !r.equal)) process.exitCode = 1;
  } finally {
    be.dispose();
  }
}
