// A lane-level TypeScript port of shaders/lanes_sg.wgsl's lanes_bfly2 (the KV4 attention's bfly with subgroups): 64
// explicit invocations in subgroups of S, the workgroup-memory levels (o >= S) and the subgroupShuffleXor levels
// (o < S) as the shader runs them, for any subgroup size and any placement of invocations in subgroups. SwiftShader
// runs the shader at S = 4 only; this lets its index math be checked against the contract's bfly
// (simulator/kernels/attention_kv4.ts) at the S of GPUs (32 on NVIDIA and Apple, 64 on AMD) on a machine without one
// (test/lanes-sg.test.ts); keep it in step with the shader when either changes.
const fr = Math.fround;

/** Each invocation's result of lanes_bfly2 (one component) over x [64] (x_j from invocation lid = j), where
 *  invocation lid is lane sid(lid) of subgroup g(lid) (subgroup ids dense 0..64/S-1, lanes 0..S-1, every subgroup full). */
export function emulateLanesBfly(x: ArrayLike<number>, S: number, g: (lid: number) => number, sid: (lid: number) => number): number[] {
  const N = 64, bx = Array.from(x, fr);
  const k = (lid: number) => g(lid) * S + sid(lid), idx = (lid: number) => k(lid) & 31;
  // the lane of subgroup g(lid) whose sid is s (subgroupShuffleXor's source)
  const at = new Map<string, number>();
  for (let lid = 0; lid < N; lid++) at.set(`${g(lid)}:${sid(lid)}`, lid);
  let y = Array.from({ length: N }, (_, lid) => fr(bx[idx(lid)] + bx[idx(lid) + 32]));
  for (let o = 16; o > 0; o >>= 1) {
    if (o >= S) {
      const by = new Array<number>(32);
      for (let lid = 0; lid < N; lid++) if (k(lid) < 32) by[idx(lid)] = y[lid];
      y = y.map((v, lid) => fr(v + by[idx(lid) ^ o]));
    } else {
      y = y.map((v, lid) => {
        const src = at.get(`${g(lid)}:${sid(lid) ^ o}`);
        if (src === undefined) throw new Error(`no lane ${sid(lid) ^ o} in subgroup ${g(lid)}`);
        return fr(v + y[src]);
      });
    }
  }
  return y;
}
