/**
 * Where the processor's ticks are computed (`TickRunner`): in the tick worker thread
 * (tick-worker.ts runs `computeTick` there) when its compiled file exists, inline otherwise or
 * once the worker keeps failing. `TickWorker` is the client of that thread (../worker-thread.ts:
 * requests with transferred buffers, one pending promise each, a deadline, a new thread after a
 * crash).
 *
 * State goes one way: the main thread sends each tick its batches and its accounts' keys; the
 * thread owns what it derives from them (pseudonym functions, series, the dictionary entries it
 * emitted, cardinality counts, its key copies). Nobody tells it what to forget: the entries of
 * a tick that is not written stay the processor's to write with the next tick
 * (processor.ts `unwritten`), and a shred or wipe retires the thread, so everything it held of
 * every account goes with it (the inline state, on the main thread, drops the account).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger.js';
import { WorkerThread } from '../worker-thread.js';
import { computeTick, packInput, TickState, type SentTickOutput, type TickInput, type TickOutput, type WorkerReply, type WorkerRequest } from './tick.js';

/** The compiled worker entry; only beside the compiled processor (dist), not beside the .ts sources. */
export const WORKER_URL = new URL('./tick-worker.js', import.meta.url);
/** A tick failed because its worker died or went silent (not because of the tick's data). */
export class WorkerFailure extends Error {}
/** A tick's CPU part takes about a second at full load; a worker silent this long is stuck. */
const TICK_TIMEOUT_MS = 60_000;
/** Worker failures in a row after which ticks run inline. */
const WORKER_FAILURES_BEFORE_INLINE = 3;
/**
 * The tick worker's young generation (V8's new space: 3 × its semi-space, 64 MB here against
 * Node's default of 16). A tick allocates hundreds of MB of short-lived objects (opened points,
 * aggregates, sealed rows) while it also holds what the tick is building: with 16 MB semi-spaces
 * a scavenge came every few ms and copied the tick's live part each time, on V8's helper threads
 * (Node's other threads in the storefront bench) as much as on the worker. Bigger semi-spaces
 * mean fewer scavenges, each copying about as much. Costs up to ~100 MB more of committed memory,
 * once.
 */
export const TICK_YOUNG_GENERATION_MB = 192;

/**
 * The tick worker thread, started on first use. When it dies (crash, uncaught error, lost
 * reply), what is pending fails like any failed tick and the next tick starts a new one, with
 * empty caches (its dictionary entries are written again: harmless). The thread owns its caches
 * and key copies: nothing here tells it what to forget; `retire` ends it (it zeroes its key
 * copies first) and the next tick starts a new one.
 */
export class TickWorker {
  private nextId = 0;
  private readonly thread: WorkerThread<WorkerRequest, WorkerReply>;

  constructor(url: URL, log: Logger) {
    this.thread = new WorkerThread({
      url,
      timeoutMs: TICK_TIMEOUT_MS,
      resourceLimits: { maxYoungGenerationSizeMb: TICK_YOUNG_GENERATION_MB },
      failure: (why) => new WorkerFailure(`tick worker ${why}`),
      refusal: (m) => new Error(m.error),
      onStart: (w) => log.info({ threadId: w.threadId }, 'tick worker started'),
      onFail: (why) => log.error({ err: `tick worker ${why}` }, 'tick worker failed; a new one starts with the next tick'),
    });
  }

  async tick(input: TickInput): Promise<SentTickOutput> {
    const packed = packInput(input);
    return (await this.thread.request({ type: 'tick', id: ++this.nextId, input: packed }, [packed.bytes])).output!;
  }

  /** Ends the thread after the ticks sent before (it zeroes its key copies, then exits); resolves once it ended. */
  retire(): Promise<void> {
    return this.thread.retire({ type: 'retire', id: ++this.nextId });
  }

  heapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.thread.worker?.getHeapSnapshot();
  }

  stop(): Promise<void> {
    return this.thread.stop('processor stopped');
  }
}

/** Computes ticks in the worker thread, or inline (no compiled worker, or one that keeps failing). */
export class TickRunner {
  /** Caches of the inline path (the worker thread keeps its own). */
  private state = new TickState();
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

  /** A tick's output: computed on this thread, or as the tick worker posted it (without its row objects). */
  async compute(input: TickInput): Promise<TickOutput | SentTickOutput> {
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

  /**
   * Drops what any thread derived from an account (shred, wipe): inline, its entries; the worker
   * thread is retired whole (after the ticks sent before; it zeroes its key copies), and the next
   * tick starts a new one with empty caches. Resolves once the thread ended.
   */
  async forgetAccount(accountId: string): Promise<void> {
    this.state.forgetAccount(accountId);
    await this.worker?.retire();
  }

  /** Starts every cache afresh (a new worker thread, empty inline caches): everything is derived and emitted again. */
  async reset(): Promise<void> {
    this.state = new TickState();
    await this.worker?.retire();
  }

  heapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.worker?.heapSnapshot();
  }

  async stop(): Promise<void> {
    await this.worker?.stop();
  }
}
