// The simulator as a backend: every op is the simulator's reference kernel on host typed arrays.
// It is the slow, exact definition the fast backends are tested against, and the CPU path for CI.
import { composed } from '../composed.ts';
import { checkTopK, type Backend, type DType, type HostWeight, type KVCache, type KVCacheSpec, type OpSet, type RopeSpec, type StepLayout, type Tensor, type Weight } from '../backend.ts';
import * as F from '../../simulator/kernels/float.ts';
import { attention, kvAppend } from '../../simulator/kernels/attention.ts';
import { KVStoreF32, type KVStore } from '../../simulator/kv.ts';
import type { KVStoreKV4 } from '../../simulator/kv4.ts';
import { simQuantOps, type QuantOps } from './quant.ts';
import type { QAct, W4Weight } from '../../simulator/formats.ts';
import { f16ArrayToF32 } from '../../simulator/f16.ts';

/** A host tensor: f32 data, or a quantized payload. */
export class SimTensor implements Tensor {
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly data: Float32Array,
    readonly q?: QAct,
  ) {}
}

export class SimWeight extends SimTensor implements Weight {
  constructor(readonly name: string, shape: readonly number[], dtype: DType, data: Float32Array, readonly w4?: W4Weight) {
    super(shape, dtype, data);
  }
  get act() { return this.w4?.act; }
}

export class SimKVCache implements KVCache {
  constructor(readonly spec: KVCacheSpec, readonly store: KVStore) {}
  async readLayer(layer: number): Promise<Uint8Array> {
    const s = this.store as Partial<KVStoreKV4 & KVStoreF32>;
    if (s.data) return s.data[layer];
    const k = s.k![layer], v = s.v![layer], out = new Uint8Array(k.byteLength + v.byteLength);
    out.set(new Uint8Array(k.buffer, k.byteOffset, k.byteLength), 0);
    out.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), k.byteLength);
    return out;
  }
}

const f32 = (t: Tensor): Float32Array => {
  const s = t as SimTensor;
  if (s.dtype !== 'f32') throw new Error(`sim: expected an f32 tensor, got ${s.dtype}`);
  return s.data;
};
/** a float weight's values: f32, or f16 held as the f32 values they are exactly */
const floats = (t: Tensor): Float32Array => ((t as SimTensor).dtype === 'f16' ? (t as SimTensor).data : f32(t));
const rows = (t: Tensor) => t.shape[0];
const cols = (t: Tensor) => t.shape[t.shape.length - 1];
const ropeFreqCache = new Map<string, Float32Array>();

export interface SimOptions {
  /** sum the W4Ax GEMM in another backend's reported order (Backend.gemmSchedule), to compare bit for bit */
  gemmSchedule?: Backend['gemmSchedule'];
}

export class SimBackend implements Backend {
  readonly name = 'sim';
  private quant: QuantOps = simQuantOps;
  constructor(private readonly opts: SimOptions = {}) {}

  /** the simulator defines every op and dtype: exact by definition */
  readonly ops: OpSet = {
    embed: { f32: 'exact', f16: 'exact', w4: 'exact' }, rmsnorm: { f32: 'exact' }, rmsnorm_quant: { qact: 'exact' }, quantize_act: { qact: 'exact' },
    add_rmsnorm: { f32: 'exact' }, add_rmsnorm_quant: { qact: 'exact' }, rope_kv_append: { f32: 'exact', kv4: 'exact' },
    gemm_f32: { f32: 'exact', f16: 'exact' }, gemm_w4ax: { w4: 'exact' }, rope: { f32: 'exact' }, kv_append: { f32: 'exact', kv4: 'exact' },
    attention: { f32: 'exact', kv4: 'exact' }, silu_mul: { f32: 'exact' }, silu_mul_quant: { qact: 'exact' }, add: { f32: 'exact' },
    argmax: { f32: 'exact' }, topk: { f32: 'exact' }, rows: { f32: 'exact' },
  };

  uploadWeight(w: HostWeight): Weight {
    if (w.kind === 'f32') return new SimWeight(w.name, w.shape, 'f32', w.data);
    if (w.kind === 'f16') return new SimWeight(w.name, w.shape, 'f16', f16ArrayToF32(w.data));
    return new SimWeight(w.name, [w.N, w.act.K], 'w4', new Float32Array(0), w);
  }
  fromHost(data: Float32Array, shape: readonly number[]): Tensor {
    return new SimTensor(shape, 'f32', data);
  }
  async read(t: Tensor): Promise<Float32Array> {
    const s = t as SimTensor;
    if (s.dtype === 'qact') return this.quant.dequantizeAct(s.q!);
    return s.data;
  }
  async readRaw(t: Tensor): Promise<Uint8Array> {
    const q = (t as SimTensor).q;
    if (!q) return new Uint8Array((t as SimTensor).data.buffer.slice(0));
    const out = new Uint8Array(q.a8.length + q.a4.length + q.sa.byteLength);
    out.set(new Uint8Array(q.a8.buffer, q.a8.byteOffset, q.a8.length), 0);
    out.set(q.a4, q.a8.length);
    out.set(new Uint8Array(q.sa.buffer, q.sa.byteOffset, q.sa.byteLength), q.a8.length + q.a4.length);
    return out;
  }
  createKVCache(spec: KVCacheSpec): KVCache {
    return new SimKVCache(spec, spec.dtype === 'kv4' ? this.quant.kv4Store(spec) : new KVStoreF32(spec));
  }
  endStep(): void {}
  dispose(): void {}

