// .comet model files (DESIGN §3.6) read from their safetensors reader: browser-safe, no node:fs. The tensor and
// metadata layout is in ../comet.ts' header comment (the Node loader and the writer).
import type { HostWeight } from '../../../backends/backend.ts';
import { actSpec } from '../../../simulator/act.ts';
import { checkW4 } from '../../../simulator/w4.ts';
import { CometError } from '../../errors.ts';
import { type LlamaConfig, validateConfig, weightNames, weightShape } from '../../model/config.ts';
import type { Safetensors } from './safetensors.ts';

export interface CometParsed {
  config: LlamaConfig;
  weights: Map<string, HostWeight>;
  meta: Record<string, unknown>; // quant, kvDType, kvGroup, weightError, dtypes
  tokenizer: { main: string; files: Array<{ name: string; bytes: Uint8Array }> };
}

export const COMET_FORMAT_VERSION = '1';

/** First 16 hex digits of SHA-256, as comet.ts' checksums. WebCrypto here (browsers: secure contexts only,
 *  which http://127.0.0.1 and https are); Node would pass node:crypto's. */
export type Sha16 = (b: Uint8Array) => Promise<string>;
export const webSha16: Sha16 = async (b) => {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>));
  return Array.from(d.subarray(0, 8), (x) => x.toString(16).padStart(2, '0')).join('');
};

/** Weights, config and tokenizer files of a .comet file, each tensor checked against its checksum, its dtype
 *  and shape, and its scales for non-finite values. `onTensor(done, total)` reports progress. */
