// Small helpers shared by the benchmarks: timing, tables, JSON results.
//
// Also the pieces both ingest benchmarks (ingest.mjs, storefront.mjs) run: child processes, the
// plaintext Hono → chDB baseline server (`node bench/lib.mjs --serve-plaintext`), bytes on disk
// (`--disk-usage`), the keep-alive load generator, metric scrapes, CPU profiles, fast sealing.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import os from 'node:os';

export const LIB = fileURLToPath(import.meta.url);
export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

export const progress = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** Runs fn repeatedly for ~ms milliseconds after a warm-up; returns ops/s and ns/op. */
export function rate(fn, { ms = 1000, warmup = 200 } = {}) {
  let end = performance.now() + warmup;
  while (performance.now() < end) fn();
  let n = 0;
  const start = performance.now();
  end = start + ms;
  while (performance.now() < end) { fn(); n++; }
  const elapsed = performance.now() - start;
  return { opsPerSec: (n / elapsed) * 1000, nsPerOp: (elapsed * 1e6) / n, iterations: n };
}

export function percentile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function table(rows) {
  const keys = Object.keys(rows[0] ?? {});
  const width = keys.map((k) => Math.max(k.length, ...rows.map((r) => String(r[k]).length)));
  const line = (cells) => cells.map((c, i) => String(c).padEnd(width[i])).join('  ');
  console.log(line(keys));
  console.log(line(width.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(keys.map((k) => r[k])));
}

export function writeResult(name, data) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}${name}.json`;
  const body = { name, at: new Date().toISOString(), machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version }, ...data };
  writeFileSync(file, JSON.stringify(body, null, 2) + '\n');
  progress(`wrote ${file}`);
}

export const fmt = (n, d = 0) => Number(n).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** Parses Prometheus text exposition into [{ name, labels, value }] (no escapes in label values assumed). */
export function parsePrometheus(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * Quantile q of a cumulative histogram [{ le, count }] (le sorted, +Inf last), interpolated
 * linearly inside the bucket like PromQL's histogram_quantile. NaN when empty.
 */
export function histogramQuantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (!total) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1e-12, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** CPU seconds (user + system, all threads) a Linux process has used so far; NaN elsewhere. */
export function processCpuSeconds(pid, ticksPerSecond = 100, path = `/proc/${pid}/stat`) {
  try {
    const stat = readFileSync(path, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / ticksPerSecond; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds of a Linux process so far, split by thread: `total` (every thread, exited ones
 * included), `main`, and `byName` (live threads by name: the collector names its tick worker
 * `cs-tick-worker`; Node's own threads — libuv's pool, where chDB's calls run, and V8's — are
 * `node`; chDB's engine threads have their own names). Empty elsewhere.
 */
export function threadCpuSeconds(pid) {
  const out = { total: processCpuSeconds(pid), main: mainThreadCpuSeconds(pid), byName: {}, nodeByTid: {} };
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    if (tid === String(pid)) continue;
    let name;
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    const cpu = processCpuSeconds(pid, 100, `/proc/${pid}/task/${tid}/stat`);
    if (Number.isFinite(cpu)) out.byName[name] = (out.byName[name] ?? 0) + cpu;
    if (Number.isFinite(cpu) && name === 'node') out.nodeByTid[tid] = cpu;
  }
  return out;
}

/**
 * How many of Node's own threads (named `node`, the main thread aside) are V8's platform: its
 * delayed-task thread and 4 workers (parallel scavenges, ArrayBuffer sweeping, concurrent marking
 * and compilation), started before any JavaScript runs, so the lowest thread ids. The later ones
 * are libuv's pool, started at its first use, where chDB's calls run (the statement's parsing and
 * execution on the calling thread), and query workers if any ran. Told apart in session 13 by
 * `perf record -e cpu-clock:u` per thread (V8's GC symbols vs libchdb.so); it assumes Node's
 * default --v8-pool-size (4).
 */
const V8_PLATFORM_THREADS = 5;

/**
 * CPU between two threadCpuSeconds snapshots, in groups: main thread, tick worker, Node's other
 * threads (libuv's pool running chDB's calls, V8's GC and compiler threads; also apart as
 * poolThreads and v8Threads), and the rest — chDB's engine threads (merges, pipelines), threads
 * that ended in between included.
 */
export function threadCpuSplit(a, b) {
  const named = (s, name) => s.byName[name] ?? 0;
  const main = b.main - a.main;
  const tick = named(b, 'cs-tick-worker') - named(a, 'cs-tick-worker');
  const node = named(b, 'node') - named(a, 'node');
  const total = b.total - a.total;
  const platform = Object.keys(b.nodeByTid ?? {}).map(Number).sort((x, y) => x - y).slice(0, V8_PLATFORM_THREADS);
  const v8 = platform.reduce((sum, tid) => sum + b.nodeByTid[tid] - (a.nodeByTid?.[tid] ?? 0), 0);
  return { total, main, tickWorker: tick, nodeThreads: node, v8Threads: v8, poolThreads: node - v8, engine: total - main - tick - node };
}

/** CPU seconds of a process's main thread (Linux: its HTTP, storage calls and event loop; NaN elsewhere). */
export const mainThreadCpuSeconds = (pid) => processCpuSeconds(pid, 100, `/proc/${pid}/task/${pid}/stat`);

/** Resident set size of a Linux process in bytes (VmRSS); NaN elsewhere. */
export function processRssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Busy CPU seconds of the whole machine so far (all cores, from /proc/stat); NaN elsewhere. */
export function systemCpuSeconds(ticksPerSecond = 100) {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return (user + nice + system + irq + softirq + steal) / ticksPerSecond;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------
// Child: the plaintext Hono → chDB baseline (same group commit, same fsync settings as the collector).

/** The plaintext baseline's table (the ingest benches' server and bench/bytes.mjs). */
export const PLAIN_POINTS_TABLE = `CREATE TABLE IF NOT EXISTS plain.points (
    account LowCardinality(String),
    time DateTime64(3, 'UTC'),
    name LowCardinality(String),
    kind LowCardinality(String),
    value Float64,
    tags Map(LowCardinality(String), String)
  ) ENGINE = MergeTree ORDER BY (account, name, time)
  SETTINGS fsync_after_insert = 1, fsync_part_directory = 1`;
/** A point as the plaintext baseline stores it (one JSONEachRow line). */
export const plainRow = (account, p) => JSON.stringify({ account, time: p.time, name: p.name, kind: p.kind, value: p.value, tags: p.tags }) + '\n';

export async function servePlaintext() {
  const { Hono } = await import('hono');
  const { serve } = await import('@hono/node-server');
  const { Session } = await import('chdb');
  const { pointError } = await import('@cipherstat/protocol');
  const dir = process.env.PLAIN_DATA_DIR;
  const session = new Session(dir, { connectionArgs: ['--async_load_databases=0'] });
  await session.queryAsync('CREATE DATABASE IF NOT EXISTS plain');
  // Same durability as the collector's batches table: a 202 means fsynced.
  // `account`: the tenant, from the x-account header (the storefront bench; '' for one tenant).
  await session.queryAsync(PLAIN_POINTS_TABLE);

  // Group commit, as the collector's BatchWriter: one insert in flight, the next takes all waiting.
  let queue = [];
  let running = false;
  let idle = Promise.resolve();
  const run = async () => {
    running = true;
    try {
      while (queue.length) {
        const take = queue.splice(0, 10_000);
        try {
          await session.insert({ table: 'plain.points', values: take.map((p) => p.rows).join(''), format: 'JSONEachRow' });
          for (const p of take) p.resolve();
        } catch (e) {
          for (const p of take) p.reject(e);
        }
      }
    } finally {
      running = false;
    }
  };
  const submit = (rows) =>
    new Promise((resolve, reject) => {
      queue.push({ rows, resolve, reject });
      if (!running) idle = run();
    });

  const app = new Hono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.post('/v1/points', async (c) => {
    let points;
    try {
      points = await c.req.json();
    } catch {
      return c.json({ error: { code: 'invalid_json', message: 'not JSON' } }, 400);
    }
    if (!Array.isArray(points) || points.length > 2000) return c.json({ error: { code: 'invalid_request', message: 'an array of points' } }, 400);
    const now = Date.now();
    const account = c.req.header('x-account') ?? '';
    let rows = '';
    let rejected = 0;
    for (const p of points) {
      if (p === null || typeof p !== 'object' || pointError(p, now)) {
        rejected++;
        continue;
      }
      rows += plainRow(account, p);
    }
    try {
      if (rows) await submit(rows);
    } catch {
      return c.json({ error: { code: 'storage_unavailable', message: 'retry later' } }, 503);
    }
    return c.json({ accepted: points.length - rejected, rejected }, 202);
  });
  const server = serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: '127.0.0.1' });
  process.once('SIGTERM', () => {
    server.close();
    server.closeIdleConnections?.();
    void idle.then(() => {
      session.close();
      process.exit(0);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Child: bytes on disk of a chDB directory (chDB binds one data directory per process).

export async function diskUsage(dir, database) {
  const { Session } = await import('chdb');
  const s = new Session(dir, { connectionArgs: ['--async_load_databases=0'] });
  const q = async (sql) => {
    const text = (await s.queryAsync(sql, { format: 'JSONEachRow' })).text().trim();
    return text ? text.split('\n').map((l) => JSON.parse(l)) : [];
  };
  const parts = () =>
    q(`SELECT table, sum(bytes_on_disk) AS bytes, sum(data_uncompressed_bytes) AS uncompressed, sum(rows) AS rows, count() AS parts
       FROM system.parts WHERE active AND database = '${database}' GROUP BY table ORDER BY table`);
  const asIngested = await parts();
  const columns = {};
  for (const { table } of asIngested) if (table in SPLIT_TABLES) columns[table] = await columnSplit(q, database, table);
  for (const { table } of asIngested) await q(`OPTIMIZE TABLE ${database}.${table} FINAL`);
  const optimized = await parts();
  s.close();
  process.stdout.write(JSON.stringify({ asIngested, optimized, columns }) + '\n');
}

/** Tables split by column, and what their ciphertext column is (its length per row is measured too). */
const SPLIT_TABLES = { rollups: 'agg', batches: 'sealed', points: null };

/**
 * Bytes per column of a table as ingested. Small parts are *compact* (all columns in one file), for
 * which ClickHouse reports no per-column sizes, so each active part is copied on its own into a
 * scratch table that writes *wide* parts (one file per column; same rows, same sorting, same codecs)
 * and the copies' compressed column sizes are read. What the compact parts hold beyond their columns'
 * compressed data (marks, primary index, checksums and other part files, and the difference of
 * compressing a compact part's granules one by one) is `partFiles`: bytes_on_disk minus the columns.
 */
async function columnSplit(q, database, table) {
  const copy = `${database}.bench_split_${table}`;
  await q(`DROP TABLE IF EXISTS ${copy}`);
  await q(`CREATE TABLE ${copy} AS ${database}.${table} SETTINGS min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0`);
  await q(`SYSTEM STOP MERGES ${copy}`); // one copy per part, as the parts are (a merge would interleave their rows)
  const names = await q(`SELECT name FROM system.parts WHERE active AND database = '${database}' AND table = '${table}'`);
  for (const { name } of names) {
    await q(`INSERT INTO ${copy} SELECT * FROM ${database}.${table} WHERE _part = '${name}' SETTINGS max_threads = 1, max_insert_threads = 1, insert_deduplicate = 0`);
  }
  const cols = await q(`SELECT column, sum(column_data_compressed_bytes) AS compressed, sum(column_data_uncompressed_bytes) AS uncompressed
     FROM system.parts_columns WHERE active AND database = '${database}' AND table = 'bench_split_${table}' GROUP BY column ORDER BY compressed DESC`);
  const [{ parts: copyParts }] = await q(`SELECT count() AS parts FROM system.parts WHERE active AND database = '${database}' AND table = 'bench_split_${table}'`);
  await q(`DROP TABLE ${copy} SYNC`);
  const sealed = SPLIT_TABLES[table];
  const [rows] = sealed ? await q(`SELECT count() AS rows, sum(length(${sealed})) AS sealedBytes FROM ${database}.${table}`) : [{}];
  // rollups by level (minute 0, hour 1, day pack 2, quarter hour 3, quarter pack 4): what each level's rows cost
  const levels = table === 'rollups' ? await q(`SELECT level, count() AS rows, sum(length(agg)) AS sealedBytes FROM ${database}.rollups GROUP BY level ORDER BY level`) : [];
  return {
    parts: names.length,
    copyParts: Number(copyParts),
    sealedColumn: sealed,
    sealedBytes: Number(rows.sealedBytes ?? 0),
    levels: levels.map((l) => ({ level: Number(l.level), rows: Number(l.rows), sealedBytes: Number(l.sealedBytes) })),
    columns: cols.map((c) => ({ column: c.column, compressed: Number(c.compressed), uncompressed: Number(c.uncompressed) })),
  };
}

// ---------------------------------------------------------------------------------------------
// Orchestrator helpers.

export const children = new Set();
export function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function startChild(name, args, env, { pin } = {}) {
  const cmd = pin ? 'taskset' : process.execPath;
  const argv = pin ? ['-c', String(pin.cpu), process.execPath, ...args] : args;
  const child = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const tail = [];
  const keep = (prefix) => (chunk) => {
    for (const line of String(chunk).split('\n')) {
      if (!line.trim()) continue;
      tail.push(line);
      if (tail.length > 50) tail.shift();
      if (tail.length <= 20) console.log(`  [${name}${prefix}] ${line.slice(0, 300)}`);
    }
  };
  child.stdout.on('data', keep(''));
  child.stderr.on('data', keep(' stderr'));
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.tail = tail;
  return child;
}

export async function waitReady(url, child, path, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}):\n${child.tail.join('\n')}`);
    try {
      const r = await fetch(url + path, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server at ${url} not ready within ${timeoutMs} ms`);
}

export async function stopChild(child, timeoutMs = 30_000) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exited;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const r = await child.exited;
  clearTimeout(timer);
  children.delete(child);
  return r;
}

/** Runs a child to its end; its last stdout line is JSON. */
export async function runChildJson(args, env = {}) {
  const child = startChild('child', args, env, {});
  let out = '';
  child.stdout.removeAllListeners('data');
  child.stdout.on('data', (c) => (out += c));
  const { code } = await child.exited;
  children.delete(child);
  if (code !== 0) throw new Error(`${args.join(' ')} exited with ${code}:\n${child.tail.join('\n')}`);
  return JSON.parse(out.trim().split('\n').at(-1));
}

/**
 * A sender: POSTs a body (with optional extra headers) and resolves once the response has been
 * read with `{ status, retryAfterMs }` (the Retry-After of a 429 or 503 in ms, as the Library
 * reads it: packages/library/src/transport.ts `retryAfter`; otherwise undefined).
 */
export function makeSender(kind, url, path, contentType, concurrency) {
  if (kind === 'fetch') {
    const target = url + path;
    return async (body, extra) => {
      const r = await fetch(target, { method: 'POST', headers: { 'content-type': contentType, ...extra }, body });
      await r.arrayBuffer();
      return { status: r.status, retryAfterMs: retryAfterMs(r.status, r.headers.get('retry-after')) };
    };
  }
  const { hostname, port } = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  return (body, extra) =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { hostname, port, path, method: 'POST', agent, headers: { 'content-type': contentType, 'content-length': body.length, ...extra } },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => resolve({ status: res.statusCode, retryAfterMs: retryAfterMs(res.statusCode, res.headers['retry-after']) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
}

/** Retry-After of a 429 or 503 in ms (delta-seconds or an HTTP date, clamped to an hour), as the Library reads it; undefined otherwise. */
function retryAfterMs(status, value) {
  if ((status !== 429 && status !== 503) || !value) return undefined;
  const v = String(value).trim();
  const ms = /^\d+$/.test(v) ? +v * 1000 : /[a-z]/i.test(v) ? Math.max(0, Date.parse(v) - Date.now()) : NaN;
  return ms >= 0 ? Math.min(ms, 36e5) : undefined;
}

/**
 * When the Library sends a refused batch again (packages/library/src/transport.ts, library.ts):
 * after its Retry-After plus random(0, max(1 s, after / 2)); without one (or a network failure),
 * full-jitter backoff random(0, min(60 s, 1 s · 2^attempt)) — its defaults.
 */
export const resendDelayMs = (retryAfter, attempt, random = Math.random) =>
  retryAfter === undefined ? random() * Math.min(60_000, 1000 * 2 ** attempt) : retryAfter + random() * Math.max(1000, retryAfter / 2);

const TICK_PHASES = ['accounts', 'wait', 'open', 'aggregate', 'seal', 'encode'];
const TICK_WRITES = ['dictionary', 'rollups', 'processed'];

/**
 * Mean wall time per tick of each phase between two scrapes (ms): the CPU part in the tick worker
 * (open, aggregate, seal, encode), what the main thread waits for (accounts: state and keys; wait:
 * the CPU part, once the previous tick is written), and the writes (dictionary, rollups, markers).
 * Shows whether processing is CPU-bound (the CPU part dominates) or latency-bound (the writes).
 */
export function tickSplit(a, b) {
  const ticks = b.tick.rollups.count - a.tick.rollups.count || b.tick.processed.count - a.tick.processed.count;
  const perTick = (k) => (ticks ? (1000 * (b.tick[k].sum - a.tick[k].sum)) / ticks : NaN);
  const out = { ticks, rowsPerTick: ticks ? (b.rollupRows - a.rollupRows) / ticks : NaN, msPerTick: {} };
  for (const k of [...TICK_PHASES, ...TICK_WRITES]) out.msPerTick[k] = perTick(k);
  return out;
}

/** One line: a tick's mean phases (tickSplit). */
export function formatTickSplit(t) {
  const f = (k) => `${k === 'processed' ? 'markers' : k} ${fmt(t.msPerTick[k], 1)}`;
  const cpu = ['open', 'aggregate', 'seal', 'encode'];
  const writes = ['dictionary', 'rollups', 'processed'];
  const sum = (ks) => ks.reduce((n, k) => n + (t.msPerTick[k] || 0), 0);
  return `${fmt(t.ticks)} ticks, ${fmt(t.rowsPerTick)} rollup rows per tick; ms per tick — CPU part (worker) ${fmt(sum(cpu), 1)}: ${cpu.map(f).join(', ')}; main thread waited: ${['accounts', 'wait'].map(f).join(', ')}; writes ${fmt(sum(writes), 1)}: ${writes.map(f).join(', ')}`;
}

function storageCallsOf(rows) {
  const out = {};
  for (const r of rows) {
    if (r.name === 'cipherstat_storage_calls_total') (out[r.labels.call] ??= { calls: 0, wait: 0, run: 0 }).calls = r.value;
    else if (r.name === 'cipherstat_storage_call_seconds_total') (out[r.labels.call] ??= { calls: 0, wait: 0, run: 0 })[r.labels.phase] = r.value;
  }
  return out;
}

/**
 * Storage calls between two scrapes, by kind, busiest first: calls per second over `seconds`, and
 * per call the ms waited for the engine (it runs one call at a time) and the ms it ran; the
 * engine's busy share (run seconds per second).
 */
export function storageCallSplit(a, b, seconds) {
  const rows = [];
  for (const [call, e] of Object.entries(b.storageCalls)) {
    const s = a.storageCalls[call] ?? { calls: 0, wait: 0, run: 0 };
    const calls = e.calls - s.calls;
    if (!calls) continue;
    rows.push({ call, calls, perSec: calls / seconds, waitMs: (1000 * (e.wait - s.wait)) / calls, runMs: (1000 * (e.run - s.run)) / calls, busy: (e.run - s.run) / seconds });
  }
  return rows.sort((x, y) => y.busy - x.busy);
}

/** Mean ms per stored batch of each phase of its 202's wait (queued, dedup, insert) between two scrapes. */
export function ackSplit(a, b) {
  const n = b.ack.batches - a.ack.batches;
  return Object.fromEntries(['queued', 'dedup', 'insert'].map((p) => [p, n ? (1000 * (b.ack[p] - a.ack[p])) / n : NaN]));
}

/** A runLoad `onTick` that adds the collector's processing rate and queues (since its last call) to the progress line. */
export function processingTicker(url) {
  let last;
  return async () => {
    const s = await scrape(url);
    const prev = last;
    last = s;
    if (!prev) return '';
    return `, processed ${fmt((s.processed - prev.processed) / ((s.at - prev.at) / 1000))} pts/s, queues ingest ${s.writerQueue} / process ${s.processQueue} batches`;
  };
}

export async function scrape(url) {
  const text = await (await fetch(url + '/metrics')).text();
  const rows = parsePrometheus(text);
  const get = (name, labels = {}) =>
    rows.find((r) => r.name === name && Object.entries(labels).every(([k, v]) => r.labels[k] === v))?.value ?? 0;
  const lag = rows
    .filter((r) => r.name === 'cipherstat_processing_lag_seconds_bucket')
    .map((r) => ({ le: r.labels.le === '+Inf' ? Infinity : Number(r.labels.le), count: r.value }))
    .sort((a, b) => a.le - b.le);
  return {
    at: performance.now(),
    processed: get('cipherstat_points_total', { outcome: 'processed' }),
    rejected: get('cipherstat_points_total', { outcome: 'rejected' }),
    accepted: get('cipherstat_batches_total', { outcome: 'accepted' }),
    lag,
    lagCount: get('cipherstat_processing_lag_seconds_count'),
    lagSum: get('cipherstat_processing_lag_seconds_sum'),
    insertBatchesSum: get('cipherstat_storage_insert_seconds_sum', { table: 'batches' }),
    insertBatchesCount: get('cipherstat_storage_insert_seconds_count', { table: 'batches' }),
    insertRollupsSum: get('cipherstat_storage_insert_seconds_sum', { table: 'rollups' }),
    insertRollupsCount: get('cipherstat_storage_insert_seconds_count', { table: 'rollups' }),
    // Where a tick's time goes (collector metrics; sums in seconds): its CPU part by phase, its writes by table.
    tick: Object.fromEntries(
      [...TICK_PHASES.map((p) => [p, ['cipherstat_tick_phase_seconds', { phase: p }]]), ...TICK_WRITES.map((t) => [t, ['cipherstat_storage_insert_seconds', { table: t }]])].map(([k, [name, labels]]) => [
        k,
        { sum: get(`${name}_sum`, labels), count: get(`${name}_count`, labels) },
      ]),
    ),
    rollupRows: get('cipherstat_rollup_rows_written_total'),
    // Storage calls by kind (the collector's engine lane): count, seconds waiting for the engine, seconds running.
    storageCalls: storageCallsOf(rows),
    // Where the 202s waited, summed over batches (ingest/writer.ts).
    ack: {
      batches: get('cipherstat_ingest_ack_batches_total'),
      ...Object.fromEntries(['queued', 'dedup', 'insert'].map((p) => [p, get('cipherstat_ingest_ack_seconds_total', { phase: p })])),
    },
    writerQueue: get('cipherstat_ingest_queue_batches'),
    processQueue: get('cipherstat_process_queue_batches'),
  };
}

/**
 * Sends bodies with `concurrency` clients for warmupMs + durationMs. A batch counts when
 * answered 202, inside the window when its 202 arrives inside it; latencies of requests
 * started inside the window. `pointsOf(i)`: points in body i; `headersOf(i)`: extra request
 * headers; `untilExhausted`: sending every body is the point (a warm pass), not a shortfall. The server's RSS is sampled every second (max and last reported).
 */
export async function runLoad({ name, send, bodies, pointsOf, headersOf = () => undefined, warmupMs, durationMs, concurrency, serverPid, onWindowStart, onTick, untilExhausted = false }) {
  const t0 = performance.now();
  const windowStart = t0 + warmupMs;
  const windowEnd = windowStart + durationMs;
  const latencies = new Float64Array(bodies.length);
  let nLat = 0;
  let next = 0;
  let acked = 0;
  let ackedInWindow = 0;
  let pointsAcked = 0;
  let pointsInWindow = 0;
  let rssMaxBytes = 0;
  let rssBytes = 0;
  let lastAck = 0;
  let firstWindowAck = 0;
  let lastWindowAck = 0;
  let exhausted = false;
  const statuses = {};
  const errors = {};
  let cpu0;
  let serverCpu0;
  let systemCpu0;
  let windowStartHrUs = NaN;
  const windowTimer = setTimeout(async () => {
    cpu0 = process.cpuUsage();
    serverCpu0 = processCpuSeconds(serverPid);
    systemCpu0 = systemCpuSeconds();
    windowStartHrUs = Number(process.hrtime.bigint() / 1000n);
    await onWindowStart?.();
  }, warmupMs);
  let atEnd;
  const snapshot = () => ({ cpu: process.cpuUsage(cpu0), server: processCpuSeconds(serverPid), system: systemCpuSeconds(), hrUs: Number(process.hrtime.bigint() / 1000n) });
  const windowEndTimer = setTimeout(() => (atEnd = snapshot()), warmupMs + durationMs);
  let lastTick = { at: t0, points: 0 };
  const ticker = setInterval(async () => {
    const now = performance.now();
    rssBytes = processRssBytes(serverPid);
    if (now >= windowStart) rssMaxBytes = Math.max(rssMaxBytes, rssBytes);
    const inst = (pointsAcked - lastTick.points) / ((now - lastTick.at) / 1000);
    lastTick = { at: now, points: pointsAcked };
    const phase = now < windowStart ? 'warm-up' : 'measure';
    const avg = now >= windowStart ? `, window avg ${fmt(pointsInWindow / ((now - windowStart) / 1000))} pts/s` : '';
    const extra = onTick ? await onTick(now).catch(() => '') : '';
    const errs = Object.keys(errors).length || Object.keys(statuses).some((s) => s !== '202') ? `, other: ${JSON.stringify({ ...statuses, 202: undefined, ...errors })}, resent ${fmt(counts.resent)} (${fmt(waiting)} waiting)` : '';
    progress(`  ${name} ${phase} ${fmt((now - t0) / 1000, 0)} s: acked ${fmt(inst)} pts/s${avg}${extra}${errs}`);
  }, 1000);

  // The Library's client model (same code for every pipeline): a batch refused with 429/503
  // (or lost to a network failure) is sent again after resendDelayMs — its Retry-After with
  // jitter — while the client goes on with the next batch (another visitor's page). A batch due
  // again goes before new ones. Other refusals (4xx) are final, as in the Library.
  const due = []; // body indexes whose resend time has come (FIFO)
  let dueHead = 0;
  let waiting = 0; // refused batches not yet due
  const attempts = new Map(); // body index → failed attempts so far
  const timers = new Set();
  let wake = null; // resolves when a batch falls due (clients out of new bodies wait for it)
  let woken = null;
  const counts = { refused: 0, resent: 0, resentAcked: 0, networkErrors: 0 };
  const refuse = (i, retryAfter) => {
    const attempt = (attempts.get(i) ?? 0) + 1;
    attempts.set(i, attempt);
    waiting++;
    const t = setTimeout(() => {
      timers.delete(t);
      waiting--;
      due.push(i);
      wake?.();
      wake = woken = null;
    }, resendDelayMs(retryAfter, attempt - 1));
    timers.add(t);
  };
  const nextBody = async () => {
    for (;;) {
      if (dueHead < due.length) {
        counts.resent++;
        return due[dueHead++];
      }
      if (next < bodies.length) return next++;
      exhausted = true;
      // Out of new bodies: a warm pass still sends what is waiting to be resent; a timed phase ends.
      if (!untilExhausted || !waiting || performance.now() >= windowEnd) return -1;
      await (woken ??= new Promise((r) => (wake = r)));
    }
  };

  const client = async () => {
    for (;;) {
      if (performance.now() >= windowEnd) return;
      const i = await nextBody();
      if (i < 0) return;
      const start = performance.now();
      let status;
      let retryAfter;
      try {
        ({ status, retryAfterMs: retryAfter } = await send(bodies[i], headersOf(i)));
      } catch (e) {
        errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
        counts.networkErrors++;
        refuse(i, undefined);
        continue;
      }
      const end = performance.now();
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status !== 202) {
        if (status === 429 || status === 503) {
          counts.refused++;
          refuse(i, retryAfter);
        }
        continue;
      }
      if (attempts.has(i)) {
        counts.resentAcked++;
        attempts.delete(i);
      }
      acked++;
      pointsAcked += pointsOf(i);
      lastAck = end;
      if (end >= windowStart && end <= windowEnd) {
        ackedInWindow++;
        pointsInWindow += pointsOf(i);
        if (!firstWindowAck) firstWindowAck = end;
        lastWindowAck = end;
      }
      if (start >= windowStart) latencies[nLat++] = end - start;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  for (const t of timers) clearTimeout(t);
  const notResent = waiting + due.length - dueHead;
  atEnd ??= snapshot(); // ran out of bodies before the window ended
  clearTimeout(windowTimer);
  clearTimeout(windowEndTimer);
  clearInterval(ticker);
  const windowEndHrUs = atEnd.hrUs;
  const measuredEnd = exhausted ? Math.min(windowEnd, lastWindowAck) : windowEnd;
  const windowSec = (measuredEnd - windowStart) / 1000;
  // CPU over [window start, window end] (timers), so in-flight requests after the end are not counted.
  const cpuSec = (atEnd.hrUs - windowStartHrUs) / 1e6;
  const serverCpu = atEnd.server - serverCpu0;
  const systemCpu = atEnd.system - systemCpu0;
  const loadgenCpu = cpu0 ? (atEnd.cpu.user + atEnd.cpu.system) / 1e6 : NaN;
  const lat = Array.from(latencies.subarray(0, nLat)).sort((a, b) => a - b);
  if (exhausted && !untilExhausted) progress(`  ${name}: ran out of pre-built bodies after ${fmt(acked)} batches; raise --batches (window shortened to ${fmt(windowSec, 1)} s)`);
  return {
    windowSec,
    exhausted,
    batchesSent: next,
    batchesAcked: acked,
    batchesAckedInWindow: ackedInWindow,
    pointsAcked,
    pointsPerSecAcked: pointsInWindow / windowSec,
    batchesPerSecAcked: ackedInWindow / windowSec,
    rssMaxBytes: Math.max(rssMaxBytes, processRssBytes(serverPid)),
    ackMs: { p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), max: lat.at(-1) },
    statuses,
    errors,
    // The client model's counts: responses 429/503 (each batch refused is sent again), resends, resends acknowledged, batches refused and not sent again by the phase's end.
    resends: { ...counts, notResent },
    lastAck,
    windowStart,
    windowEnd: measuredEnd,
    windowStartHrUs,
    windowEndHrUs,
    loadgenCpuCores: loadgenCpu / cpuSec,
    serverCpuCores: serverCpu / cpuSec,
    // CPU used by everything else on the machine during the window (other jobs skew results).
    otherCpuCores: Math.max(0, systemCpu - serverCpu - loadgenCpu) / cpuSec,
    loadAverage1m: os.loadavg()[0],
  };
}

/**
 * One pipeline's measured load: a preflight batch (must be acknowledged; not measured), then
 * runLoad over the other bodies, the load generator pinned like the options say.
 */
export async function loadPipeline(o, name, send, bodies, serverPid, hooks = {}) {
  const { status: pre } = await send(bodies[bodies.length - 1], hooks.headersOf?.(bodies.length - 1));
  if (pre !== 202) throw new Error(`preflight batch answered ${pre}`);
  bodies.pop();
  progress(`${name} pipeline: load (${o.warmup} s warm-up + ${o.duration} s measured, ${o.concurrency} concurrent ${o.client} clients)`);
  pinSelf(o.pin ? '0' : undefined);
  return runLoad({ name, send, bodies, warmupMs: o.warmup * 1000, durationMs: o.duration * 1000, concurrency: o.concurrency, serverPid, ...hooks });
}

/** Top functions of a V8 .cpuprofile: self time and inclusive time per function. */
/**
 * The plaintext baseline both ingest benchmarks compare against: a Hono → chDB child
 * (`--serve-plaintext`) fed the same points as JSON bodies (built by `self` from `bodyData`)
 * under the same load. Processed = acknowledged (its 202 comes after the insert, so acknowledged
 * points are queryable); with `disk`, its bytes on disk after it stopped.
 */
export async function plaintextRun(o, tmp, { self, bodyData, label, client = 'http', pointsOf, headersOf, pin, disk = false, afterLoad, count = o.batches, run }) {
  progress('plaintext pipeline: starting the Hono → chDB child');
  const dataDir = join(tmp, 'plain');
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = startChild('plaintext', [LIB, '--serve-plaintext'], { PORT: String(port), PLAIN_DATA_DIR: dataDir }, { pin });
  try {
    await waitReady(url, child, '/healthz');
    progress(`plaintext pipeline: ready at ${url}; pre-building ${fmt(o.batches)} JSON bodies (${label})`);
    const { bodies, avgBytes } = await buildBodies(self, 'json', count, bodyData);
    const send = makeSender(client, url, '/v1/points', 'application/json', o.concurrency);
    // `run`: the bench's own phases on these bodies (storefront: cold, warm pass, steady); default one loadPipeline.
    const load = run ? await run({ send, bodies, serverPid: child.pid }) : await loadPipeline(o, 'plaintext', send, bodies, child.pid, { pointsOf, headersOf });
    afterLoad?.();
    const result = {
      url,
      bodyBytes: avgBytes,
      ...load,
      pointsPerSecProcessed: load.pointsPerSecAcked,
      batchesPerSecProcessed: load.batchesPerSecAcked,
      lagSec: { p50: 0, p95: 0, p99: 0 },
    };
    progress('plaintext pipeline: stopping the server');
    await stopChild(child);
    if (disk) {
      progress('plaintext pipeline: measuring bytes on disk');
      result.disk = await runChildJson([LIB, '--disk-usage', dataDir, 'plain']);
    }
    return result;
  } finally {
    await stopChild(child, 5000);
  }
}

export function summarizeProfile(file, window, top = 20) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  // Only the samples of the measured window (V8 stamps samples with the monotonic clock, in µs,
  // the clock of process.hrtime); the whole profile when none fall inside it.
  let t = prof.startTime;
  const inWindow = prof.samples.filter((_, i) => {
    t += prof.timeDeltas[i];
    return t >= window.startUs && t <= window.endUs;
  });
  const samples = inWindow.length > 100 ? inWindow : prof.samples;
  const hits = new Map();
  for (const id of samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const total = samples.length;
  const keyOf = (n) => {
    const f = n.callFrame;
    const url = f.url ? f.url.replace(/^file:\/\//, '').replace(ROOT, '') : '';
    return `${f.functionName || '(anonymous)'} ${url}${url ? `:${f.lineNumber + 1}` : ''}`;
  };
  const self = new Map();
  const incl = new Map();
  const walk = (n, onStack) => {
    const k = keyOf(n);
    const h = hits.get(n.id) ?? 0;
    self.set(k, (self.get(k) ?? 0) + h);
    let sub = h;
    const fresh = !onStack.has(k);
    if (fresh) onStack.add(k);
    for (const c of n.children ?? []) sub += walk(byId.get(c), onStack);
    if (fresh) {
      onStack.delete(k);
      incl.set(k, (incl.get(k) ?? 0) + sub);
    }
    return sub;
  };
  walk(prof.nodes[0], new Set());
  const rank = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([fn, h]) => ({ fn, pct: Math.round((1000 * h) / total) / 10 }));
  const idle = self.get('(idle) ') ?? 0;
  return { samples: total, scope: samples === inWindow ? 'measured window' : 'whole run', durationSec: samples === inWindow ? (window.endUs - window.startUs) / 1e6 : (prof.endTime - prof.startTime) / 1e6, busyPct: Math.round((1000 * (total - idle)) / total) / 10, self: rank(self), inclusive: rank(incl) };
}

export function buildInfo(cli) {
  const git = (...args) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  const dirty = git('status', '--porcelain', '--', 'services/collector/src', 'packages/protocol/src').split('\n').filter(Boolean).length;
  const newest = (dir, ext) => {
    let t = 0;
    const walk = (d) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else if (e.name.endsWith(ext)) t = Math.max(t, statSync(join(d, e.name)).mtimeMs);
      }
    };
    try {
      walk(dir);
    } catch {}
    return t;
  };
  let stale;
  if (cli === 'services/collector/dist/cli.js') {
    for (const pkg of ['services/collector', 'packages/protocol']) {
      if (newest(join(ROOT, pkg, 'src'), '.ts') > newest(join(ROOT, pkg, 'dist'), '.js')) {
        stale = `${pkg}/src is newer than its dist: the measured build may be out of date (npx tsc -b packages/protocol services/collector)`;
      }
    }
  }
  return { commit: git('rev-parse', '--short', 'HEAD'), uncommittedSourceFiles: dirty, cli, stale };
}

export function pinSelf(cpus) {
  if (!cpus) return;
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) progress(`  taskset failed: ${r.stderr}`);
}

/** What sealing adds to a rollup row's aggregate (services/collector/src/at-rest/records.ts SEAL_OVERHEAD: format, nonce, tag). */
const ROLLUP_SEAL_OVERHEAD = 1 + 24 + 16;

export function diskSummary(disk, points) {
  const sum = (rows) => rows.reduce((s, r) => s + Number(r.bytes), 0);
  const perTable = (rows) => Object.fromEntries(rows.map((r) => [r.table, { bytes: Number(r.bytes), rows: Number(r.rows), parts: Number(r.parts), bytesPerPoint: Number(r.bytes) / points }]));
  const asIngested = perTable(disk.asIngested);
  // Per column (bench/lib.mjs columnSplit): each column's compressed bytes per point, and the part files the rest.
  for (const [table, split] of Object.entries(disk.columns ?? {})) {
    const t = asIngested[table];
    if (!t) continue;
    const inColumns = split.columns.reduce((s, c) => s + c.compressed, 0);
    t.columns = Object.fromEntries(split.columns.map((c) => [c.column, c.compressed / points]));
    t.partFilesPerPoint = (t.bytes - inColumns) / points;
    t.rowsPerPoint = t.rows / points;
    t.bytesPerRow = t.bytes / t.rows;
    if (split.sealedColumn) t.sealedPerRow = split.sealedBytes / t.rows;
    if (table === 'rollups') {
      t.sealOverheadPerPoint = (ROLLUP_SEAL_OVERHEAD * t.rows) / points;
      t.aggregatePlaintextPerRow = (split.sealedBytes - ROLLUP_SEAL_OVERHEAD * t.rows) / t.rows;
      t.levels = (split.levels ?? []).map((l) => ({ level: l.level, rowsPerPoint: l.rows / points, sealedPerPoint: l.sealedBytes / points }));
    }
  }
  return {
    points,
    asIngested: { bytes: sum(disk.asIngested), bytesPerPoint: sum(disk.asIngested) / points, tables: asIngested },
    optimized: { bytes: sum(disk.optimized), bytesPerPoint: sum(disk.optimized) / points, tables: perTable(disk.optimized) },
  };
}

/**
 * Lines explaining bytes per point as ingested, by table and, for the split tables, by column
 * (diskSummary): where the bytes go, so a change to a row's encoding shows in the column it touched.
 */
export function formatColumnSplit(summary) {
  const lines = [];
  for (const [table, t] of Object.entries(summary.asIngested.tables)) {
    if (!t.columns) continue;
    const cols = Object.entries(t.columns).filter(([, v]) => v >= 0.005).map(([c, v]) => `${c} ${fmt(v, 2)}`).join(', ');
    let head = `  ${table} ${fmt(t.bytesPerPoint, 2)} B/pt = ${cols}; part files ${fmt(t.partFilesPerPoint, 2)}`;
    head += ` (${fmt(t.rows)} rows in ${fmt(t.parts)} parts, ${fmt(t.rowsPerPoint, 3)} rows/pt, ${fmt(t.bytesPerRow, 1)} B/row`;
    if (t.sealedPerRow !== undefined) head += `, sealed ${fmt(t.sealedPerRow, 1)} B/row`;
    head += ')';
    lines.push(head);
    if (t.sealOverheadPerPoint !== undefined) {
      lines.push(`    of which the rollups' sealed aggregates: seal overhead ${fmt(t.sealOverheadPerPoint, 2)} B/pt (${ROLLUP_SEAL_OVERHEAD} B/row: format, nonce, tag) + aggregate plaintext ${fmt(t.aggregatePlaintextPerRow, 1)} B/row`);
      const names = ['minute', 'hour', 'day pack', 'quarter hour', 'quarter pack'];
      if (t.levels?.length) lines.push(`    sealed aggregates by level: ${t.levels.map((l) => `${names[l.level] ?? l.level} ${fmt(l.sealedPerPoint, 2)} B/pt (${fmt(l.rowsPerPoint, 3)} rows/pt)`).join(', ')}`);
    }
  }
  return lines;
}

