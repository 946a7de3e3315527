// Hugging Face LLaMA directories: config.json (+ generation_config.json) and model.safetensors, or shards
// listed in model.safetensors.index.json ({ weight_map: { tensor name: shard file } }). F32/F16/BF16.
//
// HF's q_proj/k_proj rows are in "rotate-half" order: within each head, rows [0, hd/2) are the first element
// of every RoPE pair and rows [hd/2, hd) the second (llama2.c export.py `permute_original` made them so from
// llama2.c's interleaved order). COMET runs the interleaved order (pairs (2i, 2i+1) rotate together), so
// at load: internal row 2i = HF row i, internal row 2i+1 = HF row hd/2 + i, per head.

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import { readJsonObject } from './file-source.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../model/config.ts';
import { SafetensorsFile } from './safetensors.ts';
import { DTYPE_SIZE, bf16ToF32 } from './formats/safetensors.ts';
import { f16ArrayToF32 } from '../../simulator/f16.ts';
import type { RopeScaling } from '../../simulator/kernels/float.ts';

const SUPPORTED = `supported: model_type 'llama' with architectures ["LlamaForCausalLM"]`;

/** Internal weight name -> HF tensor name. */
export function hfName(name: string): string {
  const m = /^l(\d+)\.(.+)$/.exec(name);
  if (!m) return { tok_embed: 'model.embed_tokens.weight', norm: 'model.norm.weight', output: 'lm_head.weight' }[name] ?? name;
  const sub: Record<string, string> = {
    attn_norm: 'input_layernorm', wq: 'self_attn.q_proj', wk: 'self_attn.k_proj', wv: 'self_attn.v_proj', wo: 'self_attn.o_proj',
    ffn_norm: 'post_attention_layernorm', w_gate: 'mlp.gate_proj', w_up: 'mlp.up_proj', w_down: 'mlp.down_proj',
  };
  return `model.layers.${m[1]}.${sub[m[2]]}.weight`;
}

const readJson = (path: string): Record<string, unknown> => readJsonObject(path);

/** LlamaConfig from config.json (and generation_config.json for bos/eos when present). */
export function readHFConfig(dir: string): LlamaConfig {
  const path = join(dir, 'config.json');
  const j = readJson(path);
  const arch = j.architectures as unknown;
  if (j.model_type !== 'llama' || (arch !== undefined && !(Array.isArray(arch) && arch.includes('LlamaForCausalLM'))))
    throw new CometError(`${path}: unsupported model: model_type ${JSON.stringify(j.model_type)}, architectures ${JSON.stringify(arch)} (${SUPPORTED})`);
  const num = (k: string, dflt?: number): number => {
    const v = j[k] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new CometError(`${path}: field '${k}' is ${JSON.stringify(v)}, expected a number`);
    return v;
  };
  const unsupported = (what: string) => { throw new CometError(`${path}: ${what} is not supported (COMET runs plain LLaMA: no biases, SiLU, default or llama3 RoPE)`); };
  if ((j.hidden_act ?? 'silu') !== 'silu') unsupported(`hidden_act ${JSON.stringify(j.hidden_act)}`);
  if (j.attention_bias === true) unsupported('attention_bias: true');
  if (j.mlp_bias === true) unsupported('mlp_bias: true');
  const rp = j.rope_parameters as Record<string, unknown> | undefined;
  const rs = (rp?.rope_type !== undefined ? rp : j.rope_scaling) as Record<string, unknown> | null | undefined;
  const ropeType = rs?.rope_type ?? rs?.type;
  if (ropeType !== undefined && ropeType !== 'default' && ropeType !== 'llama3') unsupported(`RoPE scaling type ${JSON.stringify(ropeType)} (supported: default, llama3)`);
  let ropeScaling: RopeScaling | undefined;
  if (ropeType === 'llama3') {
    const p = (k: string) => {
      const v = rs![k];
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new CometError(`${path}: rope_scaling.${k} is ${JSON.stringify(v)}, expected a positive number (rope_type llama3)`);
      return v;
    };
    ropeScaling = { type: 'llama3', factor: p('factor'), lowFreqFactor: p('low_freq_factor'), highFreqFactor: p('high_freq_factor'), originalMaxPositionEmbeddings: p('original_max_position_embeddings') };
    if (!(ropeScaling.highFreqFactor > ropeScaling.lowFreqFactor)) throw new CometError(`${path}: rope_scaling high_freq_factor ${ropeScaling.highFreqFactor} must exceed low_freq_factor ${ropeScaling.lowFreqFactor}`);
  }
  const dim = num('hidden_size'), nHeads = num('num_attention_heads');
  const gen = existsSync(join(dir, 'generation_config.json')) ? readJson(join(dir, 'generation_config.json')) : {};
  const eos = gen.eos_token_id ?? j.eos_token_id ?? 2;
  const c: LlamaConfig = {
    dim,
    hiddenDim: num('intermediate_size'),
    nLayers: num('num_hidden_layers'),
    nHeads,
    nKvHeads: num('num_key_value_heads', nHeads),
    headDim: num('head_dim', dim / nHeads),
    vocabSize: num('vocab_size'),
    seqLen: num('max_position_embeddings', 2048),
    normEps: num('rms_norm_eps', 1e-6), // transformers' LlamaConfig defaults
    ropeTheta: typeof rp?.rope_theta === 'number' ? rp.rope_theta : num('rope_theta', 10000),
    tiedEmbeddings: j.tie_word_embeddings === true, // transformers' LlamaConfig default: false
    ...(ropeScaling ? { ropeScaling } : {}),
    bos: Number(gen.bos_token_id ?? j.bos_token_id ?? 1),
    eos: (Array.isArray(eos) ? eos : [eos]).map(Number),
  };
  try {
    validateConfig(c, path);
  } catch (e) {
    throw new CometError((e as Error).message);
  }
  return c;
}

