/**
 * The client of one worker thread, shared by the tick worker (process/worker-client.ts) and the
 * query workers (query/mergers.ts): the thread starts with the first request; each request has
 * an id and one pending promise, settled by the reply with that id; when the thread dies (an
 * error, an exit, a message that cannot be read, or no reply within `timeoutMs`) everything
 * pending on it fails and the next request starts a new thread. The thread keeps the process
 * alive only while a request is pending.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';

export interface Reply {
  id: number;
  ok: boolean;
}

export interface WorkerThreadOptions<R extends Reply> {
  url: URL;
  workerData?: unknown;
  /** The thread's heap limits (default: Node's, from the process's flags). */
  resourceLimits?: ResourceLimits;
  /** A request without its reply after this long ends the thread (default: no deadline). */
  timeoutMs?: number;
  /** The error of a request whose thread died (`why`: what happened). */
  failure: (why: string) => Error;
  /** The error of a reply with `ok: false`. */
  refusal: (reply: R & { ok: false }) => Error;
  onStart?: (w: Worker) => void;
  /** After a thread died (its pending requests failed). */
  onFail?: (why: string) => void;
}

interface Thread {
  worker: Worker;
  pending: Map<number, { resolve: (r: never) => void; reject: (e: Error) => void }>;
}

export class WorkerThread<Q extends { id: number }, R extends Reply> {
  private current: Thread | undefined;

  constructor(private readonly o: WorkerThreadOptions<R>) {}

  /** The running thread, if any. */
  get worker(): Worker | undefined {
    return this.current?.worker;
  }

  /** Ends thread `t` and fails what is pending on it. */
  private fail(t: Thread, why: string): void {
    if (this.current === t) this.current = undefined;
    else if (!t.pending.size) return; // retired or stopped, with nothing pending
    void t.worker.terminate();
    const err = this.o.failure(why);
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
    this.o.onFail?.(why);
  }

  private start(): Thread {
    const { workerData, resourceLimits } = this.o;
    const worker = new Worker(this.o.url, { ...(workerData === undefined ? {} : { workerData }), ...(resourceLimits ? { resourceLimits } : {}) });
    const t: Thread = { worker, pending: new Map() };
    worker.on('message', (m: R) => {
      const p = t.pending.get(m.id);
      if (!p) return;
      t.pending.delete(m.id);
      if (!t.pending.size) worker.unref();
      if (m.ok) p.resolve(m as never);
      else p.reject(this.o.refusal(m as R & { ok: false }));
    });
    worker.on('error', (e) => this.fail(t, e.message));
    worker.on('messageerror', (e) => this.fail(t, e.message));
    worker.on('exit', (code) => this.fail(t, `exited with code ${code}`));
    worker.unref(); // referenced only while a request is pending
    this.o.onStart?.(worker);
    return t;
  }

  /** Sends `msg` (its id unique among pending requests) and resolves with the thread's reply. */
  request(msg: Q, transfer: ArrayBuffer[] = []): Promise<R & { ok: true }> {
    return this.send((this.current ??= this.start()), msg, transfer);
  }

  private send(t: Thread, msg: Q, transfer: ArrayBuffer[] = []): Promise<R & { ok: true }> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (this.o.timeoutMs !== undefined) {
        // A thread that never answers (a loop, a lost message) fails like a crashed one.
        timer = setTimeout(() => this.fail(t, `gave no answer in ${this.o.timeoutMs! / 1000} s`), this.o.timeoutMs);
        timer.unref();
      }
      const settle =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          f(v);
        };
      t.pending.set(msg.id, { resolve: settle(resolve), reject: settle(reject) });
      t.worker.ref();
      try {
        t.worker.postMessage(msg, transfer);
      } catch (e) {
        clearTimeout(timer);
        t.pending.delete(msg.id);
        if (!t.pending.size) t.worker.unref();
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** Sends a message without a reply to the running thread (none running: nothing to tell). */
  post(msg: Q, to = this.worker): void {
    to?.postMessage(msg);
  }

  /**
   * Ends the running thread once it answered `farewell` (sent after every request before it),
   * and the next request starts a new thread. Resolves once it ended.
   */
  async retire(farewell: Q): Promise<void> {
    const t = this.current;
    if (!t) return;
    this.current = undefined;
    await this.send(t, farewell).catch(() => {});
    await t.worker.terminate();
  }

  /** Ends the thread; what is pending fails with `why`. */
  async stop(why: string): Promise<void> {
    const t = this.current;
    this.current = undefined;
    if (!t) return;
    const err = this.o.failure(why);
    for (const p of t.pending.values()) p.reject(err);
    t.pending.clear();
    await t.worker.terminate();
  }
}
