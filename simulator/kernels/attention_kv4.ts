// KV4 attention: the contract (DESIGN §3.5.1). Every backend computes exactly this; CUDA bit for bit
// (cuda/ops_attention_kv4*.cu), WGSL within tier 2 (no FMA control). It is written so that a fast kernel computes it
// naturally: the two products over channels and keys are INTEGER dot products (exact in any order, so a kernel
// may split and reduce them however it likes), and every float operation acts on a per-(key, head) or
// per-(chunk, head, channel) scalar, in an order fixed here. `fr` = one f32 rounding (no FMA anywhere:
// CUDA __fmul_rn / __fadd_rn / __fdiv_rn, TS Math.fround of the f64 result, which is the correctly rounded f32
// for +, -, ×, ÷ since f64 has more than 2·24 + 2 bits).
//
// Per token t (position pos, n = pos + 1 keys of its sequence), query head h, KV head h / (nHeads / nKvHeads),
// head_dim hd, KV4 group G (ng = hd / G groups), K/V codes k, v in 0..15 with f16 (s, z) per (key, group):
//  1. q to INT8 per (token, head): amax = max |q_c|; amax = 0 -> q8 = 0, sq = 0; else
//     q8_c = rint(fr(q_c · fr(127 / amax))) (ties to even), sq = fr(amax / 127). Q_g = Σ_{c∈g} q8_c.
//     cs = fr(sq · KS), KS = fr(log2(e) / sqrt(hd)) (scores are kept in the log2 domain).
//  2. score of key j: D_g = Σ_{c∈g} q8_c·k_jc (integer), dot = +0, for g ascending:
//     dot = fr(dot + fr(fr(s_jg·D_g) + fr(z_jg·Q_g))); t_j = fr(dot · cs).
//  3. keys in chunks of CHUNK = 64 (chunk i = keys [64i, 64i + 64) ∩ [0, n)), each on its own:
//     m = max t_j; p_j = exp2c(fr(t_j - m)) (0 for keys past n);
//     l = bfly(p), where bfly(x) = the 32-lane xor butterfly of y_i = fr(x_i + x_{i+32}): for o = 16, 8, 4, 2, 1,
//         y_i = fr(y_i + y_{i^o}) on all lanes at once; the result is y_0 (every lane holds it);
//     per V group g: w_j = fr(p_j · sv_jg), W = max w_j; W = 0 -> u = 0, dq = 0; else u_j = rint(fr(w_j ·
//         fr(32767 / W))) (≤ 32767), dq = fr(W / 32767); zs_g = bfly(fr(p_j · zv_jg));
//     A_c = Σ_j u_{j,g(c)}·v_jc (integer; < 2^26); num_c = fr(fr(f32(A_c) · dq_g(c)) + zs_g(c)).
//     (P·V = Σ p_j (s_j·v_jc + z_j) = Σ w_j v_jc + Σ p_j z_j, with w quantized to 15 bits of the chunk's max.)
//  4. merge: the 2 chunks of each segment of SEG = 128 keys (segment k = keys [128k, 128k + 128)) in ascending
//     order, then the segments' states in ascending order, each fold starting from the state (m, l, num) =
//     (-inf, 0, 0) with the rule M = max(m, m_i); a = 0, b = 1 for the first state folded in, else
//     a = exp2c(fr(m - M)), b = exp2c(fr(m_i - M)); l = fr(fr(l·a) + fr(l_i·b)), num_c = fr(fr(num_c·a) +
//     fr(num_ic·b)), m = M. (Two levels so that a kernel may give each segment to its own thread block and merge
//     their states afterwards, or fold them all in one block: the same bits.)
//  5. out_c = fr(num_c / l).
// exp2c(x), x ≤ 0: x < -125 (or NaN) -> 0; else n = rint(x), f = fr(x - n) ∈ [-1/2, 1/2],
//     p = E6, p = fr(fr(p·f) + E_k) for k = 5 .. 0, result fr(p · 2^n) (exact: a normal number).
// Accuracy: q8 adds ~1/254 of a head's largest |q| to each channel (K's own 4-bit step is ~1/30 of its range),
// w keeps 15 bits of the chunk's largest p·s; the wikillama-28M perplexity moves by less than 0.3%
// (bench/results/accuracy).
import type { StepLayout } from '../formats.ts';
import type { KVStoreKV4 } from '../kv4.ts';
import { fromF16Bits, roundHalfEven } from '../f16.ts';

