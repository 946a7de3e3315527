// The ops the browser test runs in both worlds (headless Chromium's navigator.gpu and Node's Dawn) on the same
// seeded inputs: W4Ax GEMM (decode and prefill sizes), quantize_act (with a permutation and both
// precisions), KV4 append and attention over pages. Results are returned as bytes, compared exactly.
import type { Backend } from '../../backends/backend.ts';
import { actSpec } from '../../simulator/act.ts';
import { quantizeW4 } from '../../simulator/w4.ts';
import { activations, normal, permutation, rng } from '../../testing/rng.ts';

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const f32hex = (f: Float32Array) => hex(new Uint8Array(f.buffer, f.byteOffset, f.byteLength));

export async function runCases(be: Backend): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [M, N, K, B, K8] of [[1, 40, 300, 128, 128], [3, 33, 256, 32, 64], [20, 70, 200, 64, 64]]) {
    const r = rng(M * 100 + N), spec = actSpec(K, B, K8, permutation(r, K));
    const x = be.fromHost(activations(r, M, K, [2, K - 3], 30), [M, K]);
    const w = quantizeW4(activations(r, N, K).map((v) => v * 0.05), N, spec, { clipSearch: false });
    const q = be.quantizeAct(x, spec);
    out[`quantize_act M=${M} K=${K} B=${B} K8=${K8}`] = hex(await be.readRaw!(q));
    out[`gemm_w4ax M=${M} N=${N} K=${K}`] = f32hex(await be.read(be.matmul(q, be.uploadWeight({ kind: 'w4', name: 'w', ...w }))));
    be.endStep();
  }
  const r = rng(7), nKv = 2, nH = 4, hd = 32, T = 11;
  const cache = be.createKVCache({ nLayers: 1, nKvHeads: nKv, headDim: hd, pageSize: 4, numPages: 4, dtype: 'kv4', group: 16 });
  const layout = { pos: Int32Array.from({ length: T }, (_, i) => i), seq: new Int32Array(T), blockTables: [Int32Array.of(2, 0, 3, 1)] };
  const f = (n: number, s: number) => Float32Array.from({ length: n }, () => normal(r) * s);
  be.kvAppend(cache, 0, be.fromHost(f(T * nKv * hd, 2), [T, nKv * hd]), be.fromHost(f(T * nKv * hd, 1), [T, nKv * hd]), layout);
  out['attention kv4'] = f32hex(await be.read(be.attention(be.fromHost(f(T * nH * hd, 1), [T, nH * hd]), cache, 0, layout, nH)));
  be.endStep();
  const layer = (cache as unknown as { readLayer?: (l: number) => Promise<Uint8Array> }).readLayer;
  if (layer) out['kv4 cache bytes'] = hex(await layer.call(cache, 0));
  return out;
}
