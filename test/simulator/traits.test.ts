import { describe, expect, it } from 'vitest';
import { actSpec, dequantizeAct, quantizeAct } from '../../simulator/act.ts';
import { packInt4, unpackInt4 } from '../../simulator/int4.ts';
import { KVStoreKV4, kv4QuantizeGroup } from '../../simulator/kv4.ts';
import { actQ4, actQ8, kv4Block, kv4PageBytes, qactBytes, w4Block, w4Bytes } from '../../simulator/traits.ts';
import { quantizeW4 } from '../../simulator/w4.ts';
import { activations, rng } from '../../testing/rng.ts';

describe('format traits table', () => {
  it('block sizes as data (ggml style)', () => {
    expect([actQ8(128).codeBytes, actQ8(128).scaleBytes, actQ8(128).qmin, actQ8(128).qmax]).toEqual([128, 2, -128, 127]);
    expect([actQ4(64).codeBytes, actQ4(64).scaleBytes, actQ4(64).qmin, actQ4(64).qmax]).toEqual([32, 2, -8, 7]);
    expect([w4Block(32).codeBytes, w4Block(32).scaleBytes, w4Block(32).bits]).toEqual([16, 2, 4]);
    expect([kv4Block(64).codeBytes, kv4Block(64).scaleBytes, kv4Block(64).qmin, kv4Block(64).qmax, kv4Block(64).symmetric]).toEqual([32, 4, 0, 15, false]);
    expect(actQ4(32).pack).toBe(packInt4);
    expect(actQ4(32).unpack).toBe(unpackInt4);
    expect(actQ8(32).quantize).toBe(quantizeAct);
    expect(actQ8(32).dequantize).toBe(dequantizeAct);
    expect(w4Block(32).quantize).toBe(quantizeW4);
    expect(kv4Block(32).quantize).toBe(kv4QuantizeGroup);
    expect([...actQ8(32).unpack(actQ8(32).pack([-128, 5, 127]), 3)]).toEqual([-128, 5, 127]);
  });
  it('derived byte counts equal the arrays the quantizers make', () => {
    const r = rng(2);
    for (const [K, B, K8] of [[172, 32, 64], [512, 128, 128], [1408, 64, 0]]) {
      const spec = actSpec(K, B, K8), M = 3, N = 5;
      const q = quantizeAct(activations(r, M, K), M, spec), w = quantizeW4(activations(r, N, K), N, spec, { clipSearch: false });
      expect(qactBytes(spec, M)).toEqual({ a8: q.a8.byteLength, a4: q.a4.byteLength, sa: q.sa.byteLength });
      expect(w4Bytes(spec, N)).toEqual({ codes: w.codes.byteLength, scales: w.scales.byteLength });
    }
    const kv = { nLayers: 2, nKvHeads: 4, headDim: 64, pageSize: 16, numPages: 3, dtype: 'kv4' as const, group: 64 };
    expect(new KVStoreKV4(kv).data[0].byteLength).toBe(3 * kv4PageBytes(kv));
    expect(kv4PageBytes(kv)).toBe(4 * (2 * 16 * 32 + 2 * 16 * 4)); // per head: K, V codes + K, V (s, z)
  });
});
