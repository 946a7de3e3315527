// Seeded, reproducible fuzz cases for every file format COMET reads (issue 10); runner.ts executes them in a
// child process (worker.ts) with a deadline.
//
// A case is (format, seed, index): makeCase() regenerates the exact bytes from those three numbers, so a failure
// reported as `hf-sharded:1:4711` is replayed with `npx tsx bench/fuzz/run.ts --replay hf-sharded:1:4711`.
// Each format has a few small, deterministic base inputs (synthetic checkpoints from testing/synthetic.ts, the
// real tokenizers from ../shared) and a list of mutators: truncation at every section boundary, random
// truncation, bit flips, header fields set to 0 / negative / huge, offsets past the end or overlapping, dims
// that disagree, NaN/Inf weights, huge JSON headers, non-UTF-8 bytes, and JSON edits at a random path.
//
// Outcomes (runCase, in the worker testing/fuzz/worker.ts):
//   ok        a valid load; the result is then exercised (a greedy run of the model, or encode/decode and every
//             token's bytes for a tokenizer), which must not crash either
//   error     a CometError whose message names the file (or the model directory)
//   unnamed   a CometError that does not say which file                       -> a failure
//   foreign   any other exception (TypeError, RangeError, ...)                 -> a failure ("crash")
//   alloc     an allocation above the bound, refused before it happened        -> a failure
//   rss       peak RSS grew by more than the bound during the case             -> a failure
//   hang      the case ran past its deadline (the runner kills the worker)     -> a failure
//   crash     the worker process died (abort, out of memory)                   -> a failure
// The allocation bound: no single ArrayBuffer / typed array / Buffer larger than 2 × the case's input bytes
// + 1 MiB while loading. Typed-array constructors are wrapped (guardAllocations) so the check runs before
// the memory is taken; JS-heap growth (arrays, strings) is caught by the worker's heap limit and the RSS bound.
//
// NaN / Inf weights: a checkpoint is a container of numbers, and the loaders do not judge the numbers: a file
// with NaN or Inf weights loads. What must hold is that running it does not crash: the checked run greedy-
// decodes a few tokens and requires every id to be inside the vocabulary (argmax over NaN logits returns 0, so
// such a model prints garbage but never an out-of-range id). The counts report how many loads held non-finite
// weights. (.comet scales are checked by its loader: a non-finite f16 scale is a load error.)

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeLlama2c } from '../../src/loaders/llama2c.ts';
import { DTYPE_SIZE } from '../../src/loaders/formats/safetensors.ts';
import { writeSafetensors } from '../../src/loaders/safetensors.ts';
import type { LlamaConfig } from '../../src/model/config.ts';
import { weightNames, weightShape } from '../../src/model/config.ts';
import { f32ToBf16, f32ToF16, syntheticWeights, writeSyntheticHF } from '../synthetic.ts';
import { rng } from '../rng.ts';

// bytes-*: the same files through src/loaders/bytes.ts (loadModelBytes, the browser's loader)
export const FORMATS = ['llama2c-v0', 'llama2c-v1', 'safetensors', 'hf', 'hf-sharded', 'comet', 'gguf', 'tokenizer-bin', 'tokenizer-json', 'bytes-llama2c', 'bytes-comet', 'bytes-gguf'] as const;
export type FuzzFormat = (typeof FORMATS)[number];

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const SHARED = fileURLToPath(new URL('../../../shared/models/', import.meta.url));

/** A fuzz input: files relative to a case directory, and which path the loader is given ('' = the directory). */
export interface FuzzCase {
  id: string; // format:seed:index
  format: FuzzFormat;
  base: string;
  mutation: string;
  files: Record<string, Uint8Array>;
  entry: string;
  /** files that are not regular: name -> a symlink target, or 'FIFO' for a named pipe (replaces a file) */
  links?: Record<string, string>;
}

interface Base {
  name: string;
  files: Record<string, Uint8Array>;
  entry: string;
  /** file -> byte offsets where a section starts or ends (truncation points) */
  boundaries: Record<string, number[]>;
  /** file -> offsets of int32 header fields (set to special values) */
  intFields: Record<string, number[]>;
  /** file -> [start, end) of float32 data (NaN/Inf injection) */
  floats: Record<string, [number, number][]>;
}

// ---- tiny deterministic models ----

export const FUZZ_CONFIG: LlamaConfig = {
  dim: 16, hiddenDim: 32, nLayers: 2, nHeads: 2, nKvHeads: 1, headDim: 8, vocabSize: 40, seqLen: 32,
  normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: true, bos: 1, eos: [2],
};

const enc = new TextEncoder();
const u8 = (b: Buffer | Uint8Array) => new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
const readAll = (dir: string): Record<string, Uint8Array> =>
  Object.fromEntries(readdirSync(dir).map((f) => [f, u8(readFileSync(join(dir, f)))]));

/** Section boundaries of a safetensors file: 0, 8, header end, and every tensor's start and end. */
function safetensorsLayout(b: Uint8Array): { boundaries: number[]; floats: [number, number][] } {
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const h = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + n)));
  const out = [0, 4, 8, 9, 8 + n - 1, 8 + n];
  const floats: [number, number][] = [];
  for (const [k, v] of Object.entries<any>(h)) {
    if (k === '__metadata__') continue;
    out.push(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    if (v.dtype === 'F32') floats.push([8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]]);
  }
  return { boundaries: [...new Set(out)].sort((a, c) => a - c), floats };
}

