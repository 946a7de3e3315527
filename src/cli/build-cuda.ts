// `comet build-cuda`: compile the CUDA addon where this installation looks for it (backends/cuda/addon.ts:
// build/Release/comet_cuda.node two folders above it: the repo root in a checkout, dist/ in an installed
// package, which ships the CUDA sources in dist/cuda). What `npm run build:cuda` does in a checkout.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CometError } from '../errors.ts';

const has = (cmd: string) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;

export async function buildCuda(o: { print?: boolean } = {}): Promise<void> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const steps = [['-S', `${root}cuda`, '-B', `${root}build`, '-DCMAKE_BUILD_TYPE=Release'], ['--build', `${root}build`, '-j']];
  if (o.print) {
    for (const args of steps) console.log(`cmake ${args.join(' ')}`);
    return;
  }
  const missing = ['nvcc', 'cmake'].filter((c) => !has(c));
  if (missing.length)
    throw new CometError(`build-cuda needs ${missing.join(' and ')} on the PATH (the CUDA toolkit >= 13 and CMake >= 3.25); install them, then run \`npx comet build-cuda\` again`);
  for (const args of steps) {
    const r = spawnSync('cmake', args, { stdio: 'inherit' });
    if (r.status !== 0) throw new CometError(`cmake ${args.join(' ')} failed (exit ${r.status}); its output is above`);
  }
  console.log(`built ${root}build/Release/comet_cuda.node: run with --backend cuda`);
}
