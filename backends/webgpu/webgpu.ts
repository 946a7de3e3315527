// The WebGPU backend: the op set of backends/backend.ts in WGSL (shaders/), in Node through Dawn and in the
// browser through navigator.gpu, over byte for byte the simulator's buffers (DESIGN §3):
//   f32 tensor   one buffer, row-major f32
//   qact         one buffer  a8 int8 [M][K8] | a4 int4x2 [M][(Kp-K8)/2] | sa f16 [M][Kp/B]   (readRaw's bytes)
//   w4 weight    one buffer  codes int4x2 [N][Kp/2] | scales f16 [N][Kp/B]
//   kv4 cache    per layer the simulator's KVStoreKV4 bytes (simulator/kv4.ts); f32 cache (page, head, P, hd)
// Packing each quantized tensor into one buffer keeps every kernel within the browser's 10 storage buffers.
//
// Execution: ops record compute passes into one command encoder; each dispatch's parameters and the step's
// small host arrays (token ids, positions, block tables, RoPE tables) go to one upload buffer written once
// at submit. Nothing is submitted until `read`/`argmax` needs a result, so a decode step is one submit.
// Step tensors come from a size-keyed pool and go back to it in endStep. Pipelines are made once per device.
import { checkTopK, type Backend, type CapturedStep, type DType, type HostWeight, type KVCache, type KVCacheSpec, type OpSet, type RopeSpec, type StepInputs, type StepLayout, type Tensor, type Weight } from '../backend.ts';
import type { ActQuantSpec, QAct } from '../../simulator/formats.ts';
import { dequantizeAct } from '../../simulator/act.ts';
import { checkW4 } from '../../simulator/w4.ts';
import { kv4Layout } from '../../simulator/kv4.ts';
import { qactBytes, w4Bytes } from '../../simulator/traits.ts';
import { ropeFreqs } from '../../simulator/kernels/float.ts';
import { CometError } from '../errors.ts';
import { deviceLost, getGpu, type GpuContext } from './device.ts';
import { loadShaderSources, type ShaderSources } from './shaders.ts';
import { type MatvecShape, matvec16, matvecShape, pipelineCache, type PipeName, type PipelineCache } from './pipes.ts';
import { Stream, up4, up256, type Lap, type Remake, type Res } from './stream.ts';

const f32bits = (() => { const f = new Float32Array(1), u = new Uint32Array(f.buffer); return (x: number) => ((f[0] = x), u[0]); })();

export class WTensor implements Tensor {
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly buf: GPUBuffer,
    readonly bytes: number, // meaningful bytes (the buffer may be larger)
    readonly spec?: ActQuantSpec, // qact
  ) {}
  /** a qact whose quantizer is not recorded yet: its f32 input and the step it belongs to (quantizeAct) */
  lazy?: { x: WTensor; step: number };
  /** a q' = rope(q) not written yet: the rope_kv_append that makes it (ropeKvAppend at decode) */
  ropeOf?: LazyRope;
}

/** A decode step's rope_kv_append left for the split KV4 attention that reads its q' (WebGPUBackend.ropeKvAppend):
 *  its inputs, the step it belongs to, and whether that attention has appended k and v (then only q' itself, rope(q),
 *  is still unwritten: recorded if anything reads it). */
interface LazyRope {
  q: WTensor; k: WTensor; v: WTensor; cache: WKVCache; layer: number; layout: StepLayout; spec: RopeSpec;
  step: number; appended: boolean;
}

export class WWeight extends WTensor implements Weight {
  constructor(readonly name: string, shape: readonly number[], dtype: DType, buf: GPUBuffer, bytes: number, readonly act?: ActQuantSpec) {
    super(shape, dtype, buf, bytes, act);
  }
}

class WKVCache implements KVCache {
  constructor(readonly spec: KVCacheSpec, readonly buf: GPUBuffer, readonly layerBytes: number, readonly layerStride: number,
    private be: WebGPUBackend) {}
  /** one layer's bytes in the simulator's layout (kv4: KVStoreKV4.data[layer]; f32: K pages then V pages) */
  readLayer(layer: number): Promise<Uint8Array> { return this.be.readKVLayer(this, layer); }
}

/** 1-D grid of n invocations in workgroups of `wg`: x up to 65535 groups, the rest in y (shaders: g.x + g.y·65535·wg). */
const grid1 = (n: number, wg: number): [number, number] => {
  const groups = Math.max(1, Math.ceil(n / wg));
  return groups <= 65535 ? [groups, 1] : [65535, Math.ceil(groups / 65535)];
};
const rowsOf = (t: Tensor) => t.shape[0];
/** every token of the step is a sequence of its own (a decode step) */
const oneTokenPerSequence = (l: StepLayout) => new Set(l.seq).size === l.seq.length;
const colsOf = (t: Tensor) => t.shape[t.shape.length - 1];
/** topk.wgsl's output words read back: values [R][k] (f32 bits), then indices [R][k]; n = R·k */
const topkOf = (b: Uint8Array, n: number) => ({ values: new Float32Array(b.buffer, b.byteOffset, n), indices: new Int32Array(b.buffer, b.byteOffset + 4 * n, n) });

export class WebGPUBackend implements Backend {
  readonly name = 'webgpu';
  readonly dev: GPUDevice;
  private pipes: PipelineCache;
  private stream: Stream;
  private free = new Map<number, GPUBuffer[]>(); // step buffers by size
  private live: GPUBuffer[] = []; // step buffers in use
  private owned: GPUBuffer[] = []; // weights, host tensors, caches
  private mapFree = new Map<number, GPUBuffer[]>();
  private perms = new WeakMap<Int32Array, GPUBuffer>();
  private dummy: GPUBuffer;
  private ropeFreqs = new Map<string, Float32Array>();

  /** a CPU adapter (SwiftShader): prefer kernels without workgroup barriers */
  readonly cpu: boolean;
  /** attention, KV4 append and the f16-weight GEMM: one invocation per (token, head), KV4 group or (row, 4
   *  tokens), no barriers (CPU adapters), or a workgroup per (token, head) or 8 rows (GPUs) */
  private readonly serialKernels: boolean;
  disposed = false;
  /** the capture in progress (captureStep), the step inputs it declared, and where in its upload arena the
   *  embedding reads the token ids (a chained replay copies them there on the device) */
  private capturing?: { inputs?: StepInputs; tokensAt?: Res };

  constructor(readonly gpu: GpuContext, readonly src: ShaderSources, readonly opts: WebGPUOptions = {}) {
    this.dev = gpu.device;
    this.cpu = /swiftshader|llvmpipe|lavapipe/i.test(gpu.adapterName);
    this.serialKernels = (opts.kernels ?? (this.cpu ? 'serial' : 'workgroup')) === 'serial';
    this.pipes = pipelineCache(gpu, src);
    this.stream = new Stream(this.dev);
    this.dummy = this.persistent(16);
  }

  get adapterName() { return this.gpu.adapterName; }
  /** resolves when the device is lost (the engine on it is then dead; make a new one) */
  get whenLost(): Promise<{ reason: string; message: string }> { return this.gpu.whenLost; }

  /** Benchmarks: host milliseconds per phase of the reads (and so of the steps) while set, summed: upload
   *  (the upload arena's writeBuffer), encode (command encoding), submit, wait (mapAsync of the readback until
   *  its promise resolves: the GPU's work and Dawn's callback delivery), read (the mapped bytes out), remake (a
   *  replay's step inputs rewritten). */
  profile?: Record<string, number>;
  private lapper(): Lap | undefined {
    const prof = this.profile;
    if (!prof) return undefined;
    let t = performance.now();
    return (k) => { const n = performance.now(); prof[k] = (prof[k] ?? 0) + n - t; t = n; };
  }

  /** Benchmarks: the next compute pass writes these timestamps (needs the device's timestamp-query). */
  timeNextPass(t: GPUComputePassTimestampWrites) { this.stream.timestamps = t; }

