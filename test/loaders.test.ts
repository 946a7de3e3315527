// Loaders: real checkpoints in ../shared/models (DESIGN §8), round trips through our writers, and corrupt
// input that must fail with a CometError naming the file and what is wrong.

import { copyFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expectCometError } from './helpers/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import type { HostWeight } from '../backends/backend.ts';
import { CometError } from '../src/errors.ts';
import { findTokenizerPath, loadModel } from '../src/loaders/index.ts';
import { readLlama2c, writeLlama2c } from '../src/loaders/llama2c.ts';
import { SafetensorsFile, writeSafetensors } from '../src/loaders/safetensors.ts';
import { type LlamaConfig, weightNames } from '../src/model/config.ts';
import { f32ToBf16, f32ToF16, STORIES15M, syntheticWeights, writeSyntheticHF, writeSyntheticLlama2c } from '../testing/synthetic.ts';

const MODELS = fileURLToPath(new URL('../../shared/models/', import.meta.url));
if (!existsSync(MODELS)) throw new Error(`test data missing: ${MODELS} must hold ../shared/models (DESIGN.md §8); these tests never skip`);
const S260K_BIN = join(MODELS, 'tinyllamas/stories260K.bin');
const S260K_HF = join(MODELS, 'hf/stories260K');
const WL28M = join(MODELS, 'wikillama-28M');

const tmp = tempDir('comet-loaders-');
const f32 = (w: HostWeight | undefined): Float32Array => {
  if (!w || w.kind !== 'f32') throw new Error('expected an f32 weight');
  return w.data;
};
const maxAbsDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const expectSameWeights = (a: Map<string, HostWeight>, b: Map<string, HostWeight>) => {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, w] of a) {
    const v = b.get(k)!;
    expect(v.kind === 'f32' && w.kind === 'f32' && v.shape, k).toEqual(w.kind === 'f32' && w.shape);
    expect(maxAbsDiff(f32(w), f32(b.get(k))), k).toBe(0);
  }
};

const TINY: LlamaConfig = { ...STORIES15M, dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 8, vocabSize: 300, seqLen: 16 };

