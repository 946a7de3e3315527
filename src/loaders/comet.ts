// .comet model files (DESIGN §3.6): one safetensors file holds the whole quantized model.
//
// Tensors (internal weight names, src/model/config.ts):
//   {name}            F32   float weights: norms [D]; tok_embed [V, D] and output [V, D] (untied only) F32 or F16
//   {name}.codes      U8    W4 codes [N, Kp/2], int4 canonical packing (DESIGN §3.1), columns permuted
//   {name}.scales     F16   [N, Kp/B] one scale per row per B-block (DESIGN §3.3)
//   {name}.perm       I32   [K] activation gather (quantized channel j reads input channel perm[j]); absent =
//                           identity (down_proj's permutation is folded into gate/up rows and down columns)
//   tokenizer/{file}  U8    the tokenizer's files, byte for byte (tokenizer.json + tokenizer_config.json, or
//                           a llama2.c tokenizer.bin): one model, one file
// __metadata__ (all strings; JSON where structured):
//   format 'comet' · version '1' · config (LlamaConfig) · quant (QuantMeta: B, order, INT8 policy and the achieved
//   INT8 MAC fraction, weight method, kv dtype and group, K/Kp/K8 per site, calibration file, slice and sha256)
//   linears ({name: {K, Kp, B, K8}}) · weight_error ({name: relative error}) · tokenizer ({main, files})
//   checksums ({tensor: first 16 hex of its sha256}): a flipped byte is reported with the tensor's name.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import { type LlamaConfig, weightNames } from '../model/config.ts';
import { COMET_FORMAT_VERSION, parseComet } from './formats/comet.ts';
import type { LoadedModel } from './model.ts';
import { SafetensorsFile } from './safetensors.ts';
import { CometWriter, type LinearLayout } from './comet-writer.ts';

export const COMET_VERSION = COMET_FORMAT_VERSION;

export interface CometContents {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  /** the quantizer's record (src/quant QuantMeta), written as JSON; the format itself reads kv and kvGroup */
  quant: { kv: 'f32' | 'kv4'; kvGroup: number };
  weightError: Record<string, number>;
  tokenizer: { main: string; files: Array<{ name: string; bytes: Uint8Array }> };
}

const sha = (b: ArrayBufferView) => createHash('sha256').update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)).digest('hex');

/** A whole model at once, through the streaming writer (comet-writer.ts): the same bytes as the layer-by-layer
 *  quantizer writes for the same weights. */
export function writeComet(path: string, m: CometContents): void {
  const linears = new Map<string, LinearLayout>();
  for (const name of weightNames(m.config)) {
    const w = m.weights.get(name);
    if (!w) throw new CometError(`${path}: weight '${name}' is missing`);
    if (w.kind === 'w4') linears.set(name, { K: w.act.K, Kp: w.act.Kp, B: w.act.B, K8: w.act.K8, perm: !!w.act.perm });
  }
  const f16 = weightNames(m.config).filter((n) => m.weights.get(n)?.kind === 'f16');
  const out = new CometWriter(path, { config: m.config, linears, quant: m.quant, tokenizer: m.tokenizer, weightError: Object.keys(m.weightError).length > 0, f16 });
  try {
    for (const name of weightNames(m.config)) out.put(m.weights.get(name)!);
  } catch (e) {
    out.abort();
    throw e;
  }
  out.finish(m.weightError);
}

/** Load a .comet file: the one parser of the format (formats/comet.ts parseComet, shared with the browser) over the
 *  file, then the embedded tokenizer extracted to a cache directory for loadTokenizer. */
export async function loadComet(path: string): Promise<LoadedModel> {
  const st = SafetensorsFile.open(path);
  try {
    const c = await parseComet(st, path, async (b) => sha(b).slice(0, 16));
    const tokenizerPath = extractTokenizer(c.tokenizer.main, c.tokenizer.files);
    return { config: c.config, weights: c.weights, format: 'comet', path, tokenizerPath, meta: { ...c.meta, tokenizerFiles: c.tokenizer.files } };
  } finally {
    st.close();
  }
}

/** The embedded tokenizer, written once per content hash to a cache directory (loadTokenizer reads paths;
 *  tokenizer.json also wants its tokenizer_config.json beside it). Returns the main file's path. */
export function extractTokenizer(main: string, files: Array<{ name: string; bytes: Uint8Array }>): string {
  const h = createHash('sha256');
  for (const f of files) h.update(f.name).update(f.bytes);
  const dir = join(tmpdir(), `comet-tokenizer-${h.digest('hex').slice(0, 16)}`);
  mkdirSync(dir, { recursive: true });
  for (const f of files) {
    if (!/^[\w.-]+$/.test(f.name)) throw new CometError(`embedded tokenizer file name '${f.name}' is not a plain file name`);
    const p = join(dir, f.name);
    if (!existsSync(p)) {
      const tmp = `${p}.${process.pid}`;
      writeFileSync(tmp, f.bytes);
      renameSync(tmp, p);
    }
  }
  return join(dir, main);
}

/** The files of a model's tokenizer, for embedding: tokenizer.json (+ tokenizer_config.json) or a .bin, and a
 *  chat_template.jinja beside either. */
export function tokenizerFiles(tokPath: string, read: (p: string) => Uint8Array): CometContents['tokenizer'] {
  const base = tokPath.split(/[\\/]/).pop()!;
  const files = [{ name: base, bytes: read(tokPath) }];
  const cfg = join(tokPath, '..', 'tokenizer_config.json');
  if (base.endsWith('.json') && existsSync(cfg)) files.push({ name: 'tokenizer_config.json', bytes: read(cfg) });
  const tmpl = join(tokPath, '..', 'chat_template.jinja'); // beside tokenizer.json, or tokenizer.bin (from a GGUF)
  if (existsSync(tmpl)) files.push({ name: 'chat_template.jinja', bytes: read(tmpl) });
  return { main: base, files };
}
