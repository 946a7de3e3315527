// A backend against the simulator on a whole model: greedy tokens of each prompt on `be` and on the simulator
// summing every W4Ax GEMM in the order `be`'s kernels report (DESIGN §3.4), so a quantized model must agree
// token for token (`comet eval verify`, and the correctness gate of `comet bench e2e`).
import type { Backend } from '../../backends/backend.ts';
import { SimBackend } from '../../backends/sim/sim.ts';
import { openModel } from '../runtime/open.ts';
import { generate } from '../engine/generate.ts';

export const VERIFY_PROMPTS = ['Once upon a time', 'The history of', 'Lily and her mom'];

export interface VerifyResult {
  model: string; backend: string; prompt: string; steps: number; equal: boolean;
  tokens: number[]; reference: number[]; firstDifference: number; // -1 when equal
}

export async function verifyAgainstSim(be: Backend, path: string, prompts = VERIFY_PROMPTS, steps = 32, tokenizer?: string): Promise<VerifyResult[]> {
  const sim = new SimBackend({ gemmSchedule: be.gemmSchedule?.bind(be) });
  const a = await openModel(be, path, tokenizer), b = await openModel(sim, path, tokenizer);
  const out: VerifyResult[] = [];
  try {
    for (const prompt of prompts) {
      const ids = a.tokenizer.encode(prompt);
      const run = async (m: typeof a) => {
        const t: number[] = [];
        for await (const x of generate(m.model, ids, { maxTokens: steps, temperature: 0, topP: 0, topK: 0, seed: 0, stop: m.stop })) t.push(x);
        return t;
      };
      const tokens = await run(a), reference = await run(b);
      let d = 0;
      while (d < Math.max(tokens.length, reference.length) && tokens[d] === reference[d]) d++;
      const equal = d === tokens.length && d === reference.length;
      out.push({ model: path, backend: be.name, prompt, steps, equal, tokens, reference, firstDifference: equal ? -1 : d });
    }
  } finally {
    sim.dispose();
  }
  return out;
}
