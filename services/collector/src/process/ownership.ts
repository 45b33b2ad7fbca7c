/**
 * Runs a piece of work (a partition's processing, the compactor) only while this process
 * holds its lease (keyring/leases.ts): waits and says why while another node holds it, takes
 * it over once that node's lease expired, renews it every third of its duration, and stops
 * the work as soon as a renewal fails or the lease is about to run out without one — before
 * any other node may take it over.
 */
import type { Logger } from '../logger.js';
import type { Lease, LeaseRecord } from '../keyring/leases.js';
import { LOCK_CLOCK_SKEW_MS } from '../keyring/fsutil.js';

export interface OwnedWork {
  lease: Lease;
  log: Logger;
  /** Starts the work under `epoch` (recovery first where needed). */
  start: (epoch: number) => Promise<void>;
  /** Stops the work at once: nothing may be committed after this resolves. */
  stop: () => Promise<void>;
}

export class Ownership {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private turn: Promise<void> = Promise.resolve();
  /** The last holder reported while waiting (logged once per holder and epoch). */
  private reported = '';
  /** Turns taken, and epochs started (tests and /metrics read them). */
  readonly stats = { turns: 0, started: 0, lost: 0 };

  constructor(private readonly o: OwnedWork) {}

  get holding(): boolean {
    return this.running;
  }

  start(): void {
    this.closed = false;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.turn = this.step().finally(() => this.schedule(Math.max(50, Math.floor(this.o.lease.durationMs / 3))));
    }, ms);
  }

  private async step(): Promise<void> {
    this.stats.turns++;
    const { lease, log } = this.o;
    let attempt: ReturnType<Lease['acquireOrRenew']> | undefined;
    try {
      attempt = lease.acquireOrRenew();
    } catch (e) {
      log.warn({ lease: lease.name, err: e instanceof Error ? e.message : String(e) }, 'lease renewal failed');
    }
    if (this.closed) return;
    if (attempt?.held) {
      this.reported = '';
      if (!this.running) {
        this.running = true;
        this.stats.started++;
        log.info({ lease: lease.name, epoch: attempt.lease.epoch, holder: lease.holder, durationMs: lease.durationMs }, `lease ${lease.name} taken (epoch ${attempt.lease.epoch}): starting`);
        try {
          await this.o.start(attempt.lease.epoch);
        } catch (e) {
          log.error({ lease: lease.name, err: e instanceof Error ? e.message : String(e) }, 'could not start the leased work; giving the lease up');
          await this.lose();
          lease.release();
        }
      }
      return;
    }
    if (this.running && (attempt || !lease.validFor(Math.floor(lease.durationMs / 3)))) {
      log.error({ lease: lease.name, now: attempt?.lease }, attempt ? `lease ${lease.name} lost to ${attempt.lease.holder} (epoch ${attempt.lease.epoch}): stopping` : `lease ${lease.name} could not be renewed in time: stopping before it expires`);
      await this.lose();
    }
    if (attempt && !attempt.held) this.waiting(attempt.lease);
  }

  private waiting(l: LeaseRecord): void {
    const key = `${l.holder}/${l.epoch}`;
    if (key === this.reported) return;
    this.reported = key;
    const mine = this.o.lease.name;
    this.o.log.warn(
      { lease: mine, blockedBy: l.name, holder: l.holder, epoch: l.epoch, expiresAt: new Date(l.expiresAt).toISOString() },
      l.name === mine
        ? `${l.name} is held by ${l.holder} (epoch ${l.epoch}): waiting; this node takes over only if that holder stops renewing (${l.durationMs} ms lease + ${LOCK_CLOCK_SKEW_MS} ms clock allowance)`
        : `${mine}: another partition count runs (${l.name} is held by ${l.holder}, epoch ${l.epoch}): waiting until every node of that count has released its lease (SIGTERM) or stopped renewing`,
    );
  }

  private async lose(): Promise<void> {
    this.running = false;
    this.stats.lost++;
    await this.o.stop();
  }

  /** Stops the work and gives the lease up (a graceful stop: the next holder need not wait). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.turn;
    if (this.running) {
      this.running = false;
      await this.o.stop();
    }
    try {
      this.o.lease.release();
    } catch (e) {
      this.o.log.warn({ lease: this.o.lease.name, err: e instanceof Error ? e.message : String(e) }, 'could not release the lease (it expires by itself)');
    }
  }
}
