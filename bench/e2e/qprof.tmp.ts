import { syntheticQuantizedModel, SHAPES } from './e2e.ts';
const t0 = performance.now();
const r = syntheticQuantizedModel(SHAPES['llama3-8b'], { block: 128, int8Fraction: 0.1 }, (s) => console.error(s));
console.error('total', ((performance.now() - t0) / 1000).toFixed(1), r.weights.size);