export interface HFCheckpoint {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  dtypes: Record<string, number>; // source dtype -> tensor count (for `comet info`)
}

/** Which file holds each HF tensor name. */
function weightFiles(dir: string): Map<string, string> {
  const index = join(dir, 'model.safetensors.index.json'), single = join(dir, 'model.safetensors');
  const files = new Map<string, string>();
  if (existsSync(index)) {
    const map = readJson(index).weight_map;
    if (typeof map !== 'object' || map === null) throw new CometError(`${index}: no 'weight_map' object`);
    for (const [k, f] of Object.entries(map)) {
      // a shard is a file beside index.json: no paths ('..', '/'), so an index cannot point outside the model
      if (typeof f !== 'string' || !/^[^/\\]+$/.test(f) || f === '.' || f === '..')
        throw new CometError(`${index}: weight_map['${k}'] is ${JSON.stringify(f)}, expected a file name in the model directory`);
      files.set(k, join(dir, f));
    }
  } else if (existsSync(single)) {
    const f = SafetensorsFile.open(single);
    for (const k of f.tensors.keys()) files.set(k, single);
    f.close();
  } else {
    throw new CometError(`${dir}: no model.safetensors or model.safetensors.index.json (PyTorch .bin weights are not supported; convert them to safetensors)`, 'not_found');
  }
  return files;
}

export function readHF(dir: string): HFCheckpoint {
  const ck = openHF(dir);
  try {
    const weights = new Map<string, HostWeight>();
    for (const name of weightNames(ck.config)) weights.set(name, ck.weight(name));
    return { config: ck.config, weights, dtypes: ck.dtypes };
  } finally {
    ck.close();
  }
}

/** An HF checkpoint opened for reading one tensor at a time (the layer-by-layer quantizer holds one layer).
 *  Everything that can be checked without reading tensor data is checked at open, before any work starts:
 *  config.json is supported, every shard of the index exists and has a valid header, every expected tensor
 *  is there with the shape config.json implies and a float dtype, no tensor is unexpected, and a tied model's
 *  lm_head.weight (when the checkpoint has one) equals embed_tokens. */
export interface HFReader {
  config: LlamaConfig;
  dtypes: Record<string, number>; // source dtype -> tensor count
  /** internal name -> f32 host weight (q/k rows converted to the interleaved RoPE order) */
  weight(name: string): Extract<HostWeight, { kind: 'f32' }>;
  /** rows of a 2-D tensor (embedding lookup without reading the table): [rows.length][cols] f32 */
  rows(name: string, rows: ArrayLike<number>): Float32Array;
  /** bytes of the tensor as stored (bf16 2, f32 4 per element) */
  storedBytes(name: string): number;
  close(): void;
}

