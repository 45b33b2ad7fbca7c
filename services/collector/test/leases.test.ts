/**
 * Leases (keyring/leases.ts) and the work they own (process/ownership.ts), in one process with
 * injected wall clocks (another host's clock is simply another `now`): a taken lease is refused
 * to others and names its holder; it is taken over only past its expiry plus the clock
 * allowance, with the next epoch; the old holder's renewal then fails and its work is stopped;
 * a holder's own validity runs out on its monotonic clock without any I/O; a release frees the
 * lease at once. No timing is asserted: clocks are moved explicitly, waits are for conditions.
 */
import { describe, expect, it } from 'vitest';
import { Lease } from '../src/keyring/leases.js';
import { LOCK_CLOCK_SKEW_MS } from '../src/keyring/fsutil.js';
import { Ownership } from '../src/process/ownership.js';
import { createLogger } from '../src/logger.js';
import { until } from './lifecycle-support.js';
import { Writable } from 'node:stream';
import { tempDirs } from './support/temp-dirs.js';

const tmp = tempDirs('cipherstat-leases-');

describe('leases', () => {
  it('one holder at a time; takeover only past expiry plus the clock allowance, with the next epoch', () => {
    const dir = tmp();
    let wallB = Date.now();
    const a = new Lease(dir, 'partition-0-of-2', 60_000);
    const b = new Lease(dir, 'partition-0-of-2', 60_000, () => wallB);
    const first = a.acquireOrRenew();
    expect(first).toMatchObject({ held: true, lease: { holder: a.holder, epoch: 1 } });
    expect(a.validFor(1000)).toBe(true);
    // Taken: refused, naming the holder.
    expect(b.acquireOrRenew()).toMatchObject({ held: false, lease: { holder: a.holder, epoch: 1 } });
    // Renewing keeps the epoch.
    expect(a.acquireOrRenew()).toMatchObject({ held: true, lease: { epoch: 1 } });
    // Past the expiry but within the allowance: still refused.
    wallB = a.read()!.expiresAt + LOCK_CLOCK_SKEW_MS - 1;
    expect(b.acquireOrRenew().held).toBe(false);
    // Past expiry + allowance: taken over, next epoch.
    wallB = a.read()!.expiresAt + LOCK_CLOCK_SKEW_MS + 1;
    expect(b.acquireOrRenew()).toMatchObject({ held: true, lease: { holder: b.holder, epoch: 2 } });
    // The old holder's renewal finds another holder: lost, and no longer valid.
    expect(a.acquireOrRenew()).toMatchObject({ held: false, lease: { holder: b.holder, epoch: 2 } });
    expect(a.validFor()).toBe(false);
    expect(a.epoch).toBeUndefined();
    // A release frees it at once (no expiry wait), and the next holder gets the next epoch.
    b.release();
    expect(a.acquireOrRenew()).toMatchObject({ held: true, lease: { holder: a.holder, epoch: 3 } });
  });

  it('a partition lease of another partition count waits until every lease of the running count is released or expired', () => {
    const dir = tmp();
    let wall = Date.now();
    const old0 = new Lease(dir, 'partition-0-of-2', 60_000);
    const old1 = new Lease(dir, 'partition-1-of-2', 60_000);
    const new0 = new Lease(dir, 'partition-0-of-3', 60_000, () => wall);
    const compactor = new Lease(dir, 'compactor', 60_000);
    expect(old0.acquireOrRenew().held).toBe(true);
    expect(old1.acquireOrRenew().held).toBe(true);
    expect(compactor.acquireOrRenew().held).toBe(true); // not a partition lease: never in the way
    expect(new0.acquireOrRenew()).toMatchObject({ held: false, lease: { name: 'partition-0-of-2', holder: old0.holder } });
    old0.release(); // SIGTERM of the first old node
    expect(new0.acquireOrRenew()).toMatchObject({ held: false, lease: { name: 'partition-1-of-2', holder: old1.holder } });
    // The second old node died instead: its lease blocks until expiry plus the allowance.
    wall = old1.read()!.expiresAt + LOCK_CLOCK_SKEW_MS + 1;
    // Epochs are one sequence over every lease: above the old count's (1, 2) and the compactor's (3),
    // so the new count's fence also fences the old count's holders (storage/fences.ts).
    expect(new0.acquireOrRenew()).toMatchObject({ held: true, lease: { name: 'partition-0-of-3', epoch: 4 } });
    // And now the old count cannot come back while the new one runs (with its clock, past the old leases too).
    old1.release();
    expect(new Lease(dir, 'partition-0-of-2', 60_000).acquireOrRenew()).toMatchObject({ held: false, lease: { name: 'partition-0-of-3', holder: new0.holder } });
  });

  it("a holder's validity runs out on its own monotonic clock (no renewal, no I/O)", async () => {
    const a = new Lease(tmp(), 'compactor', 300);
    expect(a.acquireOrRenew().held).toBe(true);
    expect(a.validFor(0)).toBe(true);
    await until(async () => !a.validFor(0), 60_000, 'the lease runs out locally');
    expect(a.read()!.holder).toBe(a.holder); // the file still names it: only the holder's own view ended
  });

  it('ownership: the waiting node says why, the holder stops when another took its lease, the taker starts', async () => {
    const dir = tmp();
    const logs: string[] = [];
    const log = createLogger({ level: 'info', destination: new Writable({ write: (c, _e, cb) => (logs.push(String(c)), cb()) }) });
    let wallB = Date.now();
    const events: string[] = [];
    const own = (name: string, lease: Lease) =>
      new Ownership({ lease, log, start: async (epoch) => void events.push(`${name} start ${epoch}`), stop: async () => void events.push(`${name} stop`) });
    const leaseA = new Lease(dir, 'partition-1-of-2', 600);
    const leaseB = new Lease(dir, 'partition-1-of-2', 600, () => wallB);
    const a = own('A', leaseA);
    const b = own('B', leaseB);
    a.start();
    await until(async () => events.includes('A start 1'), 60_000, 'A starts');
    b.start();
    await until(async () => logs.some((l) => l.includes(`partition-1-of-2 is held by ${leaseA.holder} (epoch 1): waiting`)), 60_000, 'B says why it waits');
    expect(events).toEqual(['A start 1']);
    // B's clock is far ahead (as if A had stopped renewing long ago): B takes over; A's next renewal loses and stops.
    wallB = Date.now() + 3_600_000;
    await until(async () => events.includes('B start 2'), 60_000, 'B starts under epoch 2');
    await until(async () => events.includes('A stop'), 60_000, 'A stops');
    expect(logs.some((l) => l.includes(`lease partition-1-of-2 lost to ${leaseB.holder} (epoch 2): stopping`))).toBe(true);
    await a.close();
    await b.close();
    expect(events.filter((e) => e === 'B stop')).toHaveLength(1);
  });
});
