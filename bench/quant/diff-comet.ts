// Where two .comet files of the same model differ, tensor by tensor: for W4 linears the share of equal int4 codes
// and f16 scales and whether the activation specs (K8, permutation) agree; for float tensors the largest
// absolute difference. Used to tell a quantizer's real divergence (different INT8 blocks or channel order) from
// rounding noise (a few codes) when two backends quantize the same checkpoint.
//   npx tsx bench/quant/diff-comet.ts a.comet b.comet [--json]
import { loadComet } from '../../src/loaders/comet.ts';
import type { HostWeight } from '../../backends/backend.ts';

const [pa, pb] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (!pa || !pb) throw new Error('usage: diff-comet.ts a.comet b.comet [--json]');
const [a, b] = [await loadComet(pa), await loadComet(pb)];

interface Row { name: string; kind: string; equalCodes?: number; equalScales?: number; specEqual?: boolean; maxAbs?: number }
const rows: Row[] = [];
for (const [name, wa] of a.weights) {
  const wb = b.weights.get(name);
  if (!wb) { rows.push({ name, kind: `only in ${pa}` }); continue; }
  rows.push(compare(name, wa, wb));
}

function compare(name: string, wa: HostWeight, wb: HostWeight): Row {
  if (wa.kind === 'w4' && wb.kind === 'w4') {
    let codes = 0;
    const n = wa.codes.length * 2;
    for (let i = 0; i < wa.codes.length; i++) codes += +((wa.codes[i] & 15) === (wb.codes[i] & 15)) + +((wa.codes[i] >> 4) === (wb.codes[i] >> 4));
    let scales = 0;
    for (let i = 0; i < wa.scales.length; i++) scales += +(wa.scales[i] === wb.scales[i]);
    const sa = wa.act, sb = wb.act;
    const specEqual = sa.K8 === sb.K8 && sa.Kp === sb.Kp && String(sa.perm ?? '') === String(sb.perm ?? '');
    return { name, kind: 'w4', equalCodes: codes / n, equalScales: scales / wa.scales.length, specEqual };
  }
  if ('data' in wa && 'data' in wb) {
    let m = 0;
    for (let i = 0; i < wa.data.length; i++) m = Math.max(m, Math.abs(wa.data[i] - wb.data[i]));
    return { name, kind: wa.kind, maxAbs: m };
  }
  return { name, kind: `${wa.kind} vs ${wb.kind}` };
}

if (process.argv.includes('--json')) console.log(JSON.stringify(rows));
else {
  console.log('| tensor | kind | equal codes | equal scales | same K8 and order | max abs diff |\n| --- | --- | --- | --- | --- | --- |');
  const pct = (x?: number) => (x === undefined ? '' : `${(100 * x).toFixed(3)}%`);
  for (const r of rows) console.log(`| ${r.name} | ${r.kind} | ${pct(r.equalCodes)} | ${pct(r.equalScales)} | ${r.specEqual ?? ''} | ${r.maxAbs ?? ''} |`);
}
