/**
 * Where a query's rows are opened and merged (merge.ts): in query worker threads (worker.ts)
 * when running from the compiled files, so the heaviest legal query never holds the main thread
 * (which keeps /healthz, ingest and storage I/O); inline for small reads (posting them costs more
 * than merging) and when there is no compiled worker (tests from the sources).
 *
 * A merge is a session (`begin`): the engine adds each statement's rows as storage answers them
 * (engine.ts readInStatements) and the workers merge them meanwhile; `end` answers the groups'
 * value pseudonyms; `finish` (after the engine's dictionary lookup) merges groups into the
 * labelled series and finalizes them. One query uses every idle worker: while a worker has no
 * merge of its own it helps a query with rows waiting (each statement is then cut into parts of
 * whole UTC days — whole hours at minute level — so every part merges alone, the scope of
 * supersedes.ts). At the end (`close`) each worker names the buckets it holds cells of; the
 * cells of a bucket two workers hold (a zone's bucket across a cut between days) are handed over
 * encoded (`export`) to the query's own worker, which merges them in (`absorb`); then each worker
 * finishes the buckets it holds — the same aggregates the single worker computes. Under
 * concurrent queries no worker is idle: each query is merged by one worker, as before. Limits
 * are counted across parts: the rows by the session (more than `maxRows`: nothing more is
 * merged, `tooLarge`), the groups when merged together (too_many_series). The worker
 * keeps the merged aggregates until `finish` (`drop` frees them when the query fails before
 * finishing); the data keys it received are zeroed when its part of the merge is done.
 */
