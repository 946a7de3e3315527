// Chat messages -> prompt token ids. A model with a chat template (tokenizer_config.json, or EngineOptions
// chatTemplate) gets it rendered by @huggingface/jinja with HF's variables (messages, tools, bos_token,
// eos_token, add_generation_prompt); the rendered text carries its own special tokens, so it is encoded
// without adding BOS. Tool calls reach the template as HF templates expect them (arguments as an object, see
// tools.ts), `tool` messages with their tool_call_id.
// A model without one (TinyStories, llama2.c checkpoints) is a plain text model: the fallback joins the
// message contents with newlines and encodes that as a completion prompt (BOS first), so a single user
// message "Once upon a time" continues the story exactly as the completion endpoint does. Tools are not
// rendered there (a text model cannot read them); forced calls are still constrained (tools.ts).
import { Template } from '@huggingface/jinja';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { EngineError } from './schema.ts';
import type { Tool, ToolCall } from './schema.ts';
import { templateMessages } from './tools.ts';

export interface ChatMessage {
  role: string;
  content: string | { type: 'text'; text: string }[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

const text = (c: ChatMessage['content']) => (c === null ? '' : typeof c === 'string' ? c : c.map((p) => p.text).join(''));

export class ChatFormatter {
  private readonly template?: Template;
  private readonly bosText: string;
  private readonly eosText: string;

  constructor(readonly tokenizer: Tokenizer, template = tokenizer.chatTemplate) {
    if (template) this.template = new Template(template);
    // special-token strings, when the tokenizer can name them (HF); '' otherwise
    const name = (id: number | undefined) => (id === undefined || id < 0 ? '' : tokenizer.tokenText(id));
    this.bosText = name(tokenizer.bos);
    this.eosText = name(tokenizer.eos[0]);
  }

  get hasTemplate(): boolean {
    return this.template !== undefined;
  }

  /** `tools`: OpenAI's list, given to the template as HF's `tools` (absent when there are none). */
  encode(messages: ChatMessage[], tools?: Tool[], addGenerationPrompt = true): number[] {
    const msgs = messages.map((m) => ({
      role: m.role, content: text(m.content), ...(m.name ? { name: m.name } : {}),
      ...(m.tool_calls ? { tool_calls: m.tool_calls } : {}), ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
    }));
    if (!this.template) return this.tokenizer.encode(msgs.map((m) => m.content).join('\n'), { bos: true });
    let rendered: string;
    try {
      rendered = this.template.render({
        messages: templateMessages(msgs), ...(tools?.length ? { tools } : {}),
        bos_token: this.bosText, eos_token: this.eosText, add_generation_prompt: addGenerationPrompt,
      });
    } catch (e) {
      // templates raise_exception() on conversations they do not accept (e.g. roles out of order)
      throw new EngineError(`chat template: ${(e as Error).message}`, 'invalid_messages', 400, 'messages');
    }
    // a template that does not emit BOS text (or a tokenizer that cannot name it) still gets BOS
    return this.tokenizer.encode(rendered, { bos: this.bosText === '' || !rendered.startsWith(this.bosText) });
  }
}
