// A lane-level TypeScript port of cuda/ops_attention_kv4_mma.cu's attn_kv4_mma (the KV4 attention on tensor cores): 32
// explicit lanes per warp, the PTX m16n8k32 8-bit fragment layouts written from the ISA (a0 (g, 4t+i), a1 (g+8, 4t+i),
// a2 (g, 16+4t+i), a3 (g+8, 16+4t+i); b0 (4t+i, g), b1 (16+4t+i, g); c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t),
// c3 (g+8, 2t+1); g = lane / 4, t = lane % 4), shuffles, the swizzled shared-memory staging through the lanes' page
// registers, and both fold modes (one block per (token, KV head); split per 4 segments + combine). It lets the
// kernel's index math be checked against the contract (simulator/kernels/attention_kv4.ts) on a machine without a
// GPU (test/kv4-mma-lanes.test.ts); keep it in step with the kernel when either changes.
import type { StepLayout } from '../simulator/formats.ts';
import type { KVStoreKV4 } from '../simulator/kv4.ts';
import { exp2c } from '../simulator/kernels/attention_kv4.ts';
import { fromF16Bits } from '../simulator/f16.ts';
const fr = Math.fround;
const CH = 64, SEG = 128, MW = 4;
const rne = (x: number) => { const f = Math.floor(x), d = x - f; return d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1); };
const u32 = (x: number) => x >>> 0;
function bperm(x: number, y: number, s: number): number {
  const b = [x & 255, (x >>> 8) & 255, (x >>> 16) & 255, x >>> 24, y & 255, (y >>> 8) & 255, (y >>> 16) & 255, y >>> 24];
  let r = 0;
  for (let i = 0; i < 4; i++) r |= b[(s >>> (4 * i)) & 7] << (8 * i);
  return u32(r);
}
const byte = (w: number, i: number, signed: boolean) => { const v = (w >>> (8 * i)) & 255; return signed && v > 127 ? v - 256 : v; };
/** mma m16n8k32 over 32 lanes: A[lane][4], B[lane][2], D[lane][4] += */
function mma(D: number[][], A: number[][], B: number[][], bSigned: boolean): void {
  const Am: number[][] = Array.from({ length: 16 }, () => new Array(32).fill(0)), Bm: number[][] = Array.from({ length: 32 }, () => new Array(8).fill(0));
  for (let l = 0; l < 32; l++) {
    const g = l >> 2, t = l & 3;
    for (let i = 0; i < 4; i++) {
      Am[g][4 * t + i] = byte(A[l][0], i, false); Am[g + 8][4 * t + i] = byte(A[l][1], i, false);
      Am[g][16 + 4 * t + i] = byte(A[l][2], i, false); Am[g + 8][16 + 4 * t + i] = byte(A[l][3], i, false);
      Bm[4 * t + i][g] = byte(B[l][0], i, bSigned); Bm[16 + 4 * t + i][g] = byte(B[l][1], i, bSigned);
    }
  }
  const dot = (r: number, c: number) => { let s = 0; for (let k = 0; k < 32; k++) s += Am[r][k] * Bm[k][c]; return s; };
  for (let l = 0; l < 32; l++) {
    const g = l >> 2, t = l & 3;
    D[l][0] += dot(g, 2 * t); D[l][1] += dot(g, 2 * t + 1); D[l][2] += dot(g + 8, 2 * t); D[l][3] += dot(g + 8, 2 * t + 1);
  }
}
const shfl = (v: number[], f: (l: number) => number) => v.map((_, l) => v[f(l)]);

