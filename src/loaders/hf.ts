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
  const unsupported = (what: string) => { throw new CometError(`${path}: ${what} is not supported (COMET runs plain LLaMA: no biases, SiLU, default RoPE)`); };
  if ((j.hidden_act ?? 'silu') !== 'silu') unsupported(`hidden_act ${JSON.stringify(j.hidden_act)}`);
  if (j.attention_bias === true) unsupported('attention_bias: true');
  if (j.mlp_bias === true) unsupported('mlp_bias: true');
  const rp = j.rope_parameters as Record<string, unknown> | undefined;
  const ropeType = rp?.rope_type ?? (j.rope_scaling as Record<string, unknown> | null | undefined)?.rope_type
    ?? (j.rope_scaling as Record<string, unknown> | null | undefined)?.type;
  if (ropeType !== undefined && ropeType !== 'default') unsupported(`RoPE scaling type ${JSON.stringify(ropeType)}`);
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
  const weights = new Map<string, HostWeight>();
  const dtypes: Record<string, number> = {};
  try {
    for (const [hf, name] of want) {
      const file = files.get(hf);
      if (!file) {
        const hint = name === 'output' ? ' (config.json has tie_word_embeddings false/absent, so lm_head.weight is needed)' : '';
        throw new CometError(`${dir}: tensor '${hf}' is missing${hint}`);
      }
      let st = open.get(file);
      if (!st) open.set(file, (st = SafetensorsFile.open(file)));
      const info = st.info(hf);
      const shape = weightShape(config, name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
        throw new CometError(`${file}: tensor '${hf}' has shape [${info.shape}], config.json implies [${shape}] ` +
          `(hidden ${config.dim}, intermediate ${config.hiddenDim}, heads ${config.nHeads}/${config.nKvHeads}, head_dim ${config.headDim}, vocab ${config.vocabSize})`);
      let data = st.getF32(hf);
      dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + 1;
      const base = name.replace(/^l\d+\./, '');
      if (base === 'wq' || base === 'wk') data = rotateHalfToInterleaved(data, shape[0] / config.headDim, config.headDim, config.dim);
      weights.set(name, { kind: 'f32', name, shape, data });
    }
  } finally {
    for (const st of open.values()) st.close();
  }
  return { config, weights, dtypes };
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