describe('llama2.c checkpoints', () => {
  it('loads stories260K.bin (v0) with the header config', async () => {
    const m = await loadModel(S260K_BIN);
    expect(m.format).toBe('llama2c');
    expect(m.config).toMatchObject({ dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512, seqLen: 512, tiedEmbeddings: true });
    expect([...m.weights.keys()]).toEqual(weightNames(m.config));
    expect(m.tokenizerPath).toBe(join(MODELS, 'tinyllamas/tok512.bin'));
    // first float after the 28-byte header is token_embedding[0][0]
    expect(f32(m.weights.get('tok_embed'))[0]).toBe(readFileSync(S260K_BIN).readFloatLE(28));
  });

  it('v1 export written by writeLlama2c round-trips; v0 too', async () => {
    const a = readLlama2c(S260K_BIN);
    for (const version of [0, 1] as const) {
      const p = join(tmp, `s260k.v${version}.bin`);
      writeLlama2c(p, a.config, a.weights, { version });
      const b = readLlama2c(p);
      expect(b.version).toBe(version);
      expect(b.config).toEqual(a.config);
      expectSameWeights(a.weights, b.weights);
    }
    // v0 rewrite is byte-identical to the original except for the (unused) freq_cis section
    const orig = readFileSync(S260K_BIN), ours = readFileSync(join(tmp, 's260k.v0.bin'));
    expect(ours.length).toBe(orig.length);
    const freqStart = 28 + 4 * (264128 - 4096);
    expect(ours.subarray(0, freqStart).equals(orig.subarray(0, freqStart))).toBe(true);
    // v1 layout: norms first (rms_att of layer 0 right after the 256-byte header)
    const v1 = readFileSync(join(tmp, 's260k.v1.bin'));
    expect(v1.readUInt32LE(0)).toBe(0x616b3432);
    expect(v1.readFloatLE(256)).toBe(f32(a.weights.get('l0.attn_norm'))[0]);
    expect(v1.readFloatLE(256 + 4 * (2 * 5 * 64 + 64))).toBe(f32(a.weights.get('tok_embed'))[0]);
  });

  it('unshared classifier (negative vocab in v0, flag byte in v1)', () => {
    const c = { ...TINY, tiedEmbeddings: false };
    for (const version of [0, 1] as const) {
      const p = join(tmp, `unshared.v${version}.bin`);
      const w = writeSyntheticLlama2c(p, c, 7, { version });
      const buf = readFileSync(p);
      if (version === 0) expect(buf.readInt32LE(20)).toBe(-300);
      else expect(buf[36]).toBe(0);
      const r = readLlama2c(p);
      expect(r.config.tiedEmbeddings).toBe(false);
      expect(r.weights.has('output')).toBe(true);
      expectSameWeights(w, r.weights);
    }
  });

  it('synthetic stories15M-shape checkpoint has the llama2.c size and loads', () => {
    const p = join(tmp, 'synthetic15M.bin');
    writeSyntheticLlama2c(p, STORIES15M, 1);
    const c = STORIES15M, kv = c.nKvHeads * c.headDim;
    const floats = c.vocabSize * c.dim + c.nLayers * (2 * c.dim + 2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.hiddenDim) + c.dim + c.seqLen * c.headDim;
    expect(statSync(p).size).toBe(28 + 4 * floats);
    const r = readLlama2c(p);
    expect(r.config).toEqual(STORIES15M);
    const e = f32(r.weights.get('tok_embed'));
    expect(Math.max(...e.subarray(0, 10000).map(Math.abs))).toBeLessThanOrEqual(0.05);
    // seeded: the same seed gives the same weights
    expect(f32(syntheticWeights(TINY, 3).get('l1.wq'))).toEqual(f32(syntheticWeights(TINY, 3).get('l1.wq')));
  });

  it('rejects version 2 (Q8_0) and unknown versions', async () => {
    for (const [v, msg] of [[2, 'version 2 (Q8_0'], [3, 'unknown llama2.c checkpoint version 3']] as const) {
      const h = Buffer.alloc(4096);
      h.writeUInt32LE(0x616b3432, 0);
      h.writeInt32LE(v, 4);
      const p = join(tmp, `v${v}.bin`);
      writeFileSync(p, h);
      await expectCometError(() => loadModel(p), p, msg);
    }
  });

  it('truncated .bin', async () => {
    const p = join(tmp, 'truncated.bin');
    writeFileSync(p, readFileSync(S260K_BIN).subarray(0, 1056540 - 100));
    await expectCometError(() => loadModel(p), p, 'must be 1056540 bytes, file is 1056440 bytes (truncated?)');
    const q = join(tmp, 'tiny.bin');
    writeFileSync(q, Buffer.alloc(10));
    await expectCometError(() => loadModel(q), q, 'too short');
  });

  it('garbage header', async () => {
    const p = join(tmp, 'garbage.bin');
    writeFileSync(p, Buffer.from(new Int32Array([64, 172, 5, 0, 4, 512, 512]).buffer));
    await expectCometError(() => loadModel(p), p, 'nHeads = 0');
  });
});

