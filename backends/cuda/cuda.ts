// The CUDA backend: every op of backends/backend.ts on device-resident tensors, through the addon
// (cuda/binding.cc -> cuda/capi.h). Ops enqueue on one stream and return at once; read/readRaw/argmax wait.
//
// Memory: weights, fromHost tensors and KV caches are their own allocations (freed when garbage-collected or
// at dispose); everything an op returns lives in the step arena, a bump allocator over a few large chunks,
// reset by endStep() (the stream keeps the order, so reuse after a reset is safe). Per-step host data (token
// ids, positions, block tables) is uploaded once per StepLayout into the arena.
// Layouts on the device: f32 [T][C] row-major; qact one allocation a8 [M][K8] | a4 [M][(Kp-K8)/2] | sa [M][Kp/B]
// (the simulator's readRaw order); w4 the GEMM kernel's repacked layout (comet_w4_create); KV caches as capi.h.
import { checkTopK, TOPK_MAX, type ActQuantSpec, type Backend, type CapturedStep, type DType, type GptqOps, type HostWeight, type KVCache, type KVCacheSpec, type OpProfiler, type OpSet, type RopeSpec, type StepInputs, type StepLayout, type Tensor, type Weight } from '../backend.ts';
import type { QAct } from '../../simulator/formats.ts';
import { ropeFreqs } from '../../simulator/kernels/float.ts';
import { dequantizeAct } from '../../simulator/act.ts';
import { kv4Layout } from '../../simulator/kv4.ts';
import { qactBytes } from '../../simulator/traits.ts';
import { existsSync } from 'node:fs';
import { CometError } from '../errors.ts';
import { loadAddon, type CudaAddon, type DeviceFacts, type Ptr } from './addon.ts';
import { cudaGptq, hasGptq } from './gptq.ts';

const ALIGN = 256;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

export class CudaTensor implements Tensor {
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly ptr: Ptr,
    readonly bytes: number,
    /** qact: its spec, rows and the three parts' device addresses */
    readonly q?: { spec: ActQuantSpec; M: number; a8: Ptr; a4: Ptr; sa: Ptr; n8: number; n4: number; nsa: number },
  ) {}
}

export class CudaWeight extends CudaTensor implements Weight {
  constructor(readonly name: string, shape: readonly number[], dtype: DType, ptr: Ptr, bytes: number, readonly act?: ActQuantSpec, readonly w4?: Ptr) {
    super(shape, dtype, ptr, bytes);
  }
}

export class CudaKVCache implements KVCache {
  /** f32: per layer [K region | V region]; kv4: per layer numPages·pageBytes */
  constructor(readonly spec: KVCacheSpec, readonly ptr: Ptr, readonly layerBytes: number, private readonly be: CudaBackend) {}
  layerPtr(layer: number): Ptr {
    if (!(layer >= 0 && layer < this.spec.nLayers)) throw new CometError(`cuda: KV layer ${layer} outside 0..${this.spec.nLayers - 1}`);
    return this.ptr + layer * this.layerBytes;
  }
  /** Raw bytes of one layer (tests compare them with the simulator's store): kv4 the page bytes; f32 K then V. */
  async readLayer(layer: number): Promise<Uint8Array> {
    return new Uint8Array(this.be.addon.download(this.layerPtr(layer), this.layerBytes));
  }
}

/** Bump allocator over device chunks; reset() makes all of it free again. */
class Arena {
  private chunks: { ptr: Ptr; size: number }[] = [];
  private cur = 0;
  private off = 0;
  constructor(private readonly a: CudaAddon, private readonly chunkBytes = 64 << 20) {}
  alloc(bytes: number): Ptr {
    bytes = align(Math.max(bytes, 1));
    for (;;) {
      const c = this.chunks[this.cur];
      if (!c) break;
      if (this.off + bytes <= c.size) {
        const p = c.ptr + this.off;
        this.off += bytes;
        return p;
      }
      this.cur++;
      this.off = 0;
    }
    const size = Math.max(this.chunkBytes, bytes);
    this.chunks.push({ ptr: this.a.malloc(size), size });
    this.cur = this.chunks.length - 1;
    this.off = bytes;
    return this.chunks[this.cur].ptr;
  }
  reset(): void {
    this.cur = 0;
    this.off = 0;
  }
  free(): void {
    for (const c of this.chunks) this.a.free(c.ptr);
    this.chunks = [];
    this.reset();
  }
}

/** A step layout on the device. maxLen = max(pos) + 1 (values); maxPages = the longest block table (shape). */
interface DevLayout { pos: Ptr; seq: Ptr; bt: Ptr; btOff: Ptr; T: number; maxLen: number; maxPages: number }

/** A capture in progress: where declared inputs live, and the KV pool its layout was checked against. */
interface Capture {
  inputs?: StepInputs;
  region(data: ArrayBufferView): Ptr;
  layoutPtr(l: StepLayout): Ptr;
  kv?: { pageSize: number; numPages: number };
}