  /** What WebGPU runs and how closely (DESIGN §3.7): the W4Ax GEMM, quantize_act and the f32 KV bytes bit for
   *  bit; KV4 codes within 1 (the shader rounds the exact quotient, the simulator an f32 one first); f32
   *  reductions and transcendentals within tolerance (no f64 in WGSL). Float weights are f32 or f16 (read as the f32 values they are). */
  readonly ops: OpSet = {
    embed: { f32: 'exact', f16: 'exact' }, rmsnorm: { f32: 'tolerance' }, rmsnorm_quant: { qact: 'tolerance' }, quantize_act: { qact: 'exact' },
    gemm_f32: { f32: 'tolerance', f16: 'tolerance' }, gemm_w4ax: { w4: 'exact' }, rope: { f32: 'tolerance' }, kv_append: { f32: 'exact', kv4: 'bounded' },
    attention: { f32: 'tolerance', kv4: 'tolerance' }, silu_mul: { f32: 'tolerance' }, silu_mul_quant: { qact: 'tolerance' }, add: { f32: 'exact' },
    argmax: { f32: 'exact' }, topk: { f32: 'exact' }, rows: { f32: 'exact' },
    // the fused decode ops, one dispatch each with the bits of their compositions (backends/composed.ts): their parts' tiers
    add_rmsnorm: { f32: 'tolerance' }, add_rmsnorm_quant: { qact: 'tolerance' }, rope_kv_append: { f32: 'tolerance', kv4: 'tolerance' },
  };

  // ---------------------------------------------------------------- memory
  private persistent(bytes: number, label?: string): GPUBuffer {
    const b = this.dev.createBuffer({ label, size: up256(Math.max(bytes, 16)), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.owned.push(b);
    return b;
  }
  private temp(bytes: number): GPUBuffer {
    const size = up256(Math.max(bytes, 16));
    const b = this.free.get(size)?.pop() ?? this.dev.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.live.push(b);
    return b;
  }
  private f32(shape: readonly number[]): WTensor {
    const bytes = shape.reduce((a, d) => a * d, 1) * 4;
    return new WTensor(shape, 'f32', this.temp(bytes), bytes);
  }
  private put(buf: GPUBuffer, data: ArrayBufferView) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) this.dev.queue.writeBuffer(buf, 0, bytes);
    else { const pad = new Uint8Array(up4(bytes.byteLength)); pad.set(bytes); this.dev.queue.writeBuffer(buf, 0, pad); }
  }

  uploadWeight(w: HostWeight): Weight {
    if (w.kind === 'f32' || w.kind === 'f16') {
      // f16 weights (a .comet's classifier and embedding) stay f16 bits, two per word: the kernels read the f32
      // values they are exactly (embed_f16, gemm_f16w), at half the memory and half a classifier's read
      const buf = this.persistent(w.data.byteLength, w.name);
      this.put(buf, w.data);
      return new WWeight(w.name, w.shape, w.kind, buf, w.data.byteLength);
    }
    checkW4(w);
    const { codes, scales } = w4Bytes(w.act, w.N);
    const bytes = new Uint8Array(codes + up4(scales));
    bytes.set(w.codes, 0);
    bytes.set(new Uint8Array(w.scales.buffer, w.scales.byteOffset, scales), codes);
    const buf = this.persistent(bytes.byteLength, w.name);
    this.put(buf, bytes);
    return new WWeight(w.name, [w.N, w.act.K], 'w4', buf, codes + scales, w.act);
  }
  fromHost(data: Float32Array, shape: readonly number[]): Tensor {
    const buf = this.persistent(data.byteLength);
    this.put(buf, data);
    return new WTensor(shape, 'f32', buf, data.byteLength);
  }
  /** A lost device or an uncaptured GPU error, as the error of the request that reads next. */
  private check(): void {
    const g = this.gpu;
    if (g.lost) throw deviceLost(g.lost);
    if (g.error) {
      const message = g.error;
      g.error = undefined;
      throw new CometError(`webgpu: a GPU command failed (${message})`, 'gpu_error');
    }
  }
  /** `bytes` of `buf`, read back after what is recorded. */
  async readBytes(buf: GPUBuffer, bytes: number): Promise<Uint8Array> {
    this.check();
    this.settle();
    const lap = this.lapper();
    const st = this.mapBuffer(bytes);
    this.stream.copy(buf, 0, st, 0, up4(bytes));
    this.stream.flush(lap);
    const out = await this.mapRead(st, bytes, lap);
    this.releaseMap(st);
    return out;
  }
  /** A MAP_READ buffer for `bytes` from the pool (readBytes, replays' readbacks: two replays can be in flight). */
  private mapBuffer(bytes: number): GPUBuffer {
    const size = up256(Math.max(up4(bytes), 16));
    return this.mapFree.get(size)?.pop() ?? this.dev.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }
  /** A MAP_READ buffer back to the pool (destroyed once the backend is disposed: its pool is gone). */
  releaseMap(b: GPUBuffer): void {
    if (this.disposed) b.destroy();
    else (this.mapFree.get(b.size) ?? this.mapFree.set(b.size, []).get(b.size)!).push(b);
  }
  /** A replay of the captured step `rec` and the readback of `out` into a pooled buffer (mapBuffer). A plain replay
   *  submits the command buffer encoded while the GPU ran the previous one (`ahead.next`: the same commands and
   *  bindings; the upload arena, rewritten before the submit, carries the new inputs) and encodes the next while the
   *  GPU runs this one: encoding (~6 µs a dispatch in Dawn's Node binding) leaves the step's critical path. A chained
   *  replay (`feed`) first copies the token ids on the device from the previous replay's argmax over the arena's token
   *  slot (the host's write of the arena comes before it in queue order), so it is submitted before that argmax is
   *  read back. */
  async readReplay(rec: Stream, out: WTensor, ahead: ReplayAhead, tail?: Stream, feed?: { ids: WTensor; at: Res }): Promise<Uint8Array> {
    this.check();
    const lap = this.lapper();
    const encode = () => {
      const enc = this.dev.createCommandEncoder(), dst = this.mapBuffer(out.bytes);
      if (feed) {
        const at = feed.at as { buffer: GPUBuffer; offset: number };
        enc.copyBufferToBuffer(feed.ids.buf, 0, at.buffer, at.offset, up4(feed.ids.bytes));
      }
      rec.encode(enc);
      tail?.encode(enc); // commands on the step's results (a top-k of its logits): no uploads of their own
      enc.copyBufferToBuffer(out.buf, 0, dst, 0, up4(out.bytes));
      return { cb: enc.finish(), dst };
    };
    this.settle();
    this.stream.flush(); // eager work recorded before the replay runs first
    rec.writeUploads();
    lap?.('upload');
    const now = (!feed && ahead.next) || encode();
    if (!feed) ahead.next = undefined;
    lap?.('encode');
    this.dev.queue.submit([now.cb]);
    lap?.('submit');
    if (!feed) {
      ahead.next = encode();
      lap?.('encode next');
    }
    const bytes = await this.mapRead(now.dst, out.bytes, lap); // throws on a lost device: that buffer is not reused
    this.releaseMap(now.dst);
    return bytes;
  }
  /** The first `bytes` of the MAP_READ buffer `st` once the GPU has written it (it is unmapped again after). */
  private async mapRead(st: GPUBuffer, bytes: number, lap?: Lap): Promise<Uint8Array> {
    try {
      await st.mapAsync(GPUMapMode.READ, 0, up4(bytes));
      lap?.('wait');
    } catch (e) {
      // a device lost while the step ran rejects the map first; device.lost resolves right after
      await Promise.race([this.gpu.whenLost, new Promise((r) => setTimeout(r, 500))]);
      this.check();
      throw new CometError(`webgpu: reading a result back failed (${(e as Error).message})`, 'gpu_error');
    }
    this.check();
    const out = new Uint8Array(st.getMappedRange(0, up4(bytes)).slice(0, bytes));
    st.unmap();
    lap?.('read');
    return out;
  }
  async read(t: Tensor): Promise<Float32Array> {
    const w = t as WTensor;
    if (w.dtype === 'qact') return dequantizeAct(this.qactFromBytes(w, await this.readRaw(w)));
    if (w.ropeOf) this.materialize(w);
    const b = await this.readBytes(w.buf, w.bytes);
    return w.dtype === 'i32' ? Float32Array.from(new Int32Array(b.buffer)) : new Float32Array(b.buffer);
  }
  async readRaw(t: Tensor): Promise<Uint8Array> {
    const w = this.ready(t as WTensor);
    return this.readBytes(w.buf, w.bytes);
  }
  private qactFromBytes(t: WTensor, b: Uint8Array): QAct {
    const spec = t.spec!, M = t.shape[0], n = qactBytes(spec, M);
    return {
      M, spec, a8: new Int8Array(b.buffer, b.byteOffset, n.a8), a4: b.subarray(n.a8, n.a8 + n.a4),
      sa: new Uint16Array(b.slice(n.a8 + n.a4, n.a8 + n.a4 + n.sa).buffer),
    };
  }
  /** The raw bytes of one layer of a cache (kv4: the simulator's KVStoreKV4.data[layer]), for tests. */
  async readKVLayer(cache: KVCache, layer: number): Promise<Uint8Array> {
    const c = cache as WKVCache;
    this.settle(); // a folded append's k, v into the cache first
    const tmp = this.temp(c.layerBytes);
    this.stream.copy(c.buf, layer * c.layerStride, tmp, 0, c.layerBytes);
    return this.readBytes(tmp, c.layerBytes);
  }

