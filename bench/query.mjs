// Query benchmark: the encrypted query path beside a plaintext ClickHouse table of the same
// events, in one embedded chDB, one process. Nine query shapes a dashboard sends (30-day hourly
// sum and p95 by a 20-value tag in UTC, in Asia/Kolkata (UTC+5:30) and in Asia/Kathmandu
// (UTC+5:45), 30-day daily sum in Kathmandu, 24-hour minute p95 by tag, 90-day daily sum), each
// in three stored states, then 20 concurrent dashboard clients running the overview's queries in
// a loop (throughput and p99) in the live state, each against the same on the plaintext table;
// then the same 20 clients each with its own ranges (no identical queries, so nothing shared:
// informational).
//
//   data:      N points (default 2M: a month of a small shop; its state takes ~10 min
//              to build on 2 cores) of one account over the 30 days before --at o'clock UTC
//              today (default 23), seeded PRNG: orders (counter), revenue (counter),
//              page.load_ms (histogram, log-normal), tags country (20 values, Zipf-ish) and
//              device (3 values) → 60 series per metric.
//   encrypted: one account, written as production writes it: the points of every --tick seconds
//              of traffic (default 300) sealed as the Node Library sends them and processed by the
//              collector's tick code (dist/process/tick.js computeTick) at the end of that window:
//              minute rows only (ticks write hour and quarter-hour rows only for late points),
//              each tick's processed markers after its rows. Any tick of 60 s or more dividing
//              the hour stores the same rows (one per minute and series: what compaction's merge
//              leaves of production's ~1 s ticks); longer ones only cost less to set up. Then the real Compactor
//              (dist/compaction/compactor.js, clock injected) takes it through three states:
//                unpacked — every closed hour derived (compaction/derive.ts: hour and quarter-hour
//                           rows from minute rows, the derivation watermark moved), no day packed:
//                           the worst a compaction backlog leaves;
//                live     — then a pass at `to`: closed UTC days packed, today as compaction leaves
//                           it, the last hour still minute rows behind the real watermark (it
//                           closed less than 11 min ago): what a dashboard meets;
//                packed   — compaction's clock 80 min later: every stored hour in a pack.
//              Queried over HTTP (POST /v1/query, read token, in the answer form the dashboard
//              asks for: `columns`; a --dist build before that form: the points form) against startCollector on port 0
//              (role `query`: no processor/lifecycle timers running beside the measurement);
//              the result cache is bypassed by invalidating the account before every run
//              (what the processor does after a tick), the dictionary/pseudonym caches stay warm.
//   plaintext: MergeTree plain.events (time, name, value, country, device) ORDER BY (name, time)
//              in the same chDB; the equivalent SQL through the same store connection
//              (connectionOf(store).query: JSONEachRow, parsed in JS). Every state's answers are
//              checked against it.
//   CPU:       per encrypted query (mean of the measured runs; the concurrent phase: of all its
//              queries), ms of CPU of this process's main thread (the collector's HTTP, storage
//              calls, labels and JSON, and this bench's client) and of the query workers (threads
//              named cs-query-worker: opening and merging rows), read per thread from /proc (Linux,
//              10 ms ticks).
//
//   breakdown: in the live state and the last, where each shape's time goes, each part alone on
//              this process's main thread (--runs times, medians): one statement of all its rows
//              (the storage call: wall and process CPU), opening and merging them (merge.ts
//              mergeBytes), finishing its cells (finishSeries), and writing the answer's JSON
//              (each form).
//
//   answer forms: in the same states, each shape's answer from the result cache in the points
//              and the columns form, alternating (--runs each): bytes, the writer (Server-Timing
//              json), http (the client's time minus the handler's) and the client's whole time;
//              the run fails if the two forms' values differ.
//
//   node bench/query.mjs [--points 2000000] [--tick 300] [--at 23] [--runs 15] [--warmup 2] [--seed 42]
//                        [--keep] [--no-optimize] [--dist path/to/collector/dist]
//                        [--clients 20] [--concurrent-seconds 15] [--live-days] [--only <regexp>]
//   --only: only the shapes whose name matches (A/B pairs of a few shapes; the concurrent phases
//   are skipped then, and the correctness checks are those of the shapes measured)
//   node bench/query.mjs --reuse <dir kept by --keep> [--dist …]   queries only (the kept state), no JSON written
//
// Results: bench/results/query.json.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Session } from 'chdb';
import { fmt, percentile, progress, table, threadCpuSeconds, writeResult } from './lib.mjs';
import { mulberry32 } from '../test/support/seeded.mjs';

