// Shred benchmark: an account with 1M points (sealed batches, processed into encrypted
// rollups and dictionary by the real processor, next to a bystander account), then
// time to unreadable (shred), time to purged (every ciphertext row deleted) and verify.
//
//   npx tsc -b packages/protocol services/collector && node bench/shred.mjs [points]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { seal, encodeInner, fromBase64, randomBytes, toHex } from '../packages/protocol/dist/index.js';
import { loadConfig } from '../services/collector/dist/config.js';
import { openServices } from '../services/collector/dist/services.js';
import { createLogger } from '../services/collector/dist/logger.js';
import { PURGE_TABLES, connectionOf } from '../services/collector/dist/storage/index.js';
import { progress, table, writeResult, fmt } from './lib.mjs';

const POINTS = Number(process.argv[2] ?? 1_000_000);
const BYSTANDER_POINTS = Math.round(POINTS / 10);
const PER_BATCH = 2000;
const SPAN_MS = 7 * 86_400_000;
const COUNTRIES = Array.from({ length: 20 }, (_, i) => `C${String(i).padStart(2, '0')}`);
const DEVICES = ['desktop', 'mobile', 'tablet'];
const METRICS = [
  ['orders', 'counter'],
  ['revenue', 'counter'],
  ['page.load_ms', 'histogram'],
];

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-bench-shred-'));
const quiet = new Writable({ write: (_c, _e, cb) => cb() });
const config = { ...loadConfig({ 'data-dir': dataDir, port: '0' }, {}), role: 'all' };
const s = await openServices(config, { log: createLogger({ level: 'warn', destination: quiet }), secrets: { adminToken: 'csa_bench_admin_token_0123456789abcdefghijklmnop' } });
const totals = async (id) => {
  const c = (await s.store.purgeRowCounts([id])).get(id);
  return { ...c, total: PURGE_TABLES.reduce((n, t) => n + c[t], 0) };
};

/** Sealed batches of `n` points spread over the last 7 days, in time order (as a live shop sends them). */
async function load(account, n, label) {
  const start = Date.now() - SPAN_MS - 60_000;
  const accountPublicKey = fromBase64(account.writeKey);
  const t0 = performance.now();
  let sent = 0;
  let nextReport = 0;
  while (sent < n) {
    const rows = [];
    for (let b = 0; b < 25 && sent < n; b++) {
      const count = Math.min(PER_BATCH, n - sent);
      const points = [];
      for (let i = 0; i < count; i++) {
        const k = sent + i;
        const [name, kind] = METRICS[k % METRICS.length];
        points.push({
          id: i, kind, name,
          value: kind === 'histogram' ? 50 + (k % 950) : 1 + (k % 7),
          time: start + Math.floor((k / n) * SPAN_MS),
          tags: { country: COUNTRIES[(k >> 2) % COUNTRIES.length], device: DEVICES[k % DEVICES.length] },
        });
      }
      const batchId = toHex(randomBytes(16));
      const now = Date.now();
      // the inner layer sealed to the account key: exactly what ingest stores after opening the outer one
      const sealed = seal(encodeInner(account.accountId, batchId, points), accountPublicKey);
      rows.push({ accountId: account.accountId, batchId, receivedAt: now, createdAt: now, pointCount: count, sdk: 'bench/0', sealed, expiresAt: now + 400 * 86_400_000 });
      sent += count;
    }
    await s.store.insertBatches(rows);
    s.processor.enqueue(rows);
    await s.processor.drain();
    if (sent >= nextReport || sent === n) {
      progress(`${label}: ${fmt(sent)} / ${fmt(n)} points processed (${fmt(sent / ((performance.now() - t0) / 1000))} points/s)`);
      nextReport += n / 10;
    }
  }
  return performance.now() - t0;
}

