/**
 * The process role: opens inner layers with the account key, validates points, and writes
 * what queries need — per-minute and per-hour partial aggregates encrypted under the account
 * data key, keyed by HMAC pseudonyms and UTC time buckets — plus an encrypted dictionary of
 * pseudonyms and per-account reject counts.
 *
 * Exactly once: every tick writes its rollup rows under one random `part` id and then the
 * processed markers naming that part. A crash between the two leaves rollup rows whose part
 * has no marker; `recover()` deletes them before their batches are processed again. A tick
 * that fails in process deletes its own rows before its batches can be retried (and refuses
 * to process anything else until that succeeded); a periodic recovery sweeps what is left.
 *
 * Scale-out: with `partition` (i of n), the poll and recovery only see accounts with
 * `cityHash64(account_id) % n = i`, so n process nodes never process the same batch.
 */
import { openInner, randomBytes, toHex, type Point, type KeyPair } from '@cipherstat/protocol';
import { nodeX25519 } from '@cipherstat/protocol/node';
import type { BatchRow, DictKind, DictRow, Partition, ProcessedRow, RejectRow, RollupLevel, RollupRef, RollupRow, Store } from './storage/types.js';
import { COMPACTION_PART_PREFIX, partitionParams, partitionSql } from './storage/types.js';
import type { Keyring, AccountKeys } from './keyring/index.js';
import type { Accounts } from './accounts.js';
import type { Metrics } from './metrics.js';
import type { Logger } from './logger.js';
import { Pseudonyms } from './pseudonyms.js';
import { sealDict, sealRollup } from './records.js';
import { addPoint, emptyAggregate, encodeAggregate, type Aggregate } from './rollup/index.js';
import { Lru } from './lru.js';

const LEVELS: { level: RollupLevel; ms: number }[] = [
  { level: 0, ms: 60_000 },
  { level: 1, ms: 3_600_000 },
];
const DAY = 86_400_000;
const key = (r: { accountId: string; batchId: string }) => `${r.accountId}/${r.batchId}`;
/** Most batches per tick. */
const TICK_BATCHES = 2000;

export interface ProcessorOptions {
  store: Store;
  keyring: Keyring;
  accounts: Accounts;
  metrics: Metrics;
  log: Logger;
  /** Poll storage for batches stored by other nodes (or left by a crash) every this many ms. */
  pollMs: number;
  /** In role `all`, fresh batches arrive by hand-off; the poll only picks up older ones. */
  pollMinAgeMs: number;
  /** How far back the poll looks for unprocessed batches. */
  lookbackMs?: number;
  now?: () => number;
  /**
   * Hand-offs coalesce into bigger ticks (far fewer rollup rows per point): a tick waits up to
   * this many ms (minus how long the previous tick ran) or until a full tick is queued. 0: no wait.
   * Only under load (at least `coalesceMinRate` batches handed off in the last second): a quiet
   * collector processes at once.
   */
  coalesceMs?: number;
  /** Batches per second of hand-offs from which ticks coalesce (default 100). */
  coalesceMinRate?: number;
  /** This node's share of accounts for the poll and recovery (default: all of them). */
  partition?: Partition;
  /** Periodic recovery from the poll loop: how often (default 60 s; 0: never). */
  recoverEveryMs?: number;
  /** Periodic recovery only deletes parts written at least this long ago (default 2 min: never a live tick). */
  recoverMinAgeMs?: number;
  /** Called after each tick with the accounts it touched (query caches). */
  onProcessed?: (accountIds: string[]) => void;
}

interface SeriesDescriptor {
  /** `${accountId}\0${metric}\0${series}` */
  id: string;
  metric: string;
  series: string;
  tagKeys: string[];
  tagValues: string[];
}

interface AccountContext {
  keys: AccountKeys[];
  pairs: KeyPair[];
  pseudonyms: Pseudonyms;
  retentionDays: number;
  confidential: boolean;
}