/**
 * After the load: waits (up to timeoutSec) until the collector processed `want` batches, then
 * the freshness of the batches processed since `atStart` (a scrape) from its lag histogram.
 */
export async function waitProcessed(url, { want, atStart, lastAck, timeoutSec, name = 'encrypted pipeline' }) {
  let final = await scrape(url);
  const drainStart = performance.now();
  while (final.lagCount < want && performance.now() - drainStart < timeoutSec * 1000) {
    await new Promise((r) => setTimeout(r, 100));
    final = await scrape(url);
  }
  const drained = final.lagCount >= want;
  const drainSec = (performance.now() - lastAck) / 1000;
  progress(`${name}: ${drained ? 'all processed' : 'NOT all processed'} ${fmt(drainSec, 2)} s after the last 202 (${fmt(final.lagCount)}/${fmt(want)} batches)`);
  const lagBuckets = final.lag.map((b, i) => ({ le: b.le, count: b.count - (atStart?.lag[i]?.count ?? 0) }));
  const lagCount = lagBuckets.at(-1)?.count ?? 0;
  return {
    final,
    lagSec: {
      p50: histogramQuantile(lagBuckets, 0.5),
      p95: histogramQuantile(lagBuckets, 0.95),
      p99: histogramQuantile(lagBuckets, 0.99),
      mean: (final.lagSum - (atStart?.lagSum ?? 0)) / Math.max(1, lagCount),
      shareWithin2s: (lagBuckets.find((b) => b.le === 2)?.count ?? NaN) / Math.max(1, lagCount),
      batches: lagCount,
    },
    drainedAfterLastAckSec: drained ? drainSec : null,
  };
}

