// Float reference kernels (f32 storage, f64 accumulation). These define the float path that every backend
// matches within tier-3 tolerance (DESIGN §3.7) and that reproduces llama2.c's greedy tokens.
// Layouts: activations row-major [T][C]; weights [N][K] (PyTorch [out, in]).
import { f16RoundArray } from '../f16.ts';

/** y[t][n] = Σ_k x[t][k] · w[n][k].  x [T][K], w [N][K] -> [T][N].
 *  Four weight rows at a time share each load of x (and four tokens each load of w in prefill). */
export function matmul(x: Float32Array, T: number, K: number, w: Float32Array, N: number, out = new Float32Array(T * N)): Float32Array {
  for (let t = 0; t < T; t += 4) {
    const rows = Math.min(4, T - t);
    if (rows === 4) matmul4x1(x, t, K, w, N, out);
    else for (let r = 0; r < rows; r++) matvec(x, (t + r) * K, K, w, N, out, (t + r) * N);
  }
  return out;
}

/** The product with an f16 weight (a .comet's classifier): x rounded to f16 (nearest even), then matmul's f64
 *  sums of the exact products. An FP16 model's classifier reads f16 activations too; the CUDA kernel then needs one
 *  tensor-core pass (f16 x f16 -> f32) instead of two (x split into f16 hi + lo), half the work from batch 64 up.
 *  |x| >= 65520 becomes ±Inf, as it did under the hi + lo split. */
export function matmulF16w(x: Float32Array, T: number, K: number, w: Float32Array, N: number, out = new Float32Array(T * N)): Float32Array {
  return matmul(f16RoundArray(x), T, K, w, N, out);
}

// one token against four weight rows: each x element loaded once, used four times (decode)
function matvec(x: Float32Array, xo: number, K: number, w: Float32Array, N: number, out: Float32Array, oo: number): void {
  let n = 0;
  for (; n + 3 < N; n += 4) {
    const o0 = n * K, o1 = o0 + K, o2 = o1 + K, o3 = o2 + K;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    let k = 0;
    for (; k + 1 < K; k += 2) {
      const x0 = x[xo + k], x1 = x[xo + k + 1];
      a0 += w[o0 + k] * x0; b0 += w[o0 + k + 1] * x1;
      a1 += w[o1 + k] * x0; b1 += w[o1 + k + 1] * x1;
      a2 += w[o2 + k] * x0; b2 += w[o2 + k + 1] * x1;
      a3 += w[o3 + k] * x0; b3 += w[o3 + k + 1] * x1;
    }
    if (k < K) {
      const x0 = x[xo + k];
      a0 += w[o0 + k] * x0; a1 += w[o1 + k] * x0; a2 += w[o2 + k] * x0; a3 += w[o3 + k] * x0;
    }
    out[oo + n] = a0 + b0; out[oo + n + 1] = a1 + b1; out[oo + n + 2] = a2 + b2; out[oo + n + 3] = a3 + b3;
  }
  // the last N % 4 rows in the same order (even k, odd k, then their sum): every row of every token sums
  // alike, so a token's result does not depend on how tokens or rows are grouped (batching invariance)
  for (; n < N; n++) {
    const o0 = n * K;
    let a = 0, b = 0, k = 0;
    for (; k + 1 < K; k += 2) { a += w[o0 + k] * x[xo + k]; b += w[o0 + k + 1] * x[xo + k + 1]; }
    if (k < K) a += w[o0 + k] * x[xo + k];
    out[oo + n] = a + b;
  }
}

// four tokens against one weight row: each w element loaded once, used four times
function matmul4x1(x: Float32Array, t: number, K: number, w: Float32Array, N: number, out: Float32Array): void {
  const x0 = t * K, x1 = x0 + K, x2 = x1 + K, x3 = x2 + K;
  for (let n = 0; n < N; n++) {
    const wo = n * K;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    let k = 0;
    for (; k + 1 < K; k += 2) {
      const w0 = w[wo + k], w1 = w[wo + k + 1];
      a0 += w0 * x[x0 + k]; b0 += w1 * x[x0 + k + 1];
      a1 += w0 * x[x1 + k]; b1 += w1 * x[x1 + k + 1];
      a2 += w0 * x[x2 + k]; b2 += w1 * x[x2 + k + 1];
      a3 += w0 * x[x3 + k]; b3 += w1 * x[x3 + k + 1];
    }
    if (k < K) {
      const w0 = w[wo + k];
      a0 += w0 * x[x0 + k]; a1 += w0 * x[x1 + k]; a2 += w0 * x[x2 + k]; a3 += w0 * x[x3 + k];
    }
    out[t * N + n] = a0 + b0;
    out[(t + 1) * N + n] = a1 + b1;
    out[(t + 2) * N + n] = a2 + b2;
    out[(t + 3) * N + n] = a3 + b3;
  }
}

/** RMSNorm as llama2.c: ss = Σx²/C + eps; y = w · (x / sqrt(ss)).  x [T][C], w [C]. */
export function rmsnorm(x: Float32Array, T: number, C: number, w: Float32Array, eps: number, out = new Float32Array(T * C)): Float32Array {
  for (let t = 0; t < T; t++) {
    const o = t * C;
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let i = 0; i < C; i++) out[o + i] = w[i] * (x[o + i] * inv);
  }
  return out;
}

