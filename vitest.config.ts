import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // one TMPDIR per run, removed at the end (tests write only to temporary directories)
    globalSetup: ['test/setup/tmp.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // 2-core CI machines: a few files at a time, each in its own process
    pool: 'forks',
    maxWorkers: 2,
  },
});
