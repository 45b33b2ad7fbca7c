/**
 * Where the processor's ticks are computed (`TickRunner`): in the tick worker thread
 * (tick-worker.ts runs `computeTick` there) when its compiled file exists, inline otherwise or
 * once the worker keeps failing. `TickWorker` is the client of that thread: requests with
 * transferred buffers, one pending promise per request, a deadline, and a new thread after a
 * crash.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { DictRow } from '../storage/types.js';
import type { Logger } from '../logger.js';
import { computeTick, packInput, TickState, type TickInput, type TickOutput, type WorkerReply, type WorkerRequest } from './tick.js';

/** The compiled worker entry; only beside the compiled processor (dist), not beside the .ts sources. */
export const WORKER_URL = new URL('./tick-worker.js', import.meta.url);
/** A tick failed because its worker died or went silent (not because of the tick's data). */
export class WorkerFailure extends Error {}
/** A tick's CPU part takes about a second at full load; a worker silent this long is stuck. */
const TICK_TIMEOUT_MS = 60_000;
/** Worker failures in a row after which ticks run inline. */
const WORKER_FAILURES_BEFORE_INLINE = 3;

/**
 * The tick worker thread, started on first use. When it dies (crash, uncaught error, lost
 * reply), what is pending fails like any failed tick and the next tick starts a new one, with
 * empty caches (its dictionary entries are written again: harmless).
 */
export class TickWorker {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (o: TickOutput | undefined) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly url: URL,
    private readonly log: Logger,
  ) {}

  /** Ends worker `w` (if it is the current one) and fails what is pending on it. */
  private fail(w: Worker, err: Error): void {
    if (this.worker !== w) return;
    this.worker = undefined;
    void w.terminate();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.log.error({ err: err.message }, 'tick worker failed; a new one starts with the next tick');
  }

  private start(): Worker {
    const w = new Worker(this.url);
    const fail = (err: Error) => this.fail(w, new WorkerFailure(err.message));
    w.on('message', (m: WorkerReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (!this.pending.size) w.unref();
      if (m.ok) p.resolve(m.output);
      else p.reject(new Error(m.error));
    });
    w.on('error', fail);
    w.on('messageerror', fail);
    w.on('exit', (code) => fail(new Error(`tick worker exited with code ${code}`)));
    w.unref(); // referenced only while a tick is pending
    this.log.info({ threadId: w.threadId }, 'tick worker started');
    return w;
  }

  tick(input: TickInput): Promise<TickOutput> {
    const w = (this.worker ??= this.start());
    const packed = packInput(input);
    return this.request(w, { type: 'tick', id: 0, input: packed }, [packed.bytes]) as Promise<TickOutput>;
  }

  /** Resolves once the worker dropped the account (in order: after every tick sent before). */
  async forgetAccount(accountId: string): Promise<void> {
    const w = this.worker;
    // A worker that fails meanwhile is terminated: its copies go with its thread.
    if (w) await this.request(w, { type: 'forgetAccount', id: 0, accountId }, []).catch(() => {});
  }

  heapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.worker?.getHeapSnapshot();
  }

  private request(w: Worker, msg: Extract<WorkerRequest, { id: number }>, transfer: ArrayBuffer[]): Promise<TickOutput | undefined> {
    const id = ++this.nextId;
    msg.id = id;
    return new Promise((resolve, reject) => {
      // A worker that never answers (a loop, a lost message) fails like a crashed one.
      const timer = setTimeout(() => this.fail(w, new WorkerFailure(`tick worker gave no answer in ${TICK_TIMEOUT_MS / 1000} s`)), TICK_TIMEOUT_MS);
      timer.unref();
      const settle = <T>(f: (v: T) => void) => (v: T) => {
        clearTimeout(timer);
        f(v);
      };
      this.pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      w.ref();
      try {
        w.postMessage(msg, transfer);
      } catch (e) {
        this.pending.delete(id);
        if (!this.pending.size) w.unref();
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** Cache messages; without a live worker there is no cache to change. */
  post(msg: Extract<WorkerRequest, { type: 'forgetDict' }>): void {
    this.worker?.postMessage(msg);
  }

  async stop(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    for (const p of this.pending.values()) p.reject(new Error('processor stopped'));
    this.pending.clear();
    await w?.terminate();
  }
}

/** Computes ticks in the worker thread, or inline (no compiled worker, or one that keeps failing). */
export class TickRunner {
  /** Caches of the inline path (the worker thread keeps its own). */
  private readonly state = new TickState();
  private worker: TickWorker | undefined;
  /** Ticks in a row whose worker failed (crash, silence, a file that does not load). */
  private workerFailures = 0;

  constructor(private readonly o: { worker?: boolean; workerUrl?: URL; log: Logger }) {
    const use = o.worker !== false && (o.workerUrl !== undefined || existsSync(fileURLToPath(WORKER_URL)));
    this.worker = use ? new TickWorker(o.workerUrl ?? WORKER_URL, o.log) : undefined;
  }

  /** Whether ticks run in a thread of their own (so the next one can be computed while one is written). */
  get threaded(): boolean {
    return this.worker !== undefined;
  }

  async compute(input: TickInput): Promise<TickOutput> {
    if (!this.worker) return computeTick(this.state, input);
    try {
      const out = await this.worker.tick(input);
      this.workerFailures = 0;
      return out;
    } catch (e) {
      // A worker that keeps failing (say its file does not load) must not stop processing,
      // and with it ingest (backpressure): after a few in a row, ticks run on this thread.
      if (e instanceof WorkerFailure && ++this.workerFailures >= WORKER_FAILURES_BEFORE_INLINE) {
        this.o.log.error({ failures: this.workerFailures }, 'tick worker keeps failing; processing on the main thread from now on');
        const w = this.worker;
        this.worker = undefined;
        void w.stop();
      }
      throw e;
    }
  }

  /** Dictionary entries that may not be stored: written again when seen next. */
  forgetDict(dict: DictRow[]): void {
    if (!dict.length) return;
    const keys = dict.map(({ accountId, keyVersion, kind, pseudonym }) => ({ accountId, keyVersion, kind, pseudonym }));
    if (this.worker) this.worker.post({ type: 'forgetDict', dict: keys });
    else this.state.forgetDict(keys);
  }

  /** Drops an account's cached pseudonyms and key copies in this thread and the worker (resolves once the worker did). */
  async forgetAccount(accountId: string): Promise<void> {
    this.state.forgetAccount(accountId);
    await this.worker?.forgetAccount(accountId);
  }

  heapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.worker?.heapSnapshot();
  }

  async stop(): Promise<void> {
    await this.worker?.stop();
  }
}
