// `comet chat` as a user drives it: through a pipe (every line a message, replies streamed, /reset, /exit),
// and through a pseudo-terminal (Ctrl-C stops the reply, not the program). Expected replies are computed by
// `comet run` on the prompt the chat must have built (greedy, so both are deterministic), never hard-coded.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, shared } from './helpers/shared.ts';

const COMET = join(REPO, 'bin/comet.js');
const tmp = mkdtempSync(join(tmpdir(), 'comet-chat-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const chat = (input: string, ...args: string[]) => {
  const r = spawnSync(process.execPath, [COMET, 'chat', '--temperature', '0', ...args], { input, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, lines: r.stdout.split('\n'), stdout: r.stdout, stderr: r.stderr };
};
/** what `comet run` greedy prints after the prompt (run prints the prompt first) */
const continuation = (prompt: string, n: number, ...args: string[]) => {
  const r = spawnSync(process.execPath, [COMET, 'run', prompt, '--temperature', '0', '--max-tokens', String(n), ...args], { encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout.startsWith(prompt)).toBe(true);
  return r.stdout.slice(prompt.length).replace(/\n$/, '');
};

/** stories260K beside a chat template that joins the messages with spaces: the reply to a conversation is
 *  then the greedy continuation of that joined text, which `comet run` computes independently. */
function templatedModel(): string {
  const dir = mkdtempSync(join(tmp, 'tmpl-'));
  copyFileSync(shared('tinyllamas/stories260K.bin'), join(dir, 'stories260K.bin'));
  copyFileSync(shared('tinyllamas/tok512.bin'), join(dir, 'tokenizer.bin'));
  writeFileSync(join(dir, 'chat_template.jinja'), '{% for m in messages %}{{ m.content }}{% if not loop.last %} {% endif %}{% endfor %}');
  return join(dir, 'stories260K.bin');
}

describe('comet chat through a pipe', () => {
  it('a plain text model: one reply per line, /reset forgets, /exit quits with status 0', () => {
    const r = chat('Once upon a time\n/reset\nOnce upon a time\n/exit\nnever read\n', '--max-tokens', '20');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no chat template/);
    const [a, b, rest] = [r.lines[0], r.lines[1], r.lines.slice(2).join('')];
    expect(a).toBe(continuation('Once upon a time', 20));
    expect(b).toBe(a); // after /reset the same message gets the same (greedy) reply: no history
    expect(rest).toBe('');
  });

  it('the chat template renders the system prompt and the history; replies stream into it', () => {
    const model = templatedModel();
    const r = chat('there was a\nand\n', '--model', model, '--system', 'Once upon a time', '--max-tokens', '12');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/no chat template/);
    const first = continuation('Once upon a time there was a', 12, '--model', model);
    expect(r.lines[0]).toBe(first);
    // turn 2 sees system + turn 1 (message and reply) + the new message, joined by the template
    expect(r.lines[1]).toBe(continuation(`Once upon a time there was a ${first} and`, 12, '--model', model));
  });

  it('an unknown command is named, the session goes on; end of input ends it', () => {
    const r = chat('/frobnicate\nOnce\n', '--max-tokens', '4');
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/unknown command \/frobnicate/);
    expect(r.lines[0]).toBe(continuation('Once', 4));
  });

  it('SIGINT (Ctrl-C from a shell) stops the reply being written, and the program takes the next line', async () => {
    const p = spawn(process.execPath, [COMET, 'chat', '--temperature', '1', '--seed', '3', '--max-tokens', '500'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const until = async (f: () => boolean, ms = 30_000) => {
      for (const t0 = Date.now(); !f(); await new Promise((r) => setTimeout(r, 20))) if (Date.now() - t0 > ms) throw new Error(`timed out; output so far: ${out}`);
    };
    p.stdin.write('Once upon a time\n');
    await until(() => out.length > 0);
    p.kill('SIGINT');
    await until(() => out.includes('\n'));
    const stopped = out.split('\n')[0];
    p.stdin.write('Once\n/exit\n');
    const status = await new Promise<number | null>((r) => p.on('exit', r));
    expect(status).toBe(0);
    expect(out.split('\n').length).toBeGreaterThanOrEqual(3); // the stopped reply, the next reply, the end
    expect(stopped.length).toBeLessThan(1500); // 500 tokens of TinyStories would be ~2000 characters
  });
});

const python = spawnSync('python3', ['-c', 'import pty'], { stdio: 'ignore' }).status === 0;
describe('comet chat in a terminal', () => {
  // python3's pty module is the terminal: readline then reads Ctrl-C as a key (raw mode), as in a real one
  const drive = (script: string) => {
    const f = join(tmp, 'drive.py');
    writeFileSync(f, `import os, pty, time, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(${JSON.stringify(process.execPath)}, [${JSON.stringify(process.execPath)}, ${JSON.stringify(COMET)}, 'chat', '--temperature', '1', '--seed', '1', '--max-tokens', '500'])
buf = b''
def pump(sec):
    global buf
    end = time.time() + sec
    while time.time() < end:
        if select.select([fd], [], [], 0.02)[0]:
            try: buf += os.read(fd, 4096)
            except OSError: return
def wait(s, sec=30):
    end = time.time() + sec
    while s not in buf and time.time() < end: pump(0.05)
    if s not in buf: sys.exit('timed out waiting for %r; screen: %r' % (s, buf[-500:]))
${script}
_, status = os.waitpid(pid, 0)
sys.stdout.write(buf.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`);
    return spawnSync('python3', [f], { encoding: 'utf8', timeout: 60_000 });
  };
  it.skipIf(!python)(`Ctrl-C stops the reply and the prompt comes back; Ctrl-C twice at the prompt quits${python ? '' : ' (SKIPPED: no python3 pty module to act as the terminal)'}`, () => {
    const r = drive(`wait(b'>>> ')
os.write(fd, b'Once upon a time\\r')
pump(0.3)
os.write(fd, b'\\x03')
wait(b'[stopped]')
wait(b'>>> ')
os.write(fd, b'\\x03')
wait(b'again')
os.write(fd, b'\\x03')
pump(2)`);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/\[stopped\][\s\S]*>>> [\s\S]*Ctrl-C again/);
  });
});
