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

export class FinishProtocol {
  /** `d:`/`c:` + row → when a delete (sources) or a list update (merged rows) was last queued for it. */
  private readonly queued = new Map<string, number>();

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
    const sources = rows.flatMap(sourcesOf);
    // This pass's sources were just read; only those of earlier passes may be gone already.
    const fresh = new Set(earlier.map(refId));
    let present = [
      ...(earlier.length ? await store.findRollups(earlier.flatMap(sourcesOf)) : []),
      ...rows.filter((r) => !fresh.has(refId(r))).flatMap((r) => sourcesOf(r).map((s) => ({ ...s, supersedes: [] as string[] }))),
    ];
    if (present.length > 0) {
      this.c.o.fence?.();
      await store.deleteRollups(this.toQueue('d', present), { wait });
      // Reading the rows is the proof (not the table's mutation list: another mutation — a purge,
      // a retention delete — must not hold this pass up).
      const check = async () => (present = await store.findRollups(sources)).length === 0;
      if (!wait || !(await check())) await this.poll(check);
    }
    const stillThere = new Set(present.map(refId));
    const ready = rows.filter((r) => !sourcesOf(r).some((s) => stillThere.has(refId(s))));
    if (ready.length === 0) return new Set();
    await this.c.o.hook?.('deleted');
    let state = await store.findRollups(ready.map(refOf));
    const pending = () => state.filter((r) => r.supersedes.length > 0);
    if (pending().length > 0) {
      this.c.o.fence?.();
      await store.clearSupersedes(this.toQueue('c', pending().map(refOf)), { wait });
      const check = async () => {
        state = await store.findRollups(ready.map(refOf));
        return pending().length === 0;
      };
      if (!wait || !(await check())) await this.poll(check);
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

  private async poll(done: () => Promise<boolean>): Promise<boolean> {
    const deadline = performance.now() + (this.c.o.settleMs ?? 10_000);
    for (let wait = 100; ; wait = Math.min(1000, wait * 2)) {
      if (this.c.closing() || performance.now() > deadline) return false;
      await sleep(wait);
      if (await done()) return true;
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
