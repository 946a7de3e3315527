// LLaMA model configuration, one shape for every loader (llama2.c .bin, HF directory, .comet).
import type { RopeScaling } from '../../simulator/kernels/float.ts';

export interface LlamaConfig {
  dim: number; // D, residual stream width
  hiddenDim: number; // H, SwiGLU width
  nLayers: number;
  nHeads: number;
  nKvHeads: number; // GQA: each KV head serves nHeads/nKvHeads query heads
  headDim: number; // usually dim / nHeads
  vocabSize: number;
  seqLen: number; // maximum context
  normEps: number; // RMSNorm epsilon (llama2.c: 1e-5)
  ropeTheta: number; // 10000
  ropeScaling?: RopeScaling; // Llama-3.1 (HF rope_scaling rope_type 'llama3'); absent = plain RoPE
  tiedEmbeddings: boolean; // classifier shares the embedding table
  bos: number;
  eos: number[];
}

/** Internal weight names (one convention for every loader). q/k rows are in llama2.c's interleaved RoPE
 *  order: pairs (2i, 2i+1) of each head rotate together (HF rotate-half checkpoints are converted at load).
 *  Shapes are [out, in] (PyTorch), f32 on the host unless quantized:
 *   tok_embed [V, D] · norm [D] · output [V, D] (absent when tied)
 *   l{i}.attn_norm [D] · l{i}.wq [nHeads*headDim, D] · l{i}.wk, l{i}.wv [nKvHeads*headDim, D] · l{i}.wo [D, nHeads*headDim]
 *   l{i}.ffn_norm [D] · l{i}.w_gate, l{i}.w_up [H, D] · l{i}.w_down [D, H] */
export const weightNames = (c: LlamaConfig): string[] => {
  const names = ['tok_embed', 'norm'];
  if (!c.tiedEmbeddings) names.push('output');
  for (let i = 0; i < c.nLayers; i++)
    for (const n of ['attn_norm', 'wq', 'wk', 'wv', 'wo', 'ffn_norm', 'w_gate', 'w_up', 'w_down']) names.push(`l${i}.${n}`);
  return names;
};

/** Expected [rows, cols] (or [len]) of each weight. */
export const weightShape = (c: LlamaConfig, name: string): number[] => {
  const base = name.replace(/^l\d+\./, '');
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  switch (base) {
    case 'tok_embed': case 'output': return [c.vocabSize, c.dim];
    case 'norm': case 'attn_norm': case 'ffn_norm': return [c.dim];
    case 'wq': return [q, c.dim];
    case 'wk': case 'wv': return [kv, c.dim];
    case 'wo': return [c.dim, q];
    case 'w_gate': case 'w_up': return [c.hiddenDim, c.dim];
    case 'w_down': return [c.dim, c.hiddenDim];
    default: throw new Error(`unknown weight name '${name}'`);
  }
};

export function validateConfig(c: LlamaConfig, where: string): void {
  const bad = (msg: string) => { throw new Error(`${where}: invalid model config: ${msg}`); };
  for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'vocabSize', 'seqLen'] as const)
    if (!Number.isInteger(c[k]) || c[k] <= 0 || c[k] > 1 << 24) bad(`${k} = ${c[k]} (expected a positive integer)`);
  if (c.nHeads % c.nKvHeads !== 0) bad(`n_heads ${c.nHeads} is not a multiple of n_kv_heads ${c.nKvHeads}`);
  if (c.headDim % 2 !== 0) bad(`head_dim ${c.headDim} is odd (RoPE rotates pairs)`);
  if (!(c.normEps > 0)) bad(`norm eps ${c.normEps}`);
}