  embed(table: Weight, tokens: Int32Array): Tensor {
    const D = cols(table);
    for (const t of tokens) if (t < 0 || t >= table.shape[0]) throw new Error(`embed: token id ${t} outside the vocabulary [0, ${table.shape[0]})`);
    return new SimTensor([tokens.length, D], 'f32', F.embed(floats(table), D, tokens));
  }
  rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
    return new SimTensor(x.shape, 'f32', F.rmsnorm(f32(x), rows(x), cols(x), f32(w), eps));
  }
  rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: Weight['act'] & object): Tensor {
    const q = this.quant.rmsnormQuant(f32(x), rows(x), cols(x), f32(w), eps, spec);
    return new SimTensor([rows(x), spec.Kp], 'qact', new Float32Array(0), q);
  }
  // The fused ops are the compositions they replace (backends/composed.ts), through this backend's own ops, so a
  // subclass that changes a half (quant/fake.ts) changes both.
  addRmsnorm(x: Tensor, y: Tensor, w: Tensor, eps: number): [Tensor, Tensor] { return composed.addRmsnorm(this, x, y, w, eps); }
  addRmsnormQuant(x: Tensor, y: Tensor, w: Tensor, eps: number, spec: Weight['act'] & object): [Tensor, Tensor] { return composed.addRmsnormQuant(this, x, y, w, eps, spec); }
  ropeKvAppend(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor {
    return composed.ropeKvAppend(this, q, k, v, cache, layer, layout, spec);
  }
  quantizeAct(x: Tensor, spec: Weight['act'] & object): Tensor {
    const q = this.quant.quantizeAct(f32(x), rows(x), spec);
    return new SimTensor([rows(x), spec.Kp], 'qact', new Float32Array(0), q);
  }
  matmul(x: Tensor, w: Weight): Tensor {
    const sw = w as SimWeight, sx = x as SimTensor;
    const N = w.shape[0];
    if (sw.dtype === 'w4') {
      if (sx.dtype !== 'qact') throw new Error(`matmul: ${w.name} is w4 and needs a quantized activation, got ${sx.dtype}`);
      return new SimTensor([rows(x), N], 'f32', this.quant.gemmW4Ax(sx.q!, sw.w4!, this.opts.gemmSchedule?.(N, sw.act!)));
    }
    const K = cols(w);
    if (cols(x) !== K) throw new Error(`matmul: ${w.name} expects ${K} input features, got ${cols(x)}`);
    return new SimTensor([rows(x), N], 'f32', (sw.dtype === 'f16' ? F.matmulF16w : F.matmul)(f32(x), rows(x), K, floats(w), N));
  }
  rope(x: Tensor, layout: StepLayout, spec: RopeSpec): Tensor {
    const key = `${spec.headDim}:${spec.theta}:${JSON.stringify(spec.scaling ?? null)}`;
    let freqs = ropeFreqCache.get(key);
    if (!freqs) ropeFreqCache.set(key, (freqs = F.ropeFreqs(spec.headDim, spec.theta, spec.scaling)));
    return new SimTensor(x.shape, 'f32', F.rope(f32(x), rows(x), spec.nHeads, spec.headDim, layout.pos, freqs));
  }
  kvAppend(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout): void {
    kvAppend((cache as SimKVCache).store, layer, f32(k), f32(v), layout);
  }
  attention(q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor {
    return new SimTensor(q.shape, 'f32', attention((cache as SimKVCache).store, layer, f32(q), layout, nHeads));
  }
  siluMul(g: Tensor, u: Tensor): Tensor {
    return new SimTensor(g.shape, 'f32', F.siluMul(f32(g), f32(u)));
  }
  siluMulQuant(g: Tensor, u: Tensor, spec: Weight['act'] & object): Tensor {
    const q = this.quant.siluMulQuant(f32(g), f32(u), rows(g), spec);
    return new SimTensor([rows(g), spec.Kp], 'qact', new Float32Array(0), q);
  }
  add(a: Tensor, b: Tensor): Tensor {
    return new SimTensor(a.shape, 'f32', F.add(f32(a), f32(b)));
  }
  async argmax(x: Tensor): Promise<Int32Array> {
    return F.argmax(f32(x), rows(x), cols(x));
  }
  async topk(x: Tensor, k: number): Promise<{ values: Float32Array; indices: Int32Array }> {
    checkTopK(k, cols(x));
    return F.topk(f32(x), rows(x), cols(x), k);
  }
  rows(x: Tensor, idx: Int32Array): Tensor {
    const C = cols(x), src = f32(x), out = new Float32Array(idx.length * C);
    idx.forEach((r, i) => out.set(src.subarray(r * C, (r + 1) * C), i * C));
    return new SimTensor([idx.length, C], 'f32', out);
  }
}
