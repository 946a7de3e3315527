// 4-bit canonical packing (DESIGN §3.1): element 2i in the low nibble of byte i, element 2i+1 in the high
// nibble; an odd tail is padded with a 0 nibble. Signed int4 (two's complement, -8..7) is what activations
// and weights use; unsigned uint4 (0..15) is the KV4 cache's code, same nibble order.

/** vals (integers -8..7) -> ceil(n/2) bytes */
export function packInt4(vals: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array((vals.length + 1) >> 1);
  let i = 0;
  // Int8Array codes (what the quantizers make; an 8B layer has ~220 M): two at a time while both are int4; the
  // loop below takes the rest (an odd tail, or the element it then reports)
  if (vals instanceof Int8Array)
    for (; i + 1 < vals.length; i += 2) {
      const a = vals[i], b = vals[i + 1];
      if (((a + 8) | (b + 8)) >>> 4) break;
      out[i >> 1] = (a & 0xf) | ((b & 0xf) << 4);
    }
  for (; i < vals.length; i++) {
    const v = vals[i];
    if (!(v >= -8 && v <= 7 && Number.isInteger(v))) throw new RangeError(`packInt4: element ${i} = ${v} is not an int4 (-8..7)`);
    out[i >> 1] |= (v & 0xf) << ((i & 1) << 2);
  }
  return out;
}

/** element i of packed signed int4 data */
export const int4At = (bytes: Uint8Array, i: number): number => (((bytes[i >> 1] >>> ((i & 1) << 2)) & 0xf) << 28) >> 28;

/** first n elements of packed signed int4 data -> Int8Array [n] */
export function unpackInt4(bytes: Uint8Array, n: number, out = new Int8Array(n)): Int8Array {
  if (bytes.length * 2 < n) throw new RangeError(`unpackInt4: ${bytes.length} bytes hold fewer than ${n} elements`);
  for (let i = 0; i + 1 < n; i += 2) {
    const b = bytes[i >> 1];
    out[i] = ((b & 0xf) << 28) >> 28;
    out[i + 1] = (b << 24) >> 28;
  }
  if (n & 1) out[n - 1] = ((bytes[n >> 1] & 0xf) << 28) >> 28;
  return out;
}

/** vals (integers 0..15) -> ceil(n/2) bytes */
export function packUint4(vals: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array((vals.length + 1) >> 1);
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i];
    if (!(v >= 0 && v <= 15 && Number.isInteger(v))) throw new RangeError(`packUint4: element ${i} = ${v} is not a uint4 (0..15)`);
    out[i >> 1] |= v << ((i & 1) << 2);
  }
  return out;
}

export const uint4At = (bytes: Uint8Array, i: number): number => (bytes[i >> 1] >>> ((i & 1) << 2)) & 0xf;

export function unpackUint4(bytes: Uint8Array, n: number, out = new Uint8Array(n)): Uint8Array {
  if (bytes.length * 2 < n) throw new RangeError(`unpackUint4: ${bytes.length} bytes hold fewer than ${n} elements`);
  for (let i = 0; i < n; i++) out[i] = uint4At(bytes, i);
  return out;
}
