/**
 * Where a query's rows are opened and merged (merge.ts): in query worker threads (worker.ts)
 * when running from the compiled files, so the heaviest legal query never holds the main thread
 * (which keeps /healthz, ingest and storage I/O); inline for small reads (posting them costs more
 * than merging) and when there is no compiled worker (tests from the sources).
 *
 * A merge is two steps around the dictionary lookup the engine does in between: `merge` opens
 * and merges, answering the groups' value pseudonyms; `finish` merges groups into the labelled
 * series and finalizes them. The worker keeps the merged aggregates in between (`drop` frees
 * them when the query fails before finishing); the data keys it received are zeroed as soon as
 * the rows are open.
 */
import { existsSync, readlinkSync } from 'node:fs';
import { availableParallelism, setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { CollectorError } from '../errors.js';
import { WorkerThread } from '../worker-thread.js';
import type { Logger } from '../logger.js';
import { finishSeries, mergeBytes, type Group, type MergePlan } from './merge.js';

/** A query's rows, opened and merged, until `finish` or `drop`. */
export interface Merging {
  rows: number;
  tooLarge: boolean;
  failed: number;
  tampered: number;
  /** Each group's group-by value pseudonyms, in merge order. */
  groups: string[][];
  /** The finalized values of `series` series, group j merged into series seriesOf[j] (−1: left out). */
  finish(seriesOf: number[], series: number): Promise<(number | null)[][]>;
  /** Frees the merge (no-op after finish). */
  drop(): void;
}

export interface Mergers {
  merge(plan: MergePlan, bytes: Uint8Array): Promise<Merging>;
  close(): Promise<void>;
}

/**
 * The nice value query worker threads run at (Linux: per thread; 0 = the process's own). On two
 * cores the two query workers, the tick worker, storage and the main thread compete for the CPU:
 * at equal priority one read token's heavy query took ~1.9 of 2 cores and the other tenants'
 * acknowledgements, processing and /healthz waited for CPU (`npm run bench abuse`). At nice 10 a
 * query thread gets about a tenth of what a busy thread at nice 0 gets while they compete, and
 * all of an idle core otherwise.
 */
export const QUERY_WORKER_NICE = 10;

/**
 * Lowers the calling thread's scheduling priority to `nice` (raising nice needs no privilege;
 * it cannot be undone by the thread). Linux only: the thread is named by its id from
 * /proc/thread-self, and setpriority(2) on a thread id changes that thread alone. Elsewhere,
 * or when refused, nothing changes. Returns the thread id changed, if any.
 */
export function lowerThreadPriority(nice: number): number | undefined {
  if (nice <= 0 || process.platform !== 'linux') return undefined;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return undefined;
    setPriority(tid, Math.min(19, nice));
    return tid;
  } catch {
    return undefined;
  }
}

/** Storage results up to this size are merged on the main thread (a few ms at most). */
export const INLINE_BYTES = 64 * 1024;

function inlineMerging(plan: MergePlan, bytes: Uint8Array): Merging {
  const m = mergeBytes(plan, bytes);
  const groups = [...m.groups.values()];
  return {
    rows: m.rows,
    tooLarge: m.tooLarge,
    failed: m.failed,
    tampered: m.tampered,
    groups: groups.map((g) => g.values),
    finish: async (seriesOf, series) => finishSeries(plan, groups, seriesOf, series),
    drop: () => {},
  };
}

/** Merges on the calling thread. */
export const inlineMergers: Mergers = {
  merge: async (plan, bytes) => inlineMerging(plan, bytes),
  close: async () => {},
};

export type MergeRequest =
  | { type: 'merge'; id: number; plan: MergePlan; bytes: Uint8Array }
  | { type: 'finish'; id: number; seriesOf: number[]; series: number }
  | { type: 'drop'; id: number };

export type MergeReply =
  | { id: number; ok: true; merged?: Omit<Merging, 'finish' | 'drop'>; values?: (number | null)[][] }
  | { id: number; ok: false; error: { status?: number; code?: string; message: string } };

/** What a worker does with one request (worker.ts); `merges` holds the groups between merge and finish. */
export function handleMergeRequest(merges: Map<number, { plan: MergePlan; groups: Group[] }>, msg: MergeRequest): MergeReply | undefined {
  try {
    switch (msg.type) {
      case 'merge': {
        let m;
        try {
          m = mergeBytes(msg.plan, msg.bytes);
        } finally {
          for (const v of msg.plan.versions) v.dataKey.fill(0); // this thread's copies
        }
        const groups = [...m.groups.values()];
        merges.set(msg.id, { plan: msg.plan, groups });
        return { id: msg.id, ok: true, merged: { rows: m.rows, tooLarge: m.tooLarge, failed: m.failed, tampered: m.tampered, groups: groups.map((g) => g.values) } };
      }
      case 'finish': {
        const m = merges.get(msg.id);
        merges.delete(msg.id);
        if (!m) throw new Error('no such merge');
        return { id: msg.id, ok: true, values: finishSeries(m.plan, m.groups, msg.seriesOf, msg.series) };
      }
      case 'drop':
        merges.delete(msg.id);
        return undefined;
    }
  } catch (e) {
    if (msg.type === 'merge' || msg.type === 'finish') merges.delete(msg.id);
    const error = e instanceof CollectorError ? { status: e.status, code: e.code, message: e.message } : { message: e instanceof Error ? e.message : String(e) };
    return { id: msg.id, ok: false, error };
  }
}

