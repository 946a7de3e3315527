// `comet info <model>`: config, parameter count, dtypes and bytes, and the quantization of each linear.
import { loadModel } from '../loaders/index.ts';
import { hostWeightBytes, type HostWeight } from '../../backends/backend.ts';

const paramsOf = (w: HostWeight) => (w.kind === 'w4' ? w.N * w.act.K : w.data.length);
const human = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

export async function info(path: string, o: { json?: boolean }): Promise<void> {
  const m = await loadModel(path);
  const ws = [...m.weights.values()];
  const byDtype: Record<string, { tensors: number; params: number; bytes: number }> = {};
  for (const w of ws) {
    const d = (byDtype[w.kind] ??= { tensors: 0, params: 0, bytes: 0 });
    d.tensors++; d.params += paramsOf(w); d.bytes += hostWeightBytes(w);
  }
  const quant = ws.filter((w) => w.kind === 'w4').map((w) => {
    const q = w as Extract<HostWeight, { kind: 'w4' }>;
    return { name: q.name, N: q.N, K: q.act.K, Kp: q.act.Kp, B: q.act.B, K8: q.act.K8, int8Fraction: q.act.K8 / q.act.Kp, weightError: (m.meta?.weightError as Record<string, number> | undefined)?.[q.name] };
  });
  const params = ws.reduce((a, w) => a + paramsOf(w), 0);
  const bytes = ws.reduce((a, w) => a + hostWeightBytes(w), 0);
  const out = { path, format: m.format, config: m.config, params, bytes, dtypes: byDtype, quantization: quant, meta: m.meta };
  if (o.json) return console.log(JSON.stringify(out, null, 1));
  const c = m.config;
  console.log(`${path}  (${m.format})`);
  console.log(`  dim ${c.dim}, hidden ${c.hiddenDim}, layers ${c.nLayers}, heads ${c.nHeads}, kv heads ${c.nKvHeads}, head_dim ${c.headDim}, vocab ${c.vocabSize}, context ${c.seqLen}`);
  console.log(`  rope theta ${c.ropeTheta}, norm eps ${c.normEps}, ${c.tiedEmbeddings ? 'tied' : 'separate'} classifier, bos ${c.bos}, eos ${c.eos.join(',')}`);
  console.log(`  ${params.toLocaleString('en')} parameters, ${human(bytes)} in memory`);
  const src = m.meta?.dtypes as Record<string, number> | undefined;
  if (src) console.log(`  stored as: ${Object.entries(src).map(([k, n]) => `${k} (${n} tensors)`).join(', ')}`);
  for (const [k, d] of Object.entries(byDtype)) console.log(`  in memory ${k}: ${d.tensors} tensors, ${d.params.toLocaleString('en')} params, ${human(d.bytes)}`);
  const head = m.weights.get(c.tiedEmbeddings ? 'tok_embed' : 'output');
  if (head) console.log(`  classifier ${head.kind}${c.tiedEmbeddings ? ' (tied: the embedding)' : `, embedding ${m.weights.get('tok_embed')?.kind}`}`);
  if (quant.length) {
    console.log('  quantization (FMPQ, W4Ax):');
    console.log('    linear             N      K     B   K8/Kp         int8   weight err');
    for (const q of quant)
      console.log(`    ${q.name.padEnd(16)} ${String(q.N).padStart(6)} ${String(q.K).padStart(6)} ${String(q.B).padStart(4)}   ${`${q.K8}/${q.Kp}`.padEnd(12)} ${(q.int8Fraction * 100).toFixed(1).padStart(5)}%   ${q.weightError?.toExponential(2) ?? '-'}`);
  }
}