import { existsSync, readlinkSync } from 'node:fs';
import { availableParallelism, setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { CollectorError } from '../errors.js';
import { WorkerThread } from '../worker-thread.js';
import type { Logger } from '../logger.js';
import { emptyAggregate, emptyScalars, mergeEncoded, encodeAggregate, RollupError, LEVEL } from '../rollup/index.js';
import { dayOf, HOUR_MS } from '../rollup/days.js';
import { splitStoredRows } from '../storage/queries.js';
import { finishCells, finishSeries, groupKey, mergeBytes, tooManySeries, unpackValues, type FinishedValues, type Group, type MergePlan } from './merge.js';

/** A query's rows, opened and merged, until `finish` or `drop`. */
export interface Merging {
  rows: number;
  tooLarge: boolean;
  failed: number;
  tampered: number;
  /** Each group's group-by value pseudonyms, in merge order. */
  groups: string[][];
  /** ms the rows' open and merge took, summed over the threads that did it (engine.ts QueryTiming.openMs). */
  openMs?: number;
  /** The finalized values of `series` series, group j merged into series seriesOf[j] (−1: left out). */
  finish(seriesOf: number[], series: number): Promise<(number | null)[][]>;
  /** Frees the merge (no-op after finish). */
  drop(): void;
}

/** One query's merge: its rows added as read, then `end`. */
export interface MergeSession {
  /** The rows of one statement (storage's RowBinary answer) and how many they are. */
  add(bytes: Uint8Array, rows: number): void;
  /** After the last `add`: the merge (rows over plan.maxRows: `tooLarge`, groups empty). */
  end(): Promise<Merging>;
  /** The read failed: frees what was merged (no `end`). */
  abort(): void;
}

export interface Mergers {
  begin(plan: MergePlan): MergeSession;
  close(): Promise<void>;
}

/** Merges `bytes` as one statement's rows (tests, small callers). */
export async function mergeOnce(mergers: Mergers, plan: MergePlan, bytes: Uint8Array, rows: number): Promise<Merging> {
  const s = mergers.begin(plan);
  s.add(bytes, rows);
  return s.end();
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
 * A query worker's young generation (V8's new space: 3 × its semi-space, 64 MB here against
 * Node's default of 16), as the tick worker's (process/worker-client.ts). A merge holds its rows,
 * their opened payloads and its cells until finish while it allocates tens of MB of short-lived
 * numbers and arrays (a 30-day hourly p95 in a zone at 2M points: ~34 MB): with 16 MB semi-spaces
 * several scavenges per query each copied the merge's live part. Merge + finish of the kept 2M
 * state's rows in a worker thread, 20 rounds, Node's default vs this, twice interleaved at load
 * 11-16 (fastest round, ms): 30-day hourly p95 by country 33.5/28.6 -> 23.3/23.1, the same in
 * Asia/Kolkata 64.2/62.4 -> 51.8/49.0, 24 h minute p95 105.1/105.3 -> 77.5/75.2; sums unchanged.
 * Committed only as a worker's queries need it: up to ~150 MB more per worker.
 */
export const QUERY_YOUNG_GENERATION_MB = 192;

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

/** Storage results up to this size (a query's statements together) are merged on the main thread (a few ms at most). */
export const INLINE_BYTES = 64 * 1024;

const concat = (parts: Uint8Array[]): Uint8Array => (parts.length === 1 ? parts[0]! : Buffer.concat(parts));

function tooLargeMerging(rows: number): Merging {
  return { rows, tooLarge: true, failed: 0, tampered: 0, groups: [], finish: async () => Promise.reject(new Error('merge too large')), drop: () => {} };
}

function inlineMerging(plan: MergePlan, bytes: Uint8Array): Merging {
  const t = performance.now();
  const m = mergeBytes(plan, bytes);
  const openMs = performance.now() - t;
  const groups = [...m.groups.values()];
  return {
    openMs,
    rows: m.rows,
    tooLarge: m.tooLarge,
    failed: m.failed,
    tampered: m.tampered,
    groups: groups.map((g) => g.values),
    finish: async (seriesOf, series) => finishSeries(plan, groups, seriesOf, series),
    drop: () => {},
  };
}

/** Collects a query's statements and merges them on the calling thread at `end` (as one read). */
class InlineSession implements MergeSession {
  readonly parts: Uint8Array[] = [];
  bytes = 0;
  rows = 0;
  constructor(readonly plan: MergePlan) {}
  add(bytes: Uint8Array, rows: number): void {
    this.rows += rows;
    if (this.rows > this.plan.maxRows) this.parts.length = 0; // refused at end: nothing more kept
    else {
      this.parts.push(bytes);
      this.bytes += bytes.length;
    }
  }
  async end(): Promise<Merging> {
    return this.rows > this.plan.maxRows ? tooLargeMerging(this.rows) : inlineMerging(this.plan, concat(this.parts));
  }
  abort(): void {
    this.parts.length = 0;
  }
}

/** Merges on the calling thread. */
export const inlineMergers: Mergers = {
  begin: (plan) => new InlineSession(plan),
  close: async () => {},
};

/** A worker's groups handed to another worker (`export`): the groups' values, and per cell (group, bucket, end offset) into `cells`, the encoded aggregates. */
export interface ExportedGroups {
  values: string[][];
  index: Uint32Array;
  cells: Uint8Array;
}

/**
 * Encodes merged groups for another worker (mergeEncoded-able: exact for every field and sketch):
 * every cell, or only those of `buckets` (then taken out of `groups`).
 */
export function exportGroups(groups: Iterable<Group>, buckets?: readonly number[]): ExportedGroups {
  const values: string[][] = [];
  const index: number[] = [];
  const encoded: Uint8Array[] = [];
  let size = 0;
  const cell = (g: Group, i: number): void => {
    const a = g.aggs[i];
    if (!a) return;
    if (index.length === 0 || values.at(-1) !== g.values) values.push(g.values);
    const e = encodeAggregate(a);
    encoded.push(e);
    size += e.length;
    index.push(values.length - 1, i, size);
    if (buckets) g.aggs[i] = undefined;
  };
  for (const g of groups) {
    if (buckets) for (const i of buckets) cell(g, i);
    else for (let i = 0; i < g.aggs.length; i++) cell(g, i);
  }
  const cells = new Uint8Array(size);
  let at = 0;
  for (const e of encoded) {
    cells.set(e, at);
    at += e.length;
  }
  return { values, index: Uint32Array.from(index), cells };
}

/**
 * Merges exported groups into `groups` (of the same plan), as the rows behind them would have
 * been merged: a new group past plan.maxGroups is too_many_series; a cell that does not merge
 * (sketches of other parameters) is left out and counted in the returned failures.
 */
export function absorbGroups(plan: MergePlan, groups: Map<string, Group>, e: ExportedGroups): number {
  const withSketch = plan.aggregation[0] === 'p';
  const newCell = withSketch ? emptyAggregate : emptyScalars; // as merge.ts: sketches only for percentiles
  let failed = 0;
  for (let c = 0, from = 0; c < e.index.length; c += 3) {
    const j = e.index[c]!;
    const i = e.index[c + 1]!;
    const to = e.index[c + 2]!;
    const bytes = e.cells.subarray(from, to);
    from = to;
    const values = e.values[j]!;
    const key = groupKey(values);
    let g = groups.get(key);
    if (!g) {
      if (groups.size >= plan.maxGroups) throw tooManySeries();
      g = { values, aggs: new Array(plan.starts.length) };
      groups.set(key, g);
    }
    const cur = g.aggs[i];
    try {
      if (cur) mergeEncoded(cur, bytes, withSketch);
      else {
        const agg = newCell();
        mergeEncoded(agg, bytes, withSketch);
        g.aggs[i] = agg;
      }
    } catch (err) {
      if (!(err instanceof RollupError)) throw err;
      failed++;
    }
  }
  return failed;
}

export type MergeRequest =
  /** Merges rows into merge `id` (`plan` with the first request of the merge this worker gets). */
  | { type: 'part'; id: number; plan?: MergePlan; bytes: Uint8Array }
  /** No more rows for merge `id`: answers its groups and the buckets it holds cells of. */
  | { type: 'close'; id: number; plan?: MergePlan }
  /** Hands the cells of these buckets over (encoded), keeping the rest. */
  | { type: 'export'; id: number; buckets: number[] }
  /** Merges in cells other workers exported; answers the groups (new ones at the end). */
  | { type: 'absorb'; id: number; groups: ExportedGroups[] }
  /** The finalized values of `series` series, group j merged into series seriesOf[j]; frees the merge. */
  | { type: 'finish'; id: number; seriesOf: number[]; series: number }
  | { type: 'drop'; id: number };

/** What a worker holds of a merge once closed. */
export interface Closed {
  rows: number;
  tooLarge: boolean;
  failed: number;
  tampered: number;
  /** Each group's group-by value pseudonyms, in merge order. */
  groups: string[][];
  /** Per bucket, 1 when a cell of it is held here. */
  touched?: Uint8Array;
}

export type MergeReply =
  /** `ms`: a part's open and merge on the worker. */
  | { id: number; ok: true; merged?: Closed; exported?: ExportedGroups; finished?: FinishedValues; ms?: number }
  | { id: number; ok: false; error: { status?: number; code?: string; message: string } };

/** A merge held by a worker between its requests. */
export interface MergeState {
  plan: MergePlan;
  groups: Map<string, Group>;
  rows: number;
  tooLarge: boolean;
  failed: number;
  tampered: number;
  /** Keys zeroed: no more rows to open (closed or exported). */
  closed: boolean;
}

const zeroKeys = (m: MergeState): void => {
  for (const v of m.plan.versions) v.dataKey.fill(0); // this thread's copies
  m.closed = true;
};

/** What a worker does with one request (worker.ts); `merges` holds each merge between its requests. */
export function handleMergeRequest(merges: Map<number, MergeState>, msg: MergeRequest): MergeReply | undefined {
  const held = (plan?: MergePlan): MergeState => {
    let m = merges.get(msg.id);
    if (!m && plan) merges.set(msg.id, (m = { plan, groups: new Map(), rows: 0, tooLarge: false, failed: 0, tampered: 0, closed: false }));
    if (!m) throw new Error('no such merge');
    return m;
  };
  try {
    switch (msg.type) {
      case 'part': {
        const m = held(msg.plan);
        if (m.closed) throw new Error('merge already closed');
        const t = performance.now();
        const r = mergeBytes(m.plan, msg.bytes, m.groups);
        m.rows += r.rows;
        m.tooLarge ||= r.tooLarge;
        m.failed += r.failed;
        m.tampered += r.tampered;
        return { id: msg.id, ok: true, ms: performance.now() - t };
      }
      case 'close': {
        const m = held(msg.plan);
        zeroKeys(m);
        const groups = [...m.groups.values()];
        const touched = new Uint8Array(m.plan.starts.length);
        for (const g of groups) g.aggs.forEach((a, i) => a && (touched[i] = 1));
        return { id: msg.id, ok: true, merged: { rows: m.rows, tooLarge: m.tooLarge, failed: m.failed, tampered: m.tampered, groups: groups.map((g) => g.values), touched } };
      }
      case 'export':
        return { id: msg.id, ok: true, exported: exportGroups(held().groups.values(), msg.buckets) };
      case 'absorb': {
        const m = held();
        let failed = 0;
        for (const e of msg.groups) failed += absorbGroups(m.plan, m.groups, e);
        return { id: msg.id, ok: true, merged: { rows: 0, tooLarge: false, failed, tampered: 0, groups: [...m.groups.values()].map((g) => g.values) } };
      }
      case 'finish': {
        const m = merges.get(msg.id);
        merges.delete(msg.id);
        if (!m) throw new Error('no such merge');
        return { id: msg.id, ok: true, finished: finishCells(m.plan, m.groups.values(), msg.seriesOf, msg.series) };
      }
      case 'drop': {
        const m = merges.get(msg.id);
        if (m) zeroKeys(m);
        merges.delete(msg.id);
        return undefined;
      }
    }
  } catch (e) {
    const m = merges.get(msg.id);
    if (m && msg.type !== 'drop') {
      zeroKeys(m);
      merges.delete(msg.id);
    }
    const error = e instanceof CollectorError ? { status: e.status, code: e.code, message: e.message } : { message: e instanceof Error ? e.message : String(e) };
    return { id: msg.id, ok: false, error };
  }
}

/** The buffers a reply moves rather than copies (an export's encoded groups, finished values). */
export const replyTransfer = (r: MergeReply | undefined): ArrayBuffer[] => {
  if (!r?.ok) return [];
  if (r.exported) return [r.exported.index.buffer as ArrayBuffer, r.exported.cells.buffer as ArrayBuffer];
  if (r.finished) return [r.finished.values.buffer as ArrayBuffer, r.finished.nulls.buffer as ArrayBuffer];
  return [];
};

const unavailable = (why: string) => new CollectorError(503, 'query_unavailable', `the query could not be merged (${why}); retry`, 1);

/** Where a statement may be cut (every part merges alone): UTC days for hour and quarter-hour reads (packs, supersedes lists), hours for minute reads (minute packs, a list's scope). */
const unitOf = (plan: MergePlan): ((bucket: number) => number) => (plan.level === LEVEL.minute ? (b) => b - (((b % HOUR_MS) + HOUR_MS) % HOUR_MS) : dayOf);

/** Parts of about this size at least when a statement is cut for several workers. */
export const PART_BYTES = 32 * 1024;

/** One query worker thread, started on first use; when it dies, what is pending fails (503) and the next request starts another (../worker-thread.ts). */
class MergeWorker {
  private readonly thread: WorkerThread<MergeRequest, MergeReply>;
  /** Merges with rows to merge here (the first one of each it owns, the others it helps), oldest first. */
  readonly sessions: WorkerSession[] = [];
  /** Merges this worker holds until finish or drop (counted with `sessions` when picking a worker). */
  held = 0;
  /** A part is being merged here. */
  busy = false;

  constructor(url: URL, log?: Logger, nice = QUERY_WORKER_NICE) {
    this.thread = new WorkerThread({
      url,
      workerData: { nice },
      resourceLimits: { maxYoungGenerationSizeMb: QUERY_YOUNG_GENERATION_MB },
      failure: unavailable,
      refusal: (m) => (m.error.code ? new CollectorError(m.error.status ?? 500, m.error.code, m.error.message) : new Error(m.error.message)),
      onFail: (why) => {
        this.held = 0;
        for (const s of [...this.sessions]) s.fail(unavailable(why));
        log?.error({ err: why }, 'query worker failed; a new one starts with the next query');
      },
    });
  }

  /** For picking a merge's own worker: merges held and owned here count 1, merges helped ½ (a helper takes their parts only when it has none of its own). */
  get load(): number {
    return this.held + this.sessions.reduce((n, s) => n + (s.workers[0] === this ? 1 : 0.5), 0);
  }

  get idle(): boolean {
    return !this.busy && this.sessions.length === 0;
  }

  request(msg: MergeRequest, transfer: ArrayBuffer[] = []): Promise<MergeReply & { ok: true }> {
    return this.thread.request(msg, transfer);
  }

  get worker(): Worker | undefined {
    return this.thread.worker;
  }

  post(msg: MergeRequest, to: Worker | undefined): void {
    if (to && this.worker === to) this.thread.post(msg, to);
  }

  stop(): Promise<void> {
    return this.thread.stop('stopping');
  }
}

/** A plan as sent to a worker: only the data keys themselves (a view would send its whole buffer), zeroed by `wipe` once posted. */
function sendable(plan: MergePlan): { plan: MergePlan; wipe: () => void } {
  const keys = plan.versions.map((v) => v.dataKey.slice());
  return { plan: { ...plan, versions: plan.versions.map((v, i) => ({ ...v, dataKey: keys[i]! })) }, wipe: () => keys.forEach((k) => k.fill(0)) };
}

/** A query's merge in the worker pool. */
class WorkerSession implements MergeSession {
  /** Statements held until they exceed the pool's inline size (then: to the workers). */
  private buffered: Uint8Array[] | undefined = [];
  private bufferedBytes = 0;
  /** Parts waiting for a worker. */
  readonly queue: Uint8Array[] = [];
  /** The merge's own worker first, then the workers helping it. */
  readonly workers: MergeWorker[] = [];
  /** Workers that received the plan (they hold state for this merge). */
  private readonly planned = new Map<MergeWorker, Worker | undefined>();
  private inFlight = 0;
  private rows = 0;
  /** The parts' open and merge on the workers so far (ms, summed). */
  private openMs = 0;
  private ended = false;
  error: unknown;
  private wake: (() => void) | undefined;
  private readonly unitOf: (bucket: number) => number;

  constructor(
    private readonly pool: WorkerMergers,
    readonly id: number,
    readonly plan: MergePlan,
  ) {
    this.unitOf = unitOf(plan);
  }

  get tooLarge(): boolean {
    return this.rows > this.plan.maxRows;
  }

  /** Whether parts are waiting (and should be). */
  get waiting(): boolean {
    return this.queue.length > 0 && this.error === undefined && !this.tooLarge;
  }

  add(bytes: Uint8Array, rows: number): void {
    if (this.ended || this.error !== undefined) return;
    this.rows += rows;
    if (this.tooLarge) {
      // refused at end; nothing more is merged
      this.queue.length = 0;
      this.buffered = undefined;
      return;
    }
    if (this.buffered) {
      this.buffered.push(bytes);
      this.bufferedBytes += bytes.length;
      if (this.bufferedBytes <= this.pool.inlineBytes) return;
      const held = this.buffered;
      this.buffered = undefined;
      this.pool.own(this);
      for (const b of held) this.enqueue(b);
    } else this.enqueue(bytes);
    this.pool.schedule();
  }

  private enqueue(bytes: Uint8Array): void {
    const workers = this.workers.length + this.pool.idleCount();
    if (workers > 1) this.queue.push(...splitStoredRows(bytes, this.unitOf, Math.min(4 * workers, Math.ceil(bytes.length / this.pool.partBytes))));
    else if (bytes.length) this.queue.push(bytes);
  }

  /** Sends the next waiting part to `w` (free, and one of this merge's workers). */
  send(w: MergeWorker): void {
    const bytes = this.queue.shift()!;
    // The bytes move to the worker (copied first when they are a view into a larger buffer; a Buffer's slice is a view, hence the copy by constructor).
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? bytes : new Uint8Array(bytes);
    const first = !this.planned.has(w);
    const p = first ? sendable(this.plan) : undefined;
    w.busy = true;
    this.inFlight++;
    this.pool.counts.parts++;
    if (w !== this.workers[0]) this.pool.counts.helped++;
    const reply = w.request({ type: 'part', id: this.id, ...(p ? { plan: p.plan } : {}), bytes: own }, [own.buffer as ArrayBuffer]);
    p?.wipe();
    if (first) this.planned.set(w, w.worker);
    reply
      .then((r) => void (this.openMs += r.ms ?? 0))
      .catch((e: unknown) => this.fail(e))
      .finally(() => {
        w.busy = false;
        this.inFlight--;
        this.settle();
        this.pool.schedule();
      });
  }

  /** The merge failed (a part refused, a worker died): nothing more is merged; `end` throws. */
  fail(e: unknown): void {
    this.error ??= e;
    this.queue.length = 0;
    this.settle();
  }

  private settle(): void {
    if (this.ended && this.inFlight === 0 && !this.waiting) this.wake?.();
  }

  abort(): void {
    this.fail(new Error('aborted'));
    this.end().then((m) => m.drop(), () => {});
  }

  async end(): Promise<Merging> {
    this.ended = true;
    if (this.buffered) {
      const parts = this.buffered;
      this.buffered = undefined;
      if (this.error !== undefined) throw this.error;
      return inlineMerging(this.plan, concat(parts));
    }
    if (this.inFlight > 0 || this.waiting) await new Promise<void>((resolve) => (this.wake = resolve));
    const [own, ...rest] = this.workers;
    const helpers = rest.filter((w) => this.planned.has(w));
    try {
      if (this.error !== undefined) throw this.error;
      if (this.tooLarge) {
        this.dropAll();
        return tooLargeMerging(this.rows);
      }
      this.pool.release(this, rest.filter((w) => !this.planned.has(w))); // helped with nothing
      const p = this.planned.has(own!) ? undefined : sendable(this.plan);
      const closing = own!.request({ type: 'close', id: this.id, ...(p ? { plan: p.plan } : {}) });
      p?.wipe();
      if (p) this.planned.set(own!, own!.worker);
      const ws = [own!, ...helpers];
      const closed = (await Promise.all([closing, ...helpers.map((w) => w.request({ type: 'close', id: this.id }))])).map((r) => r.merged!);
      // Which worker finishes each bucket: the one holding its cells; a bucket held by several
      // (a zone's bucket across a cut between days) is handed over to the merge's own worker.
      const owner = new Int32Array(this.plan.starts.length).fill(-1);
      closed.forEach((c, k) => c.touched!.forEach((t, i) => t && (owner[i] = owner[i] === -1 ? k : -2)));
      const shared: number[] = [];
      owner.forEach((k, i) => k === -2 && (shared.push(i), (owner[i] = 0)));
      let failed = 0;
      let tampered = 0;
      for (const c of closed) {
        failed += c.failed;
        tampered += c.tampered;
      }
      const groupsOf = closed.map((c) => c.groups);
      if (shared.length > 0 && helpers.length > 0) {
        this.pool.counts.exports += helpers.length;
        const exported = await Promise.all(helpers.map(async (w) => (await w.request({ type: 'export', id: this.id, buckets: shared })).exported!));
        const absorbed = (await own!.request({ type: 'absorb', id: this.id, groups: exported }, exported.flatMap((g) => [g.index.buffer as ArrayBuffer, g.cells.buffer as ArrayBuffer]))).merged!;
        failed += absorbed.failed;
        groupsOf[0] = absorbed.groups;
      }
      // The groups of every worker, once each (a group may have cells in several).
      const index = new Map<string, number>();
      const groups: string[][] = [];
      const unionOf = groupsOf.map((gs) =>
        gs.map((values) => {
          const key = groupKey(values);
          let j = index.get(key);
          if (j === undefined) {
            index.set(key, (j = groups.length));
            groups.push(values);
          }
          return j;
        }),
      );
      if (groups.length > this.plan.maxGroups) throw tooManySeries();
      return this.held(ws, unionOf, owner, { rows: this.rows, tooLarge: false, failed, tampered, groups, openMs: this.openMs });
    } catch (e) {
      this.dropAll();
      throw e;
    }
  }

  /**
   * The workers hold their groups until finish or drop; each finishes the buckets it holds
   * (`owner`: index into `ws`; −1: none, the merge's own worker answers them empty).
   */
  private held(ws: MergeWorker[], unionOf: number[][], owner: Int32Array, merged: Omit<Merging, 'finish' | 'drop'>): Merging {
    const threads = ws.map((w) => this.planned.get(w));
    this.planned.clear();
    this.pool.release(this, ws);
    for (const w of ws) w.held++;
    let open = true;
    const release = () => {
      if (!open) return false;
      open = false;
      ws.forEach((w, k) => w.worker === threads[k] && (w.held = Math.max(0, w.held - 1)));
      this.pool.schedule();
      return true;
    };
    return {
      ...merged,
      finish: async (seriesOf, series) => {
        if (!release()) throw new Error('merge already finished');
        const finished = await Promise.all(ws.map(async (w, k) => (await w.request({ type: 'finish', id: this.id, seriesOf: unionOf[k]!.map((j) => seriesOf[j] ?? -1), series })).finished!));
        // each bucket from the worker that holds it, into the own worker's buffers; then one unpack
        const out = finished[0]!;
        const buckets = out.buckets;
        for (let i = 0; i < buckets; i++) {
          const k = owner[i]!;
          if (k <= 0) continue;
          const from = finished[k]!;
          for (let s = 0, at = i; s < series; s++, at += buckets) {
            out.values[at] = from.values[at]!;
            out.nulls[at] = from.nulls[at]!;
          }
        }
        return unpackValues(out);
      },
      drop: () => {
        if (release()) ws.forEach((w, k) => w.post({ type: 'drop', id: this.id }, threads[k]));
      },
    };
  }

  private dropAll(): void {
    for (const [w, worker] of this.planned) w.post({ type: 'drop', id: this.id }, worker);
    this.planned.clear();
    this.pool.release(this, this.workers);
  }
}

/** The compiled worker entry; only beside the compiled engine (dist), not beside the .ts sources. */
const WORKER_URL = new URL('./worker.js', import.meta.url);

/**
 * Query workers (`size`, default: one per core up to 2). A merge goes to the least loaded; a
 * worker with nothing of its own to merge helps the oldest merge with parts waiting.
 */
export class WorkerMergers implements Mergers {
  private readonly workers: MergeWorker[];
  private nextId = 0;
  /** Merges with rows still to merge, oldest first. */
  private readonly sessions: WorkerSession[] = [];

  readonly inlineBytes: number;
  readonly partBytes: number;
  /** Parts sent to workers, those merged by a helping worker, and hand-overs of a helper's cells (buckets two workers held). */
  readonly counts = { parts: 0, helped: 0, exports: 0 };

  /**
   * `inlineBytes`: results up to this size are merged inline (default INLINE_BYTES; tests: 0 or −1).
   * `partBytes`: a statement cut for several workers gives parts of about this size at least (default PART_BYTES).
   * `nice`: the workers' scheduling priority (default QUERY_WORKER_NICE; 0: the process's).
   */
  constructor(o: { url?: URL; size?: number; log?: Logger; inlineBytes?: number; partBytes?: number; nice?: number } = {}) {
    this.inlineBytes = o.inlineBytes ?? INLINE_BYTES;
    this.partBytes = Math.max(1, o.partBytes ?? PART_BYTES);
    const size = o.size ?? Math.min(2, availableParallelism());
    this.workers = Array.from({ length: Math.max(1, size) }, () => new MergeWorker(o.url ?? WORKER_URL, o.log, o.nice));
  }

  /** Threads in the pool (each started with its first merge). */
  get size(): number {
    return this.workers.length;
  }

  begin(plan: MergePlan): MergeSession {
    return new WorkerSession(this, ++this.nextId, plan);
  }

  /** Gives a merge its own worker: the least loaded. */
  own(s: WorkerSession): void {
    let best = this.workers[0]!;
    for (const w of this.workers) if (w.load < best.load) best = w;
    best.sessions.push(s);
    s.workers.push(best);
    this.sessions.push(s);
  }

  idleCount(): number {
    return this.workers.filter((w) => w.idle).length;
  }

  /** The merge is done with these workers (nothing more to merge there). */
  release(s: WorkerSession, workers: MergeWorker[]): void {
    for (const w of workers) {
      const i = w.sessions.indexOf(s);
      if (i >= 0) w.sessions.splice(i, 1);
    }
    if (workers.includes(s.workers[0]!)) {
      const i = this.sessions.indexOf(s);
      if (i >= 0) this.sessions.splice(i, 1);
    }
    this.schedule();
  }

  /** Idle workers help the oldest merge with parts waiting; every free worker takes its next part (its own merges first, oldest first). */
  schedule(): void {
    for (const w of this.workers) {
      if (!w.idle) continue;
      const s = this.sessions.find((x) => x.waiting && !x.workers.includes(w));
      if (!s) continue;
      w.sessions.push(s);
      s.workers.push(w);
    }
    for (const w of this.workers) {
      if (w.busy) continue;
      const s = w.sessions.find((x) => x.workers[0] === w && x.waiting) ?? w.sessions.find((x) => x.waiting);
      s?.send(w);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

/** Workers when the compiled worker exists (the service from dist), else inline. */
export const defaultMergers = (log?: Logger, size?: number, nice?: number): Mergers =>
  existsSync(fileURLToPath(WORKER_URL)) ? new WorkerMergers({ log, size, nice }) : inlineMergers;
