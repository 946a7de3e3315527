#!/usr/bin/env node
// The `comet` command: TypeScript sources run through tsx (no build step to go stale).
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