/** llama2.c layout offsets (the order of llama2c.ts' header comment), for truncation at every tensor. */
function llama2cLayout(c: LlamaConfig, version: 0 | 1): { boundaries: number[]; floats: [number, number][] } {
  const size = (n: string) => 4 * weightShape(c, n).reduce((a, d) => a * d, 1);
  const per = (b: string) => Array.from({ length: c.nLayers }, (_, i) => size(`l${i}.${b}`));
  const lin = ['wq', 'wk', 'wv', 'wo'].flatMap(per), ffn = ['w_gate', 'w_down', 'w_up'].flatMap(per);
  const parts = version === 0
    ? [size('tok_embed'), ...per('attn_norm'), ...lin, ...per('ffn_norm'), ...ffn, size('norm'), 4 * c.seqLen * c.headDim]
    : [...per('attn_norm'), ...per('ffn_norm'), size('norm'), size('tok_embed'), ...lin, ...ffn];
  if (!c.tiedEmbeddings) parts.push(size('output'));
  const head = version === 0 ? 28 : 256;
  const boundaries = version === 0 ? [0, 4, 8, 12, 16, 20, 24, 28] : [0, 4, 8, 36, 37, 256];
  let pos = head;
  for (const p of parts) boundaries.push((pos += p));
  return { boundaries, floats: [[head, pos]] };
}

/** tokenizer.bin: max_token_length, then per record: score, len, bytes. */
function tokBinLayout(b: Uint8Array): { boundaries: number[]; intFields: number[]; floats: [number, number][] } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const boundaries = [0, 4], intFields = [0], floats: [number, number][] = [];
  for (let pos = 4; pos + 8 <= b.length; ) {
    const len = dv.getInt32(pos + 4, true);
    boundaries.push(pos + 4, pos + 8, pos + 8 + len);
    intFields.push(pos + 4);
    floats.push([pos, pos + 4]);
    pos += 8 + len;
  }
  return { boundaries, intFields, floats };
}

let BASES: Map<FuzzFormat, Base[]> | undefined;

async function makeBases(): Promise<Map<FuzzFormat, Base[]>> {
  const tmp = mkdtempSync(join(tmpdir(), 'comet-fuzz-base-'));
  const m = new Map<FuzzFormat, Base[]>();
  try {
    const tied = FUZZ_CONFIG, untied = { ...FUZZ_CONFIG, tiedEmbeddings: false };
    for (const version of [0, 1] as const) {
      const bases: Base[] = [];
      for (const c of [tied, untied]) {
        const p = join(tmp, `v${version}-${c.tiedEmbeddings}.bin`);
        writeLlama2c(p, c, syntheticWeights(c, 7), { version });
        const L = llama2cLayout(c, version);
        const ints = version === 0 ? [0, 4, 8, 12, 16, 20, 24] : [0, 4, 8, 12, 16, 20, 24, 28, 32];
        bases.push({ name: `v${version}-${c.tiedEmbeddings ? 'tied' : 'untied'}`, files: { 'model.bin': u8(readFileSync(p)) }, entry: 'model.bin',
          boundaries: { 'model.bin': L.boundaries }, intFields: { 'model.bin': ints }, floats: { 'model.bin': L.floats } });
      }
      m.set(version === 0 ? 'llama2c-v0' : 'llama2c-v1', bases);
    }
    const stBase = (name: string, files: Record<string, Uint8Array>, entry: string): Base => {
      const boundaries: Record<string, number[]> = {}, floats: Record<string, [number, number][]> = {}, intFields: Record<string, number[]> = {};
      for (const [f, b] of Object.entries(files))
        if (f.endsWith('.safetensors') || f.endsWith('.comet')) {
          const L = safetensorsLayout(b);
          boundaries[f] = L.boundaries;
          floats[f] = L.floats;
          intFields[f] = [0, 4];
        }
      return { name, files, entry, boundaries, intFields, floats };
    };
    // a raw safetensors file with every common dtype, metadata and a zero-size tensor
    {
      const p = join(tmp, 'mixed.safetensors');
      const r = rng(3), f = Float32Array.from({ length: 24 }, () => r() * 2 - 1);
      writeSafetensors(p, [
        { name: 'f32', dtype: 'F32', shape: [4, 6], data: f },
        { name: 'f16', dtype: 'F16', shape: [3, 8], data: f32ToF16(f) },
        { name: 'bf16', dtype: 'BF16', shape: [24], data: f32ToBf16(f) },
        { name: 'u8', dtype: 'U8', shape: [5], data: Uint8Array.of(0, 1, 2, 254, 255) },
        { name: 'i32', dtype: 'I32', shape: [2, 2], data: Int32Array.of(-1, 0, 1, 2 ** 31 - 1) },
        { name: 'i64', dtype: 'I64', shape: [1], data: BigInt64Array.of(-5n) },
        { name: 'empty', dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
      ], { format: 'pt', note: 'fuzz base' });
      m.set('safetensors', [stBase('mixed', { 'model.safetensors': u8(readFileSync(p)) }, 'model.safetensors')]);
    }
    const hf: Base[] = [], sharded: Base[] = [];
    for (const [c, dtype] of [[tied, 'F32'], [untied, 'BF16'], [tied, 'F16']] as const) {
      const dir = join(tmp, `hf-${dtype}`);
      writeSyntheticHF(dir, c, syntheticWeights(c, 5), { dtype });
      hf.push(stBase(`hf-${dtype}`, readAll(dir), ''));
      const sdir = join(tmp, `hf3-${dtype}`);
      writeSyntheticHF(sdir, c, syntheticWeights(c, 6), { dtype, shards: 3 });
      sharded.push(stBase(`hf3-${dtype}`, readAll(sdir), ''));
    }
    for (const b of [...hf, ...sharded]) b.files['generation_config.json'] = enc.encode(JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }));
    m.set('hf', hf);
    m.set('hf-sharded', sharded);
    m.set('comet', [stBase('comet-kv4', { 'model.comet': await cometBase(join(tmp, 'model.comet')) }, 'model.comet')]);
    m.set('gguf', await ggufBases());
    const tb = u8(readFileSync(join(SHARED, 'tinyllamas/tok512.bin')));
    const T = tokBinLayout(tb);
    m.set('tokenizer-bin', [{ name: 'tok512', files: { 'tokenizer.bin': tb }, entry: 'tokenizer.bin', boundaries: { 'tokenizer.bin': T.boundaries }, intFields: { 'tokenizer.bin': T.intFields }, floats: { 'tokenizer.bin': T.floats } }]);
    const tj = (name: string, dir: string): Base => {
      const files = { 'tokenizer.json': u8(readFileSync(join(dir, 'tokenizer.json'))), 'tokenizer_config.json': u8(readFileSync(join(dir, 'tokenizer_config.json'))) };
      const text = new TextDecoder().decode(files['tokenizer.json']);
      const bounds = [0, 1, text.length - 1];
      for (const k of Object.keys(JSON.parse(text))) bounds.push(enc.encode(text.slice(0, text.indexOf(`"${k}"`))).length);
      return { name, files, entry: 'tokenizer.json', boundaries: { 'tokenizer.json': bounds }, intFields: {}, floats: {} };
    };
    m.set('bytes-llama2c', [...m.get('llama2c-v0')!, ...m.get('llama2c-v1')!]);
    m.set('bytes-comet', m.get('comet')!);
    m.set('bytes-gguf', m.get('gguf')!);
    // a Llama-3-style variant: the pre-tokenizer is a Split regex then ByteLevel without its own regex
    const split = tj('wikillama-split', join(SHARED, 'wikillama-28M'));
    const sj = JSON.parse(new TextDecoder().decode(split.files['tokenizer.json']));
    sj.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] };
    split.files['tokenizer.json'] = enc.encode(JSON.stringify(sj));
    m.set('tokenizer-json', [tj('stories260K', join(SHARED, 'hf/stories260K')), tj('wikillama-28M', join(SHARED, 'wikillama-28M')), split]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return m;
}