export class Processor {
  private queue: BatchRow[] = [];
  private readonly inflight = new Set<string>();
  private readonly done = new Lru<string, true>(500_000);
  private readonly known = new Lru<string, true>(500_000); // dictionary entries already written
  private readonly pseudonyms = new Lru<string, Pseudonyms>(10_000);
  /** Per series (account, key version, kind, name, tags): its pseudonyms, dictionary entries written. */
  private readonly seriesCache = new Lru<string, SeriesDescriptor>(200_000);
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private urgent = 0;
  private wake: (() => void) | undefined;
  private lastTickMs = 0;
  /** Hand-offs in the current and the previous 1 s window (real time). */
  private rateWindow = { start: 0, current: 0, previous: 0 };
  private lastRecover = 0;
  /** Parts of failed ticks whose rollup rows are not known to be gone yet: nothing is processed until they are. */
  private readonly dirty = new Map<string, { refs: RollupRef[]; at: number }>();

  constructor(private readonly o: ProcessorOptions) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  get backlog(): number {
    return this.queue.length;
  }

  /** Hand-off from ingest: rows that are durable now. */
  enqueue(rows: BatchRow[]): void {
    const t = performance.now();
    const w = this.rateWindow;
    if (t - w.start >= 1000) {
      w.previous = t - w.start < 2000 ? w.current : 0;
      w.current = 0;
      w.start = t;
    }
    w.current += rows.length;
    for (const r of rows) {
      const k = key(r);
      if (this.inflight.has(k) || this.done.has(k)) continue;
      this.inflight.add(k);
      this.queue.push(r);
    }
    this.o.metrics.processQueue.set(this.queue.length);
    if (this.queue.length >= TICK_BATCHES) this.wake?.();
    this.kick();
  }

  private kick(): void {
    if (!this.running && !this.stopped) this.running = this.drainQueue().finally(() => (this.running = undefined));
  }

