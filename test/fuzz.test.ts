// Fuzzed model and tokenizer files (issue 10): a fixed sample of the seeded cases of bench/fuzz/run.ts (which
// runs 10,000 per format), plus one regression case per bug the fuzzer found. Every case must end in a
// CometError naming the file, or a valid load whose checked run does not crash; never another exception, a
// hang, a dead worker, or an allocation beyond 2 x the input + 1 MiB. testing/fuzz/cases.ts has the details.
import { describe, expect, it } from 'vitest';
import { baseCases, bases, FAILURES, FORMATS, type FuzzCase, type FuzzFormat, type Outcome } from '../testing/fuzz/cases.ts';
import { runCases } from '../testing/fuzz/runner.ts';

const SEED = 101;
const PER_FORMAT: Record<FuzzFormat, number> = {
  'llama2c-v0': 200, 'llama2c-v1': 200, safetensors: 200, hf: 200, 'hf-sharded': 200, comet: 200, gguf: 200, 'tokenizer-bin': 200,
  'tokenizer-json': 60, // ~50 ms a case (the wikillama-28M tokenizer.json is 550 KB): the bench runs 10,000
  'bytes-llama2c': 200, 'bytes-comet': 200, 'bytes-gguf': 100,
};

const enc = new TextEncoder(), dec = new TextDecoder();
const show = (o: Outcome) => `${o.kind} ${o.id} [${o.mutation}] ${o.message ?? ''}`;
const failuresOf = (out: Outcome[]) => out.filter((o) => FAILURES.includes(o.kind)).map(show);

/** A hand-made case: a base with some files replaced. */
async function variant(format: FuzzFormat, baseName: string, id: string, edit: (files: Record<string, Uint8Array>) => void, links?: Record<string, string>): Promise<FuzzCase> {
  const b = (await bases()).get(format)!.find((x) => x.name === baseName)!;
  const files = { ...b.files };
  edit(files);
  return { id: `regression:${id}`, format, base: b.name, mutation: id, files, entry: b.entry, links };
}
const editJson = (files: Record<string, Uint8Array>, f: string, edit: (j: any) => void) => {
  const j = JSON.parse(dec.decode(files[f]));
  edit(j);
  files[f] = enc.encode(JSON.stringify(j));
};
/** Edit a safetensors file's __metadata__ (a .comet file's config, tokenizer, ...). */
const editMetadata = (files: Record<string, Uint8Array>, f: string, edit: (md: Record<string, string>) => void) => {
  const b = files[f], n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
  const h = JSON.parse(dec.decode(b.subarray(8, 8 + n)));
  edit(h.__metadata__);
  const j = enc.encode(JSON.stringify(h)), data = b.subarray(8 + n), out = new Uint8Array(8 + j.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(j.length), true);
  out.set(j, 8);
  out.set(data, 8 + j.length);
  files[f] = out;
};
const setInt32 = (files: Record<string, Uint8Array>, f: string, at: number, v: number) => {
  const b = files[f].slice();
  new DataView(b.buffer).setInt32(at, v, true);
  files[f] = b;
};

