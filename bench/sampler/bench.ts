// The host sampler (src/engine/sampler.ts) on one logits row of a LLaMA-3 vocabulary (128,256), Gaussian logits
// (σ = 2.5): milliseconds per draw for the three ways a request samples. Usage: npx tsx bench/sampler/bench.ts
// [path of a sampler module to compare, e.g. an older one from git show] (prints one JSON line per case).
import { Rng, sample, type SamplingParams } from '../../src/engine/sampler.ts';

const n = 128256, x = new Float32Array(n);
let s = 1;
const r = () => ((s = (s * 1103515245 + 12345) % 2147483648), s / 2147483648);
for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()) * 2.5;
const other = process.argv[2] ? ((await import(process.argv[2])) as { sample: typeof sample; Rng: typeof Rng }) : undefined;
const cases: SamplingParams[] = [{ temperature: 0.8, topP: 0.9, topK: 0 }, { temperature: 1, topP: 1, topK: 0 }, { temperature: 0.8, topP: 0.9, topK: 40 }];
type Sampler = { sample: typeof sample; Rng: typeof Rng };
const samplers: Array<[string, Sampler]> = [['current', { sample, Rng }], ...(other ? [['other', other] as [string, Sampler]] : [])];
for (const [name, m] of samplers)
  for (const p of cases) {
    const time = () => {
      const rng = new m.Rng(3), t = performance.now();
      let ids = 0;
      for (let i = 0; i < 20; i++) ids += m.sample(x, p, rng);
      return { ms: (performance.now() - t) / 20, ids };
    };
    time(); // warm-up (JIT)
    const { ms, ids } = time();
    console.log(JSON.stringify({ sampler: name, ...p, vocab: n, msPerDraw: +ms.toFixed(2), idSum: ids }));
  }
