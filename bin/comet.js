#!/usr/bin/env node
// The `comet` command. An installed package runs its built JavaScript (dist/, made by scripts/build.mjs at
// `npm pack`); a git checkout, where the TypeScript sources sit beside this file, runs them through tsx (a
// devDependency), so tests and benchmarks never run a stale build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import('../dist/src/cli/main.js');
}
