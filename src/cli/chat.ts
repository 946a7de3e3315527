// `comet chat`: an interactive conversation, as `ollama run` and `llama-cli -cnv` hold one.
//
//   - each line typed is a user message; the reply streams as it is generated (the engine's chat endpoint: the
//     model's chat template, or for a plain text model such as stories260K the messages joined as text)
//   - the whole conversation is sent each turn (history); when it outgrows the context, the oldest turns are
//     dropped (the system prompt stays), as Ollama does
//   - Ctrl-C stops the reply being written, not the program; at the prompt, Ctrl-C twice (or Ctrl-D, /exit,
//     /bye) quits. /reset forgets the conversation, /help lists the commands
//   - stdin may be a terminal or a pipe (`printf 'Hi\n' | comet chat`): a pipe gets no prompt marks, only the
//     replies, one per line, and the program ends at the end of its input
import { createInterface } from 'node:readline';
import type { ChatParams } from '../engine/engine.ts';

type Message = ChatParams['messages'][number];

export interface ChatOptions {
  model?: string; tokenizer?: string; backend: string; system?: string;
  maxTokens?: number; temperature: number; topP: number; topK: number; seed?: number; verbose?: boolean;
}

const HELP = `commands: /reset (forget the conversation) · /exit or /bye (quit) · /help
Ctrl-C stops a reply; at the prompt, Ctrl-C twice or Ctrl-D quits`;

/** The conversation: system prompt, then user/assistant turns. */
export class Conversation {
  messages: Message[] = [];
  constructor(readonly system?: string) {
    this.reset();
  }
  reset(): void {
    this.messages = this.system ? [{ role: 'system', content: this.system }] : [];
  }
  /** Drop the oldest user/assistant turn (never the system prompt); false when there is none left to drop. */
  dropOldest(): boolean {
    const first = this.messages.findIndex((m) => m.role !== 'system');
    if (first < 0 || first >= this.messages.length - 1) return false; // only the message being answered is left
    const next = this.messages.findIndex((m, i) => i > first && m.role === 'user');
    this.messages.splice(first, (next < 0 ? this.messages.length - 1 : next) - first);
    return true;
  }
}

export async function chat(o: ChatOptions): Promise<void> {
  const { createEngine } = await import('../engine/engine.ts');
  const tty = process.stdin.isTTY === true;
  const err = process.stderr, out = process.stdout;
  const engine = await createEngine(o.model, { backend: o.backend, tokenizer: o.tokenizer, maxBatch: 1, onProgress: (p) => tty && p.phase === 'loading' && err.write(`${p.message}\n`) });
  if (!engine.tokenizer.chatTemplate)
    err.write(`${engine.modelId} has no chat template: each reply continues the conversation as plain text\n`);
  if (tty) err.write(`${HELP}\n`);
  const conv = new Conversation(o.system);
  const rl = createInterface({ input: process.stdin, output: tty ? out : undefined, terminal: tty, prompt: '>>> ' });
  let reply: AbortController | undefined;
  let interrupts = 0;
  const onInterrupt = () => {
    if (reply) { reply.abort(); return; }
    if (++interrupts >= 2) finish();
    else { out.write('\n(Ctrl-C again, Ctrl-D or /exit to quit)\n'); rl.prompt(); }
  };
  rl.on('SIGINT', onInterrupt); // a terminal: readline reads Ctrl-C as a key
  process.on('SIGINT', onInterrupt); // a pipe: Ctrl-C reaches the process as a signal
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    rl.close();
    engine.close();
    process.exit(0);
  };

  const turn = async (text: string) => {
    conv.messages.push({ role: 'user', content: text });
    reply = new AbortController();
    let content = '', tokens = 0;
    const t0 = performance.now();
    try {
      for (;;) {
        try {
          const stream = await engine.chat.completions.create({
            messages: conv.messages, stream: true, max_tokens: o.maxTokens, temperature: o.temperature, top_p: o.topP, top_k: o.topK, seed: o.seed,
          }, { signal: reply.signal });
          for await (const c of stream) {
            const d = c.choices[0]?.delta.content;
            if (d) { out.write(d); content += d; tokens++; }
          }
          break;
        } catch (e) {
          // the conversation outgrew the context: forget the oldest turn and ask again
          if ((e as { code?: string }).code === 'context_length_exceeded' && content === '' && conv.dropOldest()) continue;
          throw e;
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') {
        conv.messages.pop(); // the message got no answer: it leaves the history
        err.write(`${content ? '\n' : ''}comet: error: ${(e as Error).message}\n`);
        return;
      }
      if (tty) err.write(' [stopped]');
    } finally {
      reply = undefined;
    }
    out.write('\n');
    // what was shown stays in the history, a stopped reply too (llama.cpp and Ollama keep it as well)
    conv.messages.push({ role: 'assistant', content });
    if (o.verbose) err.write(`${tokens} chunks, ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
  };

  rl.prompt();
  for await (const line of rl) {
    interrupts = 0;
    const text = line.trim();
    if (text === '/exit' || text === '/bye') break;
    if (text === '/reset' || text === '/clear') {
      conv.reset();
      if (tty) err.write('(conversation reset)\n');
    } else if (text === '/help' || text === '/?') err.write(`${HELP}\n`);
    else if (text.startsWith('/')) err.write(`unknown command ${text.split(/\s/)[0]}; ${HELP}\n`);
    else if (text) await turn(text);
    rl.prompt();
  }
  finish();
}
