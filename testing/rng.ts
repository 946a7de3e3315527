// Seeded random inputs for tests and benchmarks (mulberry32: small, fast, reproducible): the one PRNG of
// testing/ (synthetic checkpoints, fuzz cases, chaos requests, op-test inputs).
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** standard normal (Box-Muller) from a uniform source */
export const normal = (r: () => number): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());

/** n normals with a few heavy outlier channels (like LLM activations), as f32 */
export function activations(r: () => number, M: number, K: number, outliers: number[] = [], big = 30): Float32Array {
  const x = new Float32Array(M * K);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) x[m * K + k] = normal(r) * (outliers.includes(k) ? big : 1);
  return x;
}

/** a random permutation of 0..n-1 */
export function permutation(r: () => number, n: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [p[i], p[j]] = [p[j], p[i]]; }
  return p;
}

/** n normal samples × scale, seeded */
export const randn = (seed: number, n: number, scale = 1): Float32Array => {
  const r = rng(seed), x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = normal(r) * scale;
  return x;
};

/** ‖a − b‖ / ‖b‖ (Infinity when a has a non-finite value): the tier-3 measure (DESIGN §3.7) */
export function relErr(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`relErr: lengths ${a.length} and ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / (den || 1));
}