export const KV4_CHUNK = 64, KV4_SEG = 128;
/** exp2 on [-1/2, 1/2]: f32 coefficients of a degree-6 fit (max relative error 1e-7 with f32 Horner) */
export const EXP2_COEFS = [1, 0.693147182, 0.240226462, 0.0555032901, 0.00961851981, 0.00133998599, 0.000153375775].map(Math.fround);
const fr = Math.fround;

export function exp2c(x: number): number {
  if (!(x >= -125)) return 0;
  const n = roundHalfEven(x), f = fr(x - n), E = EXP2_COEFS;
  let p = E[6];
  for (let k = 5; k >= 0; k--) p = fr(fr(p * f) + E[k]);
  return fr(p * 2 ** n);
}

/** fr-sum of 64 lane values as the 32-lane xor butterfly of DESIGN §3.5.1 (x has 64 entries) */
export function bfly(x: Float64Array, y: Float64Array): number {
  for (let i = 0; i < 32; i++) y[i] = fr(x[i] + x[i + 32]);
  for (let o = 16; o > 0; o >>= 1) {
    for (let i = 0; i < 32; i++) if (i < (i ^ o)) { const s = fr(y[i] + y[i ^ o]); y[i] = s; y[i ^ o] = s; }
  }
  return y[0];
}

/** state ← state ⊕ (m, l, num) (step 4 of the contract) */
function fold(st: { m: number; l: number; num: Float64Array; first: boolean }, m: number, l: number, num: Float64Array): void {
  const M = Math.max(st.m, m), a = st.first ? 0 : exp2c(fr(st.m - M)), b = st.first ? 1 : exp2c(fr(m - M));
  st.l = fr(fr(st.l * a) + fr(l * b));
  for (let c = 0; c < num.length; c++) st.num[c] = fr(fr(st.num[c] * a) + fr(num[c] * b));
  st.m = M;
  st.first = false;
}