const results = { points: POINTS, bystanderPoints: BYSTANDER_POINTS };
try {
  const victim = await s.accounts.create();
  const bystander = await s.accounts.create();
  progress(`data dir ${dataDir}`);
  results.loadMs = Math.round(await load(victim, POINTS, 'victim'));
  await load(bystander, BYSTANDER_POINTS, 'bystander');
  const before = await totals(victim.accountId);
  const bystanderBefore = await totals(bystander.accountId);
  progress(`victim holds ${fmt(before.total)} ciphertext rows: ${PURGE_TABLES.map((t) => `${t} ${fmt(before[t])}`).join(', ')}`);
  const disk = async () =>
    Object.fromEntries(
      (await connectionOf(s.store).query("SELECT table, sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = currentDatabase() GROUP BY table")).map((r) => [r.table, Number(r.b)]),
    );
  const diskBefore = await disk();

  const readable = await s.lifecycle.verify(victim.accountId);
  if (readable.ok || readable.decryption.rollups.opened === 0) throw new Error('control failed: the live account should be readable');

  // time to unreadable: tombstone, key file unlinked (fsynced), account row shredded, caches dropped
  let t = performance.now();
  const shred = await s.lifecycle.shred(victim.accountId);
  results.unreadableMs = +(performance.now() - t).toFixed(1);
  progress(`shredded in ${results.unreadableMs} ms: ${shred.destroyed.join(', ')}`);

  // unreadable while the ciphertext is still there: every remaining key against a sample and every batch
  t = performance.now();
  const early = await s.lifecycle.verify(victim.accountId);
  results.verifyBeforePurgeMs = Math.round(performance.now() - t);
  const tried = (v) => v.decryption.rollups.tried + v.decryption.dictionary.tried + v.decryption.batches.tried;
  const opened = (v) => v.decryption.rollups.opened + v.decryption.dictionary.opened + v.decryption.batches.opened;
  progress(`verify before purge: ok=${early.ok}, ${tried(early)} ciphertexts x ${early.keysTried.dataKeys} secret keys / ${early.keysTried.keyPairs} key pairs, ${opened(early)} opened`);
  results.verifyBeforePurge = { ok: early.ok, tried: tried(early), opened: opened(early), keysTried: early.keysTried };

  // time to purged, with progress from a second connection-side count every 250 ms
  t = performance.now();
  let done = false;
  const watcher = (async () => {
    while (!done) {
      await new Promise((r) => setTimeout(r, 250));
      if (done) break;
      const left = await totals(victim.accountId);
      progress(`purging: ${fmt(left.total)} rows left (${PURGE_TABLES.map((x) => `${x} ${fmt(left[x])}`).join(', ')})`);
    }
  })();
  const purge = await s.lifecycle.purge(victim.accountId);
  done = true;
  await watcher;
  results.purgedMs = Math.round(performance.now() - t);
  progress(`purged in ${fmt(results.purgedMs)} ms`);

  t = performance.now();
  const verify = await s.lifecycle.verify(victim.accountId);
  results.verifyMs = Math.round(performance.now() - t);
  const bystanderAfter = await totals(bystander.accountId);
  const diskAfter = await disk();

  results.rowsBefore = before;
  results.rowsLeft = purge.rowsLeft;
  results.verifyOk = verify.ok;
  results.bystanderUntouched = JSON.stringify(bystanderAfter) === JSON.stringify(bystanderBefore);
  results.diskBytes = { before: diskBefore, after: diskAfter };
  results.targets = { unreadableMs: 1000 };

  console.log();
  table([
    { step: `load ${fmt(POINTS)} points (seal, store, process)`, ms: fmt(results.loadMs), detail: `${fmt(before.total)} ciphertext rows` },
    { step: 'shred: time to unreadable', ms: fmt(results.unreadableMs, 1), detail: `target < 1000 ms: ${results.unreadableMs < 1000 ? 'met' : 'MISSED'}` },
    { step: 'purge: time to purged', ms: fmt(results.purgedMs), detail: `${fmt(purge.rowsLeft.batches + purge.rowsLeft.processed + purge.rowsLeft.rollups + purge.rowsLeft.dictionary)} rows left` },
    { step: 'verify after shred, before purge', ms: fmt(results.verifyBeforePurgeMs), detail: `ok=${early.ok}: ${opened(early)} of ${tried(early)} ciphertexts opened by any remaining key` },
    { step: 'verify after purge', ms: fmt(results.verifyMs), detail: `ok=${verify.ok}, purge ${verify.purge}` },
    { step: 'bystander account', ms: '-', detail: results.bystanderUntouched ? `untouched (${fmt(bystanderAfter.total)} rows)` : 'CHANGED' },
  ]);
  console.log();
  table(PURGE_TABLES.map((x) => ({ table: x, rowsBefore: fmt(before[x]), rowsAfter: fmt(purge.rowsLeft[x]), diskBefore: fmt(diskBefore[x] ?? 0), diskAfter: fmt(diskAfter[x] ?? 0) })));
  writeResult('shred', results);
  if (!verify.ok || !early.ok || !results.bystanderUntouched) process.exitCode = 1;
} finally {
  await s.store.close();
  rmSync(dataDir, { recursive: true, force: true });
}