export function openHF(dir: string): HFReader {
  const config = readHFConfig(dir);
  const files = weightFiles(dir);
  // every layer has 9 tensors: a config claiming more layers than the checkpoint has tensors is refused before
  // the expected names are listed (num_hidden_layers 2^24 would be 150M names)
  if (config.nLayers > files.size)
    throw new CometError(`${join(dir, 'config.json')}: num_hidden_layers ${config.nLayers}, but the checkpoint holds only ${files.size} tensors (a LLaMA layer has 9)`);
  const want = new Map(weightNames(config).map((n) => [hfName(n), n]));
  for (const k of files.keys())
    if (!want.has(k) && k !== 'lm_head.weight' && !k.endsWith('.rotary_emb.inv_freq'))
      throw new CometError(`${files.get(k)}: unexpected tensor '${k}' for a LLaMA with ${config.nLayers} layers (${SUPPORTED}, no biases)`);
  const open = new Map<string, SafetensorsFile>();
  const close = () => { for (const st of open.values()) st.close(); };
  const shard = (hf: string): SafetensorsFile => {
    const file = files.get(hf)!;
    let st = open.get(file);
    if (!st) open.set(file, (st = SafetensorsFile.open(file)));
    return st;
  };
  const dtypes: Record<string, number> = {};
  try {
    for (const file of new Set(files.values())) if (!open.has(file)) open.set(file, SafetensorsFile.open(file)); // a missing shard fails here
    for (const [hf, name] of want) {
      if (!files.has(hf)) {
        const hint = name === 'output' ? ' (config.json has tie_word_embeddings false/absent, so lm_head.weight is needed)' : '';
        throw new CometError(`${dir}: tensor '${hf}' is missing${hint}`);
      }
      const st = shard(hf), info = st.tensors.get(hf);
      if (!info) throw new CometError(`${st.path}: model.safetensors.index.json puts tensor '${hf}' in this shard, but it is not there`);
      const shape = weightShape(config, name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
        throw new CometError(`${st.path}: tensor '${hf}' has shape [${info.shape}], config.json implies [${shape}] ` +
          `(hidden ${config.dim}, intermediate ${config.hiddenDim}, heads ${config.nHeads}/${config.nKvHeads}, head_dim ${config.headDim}, vocab ${config.vocabSize})`);
      if (!['F32', 'F16', 'BF16'].includes(info.dtype)) throw new CometError(`${st.path}: tensor '${hf}' has dtype ${info.dtype}, expected a float tensor (F32, F16 or BF16)`);
      dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + 1;
    }
    if (config.tiedEmbeddings && files.has('lm_head.weight')) {
      const a = shard('model.embed_tokens.weight'), b = shard('lm_head.weight');
      const ia = a.info('model.embed_tokens.weight'), ib = b.info('lm_head.weight');
      if (ia.dtype !== ib.dtype || ia.shape.join() !== ib.shape.join() || Buffer.compare(a.bytes('model.embed_tokens.weight'), b.bytes('lm_head.weight')) !== 0)
        throw new CometError(`${join(dir, 'config.json')}: tie_word_embeddings is true, but the checkpoint's lm_head.weight differs from model.embed_tokens.weight (set tie_word_embeddings false to keep both)`);
    }
  } catch (e) {
    close();
    throw e;
  }
  const internal = new Map([...want].map(([hf, n]) => [n, hf]));
  const hfOf = (name: string) => internal.get(name) ?? (() => { throw new CometError(`${dir}: no weight '${name}' in this model`); })();
  return {
    config, dtypes, close,
    weight(name) {
      const hf = hfOf(name), shape = weightShape(config, name);
      let data = shard(hf).getF32(hf);
      const base = name.replace(/^l\d+\./, '');
      if (base === 'wq' || base === 'wk') data = rotateHalfToInterleaved(data, shape[0] / config.headDim, config.headDim, config.dim);
      return { kind: 'f32', name, shape, data };
    },
    rows(name, rows) {
      const hf = hfOf(name), st = shard(hf), info = st.info(hf), [R, C] = info.shape, el = DTYPE_SIZE[info.dtype];
      const out = new Float32Array(rows.length * C);
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i];
        if (!(Number.isInteger(r) && r >= 0 && r < R)) throw new CometError(`${st.path}: row ${r} of '${hf}' outside [0, ${R})`);
        const raw = st.range(hf, r * C * el, C * el);
        out.set(info.dtype === 'F32' ? new Float32Array(raw.buffer) : info.dtype === 'F16' ? f16ArrayToF32(new Uint16Array(raw.buffer)) : bf16ToF32(new Uint16Array(raw.buffer)), i * C);
      }
      return out;
    },
    storedBytes(name) {
      const info = shard(hfOf(name)).info(hfOf(name));
      return info.end - info.begin;
    },
  };
}

/** Rows of q/k [nHeads*hd, cols] from HF rotate-half order to interleaved: out row 2i <- in row i,
 *  out row 2i+1 <- in row hd/2 + i, within each head. */
export function rotateHalfToInterleaved(w: Float32Array, nHeads: number, hd: number, cols: number): Float32Array {
  return permuteRows(w, nHeads, hd, cols, false);
}

/** The inverse (llama2.c export.py `permute_original`): interleaved -> HF rotate-half. */
export function interleavedToRotateHalf(w: Float32Array, nHeads: number, hd: number, cols: number): Float32Array {
  return permuteRows(w, nHeads, hd, cols, true);
}

function permuteRows(w: Float32Array, nHeads: number, hd: number, cols: number, toHF: boolean): Float32Array {
  const out = new Float32Array(w.length), half = hd / 2;
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < half; i++)
      for (const [inter, rh] of [[2 * i, i], [2 * i + 1, half + i]]) {
        const [dst, src] = toHF ? [rh, inter] : [inter, rh];
        out.set(w.subarray((h * hd + src) * cols, (h * hd + src + 1) * cols), (h * hd + dst) * cols);
      }
  return out;
}

export const isHFDir = (dir: string) => statSync(dir).isDirectory() && existsSync(join(dir, 'config.json'));
