// `comet eval ppl`
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { createBackend } from '../runtime/backends.ts';
import { openModel } from '../runtime/open.ts';
import { perplexity } from '../eval/ppl.ts';
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
