// The fuzz runner (parent side): runs cases (testing/fuzz/cases.ts) in a child process (worker.ts beside this
// file), one at a time, each with a deadline. Used by test/fuzz.test.ts and bench/fuzz/run.ts.
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CaseRef, caseOf, type Outcome } from './cases.ts';

export interface RunOptions {
  deadlineMs?: number; // per case
  onOutcome?: (o: Outcome, done: number) => void;
  heapMb?: number;
}

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));

/** Run cases in a child process, one at a time, each with a deadline; a worker that hangs is killed and one
 *  that dies is restarted, and the case is recorded as a hang / crash. A case that ran past its deadline is
 *  first run once more in a fresh worker (a loaded machine can stall one case for seconds): only a second
 *  time out is a hang. */
export async function runCases(ids: CaseRef[], o: RunOptions = {}): Promise<Outcome[]> {
  const deadline = o.deadlineMs ?? 10_000;
  const out: Outcome[] = [];
  const retried = new Set<number>();
  let next = 0;
  const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'comet-fuzz-'));
  try {
    while (next < ids.length) {
      await new Promise<void>((resolve) => {
        const child: ChildProcess = fork(WORKER, [work], {
          execArgv: ['--import', 'tsx', `--max-old-space-size=${o.heapMb ?? 768}`, '--stack-size=984'],
          stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
          serialization: 'advanced',
        });
        let stderr = '', current = -1, timer: NodeJS.Timeout | undefined, finished = false, lost: Outcome | undefined;
        child.stderr!.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
        const record = (x: Outcome) => {
          out.push(x);
          o.onOutcome?.(x, out.length);
        };
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(() => {
            if (retried.has(current)) {
              lost = { id: idOf(ids[current]), kind: 'hang', message: `no result after ${deadline} ms, twice` };
              next = current + 1;
            } else {
              retried.add(current);
              next = current;
              finished = true; // not a result: the same case again, in a fresh worker
            }
            child.kill('SIGKILL');
          }, deadline);
        };
        child.on('message', (m: any) => {
          if (m.type === 'start') {
            current = m.i;
            arm();
          } else if (m.type === 'done') {
            clearTimeout(timer);
            record(m.outcome);
            next = m.i + 1;
            if (next >= ids.length) {
              finished = true;
              child.kill();
            }
          }
        });
        child.on('exit', async (code, signal) => {
          clearTimeout(timer);
          if (!finished) {
            const i = lost ? next - 1 : current >= next ? current : next;
            lost ??= { id: idOf(ids[i]), kind: 'crash', message: `worker exited (code ${code}, signal ${signal}): ${stderr.slice(-600)}` };
            lost.mutation = (await caseOf(ids[i])).mutation;
            record(lost);
            next = i + 1;
          }
          resolve();
        });
        child.send({ type: 'run', cases: ids.slice(next), offset: next });
      });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}

const idOf = (c: CaseRef) => ('id' in c ? c.id : `${c.format}:${c.seed}:${c.index}`);

/** A message with the case path and numbers taken out, for counting errors by class. */
export function messageClass(msg: string, caseDir?: string): string {
  let s = caseDir ? msg.split(caseDir).join('<case>') : msg;
  s = s.replace(/\/[\w./+-]*comet-fuzz-[\w./+-]*/g, '<path>').replace(/(?<![A-Za-z_])-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N').replace(/'[^']*'/g, "'…'").replace(/"[^"]*"/g, '"…"');
  return s.slice(0, 110);
}
