/**
 * Fault suite, `kill -9` during shred and during purge: a collector process is killed with
 * SIGKILL while `DELETE /v1/accounts/:id?now=true` is in flight, and again right after a shred
 * answered (its purge running in the background). After each restart the shred is whole or
 * never happened (never half: an account the API calls shredded has no keys and `verify` says
 * ok), the purge finishes by itself, and the account that was not deleted is counted exactly
 * once. No assertion on timing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, type TestAccount } from './support/collector.js';
import { expectExactlyOnce, startCollectorProcess, stopProcess, tracker, type CollectorProcess } from './support/faults.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-killshred-'));
const ENV = { CIPHERSTAT_LIFECYCLE_INTERVAL_MS: '200', CIPHERSTAT_MAX_PROCESS_LAG_MS: '0' };
let p: CollectorProcess | undefined;

afterAll(async () => {
  if (p) await stopProcess(p, 'SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

const call = (method: string, path: string) => fetch(p!.url + path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: method === 'POST' ? '{}' : undefined });
const details = async (id: string) => (await (await call('GET', `/v1/accounts/${id}`)).json()) as { state: string; rows: { processed: number }; purge: { complete: boolean } | null };

/**
 * After a restart: the account is active, or shredded with its purge finishing and `verify` ok.
 * A kill between the shred's first step (deactivated, shred due now) and the tombstone leaves
 * the account deactivated and due: the scheduler's next pass finishes the shred, so that state
 * may be seen only until then.
 */
async function expectWholeOrNothing(id: string): Promise<string> {
  await expect.poll(async () => (await details(id)).state, { timeout: 120_000, interval: 250 }).not.toBe('deactivated');
  const state = (await details(id)).state;
  expect(['active', 'shredded']).toContain(state);
  if (state === 'shredded') {
    await expect.poll(async () => (await details(id)).purge?.complete, { timeout: 300_000, interval: 500 }).toBe(true);
    const verify = (await (await call('GET', `/v1/accounts/${id}/verify`)).json()) as { ok: boolean; problems: string[] };
    expect(verify.problems).toEqual([]);
    expect(verify.ok).toBe(true);
  }
  return state;
}

it('kill -9 during shred and during purge: whole or not at all, purge resumes, the other account exact', { timeout: 900_000 }, async () => {
  p = await startCollectorProcess(dataDir, ENV);
  const create = async () => (await (await call('POST', '/v1/accounts')).json()) as TestAccount;
  const keep = await create();
  const doomed = [await create(), await create()];
  const kept = tracker(() => p!.url, keep);
  for (const a of doomed) {
    const t = tracker(() => p!.url, a);
    for (let i = 0; i < 20; i++) expect(await t.send()).toBe(202);
  }
  for (let i = 0; i < 20; i++) expect(await kept.send()).toBe(202);
  await expect.poll(async () => (await details(keep.accountId)).rows.processed, { timeout: 180_000, interval: 250 }).toBeGreaterThanOrEqual(20);

  // 1. Killed while the shred request is in flight.
  const inFlight = call('DELETE', `/v1/accounts/${doomed[0]!.accountId}?now=true`).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 20));
  await stopProcess(p, 'SIGKILL');
  await inFlight;
  p = await startCollectorProcess(dataDir, ENV);
  const first = await expectWholeOrNothing(doomed[0]!.accountId);

  // 2. Killed right after the shred answered: the purge was running in the background.
  const shred = await call('DELETE', `/v1/accounts/${doomed[1]!.accountId}?now=true`);
  expect(shred.status).toBe(200);
  await stopProcess(p, 'SIGKILL');
  p = await startCollectorProcess(dataDir, ENV);
  expect(await expectWholeOrNothing(doomed[1]!.accountId)).toBe('shredded');

  for (let i = 0; i < 10; i++) expect(await kept.send()).toBe(202);
  await expect.poll(async () => (await details(keep.accountId)).rows.processed, { timeout: 180_000, interval: 250 }).toBeGreaterThanOrEqual(kept.acked.size);
  await stopProcess(p);
  p = undefined;
  const store = await openStore({ dataDir });
  try {
    const totals = await expectExactlyOnce(store, keep.accountId, kept);
    console.log(`fault kill -9 during shred (${first}) and purge: kept account ${totals.acknowledged} acknowledged, ${totals.counted} counted`);
  } finally {
    await store.close();
  }
});