/** A real .comet file from the project's own quantizer (src/quant, src/loaders/comet.ts writeComet) for a tiny
 *  model with the 512-token llama2.c tokenizer embedded; while those are not there, a safetensors file with
 *  comet metadata (the harness then checks that the .comet path fails cleanly). */
async function cometBase(path: string): Promise<Uint8Array> {
  const comet = await import('../../src/loaders/comet.ts') as Record<string, any>;
  const c: LlamaConfig = { ...FUZZ_CONFIG, dim: 32, hiddenDim: 64, nHeads: 4, nKvHeads: 2, vocabSize: 512 };
  const weights = syntheticWeights(c, 9);
  if (typeof comet.writeComet === 'function') {
    const { SimBackend } = await import('../../backends/sim/sim.ts');
    const { Llama } = await import('../../src/model/llama.ts');
    const { calibrate } = await import('../../src/quant/calibrate.ts');
    const { quantizeModel } = await import('../../src/quant/quantize.ts');
    const r = rng(11), tokens = Array.from({ length: 64 }, () => Math.floor(r() * c.vocabSize));
    const stats = await calibrate(new Llama(new SimBackend(), c, weights), tokens, { ctx: 32 });
    const q = quantizeModel(c, weights, stats, { B: 32, order: 'absmax', int8Fraction: 0.25, weights: 'rtn', kv: 'kv4' });
    const tok = { name: 'tokenizer.bin', bytes: u8(readFileSync(join(SHARED, 'tinyllamas/tok512.bin'))) };
    comet.writeComet(path, { config: c, weights: q.weights, quant: q.meta, weightError: q.weightError, tokenizer: { main: tok.name, files: [tok] } });
  } else {
    writeSafetensors(path, weightNames(c).map((n) => {
      const w = weights.get(n)!;
      return { name: n, dtype: 'F32' as const, shape: weightShape(c, n), data: (w as { data: Float32Array }).data };
    }), { format: 'comet', version: '1', config: JSON.stringify(c) });
  }
  return u8(readFileSync(path));
}

/** GGUF files from COMET's own writer (src/loaders/formats/gguf.ts): F32 and Q8_0 with the sentencepiece
 *  tok512 vocabulary, Q4_0 with wikillama-28M's byte-level BPE one. Truncation points: every section the writer
 *  emits (header + metadata, each tensor info, padding, each tensor); int fields: version and the two counts. */
