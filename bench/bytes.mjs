// Bytes on disk per point, measured where it does not depend on the machine's load.
//
// `npm run bench ingest` measures bytes per point after a timed load, so its rollup figure moves
// with the size of the ticks processing happened to make (a loaded machine makes small ticks and
// many partial rows: 41 B/pt quiet, 178 B/pt at load 30). Here every input is fixed:
//
//   encrypted: the ingest bench's points (bench/ingest.mjs makePoints, 100 per batch), sealed as the
//              Library sends them in Node (envelope v2, inner plaintext deflated, flag 0x01), stored as
//              ingest stores them (the inner layer, group commits of --flush batches), processed by
//              the collector's own tick code (dist/process/tick.js computeTick) in ticks of exactly
//              --tick batches and written as the processor writes a tick (dictionary, rollups,
//              processed markers), through the collector's Store on embedded chDB;
//   plaintext: the same points in the ingest bench's plaintext table (bench/lib.mjs
//              PLAIN_POINTS_TABLE), inserted in the same flushes.
//
// Both are measured as ingested (system.parts, no merge forced) and split by column
// (bench/lib.mjs columnSplit); the ratio's target is issue 14's (≤ 4× plaintext).
//
//   node bench/bytes.mjs [--batches 3000] [--tick 30,100,300] [--flush 30] [--dist path/to/collector/dist] [--keep]
//
// --dist  another build of the collector (before/after comparisons: a build of an older commit).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { LIB, PLAIN_POINTS_TABLE, buildInfo, diskSummary, fmt, formatColumnSplit, plainRow, progress, runChildJson, table, writeResult } from './lib.mjs';
import { makePoints } from './ingest.mjs';

const SELF = fileURLToPath(import.meta.url);
const DEFAULT_DIST = fileURLToPath(new URL('../services/collector/dist/', import.meta.url));
const POINTS_PER_BATCH = 100;
const DAY = 86_400_000;

/** Points of every batch in [20 s, 30 s) of one minute (the ingest bench stamps a whole run in the 10 s before its start). */
const baseTimeOf = (now) => Math.floor(now / 60_000) * 60_000 - 30_000;

async function encryptedChild({ dir, batches, tick, flush, baseTime, dist }) {
  const DIST = pathToFileURL(dist).href;
  const { openStore } = await import(`${DIST}storage/index.js`);
  const { stampWrittenAt } = await import(`${DIST}storage/rollups.js`);
  const { computeTick, TickState } = await import(`${DIST}process/tick.js`);
  const P = await import('@cipherstat/protocol');
  const { deflateRaw, hpkeSeal } = await import('@cipherstat/protocol/node');
  const hex = (n) => Buffer.from(P.randomBytes(n)).toString('hex');
  const store = await openStore({ dataDir: dir });
  await store.migrate();
  const pair = P.keyPair();
  const key = { version: 1, ...pair, dataKey: P.randomBytes(32), macKey: P.randomBytes(32) };
  const accountId = `acct_${hex(12)}`;
  const accounts = new Map([[accountId, { keys: [key], retentionDays: 30, confidential: false }]]);
  const state = new TickState();
  const now = Date.now();
  const rows = [];
  for (let i = 0; i < batches; i++) {
    const batchId = hex(16);
    const points = makePoints(i, baseTime);
    const flags = P.FLAG_DEFLATE;
    const sealed = hpkeSeal(key.publicKey, P.INFO_INNER, P.innerAad(accountId, batchId, flags), deflateRaw(P.encodeInner(accountId, batchId, points)));
    rows.push({ accountId, batchId, receivedAt: now, createdAt: baseTime, pointCount: points.length, sdk: 'bench/1', version: 2, flags, sealed, expiresAt: now + 30 * DAY });
  }
  for (let i = 0; i < rows.length; i += flush) await store.insertBatches(rows.slice(i, i + flush));
  let ticks = 0;
  let rollupRows = 0;
  let pointsProcessed = 0;
  for (let i = 0; i < rows.length; i += tick) {
    const out = computeTick(state, { rows: rows.slice(i, i + tick), accounts, now, part: hex(16), epoch: 0 });
    if (out.dict.length) await store.insertDictionary(out.dict);
    await store.insertEncodedRollups(stampWrittenAt(out.insert, Date.now()));
    await store.markProcessed(out.processed);
    if (out.rejects.length) await store.addRejects(out.rejects);
    ticks++;
    rollupRows += out.rollups.length;
    pointsProcessed += out.pointsProcessed;
  }
  await store.close();
  process.stdout.write(JSON.stringify({ ticks, rollupRows, pointsProcessed }) + '\n');
}

async function plaintextChild({ dir, batches, flush, baseTime }) {
  const { Session } = await import('chdb');
  const session = new Session(dir, { connectionArgs: ['--async_load_databases=0'] });
  await session.queryAsync('CREATE DATABASE IF NOT EXISTS plain');
  await session.queryAsync(PLAIN_POINTS_TABLE);
  for (let i = 0; i < batches; i += flush) {
    let values = '';
    for (let b = i; b < Math.min(batches, i + flush); b++) for (const p of makePoints(b, baseTime)) values += plainRow('', p);
    await session.insert({ table: 'plain.points', values, format: 'JSONEachRow' });
  }
  session.close();
  process.stdout.write(JSON.stringify({ pointsProcessed: batches * POINTS_PER_BATCH }) + '\n');
}

