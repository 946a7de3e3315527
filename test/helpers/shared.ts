// Test data from ../shared/models (DESIGN.md §8). Tests that need it fail loudly when it is missing: never skip.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const MODELS = fileURLToPath(new URL('../../../shared/models/', import.meta.url));
if (!existsSync(MODELS)) throw new Error(`test data missing: ${MODELS} must hold ../shared/models (DESIGN.md §8); these tests never skip`);

export const shared = (...p: string[]) => join(MODELS, ...p);
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Golden {
  prompt: string;
  prompt_tokens: number[];
  tokens: number[];
  text: string;
  top2_logit_margin: number[];
}
export const golden = (name: string): Golden => JSON.parse(readFileSync(shared('golden', name), 'utf8'));

export const readF32 = (path: string) => {
  const b = readFileSync(path);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};

/** Generated tokens must equal the golden ones; they may part only at a near-tie (top-2 logit margin below
 *  `tieMargin` at the position that predicts the first differing token), where a float backend that sums in
 *  another order may legitimately pick the other token. Returns the first differing index (length if none). */
export function assertTokensMatch(got: number[], want: Golden, tieMargin = 2e-3): number {
  let d = 0;
  while (d < want.tokens.length && got[d] === want.tokens[d]) d++;
  if (d === want.tokens.length) {
    if (got.length !== want.tokens.length) throw new Error(`generated ${got.length} tokens, golden has ${want.tokens.length}`);
    return d;
  }
  const margin = want.top2_logit_margin[d - 1];
  if (!(margin < tieMargin))
    throw new Error(`tokens differ at ${d} (got ${got[d]}, want ${want.tokens[d]}), where the golden margin is ${margin}: not a near-tie`);
  return d;
}