const { values: args } = parseArgs({
  options: {
    points: { type: 'string', default: '2000000' },
    tick: { type: 'string', default: '300' },
    at: { type: 'string', default: '23' },
    runs: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '2' },
    seed: { type: 'string', default: '42' },
    keep: { type: 'boolean', default: false },
    dist: { type: 'string' },
    reuse: { type: 'string' },
    'no-optimize': { type: 'boolean', default: false },
    clients: { type: 'string', default: '20' },
    'concurrent-seconds': { type: 'string', default: '15' },
    'live-days': { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const ROOT = fileURLToPath(new URL('..', import.meta.url));
// --dist: another build of services/collector/dist (A/B experiments on a scratch copy)
const DIST = args.dist ? `${resolve(args.dist)}/` : `${ROOT}services/collector/dist/`;
const { loadConfig } = await import(`${DIST}config.js`);
const { startCollector } = await import(`${DIST}server.js`);
const { createLogger } = await import(`${DIST}logger.js`);
const { computeTick, TickState } = await import(`${DIST}process/tick.js`);
const { stampWrittenAt } = await import(`${DIST}storage/rollups.js`);
const { Compactor } = await import(`${DIST}compaction/compactor.js`);
const engineModule = await import(`${DIST}query/engine.js`);
const { MAX_ROWS, rowSelection, mergePlan } = engineModule;
// the route's answer writer (older builds under --dist: JSON.stringify, what c.json wrote)
const answerJson = engineModule.queryResultJson ?? JSON.stringify;
/** The `columns` answer form's writer (null: a build before it). */
const columnsJson = engineModule.queryResultColumnsJson ?? null;
const { parseQuery, QUERY_FORMATS } = await import(`${DIST}query/request.js`);
/**
 * The answer form the dashboard asks for (dashboard/app.ts `query`), so the encrypted queries
 * send what it sends: `columns`, or nothing on a build before the form (its points form).
 */
const DASHBOARD_FORMAT = QUERY_FORMATS?.includes('columns') ? 'columns' : null;
const { accountContext } = await import(`${DIST}query/context.js`);
const { mergeBytes, finishSeries } = await import(`${DIST}query/merge.js`);
const { connectionOf } = await import(`${DIST}storage/index.js`);
const { FLAG_DEFLATE, INFO_INNER, encodeInner, innerAad, randomBytes, toHex } = await import('@cipherstat/protocol');
const { deflateRaw, hpkeSeal } = await import('@cipherstat/protocol/node');

const N = Number(args.points);
const TICK_S = Number(args.tick);
const RUNS = Number(args.runs);
const WARMUP = Number(args.warmup);
const SEED = Number(args.seed);
if (!(TICK_S >= 1 && 3600 % TICK_S === 0)) throw new Error('--tick must divide 3600 (ticks aligned to the hour)');
const AT = Number(args.at);
if (!(Number.isInteger(AT) && AT >= 1 && AT <= 24)) throw new Error('--at: the UTC hour (1..24) at which the data ends and compaction runs');

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const DAYS = 30;
const HOURS = DAYS * 24;

// ---------------------------------------------------------------------------------------------
// Deterministic data


const METRICS = [
  { name: 'orders', kind: 'counter', share: 0.3 },
  { name: 'revenue', kind: 'counter', share: 0.2 },
  { name: 'page.load_ms', kind: 'histogram', share: 0.5 },
];
const COUNTRIES = 'US DE GB FR IN BR NL ES IT CA PL SE AU JP MX AT CH BE DK IE'.split(' ');
const DEVICES = ['desktop', 'mobile', 'tablet'];
const cumulative = (ws) => {
  const total = ws.reduce((a, b) => a + b, 0);
  let acc = 0;
  return ws.map((w) => (acc += w / total));
};
const METRIC_CUM = cumulative(METRICS.map((m) => m.share));
const COUNTRY_CUM = cumulative(COUNTRIES.map((_, i) => 1 / (i + 1) ** 0.8));
const DEVICE_CUM = cumulative([0.5, 0.42, 0.08]);
const pick = (cum, r) => {
  let i = 0;
  while (i < cum.length - 1 && r >= cum[i]) i++;
  return i;
};
/** Per-country page-load median factor (slow and fast markets, so the p95s differ). */
const LOAD_FACTOR = COUNTRIES.map((_, i) => 0.7 + ((i * 7) % 11) / 10);
const NSERIES = METRICS.length * COUNTRIES.length * DEVICES.length;

/** Points per hour: a diurnal curve with weekly and random variation, summing to N. */
function hourCounts(rnd) {
  const w = [];
  for (let h = 0; h < HOURS; h++) {
    const day = 1 + 0.7 * Math.sin((2 * Math.PI * ((h % 24) - 9)) / 24);
    const week = Math.floor(h / 24) % 7 >= 5 ? 1.15 : 1;
    w.push(day * week * (0.9 + 0.2 * rnd()));
  }
  const total = w.reduce((a, b) => a + b, 0);
  const counts = w.map((x) => Math.floor((N * x) / total));
  let rest = N - counts.reduce((a, b) => a + b, 0);
  for (let h = 0; rest > 0; h = (h + 1) % HOURS, rest--) counts[h]++;
  return counts;
}

/**
 * Calls emit(m, c, d, value, time) for every point, in time order. One PRNG stream drives
 * everything, so every run (and both encrypted variants, and the plaintext table) sees the
 * same points.
 */
async function generate(from, emit, onHour) {
  const rnd = mulberry32(SEED);
  const counts = hourCounts(rnd);
  let spare = null;
  const normal = () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = 1 - rnd();
    const v = rnd();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
  for (let h = 0; h < HOURS; h++) {
    const start = from + h * HOUR;
    const n = counts[h];
    for (let j = 0; j < n; j++) {
      const time = start + Math.floor(((j + rnd()) * HOUR) / n);
      const m = pick(METRIC_CUM, rnd());
      const c = pick(COUNTRY_CUM, rnd());
      const d = pick(DEVICE_CUM, rnd());
      let value;
      if (m === 0) {
        const r = rnd();
        value = r < 0.88 ? 1 : r < 0.98 ? 2 : 3;
      } else if (m === 1) value = Math.round(Math.exp(3.5 + 0.8 * normal()) * 100) / 100;
      else value = Math.round(Math.exp(Math.log(600 * LOAD_FACTOR[c]) + 0.7 * normal()) * 10) / 10;
      emit(m, c, d, value, time);
    }
    await onHour(h, start);
  }
}

// ---------------------------------------------------------------------------------------------
// The processor's tick, as it runs in production: every --tick seconds of traffic (default 300)
// the points of that window go to the collector's own tick code (dist/process/tick.js
// computeTick, with a TickState that lives across ticks, as in the tick worker), sealed as the
// Node Library sends them (envelope v2 inner layer: deflate-raw + HPKE to the account key, at
// most 100 points per batch). The tick runs at the end of its window, so its points are of the
// running hour: it writes minute rows only (hour and quarter-hour rows are compaction's,
// compaction/derive.ts). Its rows are inserted with written_at stamped at the tick's time, then
// its processed markers, as processor.ts commits a tick (several ticks per insert here: one
// chDB insert per tick would only slow the set-up).

const BATCH_POINTS = 100;
const INSERT_ROWS = 50_000;
const hex = (n) => toHex(randomBytes(n));

class TickWriter {
  constructor({ store, accountId, keys, retentionDays, tickMs }) {
    Object.assign(this, { store, accountId, tickMs });
    const ks = keys.map(({ version, publicKey, secretKey, dataKey, macKey }) => ({ version, publicKey, secretKey, dataKey, macKey }));
    this.publicKey = ks.at(-1).publicKey;
    this.accounts = new Map([[accountId, { keys: ks, retentionDays, confidential: false }]]);
    this.state = new TickState();
    this.points = [];
    this.tickEnd = -Infinity;
    this.bodies = [];
    this.bodyRows = 0;
    this.dict = [];
    this.markers = [];
    this.inflight = Promise.resolve();
    this.ticks = 0;
    this.rowsByLevel = [0, 0, 0, 0];
    this.sealMs = 0; // sealing the batches (the Library's side)
    this.tickMs_ = 0; // computeTick (the processor's CPU part)
  }

  add(m, c, d, value, time) {
    if (time >= this.tickEnd) {
      if (this.points.length) this.flushTick();
      this.tickEnd = time - (time % this.tickMs) + this.tickMs;
    }
    const metric = METRICS[m];
    this.points.push({ id: this.points.length % BATCH_POINTS, kind: metric.kind, name: metric.name, value, time, tags: { country: COUNTRIES[c], device: DEVICES[d] } });
  }

  flushTick() {
    const now = this.tickEnd;
    const t0 = performance.now();
    const rows = [];
    for (let i = 0; i < this.points.length; i += BATCH_POINTS) {
      const batchId = hex(16);
      const points = this.points.slice(i, i + BATCH_POINTS);
      const flags = FLAG_DEFLATE;
      const sealed = hpkeSeal(this.publicKey, INFO_INNER, innerAad(this.accountId, batchId, flags), deflateRaw(encodeInner(this.accountId, batchId, points)));
      rows.push({ accountId: this.accountId, batchId, receivedAt: now, pointCount: points.length, version: 2, flags, sealed });
    }
    const t1 = performance.now();
    const out = computeTick(this.state, { rows, accounts: this.accounts, now, part: hex(16), epoch: 0 });
    this.tickMs_ += performance.now() - t1;
    this.sealMs += t1 - t0;
    if (out.pointsRejected > 0) throw new Error(`the tick rejected ${out.pointsRejected} points: ${JSON.stringify(out.rejects)}`);
    for (const r of out.rollups) this.rowsByLevel[r.level]++;
    this.bodies.push(stampWrittenAt(out.insert, now).body);
    this.bodyRows += out.rollups.length;
    for (const d of out.dict) this.dict.push(d);
    for (const p of out.processed) this.markers.push(p);
    this.points = [];
    this.ticks++;
  }

  /** Inserts what the ticks wrote once enough has gathered (one insert in flight): rows, then markers. */
  async maybeInsert(force = false) {
    if (!force && this.bodyRows < INSERT_ROWS) return;
    const body = Buffer.concat(this.bodies);
    const { dict, markers } = this;
    this.bodies = [];
    this.bodyRows = 0;
    this.dict = [];
    this.markers = [];
    await this.inflight;
    this.inflight = (async () => {
      if (dict.length) await this.store.insertDictionary(dict);
      if (body.length) await this.store.insertEncodedRollups({ body });
      if (markers.length) await this.store.markProcessed(markers);
    })();
  }

  async finish() {
    if (this.points.length) this.flushTick();
    await this.maybeInsert(true);
    await this.inflight;
  }
}
// ---------------------------------------------------------------------------------------------
// Plaintext baseline table

const PLAIN_DB = 'plain';
const PLAIN_TABLE = `${PLAIN_DB}.events`;
const PLAIN_CHUNK = 1_000_000;

class PlainWriter {
  constructor(session) {
    this.session = session;
    this.parts = [];
    this.n = 0;
    this.inflight = Promise.resolve();
    this.hourPrefix = '';
    this.hourStart = -1;
    this.insertMs = 0;
  }
  add(m, c, d, value, time) {
    const h = time - (time % HOUR);
    if (h !== this.hourStart) {
      this.hourStart = h;
      this.hourPrefix = new Date(h).toISOString().slice(0, 14).replace('T', ' '); // 'YYYY-MM-DD HH:'
    }
    const r = time - h;
    const mm = Math.floor(r / MIN);
    const ss = Math.floor((r % MIN) / 1000);
    const ms = r % 1000;
    const ts = `${this.hourPrefix}${mm < 10 ? '0' : ''}${mm}:${ss < 10 ? '0' : ''}${ss}.${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}`;
    this.parts.push(`${ts}\t${METRICS[m].name}\t${value}\t${COUNTRIES[c]}\t${DEVICES[d]}\n`);
    if (++this.n % PLAIN_CHUNK === 0) this.flush();
  }
  flush() {
    if (!this.parts.length) return;
    const body = Buffer.from(this.parts.join(''));
    this.parts = [];
    const prev = this.inflight;
    this.inflight = (async () => {
      await prev;
      const t0 = performance.now();
      await this.session.insert({ table: PLAIN_TABLE, columns: ['time', 'name', 'value', 'country', 'device'], values: body, format: 'TabSeparated' });
      this.insertMs += performance.now() - t0;
    })();
  }
  async finish() {
    this.flush();
    await this.inflight;
  }
}

// ---------------------------------------------------------------------------------------------

const t0 = performance.now();
const REUSE = args.reuse ? resolve(args.reuse) : null;
const INFO = REUSE ? JSON.parse(readFileSync(join(REUSE, 'bench-query.json'), 'utf8')) : null;
if (INFO && INFO.points !== N) throw new Error(`--reuse: that directory holds ${INFO.points} points; pass --points ${INFO.points}`);
const dataDir = REUSE ?? mkdtempSync(join(os.tmpdir(), 'cipherstat-query-bench-'));
progress(`data dir ${dataDir}; ${fmt(N)} points, processor tick ${TICK_S} s of traffic, ${RUNS} runs after ${WARMUP} warm-ups${REUSE ? ' (reused: queries only)' : ''}${args.dist ? `, collector ${DIST}` : ''}`);
// The per-token limits (2 concurrent queries, 2M rows a minute) are lifted: the concurrent
// phase runs 20 dashboard clients on one token to measure throughput, not the limits.
const CLIENTS = Number(args.clients);
const config = { ...loadConfig({ port: '0', 'data-dir': dataDir, role: 'query' }, {}), queryConcurrency: CLIENTS, queryRowsPerMinute: 1e12 };
const running = await startCollector(config, { secrets: {}, log: createLogger({ level: 'warn' }) });
const { services } = running;
const store = services.store;
/** Raw SQL on the store's connection (the plaintext baseline, counts, merges). */
const sql = connectionOf(store);

// A second session on the same data path shares the one in-process engine (chdb: "connections
// at the same path coexist"); used only for the plaintext table's raw TSV inserts.
const session = new Session(join(dataDir, 'clickhouse'), {
  connectionArgs: ['--output_format_json_quote_64bit_integers=1', '--async_load_databases=0'],
});
await sql.exec(`CREATE DATABASE IF NOT EXISTS ${PLAIN_DB}`);
await sql.exec(`CREATE TABLE IF NOT EXISTS ${PLAIN_TABLE} (
  time DateTime64(3, 'UTC'),
  name LowCardinality(String),
  value Float64,
  country LowCardinality(String),
  device LowCardinality(String)
) ENGINE = MergeTree ORDER BY (name, time)`);

const now = Date.now();
// 30 days ending at --at o'clock UTC (default 23:00) of the current day, a whole hour: every
// shape's buckets (UTC, +5:30, +5:45) are whole. The data ends there, and compaction runs with
// its clock there (an injected clock: the same states whatever the time of day the benchmark
// runs): today's hours before the last one are derived, the last one (its 60 minutes) is still
// minute rows — it closed less than DERIVE_LAG_MS (11 min) ago — and, at 23:00, today holds the
// most hour rows a day can hold before it is packed.
const to = INFO?.to ?? now - (now % DAY) + AT * HOUR;
const from = to - DAYS * DAY;

const created = INFO?.account ?? (await services.accounts.create());
const accountId = created.accountId;
const keys = await services.keyring.accountKeys(accountId);
const accountRow = await services.accounts.get(accountId);
const loadavg = { start: os.loadavg() };
let genSeconds = null;
const pointsPerMetric = new Array(METRICS.length).fill(0);
const writer = new TickWriter({ store, accountId, keys, retentionDays: accountRow.retentionDays, tickMs: TICK_S * 1000 });
const plain = new PlainWriter(session);

if (!REUSE) {
progress('generating and writing (encrypted: Library seal → the processor tick (computeTick) → insert; plaintext: TSV insert)');
const tGen = performance.now();
let n = 0;
let nextReport = 1_000_000;
await generate(
  from,
  (m, c, d, value, time) => {
    writer.add(m, c, d, value, time);
    plain.add(m, c, d, value, time);
    pointsPerMetric[m]++;
    n++;
  },
  async () => {
    // inserts run on libuv threads beside the generator; waiting here bounds memory
    await writer.maybeInsert();
    if (n >= nextReport) {
      const el = (performance.now() - tGen) / 1000;
      progress(`  ${fmt(n)} points, ${el.toFixed(1)} s (${fmt(n / el)} points/s); ${fmt(writer.ticks)} ticks, ${fmt(writer.rowsByLevel[0])} minute rows`);
      while (nextReport <= n) nextReport += 1_000_000;
    }
  },
);
await writer.finish();
await plain.finish();
genSeconds = (performance.now() - tGen) / 1000;
progress(`generated and stored ${fmt(n)} points in ${genSeconds.toFixed(1)} s (${fmt(n / genSeconds)} points/s)`);
progress(`  encrypted: ${fmt(writer.ticks)} ticks wrote ${writer.rowsByLevel.map((r, l) => `${fmt(r)} level-${l}`).join(' + ')} rows; Library seal ${(writer.sealMs / 1000).toFixed(1)} s, computeTick ${(writer.tickMs_ / 1000).toFixed(1)} s`);
progress(`  plaintext: ${fmt(plain.n)} rows; chDB insert ${(plain.insertMs / 1000).toFixed(1)} s`);
if (writer.rowsByLevel[1] || writer.rowsByLevel[3]) throw new Error('ticks of the running hour wrote hour or quarter-hour rows: not the current tick design');
}

// ---------------------------------------------------------------------------------------------
// Storage: bytes on disk per point

const ENC_DB = config.clickhouseDatabase;
const optimize = !args['no-optimize'];
async function partsBytes(db, tbl) {
  const [r] = await sql.query(
    `SELECT sum(bytes_on_disk) AS b, sum(rows) AS r, count() AS parts FROM system.parts WHERE active AND database = {db:String} AND table = {t:String}`,
    { db, t: tbl },
  );
  return { bytes: Number(r.b), rows: Number(r.r), parts: Number(r.parts) };
}
async function measureEncrypted() {
  const t = performance.now();
  if (optimize) for (const tbl of ['rollups', 'dictionary']) await sql.exec(`OPTIMIZE TABLE ${ENC_DB}.${tbl} FINAL`);
  const out = { rollups: await partsBytes(ENC_DB, 'rollups'), dictionary: await partsBytes(ENC_DB, 'dictionary') };
  const byLevel = await sql.query(`SELECT level, count() AS n, sum(length(agg)) AS b FROM ${ENC_DB}.rollups WHERE account_id = {a:String} GROUP BY level ORDER BY level`, { a: accountId });
  out.ciphertextByLevel = Object.fromEntries(byLevel.map((r) => [['minute', 'hour', 'day pack', 'quarter hour', 'quarter pack', 'minute pack'][Number(r.level)] ?? `level ${r.level}`, { rows: Number(r.n), aggBytes: Number(r.b), aggBytesPerRow: Number(r.b) / Number(r.n) }]));
  out.bytes = out.rollups.bytes + out.dictionary.bytes;
  out.bytesPerPoint = out.bytes / N;
  out.seconds = (performance.now() - t) / 1000;
  return out;
}
const disk = { optimized: optimize, variants: {} };
{
  const t = performance.now();
  if (optimize) await sql.exec(`OPTIMIZE TABLE ${PLAIN_TABLE} FINAL`);
  disk.plaintext = await partsBytes(PLAIN_DB, 'events');
  disk.plaintext.bytesPerPoint = disk.plaintext.bytes / N;
  disk.plaintext.seconds = (performance.now() - t) / 1000;
}

// ---------------------------------------------------------------------------------------------
// Queries

/**
 * The query shapes a dashboard sends, each beside the same question in SQL on the plaintext
 * table. The data covers the 30 days before `to`; the 90-day shape asks for 90 days as a
 * dashboard's "last 90 days" does (the 60 days before the data are empty on both sides).
 */
const bucketSql = { minute: 'toStartOfMinute(time)', hour: 'toStartOfHour(time, {tz:String})', day: 'toStartOfDay(time, {tz:String})' };
const shape = (id, metric, aggregation, plainAgg, interval, days, extra = {}) => {
  const groupBy = extra.groupBy ?? ['country'];
  const tz = extra.timezone ?? 'UTC';
  const qFrom = to - days * DAY;
  return {
    id, metric, aggregation, plainAgg, interval, from: qFrom, groupBy, ...(extra.timezone ? { timezone: tz } : {}),
    sql: `SELECT toInt64(toUnixTimestamp(${bucketSql[interval]})) * 1000 AS h${groupBy.length ? ', country' : ''}, ${plainAgg} AS v
FROM ${PLAIN_TABLE}
WHERE name = {name:String} AND time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND time < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
GROUP BY h${groupBy.length ? ', country' : ''}`,
    params: { name: metric, from: qFrom, to, tz },
  };
};
const ALL_QUERIES = [
  shape('30 d hourly sum orders by country', 'orders', 'sum', 'sum(value)', 'hour', 30),
  shape('30 d hourly p95 page.load_ms by country', 'page.load_ms', 'p95', 'quantile(0.95)(value)', 'hour', 30),
  shape('30 d hourly sum, Asia/Kolkata', 'orders', 'sum', 'sum(value)', 'hour', 30, { timezone: 'Asia/Kolkata' }),
  shape('30 d hourly p95, Asia/Kolkata', 'page.load_ms', 'p95', 'quantile(0.95)(value)', 'hour', 30, { timezone: 'Asia/Kolkata' }),
  shape('30 d hourly sum, Asia/Kathmandu', 'orders', 'sum', 'sum(value)', 'hour', 30, { timezone: 'Asia/Kathmandu' }),
  shape('30 d hourly p95, Asia/Kathmandu', 'page.load_ms', 'p95', 'quantile(0.95)(value)', 'hour', 30, { timezone: 'Asia/Kathmandu' }),
  shape('30 d daily sum, Asia/Kathmandu', 'orders', 'sum', 'sum(value)', 'day', 30, { timezone: 'Asia/Kathmandu' }),
  shape('24 h minute p95 page.load_ms by country', 'page.load_ms', 'p95', 'quantile(0.95)(value)', 'minute', 1),
  shape('90 d daily sum revenue', 'revenue', 'sum', 'sum(value)', 'day', 90, { groupBy: [] }),
];
/** The shapes measured (--only: those whose name matches). */
const QUERIES = args.only ? ALL_QUERIES.filter((q) => new RegExp(args.only).test(q.id)) : ALL_QUERIES;
if (!QUERIES.length) throw new Error(`--only ${args.only}: no shape matches`);
/** What a dashboard's overview asks on every load (the concurrent phase): today's and the month's numbers. */
const OVERVIEW = [
  shape('24 h hourly sum orders', 'orders', 'sum', 'sum(value)', 'hour', 1, { groupBy: [] }),
  shape('24 h hourly p95 page.load_ms', 'page.load_ms', 'p95', 'quantile(0.95)(value)', 'hour', 1, { groupBy: [] }),
  shape('30 d daily sum revenue', 'revenue', 'sum', 'sum(value)', 'day', 30, { groupBy: [] }),
  shape('24 h hourly sum orders by country', 'orders', 'sum', 'sum(value)', 'hour', 1),
];

/** The POST /v1/query body of a shape (the HTTP query and the breakdown's parseQuery). */
const requestBody = (q) => ({ metric: q.metric, aggregation: q.aggregation, from: q.from, to, interval: q.interval, groupBy: q.groupBy, ...(q.timezone ? { timezone: q.timezone } : {}) });

/** A `columns` answer as the points form (every value at its bucket's start), for the checks below; a points answer as it is. */
function asPoints(json) {
  if (!json?.buckets) return json;
  const { buckets } = json;
  return { series: json.series.map((s) => ({ tags: s.tags, points: s.values.map((v, i) => [buckets[i], v]) })), meta: json.meta };
}

/**
 * One encrypted query over HTTP, in the dashboard's answer form (`format`: another form;
 * `cached`: leave the result cache as it is, so the answer may come from it). `json` is the
 * answer as the points form (asPoints, after the client's time was taken); `bytes` its length.
 */
async function encryptedQuery(q, { allowCached = false, format = DASHBOARD_FORMAT, cached = false } = {}) {
  if (!cached) services.queryCache.invalidate([accountId]); // no cached result; dictionary/pseudonyms stay warm
  const body = { ...requestBody(q), ...(format ? { format } : {}) };
  const t = performance.now();
  const res = await fetch(`${running.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${created.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  const parsed = JSON.parse(text);
  const ms = performance.now() - t;
  if (res.status !== 200) throw Object.assign(new Error(`${q.id}: HTTP ${res.status} ${text.slice(0, 500)}`), { json: parsed });
  const json = asPoints(parsed);
  if (json.meta.cached && !allowCached && !cached) throw new Error('cached answer: the cache bypass did not work');
  const timing = Object.fromEntries(
    (res.headers.get('server-timing') ?? '').split(',').map((p) => {
      const [k, d] = p.trim().split(';dur=');
      return [k, Number(d)];
    }),
  );
  // `total` is the handler's time; the rest of the client's time is HTTP (both ends, in this process) and the client's parse
  if (timing.total !== undefined) timing.http = ms - timing.total;
  return { ms, json, timing, cached: json.meta.cached, bytes: Buffer.byteLength(text) };
}

async function plainQuery(q) {
  const t = performance.now();
  const rows = await sql.query(q.sql, q.params);
  return { ms: performance.now() - t, rows };
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: percentile(s, 0.5), p95: percentile(s, 0.95), min: s[0], max: s.at(-1) };
};

/** The median of each Server-Timing phase over runs (a phase missing from a run counts 0 there), in the order the phases first appear. */
function phaseMedians(runs) {
  const names = [...new Set(runs.flatMap((t) => Object.keys(t)))].filter((k) => k && Number.isFinite(runs.find((t) => k in t)[k]));
  return Object.fromEntries(names.map((k) => [k, stats(runs.map((t) => t[k] ?? 0)).p50]));
}

const results = [];
const answers = {};
/**
 * CPU seconds so far of this process's main thread (the collector's HTTP, storage calls, JSON
 * and labels, and this bench's client) and of the query workers (threads named cs-query-worker:
 * opening and merging rows), from /proc (Linux, 10 ms ticks; NaN elsewhere).
 */
function queryCpu() {
  const t = threadCpuSeconds(process.pid);
  return { main: t.main, workers: t.byName['cs-query-worker'] ?? (process.platform === 'linux' ? 0 : NaN) };
}
const cpuMs = (a, b, n) => ({ main: ((b.main - a.main) * 1000) / n, workers: ((b.workers - a.workers) * 1000) / n });
/**
 * Before measuring: the engine idle (no background merge or mutation left from the writes,
 * OPTIMIZE or compaction) and this process's generator garbage collected (with --expose-gc,
 * as `npm run bench` runs it), so both pipelines are measured on a quiet process.
 */
async function settle() {
  const t = performance.now();
  for (;;) {
    const [r] = await sql.query(`SELECT (SELECT count() FROM system.merges) + (SELECT count() FROM system.mutations WHERE is_done = 0) AS n`);
    if (Number(r.n) === 0 || performance.now() - t > 60_000) break;
    await new Promise((res) => setTimeout(res, 250));
  }
  globalThis.gc?.();
  progress(`  settled in ${((performance.now() - t) / 1000).toFixed(1)} s${globalThis.gc ? '' : ' (run with --expose-gc to collect the generator garbage too)'}`);
}

async function measurePhase(variant) {
  for (const q of QUERIES) {
    const plainTimes = [];
    const e = { times: [], phases: [], error: null, rows: 0, cpu: { main: 0, workers: 0 } };
    progress(`query (${variant}): ${q.id}`);
    for (let i = 0; i < WARMUP + RUNS; i++) {
      // interleaved, so drift (merges, GC, other load) hits both sides alike
      const p = await plainQuery(q);
      if (i >= WARMUP) plainTimes.push(p.ms);
      answers[`plain ${q.id}`] = p.rows;
      if (e.error) continue;
      try {
        const c0 = queryCpu();
        const r = await encryptedQuery(q);
        const c1 = queryCpu();
        if (i >= WARMUP) {
          e.cpu.main += c1.main - c0.main;
          e.cpu.workers += c1.workers - c0.workers;
          e.times.push(r.ms);
          e.phases.push(r.timing);
        }
        e.rows = r.json.meta.rows;
        answers[`${variant} ${q.id}`] = r.json;
      } catch (err) {
        e.error = err.json?.error?.code ?? String(err.message);
        progress(`  encrypted: ${e.error}`);
      }
    }
    const ps = stats(plainTimes);
    const es = e.error ? null : stats(e.times);
    results.push({
      query: q.id,
      variant,
      rowsRead: e.rows,
      error: e.error,
      encrypted: es,
      // per phase of the answer's Server-Timing (older builds: storage, merge), the median over the runs (0 where a run had none)
      encryptedPhasesP50: es && phaseMedians(e.phases),
      encryptedCpuMs: es && cpuMs({ main: 0, workers: 0 }, e.cpu, e.times.length),
      plaintext: ps,
      ratioP50: es ? es.p50 / ps.p50 : null,
      ratioP95: es ? es.p95 / ps.p95 : null,
    });
    const r = results.at(-1);
    progress(`  encrypted p50 ${es ? es.p50.toFixed(1) : '-'} ms (${fmt(e.rows)} rows), plaintext p50 ${ps.p50.toFixed(1)} ms → ${r.ratioP50 ? r.ratioP50.toFixed(2) + 'x' : '-'}`);
  }
}

// 20 dashboard clients at once, each running the overview's queries in a loop (the result cache
// invalidated before each encrypted query, as above; with 20 clients another client's answer
// can land in the cache in between — counted as `cached`, and the latency still counted).
const CONCURRENT_S = Number(args['concurrent-seconds']);
/** Encrypted answers by the collector's cache result (cipherstat_query_cache_total: hit, miss, shared — an identical query's answer while it waited for storage). */
async function cacheResults() {
  const m = services.metrics.registry.getSingleMetric('cipherstat_query_cache_total');
  const values = m ? (await m.get()).values : [];
  return Object.fromEntries(values.map((v) => [v.labels.result, v.value]));
}
/**
 * Client `client`'s variant of an overview query when clients must not ask identical queries
 * (--distinct phase): its range starts `client` hours (days for daily ones) earlier, on both sides.
 */
function distinctQuery(q, client) {
  const from = q.from - client * (q.interval === 'day' ? DAY : HOUR);
  return { ...q, id: `${q.id} @${client}`, from, params: { ...q.params, from } };
}
async function concurrently(run, distinct = false) {
  const lat = [];
  let errors = 0;
  let cached = 0;
  // every encrypted answer of a shape must equal its first (the data does not change meanwhile)
  const first = new Map();
  let differing = 0;
  const r0 = await cacheResults();
  const s0 = store.callStats();
  const started = performance.now();
  const c0 = queryCpu();
  const end = started + CONCURRENT_S * 1000;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      for (let i = client; performance.now() < end; i++) {
        const t = performance.now();
        try {
          const q = distinct ? distinctQuery(OVERVIEW[i % OVERVIEW.length], client) : OVERVIEW[i % OVERVIEW.length];
          const r = await run(q);
          lat.push(performance.now() - t);
          if (r.cached) cached++;
          const answer = r.json && JSON.stringify(r.json.series); // encrypted (the plaintext's order and float sums vary)
          if (!answer) continue;
          if (!first.has(q.id)) first.set(q.id, answer);
          else if (first.get(q.id) !== answer) differing++;
        } catch {
          errors++;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuMs(c0, queryCpu(), Math.max(1, lat.length));
  const r1 = await cacheResults();
  const shared = (r1.shared ?? 0) - (r0.shared ?? 0);
  // the engine's calls meanwhile (storage/lane.ts: one at a time), both sides' in one
  const engine = { calls: 0, runSeconds: 0 };
  for (const [kind, c] of Object.entries(store.callStats())) {
    engine.calls += c.calls - (s0[kind]?.calls ?? 0);
    engine.runSeconds += c.runSeconds - (s0[kind]?.runSeconds ?? 0);
  }
  const s = [...lat].sort((a, b) => a - b);
  return { queries: lat.length, perSecond: lat.length / seconds, p50: percentile(s, 0.5), p99: percentile(s, 0.99), errors, cached, shared, differing, cpu, engine };
}
async function measureConcurrent(state, distinct = false) {
  progress(`concurrent (${state}${distinct ? ', distinct ranges' : ''}): ${CLIENTS} dashboard clients × the overview's ${OVERVIEW.length} queries in a loop, ${CONCURRENT_S} s each side`);
  await settle();
  const plaintext = await concurrently((q) => plainQuery(q), distinct);
  const encrypted = await concurrently((q) => encryptedQuery(q, { allowCached: true }), distinct);
  progress(`  encrypted ${encrypted.perSecond.toFixed(1)} queries/s p99 ${encrypted.p99.toFixed(0)} ms (${encrypted.shared} shared, ${encrypted.cached} cached, ${encrypted.differing} differing), plaintext ${plaintext.perSecond.toFixed(1)} queries/s p99 ${plaintext.p99.toFixed(0)} ms`);
  return { state: distinct ? `${state}, distinct ranges` : state, distinct, clients: CLIENTS, seconds: CONCURRENT_S, plaintext, encrypted, throughputRatio: encrypted.perSecond / plaintext.perSecond, p99Ratio: encrypted.p99 / plaintext.p99 };
}

/**
 * Where each shape's time goes in one state (the live one and the last): one statement of all its
 * rows alone (what the engine's first read asks when they are 20,000 or fewer: wall and process
 * CPU — chDB's threads included, this thread idle meanwhile), then on this thread, inline, the
 * open and merge of those rows (mergeBytes), the finish of its cells (finishSeries) and the
 * answer's JSON, each the median of --runs. The query workers split the merge and finish between
 * them under a real query; these are one thread's CPU.
 */
async function measureBreakdown(state) {
  progress(`breakdown (${state}): each shape's statement, merge, finish and JSON alone`);
  const deps = { store, keyring: { accountKeys: (id) => services.accounts.keys(id) }, cache: services.queryCache };
  const ctx = await accountContext(deps, accountId);
  const quarterSince = await store.rollupLevelSince(3);
  const derived = await store.derivedUntil();
  const cpuNow = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const out = [];
  for (const q of QUERIES) {
    const parsed = parseQuery(requestBody(q), { quarterSince, derivedUntil: derived });
    const { selection, metricOf } = rowSelection(ctx, parsed);
    const plan = mergePlan(ctx, parsed, metricOf);
    const m = { statement: [], statementCpu: [], merge: [], finish: [], json: [], jsonColumns: [] };
    let bytes;
    let rows = 0;
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const keep = i >= WARMUP;
      const c0 = cpuNow();
      const t0 = performance.now();
      bytes = await store.selectRollups({ ...selection, limit: MAX_ROWS + 1 }); // all its rows in one statement (the engine splits above 20,000)
      const t1 = performance.now();
      const c1 = cpuNow();
      const merged = mergeBytes(plan, bytes);
      const c2 = cpuNow();
      const groups = [...merged.groups.values()];
      finishSeries(plan, groups, groups.map((_, j) => j), groups.length);
      const c3 = cpuNow();
      const answer = answers[`${state} ${q.id}`];
      if (answer) answerJson(answer);
      const c4 = cpuNow();
      if (answer && columnsJson) columnsJson(answer);
      const c5 = cpuNow();
      rows = merged.rows;
      if (!keep) continue;
      m.statement.push(t1 - t0);
      m.statementCpu.push(c1 - c0);
      m.merge.push(c2 - c1);
      m.finish.push(c3 - c2);
      m.json.push(c4 - c3);
      m.jsonColumns.push(c5 - c4);
    }
    const med = (xs) => stats(xs).p50;
    const plainP50 = results.find((r) => r.variant === state && r.query === q.id)?.plaintext.p50 ?? null;
    out.push({ query: q.id, rows, bytes: bytes.length, statementMs: med(m.statement), statementCpuMs: med(m.statementCpu), mergeCpuMs: med(m.merge), finishCpuMs: med(m.finish), jsonCpuMs: med(m.json), jsonColumnsCpuMs: columnsJson ? med(m.jsonColumns) : null, plaintextP50: plainP50 });
  }
  return { state, rows: out };
}

/**
 * The answer's way out in each form (the default `points`, and `columns`, which the dashboard
 * asks for), per shape: the same query answered from the result cache (so no read or merge runs,
 * only auth, checks, the writer and HTTP), the two forms alternating, --runs each after the
 * warm-ups: the answer's bytes, the writer's time (Server-Timing json), http (the client's time
 * minus the handler's: both ends of HTTP in this process and the client's JSON.parse) and the
 * client's whole time. A build without the columns form: points only.
 */
async function measureForms(state) {
  progress(`answer forms (${state}): each shape's answer from the cache, ${DASHBOARD_FORMAT ? 'points and columns alternating' : 'points (this build has no columns form)'}`);
  const forms = DASHBOARD_FORMAT ? ['points', 'columns'] : ['points'];
  const out = [];
  for (const q of QUERIES) {
    await encryptedQuery(q, { format: null }); // computes it and fills the cache
    const m = Object.fromEntries(forms.map((f) => [f, { bytes: 0, json: [], http: [], ms: [] }]));
    let same = true;
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const got = {};
      for (const f of i % 2 ? [...forms].reverse() : forms) {
        let r;
        // from the cache: computed again only when something invalidated the account meanwhile (a tick or compaction pass of the collector)
        for (let attempt = 0; !r?.cached; attempt++) {
          if (attempt === 5) throw new Error(`${q.id}: the answer forms phase expects cached answers`);
          r = await encryptedQuery(q, { format: f === 'points' && !DASHBOARD_FORMAT ? null : f, cached: true });
        }
        got[f] = JSON.stringify(r.json.series);
        m[f].bytes = r.bytes;
        if (i < WARMUP) continue;
        m[f].json.push(r.timing.json ?? 0);
        m[f].http.push(r.timing.http);
        m[f].ms.push(r.ms);
      }
      if (got.columns !== undefined && got.columns !== got.points) same = false;
    }
    const med = (xs) => stats(xs).p50;
    out.push({ query: q.id, same, ...Object.fromEntries(forms.map((f) => [f, { bytes: m[f].bytes, jsonMs: med(m[f].json), httpMs: med(m[f].http), clientMs: med(m[f].ms) }])) });
  }
  return { state, rows: out };
}
/** Per state where it ran: measureForms. */
const answerForms = [];

/**
 * The stored states, each reached by the real compactor (dist/compaction/compactor.js) with its
 * clock injected, over what the ticks wrote:
 *   unpacked — every closed hour derived (hour and quarter-hour rows from the minute rows), no
 *              day packed: the worst a compaction backlog leaves (maxDayPacks 0);
 *   live     — then a pass as production runs it at `to`: closed UTC days packed, today's hours
 *              before the watermark as compaction leaves them, the newest hour minute rows
 *              behind the real derivation watermark. What a dashboard meets most of the time;
 *              the concurrent phase runs here;
 *   packed   — compaction's clock 80 min later (the data ended at `to`): the last hour derived,
 *              today packed too — every stored hour in a pack.
 */
const STATES = {
  unpacked: { now: to, maxDayPacks: 0 },
  // --live-days: the live state as compaction left it before today was packed in steps
  // (CompactorOptions.packStepMs): closed days packed, today's derived hours all rows
  ...(args['live-days'] ? { 'live-days': { now: to, packStepMs: DAY } } : {}),
  live: { now: to },
  packed: { now: to + HOUR + 20 * MIN },
};
const phases = REUSE ? ['reused'] : Object.keys(STATES);
const compaction = {};
let concurrent = null;
let concurrentLiveDays = null;
/** The live state's 20 clients again, no two asking the same range: what sharing cannot help (informational). */
let concurrentDistinct = null;
/** Where each shape's time goes in the live state and the last (measureBreakdown). */
const breakdowns = [];
for (const phase of phases) {
  if (STATES[phase]) {
    const { now: clock, ...limits } = STATES[phase];
    const t = performance.now();
    const report = await new Compactor({
      store,
      keyring: services.keyring,
      log: createLogger({ level: 'warn' }),
      intervalMs: 0,
      now: () => clock,
      maxGroups: 10_000,
      onCompacted: (ids) => services.queryCache.invalidate(ids),
      ...limits,
    }).runUntilDone(100_000);
    report.seconds = (performance.now() - t) / 1000;
    report.watermark = new Date(await store.derivedUntil()).toISOString();
    const levels = await sql.query(`SELECT level, count() AS n FROM ${ENC_DB}.rollups WHERE account_id = {a:String} GROUP BY level ORDER BY level`, { a: accountId });
    report.rowsByLevel = Object.fromEntries(levels.map((r) => [Number(r.level), Number(r.n)]));
    compaction[phase] = report;
    progress(`compaction (${phase}, clock ${new Date(clock).toISOString().slice(0, 16)}Z): ${fmt(report.derivedHours)} series-hours derived, ${fmt(report.packedDays)} packs written in ${report.seconds.toFixed(1)} s; watermark ${report.watermark}; rows by level ${JSON.stringify(report.rowsByLevel)}`);
  }
  progress(`storage (${phase})${optimize ? ': OPTIMIZE TABLE … FINAL' : ''}`);
  disk.variants[phase] = await measureEncrypted();
  await settle();
  await measurePhase(phase);
  if (phase === 'live' || phase === phases.at(-1)) {
    breakdowns.push(await measureBreakdown(phase));
    answerForms.push(await measureForms(phase));
  }
  if ((phase === 'live' || REUSE) && !args.only) {
    concurrent = await measureConcurrent(phase);
    concurrentDistinct = await measureConcurrent(phase, true);
  }
  if (phase === 'live-days') concurrentLiveDays = await measureConcurrent(phase);
}
loadavg.end = os.loadavg();

// Informational: the same 30-day sum by hour and by day in a time zone whose hours are not UTC
// hours (UTC+5:30), in the last state: the level each reads (request.ts sourceLevel).
const tzProbe = [];
for (const interval of ['hour', 'day']) {
  const probe = { timezone: 'Asia/Kolkata', metric: 'orders', aggregation: 'sum', interval, groupBy: ['country'] };
  services.queryCache.invalidate([accountId]);
  const t = performance.now();
  const res = await fetch(`${running.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${created.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...probe, from, to }),
  });
  const json = await res.json();
  Object.assign(probe, { status: res.status, ms: performance.now() - t, rows: json.meta?.rows, level: json.meta?.level, error: json.error?.code });
  tzProbe.push(probe);
  progress(`30-day sum by ${interval} in Asia/Kolkata: HTTP ${res.status} ${json.error?.code ?? `${json.meta.level} level, ${fmt(json.meta.rows)} rows`} (${probe.ms.toFixed(0)} ms)`);
}

// ---------------------------------------------------------------------------------------------
// Correctness: every (hour, country) cell of each answer against the plaintext table

const exactP95 = await sql.query(
  `SELECT toInt64(toUnixTimestamp(toStartOfHour(time))) * 1000 AS h, country,
     arrayElement(arraySort(groupArray(value)), toUInt32(floor(0.95 * (count() - 1))) + 1) AS v
   FROM ${PLAIN_TABLE}
   WHERE name = 'page.load_ms' AND time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND time < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
   GROUP BY h, country`,
  { from, to },
);
const cellMap = (rows) => new Map(rows.map((r) => [`${r.h}|${r.country}`, Number(r.v)]));
const seriesCells = (json) => {
  const m = new Map();
  for (const s of json.series) for (const [t, v] of s.points) if (v !== null) m.set(`${t}|${s.tags.country}`, v);
  return m;
};
const correctness = {};
for (const v of phases) {
  const out = {};
  for (const [qid, ref, kind, limit] of [
    ...ALL_QUERIES.filter((q) => q.aggregation === 'sum').map((q, i) => [q.id, cellMap(answers[`plain ${q.id}`] ?? []), i === 0 ? 'sum' : `sum: ${q.id}`, 1e-9]),
    [ALL_QUERIES[1].id, cellMap(exactP95), 'p95 vs exact rank', 0.02],
    [ALL_QUERIES[1].id, cellMap(answers[`plain ${ALL_QUERIES[1].id}`] ?? []), 'p95 vs CH quantile(0.95)', 0.02],
  ]) {
    const json = answers[`${v} ${qid}`];
    if (!json) continue;
    const got = seriesCells(json);
    let maxRel = 0;
    let missing = 0;
    const rels = [];
    for (const [k, want] of ref) {
      const g = got.get(k);
      if (g === undefined) {
        missing++;
        continue;
      }
      const rel = Math.abs(g - want) / Math.max(1e-12, Math.abs(want));
      rels.push(rel);
      if (rel > maxRel) maxRel = rel;
    }
    // the encrypted answer has every bucket (0 for an empty sum); the SQL only non-empty ones
    const extra = [...got.entries()].filter(([k, x]) => !ref.has(k) && !(kind.startsWith('sum') && x === 0)).length;
    rels.sort((a, b) => a - b);
    out[kind] = { cells: ref.size, compared: rels.length, missing, extra, maxRel, medianRel: percentile(rels, 0.5), withinLimit: rels.filter((r) => r <= limit).length, limit };
  }
  correctness[v] = out;
}
const spot = [];
{
  const sums = cellMap(answers[`plain ${ALL_QUERIES[0].id}`] ?? []);
  const p95q = cellMap(answers[`plain ${ALL_QUERIES[1].id}`] ?? []);
  const p95x = cellMap(exactP95);
  const enc = phases.map((v) => [v, seriesCells(answers[`${v} ${ALL_QUERIES[0].id}`] ?? { series: [] }), seriesCells(answers[`${v} ${ALL_QUERIES[1].id}`] ?? { series: [] })]);
  // the last hour (719) is read from minute rows in the unpacked and live states
  for (const [hOff, country] of [[100, 'US'], [400, 'DE'], [650, 'IE'], [718, 'GB'], [719, 'JP']]) {
    const k = `${from + hOff * HOUR}|${country}`;
    spot.push({
      hour: new Date(from + hOff * HOUR).toISOString().slice(0, 13),
      country,
      'sum plain': sums.get(k),
      ...Object.fromEntries(enc.map(([v, sum]) => [`sum ${v}`, sum.get(k)])),
      'p95 exact': p95x.get(k),
      'p95 CH quantile': p95q.get(k)?.toFixed(1),
      ...Object.fromEntries(enc.map(([v, , p95]) => [`p95 ${v}`, p95.get(k)?.toFixed(1)])),
    });
  }
}
const ok = answerForms.every((af) => af.rows.every((r) => r.same)) && Object.values(correctness).every(
  (o) =>
    (o.sum || args.only) &&
    Object.entries(o).every(([kind, c]) => !kind.startsWith('sum') || (c.withinLimit === c.cells && !c.extra)) &&
    (o['p95 vs exact rank'] ? o['p95 vs exact rank'].withinLimit === o['p95 vs exact rank'].cells && !o['p95 vs exact rank'].extra : !!args.only),
);

// ---------------------------------------------------------------------------------------------
// Report

const f1 = (x) => (x == null ? '-' : x.toFixed(1));
console.log(`\nQuery latency (HTTP POST /v1/query, result cache bypassed; ${RUNS} runs after ${WARMUP} warm-ups; load average ${loadavg.start.map((x) => x.toFixed(1)).join('/')} → ${loadavg.end.map((x) => x.toFixed(1)).join('/')}):`);
table(
  results.map((r) => ({
    query: r.query,
    stored: r.variant,
    'rows read': fmt(r.rowsRead),
    'enc p50 ms': r.error ? r.error : f1(r.encrypted.p50),
    'enc p95 ms': r.error ? '-' : f1(r.encrypted.p95),
    'CPU main/workers': r.error ? '-' : `${f1(r.encryptedCpuMs.main)}/${f1(r.encryptedCpuMs.workers)}`,
    'plain p50 ms': f1(r.plaintext.p50),
    'plain p95 ms': f1(r.plaintext.p95),
    'ratio p50/p95': r.ratioP50 == null ? '-' : `${r.ratioP50.toFixed(2)}x / ${r.ratioP95.toFixed(2)}x`,
    'target ≤1.5x': r.ratioP50 == null ? 'FAIL' : r.ratioP50 <= 1.5 && r.ratioP95 <= 1.5 ? 'PASS' : 'FAIL',
  })),
);
{
  // the phases of the answers' Server-Timing (engine.ts QUERY_PHASES), the median of each over the runs
  const order = ['auth', 'body', 'context', 'wait', 'count', 'statement', 'handoff', 'merge', 'labels', 'finish', 'json', 'shared', 'cache', 'storage'];
  const seen = new Set(results.flatMap((r) => Object.keys(r.encryptedPhasesP50 ?? {})));
  const cols = [...order.filter((k) => seen.has(k)), ...[...seen].filter((k) => !order.includes(k) && !['total', 'http', 'open'].includes(k))];
  console.log(`\nWhere a query's time goes as it runs (each answer's Server-Timing, median of ${RUNS} per phase, ms of wall: the phases follow one another and add up to total, the handler's time; http: the client's time minus total; open: open+merge summed over the threads doing it, overlapping statement/handoff/merge):`);
  table(
    results.filter((r) => !r.error).map((r) => ({
      query: r.query,
      stored: r.variant,
      'enc p50': f1(r.encrypted.p50),
      ...Object.fromEntries(cols.map((k) => [k, f1(r.encryptedPhasesP50[k] ?? 0)])),
      total: f1(r.encryptedPhasesP50.total),
      http: f1(r.encryptedPhasesP50.http),
      open: f1(r.encryptedPhasesP50.open ?? 0),
    })),
  );
}
for (const breakdown of breakdowns) {
  console.log(`\nWhere the time goes (stored state: ${breakdown.state}; each part alone, median of ${RUNS}; ms — the statement's wall and the process's CPU, the rest this thread's CPU, inline: a real query's workers split the merge and finish):`);
  table(
    breakdown.rows.map((r) => ({
      query: r.query,
      'rows, bytes': `${fmt(r.rows)}, ${fmt(r.bytes)}`,
      'statement wall/CPU': `${f1(r.statementMs)}/${f1(r.statementCpuMs)}`,
      'open+merge': f1(r.mergeCpuMs),
      finish: f1(r.finishCpuMs),
      JSON: f1(r.jsonCpuMs),
      ...(r.jsonColumnsCpuMs != null ? { 'JSON columns': f1(r.jsonColumnsCpuMs) } : {}),
      'plain p50': f1(r.plaintextP50),
    })),
  );
}
for (const af of answerForms) {
  const both = af.rows.some((r) => r.columns);
  console.log(`\nThe answer's way out by form (stored state: ${af.state}; each shape answered from the result cache, forms alternating, median of ${RUNS}; bytes of the answer; json: the writer, Server-Timing; http: the client's time minus the handler's, both ends and the client's JSON.parse; client: the whole request)${both ? '' : ' — this build has the points form only'}:`);
  table(
    af.rows.map((r) => ({
      query: r.query,
      'bytes points': fmt(r.points.bytes),
      ...(both ? { 'bytes columns': fmt(r.columns.bytes) } : {}),
      'json ms points': f1(r.points.jsonMs),
      ...(both ? { 'json ms columns': f1(r.columns.jsonMs) } : {}),
      'http ms points': f1(r.points.httpMs),
      ...(both ? { 'http ms columns': f1(r.columns.httpMs) } : {}),
      'client ms points': f1(r.points.clientMs),
      ...(both ? { 'client ms columns': f1(r.columns.clientMs), 'same values': r.same ? 'yes' : 'NO' } : {}),
    })),
  );
}
for (const cc of [concurrentLiveDays, concurrent, concurrentDistinct].filter(Boolean)) {
  console.log(`\n${CLIENTS} concurrent dashboard clients, the overview's ${OVERVIEW.length} queries in a loop for ${CONCURRENT_S} s (stored state: ${cc.state}; per-token limits lifted)${cc.distinct ? ' — each client its own ranges, so no two queries are identical and none is shared (informational: the issue\'s target is the overview above)' : ''}:`);
  table([
    { figure: 'throughput (queries/s)', encrypted: cc.encrypted.perSecond.toFixed(1), plaintext: cc.plaintext.perSecond.toFixed(1), ratio: `${cc.throughputRatio.toFixed(2)}x`, target: '≥ 0.67x', verdict: cc.throughputRatio >= 0.67 ? 'PASS' : 'FAIL' },
    { figure: 'latency p99 (ms)', encrypted: cc.encrypted.p99.toFixed(0), plaintext: cc.plaintext.p99.toFixed(0), ratio: `${cc.p99Ratio.toFixed(2)}x`, target: '≤ 1.5x', verdict: cc.p99Ratio <= 1.5 ? 'PASS' : 'FAIL' },
    { figure: 'CPU ms per query: main / query workers', encrypted: `${f1(cc.encrypted.cpu.main)} / ${f1(cc.encrypted.cpu.workers)}`, plaintext: `${f1(cc.plaintext.cpu.main)} / -`, ratio: '', target: '', verdict: '' },
    { figure: 'engine statements per query, ms each', encrypted: `${(cc.encrypted.engine.calls / Math.max(1, cc.encrypted.queries)).toFixed(2)}, ${f1((cc.encrypted.engine.runSeconds * 1000) / Math.max(1, cc.encrypted.engine.calls))}`, plaintext: `${(cc.plaintext.engine.calls / Math.max(1, cc.plaintext.queries)).toFixed(2)}, ${f1((cc.plaintext.engine.runSeconds * 1000) / Math.max(1, cc.plaintext.engine.calls))}`, ratio: '', target: '', verdict: '' },
    { figure: 'errors / cached / shared answers', encrypted: `${cc.encrypted.errors} / ${cc.encrypted.cached} / ${cc.encrypted.shared}`, plaintext: `${cc.plaintext.errors} / - / -`, ratio: '', target: '0 errors', verdict: cc.encrypted.errors ? 'FAIL' : 'PASS' },
    { figure: 'answers differing from their shape\'s first', encrypted: String(cc.encrypted.differing), plaintext: '-', ratio: '', target: '0', verdict: cc.encrypted.differing ? 'FAIL' : 'PASS' },
  ]);
}
console.log(`\nBytes on disk per point (${optimize ? 'after OPTIMIZE TABLE … FINAL' : 'as written, not optimized'}; sum of bytes_on_disk of active parts in system.parts):`);
table([
  { table: 'plaintext plain.events', rows: fmt(disk.plaintext.rows), bytes: fmt(disk.plaintext.bytes), 'bytes/point': disk.plaintext.bytesPerPoint.toFixed(2), 'vs plaintext': '1.00x' },
  ...Object.entries(disk.variants).map(([v, d]) => ({
    table: `encrypted ${v}: rollups + dictionary`,
    rows: `${fmt(d.rollups.rows)} + ${fmt(d.dictionary.rows)}`,
    bytes: fmt(d.bytes),
    'bytes/point': d.bytesPerPoint.toFixed(2),
    'vs plaintext': `${(d.bytesPerPoint / disk.plaintext.bytesPerPoint).toFixed(2)}x`,
  })),
]);
for (const [v, d] of Object.entries(disk.variants)) {
  console.log(`  ${v}: ${Object.entries(d.ciphertextByLevel).map(([l, c]) => `${l} rows ${fmt(c.rows)} × ${c.aggBytesPerRow.toFixed(0)} B sealed aggregate (incompressible)`).join('; ')}`);
}
console.log('\nCorrectness (every (hour, country) cell; sum within 1e-9 relative, p95 within 2% of the exact rank-convention value):');
table(
  Object.entries(correctness).flatMap(([v, o]) =>
    Object.entries(o).map(([kind, c]) => ({
      stored: v,
      check: kind,
      cells: c.cells,
      'missing/extra': `${c.missing}/${c.extra}`,
      'within limit': `${c.withinLimit}/${c.compared}`,
      'max rel err': c.maxRel.toExponential(2),
      'median rel err': c.medianRel.toExponential(2),
    })),
  ),
);
console.log('');
table(spot.map((r) => Object.fromEntries(Object.entries(r).map(([k, x]) => [k, x ?? '-']))));
console.log(`\ncorrectness: ${ok ? 'OK' : 'FAILED'}${args.only ? ' (--only: the checks of the shapes measured)' : ''} (CH quantile() interpolates and samples, so it is shown, not checked)`);

const totalSeconds = (performance.now() - t0) / 1000;
if (!REUSE) writeResult('query', {
  config: {
    points: N, days: DAYS, seed: SEED, series: NSERIES, tickSeconds: TICK_S, runs: RUNS, warmup: WARMUP, maxRows: MAX_ROWS,
    transport: 'HTTP POST /v1/query against startCollector (role query) in this process',
    cache: 'result cache invalidated before each encrypted run (dictionary and pseudonym caches warm)',
    plaintext: 'MergeTree plain.events ORDER BY (name, time), same chDB, store.query (JSONEachRow parsed)',
    writer: 'Library-sealed batches (v2, deflate) through computeTick (dist/process/tick.js), one tick per tickSeconds of traffic, minute rows only',
    compaction: 'the real Compactor (dist/compaction/compactor.js) with an injected clock: derive, watermark, day packs',
    states: Object.fromEntries(Object.entries(STATES).map(([k, v]) => [k, { ...v, now: new Date(v.now).toISOString() }])),
  },
  loadavg,
  data: { pointsPerMetric: Object.fromEntries(METRICS.map((m, i) => [m.name, pointsPerMetric[i]])), generateSeconds: genSeconds, pointsPerSecond: N / genSeconds, librarySealSeconds: writer.sealMs / 1000, computeTickSeconds: writer.tickMs_ / 1000, plaintextInsertSeconds: plain.insertMs / 1000 },
  rowsWritten: { ticks: writer.ticks, byLevel: writer.rowsByLevel },
  compaction,
  queries: results,
  concurrent,
  ...(concurrentDistinct ? { concurrentDistinct } : {}),
  ...(concurrentLiveDays ? { concurrentLiveDays } : {}),
  timeZoneProbe: tzProbe,
  breakdowns,
  answerForms,
  disk,
  correctness,
  correct: ok,
  spot,
  totalSeconds,
});
progress(`done in ${totalSeconds.toFixed(0)} s`);

session.close();
await running.close();
if (args.keep && !REUSE) {
  writeFileSync(join(dataDir, 'bench-query.json'), JSON.stringify({ points: N, to, account: { accountId, readToken: created.readToken } }));
  progress(`kept ${dataDir} (${phases.at(-1)} state; rerun queries with --reuse ${dataDir})`);
} else if (!REUSE) rmSync(dataDir, { recursive: true, force: true });
process.exit(ok ? 0 : 1);