/** q [T][nHeads·hd] -> [T][nHeads·hd] over the KV4 pages of `layer` (the contract above). */
export function attentionKV4(store: KVStoreKV4, layer: number, q: Float32Array, layout: StepLayout, nHeads: number): Float32Array {
  const { pageSize: P, nKvHeads, headDim: hd, group: G } = store.spec;
  const { kCodes, vCodes, kSZ, vSZ } = store.layout;
  const ng = hd / G, T = layout.pos.length, C = nHeads * hd, gq = nHeads / nKvHeads, CH = KV4_CHUNK;
  const data = store.data[layer], words = store.words[layer];
  const KS = fr(Math.LOG2E / Math.sqrt(hd));
  const out = new Float32Array(T * C);
  const q8 = new Int32Array(hd), Qg = new Int32Array(ng);
  const t = new Float64Array(CH), p = new Float64Array(CH), w = new Float64Array(CH), zt = new Float64Array(CH), tmp = new Float64Array(32);
  const u = new Int32Array(ng * CH), dq = new Float64Array(ng), zs = new Float64Array(ng);
  const num = new Float64Array(hd), A = new Int32Array(hd);
  const kc = new Uint8Array(hd);
  for (let tk = 0; tk < T; tk++) {
    const n = layout.pos[tk] + 1, bt = layout.blockTables[layout.seq[tk]];
    if (Math.ceil(n / P) > bt.length) throw new Error(`attention: position ${n - 1} is past the sequence's ${bt.length} pages`);
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / gq), qo = tk * C + h * hd;
      // 1. q to INT8
      let amax = 0;
      for (let c = 0; c < hd; c++) amax = Math.max(amax, Math.abs(q[qo + c]));
      const rq = amax === 0 ? 0 : fr(127 / amax), sq = amax === 0 ? 0 : fr(amax / 127), cs = fr(sq * KS);
      Qg.fill(0);
      for (let c = 0; c < hd; c++) {
        q8[c] = Math.max(-127, Math.min(127, roundHalfEven(fr(q[qo + c] * rq))));
        Qg[Math.floor(c / G)] += q8[c];
      }
      const tot = { m: -Infinity, l: 0, num: new Float64Array(hd), first: true };
      const seg = { m: -Infinity, l: 0, num: new Float64Array(hd), first: true };
      for (let c0 = 0; c0 < n; c0 += CH) {
        const c1 = Math.min(n, c0 + CH);
        // 2. scores
        let m = -Infinity;
        for (let j = c0; j < c1; j++) {
          const base = store.chunk(bt[Math.floor(j / P)], kvh), slot = j % P;
          const co = base + kCodes + (slot * hd) / 2;
          for (let c = 0; c < hd; c += 2) { const b = data[co + c / 2]; kc[c] = b & 15; kc[c + 1] = b >> 4; }
          let dot = 0;
          for (let g = 0; g < ng; g++) {
            let D = 0;
            for (let c = g * G; c < (g + 1) * G; c++) D += q8[c] * kc[c];
            const wo = (base + kSZ) / 2 + (slot * ng + g) * 2;
            dot = fr(dot + fr(fr(fromF16Bits(words[wo]) * D) + fr(fromF16Bits(words[wo + 1]) * Qg[g])));
          }
          t[j - c0] = fr(dot * cs);
          if (t[j - c0] > m) m = t[j - c0];
        }
        // 3. this chunk's (m, l, num)
        for (let i = 0; i < CH; i++) p[i] = i < c1 - c0 ? exp2c(fr(t[i] - m)) : 0;
        const l = bfly(p, tmp);
        for (let g = 0; g < ng; g++) {
          let W = 0;
          for (let i = 0; i < CH; i++) {
            if (i < c1 - c0) {
              const j = c0 + i, base = store.chunk(bt[Math.floor(j / P)], kvh);
              const wo = (base + vSZ) / 2 + ((j % P) * ng + g) * 2;
              w[i] = fr(p[i] * fromF16Bits(words[wo]));
              zt[i] = fr(p[i] * fromF16Bits(words[wo + 1]));
            } else w[i] = zt[i] = 0;
            if (w[i] > W) W = w[i];
          }
          const r = W > 0 ? fr(32767 / W) : 0;
          dq[g] = W > 0 ? fr(W / 32767) : 0;
          for (let i = 0; i < CH; i++) u[g * CH + i] = W > 0 ? Math.min(32767, roundHalfEven(fr(w[i] * r))) : 0;
          zs[g] = bfly(zt, tmp);
        }
        A.fill(0);
        for (let j = c0; j < c1; j++) {
          const base = store.chunk(bt[Math.floor(j / P)], kvh), co = base + vCodes + ((j % P) * hd) / 2;
          for (let c = 0; c < hd; c++) A[c] += u[Math.floor(c / G) * CH + j - c0] * ((data[co + (c >> 1)] >> ((c & 1) << 2)) & 15);
        }
        for (let c = 0; c < hd; c++) { const g = Math.floor(c / G); num[c] = fr(fr(fr(A[c]) * dq[g]) + zs[g]); }
        // 4. fold the chunk into its segment, a finished segment into the total
        fold(seg, m, l, num);
        if (c1 === n || c1 % KV4_SEG === 0) {
          fold(tot, seg.m, seg.l, seg.num);
          seg.m = -Infinity; seg.l = 0; seg.num.fill(0); seg.first = true;
        }
      }
      const L = tot.l;
      num.set(tot.num);
      // 5.
      for (let c = 0; c < hd; c++) out[qo + c] = fr(num[c] / L);
    }
  }
  return out;
}
