/**
 * Steps 1 and 5 of a pass (compactor.ts): what an unfinished merged row really replaces (the
 * list it seals, not the stored one), and the finish protocol — delete the sources, poll until
 * they are gone, empty the lists, poll again — for merged rows and day packs alike; and the
 * rows written under a key version a wipe or shred destroyed during the pass.
 */
import type { AccountKeys } from '../keyring/index.js';
import { supersededRefs } from '../rollup/days.js';
import { openRow } from '../rollup/rows.js';
import { isCompacted } from '../rollup/supersedes.js';
import type { RollupRef, RollupRow, SupersedingRollup, UnfinishedRollup } from '../storage/types.js';
import { refId, refOf, type CompactionReport, type PassContext } from './pass.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** A queued mutation is not queued again for the same row within this time. */
const REQUEUE_MS = 60_000;

/** First wait before reading whether a queued mutation applied, before one was seen to apply (ms). */
const FIRST_POLL_MS = 100;
/** Longest wait between two reads of a poll (ms). */
const MAX_POLL_MS = 1000;

export class FinishProtocol {
  /** `d:`/`c:` + row → when a delete (sources) or a list update (merged rows) was last queued for it. */
  private readonly queued = new Map<string, number>();
  /**
   * Per kind of mutation (`d`elete, `c`lear), about how long the last one took to apply here (ms):
   * the first read of the next poll waits that long. It follows the mutations both ways: a poll
   * done at its first read halves it (the mutation may have applied sooner), a later read sets it to
   * the time slept before that read — not to the poll's whole time, which includes the reads and
   * would only ever grow, until every poll slept the 1 s cap. Each read is a statement over every row still
   * awaited (at storefront load, ~0.3 s of engine CPU for a pass's 8,000 sources) and chDB applies
   * a queued mutation in a second or so under load: reads from 100 ms on, doubling, took about
   * five per pass, most of them finding the rows still there.
   */
  private readonly applyMs = { d: FIRST_POLL_MS, c: FIRST_POLL_MS };

  constructor(private readonly c: PassContext) {}

  /**
   * Step 1: a stored `supersedes` list is only compaction's to-do list; what a row replaces is the
   * list it seals (record format 3). Entries the sealed list lacks (storage added them), and the
   * whole list of a row no compaction wrote, are counted as tampered and dropped: step 5 deletes
   * only what the sealed list names, then empties the stored list. Rows of accounts or key versions
   * without keys are left alone (the lifecycle deletes them); a merged row written before format 3
   * seals no list: its stored one is taken as it is.
   */
  async checkLists(rows: UnfinishedRollup[], report: CompactionReport): Promise<SupersedingRollup[]> {
    const keysOf = new Map<string, AccountKeys[] | undefined>();
    const out: SupersedingRollup[] = [];
    for (const r of rows) {
      if (!keysOf.has(r.accountId)) keysOf.set(r.accountId, await this.c.o.keyring.accountKeys(r.accountId));
      const key = keysOf.get(r.accountId)?.find((k) => k.version === r.keyVersion);
      if (!key) continue;
      const o = openRow(key.dataKey, r, r.agg);
      const sealed = o && isCompacted(r.part) ? (o.supersedes ?? r.supersedes) : [];
      const kept = r.supersedes.filter((e) => sealed.includes(e));
      if (kept.length < r.supersedes.length) {
        report.tamperedRows++;
        this.c.o.log.warn({ accountId: r.accountId, level: r.level, bucket: r.bucket, entries: r.supersedes.length - kept.length }, 'rollup compaction: a stored supersedes list names rows its row does not seal; ignored');
      }
      out.push({ ...refOf(r), supersedes: kept });
    }
    return out;
  }

