// Temporary directories for tests: each is removed when its file's tests end (a file-level afterAll), so
// `npm test` leaves nothing behind. test/setup/tmp.ts also points TMPDIR at one directory per run and removes it
// at the end, which catches what the product and child processes write to os.tmpdir() (e.g. a .comet file's
// embedded tokenizer).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made: string[] = [];
// registered when a test file imports this module (collection time: the file's own top-level hook)
afterAll(() => { for (const p of made.splice(0)) rmSync(p, { recursive: true, force: true }); });

/** A fresh directory under os.tmpdir(), removed after the importing test file's tests. */
export function tempDir(prefix = 'comet-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}