describe('fuzzed files: a CometError naming the file or a valid load, never a crash, hang or unbounded allocation', () => {
  it('the unmutated bases load (the harness itself is sound)', async () => {
    const cases = (await Promise.all(FORMATS.map(baseCases))).flat();
    const out = await runCases(cases);
    expect(out.map((o) => `${o.id}: ${o.kind} ${o.message ?? ''}`)).toEqual(cases.map((c) => `${c.id}: ok `));
  }, 120_000);

  it(`a fixed sample of seeded cases (seed ${SEED})`, async () => {
    const ids = FORMATS.flatMap((format) => Array.from({ length: PER_FORMAT[format] }, (_, index) => ({ format, seed: SEED, index })));
    const out = await runCases(ids, { deadlineMs: 15_000 });
    expect(out.length).toBe(ids.length);
    expect(failuresOf(out)).toEqual([]);
    // the sample exercises both outcomes in every format
    for (const f of FORMATS) {
      const mine = out.filter((o) => o.id.startsWith(`${f}:`));
      expect(mine.some((o) => o.kind === 'error'), f).toBe(true);
      expect(mine.some((o) => o.kind === 'ok'), f).toBe(true);
    }
  }, 240_000);

  it('regressions: each bug the fuzzer found', async () => {
    const cases = await Promise.all([
      // llama2c.ts: the size check listed 9 x n_layers tensors first (2^24 layers: a hang, then out of memory)
      variant('llama2c-v0', 'v0-tied', 'v0 n_layers 2^24-1', (f) => setInt32(f, 'model.bin', 8, (1 << 24) - 1)),
      variant('llama2c-v1', 'v1-untied', 'v1 n_layers 2^18+2', (f) => setInt32(f, 'model.bin', 16, (1 << 18) + 2)),
      variant('bytes-llama2c', 'v0-tied', 'bytes.ts n_layers 2^24-1', (f) => setInt32(f, 'model.bin', 8, (1 << 24) - 1)),
      // bytes.ts parseComet: a .comet config claiming 2^24 layers ran the worker out of memory (comet.ts: reported)
      variant('bytes-comet', 'comet-kv4', 'bytes.ts .comet nLayers 2^24-1', (f) => editMetadata(f, 'model.comet', (md) => {
        md.config = JSON.stringify({ ...JSON.parse(md.config), nLayers: (1 << 24) - 1 });
      })),
      // bytes.ts parseComet: a string RoPE theta loaded, then the run threw quantizeAct's plain Error on NaN
      variant('bytes-comet', 'comet-kv4', 'bytes.ts .comet ropeTheta string', (f) => editMetadata(f, 'model.comet', (md) => {
        md.config = JSON.stringify({ ...JSON.parse(md.config), ropeTheta: 'AAAA' });
      })),
      variant('bytes-comet', 'comet-kv4', 'bytes.ts .comet tokenizer files not a list', (f) => editMetadata(f, 'model.comet', (md) => {
        md.tokenizer = JSON.stringify({ main: 'tokenizer.bin', files: 'tokenizer.bin' });
      })),
      // bytes.ts given a Node Buffer: Buffer.slice() is a view, so every tensor was the whole file (the bases
      // test above loads bytes-llama2c and bytes-comet and checks each tensor's length)
      // hf.ts: the same through config.json
      variant('hf', 'hf-F32', 'num_hidden_layers 2^24-1', (f) => editJson(f, 'config.json', (j) => { j.num_hidden_layers = (1 << 24) - 1; })),
      // hf.ts / safetensors.ts: a shard named '.' or '..' was opened as a file (raw EISDIR); '../x' left the directory
      ...['.', '..', '../x.safetensors', 7].map((v) => variant('hf-sharded', 'hf3-BF16', `weight_map -> ${v}`,
        (f) => editJson(f, 'model.safetensors.index.json', (j) => { j.weight_map['model.norm.weight'] = v; }))),
      // tokenizer/hf.ts: an id of 1e9 made the library build 1e9-long tables (80 s); bad ids came back from encode
      ...[1e9, 2 ** 31 - 1, -1, 1.5, '3'].map((v) => variant('tokenizer-json', 'stories260K', `vocab id ${JSON.stringify(v)}`,
        (f) => editJson(f, 'tokenizer.json', (j) => { j.model.vocab['<0x5B>'] = v; }))),
      variant('tokenizer-json', 'wikillama-28M', 'added token id -1', (f) => editJson(f, 'tokenizer.json', (j) => { j.added_tokens[0].id = -1; })),
      // tokenizer/hf.ts: a catastrophic-backtracking pre-tokenizer regex hung encode()
      ...['(.*)*x', '(a+)+$', '((\\w+))*!'].map((re) => variant('tokenizer-json', 'stories260K', `Split regex ${re}`,
        (f) => editJson(f, 'tokenizer.json', (j) => { j.pre_tokenizer = { type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false }; }))),
      // a file that is a link to /dev/zero or a FIFO: read forever / open() blocked forever (loaders/index.ts,
      // hf.ts, safetensors.ts, tokenizer/index.ts now take regular files only)
      ...([['llama2c-v0', 'v0-tied', 'model.bin'], ['hf', 'hf-F32', 'config.json'], ['hf', 'hf-F32', 'model.safetensors'],
        ['hf-sharded', 'hf3-BF16', 'model-00002-of-00003.safetensors'], ['hf-sharded', 'hf3-BF16', 'model.safetensors.index.json'],
        ['safetensors', 'mixed', 'model.safetensors'], ['comet', 'comet-kv4', 'model.comet'], ['tokenizer-bin', 'tok512', 'tokenizer.bin'],
        ['tokenizer-json', 'stories260K', 'tokenizer.json'], ['tokenizer-json', 'wikillama-28M', 'tokenizer_config.json']] as const)
        .flatMap(([format, base, file]) => ['/dev/zero', 'FIFO'].map((target) =>
          variant(format, base, `${format} ${file} -> ${target}`, () => {}, { [file]: target }))),
      // tokenizer/hf.ts: a WordPiece model over a BPE vocab encoded to undefined ids
      variant('tokenizer-json', 'wikillama-28M', 'model.type WordPiece', (f) => editJson(f, 'tokenizer.json', (j) => { j.model.type = 'WordPiece'; })),
    ]);
    const out = await runCases(cases, { deadlineMs: 15_000 });
    expect(failuresOf(out)).toEqual([]);
    const byId = new Map(out.map((o) => [o.id.replace('regression:', ''), o]));
    expect(byId.get('v0 n_layers 2^24-1')!.message).toContain('16777215 layers');
    expect(byId.get('bytes.ts n_layers 2^24-1')!.message).toContain('16777215 layers');
    expect(byId.get('bytes.ts .comet nLayers 2^24-1')!.message).toContain('16777215 layers');
    expect(byId.get('bytes.ts .comet ropeTheta string')!.message).toContain('ropeTheta');
    expect(byId.get('num_hidden_layers 2^24-1')!.message).toContain('holds only');
    for (const v of ['.', '..', '../x.safetensors', 7]) expect(byId.get(`weight_map -> ${v}`)!.message, String(v)).toContain('expected a file name in the model directory');
    for (const v of [1e9, -1, 1.5, '3']) expect(byId.get(`vocab id ${JSON.stringify(v)}`)!.message).toContain('expected an integer in 0..');
    expect(byId.get('Split regex (.*)*x')!.message).toContain('catastrophic backtracking');
    for (const [id, o] of byId) if (/ -> (\/dev\/zero|FIFO)$/.test(id)) expect(o.message, id).toContain('not a regular file');
    const wp = byId.get('model.type WordPiece')!;
    expect(wp.kind === 'error' || wp.runError !== undefined, show(wp)).toBe(true);
    for (const o of out) expect(o.ms!, o.id).toBeLessThan(8000); // were 80 s, out of memory, or forever
  }, 120_000);
});