async function ggufBases(): Promise<Base[]> {
  const { encodeGguf } = await import('../../src/loaders/formats/gguf.ts');
  const spm = { main: 'tokenizer.bin', files: [{ name: 'tokenizer.bin', bytes: u8(readFileSync(join(SHARED, 'tinyllamas/tok512.bin'))) }] };
  const wl = join(SHARED, 'wikillama-28M');
  const bpe = { main: 'tokenizer.json', files: ['tokenizer.json', 'tokenizer_config.json'].map((name) => ({ name, bytes: u8(readFileSync(join(wl, name))) })) };
  const out: Base[] = [];
  for (const [type, tok, vocab] of [['f32', spm, 512], ['q8_0', spm, 512], ['q4_0', bpe, 8192]] as const) {
    const c: LlamaConfig = { ...FUZZ_CONFIG, dim: 32, hiddenDim: 64, nHeads: 4, nKvHeads: 2, vocabSize: vocab, bos: vocab === 512 ? 1 : 0, eos: [vocab === 512 ? 2 : 1] };
    const { chunks } = encodeGguf(c, syntheticWeights(c, 13), tok, type);
    const bytes = new Uint8Array(chunks.reduce((a, b) => a + b.length, 0));
    const boundaries = [0, 4, 8, 16, 24];
    let pos = 0;
    for (const ch of chunks) { bytes.set(ch, pos); boundaries.push((pos += ch.length)); }
    const dataStart = chunks.slice(0, weightNames(c).length + 2).reduce((a, b) => a + b.length, 0); // header, infos, padding
    out.push({ name: `gguf-${type}`, files: { 'model.gguf': bytes }, entry: 'model.gguf', boundaries: { 'model.gguf': [...new Set(boundaries)].sort((a, b) => a - b) },
      intFields: { 'model.gguf': [4, 8, 16] }, floats: type === 'f32' ? { 'model.gguf': [[dataStart, bytes.length]] } : {} });
  }
  return out;
}

export async function bases(): Promise<Map<FuzzFormat, Base[]>> {
  return (BASES ??= await makeBases());
}

// ---- mutation ----

type Rng = () => number;
const pick = <T>(r: Rng, a: readonly T[]): T => a[Math.floor(r() * a.length)];
const int = (r: Rng, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const INT32_SPECIALS = [0, -1, 1, 2, 3, 7, 0x7fffffff, -0x80000000, 1 << 16, 1 << 24, (1 << 24) + 1, 1 << 30, -(1 << 24), 65536 + 1];
const U64_SPECIALS = [0n, 1n, 2n, 7n, 1n << 32n, (1n << 53n), (1n << 53n) + 1n, 1n << 63n, (1n << 64n) - 1n, 100n << 20n, (100n << 20n) + 1n];
const FLOAT_SPECIALS = [NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e-45, -0];
const JSON_SPECIALS: unknown[] = [null, 0, -1, 1, 2, 0.5, -0.5, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, 1e-300,
  '', 'x', '\u0000', '<s>', '\ud800', '9', [], {}, [1, 2, 3], true, false, { a: { b: [null] } }];
const bigString = (r: Rng) => 'A'.repeat(pick(r, [1 << 10, 1 << 16, 1 << 20]));

function specialJson(r: Rng, orig?: unknown): unknown {
  const k = r();
  if (k < 0.1) return bigString(r);
  if (k < 0.15) return Array.from({ length: pick(r, [1000, 100000]) }, () => 0);
  if (typeof orig === 'number' && k < 0.45) return pick(r, [orig * 2, orig + 1, orig - 1, -orig, orig * 1024, orig / 2, orig * 2 ** 20]);
  if (Array.isArray(orig) && k < 0.5) return r() < 0.5 ? orig.slice(1) : [...orig, ...orig.slice(0, 1)];
  return structuredClone(pick(r, JSON_SPECIALS));
}

/** Edit a parsed JSON value at a random path: delete, replace by a special, or swap with another entry. */
function mutateJson(r: Rng, root: any, startKeys?: string[]): string {
  let parent: any = root, key: string | number | undefined;
  const path: (string | number)[] = [];
  if (startKeys && startKeys.length && typeof root === 'object' && root !== null) {
    key = pick(r, startKeys.filter((k) => k in root).length ? startKeys.filter((k) => k in root) : Object.keys(root));
    path.push(key);
  }
  for (let depth = 0; depth < 10; depth++) {
    const node = key === undefined ? parent : parent[key];
    if (typeof node !== 'object' || node === null) break;
    const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    if (keys.length === 0 || (key !== undefined && r() < 0.3)) break;
    if (key !== undefined) parent = node;
    key = pick(r, keys as (string | number)[]);
    path.push(key);
  }
  if (key === undefined) return 'json:root-empty';
  const op = r();
  const where = path.join('.').slice(0, 60);
  if (op < 0.2) {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete parent[key];
    return `json:delete ${where}`;
  }
  if (op < 0.3 && typeof parent === 'object') {
    const keys = Array.isArray(parent) ? parent.map((_, i) => i) : Object.keys(parent);
    const other = pick(r, keys as (string | number)[]);
    [parent[key], parent[other]] = [parent[other], parent[key]];
    return `json:swap ${where} <-> ${String(other).slice(0, 30)}`;
  }
  const v = specialJson(r, parent[key]);
  parent[key] = v;
  return `json:set ${where} = ${JSON.stringify(v)?.slice(0, 40)}`;
}

/** Byte-level mutators shared by every binary file. */
function mutateBytes(r: Rng, b: Uint8Array, base: Base, file: string): { bytes: Uint8Array; what: string } {
  const bounds = base.boundaries[file] ?? [0];
  const ints = base.intFields[file] ?? [];
  const floats = base.floats[file] ?? [];
  const k = r();
  if (k < 0.3) {
    const at = Math.max(0, Math.min(b.length, pick(r, bounds) + pick(r, [-1, 0, 0, 0, 1])));
    return { bytes: b.slice(0, at), what: `truncate at boundary ${at}/${b.length}` };
  }
  if (k < 0.38) {
    const at = int(r, 0, b.length);
    return { bytes: b.slice(0, at), what: `truncate at ${at}/${b.length}` };
  }
  if (k < 0.58) {
    const out = b.slice(), n = int(r, 1, 8), headOnly = r() < 0.6, hi = headOnly ? Math.min(b.length, (bounds[Math.min(bounds.length - 1, 3)] ?? 64) + 64) : b.length;
    const at: number[] = [];
    for (let i = 0; i < n && hi > 0; i++) {
      const bit = int(r, 0, hi * 8 - 1);
      out[bit >> 3] ^= 1 << (bit & 7);
      at.push(bit);
    }
    return { bytes: out, what: `flip ${n} bit(s)${headOnly ? ' in the header' : ''} at ${at.slice(0, 4).join(',')}` };
  }
  if (k < 0.73 && ints.length) {
    const out = b.slice(), at = pick(r, ints), dv = new DataView(out.buffer);
    if (at + 4 > out.length) return { bytes: out, what: 'field past end (no-op)' };
    if (file.endsWith('.safetensors') || file.endsWith('.comet')) {
      const v = pick(r, U64_SPECIALS);
      dv.setBigUint64(0, v, true);
      return { bytes: out, what: `header length = ${v}` };
    }
    const v = r() < 0.15 ? int(r, -(2 ** 31), 2 ** 31 - 1) : pick(r, INT32_SPECIALS);
    dv.setInt32(at, v, true);
    return { bytes: out, what: `int32 at ${at} = ${v}` };
  }
  if (k < 0.83 && floats.length) {
    const out = b.slice(), dv = new DataView(out.buffer), n = int(r, 1, 4), vals: number[] = [];
    for (let i = 0; i < n; i++) {
      const [s, e] = pick(r, floats);
      if (e - s < 4) continue;
      const at = s + 4 * int(r, 0, (e - s) / 4 - 1), v = pick(r, FLOAT_SPECIALS);
      dv.setFloat32(at, v, true);
      vals.push(v);
    }
    return { bytes: out, what: `floats = ${vals.join(',')}` };
  }
  if (k < 0.9) {
    const extra = Uint8Array.from({ length: pick(r, [1, 3, 4, 8, 64]) }, () => (r() < 0.5 ? 0 : int(r, 0, 255)));
    const out = new Uint8Array(b.length + extra.length);
    out.set(b);
    out.set(extra, b.length);
    return { bytes: out, what: `append ${extra.length} bytes` };
  }
  // splice: delete or duplicate a chunk at a boundary
  const at = Math.min(b.length, pick(r, bounds)), len = Math.min(b.length - at, pick(r, [1, 4, 8, 100]));
  if (r() < 0.5) return { bytes: Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + len)]), what: `delete ${len} bytes at ${at}` };
  return { bytes: Uint8Array.from([...b.subarray(0, at), ...b.subarray(at, at + len), ...b.subarray(at)]), what: `duplicate ${len} bytes at ${at}` };
}

