// The .comet writer (layout: comet.ts' header comment, DESIGN §3.6), streaming: the quantizer declares every
// tensor up front (the config gives the float ones, the plan each linear's K, Kp, B, K8 and whether it has a
// gather permutation), then hands over each weight as it is made, which goes straight to disk (st-writer.ts).
// Host memory holds one weight at a time, never the model. The header is reserved at open for the largest
// metadata the file can have (checksums are 16 hex digits, a weight error at most 24 characters of JSON), so a
// whole-model write and a layer-by-layer one of the same weights give the same bytes.
import { f16BitsArray } from '../../simulator/f16.ts';
import type { HostWeight } from '../../backends/backend.ts';
import { CometError } from '../errors.ts';
import { type LlamaConfig, weightNames, weightShape } from '../model/config.ts';
import { COMET_FORMAT_VERSION } from './formats/comet.ts';
import { type StEntry, StreamingSafetensors, stHeader } from './st-writer.ts';

/** How one linear is stored: its activation spec's sizes, and whether it has a gather permutation. */
export interface LinearLayout {
  K: number;
  Kp: number;
  B: number;
  K8: number;
  perm: boolean;
}

export interface CometHeader {
  config: LlamaConfig;
  linears: Map<string, LinearLayout>; // every quantized weight (the rest of weightNames is float)
  quant: { kv: 'f32' | 'kv4'; kvGroup: number }; // the quantizer's record (src/quant QuantMeta), written as JSON
  tokenizer: { main: string; files: Array<{ name: string; bytes: Uint8Array }> };
  weightError: boolean; // whether finish() gets a relative error for every linear
  f16?: readonly string[]; // float weights stored as F16 (the classifier, the embedding: QuantizeOptions.head)
}

const WIDEST_NUMBER = -2.2250738585072014e-308; // 24 characters of JSON: no finite double is longer

export class CometWriter {
  private readonly st: StreamingSafetensors;
  private readonly fixed: Record<string, string>;
  private readonly h: CometHeader;

  constructor(readonly path: string, header: CometHeader) {
    const h = (this.h = { ...header, linears: new Map(weightNames(header.config).filter((n) => header.linears.has(n)).map((n) => [n, header.linears.get(n)!])) });
    if (h.linears.size !== header.linears.size) throw new CometError(`${path}: quantized weights [${[...header.linears.keys()].filter((n) => !h.linears.has(n))}] are not weights of this model`);
    const entries: StEntry[] = [];
    for (const name of weightNames(h.config)) {
      const L = h.linears.get(name);
      if (!L) { entries.push({ name, dtype: h.f16?.includes(name) ? 'F16' : 'F32', shape: weightShape(h.config, name) }); continue; }
      const N = weightShape(h.config, name)[0];
      entries.push({ name: `${name}.codes`, dtype: 'U8', shape: [N, L.Kp / 2] }, { name: `${name}.scales`, dtype: 'F16', shape: [N, L.Kp / L.B] });
      if (L.perm) entries.push({ name: `${name}.perm`, dtype: 'I32', shape: [L.K] });
    }
    for (const f of h.tokenizer.files) entries.push({ name: `tokenizer/${f.name}`, dtype: 'U8', shape: [f.bytes.length] });
    const linears = Object.fromEntries([...this.h.linears].map(([n, { K, Kp, B, K8 }]) => [n, { K, Kp, B, K8 }]));
    this.fixed = {
      format: 'comet', version: COMET_FORMAT_VERSION, config: JSON.stringify(h.config), quant: JSON.stringify(h.quant),
      linears: JSON.stringify(linears), tokenizer: JSON.stringify({ main: h.tokenizer.main, files: h.tokenizer.files.map((f) => f.name) }),
    };
    const widest = this.metadata(
      Object.fromEntries(h.weightError ? [...h.linears.keys()].map((n) => [n, WIDEST_NUMBER]) : []),
      Object.fromEntries(entries.map((e) => [e.name, '0'.repeat(16)])),
    );
    this.st = new StreamingSafetensors(path, entries, stHeader(path, entries, widest).json.length);
    try {
      for (const f of h.tokenizer.files) this.st.write(`tokenizer/${f.name}`, f.bytes);
    } catch (e) {
      this.st.abort();
      throw e;
    }
  }