/** One upload for a layout: pos [T] | seq [T] | btOff [S] | bt [sum of lengths]; checks seq and pos. */
function packLayout(l: StepLayout, into?: Int32Array): { all: Int32Array; T: number; maxLen: number; maxPages: number } {
  const T = l.pos.length, S = l.blockTables.length;
  if (l.seq.length !== T) throw new CometError(`cuda: layout has ${T} positions but ${l.seq.length} sequence ids`);
  let n = 0, maxPages = 0, maxLen = 0;
  for (const bt of l.blockTables) { n += bt.length; maxPages = Math.max(maxPages, bt.length); }
  const all = into ?? new Int32Array(2 * T + S + n);
  if (all.length !== 2 * T + S + n) throw new CometError(`cuda: layout of ${2 * T + S + n} words packed into ${all.length}`);
  all.set(l.pos, 0);
  all.set(l.seq, T);
  let o = 0;
  l.blockTables.forEach((bt, i) => { all[2 * T + i] = o; all.set(bt, 2 * T + S + o); o += bt.length; });
  for (let t = 0; t < T; t++) {
    if (!(l.seq[t] >= 0 && l.seq[t] < S)) throw new CometError(`cuda: token ${t} names sequence ${l.seq[t]}, but the step has ${S} block tables`);
    if (l.pos[t] < 0) throw new CometError(`cuda: token ${t} has position ${l.pos[t]}`);
    maxLen = Math.max(maxLen, l.pos[t] + 1);
  }
  return { all, T, maxLen, maxPages };
}

/** Every token's page exists and every page up to it is in the pool. */
function checkLayoutPages(l: StepLayout, pageSize: number, numPages: number, op: string): void {
  for (let t = 0; t < l.pos.length; t++) {
    const bt = l.blockTables[l.seq[t]];
    const pi = Math.floor(l.pos[t] / pageSize);
    if (pi >= bt.length) throw new CometError(`${op}: position ${l.pos[t]} is past the sequence's ${bt.length} pages`);
    for (let i = 0; i <= pi; i++)
      if (!(bt[i] >= 0 && bt[i] < numPages)) throw new CometError(`${op}: page ${bt[i]} outside the pool of ${numPages}`);
  }
}

/** A captured step's input image: tokens at word `tok`, the packed layout at `lay`, rows at `row`. */
interface InputImage { words: Int32Array; tok: number; lay: number; row: number }
const alignWords = (n: number) => Math.ceil(n / (ALIGN / 4)) * (ALIGN / 4);

function packInputs(inp: StepInputs): InputImage {
  const pk = packLayout(inp.layout);
  const lay = alignWords(inp.tokens.length), row = lay + alignWords(pk.all.length);
  const words = new Int32Array(Math.max(row + inp.rows.length, 1));
  words.set(inp.tokens, 0);
  words.set(pk.all, lay);
  words.set(inp.rows, row);
  return { words, tok: 0, lay, row };
}

/** Write `next` (the captured step's shape, other values) into the image, checked as the ops check an eager
 *  step: the kernels it feeds were launched for the captured shape and read these values unchecked. */
function repackInputs(img: InputImage, was: StepInputs, next: StepInputs, kv?: { pageSize: number; numPages: number }): void {
  const a = was.layout, b = next.layout;
  const same = next.tokens.length === was.tokens.length && next.rows.length === was.rows.length && b.pos.length === a.pos.length &&
    b.blockTables.length === a.blockTables.length && b.blockTables.every((bt, i) => bt.length === a.blockTables[i].length);
  if (!same) throw new CometError('cuda: step graph replayed on inputs of another shape (tokens, rows, sequences or block-table lengths differ)');
  for (const t of next.tokens) if (t < 0) throw new CometError(`cuda: step graph replayed with token id ${t}`);
  for (const r of next.rows) if (!(r >= 0 && r < next.tokens.length)) throw new CometError(`rows: row ${r} outside [0, ${next.tokens.length})`);
  packLayout(b, img.words.subarray(img.lay, img.lay + 2 * b.pos.length + b.blockTables.length + b.blockTables.reduce((s, bt) => s + bt.length, 0)));
  if (kv) checkLayoutPages(b, kv.pageSize, kv.numPages, 'step graph');
  img.words.set(next.tokens, img.tok);
  img.words.set(next.rows, img.row);
}

