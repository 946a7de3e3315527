import { describe, expect, it } from 'vitest';
import { int4At, packInt4, packUint4, uint4At, unpackInt4, unpackUint4 } from '../../simulator/int4.ts';
import { rng } from '../../testing/rng.ts';

describe('int4 canonical packing (DESIGN §3.1)', () => {
  it('packs by hand: element 2i low nibble, two\'s complement', () => {
    // 1 -> 0x1 (low), -2 -> 0xE (high) => 0xE1;  7 -> 0x7 (low), -8 -> 0x8 (high) => 0x87
    expect([...packInt4([1, -2, 7, -8])]).toEqual([0xe1, 0x87]);
    expect([...packInt4([-1, 0, 0, -1])]).toEqual([0x0f, 0xf0]);
    expect([...packInt4([3, -1, 5])]).toEqual([0xf3, 0x05]); // odd length: high nibble of the last byte is 0
    expect([...packInt4([])]).toEqual([]);
  });
  it('Int8Array codes (the quantizers\' output) pack as any other array, and out-of-range codes are refused', () => {
    const r = rng(3);
    for (const n of [0, 1, 2, 7, 1000]) {
      const c = Int8Array.from({ length: n }, () => Math.floor(r() * 16) - 8);
      expect([...packInt4(c)]).toEqual([...packInt4(Array.from(c))]);
    }
    for (const bad of [[8, 0], [0, -9], [1, 2, 3, 4, 100], [-128]]) expect(() => packInt4(Int8Array.from(bad))).toThrow(/not an int4/);
  });
  it('unpacks by hand', () => {
    expect([...unpackInt4(Uint8Array.of(0xe1, 0x87), 4)]).toEqual([1, -2, 7, -8]);
    expect([...unpackInt4(Uint8Array.of(0xf3, 0x05), 3)]).toEqual([3, -1, 5]);
    expect([0, 1, 2, 3].map((i) => int4At(Uint8Array.of(0xe1, 0x87), i))).toEqual([1, -2, 7, -8]);
  });
  it('every nibble pair round trips', () => {
    const vals = [];
    for (let a = -8; a < 8; a++) for (let b = -8; b < 8; b++) vals.push(a, b);
    const bytes = packInt4(vals);
    expect(bytes.length).toBe(256);
    expect(new Set(bytes).size).toBe(256); // a bijection onto bytes
    expect([...unpackInt4(bytes, vals.length)]).toEqual(vals);
  });
  it('random round trip into a given out array', () => {
    const r = rng(1);
    const v = Array.from({ length: 1001 }, () => Math.floor(r() * 16) - 8);
    const out = new Int8Array(1001);
    expect(unpackInt4(packInt4(v), 1001, out)).toBe(out);
    expect([...out]).toEqual(v);
  });
  it('rejects values outside -8..7 and short input', () => {
    expect(() => packInt4([8])).toThrow(/element 0 = 8/);
    expect(() => packInt4([0, -9])).toThrow(/element 1 = -9/);
    expect(() => packInt4([0.5])).toThrow(/not an int4/);
    expect(() => unpackInt4(new Uint8Array(1), 3)).toThrow(/fewer than 3/);
  });
});

describe('uint4 packing (KV4 codes)', () => {
  it('by hand', () => {
    expect([...packUint4([1, 15, 0, 8])]).toEqual([0xf1, 0x80]);
    expect([...unpackUint4(Uint8Array.of(0xf1, 0x80), 4)]).toEqual([1, 15, 0, 8]);
    expect(uint4At(Uint8Array.of(0xf1, 0x80), 3)).toBe(8);
    expect(() => packUint4([-1])).toThrow(/not a uint4/);
    expect(() => packUint4([16])).toThrow(/not a uint4/);
  });
});
