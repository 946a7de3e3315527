// Vitest global setup: one temporary directory per run as TMPDIR for every test worker and the processes they
// spawn (the CLI, `comet serve`, fuzz workers), removed when the run ends. Tests write only there: the tracked
// tree (bench/results included) and /tmp stay as they were.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'comet-test-run-'));
  process.env.TMPDIR = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