  private metadata(weightError: Record<string, number>, checksums: Record<string, string>): Record<string, string> {
    return { ...this.fixed, weight_error: JSON.stringify(weightError), checksums: JSON.stringify(checksums) };
  }

  get progress(): { tensors: number; totalTensors: number; bytes: number; totalBytes: number } {
    return { tensors: this.st.tensorsDone, totalTensors: this.st.entries.length, bytes: this.st.bytesWritten, totalBytes: this.st.totalBytes };
  }

  /** One weight, whole (a float weight may also come in row chunks through floatRows). */
  put(w: HostWeight): void {
    const L = this.h.linears.get(w.name);
    if (w.kind !== 'w4') {
      if (L) throw new CometError(`${this.path}: '${w.name}' was declared quantized, got a float weight`);
      const f16 = !!this.h.f16?.includes(w.name);
      if (w.kind === 'f16' && !f16) throw new CometError(`${this.path}: '${w.name}' is f16 but was declared F32`);
      this.st.write(w.name, f16 && w.kind === 'f32' ? this.toF16(w.name, w.data) : w.data);
      return;
    }
    const { K, Kp, B, K8, perm } = w.act;
    if (!L || L.K !== K || L.Kp !== Kp || L.B !== B || L.K8 !== K8 || L.perm !== !!perm)
      throw new CometError(`${this.path}: '${w.name}' has K ${K}, Kp ${Kp}, B ${B}, K8 ${K8}, ${perm ? 'a' : 'no'} perm; declared ${L ? `K ${L.K}, Kp ${L.Kp}, B ${L.B}, K8 ${L.K8}, ${L.perm ? 'a' : 'no'} perm` : 'float'}`);
    this.st.write(`${w.name}.codes`, w.codes);
    this.st.write(`${w.name}.scales`, w.scales);
    if (perm) this.st.write(`${w.name}.perm`, perm);
  }

  /** The next rows of a float weight (f32), for tensors too large to hold whole (the embedding). */
  floatRows(name: string, rows: Float32Array): void {
    if (this.h.linears.has(name)) throw new CometError(`${this.path}: '${name}' was declared quantized`);
    this.st.write(name, this.h.f16?.includes(name) ? this.toF16(name, rows) : rows);
  }

  /** f32 values of a weight declared F16, rounded (nearest even); one past f16's range is an error, not an inf */
  private toF16(name: string, x: Float32Array): Uint16Array {
    const bad = x.findIndex((v) => !(Math.abs(v) <= 65504));
    if (bad >= 0) throw new CometError(`${this.path}: '${name}' holds ${x[bad]}, outside f16's range (store it as f32)`);
    return f16BitsArray(x);
  }

  finish(weightError: Record<string, number>): void {
    const names = Object.keys(weightError).sort().join(), want = this.h.weightError ? [...this.h.linears.keys()].sort().join() : '';
    if (names !== want) {
      this.st.abort();
      throw new CometError(`${this.path}: weight errors for [${names}], expected [${want}]`);
    }
    // JSON key order is the declaration order (not the order things were handed over): same metadata, same bytes
    const errs = Object.fromEntries(Object.keys(weightError).length ? [...this.h.linears.keys()].map((n) => [n, weightError[n]]) : []);
    this.st.finish(this.metadata(errs, Object.fromEntries(this.st.entries.map((e) => [e.name, this.st.digests.get(e.name)!.slice(0, 16)]))));
  }

  abort(): void {
    this.st.abort();
  }
}
