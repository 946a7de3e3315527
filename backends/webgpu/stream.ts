// Command recording for the WebGPU backend (webgpu.ts): a step's commands (compute passes of dispatches, clears,
// copies) and its upload arena, encoded and submitted once (eager) or kept and encoded again on every replay of a
// captured step. No GPU objects are made here except bind groups and the arena's buffers.
import type { StepInputs } from '../backend.ts';
import { CometError } from '../errors.ts';

export const up4 = (n: number) => Math.ceil(n / 4) * 4;
export const up256 = (n: number) => Math.ceil(n / 256) * 256;

export type Binding = 'uniform' | 'read' | 'write';
export interface Pipe { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout; name: string }
export type Res = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

/** One recorded command of a step. */
export type Cmd =
  | { k: 'pass'; ts?: GPUComputePassTimestampWrites } // begin a compute pass (ends the one open)
  | { k: 'd'; pipe: GPUComputePipeline; bg: GPUBindGroup; x: number; y: number; z: number; name: string }
  | { k: 'clear'; buf: GPUBuffer; off: number; size: number }
  | { k: 'copy'; src: GPUBuffer; so: number; dst: GPUBuffer; dof: number; size: number };

/** Host-time profiling: adds the time since the last lap to a phase (WebGPUBackend.profile). */
export type Lap = (phase: string) => void;

/** Step data an upload holds that a replay rewrites (captureStep): made from the replay's StepInputs. */
export type Remake = (inp: StepInputs) => ArrayBufferView;

/** Command recording for one step: a list of commands (compute passes of dispatches, clears, copies) and
 *  the upload arena (segments of 1 MiB, each written to its GPU buffer once per submit). The eager path
 *  records a step, then encodes and submits it once; a captured step (captureStep) keeps its list and its
 *  arena and encodes them again on every replay, with the uploads that hold step inputs rewritten. */