const unavailable = (why: string) => new CollectorError(503, 'query_unavailable', `the query could not be merged (${why}); retry`, 1);

/** One query worker thread, started on first use; when it dies, what is pending fails (503) and the next merge starts another (../worker-thread.ts). */
class MergeWorker {
  private readonly thread: WorkerThread<MergeRequest, MergeReply>;
  /** Merges this worker holds or is computing (load, for picking a worker). */
  load = 0;

  constructor(url: URL, log?: Logger, nice = QUERY_WORKER_NICE) {
    this.thread = new WorkerThread({
      url,
      workerData: { nice },
      failure: unavailable,
      refusal: (m) => (m.error.code ? new CollectorError(m.error.status ?? 500, m.error.code, m.error.message) : new Error(m.error.message)),
      onFail: (why) => {
        this.load = 0;
        log?.error({ err: why }, 'query worker failed; a new one starts with the next query');
      },
    });
  }

  private request(msg: MergeRequest, transfer: ArrayBuffer[] = []): Promise<MergeReply & { ok: true }> {
    return this.thread.request(msg, transfer);
  }

  private get worker(): Worker | undefined {
    return this.thread.worker;
  }

  async merge(id: number, plan: MergePlan, bytes: Uint8Array): Promise<Merging> {
    // The result bytes move to the worker (copied first when they are a view into a larger buffer).
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? bytes : bytes.slice();
    // Only the data keys themselves are sent (a view would send its whole buffer); the copies
    // made here are zeroed once posted (postMessage clones synchronously).
    const keys = plan.versions.map((v) => v.dataKey.slice());
    const sent: MergePlan = { ...plan, versions: plan.versions.map((v, i) => ({ ...v, dataKey: keys[i]! })) };
    this.load++;
    let held = false;
    try {
      const reply = this.request({ type: 'merge', id, plan: sent, bytes: own }, [own.buffer as ArrayBuffer]);
      for (const k of keys) k.fill(0);
      const r = await reply;
      held = true;
      const worker = this.worker;
      let open = true;
      const release = () => {
        if (!open) return false;
        open = false;
        if (this.worker === worker) this.load--;
        return true;
      };
      return {
        ...r.merged!,
        finish: async (seriesOf, series) => {
          if (!release()) throw new Error('merge already finished');
          return (await this.request({ type: 'finish', id, seriesOf, series })).values!;
        },
        drop: () => {
          if (release() && this.worker === worker) this.thread.post({ type: 'drop', id }, worker);
        },
      };
    } finally {
      if (!held) this.load = Math.max(0, this.load - 1);
    }
  }

  stop(): Promise<void> {
    return this.thread.stop('stopping');
  }
}

/** The compiled worker entry; only beside the compiled engine (dist), not beside the .ts sources. */
const WORKER_URL = new URL('./worker.js', import.meta.url);

/** Query workers (`size`, default: one per core up to 2), each merge on the least loaded. */
export class WorkerMergers implements Mergers {
  private readonly workers: MergeWorker[];
  private nextId = 0;

  private readonly inlineBytes: number;

  /**
   * `inlineBytes`: results up to this size are merged inline (default INLINE_BYTES; tests: 0).
   * `nice`: the workers' scheduling priority (default QUERY_WORKER_NICE; 0: the process's).
   */
  constructor(o: { url?: URL; size?: number; log?: Logger; inlineBytes?: number; nice?: number } = {}) {
    this.inlineBytes = o.inlineBytes ?? INLINE_BYTES;
    const size = o.size ?? Math.min(2, availableParallelism());
    this.workers = Array.from({ length: Math.max(1, size) }, () => new MergeWorker(o.url ?? WORKER_URL, o.log, o.nice));
  }

  /** Threads in the pool (each started with its first merge). */
  get size(): number {
    return this.workers.length;
  }

  merge(plan: MergePlan, bytes: Uint8Array): Promise<Merging> {
    if (bytes.length <= this.inlineBytes) return inlineMergers.merge(plan, bytes);
    let best = this.workers[0]!;
    for (const w of this.workers) if (w.load < best.load) best = w;
    return best.merge(++this.nextId, plan, bytes);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

/** Workers when the compiled worker exists (the service from dist), else inline. */
export const defaultMergers = (log?: Logger, size?: number, nice?: number): Mergers =>
  existsSync(fileURLToPath(WORKER_URL)) ? new WorkerMergers({ log, size, nice }) : inlineMergers;
