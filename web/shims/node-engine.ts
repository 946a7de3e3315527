// Stand-ins for src/runtime/open.ts and src/runtime/backends.ts in the browser bundle (web/vite.config.ts):
// engine.ts' createEngine(path) opens files with node:fs; comet/web's createEngine opens bytes instead.
import { CometError } from '../../src/errors.ts';

const nodeOnly = (what: string): never => {
  throw new CometError(`${what} needs Node.js; in the browser use createEngine from 'comet/web' (a URL, a File or bytes)`);
};
export const openModel = (): never => nodeOnly('opening a model from a path');
export const createBackend = (): never => nodeOnly('creating a backend by name');
