// `comet run`: prints the prompt and the continuation piece by piece exactly as llama2.c run.c does
// (safe_printf: a lone unprintable byte is skipped), then a newline; tokens/s to stderr.
import { createBackend } from '../runtime/backends.ts';
import { openModel, defaultModelPath } from '../runtime/open.ts';
import { generate } from '../engine/generate.ts';
import { CometError } from '../errors.ts';

export interface RunOptions {
  model?: string; tokenizer?: string; maxTokens: number; steps?: number;
  temperature: number; topP: number; topK: number; seed?: number; backend: string;
}

const printable = (b: Uint8Array) =>
  !(b.length === 1 && !(b[0] >= 0x20 && b[0] < 0x7f) && !(b[0] >= 0x09 && b[0] <= 0x0d));

export async function run(prompt: string, o: RunOptions): Promise<void> {
  const be = await createBackend(o.backend);
  const { model, tokenizer, stop } = await openModel(be, o.model ?? defaultModelPath, o.tokenizer);
  const ids = tokenizer.encode(prompt, { bos: true });
  if (ids.length >= model.config.seqLen)
    throw new CometError(`prompt has ${ids.length} tokens; the model's context is ${model.config.seqLen}`);
  // run.c's -n counts every printed token (prompt included, BOS excluded)
  const maxTokens = o.steps !== undefined ? Math.max(0, Math.min(o.steps, model.config.seqLen) - (ids.length - 1)) : o.maxTokens;
  const out = process.stdout;
  let prev = ids[0];
  for (const t of ids.slice(1)) {
    const b = tokenizer.pieceBytes(prev, t);
    if (printable(b)) out.write(b);
    prev = t;
  }
  const t0 = performance.now();
  let n = 0, tFirst = 0;
  if (maxTokens > 0) {
    for await (const t of generate(model, ids, {
      maxTokens, temperature: o.temperature, topP: o.topP, topK: o.topK,
      seed: o.seed ?? Date.now(), stop,
    })) {
      const b = tokenizer.pieceBytes(prev, t);
      if (printable(b)) out.write(b);
      prev = t;
      if (n++ === 0) tFirst = performance.now();
    }
  }
  out.write('\n');
  const t1 = performance.now();
  // run.c times from the first generated token on
  if (n > 1) process.stderr.write(`achieved tok/s: ${((n - 1) / ((t1 - tFirst) / 1000)).toFixed(1)} (${n} tokens, prefill ${(tFirst - t0).toFixed(0)} ms, backend ${be.name})\n`);
  be.dispose();
}
