// Synthetic checkpoints for tests and benchmarks: random weights from a seeded PRNG, written as a llama2.c
// .bin (writeSyntheticLlama2c) or a Hugging Face directory (writeSyntheticHF, rotate-half q/k like real ones).

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFloat16 } from '@petamoriken/float16';
import { rng } from './rng.ts';
import type { HostWeight } from '../backends/backend.ts';
import { type LlamaConfig, weightNames, weightShape } from '../src/model/config.ts';
import { hfName, interleavedToRotateHalf } from '../src/loaders/hf.ts';
import { writeLlama2c } from '../src/loaders/llama2c.ts';
import type { StDType } from '../src/loaders/formats/safetensors.ts';
import { type StTensor, writeSafetensors } from '../src/loaders/safetensors.ts';

/** The stories15M shape (llama2.c's smallest public TinyStories model), for the CPU benchmark. */
export const STORIES15M: LlamaConfig = {
  dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48, vocabSize: 32000, seqLen: 256,
  normEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: true, bos: 1, eos: [1, 2],
};

/** Linears and embeddings uniform in ±scale; norm weights 1 ± scale (near 1, as trained models have them,
 *  so activations stay in a realistic range). Internal names and interleaved q/k order. */
export function syntheticWeights(c: LlamaConfig, seed: number, scale = 0.05): Map<string, HostWeight> {
  const rnd = rng(seed);
  const out = new Map<string, HostWeight>();
  for (const name of weightNames(c)) {
    const shape = weightShape(c, name);
    const data = new Float32Array(shape.reduce((a, d) => a * d, 1));
    const base = shape.length === 1 ? 1 : 0;
    for (let i = 0; i < data.length; i++) data[i] = base + (2 * rnd() - 1) * scale;
    out.set(name, { kind: 'f32', name, shape, data });
  }
  return out;
}

export function writeSyntheticLlama2c(path: string, c: LlamaConfig, seed: number, opts: { version: 0 | 1 } = { version: 0 }): Map<string, HostWeight> {
  const w = syntheticWeights(c, seed);
  writeLlama2c(path, c, w, opts);
  return w;
}

/** f32 -> bf16 bits, round to nearest even (NaN kept quiet). */
export function f32ToBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length), out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    out[i] = (v & 0x7fffffff) > 0x7f800000 ? (v >>> 16) | 0x40 : (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
  }
  return out;
}

export function f32ToF16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length), dv = new DataView(out.buffer);
  for (let i = 0; i < x.length; i++) setFloat16(dv, 2 * i, x[i], true);
  return out;
}

/** An HF LlamaForCausalLM directory: config.json and model.safetensors (or `shards` files + index.json).
 *  q/k are permuted to rotate-half; `config` patches config.json (to make broken ones in tests). */
export function writeSyntheticHF(dir: string, c: LlamaConfig, weights: Map<string, HostWeight>,
  opts: { dtype?: 'F32' | 'F16' | 'BF16'; shards?: number; config?: Record<string, unknown> } = {}): void {
  mkdirSync(dir, { recursive: true });
  const dtype: StDType = opts.dtype ?? 'F32';
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: c.dim, intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers, num_attention_heads: c.nHeads, num_key_value_heads: c.nKvHeads, head_dim: c.headDim,
    vocab_size: c.vocabSize, max_position_embeddings: c.seqLen, rms_norm_eps: c.normEps, rope_theta: c.ropeTheta,
    tie_word_embeddings: c.tiedEmbeddings, bos_token_id: c.bos, eos_token_id: c.eos.length === 1 ? c.eos[0] : c.eos,
    hidden_act: 'silu', ...opts.config,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const tensors: StTensor[] = weightNames(c).map((name) => {
    const w = weights.get(name);
    if (!w || w.kind !== 'f32') throw new Error(`writeSyntheticHF: no f32 weight '${name}'`);
    const base = name.replace(/^l\d+\./, '');
    const f = base === 'wq' || base === 'wk' ? interleavedToRotateHalf(w.data, w.shape[0] / c.headDim, c.headDim, c.dim) : w.data;
    const data = dtype === 'F32' ? f : dtype === 'BF16' ? f32ToBf16(f) : f32ToF16(f);
    return { name: hfName(name), dtype, shape: w.shape, data };
  });
  const shards = opts.shards ?? 1;
  if (shards === 1) return writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = tensors.filter((_, i) => i % shards === s);
    for (const t of part) weightMap[t.name] = file;
    writeSafetensors(join(dir, file), part, { format: 'pt' });
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2));
}