  /** Lets hand-offs accumulate: up to `coalesceMs` minus the previous tick's run time, or a full tick. */
  private async coalesce(): Promise<void> {
    const wait = (this.o.coalesceMs ?? 0) - this.lastTickMs;
    if (wait <= 0 || this.urgent > 0 || this.queue.length >= TICK_BATCHES) return;
    // Batches handed off over roughly the last second.
    const w = this.rateWindow;
    const age = performance.now() - w.start;
    const recent = w.current + (age < 1000 ? w.previous * (1 - age / 1000) : 0);
    if (recent < (this.o.coalesceMinRate ?? 100)) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, wait);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private async drainQueue(): Promise<void> {
    while (this.queue.length && !this.stopped) {
      await this.coalesce();
      const rows = this.queue.splice(0, TICK_BATCHES);
      this.o.metrics.processQueue.set(this.queue.length);
      const t0 = performance.now();
      try {
        await this.cleanupFailedTicks();
        await this.process(rows);
        this.lastTickMs = performance.now() - t0;
      } catch (e) {
        // Leave them for the poll: they are durable and unmarked (process() removed its rollup rows).
        for (const r of rows) this.inflight.delete(key(r));
        this.lastTickMs = 0;
        this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'processing failed; batches will be retried');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /**
   * Removes the rollup rows of a failed tick unless its processed markers made it to storage
   * (an error after the insert was committed). Waits for the delete to apply: the batches are
   * processed again right after. Throws when storage cannot tell (kept for the next attempt).
   */
  private async cleanupPart(part: string, refs: RollupRef[], at: number): Promise<void> {
    const marked = await this.o.store.query<{ n: string }>(
      `SELECT count() AS n FROM processed WHERE processed_at >= fromUnixTimestamp64Milli({at:Int64}) AND part = {part:String}`,
      { at, part },
    );
    if (Number(marked[0]?.n ?? 0) === 0 && refs.length) await this.o.store.deleteRollups(refs, { wait: true });
    this.dirty.delete(part);
  }

  private async cleanupFailedTicks(): Promise<void> {
    for (const [part, { refs, at }] of [...this.dirty]) await this.cleanupPart(part, refs, at);
  }

  /**
   * Deletes rollup rows of ticks that never wrote their processed markers (a crash). Rows a
   * compaction pass wrote (parts `c:…`) have no marker by design and are left alone; the
   * compactor never merges rows without a marker, so nothing deleted here was merged.
   * Only this node's partition; with `minAgeMs`, only parts written at least that long ago
   * (a tick still running on another node or in this process is never touched).
   */
  async recover(opts: { minAgeMs?: number } = {}): Promise<number> {
    const now = this.now();
    const since = now - (this.o.lookbackMs ?? 2 * DAY);
    const p = this.o.partition;
    const orphans = await this.o.store.query<{ part: string }>(
      `SELECT part FROM rollups WHERE written_at >= fromUnixTimestamp64Milli({since:Int64})
       AND NOT startsWith(part, {compacted:String})${p ? ` AND ${partitionSql('account_id')}` : ''}
       AND part NOT IN (SELECT part FROM processed WHERE processed_at >= fromUnixTimestamp64Milli({since:Int64}))
       GROUP BY part HAVING max(written_at) < fromUnixTimestamp64Milli({cutoff:Int64})`,
      { since, compacted: COMPACTION_PART_PREFIX, cutoff: now - (opts.minAgeMs ?? 0) + 1, ...(p ? partitionParams(p) : {}) },
    );
    if (orphans.length) {
      await this.o.store.exec('DELETE FROM rollups WHERE part IN {parts:Array(String)}', { parts: orphans.map((o) => o.part) });
      this.o.log.warn({ parts: orphans.length }, 'removed rollup rows of interrupted processing ticks');
    }
    return orphans.length;
  }

  start(): void {
    this.lastRecover = this.now();
    const loop = async () => {
      if (this.stopped) return;
      const every = this.o.recoverEveryMs ?? 60_000;
      if (every > 0 && this.now() - this.lastRecover >= every) {
        this.lastRecover = this.now();
        try {
          await this.recover({ minAgeMs: this.o.recoverMinAgeMs ?? 120_000 });
        } catch (e) {
          this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'periodic recovery failed');
        }
      }
      try {
        await this.poll();
      } catch (e) {
        this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'poll for pending batches failed');
      }
      if (!this.stopped) this.timer = setTimeout(loop, this.o.pollMs);
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Picks up stored batches that nobody processed (other ingest nodes, a crash, a failed tick). */
  async poll(): Promise<number> {
    const now = this.now();
    const rows = await this.o.store.pendingBatches(now - (this.o.lookbackMs ?? 2 * DAY), 5000, this.o.partition);
    const fresh = rows.filter((r) => r.receivedAt <= now - this.o.pollMinAgeMs && !this.inflight.has(key(r)) && !this.done.has(key(r)));
    if (fresh.length) this.enqueue(fresh);
    return fresh.length;
  }

  /** Waits until everything handed off so far is processed. */
  async drain(): Promise<void> {
    this.urgent++;
    this.wake?.();
    try {
      while (this.running || this.queue.length) {
        this.kick();
        await this.running;
      }
    } finally {
      this.urgent--;
    }
  }

  /** Forgets an account's processed batches and cached pseudonyms (after a purge or shred). */
  forgetAccount(accountId: string): void {
    this.done.deleteWhere((k) => k.startsWith(`${accountId}/`));
    this.known.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.seriesCache.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.pseudonyms.deleteWhere((k) => k.startsWith(`${accountId}\u0000`)); // drops the cached MAC key too
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.drain();
    this.stopped = true;
  }

  private async context(accountId: string): Promise<AccountContext | undefined> {
    const account = await this.o.accounts.get(accountId);
    const keys = await this.o.keyring.accountKeys(accountId);
    if (!account || !keys?.length || account.state === 'shredded') return undefined;
    const current = keys[keys.length - 1]!;
    const pk = `${accountId}\u0000${current.version}`;
    let pseudonyms = this.pseudonyms.get(pk);
    if (!pseudonyms) this.pseudonyms.set(pk, (pseudonyms = new Pseudonyms(current.macKey)));
    const pairs = [...keys].reverse().map((k) => ({ publicKey: k.publicKey, secretKey: k.secretKey }));
    return { keys, pairs, pseudonyms, retentionDays: account.retentionDays, confidential: account.confidential };
  }

  private async process(rows: BatchRow[]): Promise<void> {
    const now = this.now();
    const part = toHex(randomBytes(16));
    const out = { rollups: [] as RollupRow[], dict: [] as DictRow[] };
    try {
      await this.tick(rows, now, part, out);
    } catch (e) {
      // Dictionary entries of this tick may not be stored: write them again next time.
      if (out.dict.length) this.seriesCache.clear();
      for (const d of out.dict) this.known.delete(`${d.accountId}\u0000${d.keyVersion}\u0000${d.kind}\u0000${d.pseudonym}`);
      // Best effort now; if storage cannot answer, before the next tick (and by periodic recovery).
      const refs = out.rollups.map(({ accountId, level, bucket, metric, series }) => ({ accountId, level, bucket, metric, series, part }));
      this.dirty.set(part, { refs, at: now });
      await this.cleanupPart(part, refs, now).catch((err) =>
        this.o.log.warn({ part, err: err instanceof Error ? err.message : String(err) }, 'could not remove the rollup rows of a failed tick yet'),
      );
      throw e;
    }
  }

  private async tick(rows: BatchRow[], now: number, part: string, out: { rollups: RollupRow[]; dict: DictRow[] }): Promise<void> {
    const rollups = new Map<string, { row: Omit<RollupRow, 'agg' | 'part' | 'writtenAt'>; agg: Aggregate }>();
    const dict: DictRow[] = (out.dict = []);
    const rejects = new Map<string, number>();
    const processed: ProcessedRow[] = [];
    const contexts = new Map<string, AccountContext | undefined>();
    const confidential: { accountId: string; batchId: string }[] = [];
    const reject = (accountId: string, code: string, n: number) => {
      if (n > 0) rejects.set(`${accountId}\u0000${code}`, (rejects.get(`${accountId}\u0000${code}`) ?? 0) + n);
    };

    for (const row of rows) {
      if (!contexts.has(row.accountId)) contexts.set(row.accountId, await this.context(row.accountId));
      const ctx = contexts.get(row.accountId);
      const mark = (accepted: number, rejected: number) =>
        processed.push({ accountId: row.accountId, batchId: row.batchId, processedAt: now, accepted, rejected, part });
      if (!ctx) {
        // Deleted account: its keys are gone; the batch is dropped and counted, never opened.
        reject(row.accountId, 'account_deleted', row.pointCount);
        this.o.metrics.batchRejects.inc({ code: 'account_deleted' });
        mark(0, row.pointCount);
        continue;
      }
      let opened: ReturnType<typeof openInner> | undefined;
      for (const account of ctx.pairs) {
        opened = openInner(row.sealed, { account, accountId: row.accountId, batchId: row.batchId, count: row.pointCount, now: row.receivedAt, x25519: nodeX25519 });
        if (opened.ok || opened.code !== 'inner_auth_failed') break;
      }
      if (!opened || !opened.ok) {
        const code = opened?.code ?? 'inner_auth_failed';
        // One per batch: anyone can seal garbage to a public account key and claim any count.
        reject(row.accountId, code, 1);
        this.o.metrics.batchRejects.inc({ code });
        this.o.metrics.points.inc({ outcome: 'rejected' }, row.pointCount);
        mark(0, row.pointCount);
        continue;
      }
      const { points, rejects: bad } = opened.value;
      for (const r of bad) reject(row.accountId, r.code, 1);
      for (const p of points) this.addToRollups(rollups, dict, row.accountId, ctx, p);
      this.o.metrics.points.inc({ outcome: 'processed' }, points.length);
      if (bad.length) this.o.metrics.points.inc({ outcome: 'rejected' }, bad.length);
      mark(points.length, bad.length);
      if (ctx.confidential) confidential.push({ accountId: row.accountId, batchId: row.batchId });
    }

    const rollupRows: RollupRow[] = [];
    for (const { row, agg } of rollups.values()) {
      const ctx = contexts.get(row.accountId)!;
      const dataKey = ctx.keys[ctx.keys.length - 1]!.dataKey;
      rollupRows.push({ ...row, part, writtenAt: now, agg: sealRollup(dataKey, row, encodeAggregate(agg)) });
    }
    const rejectRows: RejectRow[] = [...rejects].map(([k, count]) => {
      const [accountId, code] = k.split('\u0000') as [string, string];
      return { accountId, code, count, at: now };
    });

    const t = this.o.metrics.insertSeconds;
    if (dict.length) {
      const end = t.startTimer({ table: 'dictionary' });
      await this.o.store.insertDictionary(dict);
      end();
    }
    if (rollupRows.length) {
      const end = t.startTimer({ table: 'rollups' });
      out.rollups = rollupRows;
      await this.o.store.insertRollups(rollupRows);
      end();
    }
    const end = t.startTimer({ table: 'processed' });
    await this.o.store.markProcessed(processed);
    end();
    // After the markers: a failure here loses reject counts rather than counting them twice.
    try {
      if (rejectRows.length) await this.o.store.addRejects(rejectRows);
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'could not store reject counts');
    }
    if (confidential.length) await this.o.store.deleteBatches(confidential);

    const doneAt = this.now();
    for (const r of rows) {
      this.inflight.delete(key(r));
      this.done.set(key(r), true);
      this.o.metrics.processingLag.observe((doneAt - r.receivedAt) / 1000);
    }
    this.o.onProcessed?.([...contexts.keys()]);
  }

  private addToRollups(
    rollups: Map<string, { row: Omit<RollupRow, 'agg' | 'part' | 'writtenAt'>; agg: Aggregate }>,
    dict: DictRow[],
    accountId: string,
    ctx: AccountContext,
    p: Point,
  ): void {
    const keyVersion = ctx.keys[ctx.keys.length - 1]!.version;
    let ck = `${accountId}\u0000${keyVersion}\u0000${p.kind}\u0000${p.name}`;
    for (const t in p.tags) ck += `\u0000${t}\u0000${p.tags[t]}`;
    let d = this.seriesCache.get(ck);
    if (!d) {
      const ps = ctx.pseudonyms;
      const dataKey = ctx.keys[ctx.keys.length - 1]!.dataKey;
      const tags = Object.entries(p.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const metric = ps.metric(p.name);
      const series = ps.series(tags);
      const tagKeys = tags.map(([k]) => ps.tagKey(k));
      const tagValues = tags.map(([k, v]) => ps.tagValue(k, v));
      const remember = (kind: DictKind, pseudonym: string, text: string, extra?: string) => {
        const k = `${accountId}\u0000${keyVersion}\u0000${kind}\u0000${pseudonym}`;
        if (this.known.has(k)) return;
        this.known.set(k, true);
        const entry = extra === undefined ? { text } : { text, extra };
        dict.push({ accountId, kind, pseudonym, keyVersion, ciphertext: sealDict(dataKey, accountId, kind, pseudonym, entry), firstSeen: p.time });
      };
      remember(0, metric, p.name, p.kind);
      tags.forEach(([k, v], i) => {
        remember(1, tagKeys[i]!, k);
        remember(2, tagValues[i]!, v, k);
      });
      d = { id: `${accountId}\u0000${metric}\u0000${series}`, metric, series, tagKeys, tagValues };
      this.seriesCache.set(ck, d);
    }
    const { metric, series, tagKeys, tagValues } = d;
    for (const { level, ms } of LEVELS) {
      const bucket = p.time - (((p.time % ms) + ms) % ms);
      const k = `${level}\u0000${bucket}\u0000${d.id}`;
      let r = rollups.get(k);
      if (!r) {
        r = {
          row: { accountId, level, bucket, metric, series, tagKeys, tagValues, keyVersion, expiresAt: bucket + ms + ctx.retentionDays * DAY },
          agg: emptyAggregate(),
        };
        rollups.set(k, r);
      }
      addPoint(r.agg, p.value, p.time);
    }
  }
}
