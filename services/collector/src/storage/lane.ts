/**
 * The embedded engine's call lane. chDB runs one statement at a time per session: a call made
 * while another runs waits inside the engine, in no order we choose. Here calls wait in JS
 * instead, one running at a time, in two queues: urgent calls (ingest's group commit — a
 * page view's 202 waits for them) run before waiting ordinary calls (processing's inserts, the
 * poll, compaction, queries), each queue in arrival order — but at most URGENT_IN_A_ROW urgent
 * calls in a row while an ordinary call waits, so requests that saturate the engine cannot
 * starve processing. A running call is never interrupted: an urgent call waits for the call
 * running when it arrived and, at worst, one ordinary call more.
 *
 * Per kind of call (`insert <table>`, or the statement's verb and first table; `… (urgent)` for
 * urgent calls) the lane counts calls and the seconds they waited and ran (`stats`: the collector's
 * cipherstat_storage_call_seconds_total and cipherstat_storage_calls_total).
 */
import { StorageError } from './errors.js';

/** Told when a call starts to wait for the engine (true) and when it starts to run (false); a runtime without a wait (a server) never tells. */
export type WaitObserver = (waiting: boolean) => void;

/** Calls of one kind so far: how many, and the seconds they waited in the lane and ran in the engine. */
export interface CallStats {
  calls: number;
  waitSeconds: number;
  runSeconds: number;
}

interface Job {
  kind: string;
  queuedAt: number;
  start: () => void;
}

/** `SELECT batches`, `INSERT rollups`, `ALTER rollups`, …: the verb and the first table a statement names. */
export function callKind(sql: string): string {
  const verb = /^\s*(\w+)/.exec(sql)?.[1]?.toUpperCase() ?? '?';
  const table = /\b(?:FROM|INTO|TABLE|UPDATE|DATABASE)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?:\w+\.)?(\w+)/i.exec(sql)?.[1];
  return table ? `${verb} ${table}` : verb;
}

/** Most urgent calls run in a row while an ordinary call waits. */
export const URGENT_IN_A_ROW = 4;

export class CallLane {
  private running = false;
  private urgentInARow = 0;
  private readonly urgentQueue: Job[] = [];
  private readonly queue: Job[] = [];
  private readonly byKind = new Map<string, CallStats>();

  /**
   * Runs `call` once no other call of this lane runs and no urgent call (or, for an ordinary
   * call, no earlier call) waits. A call whose `signal` fires while it waits never runs (it
   * rejects with storage_unavailable); one that already runs is awaited as it is. `onWait` is
   * told true when the call is queued and false just before it runs (the engine's snapshot is
   * taken after that: query/engine.ts shares a query still waiting with identical later ones).
   */
  run<T>(kind: string, urgent: boolean, call: () => Promise<T>, signal?: AbortSignal, onWait?: WaitObserver): Promise<T> {
    const stats = this.statsOf(urgent ? `${kind} (urgent)` : kind);
    stats.calls++;
    return new Promise<T>((resolve, reject) => {
      const job: Job = {
        kind,
        queuedAt: performance.now(),
        start: () => {
          const started = performance.now();
          stats.waitSeconds += (started - job.queuedAt) / 1000;
          let done: Promise<T>;
          try {
            onWait?.(false);
            done = call();
          } catch (e) {
            done = Promise.reject(e);
          }
          done
            .then(resolve, reject)
            .finally(() => {
              stats.runSeconds += (performance.now() - started) / 1000;
              this.running = false;
              this.next();
            });
        },
      };
      if (signal) {
        if (signal.aborted) return reject(new StorageError('storage_unavailable', 'storage call abandoned before it ran'));
        signal.addEventListener(
          'abort',
          () => {
            const q = urgent ? this.urgentQueue : this.queue;
            const i = q.indexOf(job);
            if (i < 0) return; // running or done: awaited as it is
            q.splice(i, 1);
            stats.waitSeconds += (performance.now() - job.queuedAt) / 1000;
            reject(new StorageError('storage_unavailable', 'storage call abandoned before it ran'));
          },
          { once: true },
        );
      }
      (urgent ? this.urgentQueue : this.queue).push(job);
      onWait?.(true);
      this.next();
    });
  }

  private next(): void {
    if (this.running) return;
    // Urgent first, but never more than URGENT_IN_A_ROW of them while an ordinary call waits:
    // on an engine saturated by requests, processing's writes still go through (freshness, and
    // the processing lag that ingest's backpressure reads).
    const ordinaryTurn = this.queue.length > 0 && (this.urgentQueue.length === 0 || this.urgentInARow >= URGENT_IN_A_ROW);
    const job = ordinaryTurn ? this.queue.shift() : this.urgentQueue.shift();
    if (!job) return;
    this.urgentInARow = ordinaryTurn ? 0 : this.urgentInARow + 1;
    this.running = true;
    job.start();
  }

  private statsOf(kind: string): CallStats {
    let s = this.byKind.get(kind);
    if (!s) this.byKind.set(kind, (s = { calls: 0, waitSeconds: 0, runSeconds: 0 }));
    return s;
  }

  /** Totals per kind of call since the lane was made (copies). */
  stats(): Record<string, CallStats> {
    return Object.fromEntries([...this.byKind].map(([k, s]) => [k, { ...s }]));
  }
}
