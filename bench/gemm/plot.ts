// bench/results/gemm-<date>-<device>.json -> .svg: speed-up of the W4Ax GEMM over cuBLAS FP16 and FP8 by batch M.
//   npx tsx bench/gemm/plot.ts bench/results/gemm-2026-11-24-h100-80gb-hbm3.json
import { readFileSync, writeFileSync } from 'node:fs';
import type * as vl from 'vega-lite';
import { renderSvg } from '../../src/cli/plot.ts';

interface Row { model: string; layer: string; K: number; N: number; M: number; int8_frac: number; speedup_fp16: number; speedup_fp8: number }

const file = process.argv[2];
if (!file) throw new Error('usage: plot.ts <gemm-results.json>');
const { meta, rows } = JSON.parse(readFileSync(file, 'utf8')) as { meta: { device: string; date: string }; rows: Row[] };
const values = rows.flatMap((r) => [
  { shape: `${r.model} ${r.layer} ${r.K}x${r.N}`, M: r.M, int8: `${Math.round(r.int8_frac * 100)}% INT8 blocks`, vs: 'vs cuBLAS FP16', speedup: r.speedup_fp16 },
  { shape: `${r.model} ${r.layer} ${r.K}x${r.N}`, M: r.M, int8: `${Math.round(r.int8_frac * 100)}% INT8 blocks`, vs: 'vs cuBLAS FP8', speedup: r.speedup_fp8 },
]);
const spec: vl.TopLevelSpec = {
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title: `W4Ax GEMM speed-up, ${meta.device}, ${meta.date}`,
  data: { values },
  facet: { row: { field: 'vs', type: 'nominal', title: null }, column: { field: 'int8', type: 'nominal', title: null } },
  spec: {
    width: 360,
    height: 220,
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'M', type: 'quantitative', scale: { type: 'log', base: 2 }, title: 'M (tokens)' },
          y: { field: 'speedup', type: 'quantitative', scale: { type: 'log' }, title: 'speed-up (×)' },
          color: { field: 'shape', type: 'nominal', title: 'K×N' },
        },
      },
      { mark: { type: 'rule', strokeDash: [4, 4] }, encoding: { y: { datum: 1 } } },
    ],
  },
};
const out = file.replace(/\.json$/, '.svg');
writeFileSync(out, await renderSvg(spec));
console.log('wrote', out);