/** Rewrite a safetensors header (JSON edits, offsets past the end / overlapping, huge or non-UTF-8 headers). */
function mutateSafetensorsHeader(r: Rng, b: Uint8Array): { bytes: Uint8Array; what: string } {
  const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const h = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + n)));
  const data = b.subarray(8 + n), dataLen = data.length;
  const names = Object.keys(h).filter((k) => k !== '__metadata__');
  const t = pick(r, names), e = h[t];
  let what = '';
  let text: string | undefined;
  const k = r();
  if (k < 0.12) {
    const v = pick(r, [[dataLen, dataLen + (e.data_offsets[1] - e.data_offsets[0])], [e.data_offsets[0], dataLen + 1], [2 ** 53, 2 ** 53 + 4],
      [e.data_offsets[1], e.data_offsets[0]], [-4, e.data_offsets[1]], [0.5, 4.5], [e.data_offsets[0]], null, ['0', '4'], [2 ** 53 + 2, 2 ** 53 + 6]]);
    e.data_offsets = v;
    what = `${t}.data_offsets = ${JSON.stringify(v)} (data ${dataLen})`;
  } else if (k < 0.22) {
    const o = h[pick(r, names)];
    const len = e.data_offsets[1] - e.data_offsets[0];
    e.data_offsets = [o.data_offsets[0] + pick(r, [0, 1, 2, 4]), o.data_offsets[0] + pick(r, [0, 1, 2, 4]) + len];
    what = `${t}.data_offsets overlap -> ${JSON.stringify(e.data_offsets)}`;
  } else if (k < 0.36) {
    const shape = e.shape as unknown[];
    const op = r();
    if (op < 0.6 && shape.length) shape[int(r, 0, shape.length - 1)] = pick(r, [0, -1, 1, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1.5, 1e308, '4', null, -0]);
    else if (op < 0.8) shape.push(pick(r, [1, 2, 0]));
    else shape.reverse();
    what = `${t}.shape = ${JSON.stringify(shape)}`;
  } else if (k < 0.44) {
    e.dtype = pick(r, [...Object.keys(DTYPE_SIZE), 'Q4', 'f32', 123, null, '']);
    what = `${t}.dtype = ${JSON.stringify(e.dtype)}`;
  } else if (k < 0.52) {
    const op = pick(r, ['null', 'number', 'array', 'delete', 'dup', 'rename', 'proto']);
    if (op === 'null') h[t] = null;
    else if (op === 'number') h[t] = 5;
    else if (op === 'array') h[t] = [e.dtype, e.shape];
    else if (op === 'delete') delete h[t];
    else if (op === 'dup') h[`${t}.copy`] = structuredClone(e);
    else if (op === 'rename') { h[t.replace(/\d/, '9') + (t.match(/\d/) ? '' : 'x')] = e; delete h[t]; }
    else h.__proto__x = e;
    what = `entry ${t}: ${op}`;
  } else if (k < 0.62) {
    const md = h.__metadata__ ?? {};
    const op = pick(r, ['delete', 'array', 'string', 'number-value', 'comet', 'big', 'nested', 'json-edit', 'json-edit', 'layers']);
    if (op === 'delete') delete h.__metadata__;
    else if (op === 'array') h.__metadata__ = ['a'];
    else if (op === 'string') h.__metadata__ = 'x';
    else if (op === 'number-value') md[pick(r, [...Object.keys(md), 'k'])] = 5;
    else if (op === 'comet') md.format = 'comet';
    else if (op === 'big') md.big = 'B'.repeat(1 << 20);
    else if (op === 'nested') md.n = { a: 1 };
    else if (op === 'layers' && typeof md.config === 'string') { // a .comet config claiming many layers
      const c = JSON.parse(md.config);
      c.nLayers = pick(r, [(1 << 24) - 1, 1 << 20, 3, 0]);
      md.config = JSON.stringify(c);
      what = `__metadata__.config.nLayers = ${c.nLayers}`;
    }
    else {
      const keys = Object.keys(md).filter((x) => md[x].startsWith('{') || md[x].startsWith('['));
      if (keys.length) {
        const key = pick(r, keys), j = JSON.parse(md[key]);
        const w = mutateJson(r, j);
        md[key] = JSON.stringify(j);
        what = `__metadata__.${key} ${w}`;
      } else md.format = pick(r, ['comet', 'pt', '']);
    }
    if (op !== 'delete' && op !== 'array' && op !== 'string') h.__metadata__ = md;
    what ||= `__metadata__ ${op}`;
  } else if (k < 0.7) {
    const op = pick(r, ['spaces', 'many-tensors', 'deep', 'long-name']);
    if (op === 'spaces') text = JSON.stringify(h) + ' '.repeat(pick(r, [1 << 16, 1 << 20, 3 << 20]));
    else if (op === 'many-tensors') {
      const count = pick(r, [1000, 50000]);
      for (let i = 0; i < count; i++) h[`z${i}`] = { dtype: 'U8', shape: [0], data_offsets: [dataLen, dataLen] };
    } else if (op === 'deep') {
      const d = pick(r, [1000, 100000]);
      text = `{"__metadata__":{"x":"y"},"deep":${'['.repeat(d)}${']'.repeat(d)},` + JSON.stringify(h).slice(1);
    } else h['n'.repeat(1 << 16)] = e;
    what = `huge header: ${op}`;
  } else if (k < 0.8) {
    // non-UTF-8 bytes inside the JSON text (in a name or a metadata value)
    const s = enc.encode(JSON.stringify(h));
    const bad = pick(r, [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xc3], [0xf4, 0x90, 0x80, 0x80], [0x00]]);
    const quotes = [...s.keys()].filter((i) => s[i] === 0x22);
    const at = pick(r, quotes) + 1;
    const out = Uint8Array.from([...s.subarray(0, at), ...bad, ...s.subarray(at)]);
    return { bytes: withHeader(out, data), what: `non-UTF-8 ${bad.map((x) => x.toString(16)).join(' ')} at header byte ${at}` };
  } else {
    what = `header ${mutateJson(r, h)}`;
  }
  return { bytes: withHeader(enc.encode(text ?? JSON.stringify(h)), data), what };
}