const rowsOf = (t: Tensor) => t.shape[0];
const colsOf = (t: Tensor) => t.shape[t.shape.length - 1];
const numel = (t: Tensor) => t.shape.reduce((a, b) => a * b, 1);

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  private readonly arena: Arena;
  private readonly owned = new Set<Ptr>();
  private readonly w4s = new Set<Ptr>();
  private readonly finalizer = new FinalizationRegistry<Ptr>((p) => {
    if (this.owned.delete(p)) this.addon.free(p);
  });
  private layouts = new WeakMap<StepLayout, DevLayout>();
  private readonly perms = new WeakMap<Int32Array, Ptr>();
  private readonly freqs = new Map<string, Ptr>();
  private disposed = false;

  readonly addon: CudaAddon;
  /** per-op timing (setOpTiming): names of the profiled launches in order, and totals per name */
  private prof?: { names: string[]; totals: Map<string, { ms: number; n: number }> };
  private readonly weightNames = new Map<Ptr, string>();

  /** GPTQ on the device for the quantizer (backends/cuda/gptq.ts), when the addon has the kernels. */
  readonly gptq?: GptqOps;

  constructor(addon: CudaAddon, readonly device: DeviceFacts) {
    this.addon = this.profiled(addon);
    this.arena = new Arena(addon);
    if (hasGptq(this.addon)) this.gptq = cudaGptq(this.addon, (t) => (t as CudaTensor).ptr);
  }

  /** Free a weight, fromHost tensor or KV cache now (the layer-by-layer quantizer: one layer on the device). */
  release(t: Tensor | KVCache): void {
    if (t instanceof CudaWeight && t.w4 !== undefined) {
      if (this.w4s.delete(t.w4)) this.addon.w4Destroy(t.w4);
      return;
    }
    const p = (t as CudaTensor | CudaKVCache).ptr;
    if (p && this.owned.delete(p)) this.addon.free(p);
  }

  memory(): { free: number; total: number } {
    const f = this.addon.deviceInfo();
    return { free: f.freeBytes, total: f.totalBytes };
  }

  /** The addon with every kernel-launching call wrapped: when op timing is on, each call is preceded by a
   *  spin kernel and bracketed by events (cuda/ops_float.cu), so the pair times that op's GPU work alone. */
  private profiled(raw: CudaAddon): CudaAddon {
    const ops = ['embed', 'embedF16', 'rmsnorm', 'add', 'siluMul', 'rope', 'gemmF32', 'gemmF16w', 'rows', 'argmax', 'topk', 'quantizeAct', 'rmsnormQuant', 'siluMulQuant', 'kvAppendF32', 'kvAppendKv4', 'addRmsnorm', 'addRmsnormQuant', 'ropeKvAppendF32', 'ropeKvAppendKv4', 'attentionF32', 'attentionKv4', 'gemmW4ax', 'gemmW4axMany'] as const;
    const out = { ...raw } as Record<string, unknown>;
    for (const k of ops) {
      const f = raw[k] as ((...a: unknown[]) => void) | undefined;
      if (!f) continue; // optional in an older addon (gemmW4axMany)
      out[k] = (...a: unknown[]) => {
        const p = this.prof;
        if (!p) return f(...a);
        raw.profSpin(60);
        raw.profMark();
        f(...a);
        raw.profMark();
        // GEMMs by weight (grouped ones: the weights joined with '+', e.g. wq+wk+wv)
        const w = k === 'gemmW4ax' ? [a[4] as number] : k === 'gemmW4axMany' ? (a[4] as number[]) : k === 'gemmF32' ? [a[3] as number] : [];
        p.names.push(w.length ? `${k === 'gemmW4axMany' ? 'gemmW4ax' : k} ${w.map((x) => this.weightNames.get(x) ?? '?').join('+')} M=${a[k === 'gemmF32' ? 1 : 3]}` : k);
      };
    }
    return out as unknown as CudaAddon;
  }

  /** Per-op GPU timing on or off (off: no cost but one flag test per launch). */
  setOpTiming(on: boolean): void {
    this.prof = on ? { names: [], totals: new Map() } : undefined;
  }

  /** Totals per op name since setOpTiming(true): ms summed over the profiled steps, and launch counts. */
  opTimings(): Map<string, { ms: number; n: number }> {
    this.collectTimings();
    return new Map(this.prof?.totals ?? []);
  }

  private collectTimings(): void {
    const p = this.prof;
    if (!p || !p.names.length) return;
    const ms = this.addon.profRead();
    p.names.forEach((name, i) => {
      const t = p.totals.get(name) ?? { ms: 0, n: 0 };
      t.ms += ms[i] ?? 0;
      t.n++;
      p.totals.set(name, t);
    });
    p.names = [];
  }

  /** What CUDA runs and how closely (DESIGN §3.7): the integer paths, the quantizers given equal f32 inputs, the
   *  KV bytes, the KV4 attention (its contract, simulator/kernels/attention_kv4.ts) and the f32 GEMM bit for bit; f64 reductions
   *  (tolerance, tight). Float weights (embedding, classifier) f32 or f16. */
  get ops(): OpSet {
    return {
      embed: { f32: 'exact', f16: 'exact' }, rmsnorm: { f32: 'tolerance' }, rmsnorm_quant: { qact: 'tolerance' }, quantize_act: { qact: 'exact' },
      gemm_f32: { f32: 'exact', f16: 'tolerance' }, gemm_w4ax: { w4: 'exact' }, rope: { f32: 'tolerance' }, kv_append: { f32: 'exact', kv4: 'exact' },
      attention: { f32: 'tolerance', kv4: 'exact' },
      silu_mul: { f32: 'tolerance' }, silu_mul_quant: { qact: 'tolerance' }, add: { f32: 'exact' }, argmax: { f32: 'exact' }, topk: { f32: 'exact' }, rows: { f32: 'exact' },
      // fused kernels (cuda/ops_*.cu): bit for bit this backend's composition; against the simulator, their halves' tiers
      add_rmsnorm: { f32: 'tolerance' }, add_rmsnorm_quant: { qact: 'tolerance' }, rope_kv_append: { f32: 'tolerance', kv4: 'tolerance' },
    };
  }
  readonly profiler: OpProfiler = { setOpTiming: (on) => this.setOpTiming(on), opTimings: () => this.opTimings() };

  // ---- memory ----
  private persistent(bytes: number, owner?: object): Ptr {
    const p = this.addon.malloc(bytes);
    this.owned.add(p);
    if (owner) this.finalizer.register(owner, p);
    return p;
  }

  private uploadPersistent(data: ArrayBufferView): Ptr {
    const p = this.persistent(data.byteLength);
    this.addon.upload(p, data);
    return p;
  }

  private tmp(bytes: number): Ptr {
    return this.arena.alloc(bytes);
  }

  private tmpUpload(data: ArrayBufferView): Ptr {
    const cap = this.cap;
    if (cap?.inputs) return cap.region(data); // declared step data: the capture's input buffer, nothing copied
    const p = this.arena.alloc(data.byteLength);
    if (data.byteLength) this.addon.upload(p, cap ? this.stage(data) : data);
    return p;
  }

  /** The capture in progress (captureStep), if any. */
  private cap?: Capture;
  /** Capture without declared inputs (the benchmark's fixed step): step data goes through page-locked staging
   *  (a pageable copy cannot be captured) and the graph re-reads it on every replay. Regions are never reused. */
  private staging?: { buf: ArrayBuffer; off: number };
  private stage(data: ArrayBufferView): Uint8Array {
    const st = (this.staging ??= { buf: this.addon.hostAlloc(16 << 20), off: 0 });
    const n = data.byteLength;
    if (st.off + n > st.buf.byteLength) throw new CometError(`cuda: graph step staging full (${st.buf.byteLength} bytes)`);
    const v = new Uint8Array(st.buf, st.off, n);
    v.set(new Uint8Array(data.buffer, data.byteOffset, n));
    st.off = align(st.off + n);
    return v;
  }

  /** Capture the ops `fn` enqueues (one step, returning logits [R][V]) as a CUDA graph (Backend.captureStep).
   *  The same step shape must have run eagerly once (the arena, GEMM workspaces, rope tables and permutations
   *  warm: nothing may be allocated while capturing). The graph uses the arena's addresses from its start (the
   *  arena is reset first), so replays must not overlap other work: one stream keeps that order.
   *  With `inputs`, every upload of the step must be one of them (tokens, rows, layout): they live in a device
   *  buffer of this graph, image [tokens T | layout pos T · seq T · btOff S · bt | rows R] (256-byte aligned
   *  parts), which a replay on new inputs rewrites with one copy before the launch. Launch sizes come from the
   *  shapes alone (attention: launchLen below), so any positions within the block tables replay right.
   *  Without `inputs` the step data is staged in page-locked memory and a replay repeats the captured step. */
  captureStep(fn: () => Tensor, inputs?: StepInputs): CapturedStep {
    if (this.prof) throw new CometError('cuda: captureStep with op timing on');
    if (this.cap) throw new CometError('cuda: captureStep inside a capture');
    this.addon.sync();
    this.arena.reset();
    this.layouts = new WeakMap();
    // everything that allocates comes before the capture (no cudaMalloc / cudaHostAlloc while capturing)
    const image = inputs ? packInputs(inputs) : undefined;
    const buf = image ? this.persistent(image.words.byteLength) : 0;
    const release = (p: Ptr) => { if (p && this.owned.delete(p)) this.addon.free(p); };
    if (image) this.addon.upload(buf, image.words);
    else this.staging ??= { buf: this.addon.hostAlloc(16 << 20), off: 0 };
    const cap: Capture = {
      inputs,
      region: (data) => {
        if (data === inputs?.tokens) return buf + 4 * image!.tok;
        if (data === inputs?.rows) return buf + 4 * image!.row;
        throw new CometError('cuda: captureStep: the step uploads data that is not one of its declared inputs (tokens, rows, layout)');
      },
      layoutPtr: (l) => {
        if (l !== inputs?.layout) throw new CometError('cuda: captureStep: the step uses a layout other than its declared one');
        return buf + 4 * image!.lay;
      },
    };
    let exec: Ptr, x: CudaTensor;
    this.cap = cap;
    this.addon.graphBegin();
    try {
      try {
        x = this.checkF32(fn(), 'captureStep');
      } catch (e) {
        try { this.addon.graphDestroy(this.addon.graphEnd()); } catch { /* the capture is already broken */ }
        throw e;
      }
      exec = this.addon.graphEnd(); // throws when an op did something a capture cannot hold
    } catch (e) {
      this.cap = undefined;
      this.endStep();
      release(buf);
      throw e;
    }
    this.cap = undefined;
    this.endStep();
    const R = rowsOf(x), V = colsOf(x), logits = x.ptr; // the logits stay at this arena address after each replay
    const out = this.persistent(4 * Math.max(R, 1));
    // a W4 weight uploaded later may regrow the GEMM library's split-K workspace that this graph's launches
    // point at (comet_w4_create): the graph is stale then
    const w4At = this.w4s.size;
    let live = true, last = inputs, tk: { vals: Ptr; ids: Ptr } | undefined;
    const launch = (inp?: StepInputs) => {
      if (!live) throw new CometError('cuda: replay of a destroyed step graph');
      if (this.disposed || this.w4s.size !== w4At) throw new CometError('cuda: replay of a stale step graph (weights were uploaded or the backend disposed since its capture)');
      if (this.cap) throw new CometError('cuda: replay inside a capture');
      if (inp && inp !== last) {
        if (!image || !inputs) throw new CometError('cuda: this step graph was captured without declared inputs; it replays only its own step');
        repackInputs(image, inputs, inp, cap.kv);
        this.addon.upload(buf, image.words);
        last = inp;
      }
      this.addon.graphLaunch(exec);
    };
    return {
      bytes: (image ? image.words.byteLength : 0) + 4 * Math.max(R, 1),
      kernels: this.addon.graphKernels?.(),
      valid: () => live && !this.disposed && this.w4s.size === w4At,
      replay: async (inp) => {
        launch(inp);
        this.addon.argmax(logits, R, V, out);
        return new Int32Array(this.addon.download(out, 4 * R));
      },
      replayLogits: async (inp) => {
        launch(inp);
        return new Float32Array(this.addon.download(logits, 4 * R * V));
      },
      replayTopK: async (inp, k) => {
        checkTopK(k, V);
        launch(inp);
        // outside the graph's arena (a replay's buffers live there): R·TOPK_MAX values and ids, made at first use
        tk ??= { vals: this.persistent(4 * R * TOPK_MAX), ids: this.persistent(4 * R * TOPK_MAX) };
        return this.topkAt(logits, R, V, k, tk);
      },
      destroy: () => {
        if (!live) return;
        live = false;
        this.addon.graphDestroy(exec);
        release(out);
        release(buf);
        if (tk) release(tk.vals), release(tk.ids);
      },
    };
  }

  private f32(shape: readonly number[]): CudaTensor {
    const bytes = shape.reduce((a, b) => a * b, 1) * 4;
    return new CudaTensor(shape, 'f32', this.tmp(bytes), bytes);
  }

  private qact(spec: ActQuantSpec, M: number): CudaTensor {
    const b = qactBytes(spec, M);
    const bytes = b.a8 + b.a4 + b.sa;
    const p = this.tmp(bytes);
    return new CudaTensor([M, spec.Kp], 'qact', p, bytes, { spec, M, a8: p, a4: p + b.a8, sa: p + b.a8 + b.a4, n8: b.a8, n4: b.a4, nsa: b.sa });
  }

  private permPtr(spec: ActQuantSpec): Ptr {
    if (!spec.perm) return 0;
    let p = this.perms.get(spec.perm);
    if (p === undefined) {
      p = this.persistent(spec.perm.byteLength, spec.perm);
      this.addon.upload(p, spec.perm);
      this.perms.set(spec.perm, p);
    }
    return p;
  }

  uploadWeight(w: HostWeight): Weight {
    if (w.kind === 'f32' || w.kind === 'f16') {
      const t = new CudaWeight(w.name, w.shape, w.kind, 0, w.data.byteLength);
      const p = this.persistent(w.data.byteLength, t);
      (t as { ptr: Ptr }).ptr = p;
      this.addon.upload(p, w.data);
      this.weightNames.set(p, w.name.replace(/^l\d+\./, ''));
      return t;
    }
    const { N, act } = w;
    if (w.codes.length !== (N * act.Kp) / 2 || w.scales.length !== (N * act.Kp) / act.B)
      throw new CometError(`cuda: w4 weight '${w.name}' has ${w.codes.length} code bytes and ${w.scales.length} scales, expected ${(N * act.Kp) / 2} and ${(N * act.Kp) / act.B}`);
    const codes = this.uploadPersistent(w.codes), scales = this.uploadPersistent(w.scales);
    try {
      const h = this.addon.w4Create(codes, scales, N, act.Kp, act.B, act.K8);
      this.w4s.add(h);
      this.weightNames.set(h, w.name.replace(/^l\d+\./, ''));
      this.addon.sync();
      return new CudaWeight(w.name, [N, act.K], 'w4', 0, 0, act, h);
    } finally {
      for (const p of [codes, scales]) if (this.owned.delete(p)) this.addon.free(p);
    }
  }

  fromHost(data: Float32Array, shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new CometError(`cuda: fromHost got ${data.length} values for shape [${shape}]`);
    const t = new CudaTensor(shape, 'f32', 0, data.byteLength);
    const p = this.persistent(data.byteLength, t);
    (t as { ptr: Ptr }).ptr = p;
    this.addon.upload(p, data);
    return t;
  }

  async read(t: Tensor): Promise<Float32Array> {
    const c = t as CudaTensor;
    if (c.dtype === 'qact') return dequantizeAct(this.hostQAct(c));
    if (c.dtype !== 'f32') throw new CometError(`cuda: read() of a ${c.dtype} tensor`);
    return new Float32Array(this.addon.download(c.ptr, c.bytes));
  }

  async readRaw(t: Tensor): Promise<Uint8Array> {
    const c = t as CudaTensor;
    return new Uint8Array(this.addon.download(c.ptr, c.bytes));
  }

  private hostQAct(c: CudaTensor): QAct {
    const q = c.q!;
    const raw = this.addon.download(c.ptr, c.bytes);
    return {
      M: q.M, spec: q.spec,
      a8: new Int8Array(raw, 0, q.n8),
      a4: new Uint8Array(raw, q.n8, q.n4),
      sa: new Uint16Array(raw.slice(q.n8 + q.n4, q.n8 + q.n4 + q.nsa)),
    };
  }

  createKVCache(spec: KVCacheSpec): KVCache {
    const { nLayers, numPages, nKvHeads, pageSize, headDim } = spec;
    const layerBytes = spec.dtype === 'kv4' ? numPages * kv4Layout(spec).pageBytes : 2 * numPages * nKvHeads * pageSize * headDim * 4;
    const cache = new CudaKVCache(spec, 0, layerBytes, this);
    const p = this.persistent(nLayers * layerBytes, cache);
    (cache as { ptr: Ptr }).ptr = p;
    this.addon.memset(p, 0, nLayers * layerBytes);
    return cache;
  }

  endStep(): void {
    this.collectTimings();
    this.arena.reset();
    this.layouts = new WeakMap();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.addon.sync();
    for (const h of this.w4s) this.addon.w4Destroy(h);
    for (const p of this.owned) this.addon.free(p);
    for (const p of this.freqs.values()) this.addon.free(p);
    this.w4s.clear();
    this.owned.clear();
    this.freqs.clear();
    this.arena.free();
  }

  // ---- step data ----
  /** The step's positions, sequence ids and block tables on the device, once per StepLayout (a capture
   *  places them in its input buffer instead of the arena). */
  private layout(l: StepLayout): DevLayout {
    let d = this.layouts.get(l);
    if (d) return d;
    const pk = packLayout(l), T = pk.T, S = l.blockTables.length;
    const p = this.cap?.inputs ? this.cap.layoutPtr(l) : this.tmpUpload(pk.all);
    d = { pos: p, seq: p + 4 * T, btOff: p + 8 * T, bt: p + 4 * (2 * T + S), T, maxLen: pk.maxLen, maxPages: pk.maxPages };
    this.layouts.set(l, d);
    return d;
  }

  /** The key range attention is launched for (its split plan and workspace): the block tables' capacity,
   *  max pages · P, a function of the layout's shape alone. A captured step replayed at other positions
   *  therefore launches exactly as an eager step of the same shape (and computes the same bits); the kernels
   *  read each token's real length (pos + 1) from device memory. */
  private launchLen(d: DevLayout, s: KVCacheSpec): number {
    return Math.max(d.maxLen, d.maxPages * s.pageSize);
  }

  private checkPages(cache: CudaKVCache, l: StepLayout, op: string): void {
    const { pageSize, numPages } = cache.spec;
    checkLayoutPages(l, pageSize, numPages, op);
    if (this.cap) this.cap.kv = { pageSize, numPages }; // a replay's new layout is checked against the same pool
  }

  // ---- ops ----
  private checkF32(t: Tensor, op: string): CudaTensor {
    if (t.dtype !== 'f32') throw new CometError(`cuda: ${op} expects an f32 tensor, got ${t.dtype}`);
    return t as CudaTensor;
  }

  embed(table: Weight, tokens: Int32Array): Tensor {
    const f16 = table.dtype === 'f16', tb = f16 ? (table as CudaWeight) : this.checkF32(table, 'embed');
    const [V, D] = table.shape;
    for (const t of tokens) if (t < 0 || t >= V) throw new CometError(`embed: token id ${t} outside the vocabulary [0, ${V})`);
    const out = this.f32([tokens.length, D]);
    (f16 ? this.addon.embedF16 : this.addon.embed)(tb.ptr, D, this.tmpUpload(tokens), tokens.length, out.ptr);
    return out;
  }

  rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const out = this.f32(x.shape);
    this.addon.rmsnorm(this.checkF32(x, 'rmsnorm').ptr, this.checkF32(w, 'rmsnorm').ptr, rowsOf(x), colsOf(x), eps, out.ptr);
    return out;
  }

  rmsnormQuant(x: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): Tensor {
    if (spec.K !== colsOf(x)) throw new CometError(`rmsnormQuant: spec.K = ${spec.K} but the rows have ${colsOf(x)} channels`);
    const q = this.qact(spec, rowsOf(x)), d = q.q!;
    this.addon.rmsnormQuant(this.checkF32(x, 'rmsnorm_quant').ptr, this.checkF32(w, 'rmsnorm_quant').ptr, rowsOf(x), eps,
      spec.K, spec.B, spec.Kp, spec.K8, this.permPtr(spec), d.a8, d.a4, d.sa);
    return q;
  }

  addRmsnorm(x: Tensor, y: Tensor, w: Tensor, eps: number): [Tensor, Tensor] {
    if (x.shape.join() !== y.shape.join()) throw new CometError(`addRmsnorm: [${x.shape}] and [${y.shape}] differ`);
    const sum = this.f32(x.shape), out = this.f32(x.shape);
    this.addon.addRmsnorm(this.checkF32(x, 'add_rmsnorm').ptr, this.checkF32(y, 'add_rmsnorm').ptr, this.checkF32(w, 'add_rmsnorm').ptr, rowsOf(x), colsOf(x), eps, sum.ptr, out.ptr);
    return [sum, out];
  }

  addRmsnormQuant(x: Tensor, y: Tensor, w: Tensor, eps: number, spec: ActQuantSpec): [Tensor, Tensor] {
    if (x.shape.join() !== y.shape.join()) throw new CometError(`addRmsnormQuant: [${x.shape}] and [${y.shape}] differ`);
    if (spec.K !== colsOf(x)) throw new CometError(`addRmsnormQuant: spec.K = ${spec.K} but the rows have ${colsOf(x)} channels`);
    const sum = this.f32(x.shape), q = this.qact(spec, rowsOf(x)), d = q.q!;
    this.addon.addRmsnormQuant(this.checkF32(x, 'add_rmsnorm_quant').ptr, this.checkF32(y, 'add_rmsnorm_quant').ptr, this.checkF32(w, 'add_rmsnorm_quant').ptr,
      rowsOf(x), eps, spec.K, spec.B, spec.Kp, spec.K8, this.permPtr(spec), sum.ptr, d.a8, d.a4, d.sa);
    return [sum, q];
  }

  quantizeAct(x: Tensor, spec: ActQuantSpec): Tensor {
    if (spec.K !== colsOf(x)) throw new CometError(`quantizeAct: spec.K = ${spec.K} but x has ${colsOf(x)} columns`);
    const q = this.qact(spec, rowsOf(x)), d = q.q!;
    this.addon.quantizeAct(this.checkF32(x, 'quantize_act').ptr, rowsOf(x), spec.K, spec.B, spec.Kp, spec.K8, this.permPtr(spec), d.a8, d.a4, d.sa);
    return q;
  }

  /** A w4 weight against a quantized activation: the specs must agree (DESIGN §3.2-3.4). */
  private checkW4(cx: CudaTensor, w: Weight): void {
    if (cx.dtype !== 'qact') throw new CometError(`matmul: ${w.name} is w4 and needs a quantized activation, got ${cx.dtype}`);
    const a = cx.q!.spec, b = w.act!;
    for (const f of ['K', 'Kp', 'B', 'K8'] as const)
      if (a[f] !== b[f]) throw new CometError(`matmul: activation ${f} = ${a[f]} but ${w.name} expects ${f} = ${b[f]}`);
  }

  matmulMany(x: Tensor, ws: readonly Weight[]): Tensor[] {
    const cx = x as CudaTensor, M = rowsOf(x);
    if (ws.length > 4 || !ws.every((w) => w.dtype === 'w4') || !this.addon.gemmW4axMany) return ws.map((w) => this.matmul(x, w));
    ws.forEach((w) => this.checkW4(cx, w));
    const outs = ws.map((w) => this.f32([M, w.shape[0]]));
    this.addon.gemmW4axMany(cx.q!.a8, cx.q!.a4, cx.q!.sa, M, ws.map((w) => (w as CudaWeight).w4!), outs.map((o) => o.ptr), 0);
    return outs;
  }

  matmul(x: Tensor, w: Weight): Tensor {
    const cw = w as CudaWeight, cx = x as CudaTensor, N = w.shape[0], M = rowsOf(x);
    if (cw.dtype === 'w4') {
      this.checkW4(cx, w);
      const out = this.f32([M, N]);
      this.addon.gemmW4ax(cx.q!.a8, cx.q!.a4, cx.q!.sa, M, cw.w4!, out.ptr, 0);
      return out;
    }
    const K = colsOf(w);
    if (colsOf(x) !== K) throw new CometError(`matmul: ${w.name} expects ${K} input features, got ${colsOf(x)}`);
    const out = this.f32([M, N]);
    (cw.dtype === 'f16' ? this.addon.gemmF16w : this.addon.gemmF32)(this.checkF32(x, 'matmul').ptr, M, K, cw.ptr, N, out.ptr);
    return out;
  }

  /** The partial-sum schedule every W4Ax kernel uses against an N x spec weight, at any M (DESIGN §3.4):
   *  B-block ranges [b0, b1), each summed in ascending order, then added in list order. The simulator
   *  reproduces the kernel bit for bit given it (simulator/kernels/gemm_w4ax.ts, `schedule`). */
  gemmSchedule(N: number, spec: ActQuantSpec): Array<[number, number]> {
    const r = this.addon.gemmSchedule(N, spec.Kp, spec.B, spec.K8), out: Array<[number, number]> = [];
    for (let i = 0; i < r.length; i += 2) out.push([r[i], r[i + 1]]);
    return out;
  }

  /** The rotary frequencies of a spec on the device (made once per head_dim, theta and scaling). */
  private freqPtr(spec: RopeSpec): Ptr {
    const key = `${spec.headDim}:${spec.theta}:${JSON.stringify(spec.scaling ?? null)}`;
    let f = this.freqs.get(key);
    if (f === undefined) {
      const host = ropeFreqs(spec.headDim, spec.theta, spec.scaling);
      f = this.addon.malloc(host.byteLength);
      this.addon.upload(f, host);
      this.freqs.set(key, f);
    }
    return f;
  }

  rope(x: Tensor, layout: StepLayout, spec: RopeSpec): Tensor {
    const f = this.freqPtr(spec);
    if (colsOf(x) !== spec.nHeads * spec.headDim) throw new CometError(`rope: x has ${colsOf(x)} columns, expected ${spec.nHeads}·${spec.headDim}`);
    const d = this.layout(layout), out = this.f32(x.shape);
    this.addon.rope(this.checkF32(x, 'rope').ptr, rowsOf(x), spec.nHeads, spec.headDim, d.pos, f, out.ptr);
    return out;
  }

  private stepArgs(d: DevLayout, s: KVCacheSpec): number[] {
    return [d.pos, d.seq, d.bt, d.btOff, d.T, s.nKvHeads, s.headDim, s.pageSize, s.group || s.headDim];
  }

  /** k, v against the cache's rows of this step (kvAppend, ropeKvAppend) */
  private checkKV(c: CudaKVCache, k: Tensor, v: Tensor, layout: StepLayout, op: string): void {
    const C = c.spec.nKvHeads * c.spec.headDim;
    if (colsOf(k) !== C || colsOf(v) !== C || rowsOf(k) !== layout.pos.length || rowsOf(v) !== layout.pos.length)
      throw new CometError(`${op}: k [${k.shape}], v [${v.shape}] do not match ${layout.pos.length} tokens of ${C} channels`);
    this.checkPages(c, layout, op);
  }

  kvAppend(cache: KVCache, layer: number, k: Tensor, v: Tensor, layout: StepLayout): void {
    const c = cache as CudaKVCache, s = c.spec;
    this.checkKV(c, k, v, layout, 'kvAppend');
    const d = this.layout(layout), base = c.layerPtr(layer), kp = this.checkF32(k, 'kv_append').ptr, vp = this.checkF32(v, 'kv_append').ptr;
    if (s.dtype === 'kv4') this.addon.kvAppendKv4(base, kp, vp, ...this.stepArgs(d, s));
    else this.addon.kvAppendF32(base, base + c.layerBytes / 2, kp, vp, ...this.stepArgs(d, s));
  }

  ropeKvAppend(q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: number, layout: StepLayout, spec: RopeSpec): Tensor {
    const c = cache as CudaKVCache, s = c.spec;
    if (spec.headDim !== s.headDim || colsOf(q) !== spec.nHeads * s.headDim || rowsOf(q) !== layout.pos.length || spec.nHeads % s.nKvHeads)
      throw new CometError(`ropeKvAppend: q [${q.shape}] does not match ${layout.pos.length} tokens of ${spec.nHeads}·${spec.headDim} over ${s.nKvHeads} KV heads of ${s.headDim}`);
    this.checkKV(c, k, v, layout, 'ropeKvAppend');
    const d = this.layout(layout), base = c.layerPtr(layer), out = this.f32(q.shape), f = this.freqPtr(spec);
    const [qp, kp, vp] = [q, k, v].map((t) => this.checkF32(t, 'rope_kv_append').ptr);
    if (s.dtype === 'kv4') this.addon.ropeKvAppendKv4(base, qp, kp, vp, spec.nHeads, f, out.ptr, ...this.stepArgs(d, s));
    else this.addon.ropeKvAppendF32(base, base + c.layerBytes / 2, qp, kp, vp, spec.nHeads, f, out.ptr, ...this.stepArgs(d, s));
    return out;
  }

  attention(q: Tensor, cache: KVCache, layer: number, layout: StepLayout, nHeads: number): Tensor {
    const c = cache as CudaKVCache, s = c.spec;
    if (colsOf(q) !== nHeads * s.headDim || rowsOf(q) !== layout.pos.length)
      throw new CometError(`attention: q [${q.shape}] does not match ${layout.pos.length} tokens of ${nHeads}·${s.headDim}`);
    this.checkPages(c, layout, 'attention');
    const d = this.layout(layout), base = c.layerPtr(layer), out = this.f32(q.shape);
    const len = this.launchLen(d, s); // from the layout's shape (captured steps replay at other positions)
    const ws = this.tmp(this.addon.attentionWorkspace(d.T, nHeads, s.headDim, len));
    const qp = this.checkF32(q, 'attention').ptr;
    if (s.dtype === 'kv4') this.addon.attentionKv4(qp, base, ...this.stepArgs(d, s), nHeads, len, ws, out.ptr);
    else this.addon.attentionF32(qp, base, base + c.layerBytes / 2, ...this.stepArgs(d, s), nHeads, len, ws, out.ptr);
    return out;
  }

  siluMul(g: Tensor, u: Tensor): Tensor {
    if (numel(g) !== numel(u)) throw new CometError(`siluMul: g [${g.shape}] and u [${u.shape}] differ`);
    const out = this.f32(g.shape);
    this.addon.siluMul(this.checkF32(g, 'silu_mul').ptr, this.checkF32(u, 'silu_mul').ptr, numel(g), out.ptr);
    return out;
  }

  siluMulQuant(g: Tensor, u: Tensor, spec: ActQuantSpec): Tensor {
    if (numel(g) !== numel(u)) throw new CometError(`siluMulQuant: g [${g.shape}] and u [${u.shape}] differ`);
    if (spec.K !== colsOf(g)) throw new CometError(`siluMulQuant: spec.K = ${spec.K} but g has ${colsOf(g)} columns`);
    const q = this.qact(spec, rowsOf(g)), d = q.q!;
    this.addon.siluMulQuant(this.checkF32(g, 'silu_mul_quant').ptr, this.checkF32(u, 'silu_mul_quant').ptr, rowsOf(g),
      spec.K, spec.B, spec.Kp, spec.K8, this.permPtr(spec), d.a8, d.a4, d.sa);
    return q;
  }

  add(a: Tensor, b: Tensor): Tensor {
    if (numel(a) !== numel(b)) throw new CometError(`add: [${a.shape}] and [${b.shape}] differ`);
    const out = this.f32(a.shape);
    this.addon.add(this.checkF32(a, 'add').ptr, this.checkF32(b, 'add').ptr, numel(a), out.ptr);
    return out;
  }

  async topk(x: Tensor, k: number): Promise<{ values: Float32Array; indices: Int32Array }> {
    checkTopK(k, colsOf(x));
    return this.topkAt(this.checkF32(x, 'topk').ptr, rowsOf(x), colsOf(x), k);
  }
  /** top k of the rows at `x` [R][V]: values and ids of R·k entries come back, not the rows */
  private topkAt(x: Ptr, R: number, V: number, k: number, out = { vals: this.tmp(4 * R * k), ids: this.tmp(4 * R * k) }): { values: Float32Array; indices: Int32Array } {
    const { vals, ids } = out;
    this.addon.topk(x, R, V, k, vals, ids);
    return { values: new Float32Array(this.addon.download(vals, 4 * R * k)), indices: new Int32Array(this.addon.download(ids, 4 * R * k)) };
  }
  async argmax(x: Tensor): Promise<Int32Array> {
    const R = rowsOf(x), out = this.tmp(4 * R);
    this.addon.argmax(this.checkF32(x, 'argmax').ptr, R, colsOf(x), out);
    return new Int32Array(this.addon.download(out, 4 * R));
  }

  rows(x: Tensor, idx: Int32Array): Tensor {
    const R = rowsOf(x), C = colsOf(x);
    for (const r of idx) if (!(r >= 0 && r < R)) throw new CometError(`rows: row ${r} outside [0, ${R})`);
    const out = this.f32([idx.length, C]);
    this.addon.rows(this.checkF32(x, 'rows').ptr, C, this.tmpUpload(idx), idx.length, out.ptr);
    return out;
  }
}