describe('Hugging Face directories', () => {
  it('hf/stories260K equals stories260K.bin after the rotate-half -> interleaved q/k conversion', async () => {
    const a = await loadModel(S260K_BIN), b = await loadModel(S260K_HF);
    expect(b.format).toBe('hf');
    expect({ ...b.config, eos: [] }).toEqual({ ...a.config, eos: [] });
    expect(b.config.eos).toEqual([2]);
    expectSameWeights(a.weights, b.weights);
    expect(b.tokenizerPath).toBe(join(S260K_HF, 'tokenizer.json'));
  });

  it('wikillama-28M: sharded BF16, exact widening, q/k permuted', async () => {
    const m = await loadModel(WL28M);
    expect(m.config).toMatchObject({ dim: 512, hiddenDim: 1408, nLayers: 8, nHeads: 8, nKvHeads: 4, headDim: 64, vocabSize: 8192, seqLen: 1024, ropeTheta: 10000, normEps: 1e-5, tiedEmbeddings: true, bos: 0, eos: [1] });
    expect(m.meta?.dtypes).toEqual({ BF16: 74 });
    let params = 0;
    for (const w of m.weights.values()) params += f32(w).length;
    expect(params).toBe(27795968);
    // independent check against raw file bytes: f32 bits = bf16 bits << 16
    const index = JSON.parse(readFileSync(join(WL28M, 'model.safetensors.index.json'), 'utf8')).weight_map;
    const raw = (name: string) => {
      const st = SafetensorsFile.open(join(WL28M, index[name]));
      try {
        expect(st.info(name).dtype).toBe('BF16');
        return st.bytes(name);
      } finally {
        st.close();
      }
    };
    const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
    const bf16At = (b: Uint8Array, i: number) => ((b[2 * i] | (b[2 * i + 1] << 8)) << 16) >>> 0;
    const down = raw('model.layers.3.mlp.down_proj.weight'), ours = bits(f32(m.weights.get('l3.w_down')));
    for (let i = 0; i < ours.length; i += 97) expect(ours[i]).toBe(bf16At(down, i));
    // wk [256, 512]: internal row 2i of head h = HF row i, row 2i+1 = HF row 32 + i (head_dim 64)
    const k = raw('model.layers.2.self_attn.k_proj.weight'), wk = bits(f32(m.weights.get('l2.wk')));
    for (const [h, i, col] of [[0, 0, 0], [1, 5, 7], [3, 31, 511]])
      for (const [row, hfRow] of [[h * 64 + 2 * i, h * 64 + i], [h * 64 + 2 * i + 1, h * 64 + 32 + i]])
        expect(wk[row * 512 + col]).toBe(bf16At(k, hfRow * 512 + col));
  });

  it('synthetic HF dirs: F32, F16, BF16, sharded, untied', async () => {
    const c = { ...TINY, tiedEmbeddings: false, eos: [2] };
    const w = syntheticWeights(c, 11);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const dir = join(tmp, `hf-${dtype}`);
      writeSyntheticHF(dir, c, w, { dtype, shards: dtype === 'BF16' ? 3 : 1 });
      const m = await loadModel(dir);
      expect(m.config).toEqual(c);
      for (const [k, v] of w) {
        const got = f32(m.weights.get(k));
        if (dtype === 'F32') expect(maxAbsDiff(got, f32(v)), k).toBe(0);
        else expect(maxAbsDiff(got, f32(v)), k).toBeLessThan(dtype === 'F16' ? 1e-3 : 1e-2);
      }
    }
    // BF16 widening is exact: re-rounding what we loaded gives back the same bits
    const m = await loadModel(join(tmp, 'hf-BF16'));
    const wq = f32(m.weights.get('l0.wq'));
    expect(maxAbsDiff(new Float32Array(new Uint32Array([...f32ToBf16(wq)].map((b) => b << 16)).buffer), wq)).toBe(0);
  });

  it('rope_parameters.rope_theta and head_dim default', async () => {
    const dir = join(tmp, 'hf-rope');
    writeSyntheticHF(dir, TINY, syntheticWeights(TINY, 2), { config: { rope_theta: undefined, rope_parameters: { rope_theta: 500000, rope_type: 'default' }, head_dim: undefined } });
    const m = await loadModel(dir);
    expect(m.config.ropeTheta).toBe(500000);
    expect(m.config.headDim).toBe(8);
  });

  it('config dims that disagree with tensors', async () => {
    const dir = join(tmp, 'hf-baddims');
    writeSyntheticHF(dir, TINY, syntheticWeights(TINY, 2), { config: { intermediate_size: 64 } });
    await expectCometError(() => loadModel(dir), 'model.safetensors', "'model.layers.0.mlp.gate_proj.weight' has shape [48,32], config.json implies [64,32]");
  });

  it('unknown model_type / architecture lists what is supported', async () => {
    const dir = join(tmp, 'hf-gpt2');
    writeSyntheticHF(dir, TINY, syntheticWeights(TINY, 2), { config: { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] } });
    await expectCometError(() => loadModel(dir), join(dir, 'config.json'), "model_type \"gpt2\"", "supported: model_type 'llama'");
    const dir2 = join(tmp, 'hf-bias');
    writeSyntheticHF(dir2, TINY, syntheticWeights(TINY, 2), { config: { attention_bias: true } });
    await expectCometError(() => loadModel(dir2), 'attention_bias: true is not supported');
  });

  it('missing tensors and missing shard files', async () => {
    const c = { ...TINY, tiedEmbeddings: false };
    const dir = join(tmp, 'hf-notie');
    writeSyntheticHF(dir, c, syntheticWeights(c, 2), { config: { tie_word_embeddings: true } });
    // tied in config but an lm_head that differs from the embedding: which one the model means is unknowable
    await expectCometError(() => loadModel(dir), 'tie_word_embeddings is true', 'lm_head.weight differs');
    writeFileSync(join(dir, 'config.json'), readFileSync(join(dir, 'config.json'), 'utf8').replace('"tie_word_embeddings": true', '"tie_word_embeddings": false').replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'));
    await expectCometError(() => loadModel(dir), dir, "tensor 'model.layers.2.input_layernorm.weight' is missing");
    const only = join(tmp, 'hf-config-only');
    writeSyntheticHF(only, TINY, syntheticWeights(TINY, 2), { shards: 2 });
    const index = join(only, 'model.safetensors.index.json');
    const j = JSON.parse(readFileSync(index, 'utf8'));
    j.weight_map['model.norm.weight'] = 'nope.safetensors';
    writeFileSync(index, JSON.stringify(j));
    await expectCometError(() => loadModel(only), 'nope.safetensors', 'cannot open');
  });
});