  /** Bytes of the KV cache buffer: one binding per layer, layers 256-byte aligned in one buffer. */
  private kvBytes(spec: KVCacheSpec): { layerBytes: number; layerStride: number; total: number } {
    const { nLayers, nKvHeads, headDim, pageSize, numPages } = spec;
    if (headDim > 256) throw new CometError(`webgpu: head_dim ${headDim} > 256 is not supported by attention.wgsl`, 'unsupported');
    let layerBytes: number;
    if (spec.dtype === 'kv4') {
      if (spec.group % 8 !== 0 || headDim % spec.group !== 0)
        throw new CometError(`webgpu: KV4 group ${spec.group} must be a multiple of 8 dividing head_dim ${headDim}`, 'unsupported');
      layerBytes = numPages * kv4Layout(spec).pageBytes;
    } else layerBytes = 2 * numPages * nKvHeads * pageSize * headDim * 4; // K half | V half
    const layerStride = up256(layerBytes);
    return { layerBytes, layerStride, total: nLayers * layerStride };
  }
  createKVCache(spec: KVCacheSpec): KVCache {
    this.checkFits([], spec);
    const { layerBytes, layerStride, total } = this.kvBytes(spec);
    return new WKVCache(spec, this.persistent(total, 'kv'), layerBytes, layerStride, this);
  }
  /** Bytes of the one buffer uploadWeight makes for `w` (w4: codes | scales; f32, f16: the data). */
  weightBufferBytes(w: HostWeight): number {
    return w.kind === 'w4' ? w4Bytes(w.act, w.N).codes + up4(w4Bytes(w.act, w.N).scales) : up4(w.data.byteLength);
  }
  /** Refuse, before anything is uploaded, weights or a KV cache this device cannot hold: a buffer above
   *  maxBufferSize, a binding above maxStorageBufferBindingSize (every weight is bound whole; the cache one
   *  layer at a time). The message says what needs how much, and what the adapter allows. WebGPU does not tell
   *  the device's total memory: an upload that runs out of it is caught by an out-of-memory error scope
   *  (uploadModel). */
  checkFits(weights: Iterable<HostWeight>, kv?: KVCacheSpec): void {
    const { maxBinding, maxBuffer } = this.gpu.limits, over: string[] = [];
    const mb = (n: number) => (n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);
    for (const w of weights) {
      const n = this.weightBufferBytes(w);
      if (n > Math.min(maxBinding, maxBuffer)) over.push(`${w.name} needs one ${mb(n)} buffer`);
    }
    if (kv) {
      const k = this.kvBytes(kv);
      if (k.layerBytes > maxBinding) over.push(`one layer of the KV cache (${kv.numPages} pages) needs ${mb(k.layerBytes)} bound at once`);
      if (k.total > maxBuffer) over.push(`the KV cache (${kv.nLayers} layers × ${kv.numPages} pages) needs one ${mb(k.total)} buffer`);
    }
    if (over.length)
      throw new CometError(`webgpu: this model does not fit the GPU adapter (${this.adapterName}), which allows buffers of at most ${mb(maxBuffer)} `
        + `and bindings of at most ${mb(maxBinding)}: ${over.slice(0, 4).join('; ')}${over.length > 4 ? `; and ${over.length - 4} more` : ''}`, 'too_large');
  }
  /** Upload weights inside an out-of-memory error scope: a device that runs out of memory gives a clear error
   *  (what the model needs) instead of a lost device later. `each` runs between uploads (progress, yielding). */
  async uploadModel(weights: HostWeight[], each?: (w: HostWeight) => Promise<void> | void): Promise<Map<HostWeight, Weight>> {
    this.checkFits(weights);
    const out = new Map<HostWeight, Weight>();
    this.dev.pushErrorScope('out-of-memory');
    try {
      for (const w of weights) {
        await each?.(w);
        out.set(w, this.uploadWeight(w));
      }
    } finally {
      const err = await this.dev.popErrorScope();
      if (err) {
        for (const w of out.values()) (w as WWeight).buf.destroy();
        const total = weights.reduce((a, w) => a + this.weightBufferBytes(w), 0);
        throw new CometError(`webgpu: the GPU ran out of memory uploading the model's weights (${(total / 2 ** 20).toFixed(1)} MiB in ${weights.length} buffers; ${err.message})`, 'out_of_memory');
      }
    }
    this.check();
    return out;
  }

  /** Record the step `fn` enqueues (logits [R][V]) and its argmax once, for replays on new inputs of the
   *  same shape (Backend.captureStep). WebGPU cannot resubmit a command buffer, so a replay encodes the
   *  recorded list again: no model code, no graph, no tensor or bind-group bookkeeping runs, and a greedy
   *  replay reads back the R sampled ids alone. With `inputs`, every upload of step data must be one of them
   *  (token ids, rows, the layout and the RoPE table made from its positions): a replay rewrites those in the
   *  recorded upload arena. The step's buffers belong to the capture until destroy(). */
  captureStep(fn: () => Tensor, inputs?: StepInputs): CapturedStep {
    if (this.capturing) throw new CometError('webgpu: captureStep inside a capture');
    this.settle();
    this.stream.flush();
    const eager = { stream: this.stream, live: this.live };
    const rec = new Stream(this.dev);
    this.stream = rec;
    this.live = [];
    this.capturing = { inputs };
    let logits: WTensor, ids: WTensor, owned: GPUBuffer[], tokensAt: Res | undefined;
    try {
      logits = this.want(fn(), 'f32', 'captureStep');
      const R = rowsOf(logits);
      ids = new WTensor([R], 'i32', this.temp(R * 4), R * 4);
      this.argmaxInto(logits, ids);
      this.settle(); // a rope_kv_append no attention folded: recorded in the step
    } catch (e) {
      this.pendingRope = undefined;
      rec.destroy();
      this.releaseBuffers(this.live);
      throw e;
    } finally {
      owned = this.live;
      tokensAt = this.capturing?.tokensAt;
      this.stream = eager.stream;
      this.live = eager.live;
      this.capturing = undefined;
    }
    return new WebGPUStep(this, rec, owned, logits!, ids!, inputs, tokensAt);
  }
  /** Step data for an upload: while capturing with declared inputs, how a replay remakes it (`ok`: the data is
   *  one of the inputs); otherwise nothing. */
  private stepData(ok: boolean, make: Remake): Remake | undefined {
    if (!this.capturing?.inputs) return undefined;
    if (!ok) throw new CometError('webgpu: captureStep: the step uploads data that is not one of its declared inputs (tokens, rows, layout)');
    return make;
  }
  /** Step buffers back to the pool. */
  releaseBuffers(bufs: GPUBuffer[]): void {
    for (const b of bufs) (this.free.get(b.size) ?? this.free.set(b.size, []).get(b.size)!).push(b);
  }

  endStep(): void {
    this.settle();
    this.steps++;
    this.stream.flush();
    for (const b of this.live) (this.free.get(b.size) ?? this.free.set(b.size, []).get(b.size)!).push(b);
    this.live = [];
  }
  dispose(): void {
    this.pendingRope = undefined;
    this.stream.flush();
    for (const b of [...this.owned, ...this.live, ...[...this.free.values()].flat(), ...[...this.mapFree.values()].flat()]) b.destroy();
    this.owned = []; this.live = []; this.free.clear(); this.mapFree.clear();
    this.stream.destroy();
    this.disposed = true;
  }

