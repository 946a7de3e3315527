// The one assertion of the bad-input tests: `f` throws (or rejects with) a CometError whose message contains
// every fragment (what was wrong and where).
import { expect } from 'vitest';
import { CometError } from '../../src/errors.ts';

export async function expectCometError(f: () => unknown, ...fragments: string[]): Promise<void> {
  const err = await Promise.resolve().then(f).then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a CometError').toBeInstanceOf(CometError);
  for (const s of fragments) expect((err as Error).message).toContain(s);
}