export class Stream {
  private cmds: Cmd[] = [];
  private passOpen = false;
  /** bind groups by (layout, buffers, ranges): a decode step binds the same pooled buffers as the last one */
  private groups = new Map<string, GPUBindGroup>();
  private ids = new WeakMap<object, number>();
  private nextId = 1;
  /** timestamps of the next compute pass (benchmarks) */
  timestamps?: GPUComputePassTimestampWrites;
  private segs: Array<{ buf: GPUBuffer; host: Uint8Array; used: number }> = [];
  private cur = 0;
  private remakes: Array<{ seg: number; offset: number; bytes: number; make: Remake }> = [];
  constructor(readonly dev: GPUDevice) {}
  /** Copy host words into the upload arena; returns a binding of them (valid for this submit). `make`
   *  regenerates them from a replay's inputs (captured steps). */
  upload(words: ArrayBufferView, make?: Remake): { buffer: GPUBuffer; offset: number; size: number } {
    const size = Math.max(16, up4(words.byteLength));
    let seg = this.segs[this.cur];
    while (seg && seg.used + size > seg.host.byteLength) seg = this.segs[++this.cur];
    if (!seg) {
      const cap = Math.max(1 << 20, up256(size));
      seg = { buf: this.dev.createBuffer({ label: 'upload', size: cap, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST }), host: new Uint8Array(cap), used: 0 };
      this.segs.push(seg);
      this.cur = this.segs.length - 1;
    }
    const offset = seg.used;
    seg.host.set(new Uint8Array(words.buffer, words.byteOffset, words.byteLength), offset);
    seg.used = up256(offset + size);
    if (make) this.remakes.push({ seg: this.cur, offset, bytes: words.byteLength, make });
    return { buffer: seg.buf, offset, size };
  }
  /** Uploads made once per submit (uploadOnce): by kind, the words that define each and its binding. */
  private shared = new Map<string, Array<{ sig: ArrayLike<number>; res: { buffer: GPUBuffer; offset: number; size: number } }>>();
  /** `words()` uploaded once per submit for each `sig` of a kind `key` (a step's layout, its RoPE table): the
   *  16 layers of a decode step bind one copy, and a replay remakes it once. `sig` holds what defines the words
   *  (compared by value: a caller may reuse its arrays across steps). */
  uploadOnce(key: string, sig: ArrayLike<number>, words: () => ArrayBufferView, make?: Remake): { buffer: GPUBuffer; offset: number; size: number } {
    const list = this.shared.get(key) ?? this.shared.set(key, []).get(key)!;
    const hit = list.find((e) => e.sig.length === sig.length && Array.prototype.every.call(sig, (v: number, i: number) => v === e.sig[i]));
    if (hit) return hit.res;
    const res = this.upload(words(), make);
    list.push({ sig: Array.from(sig), res });
    return res;
  }
  /** Checks a replay's inputs must pass that their byte sizes do not show (a grid sized at capture: attention's
   *  chunks), run by remake before anything is rewritten. */
  private guards: Array<(inp: StepInputs) => void> = [];
  guard(check: (inp: StepInputs) => void) { this.guards.push(check); }
  /** Rewrite the uploads that hold step inputs for `inp` (a replay); its shapes must be the captured ones. */
  remake(inp: StepInputs) {
    for (const g of this.guards) g(inp);
    for (const r of this.remakes) {
      const v = r.make(inp);
      if (v.byteLength !== r.bytes) throw new CometError(`webgpu: replay inputs have another shape than the captured step (${v.byteLength} bytes where ${r.bytes} were captured)`);
      this.segs[r.seg].host.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), r.offset);
    }
  }
  private id(o: object): number {
    let i = this.ids.get(o);
    if (!i) this.ids.set(o, (i = this.nextId++));
    return i;
  }
  dispatch(p: Pipe, res: Res[], x: number, y = 1, z = 1) {
    let key = String(this.id(p.layout));
    for (const r of res) key += 'buffer' in r ? `|${this.id(r.buffer)}:${r.offset}:${r.size}` : `|${this.id(r)}`;
    let bg = this.groups.get(key);
    if (!bg) {
      if (this.groups.size > 20000) this.groups.clear();
      const entries = res.map((r, i) => ({ binding: i, resource: 'buffer' in r ? r : { buffer: r } }));
      this.groups.set(key, (bg = this.dev.createBindGroup({ layout: p.layout, entries: entries as GPUBindGroupEntry[] })));
    }
    if (!this.passOpen) {
      this.cmds.push({ k: 'pass', ts: this.timestamps });
      this.timestamps = undefined;
      this.passOpen = true;
    }
    this.cmds.push({ k: 'd', pipe: p.pipeline, bg, x, y, z, name: p.name });
  }
  clear(buf: GPUBuffer, off: number, size: number) {
    this.passOpen = false;
    this.cmds.push({ k: 'clear', buf, off, size });
  }
  copy(src: GPUBuffer, so: number, dst: GPUBuffer, dof: number, size: number) {
    this.passOpen = false;
    this.cmds.push({ k: 'copy', src, so, dst, dof, size });
  }
  get dispatches() { return this.cmds.filter((c) => c.k === 'd').length; }
  /** What is recorded: dispatches by pipeline name, compute passes, clears and copies (tests hold a decode step's
   *  dispatches per layer to a count: test/webgpu-dispatches.test.ts). */
  census(): { dispatches: Record<string, number>; passes: number; clears: number; copies: number } {
    const dispatches: Record<string, number> = {};
    let passes = 0, clears = 0, copies = 0;
    for (const c of this.cmds) {
      if (c.k === 'd') dispatches[c.name] = (dispatches[c.name] ?? 0) + 1;
      else if (c.k === 'pass') passes++;
      else if (c.k === 'clear') clears++;
      else copies++;
    }
    return { dispatches, passes, clears, copies };
  }
  /** The recorded commands into `enc` (setPipeline only where the pipeline changes). Profiling (StepProfile):
   *  `span` gets the GPU timestamps of the first pass's start (0) and the last pass's end (1); `each` puts
   *  every dispatch in a pass of its own timed into queries 2i, 2i + 1, and returns the pipelines' names. */
  encode(enc: GPUCommandEncoder, span?: GPUQuerySet, each?: GPUQuerySet): string[] {
    let pass: GPUComputePassEncoder | undefined, pipe: GPUComputePipeline | undefined;
    const names: string[] = [];
    const passes = this.cmds.filter((c) => c.k === 'pass').length;
    let np = 0;
    for (const c of this.cmds) {
      if (c.k === 'd' && each) {
        pass?.end();
        const i = names.push(c.name) - 1;
        pass = enc.beginComputePass({ timestampWrites: { querySet: each, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
        pass.setPipeline(c.pipe);
        pass.setBindGroup(0, c.bg);
        pass.dispatchWorkgroups(c.x, c.y, c.z);
        pass.end();
        pass = undefined;
        continue;
      }
      if (c.k === 'd') {
        if (c.pipe !== pipe) pass!.setPipeline((pipe = c.pipe));
        pass!.setBindGroup(0, c.bg);
        pass!.dispatchWorkgroups(c.x, c.y, c.z);
        continue;
      }
      pass?.end();
      pass = undefined;
      pipe = undefined;
      if (c.k === 'pass') {
        np++;
        if (each) continue;
        const ts: GPUComputePassTimestampWrites | undefined = span && (np === 1 || np === passes)
          ? { querySet: span, ...(np === 1 ? { beginningOfPassWriteIndex: 0 } : {}), ...(np === passes ? { endOfPassWriteIndex: 1 } : {}) }
          : c.ts;
        pass = enc.beginComputePass(ts ? { timestampWrites: ts } : undefined);
      } else if (c.k === 'clear') enc.clearBuffer(c.buf, c.off, c.size);
      else enc.copyBufferToBuffer(c.src, c.so, c.dst, c.dof, c.size);
    }
    pass?.end();
    return names;
  }
  /** Write the upload arena to its buffers (before a submit that uses them). */
  writeUploads() {
    for (const s of this.segs) if (s.used) this.dev.queue.writeBuffer(s.buf, 0, s.host, 0, s.used);
  }
  /** Write the upload arena and submit everything recorded; the stream starts empty again. */
  flush(lap?: Lap) {
    if (this.cmds.length === 0 && this.segs.every((s) => !s.used)) return;
    this.writeUploads();
    lap?.('upload');
    const enc = this.dev.createCommandEncoder();
    this.encode(enc);
    const cb = enc.finish();
    lap?.('encode');
    this.dev.queue.submit([cb]);
    lap?.('submit');
    this.cmds = [];
    this.passOpen = false;
    this.remakes = [];
    this.shared.clear();
    for (const s of this.segs) s.used = 0;
    this.cur = 0;
  }
  destroy() {
    for (const s of this.segs) s.buf.destroy();
    this.segs = [];
    this.groups.clear();
  }
}