  // ---------------------------------------------------------------- helpers
  private run(name: PipeName, params: number[], res: Res[], x: number, y = 1, z = 1, extra?: Record<string, number>) {
    const u = this.stream.upload(Uint32Array.from(params));
    this.stream.dispatch(this.pipes.get(name, extra), [u, ...res], x, y, z);
  }
  /** a float weight: f32, or f16 bits two per word */
  private float(t: Tensor, op: string): WTensor {
    if (t.dtype !== 'f32' && t.dtype !== 'f16') throw new CometError(`webgpu ${op}: expected an f32 or f16 weight, got ${t.dtype}`);
    return t as WTensor;
  }
  private want(t: Tensor, dtype: DType, op: string): WTensor {
    if (t.dtype !== dtype) throw new CometError(`webgpu ${op}: expected a ${dtype} tensor, got ${t.dtype}`);
    const w = t as WTensor;
    if (w.ropeOf) this.materialize(w);
    return w;
  }
  private permBuffer(spec: ActQuantSpec): GPUBuffer {
    if (!spec.perm) return this.dummy;
    let b = this.perms.get(spec.perm);
    if (!b) {
      b = this.persistent(spec.perm.byteLength, 'perm');
      this.put(b, spec.perm);
      this.perms.set(spec.perm, b);
    }
    return b;
  }
  private layoutWords(layout: StepLayout): { words: Uint32Array; posOff: number; seqOff: number; btoOff: number } {
    const T = layout.pos.length, S = layout.blockTables.length;
    const n = 2 * T + S + layout.blockTables.reduce((a, b) => a + b.length, 0);
    const w = new Uint32Array(n);
    w.set(layout.pos, 0);
    w.set(layout.seq, T);
    let o = 2 * T + S;
    layout.blockTables.forEach((bt, s) => { w[2 * T + s] = o; w.set(bt, o); o += bt.length; });
    return { words: w, posOff: 0, seqOff: T, btoOff: 2 * T };
  }

  /** a fresh qact of M rows */
  private qact(M: number, spec: ActQuantSpec): WTensor {
    const n = qactBytes(spec, M);
    return new WTensor([M, spec.Kp], 'qact', this.temp(n.a8 + n.a4 + up4(n.sa)), n.a8 + n.a4 + n.sa, spec);
  }
  /** quant.wgsl over M rows into a fresh qact (or `into`) */
  private quant(name: 'quantize_act' | 'rmsnorm_quant' | 'silu_mul_quant' | 'add_rmsnorm_quant', x: WTensor, y: GPUBuffer, M: number, spec: ActQuantSpec, eps = 0,
    add?: { r: WTensor; sum: WTensor }, into?: WTensor): Tensor {
    if (colsOf(x) !== spec.K) throw new CometError(`webgpu ${name}: the rows have ${colsOf(x)} channels, the spec K = ${spec.K}`);
    const n = qactBytes(spec, M), out = into ?? this.qact(M, spec);
    // whole-word scale stores when no sa word holds two tokens (quant.wgsl DIRECT), else a cleared sa and atomicOr
    const nb = spec.Kp / spec.B, direct = (M === 1 || nb % 2 === 0) && nb <= 512;
    if (!direct) this.stream.clear(out.buf, n.a8 + n.a4, up4(n.sa));
    const [gx, gy] = M <= 65535 ? [M, 1] : [65535, Math.ceil(M / 65535)];
    // a decode step's few rows: a workgroup per 256 channels (one per row left the GPU a single workgroup
    // looping over the row); many rows fill the GPU a workgroup per row
    const chunk = M < 128 ? 256 : spec.Kp;
    this.run(name, [spec.K, spec.Kp, spec.K8, spec.B, nb, spec.perm ? 1 : 0, n.a8 / 4, (n.a8 + n.a4) / 4, f32bits(eps), direct ? 1 : 0, chunk],
      [x.buf, y, this.permBuffer(spec), out.buf, add?.r.buf ?? this.dummy, add?.sum.buf ?? this.dummyOut(1)], gx, gy, Math.ceil(spec.Kp / chunk));
    return out;
  }