/** Load the addon and open GPU 0 (COMET_CUDA_DEVICE picks another). Clear errors when the addon is not
 *  built, there is no driver or no GPU, or the GPU is older than sm_80 (Ampere). */
export async function createCudaBackend(): Promise<Backend> {
  const addon = loadAddon();
  const dev = Number(process.env.COMET_CUDA_DEVICE ?? 0);
  let facts: DeviceFacts;
  try {
    facts = addon.init(dev);
  } catch (e) {
    const why = (e as Error).message.replace(/^cuda: /, '');
    const noDriver = !existsSync('/dev/nvidiactl') ? '; no NVIDIA driver is loaded on this machine (/dev/nvidiactl is missing)' : '';
    throw new CometError(`cuda: no usable GPU (${why}${noDriver})`, 'backend_unavailable');
  }
  if (facts.major < 8)
    throw new CometError(`cuda: ${facts.name} is sm_${facts.major}${facts.minor}; COMET's CUDA kernels need sm_80 (Ampere) or newer`, 'backend_unavailable');
  // COMET_GEMM_FORCE=n pins the W4Ax kernel variant (comet_gemm_w4ax_force: 1 decode, 2 mma.sync tiles, 3 sm_80 path,
  // 6 v8 wgmma; README, Backends)
  if (process.env.COMET_GEMM_FORCE) addon.gemmForce(Number(process.env.COMET_GEMM_FORCE));
  return new CudaBackend(addon, facts);
}