function withHeader(json: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const CONFIG_KEYS = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'vocab_size',
  'max_position_embeddings', 'rms_norm_eps', 'rope_theta', 'tie_word_embeddings', 'bos_token_id', 'eos_token_id', 'model_type', 'architectures',
  'hidden_act', 'rope_scaling', 'rope_parameters', 'attention_bias'];

function mutateConfigJson(r: Rng, b: Uint8Array): { bytes: Uint8Array; what: string } {
  const j = JSON.parse(new TextDecoder().decode(b));
  const k = r();
  if (k < 0.15) {
    const v = pick(r, ['[]', '5', '"x"', 'null', '', '{', '\ufeff' + JSON.stringify(j), JSON.stringify(j) + ' '.repeat(1 << 20)]);
    return { bytes: enc.encode(v), what: `config file = ${JSON.stringify(v.slice(0, 20))}` };
  }
  const key = pick(r, CONFIG_KEYS);
  const targeted: Record<string, unknown[]> = {
    num_hidden_layers: [(1 << 24), (1 << 24) - 1, 2 ** 31 - 1, 3, 1, 1e6],
    hidden_size: [32, 8, 2 ** 24, 17], head_dim: [7, 16, 4, 0], num_attention_heads: [3, 4, 1, 2 ** 24], num_key_value_heads: [2, 3, 0],
    vocab_size: [41, 39, 2 ** 24, 1], intermediate_size: [64, 31, 2 ** 24], max_position_embeddings: [1, 0, 2 ** 24, 2 ** 53],
    rms_norm_eps: [0, -1, 1e308], rope_theta: [0, -1, 1e308], eos_token_id: [[], [-1], [1e308], 'x', [2 ** 53], [null]], bos_token_id: [-1, 1e308, 'x', 2 ** 53],
    tie_word_embeddings: [!j.tie_word_embeddings, 'true', 1], model_type: ['gpt2', 'LLAMA', ''], architectures: [['X'], 'LlamaForCausalLM', [], null],
    rope_scaling: [{ type: 'linear', factor: 2 }, 'x', [], { rope_type: 'default' }], rope_parameters: [{ rope_theta: -1 }, 5, { rope_type: 'yarn' }],
  };
  let v: unknown;
  if (r() < 0.15) { delete j[key]; v = '<deleted>'; } else j[key] = v = r() < 0.6 && targeted[key] ? pick(r, targeted[key]) : specialJson(r, j[key]);
  return { bytes: enc.encode(JSON.stringify(j)), what: `config.${key} = ${JSON.stringify(v)?.slice(0, 40)}` };
}

