// The one-token W4Ax matvec's shapes (gemm_w4ax.wgsl TEAM lanes a row, ROWS rows a workgroup, SPL segments a lane;
// pipes.ts matvecShape picks one by K and N): each shape the rule can pick computes the simulator's GEMM bit for bit
// (DESIGN §3.4: the shape only moves which invocation computes which exact t_b, never the chain's order), with the
// codes read (QIN = 0) and with the matvec quantizing its f32 input (QIN = 1). test/ops.test.ts forces 16 x 16 with
// 1 and 2 segments, and runs the rule's shape without dot4I8Packed; here every shape the rule picks is forced at one
// size whose K spans several chunks of each.
// Runs on the WebGPU row only (SwiftShader on CI).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { matvecShape, type MatvecShape } from '../backends/webgpu/pipes.ts';
import { WebGPUBackend } from '../backends/webgpu/webgpu.ts';
import { loadShaderSources } from '../backends/webgpu/shaders.ts';
import { actSpec, quantizeAct } from '../simulator/act.ts';
import { gemmW4Ax } from '../simulator/kernels/gemm_w4ax.ts';
import { quantizeW4 } from '../simulator/w4.ts';
import { activations, permutation, randn, rng } from '../testing/rng.ts';
import { eachBackend } from './helpers/backends.ts';

/** the shapes matvecShape returns (team x rows x segs) */
const SHAPES: MatvecShape[] = [{ team: 8, rows: 16, segs: 1 }, { team: 16, rows: 8, segs: 1 }, { team: 32, rows: 8, segs: 1 }, { team: 16, rows: 16, segs: 2 }, { team: 16, rows: 16, segs: 1 }];

it('matvecShape: every shape it picks at LLaMA sizes is one this file tests', () => {
  const key = (s: MatvecShape) => `${s.team}x${s.rows}x${s.segs}`, tested = new Set(SHAPES.map(key));
  // [Kp, rows of all parts]: LLaMA-3.2-1B q+k+v, o, gate+up, down, classifier; LLaMA-3-8B the same
  for (const [Kp, N] of [[2048, 3072], [2048, 2048], [2048, 16384], [8192, 2048], [2048, 128256], [4096, 6144], [4096, 4096], [4096, 28672], [14336, 4096]])
    for (const qin of [false, true]) expect(tested.has(key(matvecShape(Kp, N, qin))), `Kp ${Kp} N ${N} qin ${qin}`).toBe(true);
});

eachBackend('webgpu matvec shapes', ({ create }) => {
  let base: WebGPUBackend;
  beforeAll(async () => { base = (await create()) as WebGPUBackend; });
  afterAll(() => base?.dispose());

  // N = 40 rows (not a multiple of 16 or 8: a workgroup's rows past N), K = 4200 (Kp 4224 at B = 64: 2-5 chunks of
  // each shape, the last one partial), an int8 part across a chunk's first segments, a permutation (QIN gathers).
  // The f16 output hides most changes of the chain's order, so every row has two large t_b that cancel (channels at
  // permuted positions 70 and 4000: blocks 1 and 62), and the data is checked to tell the chain from a split sum.
  it.each(SHAPES.map((s) => [`${s.team}x${s.rows}x${s.segs}`, s] as const))('matvec %s: M = 1, N = 40, K = 4200, B = 64, K8 = 192: the simulator\'s bits, codes read and QIN', async (_, shape) => {
    const N = 40, K = 4200, perm = permutation(rng(7), K), spec = actSpec(K, 64, 192, perm);
    const w = randn(11, N * K, 0.05), x = activations(rng(5), 1, K);
    for (const [j, sign] of [[70, 1], [4000, -1]]) {
      x[perm[j]] = 30000;
      for (let n = 0; n < N; n++) w[n * K + perm[j]] = 4 * sign;
    }
    const w4 = quantizeW4(w, N, spec, { clipSearch: false }), qa = quantizeAct(x, 1, spec);
    const want = gemmW4Ax(qa, w4), split = gemmW4Ax(qa, w4, [[0, 32], [32, 66]]);
    expect(want.filter((v, i) => !Object.is(v, split[i])).length, 'rows whose bits depend on the order').toBeGreaterThan(4);
    const be = new WebGPUBackend(base.gpu, await loadShaderSources(), { gemm: 'matvec', matvec: shape });
    const W = be.uploadWeight({ kind: 'w4', name: 'w', ...w4 });
    for (const read of [false, true]) { // QIN = 1 (the quantizer folded into the matvec), then QIN = 0
      const q = be.quantizeAct(be.fromHost(x, [1, K]), spec);
      if (read) await be.readRaw!(q);
      const got = await be.read(be.matmul(q, W));
      be.endStep();
      const bad = got.findIndex((v, i) => !Object.is(v, want[i]));
      expect(bad, `${read ? 'codes read' : 'QIN'}: row ${bad}: ${got[bad]} vs ${want[bad]}`).toBe(-1);
    }
    be.dispose();
  });
}, (c) => c.name === 'webgpu');