/** Llama-3.1's RoPE frequency scaling (HF rope_scaling { rope_type: 'llama3', ... }). */
export interface RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** Inverse frequencies of the rotary pairs, f32 as llama2.c computes them: theta^(-2i/headDim); with llama3
 *  scaling (transformers' _compute_llama3_parameters, in f64 then rounded to f32): pairs whose wavelength 2π/f
 *  is below original/highFreqFactor keep f, above original/lowFreqFactor take f/factor, and in between blend
 *  the two by s = (original/wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor). */
export function ropeFreqs(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const f = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) f[i] = 1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim)));
  if (!scaling) return f;
  const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositionEmbeddings: old } = scaling;
  for (let i = 0; i < f.length; i++) {
    const wavelen = (2 * Math.PI) / f[i];
    if (wavelen < old / hi) continue;
    if (wavelen > old / lo) f[i] = f[i] / factor;
    else {
      const s = (old / wavelen - lo) / (hi - lo);
      f[i] = (1 - s) * (f[i] / factor) + s * f[i];
    }
  }
  return f;
}

/** Rotate pairs (2i, 2i+1) of every head of x [T][nHeads*headDim] by angle pos[t]·freq[i] (interleaved RoPE). */
export function rope(x: Float32Array, T: number, nHeads: number, headDim: number, pos: Int32Array, freqs: Float32Array, out = new Float32Array(x.length)): Float32Array {
  const C = nHeads * headDim;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < headDim / 2; i++) {
      const a = Math.fround(pos[t] * freqs[i]);
      const c = Math.fround(Math.cos(a)), s = Math.fround(Math.sin(a));
      for (let h = 0; h < nHeads; h++) {
        const o = t * C + h * headDim + 2 * i;
        const v0 = x[o], v1 = x[o + 1];
        out[o] = v0 * c - v1 * s;
        out[o + 1] = v0 * s + v1 * c;
      }
    }
  }
  return out;
}

export const silu = (g: number): number => g / (1 + Math.exp(-g));

/** silu(g) · u elementwise. */
export function siluMul(g: Float32Array, u: Float32Array, out = new Float32Array(g.length)): Float32Array {
  for (let i = 0; i < g.length; i++) out[i] = silu(g[i]) * u[i];
  return out;
}

export function add(a: Float32Array, b: Float32Array, out = new Float32Array(a.length)): Float32Array {
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}

/** Binary heap of ids: move heap[i] down within heap[0..n) until no child should stand above it (`above(a, b)`: a
 *  belongs nearer the root than b). topk's min-heap and the sampler's nucleus heap. */
export function siftDown(heap: Int32Array, i: number, n: number, above: (a: number, b: number) => boolean): void {
  for (;;) {
    const l = 2 * i + 1, r = l + 1;
    let w = i;
    if (l < n && above(heap[l], heap[w])) w = l;
    if (r < n && above(heap[r], heap[w])) w = r;
    if (w === i) return;
    const t = heap[i]; heap[i] = heap[w]; heap[w] = t; i = w;
  }
}

/** The k largest entries of each row of x [R][C] (1 <= k <= C), ordered by value descending, then index ascending
 *  (-0 equals +0; NaN rows are not defined): values [R][k] and indices [R][k]. The sampler's top-k (src/engine/
 *  sampler.ts) and the device's topk kernels return exactly this list, so a row sampled from a device's top-k is
 *  the row sampled from the whole logits. A min-heap of the k best seen so far: O(C log k). */
export function topk(x: Float32Array, R: number, C: number, k: number): { values: Float32Array; indices: Int32Array } {
  if (!(Number.isInteger(k) && k >= 1 && k <= C)) throw new RangeError(`topk: k = ${k} must be in [1, ${C}]`);
  const values = new Float32Array(R * k), indices = new Int32Array(R * k), heap = new Int32Array(k);
  for (let r = 0; r < R; r++) {
    const o = r * C;
    // worse(a, b): a ranks below b (smaller value, or equal value and larger index); the heap's root is the worst kept
    const worse = (a: number, b: number) => x[o + a] < x[o + b] || (x[o + a] === x[o + b] && a > b);
    const down = (i: number, n: number) => siftDown(heap, i, n, worse);
    for (let c = 0; c < k; c++) heap[c] = c;
    for (let i = (k >> 1) - 1; i >= 0; i--) down(i, k);
    // columns scanned in ascending order: a later equal value never outranks a kept one
    for (let c = k; c < C; c++) if (x[o + c] > x[o + heap[0]]) { heap[0] = c; down(0, k); }
    const kept = Array.from(heap).sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
    for (let j = 0; j < k; j++) { indices[r * k + j] = kept[j]; values[r * k + j] = x[o + kept[j]]; }
  }
  return { values, indices };
}

/** rows of table [V][D] -> [T][D] */
export function embed(table: Float32Array, D: number, tokens: Int32Array): Float32Array {
  const out = new Float32Array(tokens.length * D);
  for (let t = 0; t < tokens.length; t++) out.set(table.subarray(tokens[t] * D, (tokens[t] + 1) * D), t * D);
  return out;
}

/** first index of the maximum of each row of x [R][C] */
export function argmax(x: Float32Array, R: number, C: number): Int32Array {
  const out = new Int32Array(R);
  for (let r = 0; r < R; r++) {
    let best = 0, bv = x[r * C];
    for (let c = 1; c < C; c++) if (x[r * C + c] > bv) { bv = x[r * C + c]; best = c; }
    out[r] = best;
  }
  return out;
}