/** Ends the run (and its children) if it takes longer than `seconds`; children die with this process. Returns a stop function. */
export function watchdog(name, seconds) {
  const timer = setTimeout(() => {
    console.error(`${name} bench: watchdog fired (run took too long); killing children`);
    killAll();
    process.exit(2);
  }, seconds * 1000);
  timer.unref();
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => (killAll(), process.exit(130)));
  return () => clearTimeout(timer);
}

/** Node flags that make a child write one CPU profile per thread into `dir` (collectProfiles reads them). */
export const profileFlags = (dir) => ['--cpu-prof', `--cpu-prof-dir=${dir}`];

/**
 * A child's CPU profiles (profileFlags: CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile, one per
 * thread) kept as bench/results/<name>-<thread>.cpuprofile (open them in Chrome DevTools) and
 * summarized over the measured window. tid 0 is the main thread; the busiest other thread is the
 * tick worker (query workers idle while ingesting); the rest are named by tid.
 */
export function collectProfiles(dir, name, window) {
  if (!existsSync(dir)) return {};
  const found = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ f, tid: f.split('.').at(-3), summary: summarizeProfile(join(dir, f), window) }));
  const others = found.filter((p) => p.tid !== '0').sort((a, b) => b.summary.busyPct - a.summary.busyPct);
  const label = (p) => (p.tid === '0' ? 'main' : p === others[0] ? 'tick-worker' : `thread-${p.tid}`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const out = {};
  for (const p of found) {
    const file = join(RESULTS_DIR, `${name}-${label(p)}.cpuprofile`);
    copyFileSync(join(dir, p.f), file);
    out[label(p)] = { file, ...p.summary };
  }
  return out;
}