async function main() {
  const { values } = parseArgs({
    options: {
      batches: { type: 'string', default: '3000' },
      tick: { type: 'string', default: '30,100,300' },
      flush: { type: 'string', default: '30' },
      keep: { type: 'boolean', default: false },
      dist: { type: 'string', default: DEFAULT_DIST },
    },
  });
  const dist = join(values.dist, '/');
  const o = { batches: Number(values.batches), ticks: values.tick.split(',').map(Number), flush: Number(values.flush), dist };
  const build = buildInfo(`${dist}cli.js`);
  if (build.stale) progress(`WARNING: ${build.stale}`);
  const points = o.batches * POINTS_PER_BATCH;
  const baseTime = baseTimeOf(Date.now());
  const tmp = mkdtempSync(join(os.tmpdir(), 'cipherstat-bench-bytes-'));
  const runs = {};
  try {
    progress(`plaintext: ${fmt(points)} points in flushes of ${o.flush} batches`);
    const plainDir = join(tmp, 'plain');
    await runChildJson([SELF, '--child', 'plaintext', JSON.stringify({ dir: plainDir, batches: o.batches, flush: o.flush, baseTime })]);
    const plain = diskSummary(await runChildJson([LIB, '--disk-usage', plainDir, 'plain']), points);
    for (const tick of o.ticks) {
      progress(`encrypted: ${fmt(o.batches)} batches, ticks of ${tick} batches`);
      const dir = join(tmp, `encrypted-${tick}`);
      const r = await runChildJson([SELF, '--child', 'encrypted', JSON.stringify({ dir, batches: o.batches, tick, flush: o.flush, baseTime, dist })]);
      if (r.pointsProcessed !== points) throw new Error(`processed ${r.pointsProcessed} of ${points} points`);
      const disk = diskSummary(await runChildJson([LIB, '--disk-usage', join(dir, 'clickhouse'), 'cipherstat']), points);
      runs[tick] = { ...r, disk, ratio: disk.asIngested.bytesPerPoint / plain.asIngested.bytesPerPoint };
    }
    const rows = Object.entries(runs).map(([tick, r]) => {
      const t = r.disk.asIngested.tables;
      return {
        'ticks of': `${tick} batches (${fmt(tick * POINTS_PER_BATCH)} pts)`,
        'rollup rows/pt': fmt(r.rollupRows / points, 3),
        'B/pt encrypted': fmt(r.disk.asIngested.bytesPerPoint, 1),
        batches: fmt(t.batches?.bytesPerPoint ?? 0, 1),
        rollups: fmt(t.rollups?.bytesPerPoint ?? 0, 1),
        other: fmt(r.disk.asIngested.bytesPerPoint - (t.batches?.bytesPerPoint ?? 0) - (t.rollups?.bytesPerPoint ?? 0), 1),
        plaintext: fmt(plain.asIngested.bytesPerPoint, 1),
        'ratio (≤ 4×)': `${fmt(r.ratio, 2)}× ${r.ratio <= 4 ? 'PASS' : 'FAIL'}`,
        // after OPTIMIZE FINAL on both sides: one part per table, whatever merges ran before
        'merged: B/pt (ratio)': `${fmt(r.disk.optimized.bytesPerPoint, 1)} vs ${fmt(plain.optimized.bytesPerPoint, 1)} (${fmt(r.disk.optimized.bytesPerPoint / plain.optimized.bytesPerPoint, 2)}×)`,
      };
    });
    console.log(`\nbytes on disk per point as ingested, ${fmt(points)} points (the ingest bench's), same points in both tables; collector build ${dist === DEFAULT_DIST ? `of ${build.commit}` : dist}`);
    table(rows);
    console.log(`plaintext: ${fmt(plain.asIngested.bytesPerPoint, 2)} B/pt`);
    for (const line of formatColumnSplit(plain)) console.log(line);
    for (const [tick, r] of Object.entries(runs)) {
      console.log(`encrypted, ticks of ${tick} batches: ${fmt(r.disk.asIngested.bytesPerPoint, 2)} B/pt (${Object.entries(r.disk.asIngested.tables).map(([k, v]) => `${k} ${fmt(v.bytesPerPoint, 2)}`).join(', ')})`);
      for (const line of formatColumnSplit(r.disk)) console.log(line);
    }
    writeResult('bytes', { build, options: o, points, plaintext: plain, encrypted: runs });
  } finally {
    if (values.keep) progress(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  const args = JSON.parse(process.argv[4]);
  await (process.argv[3] === 'encrypted' ? encryptedChild(args) : plaintextChild(args)); // then ends by itself (chDB closed)
} else {
  await main();
}