export async function parseComet(st: Safetensors, path: string, sha16: Sha16 = webSha16, onTensor?: (done: number, total: number) => void | Promise<void>): Promise<CometParsed> {
  const md = st.metadata;
  if (md.format !== 'comet') throw new CometError(`${path}: a safetensors file, but not a .comet model (metadata format ${JSON.stringify(md.format ?? null)}); convert it with 'comet quantize'`, 'not_comet');
  if (md.version !== COMET_FORMAT_VERSION) throw new CometError(`${path}: .comet version ${md.version} is not supported (this build reads version ${COMET_FORMAT_VERSION})`);
  const json = <T>(key: string): T => {
    if (md[key] === undefined) throw new CometError(`${path}: .comet metadata has no '${key}'`);
    try {
      return JSON.parse(md[key]) as T;
    } catch (e) {
      throw new CometError(`${path}: .comet metadata '${key}' is not valid JSON (${(e as Error).message})`);
    }
  };
  const config = json<LlamaConfig>('config');
  try {
    validateConfig(config, path);
  } catch (e) {
    throw new CometError((e as Error).message);
  }
  // every layer has at least 9 tensors: a config claiming more layers than the file has tensors is refused
  // before weightNames lists them (2^24 layers ran the process out of memory)
  // validateConfig does not look at RoPE theta; a string or a negative one makes every activation NaN
  if (!(typeof config.ropeTheta === 'number' && config.ropeTheta > 0 && Number.isFinite(config.ropeTheta)))
    throw new CometError(`${path}: .comet config ropeTheta is ${JSON.stringify(config.ropeTheta)?.slice(0, 40)}, expected a positive number`);
  const rs = config.ropeScaling as unknown as Record<string, unknown> | undefined;
  if (rs !== undefined && !(rs.type === 'llama3' && ['factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositionEmbeddings'].every((k) => typeof rs[k] === 'number' && (rs[k] as number) > 0)))
    throw new CometError(`${path}: .comet config ropeScaling is ${JSON.stringify(rs)?.slice(0, 80)}, expected { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings } (positive numbers)`);
  if (config.nLayers > st.tensors.size) throw new CometError(`${path}: .comet config has ${config.nLayers} layers, the file holds only ${st.tensors.size} tensors`);
  const object = <T>(key: string): T => {
    const v = json<T>(key);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CometError(`${path}: .comet metadata '${key}' is ${JSON.stringify(v)?.slice(0, 40)}, expected a JSON object`);
    return v;
  };
  const quant = object<{ kv: 'f32' | 'kv4'; kvGroup: number }>('quant');
  if (quant.kv !== 'f32' && quant.kv !== 'kv4') throw new CometError(`${path}: .comet metadata quant.kv is ${JSON.stringify(quant.kv)?.slice(0, 40)}, expected "kv4" or "f32"`);
  if (!(Number.isInteger(quant.kvGroup) && quant.kvGroup > 0 && config.headDim % quant.kvGroup === 0 && quant.kvGroup % 2 === 0))
    throw new CometError(`${path}: .comet metadata quant.kvGroup is ${JSON.stringify(quant.kvGroup)?.slice(0, 40)}, expected an even divisor of head_dim ${config.headDim}`);
  const linears = object<Record<string, { K: number; Kp: number; B: number; K8: number }>>('linears');
  const checksums = object<Record<string, string>>('checksums');
  const total = st.tensors.size;
  let done = 0;
  const read = async (name: string) => {
    const want = checksums[name];
    if (want === undefined) throw new CometError(`${path}: tensor '${name}' has no checksum in the metadata`);
    const data = st.get(name);
    if ((await sha16(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))) !== want) throw new CometError(`${path}: tensor '${name}' is corrupt (checksum mismatch)`);
    await onTensor?.(++done, total);
    return data;
  };
  const expect = (name: string, dtype: string, shape: number[]) => {
    const t = st.tensors.get(name);
    if (!t) throw new CometError(`${path}: tensor '${name}' is missing`);
    if (t.dtype !== dtype || t.shape.join() !== shape.join()) throw new CometError(`${path}: tensor '${name}' is ${t.dtype} [${t.shape}], expected ${dtype} [${shape}]`);
  };
  const weights = new Map<string, HostWeight>();
  for (const name of weightNames(config)) {
    const shape = weightShape(config, name), lin = linears[name];
    if (!lin && (name === 'tok_embed' || name === 'output') && st.tensors.get(name)?.dtype === 'F16') {
      expect(name, 'F16', shape); // the classifier / embedding stored in f16 (read as f32 by every backend)
      const data = (await read(name)) as Uint16Array;
      const bad = data.findIndex((b) => (b & 0x7c00) === 0x7c00);
      if (bad >= 0) throw new CometError(`${path}: tensor '${name}' holds a non-finite f16 at element ${bad}`);
      weights.set(name, { kind: 'f16', name, shape, data });
      continue;
    }
    if (!lin) {
      expect(name, 'F32', shape);
      const data = (await read(name)) as Float32Array;
      // the quantized path needs finite activations (quantizeAct refuses NaN), as the scales below are checked
      const bad = data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new CometError(`${path}: tensor '${name}' holds a non-finite value (${data[bad]}) at element ${bad}`);
      weights.set(name, { kind: 'f32', name, shape, data });
      continue;
    }
    const [N, K] = shape;
    if (lin.K !== K) throw new CometError(`${path}: linear '${name}' has K = ${lin.K}, the config says ${K}`);
    let perm: Int32Array | undefined;
    if (st.tensors.has(`${name}.perm`)) {
      expect(`${name}.perm`, 'I32', [K]);
      perm = (await read(`${name}.perm`)) as Int32Array;
    }
    let spec;
    try {
      spec = actSpec(K, lin.B, lin.K8, perm);
    } catch (e) {
      throw new CometError(`${path}: linear '${name}': ${(e as Error).message}`);
    }
    if (spec.Kp !== lin.Kp) throw new CometError(`${path}: linear '${name}' has Kp = ${lin.Kp}, expected ${spec.Kp}`);
    expect(`${name}.codes`, 'U8', [N, spec.Kp / 2]);
    expect(`${name}.scales`, 'F16', [N, spec.Kp / spec.B]);
    const w = { N, codes: (await read(`${name}.codes`)) as Uint8Array, scales: (await read(`${name}.scales`)) as Uint16Array, act: spec };
    checkW4(w);
    for (let i = 0; i < w.scales.length; i++)
      if ((w.scales[i] & 0x7c00) === 0x7c00) throw new CometError(`${path}: tensor '${name}.scales' holds a non-finite f16 at element ${i}`);
    weights.set(name, { kind: 'w4', name, ...w });
  }
  const tok = object<{ main: string; files: string[] }>('tokenizer');
  if (!Array.isArray(tok.files)) throw new CometError(`${path}: .comet metadata 'tokenizer' has no 'files' list`);
  const files = [];
  for (const f of tok.files) {
    if (typeof f !== 'string' || !/^[\w.-]+$/.test(f)) throw new CometError(`${path}: embedded tokenizer file name '${f}' is not a plain file name`);
    if (st.tensors.get(`tokenizer/${f}`)?.dtype !== 'U8') throw new CometError(`${path}: tensor 'tokenizer/${f}' is missing or not U8`);
    files.push({ name: f, bytes: (await read(`tokenizer/${f}`)) as Uint8Array });
  }
  if (!tok.files.includes(tok.main)) throw new CometError(`${path}: the embedded tokenizer's main file '${tok.main}' is not among its files`);
  const dtypes = Object.fromEntries(['F32', 'U8', 'F16', 'I32'].map((d) => [d, [...st.tensors.values()].filter((t) => t.dtype === d).length]));
  return {
    config, weights,
    meta: { dtypes, quant, kvDType: quant.kv, kvGroup: quant.kvGroup, weightError: json<Record<string, number>>('weight_error') },
    tokenizer: { main: tok.main, files },
  };
}