function mutateIndexJson(r: Rng, b: Uint8Array, shardNames: string[]): { bytes: Uint8Array; what: string } {
  const j = JSON.parse(new TextDecoder().decode(b));
  const names = Object.keys(j.weight_map);
  const k = r();
  let what: string;
  if (k < 0.55) {
    const t = pick(r, names), v = pick(r, ['missing.safetensors', '.', '..', '../x.safetensors', '/etc/hostname', 'config.json', 5, null, '', 'generation_config.json', ...shardNames]);
    j.weight_map[t] = v;
    what = `weight_map[${t}] = ${JSON.stringify(v)}`;
  } else if (k < 0.7) {
    j.weight_map = pick(r, [null, [], 'x', 5, {}]);
    what = `weight_map = ${JSON.stringify(j.weight_map)}`;
  } else if (k < 0.85) {
    const t = pick(r, names);
    delete j.weight_map[t];
    what = `weight_map: delete ${t}`;
  } else {
    j.weight_map['model.layers.9.mlp.gate_proj.weight'] = pick(r, shardNames);
    what = 'weight_map: an extra tensor name';
  }
  return { bytes: enc.encode(JSON.stringify(j)), what };
}

const TOKJSON_KEYS = ['added_tokens', 'normalizer', 'pre_tokenizer', 'post_processor', 'decoder', 'model'];
const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const REGEXES = ['(', '(a+)+$', '[', '\\', '(?<x>', '\\p{Zzz}', '(.*)*x', '\\s+(?!\\S)|\\s+', ''];

function mutateTokenizerJson(r: Rng, files: Record<string, Uint8Array>, base: Base): { file: string; bytes: Uint8Array; what: string } {
  const k = r();
  if (k < 0.25) {
    const { bytes, what } = mutateBytes(r, files['tokenizer.json'], base, 'tokenizer.json');
    return { file: 'tokenizer.json', bytes, what };
  }
  if (k < 0.35) {
    const s = files['tokenizer.json'], at = int(r, 0, s.length - 1), bad = pick(r, [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x96]]);
    return { file: 'tokenizer.json', bytes: Uint8Array.from([...s.subarray(0, at), ...bad, ...s.subarray(at)]), what: `non-UTF-8 at ${at}` };
  }
  if (k < 0.5) {
    const j = JSON.parse(new TextDecoder().decode(files['tokenizer_config.json']));
    let what: string;
    if (r() < 0.5) {
      const key = pick(r, ['bos_token', 'eos_token', 'add_bos_token', 'chat_template', 'unk_token']);
      j[key] = pick(r, ['<nope>', '', null, 5, [], { content: 5 }, { content: '</s>' }, [{ name: 'default' }], [null], 'x'.repeat(1 << 16), true, '{% for %}']);
      what = `tokenizer_config.${key} = ${JSON.stringify(j[key]).slice(0, 40)}`;
    } else what = `tokenizer_config ${mutateJson(r, j)}`;
    return { file: 'tokenizer_config.json', bytes: enc.encode(JSON.stringify(j)), what };
  }
  const j = JSON.parse(new TextDecoder().decode(files['tokenizer.json']));
  let what: string;
  const t = r();
  if (t < 0.15 && j.model?.vocab) {
    const keys = Object.keys(j.model.vocab), key = pick(r, keys), v = pick(r, [-1, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 0, 1.5, keys.length, 1e9, '3', null]);
    j.model.vocab[key] = v;
    what = `model.vocab[${JSON.stringify(key)}] = ${v}`;
  } else if (t < 0.25 && Array.isArray(j.model?.merges)) {
    const i = int(r, 0, j.model.merges.length - 1), v = pick(r, ['a', 'nope nope', '', ['x', 'y'], 5, null, 'a b c', ['▁t', 'h'], ' ']);
    j.model.merges[i] = v;
    what = `model.merges[${i}] = ${JSON.stringify(v)}`;
  } else if (t < 0.35) {
    const i = int(r, 0, Math.max(0, (j.added_tokens?.length ?? 1) - 1));
    const v = pick(r, [null, 5, { id: 1e9, content: 'x', special: true }, { id: -1, content: '<s>' }, { id: 0, content: '' }, { content: 'x' }, { id: 0, content: null }]);
    if (Array.isArray(j.added_tokens)) j.added_tokens[i] = v;
    else j.added_tokens = v;
    what = `added_tokens[${i}] = ${JSON.stringify(v)}`;
  } else if (t < 0.42) {
    const split = j.pre_tokenizer?.pretokenizers?.[0];
    if (split?.pattern?.Regex && r() < 0.6) { // edit the real pattern: a quantifier, a paren or a class at a random place
      const s: string = split.pattern.Regex, at = int(r, 0, s.length), ins = pick(r, ['*', '+', '(', ')', '[', ']', '{2,}', '\\', '(a+)+', '?', '|']);
      split.pattern.Regex = s.slice(0, at) + ins + s.slice(at);
      what = `pre_tokenizer Split regex: insert ${JSON.stringify(ins)} at ${at}`;
    } else {
      const re = pick(r, REGEXES);
      j.pre_tokenizer = { type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false };
      what = `pre_tokenizer Split regex ${JSON.stringify(re)}`;
    }
  } else if (t < 0.48) {
    j.model.type = pick(r, ['WordPiece', 'Unigram', 'WordLevel', 'Nope', null, 5]);
    what = `model.type = ${JSON.stringify(j.model.type)}`;
  } else what = mutateJson(r, j, r() < 0.6 ? TOKJSON_KEYS : undefined);
  return { file: 'tokenizer.json', bytes: enc.encode(JSON.stringify(j)), what };
}

