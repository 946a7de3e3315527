// shaders/lanes_sg.wgsl's bfly (the KV4 attention's 64-lane sum with subgroups), ported lane by lane in
// testing/lanes-sg.ts, gives the contract's bfly (simulator/kernels/attention_kv4.ts) bit for bit at every subgroup
// size a GPU has (4 to 64; SwiftShader runs the shader itself at 4 only: test/webgpu-dispatches.test.ts) and whatever
// invocations a driver puts in which subgroup.
import { expect, it } from 'vitest';
import { bfly } from '../simulator/kernels/attention_kv4.ts';
import { emulateLanesBfly } from '../testing/lanes-sg.ts';
import { permutation, randn, rng } from '../testing/rng.ts';

it.each([4, 8, 16, 32, 64])('lanes_sg bfly lane port == the contract\'s bfly at subgroup size %i, linear and shuffled subgroups', (S) => {
  for (let trial = 0; trial < 20; trial++) {
    // values of mixed magnitudes (the sums' roundings depend on the order), some lanes 0 (keys past a chunk)
    const x = Float64Array.from(randn(100 * S + trial, 64, 1), (v, j) => (j % 7 === 3 ? 0 : Math.fround(v * 2 ** ((j * 5) % 17 - 8))));
    const want = bfly(x, new Float64Array(32));
    const linear = emulateLanesBfly(x, S, (lid) => Math.floor(lid / S), (lid) => lid % S);
    // a driver's own placement: invocations dealt to subgroups in a random order, and lanes within them likewise
    const order = permutation(rng(7 * S + trial), 64);
    const shuffled = emulateLanesBfly(x, S, (lid) => Math.floor(order[lid] / S), (lid) => order[lid] % S);
    for (const got of [linear, shuffled]) expect(got.every((v) => Object.is(v, want))).toBe(true);
  }
});

it('these values tell summation orders apart: the same 64 added lane 0 to 63 in turn give other bits than the bfly', () => {
  for (const S of [4, 32]) {
    const x = Float64Array.from(randn(100 * S, 64, 1), (v, j) => (j % 7 === 3 ? 0 : Math.fround(v * 2 ** ((j * 5) % 17 - 8))));
    let seq = 0;
    for (const v of x) seq = Math.fround(seq + v);
    expect(Object.is(seq, bfly(x, new Float64Array(32)))).toBe(false);
  }
});