describe('safetensors', () => {
  const header = (h: object, dataBytes: number) => {
    const j = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(j.length));
    return Buffer.concat([len, j, Buffer.alloc(dataBytes)]);
  };

  it('writer/reader round trip, metadata, 8-byte aligned data, every dtype', () => {
    const p = join(tmp, 'rt.safetensors');
    const tensors = [
      { name: 'a', dtype: 'F32' as const, shape: [2, 3], data: Float32Array.of(1, -2, 3.5, 0, 1e-30, -0) },
      { name: 'b', dtype: 'U8' as const, shape: [3], data: Uint8Array.of(1, 2, 255) },
      { name: 'c', dtype: 'F16' as const, shape: [2], data: f32ToF16(Float32Array.of(1.5, -65504)) },
      { name: 'd', dtype: 'BF16' as const, shape: [1], data: f32ToBf16(Float32Array.of(-3.25)) },
      { name: 'e', dtype: 'I32' as const, shape: [2], data: Int32Array.of(-7, 1 << 30) },
      { name: 'f', dtype: 'I64' as const, shape: [1], data: BigInt64Array.of(-5n) },
      { name: 'g', dtype: 'I8' as const, shape: [2, 0], data: new Int8Array(0) },
    ];
    writeSafetensors(p, tensors, { format: 'test', note: 'x' });
    const buf = readFileSync(p);
    expect((8 + Number(buf.readBigUInt64LE(0))) % 8).toBe(0);
    const st = SafetensorsFile.open(p);
    try {
      expect(st.metadata).toEqual({ format: 'test', note: 'x' });
      expect([...st.tensors.keys()]).toEqual(tensors.map((t) => t.name));
      expect(st.getF32('a')).toEqual(tensors[0].data);
      expect(st.get('b')).toEqual(tensors[1].data);
      expect([...st.getF32('c')]).toEqual([1.5, -65504]);
      expect([...st.getF32('d')]).toEqual([-3.25]);
      expect(st.get('e')).toEqual(tensors[4].data);
      expect(st.get('f')).toEqual(tensors[5].data);
      expect(st.info('g').shape).toEqual([2, 0]);
      expect(() => st.getF32('e')).toThrow(/'e' has dtype I32, expected a float tensor/);
      expect(() => st.get('zz')).toThrow(CometError);
    } finally {
      st.close();
    }
    expect(() => writeSafetensors(join(tmp, 'bad.safetensors'), [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/needs 12 bytes, data has 8/);
  });

  it('corrupt headers: offsets past the file, wrong dtype, size mismatch, overlap, bad length, bad JSON', () => {
    const cases: [string, Buffer, string][] = [
      ['past', header({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8), "tensor 'w': data_offsets [0, 16] point past the end of the file"],
      ['dtype', header({ w: { dtype: 'Q4', shape: [4], data_offsets: [0, 16] } }, 16), "tensor 'w': dtype \"Q4\" (expected one of F64, F32"],
      ['size', header({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 16] } }, 16), 'F32 [2,3] needs 24 bytes, data_offsets [0, 16] hold 16'],
      ['overlap', header({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 16), 'overlap'],
      ['shape', header({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), 'shape [-1]'],
      ['json', Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":')]), 'not valid JSON'],
      ['len', Buffer.from([255, 255, 0, 0, 0, 0, 0, 0, 123]), 'header length 65535 runs past the end of the file'],
      ['short', Buffer.from([1, 2]), 'shorter than the 8-byte header length'],
    ];
    for (const [name, buf, msg] of cases) {
      const p = join(tmp, `corrupt-${name}.safetensors`);
      writeFileSync(p, buf);
      let err: unknown;
      try {
        SafetensorsFile.open(p).close();
      } catch (e) {
        err = e;
      }
      expect(err, name).toBeInstanceOf(CometError);
      expect((err as Error).message, name).toContain(p);
      expect((err as Error).message, name).toContain(msg);
    }
  });

  it('an HF tensor in a non-float dtype and a shard whose offsets point past the file', async () => {
    const dir = join(tmp, 'hf-i32');
    writeSyntheticHF(dir, TINY, syntheticWeights(TINY, 2));
    const st = SafetensorsFile.open(join(dir, 'model.safetensors'));
    const names = [...st.tensors.values()];
    const datas = names.map((t) => st.bytes(t.name));
    st.close();
    writeSafetensors(join(dir, 'model.safetensors'), names.map((t, i) => ({ name: t.name, dtype: t.name === 'model.norm.weight' ? 'I32' : t.dtype, shape: t.shape, data: datas[i] })));
    await expectCometError(() => loadModel(dir), "'model.norm.weight' has dtype I32, expected a float tensor");
    const full = readFileSync(join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'model.safetensors'), full.subarray(0, full.length - 64));
    await expectCometError(() => loadModel(dir), join(dir, 'model.safetensors'), 'point past the end of the file');
  });
});

describe('loadModel dispatch and findTokenizerPath', () => {
  it('missing file', async () => {
    await expectCometError(() => loadModel(join(tmp, 'nope.bin')), 'model not found', 'nope.bin');
  });

  it('a .comet safetensors goes to loadComet; a plain safetensors file is refused', async () => {
    const c = join(tmp, 'm.comet');
    writeSafetensors(c, [{ name: 'x', dtype: 'U8', shape: [1], data: new Uint8Array(1) }], { format: 'comet' });
    await expect(loadModel(c)).rejects.toThrow(CometError);
    await loadModel(c).catch((e) => expect(e.message).not.toContain('not a .comet model'));
    const p = join(tmp, 'plain.safetensors');
    writeSafetensors(p, [{ name: 'x', dtype: 'U8', shape: [1], data: new Uint8Array(1) }], { format: 'pt' });
    await expectCometError(() => loadModel(p), p, 'not a .comet model');
  });

  it('finds the tokenizer beside a model', () => {
    expect(findTokenizerPath(S260K_BIN)).toBe(join(MODELS, 'tinyllamas/tok512.bin'));
    expect(findTokenizerPath(WL28M)).toBe(join(WL28M, 'tokenizer.json'));
    const dir = tempDir('comet-tokfind-');
    copyFileSync(S260K_BIN, join(dir, 'model.bin'));
    expect(findTokenizerPath(join(dir, 'model.bin'))).toBeUndefined();
    writeFileSync(join(dir, 'tokenizer.json'), '{}');
    expect(findTokenizerPath(join(dir, 'model.bin'))).toBe(join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tok512.bin'), '');
    expect(findTokenizerPath(join(dir, 'model.bin'))).toBe(join(dir, 'tok512.bin'));
    writeFileSync(join(dir, 'tokenizer.bin'), '');
    expect(findTokenizerPath(join(dir, 'model.bin'))).toBe(join(dir, 'tokenizer.bin'));
  });
});

describe('loaders layout', () => {
  // formats/ (and bytes.ts, source.ts) reach the browser bundle: a node:* import there breaks comet/web.
  // And the Node loaders import formats/ and model.ts, never the dispatcher (index.ts) that imports them.
  const dir = fileURLToPath(new URL('../src/loaders/', import.meta.url));
  const imports = (f: string) => [...readFileSync(join(dir, f), 'utf8').matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
  it('the browser-safe parsers import nothing from Node', () => {
    for (const f of ['bytes.ts', 'source.ts', ...readdirSync(join(dir, 'formats')).map((x) => `formats/${x}`)])
      expect(imports(f).filter((m) => m.startsWith('node:') || /file-source|\/index\.ts$/.test(m)), f).toEqual([]);
  });
  it('no loader imports index.ts (no cycle through the dispatcher) or src/quant', () => {
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.ts') && x !== 'index.ts'))
      expect(imports(f).filter((m) => m === './index.ts' || m.includes('/quant/')), f).toEqual([]);
  });
});