  // ---------------------------------------------------------------- ops
  embed(table: Weight, tokens: Int32Array): Tensor {
    const tb = this.float(table, 'embed'), [V, D] = table.shape;
    for (const t of tokens) if (t < 0 || t >= V) throw new CometError(`embed: token id ${t} outside the vocabulary [0, ${V})`);
    const out = this.f32([tokens.length, D]);
    const ids = this.stream.upload(tokens, this.stepData(tokens === this.capturing?.inputs?.tokens, (i) => i.tokens));
    if (this.capturing?.inputs && tokens === this.capturing.inputs.tokens) this.capturing.tokensAt = ids;
    this.run(tb.dtype === 'f16' ? 'embed_f16' : 'embed', [D, tokens.length, 0], [tb.buf, ids, out.buf], Math.ceil(D / 256), tokens.length);
    return out;
  }
  rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor { return this.norm(x, w, eps)[1]; }
  /** norm.wgsl over the rows of x (with `r`: of x + r, the sum written out too): [sum, norm] */
  private norm(x: Tensor, w: Tensor, eps: number, r?: Tensor): [Tensor | undefined, Tensor] {
    const op = r ? 'add_rmsnorm' : 'rmsnorm', xt = this.want(x, 'f32', op), T = rowsOf(x), out = this.f32(x.shape);
    if (r && r.shape.join() !== x.shape.join()) throw new CometError(`add_rmsnorm: shapes [${x.shape}] and [${r.shape}] differ`);
    const sum = r && this.f32(x.shape);
    this.run(op, [colsOf(x), f32bits(eps)], [xt.buf, this.want(w, 'f32', op).buf, out.buf, r ? this.want(r, 'f32', op).buf : this.dummy, sum?.buf ?? this.dummyOut(1)],
      Math.min(T, 65535), Math.ceil(T / 65535));
    return [sum, out];
  }
  rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): Tensor {
    return this.quant('rmsnorm_quant', this.want(x, 'f32', 'rmsnorm_quant'), this.want(w, 'f32', 'rmsnorm_quant').buf, rowsOf(x), spec, eps);
  }
  /** quant.wgsl MODE 0; or, where the GEMM that reads it will be the matvec (a decode step's o_proj input), nothing
   *  yet: the matvec quantizes x itself (gemm_w4ax.wgsl QIN), one dispatch fewer, the same bits. Anything else that
   *  reads the qact (another kernel, read, readRaw) records the quantize_act first (ready). */
  quantizeAct(x: Tensor, spec: ActQuantSpec): Tensor {
    const xt = this.want(x, 'f32', 'quantize_act'), M = rowsOf(x);
    if (colsOf(x) !== spec.K) throw new CometError(`webgpu quantize_act: the rows have ${colsOf(x)} channels, the spec K = ${spec.K}`);
    const out = this.qact(M, spec);
    if (this.gemmKernel(M, spec) === 'matvec') out.lazy = { x: xt, step: this.steps };
    else this.quant('quantize_act', xt, this.dummy, M, spec, 0, undefined, out);
    return out;
  }
  /** steps ended (endStep): a lazy qact of an earlier step cannot be made any more (its input went back to the pool) */
  private steps = 0;
  /** t with its quantizer recorded (a lazy qact read by anything but the QIN matvec) */
  private ready(t: WTensor): WTensor {
    if (t.ropeOf) this.materialize(t);
    const l = t.lazy;
    if (!l) return t;
    if (l.step !== this.steps) throw new CometError('webgpu: a quantized activation whose quantizer was folded into its GEMM is read after its step ended (read it before endStep)');
    t.lazy = undefined;
    this.quant('quantize_act', l.x, this.dummy, rowsOf(t), t.spec!, 0, undefined, t);
    return t;
  }
  /** quant.wgsl MODE 2: one small dispatch (a workgroup per 256 channels: LLaMA-3.2-1B's 8192 are 32) whose qact the
   *  down matvec reads. Not folded into that matvec as o_proj's quantizer is (QIN): every one of its workgroups (128
   *  at 2048 rows) would read all of g, u and the permutation (96 KB at K = 8192) and quantize the whole activation;
   *  folded, the H200 ran 428 tok/s against 497 (2026-12-03, bench/results/webgpu-dispatches-2026-12-03-cpu.md). */
  siluMulQuant(g: Tensor, u: Tensor, spec: ActQuantSpec): Tensor {
    if (g.shape.join() !== u.shape.join()) throw new CometError(`silu_mul_quant: g [${g.shape}] and u [${u.shape}] differ`);
    const gt = this.want(g, 'f32', 'silu_mul_quant'), ut = this.want(u, 'f32', 'silu_mul_quant'), M = rowsOf(g);
    return this.quant('silu_mul_quant', gt, ut.buf, M, spec);
  }
  matmul(x: Tensor, w: Weight): Tensor {
    const wt = w as WWeight, N = w.shape[0];
    if (wt.dtype === 'w4') return this.w4gemm(x, [wt])[0];
    const xt = this.want(x, 'f32', 'matmul'), K = colsOf(w), T = rowsOf(x);
    if (colsOf(x) !== K) throw new CometError(`matmul: ${w.name} expects ${K} input features, got ${colsOf(x)}`);
    const out = this.f32([T, N]);
    if (this.float(w, 'matmul').dtype === 'f16' && !this.serialKernels) this.run('gemm_f16w', [T, N, K], [xt.buf, wt.buf, out.buf], Math.ceil(N / 8), Math.ceil(T / 4));
    else if (wt.dtype === 'f16') this.run('gemm_f16w_serial', [T, N, K], [xt.buf, wt.buf, out.buf], Math.ceil(N / 64), Math.ceil(T / 4));
    else this.run('gemm_f32', [T, N, K], [xt.buf, wt.buf, out.buf], Math.ceil(N / 64), Math.ceil(T / 4));
    return out;
  }
  /** cos/sin of every (token, frequency): exactly the simulator's f32 angle and its f64 cos/sin, rounded */
  private ropeTable(pos: Int32Array, spec: RopeSpec): Float32Array {
    const key = `${spec.headDim}:${spec.theta}:${JSON.stringify(spec.scaling ?? null)}`, half = spec.headDim / 2, T = pos.length;
    let freqs = this.ropeFreqs.get(key);
    if (!freqs) this.ropeFreqs.set(key, (freqs = ropeFreqs(spec.headDim, spec.theta, spec.scaling)));
    const cs = new Float32Array(T * half * 2);
    for (let t = 0; t < T; t++)
      for (let i = 0; i < half; i++) {
        const a = Math.fround(pos[t] * freqs[i]);
        cs[(t * half + i) * 2] = Math.cos(a);
        cs[(t * half + i) * 2 + 1] = Math.sin(a);
      }
    return cs;
  }
  /** Several W4 linears over one quantized input (q/k/v, gate/up) in one dispatch; others one by one. */
  matmulMany(x: Tensor, ws: readonly Weight[]): Tensor[] {
    const w4 = ws as readonly WWeight[];
    if (ws.length >= 2 && ws.length <= 3 && w4.every((w) => w.dtype === 'w4' && this.sameAct(w.act!, w4[0].act!))) return this.w4gemm(x, w4);
    return ws.map((w) => this.matmul(x, w));
  }
  /** Can one quantized activation feed both weights (same K, Kp, B, K8 and permutation)? Cached per pair. */
  private sameActs = new WeakMap<ActQuantSpec, WeakSet<ActQuantSpec>>();
  private sameAct(a: ActQuantSpec, b: ActQuantSpec): boolean {
    if (a === b || this.sameActs.get(a)?.has(b)) return true;
    const eq = a.K === b.K && a.Kp === b.Kp && a.B === b.B && a.K8 === b.K8
      && (a.perm === b.perm || (!!a.perm && !!b.perm && a.perm.length === b.perm.length && a.perm.every((v, i) => v === b.perm![i])));
    if (eq) (this.sameActs.get(a) ?? this.sameActs.set(a, new WeakSet()).get(a)!).add(b);
    return eq;
  }
  /** The W4Ax kernel for M rows (WebGPUOptions.gemm) */
  private gemmKernel(M: number, spec: ActQuantSpec): 'matvec' | 'rowwise' | 'tiled' {
    return this.opts.gemm ?? (M > 8 ? 'tiled' : this.cpu || spec.Kp <= 512 ? 'rowwise' : 'matvec');
  }
  /** W4Ax GEMM of one qact input against 1-3 weights of the same activation spec (gemm_w4ax.wgsl's parts):
   *  the kernel is picked by M (and K, and the adapter), each part gets its own range of workgroups. */
  private w4gemm(x: Tensor, ws: readonly WWeight[]): Tensor[] {
    const a = this.want(x, 'qact', 'matmul'), sa = a.spec!, sw = ws[0].act!;
    for (const w of ws)
      for (const f of ['K', 'Kp', 'B', 'K8'] as const)
        if (sa[f] !== w.act![f]) throw new CometError(`matmul: ${w.name}: activation ${f} = ${sa[f]} but the weight expects ${w.act![f]}`);
    const M = rowsOf(x), nb = sw.Kp / sw.B, n = qactBytes(sw, M);
    const kernel = this.gemmKernel(M, sw);
    // a lazy qact: the matvec quantizes its f32 input itself (QIN, with the qact's own spec: its permutation); the
    // other kernels read the qact, recorded now
    const lz = kernel === 'matvec' && a.lazy?.step === this.steps ? a.lazy : undefined;
    if (!lz) this.ready(a);
    // the one-token matvec's shape (gemm_w4ax.wgsl SPL, TEAM, ROWS): by K and the rows (pipes.ts matvecShape), or forced
    const forced = this.opts.matvec, rows = ws.reduce((s, w) => s + w.shape[0], 0);
    // (forced fields over 16 x 16 with segments by K, the shape before matvecShape: the tests' 1- and 2-segment variants)
    const mv: MatvecShape = forced ? { ...matvec16(sw.Kp), ...forced } : matvecShape(sw.Kp, rows, !!lz);
    // rows per workgroup: rowwise 64 (one per invocation), tiled 64, matvec ROWS (16 for 2..8 tokens)
    const rowsPerGroup = kernel !== 'matvec' ? 64 : M === 1 ? mv.rows : 16;
    const outs = ws.map((w) => this.f32([M, w.shape[0]]));
    // part i: workgroups [g_i, g_{i+1}) along x
    const groups = ws.map((w) => Math.ceil(w.shape[0] / rowsPerGroup)), g = [0];
    for (const c of groups) g.push(g[g.length - 1] + c);
    const NONE = 0xffffffff, wsOff = ws.map((w) => w4Bytes(sw, w.shape[0]).codes / 4);
    const params = [M, ws[0].shape[0], sw.Kp, sw.K8, sw.B, nb, n.a8 / 4, (n.a8 + n.a4) / 4, wsOff[0], 0, 0,
      ws.length > 1 ? g[1] : NONE, ws.length > 2 ? g[2] : NONE, ws[1]?.shape[0] ?? 0, ws[2]?.shape[0] ?? 0, wsOff[1] ?? 0, wsOff[2] ?? 0,
      sa.K, sa.perm ? 1 : 0];
    // unused parts: the first weight again (read-only aliasing is allowed) and a dummy output
    const res: Res[] = [(lz?.x ?? a).buf, ws[0].buf, (ws[1] ?? ws[0]).buf, (ws[2] ?? ws[0]).buf, outs[0].buf, outs[1]?.buf ?? this.dummyOut(1),
      outs[2]?.buf ?? this.dummyOut(2), lz ? this.permBuffer(sa) : this.dummy];
    const gx = g[g.length - 1];
    if (kernel === 'rowwise') this.run('gemm_rowwise', params, res, gx, Math.ceil(M / 4));
    else if (kernel === 'tiled') this.run('gemm_tiled', params, res, gx, Math.ceil(M / 32));
    else if (M === 1) this.run(lz ? 'gemm_matvec1_qin' : 'gemm_matvec1', params, res, gx, 1, 1, { SPL: mv.segs, TEAM: mv.team, ROWS: mv.rows });
    else this.run(lz ? 'gemm_matvec4_qin' : 'gemm_matvec4', params, res, gx, Math.ceil(M / 4));
    return outs;
  }
  /** a 16-byte writable buffer for an output binding no workgroup writes (two: bindings must not alias) */
  private dummies: GPUBuffer[] = [];
  private dummyOut(i: number): GPUBuffer { return (this.dummies[i] ??= this.persistent(16, 'unused output')); }
  rope(x: Tensor, layout: StepLayout, spec: RopeSpec, into?: WTensor): Tensor {
    const xt = this.want(x, 'f32', 'rope'), T = rowsOf(x);
    if (colsOf(x) !== spec.nHeads * spec.headDim) throw new CometError(`rope: rows have ${colsOf(x)} channels, expected ${spec.nHeads}·${spec.headDim}`);
    const out = into ?? this.f32(x.shape);
    this.run('rope', [T, spec.nHeads, spec.headDim, 0], [xt.buf, this.ropeUpload(layout, spec), out.buf], ...grid1(T * spec.nHeads * (spec.headDim / 2), 256));
    return out;
  }
  /** The step's (cos, sin) table [T][hd/2][2] in the upload arena: once per submit for equal positions and RoPE
   *  (a step's layers share it; a replay remakes it once). */
  private ropeUpload(layout: StepLayout, spec: RopeSpec): Res {
    const key = `rope:${spec.headDim}:${spec.theta}:${JSON.stringify(spec.scaling ?? null)}`;
    return this.stream.uploadOnce(key, layout.pos, () => this.ropeTable(layout.pos, spec),
      this.stepData(layout === this.capturing?.inputs?.layout, (i) => this.ropeTable(i.layout.pos, spec)));
  }
  /** The step layout's words (layoutWords) in the upload arena: once per submit for an equal layout (every layer's
   *  KV append and attention bind the one copy). */
  private layoutUpload(layout: StepLayout): { lay: Res; lw: ReturnType<WebGPUBackend['layoutWords']> } {
    const lw = this.layoutWords(layout);
    const lay = this.stream.uploadOnce('layout', lw.words, () => lw.words, this.stepData(layout === this.capturing?.inputs?.layout, (i) => this.layoutWords(i.layout).words));
    return { lay, lw };
  }
  private cacheParams(c: WKVCache, T: number, lw: { posOff: number; seqOff: number; btoOff: number }): number[] {
    const s = c.spec;
    const L = s.dtype === 'kv4' ? kv4Layout(s) : undefined;
    return [T, s.nKvHeads, s.headDim, s.pageSize, s.group, lw.posOff, lw.seqOff, lw.btoOff,
      L ? L.headBytes / 4 : 0, L ? L.kCodes / 4 : 0, L ? L.vCodes / 4 : 0, L ? L.kSZ / 4 : 0, L ? L.vSZ / 4 : 0];
  }
  kvAppend(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout): void { this.append(cache, layer, k, v, layout); }
  /** kv_append.wgsl: k, v into the cache's `layer`; with `rope`, k rotated on the way and q rotated into a new
   *  tensor (or `into`), in the same dispatch (ROPE = 1: the bits of rope(q), rope(k) then kv_append). */
  private append(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout, rope?: { q: Tensor; spec: RopeSpec; into?: WTensor }): Tensor | undefined {
    this.settle(); // a folded append of the same cache goes first (in order)
    const c = cache as WKVCache, s = c.spec, T = layout.pos.length;
    const { kt, vt, qt, nH } = this.appendInputs(c, k, v, layout, rope);
    const { lay, lw } = this.layoutUpload(layout);
    const range = { buffer: c.buf, offset: layer * c.layerStride, size: c.layerBytes };
    const params = [...this.cacheParams(c, T, lw), nH];
    const qo = rope && (rope.into ?? this.f32(rope.q.shape));
    const res: Res[] = [kt.buf, vt.buf, lay, range, qt?.buf ?? this.dummy, rope ? this.ropeUpload(layout, rope.spec) : this.dummy, qo?.buf ?? this.dummyOut(1)];
    const qPairs = T * nH * (s.headDim / 2), R = rope ? 'rope_' as const : '' as const;
    // KV4: a workgroup per (token, KV head, K/V) and per (token, q head) (the workgroup kernels), else an invocation
    // per KV4 group and per q pair (the serial ones, and past the grid's 65535 tokens); the same bytes
    if (s.dtype === 'kv4' && (this.serialKernels || T > 65535)) this.run(`${R}kv_append_kv4` as const, params, res, ...grid1(T * s.nKvHeads * 2 * (s.headDim / s.group) + qPairs, 64));
    else if (s.dtype === 'kv4') this.run(`${R}kv_append_kv4_wg` as const, params, res, T, 2 * s.nKvHeads + nH);
    else this.run(`${R}kv_append_f32` as const, params, res, ...grid1((T * s.nKvHeads * s.headDim) / 2 + qPairs, 256));
    return qo;
  }
  /** kv_append's and rope_kv_append's inputs, checked against the cache and the layout */
  private appendInputs(c: WKVCache, k: Tensor, v: Tensor, layout: StepLayout, rope?: { q: Tensor; spec: RopeSpec }) {
    const s = c.spec, T = layout.pos.length, op = rope ? 'rope_kv_append' : 'kv_append';
    const kt = this.want(k, 'f32', op), vt = this.want(v, 'f32', op);
    if (colsOf(k) !== s.nKvHeads * s.headDim || rowsOf(k) !== T || v.shape.join() !== k.shape.join())
      throw new CometError(`${op}: k [${k.shape}] and v [${v.shape}], expected [${T}, ${s.nKvHeads * s.headDim}] each`);
    const qt = rope && this.want(rope.q, 'f32', op), nH = rope?.spec.nHeads ?? 0;
    if (rope && (rope.spec.headDim !== s.headDim || rope.q.shape.join() !== [T, nH * s.headDim].join()))
      throw new CometError(`${op}: q [${rope.q.shape}] does not match ${T} tokens of ${nH}·${rope.spec.headDim} (the cache's head_dim is ${s.headDim})`);
    for (let t = 0; t < T; t++) {
      const bt = layout.blockTables[layout.seq[t]], pi = Math.floor(layout.pos[t] / s.pageSize);
      if (!bt || pi >= bt.length) throw new CometError(`kvAppend: position ${layout.pos[t]} is past the sequence's ${bt?.length ?? 0} pages`);
    }
    return { kt, vt, qt, nH };
  }
  attention(q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor {
    const c = cache as WKVCache, s = c.spec, T = layout.pos.length;
    if (T > 65535) throw new CometError(`attention: ${T} tokens in one step (at most 65535)`);
    const split = s.dtype === 'kv4' && !this.serialKernels ? this.attentionChunks(T, nHeads, s, layout) : 0;
    // q' of the rope_kv_append just before, on this cache layer and layout (ropeKvAppend): the split does the append
    const rp = (q as WTensor).ropeOf, fold = !!rp && this.pendingRope === q && rp.cache === c && rp.layer === layer
      && rp.layout === layout && rp.spec.nHeads === nHeads && split > 0;
    if (!fold) this.settle(); // any other pending append (this q's included) first: q' written, k and v in the cache
    const qt = fold ? rp.q : this.want(q, 'f32', 'attention');
    const { lay, lw } = this.layoutUpload(layout);
    const out = this.f32(q.shape);
    // scale: 1/sqrt(hd) for the f32 cache, the KV4 contract's f32(log2(e)/sqrt(hd)); then the split's chunks
    const params = [...this.cacheParams(c, T, lw), f32bits(s.dtype === 'kv4' ? Math.LOG2E / Math.sqrt(s.headDim) : 1 / Math.sqrt(s.headDim)), split];
    params.splice(1, 0, nHeads); // P: T, nHeads, nKv, ...
    const part = split ? this.temp(T * nHeads * split * (s.headDim + 2) * 4) : this.dummyOut(1);
    // a captured step replays this grid: its positions must stay within the chunks (the engine's bucketed block
    // tables keep them there, src/engine/graphs.ts); past them the combine would read other heads' states
    if (split && this.capturing?.inputs) this.stream.guard((i) => {
      for (const p of i.layout.pos) if (p >= split * 64) throw new CometError(`webgpu: replay at position ${p}, past the ${split * 64} keys the captured step's attention covers (capture a step with longer block tables)`);
      // the folded append stores each token's key in the workgroups of its own sequence: one token per sequence
      if (fold && !oneTokenPerSequence(i.layout)) throw new CometError('webgpu: replay with two tokens of one sequence; the captured step folds rope_kv_append into its attention, which needs one token per sequence');
    });
    const res: Res[] = [qt.buf, lay, { buffer: c.buf, offset: layer * c.layerStride, size: c.layerBytes }, out.buf, part];
    if (this.serialKernels) this.run(s.dtype === 'kv4' ? 'attention_kv4_serial' : 'attention_serial_f32', params, res, ...grid1(T * nHeads, 64));
    else if (split) {
      // one workgroup per (token, head, chunk), then the combine per (token, head); the combine reads `part`, the
      // split wrote it, in one pass (WebGPU orders dispatches that write and read a buffer). Folded: the split
      // ropes q and appends k, v as it goes (attention.wgsl attention_kv4_rope; the same RoPE table and layout
      // uploads as rope_kv_append's, so a replay remakes them for its positions), and q' stays unwritten
      if (fold) {
        this.run('attention_kv4_split_rope', params, [...res, rp.k.buf, rp.v.buf, this.ropeUpload(layout, rp.spec)], T, nHeads, split);
        rp.appended = true;
        this.pendingRope = undefined;
      } else this.run('attention_kv4_split', params, res, T, nHeads, split);
      this.run('attention_kv4_combine', params, res, T, nHeads);
    } else this.run(s.dtype === 'kv4' ? 'attention_kv4' : 'attention_f32', params, res, T, nHeads);
    return out;
  }
  /** The KV4 attention's chunks per (token, head) when split (0: unsplit). Split where a step's (token, head) pairs
   *  alone leave the GPU idle (T·nHeads <= 1024: decode batches; 32 heads at batch 1 are 32 workgroups): the grid's
   *  z covers the longest block table's 64-key chunks (a captured step's tables have a fixed length, its bucket:
   *  src/engine/graphs.ts), and chunks past a sequence's keys exit at once. Not split: one chunk (nothing to spread),
   *  or chunk states over 64 MiB (long contexts at large batches). WebGPUOptions.attentionSplit forces it. */
  private attentionChunks(T: number, nHeads: number, s: KVCacheSpec, layout: StepLayout): number {
    let keys = 0;
    for (let t = 0; t < T; t++) keys = Math.max(keys, layout.blockTables[layout.seq[t]].length * s.pageSize);
    const chunks = Math.ceil(keys / 64), bytes = T * nHeads * chunks * (s.headDim + 2) * 4;
    const want = this.opts.attentionSplit ?? (T * nHeads <= 1024 && chunks > 1 && bytes <= 64 * 2 ** 20);
    return want && chunks <= 65535 ? chunks : 0;
  }
  private elementwise(name: 'add' | 'silu_mul', a: Tensor, b: Tensor): Tensor {
    if (a.shape.join() !== b.shape.join()) throw new CometError(`${name}: shapes [${a.shape}] and [${b.shape}] differ`);
    const out = this.f32(a.shape), n = out.bytes / 4;
    this.run(name, [n], [this.want(a, 'f32', name).buf, this.want(b, 'f32', name).buf, out.buf], ...grid1(n, 256));
    return out;
  }
  siluMul(g: Tensor, u: Tensor): Tensor { return this.elementwise('silu_mul', g, u); }
  add(a: Tensor, b: Tensor): Tensor { return this.elementwise('add', a, b); }

  // The fused decode ops (Backend): add_rmsnorm[_quant] and rope_kv_append, one dispatch each (their compositions:
  // two and three), with the compositions' bits.
  /** x + y and rmsnorm of it in one dispatch (norm.wgsl ADD = 1): the bits of the composition */
  addRmsnorm(x: Tensor, y: Tensor, w: Tensor, eps: number): [Tensor, Tensor] {
    const [sum, out] = this.norm(x, w, eps, y);
    return [sum!, out];
  }
  /** x + y and rmsnorm_quant of it in one dispatch (quant.wgsl MODE 3): the bits of the composition */
  addRmsnormQuant(x: Tensor, y: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): [Tensor, Tensor] {
    const xt = this.want(x, 'f32', 'add_rmsnorm_quant'), yt = this.want(y, 'f32', 'add_rmsnorm_quant');
    if (x.shape.join() !== y.shape.join()) throw new CometError(`add_rmsnorm_quant: shapes [${x.shape}] and [${y.shape}] differ`);
    const sum = this.f32(x.shape);
    return [sum, this.quant('add_rmsnorm_quant', xt, this.want(w, 'f32', 'add_rmsnorm_quant').buf, rowsOf(x), spec, eps, { r: yt, sum })];
  }
  /** rope of q and k and the KV append in one dispatch (kv_append.wgsl ROPE = 1), the composition's bits. At decode,
   *  where the attention that reads q' will be the split KV4 one (one token per sequence), nothing yet: that
   *  attention does the append and ropes q itself (attention.wgsl attention_kv4_rope), one dispatch a layer fewer,
   *  the same bits. Anything else that reads q' or a cache (read, another op, readLayer, a step's end) records the
   *  rope_kv_append first (materialize). */
  ropeKvAppend(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor {
    const c = cache as WKVCache, s = c.spec, T = layout.pos.length;
    const fold = s.dtype === 'kv4' && !this.serialKernels && T <= 65535 && this.gpu.limits.storageBuffers >= 8
      && oneTokenPerSequence(layout) && this.attentionChunks(T, spec.nHeads, s, layout) > 0;
    if (!fold) return this.append(cache, layer, k, v, layout, { q, spec })!;
    this.settle();
    const { kt, vt, qt } = this.appendInputs(c, k, v, layout, { q, spec });
    const out = this.f32(q.shape);
    out.ropeOf = { q: qt!, k: kt, v: vt, cache: c, layer, layout, spec, step: this.steps, appended: false };
    this.pendingRope = out;
    return out;
  }
  /** the q' of a rope_kv_append no attention has folded yet (at most one: every op but that attention records it first) */
  private pendingRope?: WTensor;
  /** q' (t) written: the rope_kv_append it stands for recorded now, or, where the attention did the append, rope(q)
   *  alone (rope.wgsl: the same rotation over the same table, the bits of rope_kv_append's q') */
  private materialize(t: WTensor): void {
    const r = t.ropeOf!;
    if (r.step !== this.steps) throw new CometError('webgpu: a rope(q) whose rope_kv_append was folded into the attention is read after its step ended (read it before endStep)');
    t.ropeOf = undefined;
    if (this.pendingRope === t) this.pendingRope = undefined;
    if (r.appended) this.rope(r.q, r.layout, r.spec, t);
    else this.append(r.cache, r.layer, r.k, r.v, r.layout, { q: r.q, spec: r.spec, into: t });
  }
  /** the pending rope_kv_append recorded (before anything else touches a cache, and before a submit) */
  private settle(): void {
    if (this.pendingRope) this.materialize(this.pendingRope);
  }
  /** topk.wgsl: one dispatch, R·k values and R·k ids read back (not the R·C row) */
  async topk(x: Tensor, k: number): Promise<{ values: Float32Array; indices: Int32Array }> {
    const xt = this.want(x, 'f32', 'topk'), R = rowsOf(x), C = colsOf(x);
    checkTopK(k, C);
    const out = this.temp(2 * R * k * 4);
    this.run('topk', [C, k, R], [xt.buf, out], R);
    return topkOf(await this.readBytes(out, 2 * R * k * 4), R * k);
  }
  /** A top-k of a captured step's logits x [R][C], recorded apart from the step (WebGPUStep.replayTopK encodes
   *  it after a replay's passes): its stream, its output (values then ids, [R][k] each) and the params buffer
   *  it binds (written once: the stream has no uploads to rewrite), all the caller's. */
  recordTopK(x: WTensor, k: number): { rec: Stream; out: WTensor; params: GPUBuffer } {
    const R = rowsOf(x), bytes = 2 * R * k * 4;
    const params = this.dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.put(params, Uint32Array.of(colsOf(x), k, R));
    const out = new WTensor([2, R, k], 'i32', this.dev.createBuffer({ size: up256(bytes), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }), bytes);
    const rec = new Stream(this.dev);
    rec.dispatch(this.pipes.get('topk'), [params, x.buf, out.buf], R);
    return { rec, out, params };
  }
  async argmax(x: Tensor): Promise<Int32Array> {
    const xt = this.want(x, 'f32', 'argmax'), R = rowsOf(x);
    const out = new WTensor([R], 'i32', this.temp(R * 4), R * 4);
    this.argmaxInto(xt, out);
    const b = await this.readBytes(out.buf, R * 4);
    return new Int32Array(b.buffer, b.byteOffset, R);
  }
  /** argmax.wgsl: the first maximum of each row of x into `out` (i32 [R]): one workgroup a row up to CH columns, else
   *  a workgroup per CH columns (argmax_part) and one a row over those parts (argmax_parts): a 128K vocabulary is 32
   *  workgroups' 16 loads each per invocation, not one workgroup's 500 */
  private argmaxInto(x: WTensor, out: WTensor): void {
    const R = rowsOf(x), C = colsOf(x), CH = 4096, parts = Math.ceil(C / CH);
    if (R > 65535) throw new CometError(`argmax: ${R} rows (at most 65535)`);
    if (parts === 1) return this.run('argmax', [C, CH, 1], [x.buf, out.buf, this.dummyOut(1)], R);
    const part = this.temp(R * parts * 8);
    this.run('argmax_part', [C, CH, parts], [x.buf, this.dummyOut(1), part], parts, R);
    this.run('argmax_parts', [C, CH, parts], [x.buf, out.buf, part], R);
  }
  rows(x: Tensor, idx: Int32Array): Tensor {
    const xt = this.want(x, 'f32', 'rows'), C = colsOf(x), R = idx.length;
    for (const r of idx) if (r < 0 || r >= rowsOf(x)) throw new CometError(`rows: row ${r} outside [0, ${rowsOf(x)})`);
    const out = this.f32([R, C]);
    const rows = this.stream.upload(idx, this.stepData(idx === this.capturing?.inputs?.rows, (i) => i.rows));
    this.run('rows', [C, R, 0], [xt.buf, rows, out.buf], Math.ceil(C / 256), R);
    return out;
  }
}

/** For one output of a captured step (ids, logits, a top-k): the command buffer encoded ahead for its next plain
 *  replay, and the pooled readback buffer it copies into. */
export interface ReplayAhead { next?: { cb: GPUCommandBuffer; dst: GPUBuffer } }

/** A captured step (WebGPUBackend.captureStep): its recorded commands and upload arena, and the buffers it
 *  owns (its activations, logits and argmax). */
export class WebGPUStep implements CapturedStep {
  readonly bytes: number;
  /** compute dispatches a replay encodes (the step's, and its argmax) */
  get dispatches(): number { return this.rec.dispatches; }
  /** the recorded commands by kind and pipeline (Stream.census) */
  census() { return this.rec.census(); }
  private live = true;
  private last?: StepInputs;
  constructor(private be: WebGPUBackend, private rec: Stream, private bufs: GPUBuffer[], private logits: WTensor, private ids: WTensor,
    private inputs?: StepInputs, private tokensAt?: Res) {
    this.bytes = bufs.reduce((a, b) => a + b.size, 0);
    this.last = inputs;
  }
  valid(): boolean { return this.live && !this.be.disposed && !this.be.gpu.lost; }
  private async run(inp: StepInputs | undefined, out: WTensor, tail?: Stream, feed?: boolean): Promise<Uint8Array> {
    if (!this.live) throw new CometError('webgpu: replay of a destroyed step');
    if (this.be.disposed) throw new CometError('webgpu: replay of a step whose backend was disposed');
    if (inp && inp !== this.last) {
      const t0 = this.be.profile ? performance.now() : 0;
      if (!this.inputs) throw new CometError('webgpu: this step was captured without declared inputs; it replays only its own step');
      this.rec.remake(inp);
      this.last = inp;
      if (this.be.profile) this.be.profile.remake = (this.be.profile.remake ?? 0) + performance.now() - t0;
    }
    const ahead = this.ahead.get(out) ?? this.ahead.set(out, {}).get(out)!;
    return this.be.readReplay(this.rec, out, ahead, tail, feed ? { ids: this.ids, at: this.tokensAt! } : undefined);
  }
  /** per output read back (ids, logits, a top-k): the command buffer encoded for its next replay */
  private ahead = new Map<WTensor, ReplayAhead>();
  /** Benchmarks (needs timestamp-query): GPU milliseconds of one replay as it runs (first pass start to last
   *  pass end), and of each dispatch run apart (a pass of its own: its latency without its neighbours'
   *  overlap), in the step's order. Runs the step twice on the inputs of the last replay. */
  async profileGpu(): Promise<{ stepMs: number; kernels: Array<{ name: string; ms: number }> }> {
    const dev = this.be.dev;
    if (!dev.features.has('timestamp-query')) throw new CometError('webgpu: profiling needs the timestamp-query feature');
    const n = this.rec.dispatches, count = 32 + 2 * n; // span at 0, the dispatches from 256 bytes (resolve alignment)
    const span = dev.createQuerySet({ type: 'timestamp', count: 2 }), each = dev.createQuerySet({ type: 'timestamp', count: 2 * n });
    const res = dev.createBuffer({ size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const rd = dev.createBuffer({ size: count * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.rec.writeUploads();
    let enc = dev.createCommandEncoder();
    this.rec.encode(enc, span);
    enc.resolveQuerySet(span, 0, 2, res, 0);
    dev.queue.submit([enc.finish()]);
    this.rec.writeUploads();
    enc = dev.createCommandEncoder();
    const names = this.rec.encode(enc, undefined, each);
    enc.resolveQuerySet(each, 0, 2 * n, res, 256);
    enc.copyBufferToBuffer(res, 0, rd, 0, count * 8);
    dev.queue.submit([enc.finish()]);
    await rd.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rd.getMappedRange().slice(0));
    rd.unmap();
    span.destroy(); each.destroy(); res.destroy(); rd.destroy();
    const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
    return { stepMs: ms(t[0], t[1]), kernels: names.map((name, i) => ({ name, ms: ms(t[32 + 2 * i], t[33 + 2 * i]) })) };
  }
  async replay(inp?: StepInputs): Promise<Int32Array> {
    const b = await this.run(inp, this.ids);
    return new Int32Array(b.buffer, b.byteOffset, this.ids.shape[0]);
  }
  /** Greedy chaining (CapturedStep.replayChained): the step on `inp` with the token ids its previous replay's argmax
   *  left in `ids`, copied on the device into the arena's token slot; submitted at once, read back when asked. */
  async replayChained(inp: StepInputs): Promise<Int32Array> {
    if (!this.tokensAt || !this.inputs) throw new CometError('webgpu: this step was captured without declared token inputs; it cannot be chained');
    if (inp.tokens.length !== this.ids.shape[0]) throw new CometError(`webgpu: a chained replay feeds ${this.ids.shape[0]} token ids, the inputs have ${inp.tokens.length}`);
    const b = await this.run(inp, this.ids, undefined, true);
    return new Int32Array(b.buffer, b.byteOffset, this.ids.shape[0]);
  }
  async replayLogits(inp?: StepInputs): Promise<Float32Array> {
    const b = await this.run(inp, this.logits);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  }
  /** the top-k dispatch of the last k asked for (WebGPUBackend.recordTopK), encoded after a replay's passes */
  private top?: { k: number; rec: Stream; out: WTensor; params: GPUBuffer };
  /** a replay and the top-k of its logits: R·k values and ids read back, not the R·V rows */
  async replayTopK(inp: StepInputs | undefined, k: number): Promise<{ values: Float32Array; indices: Int32Array }> {
    const [R, V] = this.logits.shape;
    checkTopK(k, V);
    if (this.top?.k !== k) {
      this.dropTopK(); // one k held: a batch's k changes rarely, and a step keeps no buffers per k it saw
      this.top = { k, ...this.be.recordTopK(this.logits, k) };
    }
    return topkOf(await this.run(inp, this.top.out, this.top.rec), R * k);
  }
  /** an output's command buffer encoded ahead dropped, its readback buffer back to the pool */
  private dropReadbacks(out: WTensor): void {
    const next = this.ahead.get(out)?.next;
    this.ahead.delete(out);
    if (next) this.be.releaseMap(next.dst);
  }
  private dropTopK(): void {
    const t = this.top;
    if (!t) return;
    this.dropReadbacks(t.out);
    t.rec.destroy();
    t.out.buf.destroy();
    t.params.destroy();
    this.top = undefined;
  }
  destroy(): void {
    if (!this.live) return;
    this.live = false;
    this.dropTopK();
    for (const out of [...this.ahead.keys()]) this.dropReadbacks(out);
    this.rec.destroy();
    if (!this.be.disposed) this.be.releaseBuffers(this.bufs);
  }
}

export interface WebGPUOptions {
  /** WGSL sources (a browser build passes them; Node reads shaders/) */
  shaders?: ShaderSources;
  /** force one W4Ax kernel (tests, benchmarks); default: tiled for M > 8 tokens, else rowwise for small K or
   *  CPU adapters, else matvec */
  gemm?: 'matvec' | 'rowwise' | 'tiled';
  /** one-token matvec variant (tests, benchmark sweeps): segments (128 channels) per lane per chunk (1 or 2), lanes
   *  per row (team) and rows per workgroup (rows, team · rows <= 256), each left out 16 lanes, 16 rows, segments by
   *  K (`{}`: the shapes before pipes.ts matvecShape, 2026-12-03); default: by shape (matvecShape). The 4-token
   *  matvec always takes 1 segment, 16 lanes, 16 rows. */
  matvec?: { segs?: 1 | 2; team?: number; rows?: number };
  /** force the barrier-free kernels (serial: one invocation per token and head, KV4 group, or weight row and 4
   *  tokens) or the workgroup ones (64 invocations per token and head, 32 per weight row) of attention, KV4 append
   *  and the f16-weight GEMM; default: serial on CPU adapters (SwiftShader runs barriers slowly), else workgroup */
  kernels?: 'workgroup' | 'serial';
  /** the workgroup KV4 attention split into a workgroup per 64-key chunk and a combine (true), or one workgroup per
   *  (token, head) walking its chunks (false); default by shape (attentionChunks). Tests force both. */
  attentionSplit?: boolean;
}

export async function createWebGPUBackend(opts: WebGPUOptions = {}): Promise<WebGPUBackend> {
  const gpu = await getGpu();
  return new WebGPUBackend(gpu, opts.shaders ?? (await loadShaderSources()), opts);
}