/** Prints the top functions of a summarized profile (summarizeProfile). */
export function printProfile(title, prof) {
  console.log(`\ncollector CPU profile (${title}, ${prof.scope}, ${fmt(prof.durationSec, 1)} s, busy ${prof.busyPct}%): ${prof.file}`);
  table(prof.self.slice(0, 15).map((x, i) => ({ 'self %': x.pct, function: x.fn.slice(0, 100), 'incl %': prof.inclusive[i]?.pct, 'inclusive function': prof.inclusive[i]?.fn.slice(0, 80) })));
}

// ---------------------------------------------------------------------------------------------
// Pre-built request bodies: worker threads of the calling benchmark encode them in parallel.

/**
 * Builds n bodies with one worker per core (up to 4) running `file` with workerData
 * `{ ...data, from, to }`; the worker calls postBodies. Prints progress every second.
 */
export async function buildBodies(file, label, n, data) {
  const workers = Math.max(1, Math.min(os.cpus().length, 4));
  const bodies = new Array(n);
  let built = 0;
  const t0 = performance.now();
  const tick = setInterval(() => progress(`  built ${fmt(built)}/${fmt(n)} ${label} bodies (${fmt(built / ((performance.now() - t0) / 1000))}/s)`), 1000);
  try {
    await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const from = Math.floor((n * w) / workers);
        const to = Math.floor((n * (w + 1)) / workers);
        return new Promise((resolve, reject) => {
          const worker = new Worker(file, { workerData: { ...data, from, to } });
          worker.on('message', ({ start, buf, offsets }) => {
            const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
            for (let k = 0; k + 1 < offsets.length; k++) bodies[start + k] = b.subarray(offsets[k], offsets[k + 1]);
            built += offsets.length - 1;
          });
          worker.on('error', reject);
          worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`build worker exited with ${code}`))));
        });
      }),
    );
  } finally {
    clearInterval(tick);
  }
  const secs = (performance.now() - t0) / 1000;
  const bytes = bodies.reduce((s, b) => s + b.length, 0);
  progress(`  built ${fmt(n)} ${label} bodies in ${fmt(secs, 1)} s, ${fmt(bytes / n)} bytes each on average`);
  return { bodies, avgBytes: bytes / n };
}

