// W4Ax GEMM (DESIGN §3.4), the bit-exact definition every backend reproduces:
//   acc_b  = Σ_{k in block b} qa[m][k]·qw[n][k]                exact int32 (|acc_b| ≤ B·128·8 ≤ 2^17)
//   t_b    = f32(acc_b) * f32(f32(sa[m][b]) * f32(sw[n][b]))  each product rounded to f32, no FMA
//   partial over a range [b0, b1): from +0, ascending b, f32 add after each block
//   Y[m][n] = f16(Σ partials in schedule order, from +0, f32 adds) = f16(((+0 + part_0) + part_1) + …)
// With no schedule there is one range [0, Kp/B): the plain ascending sum.
// The schedule is a function of the weight (N, Kp, B, K8) and the device only, NEVER of M (Backend.gemmSchedule): a
// row's output bits must not depend on how many tokens share the GEMM (a request prefilled alone or batched with
// others, decoded at batch 1 or 64, with or without a prefix-cache hit). A kernel free to split K differently by M
// (more CTAs for small M) must still add exactly these partials in this order: CUDA's split kernels write one partial
// per range, its unsplit ones restart the running sum at each range and keep the total of the finished ranges
// (cuda/gemm_w4ax_decode.cuh schedule_slices gives the rule).
// Shapes: a QAct [M][Kp] (permuted channel order), w W4Weight [N][Kp] (same order) -> [M][N] f32 holding f16 values.
import type { QAct, W4Weight } from '../formats.ts';
import { f16ArrayToF32, toF16 } from '../f16.ts';
import { unpackInt4 } from '../int4.ts';
import { checkQAct } from '../act.ts';
import { checkW4 } from '../w4.ts';

/** A split-K schedule: block ranges [b0, b1), each block in exactly one range; partials added in list order. */
export type Schedule = Array<[number, number]>;

export function checkSchedule(schedule: Schedule, nb: number): void {
  const seen = new Uint8Array(nb);
  for (const [b0, b1] of schedule) {
    if (!(Number.isInteger(b0) && Number.isInteger(b1) && 0 <= b0 && b0 < b1 && b1 <= nb))
      throw new RangeError(`gemmW4Ax: schedule range [${b0}, ${b1}) is not a non-empty range of blocks 0..${nb}`);
    for (let b = b0; b < b1; b++) {
      if (seen[b]) throw new RangeError(`gemmW4Ax: schedule covers block ${b} twice`);
      seen[b] = 1;
    }
  }
  const missing = seen.indexOf(0);
  if (missing >= 0) throw new RangeError(`gemmW4Ax: schedule misses block ${missing} of ${nb}`);
}

/** Both operands as Int8Array [rows][Kp] codes (a: a8 then unpacked a4 per row). */
function actCodes(a: QAct): Int8Array {
  const { Kp, K8 } = a.spec, K4 = Kp - K8;
  const out = new Int8Array(a.M * Kp), q4 = unpackInt4(a.a4, a.M * K4);
  for (let m = 0; m < a.M; m++) {
    out.set(a.a8.subarray(m * K8, (m + 1) * K8), m * Kp);
    out.set(q4.subarray(m * K4, (m + 1) * K4), m * Kp + K8);
  }
  return out;
}

export function gemmW4Ax(a: QAct, w: W4Weight, schedule?: Schedule): Float32Array {
  const out = gemmW4AxSums(a, w, schedule);
  for (let i = 0; i < out.length; i++) out[i] = toF16(out[i]);
  return out;
}

/** The partial of each range of `schedule` ([M][N] f32 each, from +0, ascending blocks), not yet added. */
export function gemmW4AxPartials(a: QAct, w: W4Weight, schedule: Schedule): Float32Array[] {
  const parts = schedule.map(() => new Float32Array(a.M * w.N));
  gemmW4AxSums(a, w, schedule, parts);
  return parts;
}

/** gemmW4Ax before the output's f16 rounding: the f32 sums ((+0 + part_0) + part_1) + …; `parts`, when given (one
 *  [M][N] array per range), receives each range's partial. A tensor-parallel rank contributes the partials of its
 *  ranges, and the all-reduce adds every range's in order and rounds once (src/parallel). */
export function gemmW4AxSums(a: QAct, w: W4Weight, schedule?: Schedule, parts?: Float32Array[]): Float32Array {
  const sa = a.spec, sw = w.act;
  for (const f of ['K', 'Kp', 'B', 'K8'] as const)
    if (sa[f] !== sw[f]) throw new RangeError(`gemmW4Ax: activation ${f} = ${sa[f]} but weight expects ${f} = ${sw[f]}`);
  checkQAct(a);
  checkW4(w);
  const { M } = a, { N } = w, { B, Kp } = sa, nb = Kp / B;
  const sched = schedule ?? [[0, nb]];
  checkSchedule(sched, nb);
  const qa = actCodes(a), qw = unpackInt4(w.codes, N * Kp);
  const fa = f16ArrayToF32(a.sa), fw = f16ArrayToF32(w.scales);
  const out = new Float32Array(M * N);
  const fr = Math.fround;
  for (let m = 0; m < M; m++) {
    const ao = m * Kp;
    for (let n = 0; n < N; n++) {
      const wo = n * Kp;
      let sum = 0;
      for (let r = 0; r < sched.length; r++) {
        const [b0, b1] = sched[r];
        let part = 0;
        for (let b = b0; b < b1; b++) {
          let acc = 0;
          const k0 = b * B, ka = ao + k0, kw = wo + k0;
          for (let k = 0; k < B; k += 4) // integer products and sums, exact in doubles (|acc| ≤ 2^17)
            acc += qa[ka + k] * qw[kw + k] + qa[ka + k + 1] * qw[kw + k + 1] + qa[ka + k + 2] * qw[kw + k + 2] + qa[ka + k + 3] * qw[kw + k + 3];
          part = fr(part + fr(acc * fr(fa[m * nb + b] * fw[n * nb + b])));
        }
        sum = fr(sum + part);
        if (parts) parts[r][m * N + n] = part;
      }
      out[m * N + n] = sum;
    }
  }
  return out;
}
