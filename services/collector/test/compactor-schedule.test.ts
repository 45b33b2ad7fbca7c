/**
 * The compactor's scheduler yields to a busy ingest (compactor.ts, "Scheduling"): while `busy()`
 * holds, a due pass waits — at most `yieldMaxMs`, then it runs anyway, so compaction progresses
 * under load that never stops. Passes are counted by the compactor's own counter, on chDB in a
 * temporary directory (an empty store: a pass finds nothing and ends).
 */
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { Compactor } from '../src/compaction/compactor.js';
import { loadConfig } from '../src/config.js';
import { Keyring, staticMasterKeys } from '../src/keyring/index.js';
import { createLogger } from '../src/logger.js';
import { openStore } from '../src/storage/index.js';
import type { Store } from '../src/storage/types.js';
import { tempDirs } from './support/temp-dirs.js';

const tmp = tempDirs('cipherstat-compactor-schedule-');
let store: Store;
let keyring: Keyring;

beforeAll(async () => {
  const dir = tmp();
  store = await openStore({ dataDir: join(dir, 'data') });
  await store.migrate();
  keyring = Keyring.open({ dir: join(dir, 'keyring'), master: staticMasterKeys({ 1: randomBytes(32) }) });
});
afterAll(async () => {
  await store?.close();
});

/** A scheduled compactor whose passes (ok or failed) and yielded seconds are read from its registry. */
function scheduled(busy: () => boolean, yieldMaxMs: number) {
  const registry = new Registry();
  const compactor = new Compactor({ store, keyring, log: createLogger({ level: 'silent' }), registry, intervalMs: 60_000, busy, yieldMaxMs });
  const value = async (name: string) => ((await registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
  return { compactor, passes: () => value('cipherstat_compaction_passes_total'), yielded: () => value('cipherstat_compaction_yield_seconds_total') };
}

describe('compaction yields to a busy ingest', () => {
  it('CIPHERSTAT_COMPACTION_YIELD_MAX_MS is 10 s unless set (0: never waits)', () => {
    expect(loadConfig({}, {}).compactionYieldMaxMs).toBe(10_000);
    expect(loadConfig({}, { CIPHERSTAT_COMPACTION_YIELD_MAX_MS: '0' }).compactionYieldMaxMs).toBe(0);
  });

  it('a due pass waits while ingest is busy and runs once it is not', async () => {
    let busy = true;
    let asked = 0;
    const s = scheduled(() => {
      asked++;
      return busy;
    }, 600_000);
    s.compactor.start();
    try {
      // The pass due at start keeps asking, and does not run while the answer is busy.
      await expect.poll(() => asked, { timeout: 60_000 }).toBeGreaterThanOrEqual(3);
      expect(await s.passes()).toBe(0);
      busy = false;
      await expect.poll(() => s.passes(), { timeout: 60_000 }).toBe(1);
      expect(await s.yielded()).toBeGreaterThan(0);
    } finally {
      await s.compactor.stop();
    }
  });

  it('a pass runs after yieldMaxMs however busy ingest stays', async () => {
    const s = scheduled(() => true, 300);
    s.compactor.start();
    try {
      await expect.poll(() => s.passes(), { timeout: 60_000 }).toBe(1);
      expect(await s.yielded()).toBeGreaterThanOrEqual(0.3);
    } finally {
      await s.compactor.stop();
    }
  });

  it('with yieldMaxMs 0 a due pass never waits', async () => {
    let asked = 0;
    const s = scheduled(() => (asked++, true), 0);
    s.compactor.start();
    try {
      await expect.poll(() => s.passes(), { timeout: 60_000 }).toBe(1);
      expect(asked).toBe(0);
      expect(await s.yielded()).toBe(0);
    } finally {
      await s.compactor.stop();
    }
  });

  it('runPass() never waits for a busy ingest', async () => {
    const s = scheduled(() => true, 600_000);
    const report = await s.compactor.runPass();
    expect(report.more).toBe(false);
    expect(await s.passes()).toBe(1);
    expect(await s.yielded()).toBe(0);
  });
});
