// The browser demo's models: `comet quantize` (src/cli/quantize.ts) run on a float checkpoint, written where the
// demo's server finds them (build/demo/, web/vite.config.ts serves it under /models/).
//
//   npx tsx scripts/build-demo-model.ts                    wikillama-28M.comet (~15 MB; the demo's default) and stories260K.comet
//   npx tsx scripts/build-demo-model.ts stories260K        one of them
//   npx tsx scripts/build-demo-model.ts --out models stories260K   the small W4A4KV4 model that ships in models/ (the demo default without build/demo)
//   npx tsx scripts/build-demo-model.ts --out DIR --calib-tokens N stories260K
//
// wikillama-28M: hidden 512 / intermediate 1408, B = 128, calibrated on the tail of wiki_heldout_a.txt.
// stories260K (dim 64): B = 32, calibrated on the tail of the TinyStories validation head. Both KV4, RTN weights.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantize } from '../src/cli/quantize.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const SHARED = join(REPO, '../shared/models');

export const DEMO_MODELS = {
  'wikillama-28M': { model: join(SHARED, 'wikillama-28M'), tokenizer: undefined, calib: join(SHARED, 'texts/wiki_heldout_a.txt'), block: 128 },
  stories260K: { model: join(REPO, 'models/stories260K.bin'), tokenizer: join(REPO, 'models/tok512.bin'), calib: join(SHARED, 'texts/tinystories_valid_head.txt'), block: 32 },
} as const;
export type DemoModelName = keyof typeof DEMO_MODELS;

/** Quantize one demo model into `out` (default build/demo); returns the .comet path. */
export async function buildDemoModel(name: DemoModelName, o: { out?: string; calibTokens?: number; ctx?: number } = {}): Promise<string> {
  const m = DEMO_MODELS[name];
  for (const p of [m.model, m.calib]) if (!existsSync(p)) throw new Error(`${p} is missing (the demo models are built from ../shared/models and models/)`);
  const dir = o.out ?? join(REPO, 'build/demo');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `${name}.comet`);
  await quantize({
    model: m.model, tokenizer: m.tokenizer, calib: m.calib, out, block: m.block, weights: 'rtn', order: 'absmax', kv: 'kv4',
    calibTokens: o.calibTokens ?? 2048, ctx: o.ctx ?? 512,
  });
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2), names: DemoModelName[] = [];
  let out: string | undefined, calibTokens: number | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--out') out = args[++i];
    else if (args[i] === '--calib-tokens') calibTokens = Number(args[++i]);
    else if (args[i] in DEMO_MODELS) names.push(args[i] as DemoModelName);
    else {
      console.error(`usage: build-demo-model.ts [--out DIR] [--calib-tokens N] [${Object.keys(DEMO_MODELS).join(' | ')} ...]`);
      process.exit(2);
    }
  }
  for (const n of names.length ? names : (Object.keys(DEMO_MODELS) as DemoModelName[])) await buildDemoModel(n, { out, calibTokens });
}