  /**
   * Step 5 for these merged rows (`earlier` among them: unfinished rows of earlier passes): queue
   * the deletion of their sources still stored, poll until
   * they are gone, then queue emptying the lists of the rows whose sources are all gone and
   * poll until that applied. Returns the rows finished (list empty, or the row itself gone).
   */
  async finish(earlier: SupersedingRollup[], rows: SupersedingRollup[]): Promise<Set<string>> {
    const { store } = this.c.o;
    // A ClickHouse server waits for mutations without blocking other statements, and only a
    // wait covers every replica (a reader on a lagging replica must not see a list emptied
    // before its sources are gone there). chDB runs one statement at a time: queue and poll.
    const wait = store.kind === 'remote';
    const sourcesOf = supersededRefs;
    // This pass's sources were just read; only those of earlier passes may be gone already.
    const fromEarlier = new Set(earlier.map(refId));
    let present = [
      ...(earlier.length ? await store.findRollups(earlier.flatMap(sourcesOf)) : []),
      ...rows.filter((r) => !fromEarlier.has(refId(r))).flatMap((r) => sourcesOf(r).map((s) => ({ ...s, supersedes: [] as string[] }))),
    ];
    if (present.length > 0) {
      this.c.o.fence?.();
      await store.deleteRollups(this.toQueue('d', present), { wait });
      // Reading the rows is the proof (not the table's mutation list: another mutation — a purge,
      // a retention delete — must not hold this pass up). Only rows still there at the last read
      // are read again: a row seen gone was deleted (a row put back afterwards is what sealed
      // lists are for: rollup/supersedes.ts).
      const check = async () => (present = await store.findRollups(present)).length === 0;
      if (!wait || !(await check())) await this.poll(check, 'd');
    }
    const stillThere = new Set(present.map(refId));
    const ready = rows.filter((r) => !sourcesOf(r).some((s) => stillThere.has(refId(s))));
    if (ready.length === 0) return new Set();
    await this.c.o.hook?.('deleted');
    // This pass's rows were just written with their lists (gone since, a clear is a no-op and the
    // read after it finds nothing pending); only earlier rows' lists are read.
    const readyEarlier = ready.filter((r) => fromEarlier.has(refId(r)));
    let state = [
      ...(readyEarlier.length ? await store.findRollups(readyEarlier.map(refOf)) : []),
      ...ready.filter((r) => !fromEarlier.has(refId(r))).map((r) => ({ ...refOf(r), supersedes: r.supersedes })),
    ];
    const pending = () => state.filter((r) => r.supersedes.length > 0);
    if (pending().length > 0) {
      this.c.o.fence?.();
      await store.clearSupersedes(this.toQueue('c', pending().map(refOf)), { wait });
      const check = async () => {
        state = await store.findRollups(pending().map(refOf)); // rows seen cleared (or gone) stay so
        return pending().length === 0;
      };
      if (!wait || !(await check())) await this.poll(check, 'c');
    }
    await this.c.o.hook?.('cleared');
    const open = new Set(pending().map(refId));
    const done = new Set(ready.map(refId).filter((k) => !open.has(k)));
    for (const r of rows) {
      if (!done.has(refId(r))) continue;
      this.queued.delete(`c:${refId(r)}`);
      for (const src of sourcesOf(r)) this.queued.delete(`d:${refId(src)}`);
    }
    return done;
  }

  private toQueue(op: 'd' | 'c', rows: RollupRef[]): RollupRef[] {
    const t = performance.now();
    for (const [k, at] of this.queued) if (t - at > REQUEUE_MS) this.queued.delete(k);
    const out = rows.filter((r) => !this.queued.has(`${op}:${refId(r)}`));
    for (const r of out) this.queued.set(`${op}:${refId(r)}`, t);
    return out.map(refOf);
  }

  /** Polls `done` (first after about as long as the last mutation of this kind took to apply, then less often, up to 1 s apart) until it holds, the settle time is over, or stop(). */
  private async poll(done: () => Promise<boolean>, kind: 'd' | 'c'): Promise<boolean> {
    const started = performance.now();
    const deadline = started + (this.c.o.settleMs ?? 10_000);
    let slept = 0;
    for (let wait = this.applyMs[kind], first = true; ; wait = Math.min(MAX_POLL_MS, wait * 2), first = false) {
      if (this.c.closing() || performance.now() > deadline) return false;
      await sleep(wait);
      slept += wait;
      if (await done()) {
        this.applyMs[kind] = Math.min(MAX_POLL_MS, Math.max(FIRST_POLL_MS, first ? this.applyMs[kind] / 2 : slept));
        return true;
      }
    }
  }

  /**
   * A wipe or shred that destroyed a key version during the pass: rows just written under it are
   * unreadable noise the lifecycle may already have swept; delete them here. Returns the others.
   */
  async dropIfKeyGone(written: RollupRow[]): Promise<RollupRow[]> {
    const fresh = new Map<string, AccountKeys[] | undefined>();
    const kept: RollupRow[] = [];
    const gone: RollupRow[] = [];
    for (const m of written) {
      if (!fresh.has(m.accountId)) fresh.set(m.accountId, await this.c.o.keyring.accountKeys(m.accountId));
      (fresh.get(m.accountId)?.some((k) => k.version === m.keyVersion) ? kept : gone).push(m);
    }
    if (gone.length) {
      this.c.o.fence?.();
      await this.c.o.store.deleteRollups(gone.map(refOf));
      this.c.o.log.info({ rows: gone.length }, 'rollup compaction: key version destroyed during the pass; rows written removed');
    }
    return kept;
  }
}
