// A one-consumer async queue: the engine pushes as steps produce, the caller reads with `for await`.
// Leaving the loop early (break, throw) calls `onReturn`, which the engine uses to cancel the request.
export class Channel<T> implements AsyncIterable<T> {
  private readonly buf: T[] = [];
  private wake?: () => void;
  private done = false;
  private error?: unknown;

  constructor(private readonly onReturn: () => void = () => {}) {}

  push(v: T): void {
    if (this.done) return;
    this.buf.push(v);
    this.wake?.();
  }

  close(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    let finished = false;
    try {
      for (;;) {
        if (this.buf.length > 0) { yield this.buf.shift()!; continue; }
        if (this.done) {
          finished = true;
          if (this.error !== undefined) throw this.error;
          return;
        }
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
      }
    } finally {
      if (!finished) this.onReturn();
    }
  }
}