/** Worker side of buildBodies: encodes bodies [from, to) and posts them in packed chunks. */
export function postBodies(port, from, to, encode, chunk = 250) {
  for (let start = from; start < to; start += chunk) {
    const parts = [];
    for (let i = start; i < Math.min(to, start + chunk); i++) parts.push(encode(i));
    const total = parts.reduce((n, p) => n + p.length, 0);
    const buf = new Uint8Array(total);
    const offsets = new Uint32Array(parts.length + 1);
    let o = 0;
    parts.forEach((p, k) => {
      buf.set(p, o);
      o += p.length;
      offsets[k + 1] = o;
    });
    port.postMessage({ start, buf, offsets }, [buf.buffer, offsets.buffer]);
  }
}

const randomBytesHex = (n) => crypto.getRandomValues(Buffer.alloc(n)).toString('hex');

/**
 * Envelopes as the Library seals them, fast (`envelope: 'v2'`: HPKE through node:crypto, deflated; 'v2plain': not deflated; v1 below): `seal(accountId, accountPublicKey, points, baseTime)`
 * with the collector key given here. Sealed boxes exactly as @cipherstat/protocol `seal`
 * (ephemeral X25519, nonce = SHA-512(epk || pk)[0..24], XSalsa20-Poly1305), with the two X25519
 * steps through node:crypto: the load generator is not what is measured, and tweetnacl's scalar
 * multiplication would cost ~1.8 ms per batch. Self-tested against the protocol's own open.
 */