/** The case (format, seed, index): the same three numbers always give the same bytes. */
export async function makeCase(format: FuzzFormat, seed: number, index: number): Promise<FuzzCase> {
  const all = (await bases()).get(format)!;
  const r = rng(hash32(`${format}:${seed}:${index}`));
  const base = pick(r, all);
  const files = { ...base.files };
  let mutation: string;
  const binFiles = Object.keys(files).filter((f) => base.boundaries[f]);
  const st = Object.keys(files).filter((f) => f.endsWith('.safetensors') || f.endsWith('.comet'));
  if (format === 'tokenizer-json') {
    const m = mutateTokenizerJson(r, files, base);
    files[m.file] = m.bytes;
    mutation = `${m.file}: ${m.what}`;
  } else if ((format === 'hf' || format === 'hf-sharded') && r() < 0.35) {
    const k = r();
    if (format === 'hf-sharded' && k < 0.4) {
      const m = mutateIndexJson(r, files['model.safetensors.index.json'], st);
      files['model.safetensors.index.json'] = m.bytes;
      mutation = `index.json: ${m.what}`;
    } else if (k < 0.9) {
      const m = mutateConfigJson(r, files['config.json']);
      files['config.json'] = m.bytes;
      mutation = `config.json: ${m.what}`;
    } else {
      const m = mutateConfigJson(r, files['generation_config.json']);
      files['generation_config.json'] = m.bytes;
      mutation = `generation_config.json: ${m.what}`;
    }
  } else {
    const file = pick(r, binFiles);
    const m = st.includes(file) && r() < 0.5 ? mutateSafetensorsHeader(r, files[file]) : mutateBytes(r, files[file], base, file);
    files[file] = m.bytes;
    mutation = `${file}: ${m.what}`;
  }
  return { id: `${format}:${seed}:${index}`, format, base: base.name, mutation, files, entry: base.entry };
}

/** The unmutated bases, each as a case (they must load: a sanity check of the harness itself). */
export async function baseCases(format: FuzzFormat): Promise<FuzzCase[]> {
  return ((await bases()).get(format) ?? []).map((b) => ({ id: `${format}:base:${b.name}`, format, base: b.name, mutation: 'none', files: { ...b.files }, entry: b.entry }));
}

// ---- what a case came to (the worker reports it, testing/fuzz/runner.ts collects it) ----

export type OutcomeKind = 'ok' | 'error' | 'unnamed' | 'foreign' | 'alloc' | 'rss' | 'hang' | 'crash';
export const FAILURES: OutcomeKind[] = ['unnamed', 'foreign', 'alloc', 'rss', 'hang', 'crash'];

export interface Outcome {
  id: string;
  kind: OutcomeKind;
  mutation?: string;
  message?: string; // error message, or what failed
  errorName?: string;
  phase?: 'load' | 'run';
  ms?: number;
  inputBytes?: number;
  allocMax?: number; // largest single allocation while loading (bytes)
  allocTotal?: number;
  rssPeakGrowth?: number; // bytes above the RSS at the case's start
  nonFinite?: number; // non-finite weights in a valid load
  runError?: string; // a CometError from the checked run (allowed)
}

export type CaseRef = { format: FuzzFormat; seed: number; index: number } | FuzzCase;

/** A case given by its numbers is regenerated; a hand-made one (a regression test) is used as it is. */
export const caseOf = async (c: CaseRef): Promise<FuzzCase> => ('files' in c ? c : makeCase(c.format, c.seed, c.index));

export function parseId(id: string): { format: FuzzFormat; seed: number; index: number } {
  const [format, seed, index] = id.split(':');
  if (!FORMATS.includes(format as FuzzFormat)) throw new Error(`unknown format '${format}' (one of ${FORMATS.join(', ')})`);
  return { format: format as FuzzFormat, seed: Number(seed), index: Number(index) };
}