/** The kernel's output for layer 0 of `store` (split: the small-batch mode; maxLen sizes its workspace). */
export function emulateAttnKv4Mma(store: KVStoreKV4, q: Float32Array, layout: StepLayout, nHeads: number, split: boolean, maxLen: number): Float32Array {
  const { pageSize: P, nKvHeads: nkv, headDim: HD, group: G } = store.spec;
  const GQ = nHeads / nkv, ng = HD / G, cpg = G / 32, lp = Math.log2(P);
  const ROWB = HD / 2, NP = HD / 32, RPB = Math.max(1, 8 / NP), NCT = HD / 32, NT1 = Math.ceil(GQ / 8), NSET = HD / 64, NT4 = Math.ceil(GQ / 4);
  const DUP = GQ <= 4, NR = DUP ? 1 : 2;
  const hof = (tq: number, nt: number, hb: number) => (DUP ? 2 * (tq & 1) + hb : 8 * nt + 2 * tq + hb);
  const rof = (tq: number, rr: number) => (DUP ? tq >> 1 : rr);
  const mswz = (k: number) => Math.floor(k / RPB) & (NP - 1);
  const data = store.data[0], L = store.layout, headBytes = L.headBytes, codeBytes = L.codeBytes, szBytes = L.szBytes;
  const KS = fr(Math.LOG2E / Math.sqrt(HD));
  const T = layout.pos.length, Cq = nHeads * HD, out = new Float32Array(T * Cq);
  const nsegMax = Math.ceil(maxLen / SEG);
  const ws = new Float32Array(T * nHeads * nsegMax * (HD + 2));
  const rd32 = (buf: Uint8Array, o: number) => u32(buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16) | (buf[o + 3] << 24));
  for (let t = 0; t < T; t++)
    for (let kvh = 0; kvh < nkv; kvh++) {
      const h0 = kvh * GQ, n = layout.pos[t] + 1, nch = Math.ceil(n / CH), nsg = Math.ceil(n / SEG);
      const bt = layout.blockTables[layout.seq[t]];
      const blocks = split ? Math.ceil(nsegMax / MW) : 1;
      for (let bx = 0; bx < blocks; bx++) {
        const sg0 = split ? bx * MW : 0, sg1 = split ? Math.min(nsg, sg0 + MW) : nsg;
        if (sg0 >= sg1) continue;
        // prologue: q8, cs, qg
        const q8: number[][] = [], cs: number[] = [], qg: number[][] = [];
        for (let h = 0; h < GQ; h++) {
          const o = t * Cq + (h0 + h) * HD;
          let amax = 0;
          for (let c = 0; c < HD; c++) amax = Math.max(amax, Math.abs(q[o + c]));
          const rq = amax === 0 ? 0 : fr(127 / amax), sq = amax === 0 ? 0 : fr(amax / 127);
          q8.push(Array.from({ length: HD }, (_, c) => Math.max(-127, Math.min(127, rne(fr(q[o + c] * rq))))));
          cs.push(fr(sq * KS));
          qg.push(Array.from({ length: ng }, (_, g) => { let s = 0; for (let c = g * G; c < (g + 1) * G; c++) s += q8[h][c]; return s; }));
        }
        const pack = (a: number[]) => u32((a[0] & 255) | ((a[1] & 255) << 8) | ((a[2] & 255) << 16) | ((a[3] & 255) << 24));
        const slots: { m: number; l: number; num: Float64Array }[][] = [];  // per round, per warp, per head
        const tn = new Float64Array(GQ * HD);
        const rounds = Math.ceil((sg1 - sg0) / MW);
        for (let r = 0; r < rounds; r++) {
          const roundStates: { m: number; l: number; num: Float64Array }[][] = [];
          for (let warp = 0; warp < MW; warp++) {
            const sg = sg0 + warp + MW * r;
            const states: { m: number; l: number; num: Float64Array }[] = [];
            // per-lane segment state
            const sgm = Array.from({ length: 32 }, () => new Array(NT4).fill(0)), sgl = Array.from({ length: 32 }, () => new Array(NT4).fill(0));
            const sgn = Array.from({ length: 32 }, () => Array.from({ length: NT4 * NSET * 8 }, () => 0));
            for (let half = 0; half < 2; half++) {
              const ci = 2 * sg + half;
              if (!(sg < sg1 && ci < nch)) continue;
              // stage into smem (swizzled), through the lanes' page registers
              const c0 = ci * CH, nk = Math.min(CH, n - c0);
              const kc = new Uint8Array(CH * ROWB).fill(0xA5), vc = new Uint8Array(CH * ROWB).fill(0x5A);
              const ksz = new Uint32Array(CH * ng).fill(0x7c00fc00), vsz = new Uint32Array(CH * ng).fill(0x7e007e00);
              const pgv = Array.from({ length: 32 }, (_, lane) => { const pi = ((ci * CH) >> lp) + lane; return lane < Math.max(1, CH >> lp) && (pi << lp) < n ? bt[pi] : 0; });
              for (let it = 0; it < 4 * NP; it++)
                for (let lane = 0; lane < 32; lane++) {
                  const i = lane + 32 * (it % (2 * NP)), isv = Math.floor(it / (2 * NP)), key = Math.floor(i / NP), pc = i % NP;
                  const pg = pgv[key >> lp];
                  if (c0 + key < n) {
                    const slot = (c0 + key) & (P - 1);
                    const src = (pg * nkv + kvh) * headBytes + isv * codeBytes + slot * ROWB + pc * 16;
                    const dst = key * ROWB + (pc ^ mswz(key)) * 16;
                    (isv ? vc : kc).set(data.subarray(src, src + 16), dst);
                  }
                }
              for (let lane = 0; lane < 32; lane++)
                for (let i = lane; i < 32 * ng; i += 32) {
                  const isv = Math.floor(i / (16 * ng)), rr = i - isv * 16 * ng, quad = Math.floor(rr / ng), gp = rr - quad * ng, key = 4 * quad;
                  const pg = pgv[key >> lp];
                  if (c0 + key < n) {
                    const slot = (c0 + key) & (P - 1);
                    const src = (pg * nkv + kvh) * headBytes + 2 * codeBytes + isv * szBytes + slot * ng * 4 + gp * 16;
                    for (let w = 0; w < 4; w++) (isv ? vsz : ksz)[key * ng + 4 * gp + w] = rd32(data, src + 4 * w);
                  }
                }
              const kw = (k: number, W: number) => rd32(kc, k * ROWB + ((W >> 2) ^ mswz(k)) * 16 + (W & 3) * 4);
              const vw = (k: number, W: number) => rd32(vc, k * ROWB + ((W >> 2) ^ mswz(k)) * 16 + (W & 3) * 4);
              const hlo = (w: number) => fromF16Bits(w & 0xffff), hhi = (w: number) => fromF16Bits(w >>> 16);
              // ---- scores
              const tv = Array.from({ length: 32 }, () => Array.from({ length: 4 * NT1 * NR * 2 }, () => 0));  // [kt][nt][e]
              for (let kt = 0; kt < 4; kt++) {
                const dot = Array.from({ length: 32 }, () => new Array(NT1 * NR * 2).fill(0));
                const D = Array.from({ length: NT1 }, () => Array.from({ length: 32 }, () => [0, 0, 0, 0]));
                for (let ct = 0; ct < NCT; ct++) {
                  const A: number[][] = [], Bs: number[][][] = Array.from({ length: NT1 }, () => []);
                  for (let lane = 0; lane < 32; lane++) {
                    const gid = lane >> 2, tq = lane & 3, W = 4 * ct + tq, k0 = 16 * kt + gid, k1 = k0 + 8;
                    const w0 = kw(k0, W), w1 = kw(k1, W);
                    A.push([u32(w0 & 0x0f0f0f0f), u32(w1 & 0x0f0f0f0f), u32((w0 >>> 4) & 0x0f0f0f0f), u32((w1 >>> 4) & 0x0f0f0f0f)]);
                    for (let nt = 0; nt < NT1; nt++) {
                      const h = DUP ? (gid & 3) : 8 * nt + gid;
                      Bs[nt].push(h < GQ ? [pack([0, 2, 4, 6].map((j) => q8[h][8 * W + j])), pack([1, 3, 5, 7].map((j) => q8[h][8 * W + j]))] : [0, 0]);
                    }
                  }
                  for (let nt = 0; nt < NT1; nt++) mma(D[nt], A, Bs[nt], true);
                  if ((ct + 1) % cpg === 0) {
                    const g = Math.floor(ct / cpg);
                    for (let lane = 0; lane < 32; lane++) {
                      const gid = lane >> 2, tq = lane & 3, k0 = 16 * kt + gid, k1 = k0 + 8;
                      for (let rr = 0; rr < NR; rr++) {
                        const r1 = rof(tq, rr) === 1, sz = ksz[(r1 ? k1 : k0) * ng + g];
                        for (let nt = 0; nt < NT1; nt++)
                          for (let hb = 0; hb < 2; hb++) {
                            const d = r1 ? D[nt][lane][2 + hb] : D[nt][lane][hb], h = hof(tq, nt, hb), qgv = h < GQ ? qg[h][g] : 0;
                            const i = (nt * NR + rr) * 2 + hb;
                            dot[lane][i] = fr(dot[lane][i] + fr(fr(hlo(sz) * d) + fr(hhi(sz) * qgv)));
                          }
                      }
                      for (let nt = 0; nt < NT1; nt++) D[nt][lane] = [0, 0, 0, 0];
                    }
                  }
                }
                for (let lane = 0; lane < 32; lane++) {
                  const tq = lane & 3;
                  for (let nt = 0; nt < NT1; nt++)
                    for (let rr = 0; rr < NR; rr++)
                      for (let hb = 0; hb < 2; hb++) { const h = hof(tq, nt, hb), i = (nt * NR + rr) * 2 + hb; tv[lane][kt * NT1 * NR * 2 + i] = fr(dot[lane][i] * (h < GQ ? cs[h] : 0)); }
                }
              }
              // ---- softmax per head
              const uh = Array.from({ length: ng }, () => Array.from({ length: GQ }, () => new Array(CH).fill(0)));
              const hs = { m: new Array(GQ).fill(0), l: new Array(GQ).fill(0), dq: Array.from({ length: GQ }, () => new Array(ng).fill(0)), zs: Array.from({ length: GQ }, () => new Array(ng).fill(0)) };
              const TV = (lane: number, kt: number, nt: number, rr: number, hb: number) => tv[lane][kt * NT1 * NR * 2 + (nt * NR + rr) * 2 + hb];
              const tree = (x: number[][][]) => {  // x[lane][kt][rr]
                let v = x.map((xl) => {
                  if (NR === 1) return fr(fr(xl[0][0] + xl[2][0]) + fr(xl[1][0] + xl[3][0]));
                  let y0 = fr(xl[0][0] + xl[2][0]), y1 = fr(xl[0][1] + xl[2][1]); const z0 = fr(xl[1][0] + xl[3][0]), z1 = fr(xl[1][1] + xl[3][1]); y0 = fr(y0 + z0); y1 = fr(y1 + z1); return fr(y0 + y1);
                });
                for (const o of NR === 1 ? [2, 16, 8, 4] : [16, 8, 4]) { const s2 = shfl(v, (l) => l ^ o); v = v.map((a, l) => fr(a + s2[l])); }
                return v;
              };
              const kmax = (v: number[]) => { for (const o of NR === 1 ? [2, 4, 8, 16] : [4, 8, 16]) { const s2 = shfl(v, (l) => l ^ o); v = v.map((a, l) => Math.max(a, s2[l])); } return v; };
              const keyOf = (lane: number, kt: number, rr: number) => 16 * kt + 8 * rof(lane & 3, rr) + (lane >> 2);
              const RR = Array.from({ length: NR }, (_, i) => i);
              for (let nt = 0; nt < NT1; nt++)
                for (let hb = 0; hb < 2; hb++) {
                  const m = kmax(Array.from({ length: 32 }, (_, lane) => { let mm = -Infinity; for (let kt = 0; kt < 4; kt++) for (const rr of RR) if (keyOf(lane, kt, rr) < nk) mm = Math.max(mm, TV(lane, kt, nt, rr, hb)); return mm; }));
                  const p = Array.from({ length: 32 }, (_, lane) => [0, 1, 2, 3].map((kt) => RR.map((rr) => (keyOf(lane, kt, rr) < nk ? exp2c(fr(TV(lane, kt, nt, rr, hb) - m[lane])) : 0))));
                  const l = tree(p);
                  for (let g = 0; g < ng; g++) {
                    const w = p.map((pl, lane) => pl.map((row, kt) => row.map((pv, rr) => { const key = keyOf(lane, kt, rr); return key < nk ? fr(pv * hlo(vsz[key * ng + g])) : 0; })));
                    const zt = p.map((pl, lane) => pl.map((row, kt) => row.map((pv, rr) => { const key = keyOf(lane, kt, rr); return key < nk ? fr(pv * hhi(vsz[key * ng + g])) : 0; })));
                    const W = kmax(w.map((wl) => Math.max(0, ...wl.flat())));
                    const zs = tree(zt);
                    for (let lane = 0; lane < 32; lane++) {
                      const tq = lane & 3, h = hof(tq, nt, hb);
                      if (h >= GQ) continue;
                      const rW = W[lane] > 0 ? fr(32767 / W[lane]) : 0;
                      for (let kt = 0; kt < 4; kt++) for (const rr of RR) uh[g][h][keyOf(lane, kt, rr)] = W[lane] > 0 ? Math.min(32767, rne(fr(w[lane][kt][rr] * rW))) : 0;
                      if (lane < 4) { hs.dq[h][g] = W[lane] > 0 ? fr(W[lane] / 32767) : 0; hs.zs[h][g] = zs[lane]; }
                    }
                  }
                  for (let lane = 0; lane < 4; lane++) { const h = hof(lane & 3, nt, hb); if (h < GQ) { hs.m[h] = m[lane]; hs.l[h] = l[lane]; } }
                }
              // ---- P·V
              const pv = Array.from({ length: NT4 * NSET * 4 }, () => Array.from({ length: 32 }, () => [0, 0, 0, 0]));
              for (let sk = 0; sk < 2; sk++)
                for (let st = 0; st < NSET; st++) {
                  const g = Math.floor((st * 64) / G);
                  const A: number[][][] = [[], [], [], []], Bs: number[][][] = Array.from({ length: NT4 }, () => []);
                  for (let lane = 0; lane < 32; lane++) {
                    const gid = lane >> 2, tq = lane & 3, kA = 32 * sk + 4 * tq, kB = kA + 16, W = gid + 8 * st;
                    for (let nt = 0; nt < NT4; nt++) {
                      const h = 4 * nt + (gid >> 1);
                      if (h < GQ) {
                        const ua = [u32(uh[g][h][kA] | (uh[g][h][kA + 1] << 16)), u32(uh[g][h][kA + 2] | (uh[g][h][kA + 3] << 16))];
                        const ub = [u32(uh[g][h][kB] | (uh[g][h][kB + 1] << 16)), u32(uh[g][h][kB + 2] | (uh[g][h][kB + 3] << 16))];
                        const sel = gid & 1 ? 0x7531 : 0x6420;
                        Bs[nt].push([bperm(ua[0], ua[1], sel), bperm(ub[0], ub[1], sel)]);
                      } else Bs[nt].push([0, 0]);
                    }
                    const tr = (k: number) => {
                      const x = [0, 1, 2, 3].map((j) => vw(k + j, W));
                      const lo01 = bperm(x[0], x[1], 0x5140), hi01 = bperm(x[0], x[1], 0x7362), lo23 = bperm(x[2], x[3], 0x5140), hi23 = bperm(x[2], x[3], 0x7362);
                      const y = [bperm(lo01, lo23, 0x5410), bperm(lo01, lo23, 0x7632), bperm(hi01, hi23, 0x5410), bperm(hi01, hi23, 0x7632)];
                      const o: number[] = [];
                      for (let j = 0; j < 4; j++) { o[2 * j] = u32(y[j] & 0x0f0f0f0f); o[2 * j + 1] = u32((y[j] >>> 4) & 0x0f0f0f0f); }
                      return o;
                    };
                    const va = tr(kA), vb = tr(kB);
                    for (let e2 = 0; e2 < 4; e2++) A[e2].push([va[e2], va[e2 + 4], vb[e2], vb[e2 + 4]]);
                  }
                  for (let e2 = 0; e2 < 4; e2++) for (let nt = 0; nt < NT4; nt++) mma(pv[(nt * NSET + st) * 4 + e2], A[e2], Bs[nt], false);
                }
              // ---- fold into the segment
              const first = (ci & 1) === 0;
              for (let lane = 0; lane < 32; lane++) {
                const gid = lane >> 2, tq = lane & 3;
                for (let nt = 0; nt < NT4; nt++) {
                  const h = 4 * nt + tq;
                  if (h >= GQ) continue;
                  const m = hs.m[h], l = hs.l[h];
                  const M = first ? m : Math.max(sgm[lane][nt], m);
                  const fa = first ? 0 : exp2c(fr(sgm[lane][nt] - M)), fb = first ? 1 : exp2c(fr(m - M));
                  sgl[lane][nt] = fr(fr((first ? 0 : sgl[lane][nt]) * fa) + fr(l * fb));
                  sgm[lane][nt] = M;
                  for (let st = 0; st < NSET; st++) {
                    const g = Math.floor((st * 64) / G), dq = hs.dq[h][g], zs = hs.zs[h][g];
                    for (let e2 = 0; e2 < 4; e2++) for (let rr = 0; rr < 2; rr++) {
                      const d = pv[(nt * NSET + st) * 4 + e2][lane];
                      const A = d[2 * rr] + 256 * d[2 * rr + 1];
                      const nc = fr(fr(fr(A) * dq) + zs);
                      const idx = (nt * NSET + st) * 8 + e2 * 2 + rr;
                      sgn[lane][idx] = fr(fr((first ? 0 : sgn[lane][idx]) * fa) + fr(nc * fb));
                    }
                  }
                }
              }
              if ((ci & 1) || ci + 1 === nch) {
                for (let h = 0; h < GQ; h++) states[h] = { m: 0, l: 0, num: new Float64Array(HD) };
                for (let lane = 0; lane < 32; lane++) {
                  const gid = lane >> 2, tq = lane & 3;
                  for (let nt = 0; nt < NT4; nt++) {
                    const h = 4 * nt + tq;
                    if (h >= GQ) continue;
                    if (gid === 0) { states[h].m = sgm[lane][nt]; states[h].l = sgl[lane][nt]; }
                    for (let st = 0; st < NSET; st++) for (let e2 = 0; e2 < 4; e2++) for (let rr = 0; rr < 2; rr++)
                      states[h].num[8 * (gid + 8 * st) + e2 + 4 * rr] = sgn[lane][(nt * NSET + st) * 8 + e2 * 2 + rr];
                  }
                }
                if (split) for (let h = 0; h < GQ; h++) {
                  const o = ((t * nHeads + h0 + h) * nsegMax + sg) * (HD + 2);
                  ws[o] = states[h].m; ws[o + 1] = states[h].l; ws.set(states[h].num, o + 2);
                }
              }
            }
            roundStates.push(states);
          }
          if (split) continue;
          const nw = Math.min(MW, sg1 - sg0 - MW * r);
          for (let h = 0; h < GQ; h++) {  // per thread head h (identical for every thread of that head)
            let tmh = r === 0 ? 0 : slots[h][0].m, tlh = r === 0 ? 0 : slots[h][0].l;
            for (let w = 0; w < nw; w++) {
              const o = roundStates[w][h], firstf = r === 0 && w === 0;
              const M = firstf ? o.m : Math.max(tmh, o.m);
              const fa = firstf ? 0 : exp2c(fr(tmh - M)), fb = firstf ? 1 : exp2c(fr(o.m - M));
              tlh = fr(fr(tlh * fa) + fr(o.l * fb));
              for (let c = 0; c < HD; c++) tn[h * HD + c] = fr(fr(tn[h * HD + c] * fa) + fr(o.num[c] * fb));
              tmh = M;
            }
            slots[h] = [{ m: tmh, l: tlh, num: new Float64Array(0) }];
          }
        }
        if (!split) for (let h = 0; h < GQ; h++) for (let c = 0; c < HD; c++) out[t * Cq + (h0 + h) * HD + c] = fr(tn[h * HD + c] / slots[h][0].l);
      }
      if (split) {  // attn_kv4_combine
        const ns = Math.floor((layout.pos[t] + SEG) / SEG);
        for (let h = h0; h < h0 + GQ; h++) for (let c = 0; c < HD; c++) {
          const p0 = (t * nHeads + h) * nsegMax * (HD + 2);
          let m = ws[p0], l = ws[p0 + 1], num = ws[p0 + 2 + c];
          for (let k = 1; k < ns; k++) {
            const qo = p0 + k * (HD + 2), M = Math.max(m, ws[qo]), fa = exp2c(fr(m - M)), fb = exp2c(fr(ws[qo] - M));
            l = fr(fr(l * fa) + fr(ws[qo + 1] * fb)); num = fr(fr(num * fa) + fr(ws[qo + 2 + c] * fb)); m = M;
          }
          out[t * Cq + h * HD + c] = fr(num / l);
        }
      }
    }
  return out;
}

