// `comet export --gguf out.gguf --model M [--type f16]`: a float model (llama2.c, Hugging Face, GGUF) as a GGUF
// file for llama.cpp / Ollama, with its tokenizer (loaders/formats/gguf.ts, gguf-tokenizer.ts). The matrices are
// written in --type (F16 by default, as llama.cpp's converter does; Q8_0/Q4_0 in ggml's block formats), the
// norms in F32; a matrix whose rows are not whole blocks falls back to F16, as llama-quantize does.
import { readFileSync, statSync } from 'node:fs';
import { tokenizerFiles } from '../loaders/comet.ts';
import type { GgufWriteType } from '../loaders/formats/gguf.ts';
import { writeGguf } from '../loaders/gguf.ts';
import { loadModel } from '../loaders/index.ts';
import { CometError } from '../errors.ts';

export interface ExportOptions { model: string; gguf: string; tokenizer?: string; type: GgufWriteType; json?: boolean }

export async function exportGguf(o: ExportOptions): Promise<void> {
  const t0 = performance.now();
  const m = await loadModel(o.model);
  if (m.format === 'comet') throw new CometError(`${o.model}: a .comet file holds W4 codes, not floats; export the float model it was quantized from`);
  const tokPath = o.tokenizer ?? m.tokenizerPath ?? (() => { throw new CometError(`${o.model}: no tokenizer found beside the model; pass --tokenizer`); })();
  const name = o.model.replace(/[/\\]+$/, '').split(/[/\\]/).pop()!.replace(/\.(bin|gguf|safetensors)$/, '');
  const types = writeGguf(o.gguf, m.config, m.weights, tokenizerFiles(tokPath, (p) => readFileSync(p)), o.type, name);
  const counts: Record<string, number> = {};
  for (const t of Object.values(types)) counts[t] = (counts[t] ?? 0) + 1;
  const summary = { out: o.gguf, bytes: statSync(o.gguf).size, type: o.type, tensors: counts, seconds: +((performance.now() - t0) / 1000).toFixed(2) };
  if (o.json) console.log(JSON.stringify(summary));
  else console.log(`${o.gguf}: ${(summary.bytes / 2 ** 20).toFixed(1)} MiB, tensors ${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ')} (${summary.seconds} s)`);
}