export async function envelopeSealer({ collectorKeyId, collectorPublicKey, envelope = 'v1' }) {
  const P = await import('@cipherstat/protocol');
  if (envelope === 'v2' || envelope === 'v2plain') {
    // Envelope v2 (HPKE) as the Library seals it in Node: the protocol's own seal over node:crypto,
    // the inner plaintext deflated (flag 0x01) as the Library does in Node (browsers: not yet, docs/protocol.md §Flags);
    // 'v2plain': flags 0, what browsers (and every Library before it) send.
    const { deflateRaw, hpkeSeal } = await import('@cipherstat/protocol/node');
    const keys = { collectorKeyId, collectorPublicKey: new Uint8Array(collectorPublicKey) };
    const deflate = envelope === 'v2' ? deflateRaw : undefined;
    return (accountId, accountPublicKey, points, baseTime) =>
      P.sealBatchV2({ accountId, batchId: randomBytesHex(16), createdAt: baseTime, sdk: 'bench/1' }, points, { ...keys, accountPublicKey }, hpkeSeal, deflate);
  }
  const { default: nacl } = await import('tweetnacl');
  const { createPrivateKey, createPublicKey, diffieHellman, randomBytes } = await import('node:crypto');
  // JWK imports: OpenSSL 3's DER decoders cost ~10x more per key (measured ~80-500 µs vs ~7-45 µs).
  const publicKeyObject = (raw) => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
  const BASE = publicKeyObject(Buffer.from([9, ...new Array(31).fill(0)]));
  const sealFast = (message, recipientPk, recipientKey) => {
    const priv = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: randomBytes(32).toString('base64url'), x: '' }, format: 'jwk' });
    const epk = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: BASE }));
    const shared = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: recipientKey }));
    const key = P.sharedKey(new Uint8Array(32), recipientPk, () => shared);
    if (!key) throw new Error('low-order recipient key');
    return P.concat(epk, nacl.secretbox(message, nacl.hash(P.concat(epk, recipientPk)).subarray(0, 24), key));
  };
  const probe = P.keyPair();
  const opened = P.openSeal(sealFast(P.utf8('self-test'), probe.publicKey, publicKeyObject(probe.publicKey)), probe);
  if (!opened.ok || P.fromUtf8(opened.value) !== 'self-test') throw new Error('fast seal does not match the protocol');

  const collectorPk = new Uint8Array(collectorPublicKey);
  const collectorKey = publicKeyObject(collectorPk);
  const prefix = P.concat(new Uint8Array([0x43, 0x53, P.VERSION, 0]), P.fromHex(collectorKeyId));
  const accountKeys = new Map();
  return (accountId, accountPublicKey, points, baseTime) => {
    let accountKey = accountKeys.get(accountId);
    if (!accountKey) accountKeys.set(accountId, (accountKey = publicKeyObject(accountPublicKey)));
    const batchId = randomBytes(16).toString('hex');
    const header = P.encodeHeader({ accountId, batchId, createdAt: baseTime, sdk: 'bench/1', count: points.length });
    const inner = sealFast(P.encodeInner(accountId, batchId, points), accountPublicKey, accountKey);
    const outer = sealFast(P.concat(new Uint8Array([header.length >> 8, header.length & 0xff]), header, inner), collectorPk, collectorKey);
    return P.concat(prefix, outer);
  };
}

// ---------------------------------------------------------------------------------------------

if (process.argv[1] && fileURLToPath(new URL(`file://${process.argv[1]}`)) === LIB) {
  if (process.argv[2] === '--serve-plaintext') await servePlaintext();
  else if (process.argv[2] === '--disk-usage') await diskUsage(process.argv[3], process.argv[4]);
}

/** A numeric `--name n` argument of this script, or `dflt`. */
export const numberArg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};

/** CPU µs per call of fn over ~`ms` ms of wall time (after a 100 ms warm-up), this thread's user+system time, calling it `batch` times between clock reads. */
export function cpuPerOp(fn, ms, batch = 64) {
  for (let end = performance.now() + 100; performance.now() < end; ) fn();
  globalThis.gc?.();
  let n = 0;
  const start = process.cpuUsage();
  const wallEnd = performance.now() + ms;
  while (performance.now() < wallEnd) {
    for (let i = 0; i < batch; i++) fn();
    n += batch;
  }
  const used = process.cpuUsage(start);
  return (used.user + used.system) / n;
}
