// Ingest benchmark: the encrypted pipeline beside a plaintext baseline, same load, same machine.
//
//   encrypted: `cipherstat serve` as a child process; double-encrypted 100-point batches,
//              202 after the durable (fsynced) chDB insert, then processed in the same
//              process (inner layer opened, encrypted rollups written).
//   plaintext: a Hono + @hono/node-server child that takes the same 100 points as JSON,
//              validates them, inserts them into chDB (MergeTree, same fsync settings) with
//              the same group commit, and answers 202 after the insert.
//
// Both get the same load generator (this process, keep-alive clients, fixed concurrency)
// over the same pre-built, distinct bodies. Results: bench/results/ingest.json.
//
//   node bench/ingest.mjs [--duration 12] [--warmup 3] [--concurrency 64] [--batches 30000]
//                         [--client http|fetch] [--only encrypted|plaintext] [--pin]
//                         [--profile] [--keep] [--cli path/to/collector/dist/cli.js]
//
// --pin      load generator on CPU 0, server child on CPU 1 (default: no pinning, the OS
//            shares both cores; each side's CPU use is measured and printed).
// --profile  runs the collector child with --cpu-prof and prints its top functions.
// --keep     keeps the temporary data directories.
// --cli      another build of the collector (A/B experiments on a scratch copy).
// --role     passed to `cipherstat serve` (`--role ingest`: the ingest ceiling, nothing processed).
// --process-worker 0|1  sets CIPHERSTAT_PROCESS_WORKER for the collector (default: its own default, on).
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fmt, histogramQuantile, parsePrometheus, percentile, processCpuSeconds, progress, systemCpuSeconds, table, writeResult } from './lib.mjs';
import { mulberry32 } from '../test/support/seeded.mjs';

const SELF = fileURLToPath(import.meta.url);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const POINTS_PER_BATCH = 100;
const ADMIN_TOKEN = 'csa_bench_admin_token_0123456789abcdefghijklmnop';

// ---------------------------------------------------------------------------------------------
// Deterministic, realistic points: batch i has the same points in both pipelines.

const METRICS = [
  ['orders', 'counter', 3],
  ['revenue.eur', 'counter', 3],
  ['page.load_ms', 'histogram', 10],
  ['cart.items', 'gauge', 2],
  ['checkout.step', 'counter', 2],
];
const METRIC_PICK = METRICS.flatMap((m) => Array(m[2]).fill(m));
const COUNTRIES = 'DE FR US GB NL ES IT PL SE AT BE CH DK FI IE NO PT CZ CA AU'.split(' ');
const PAGES = [
  '/', '/cart', '/checkout', '/checkout/payment', '/checkout/done', '/search', '/account', '/login', '/c/shoes', '/c/shirts',
  ...Array.from({ length: 40 }, (_, i) => `/p/${1000 + i * 37}`),
];


/** 100 points of batch `i`, timestamps in the 10 s before `baseTime`. */
export function makePoints(i, baseTime) {
  const rnd = mulberry32(i * 2654435761 + 1);
  const points = new Array(POINTS_PER_BATCH);
  for (let id = 0; id < POINTS_PER_BATCH; id++) {
    const [name, kind] = METRIC_PICK[Math.floor(rnd() * METRIC_PICK.length)];
    let value;
    if (name === 'orders') value = 1;
    else if (name === 'revenue.eur') value = Math.round(500 + rnd() * 25000) / 100;
    else if (name === 'page.load_ms') value = Math.round(80 + 4000 * rnd() * rnd());
    else if (name === 'cart.items') value = Math.floor(rnd() * 9);
    else value = 1 + Math.floor(rnd() * 4);
    points[id] = {
      id,
      kind,
      name,
      value,
      time: baseTime - Math.floor(rnd() * 10_000),
      tags: { country: COUNTRIES[Math.floor(rnd() * rnd() * COUNTRIES.length)], page: PAGES[Math.floor(rnd() * rnd() * PAGES.length)] },
    };
  }
  return points;
}

// ---------------------------------------------------------------------------------------------
// Worker: builds bodies for [from, to) and posts them in packed chunks.

async function buildWorker() {
  const { mode, from, to, baseTime, keys } = workerData;
  const chunk = 250;
  let encode;
  if (mode === 'envelope') {
    const P = await import('@cipherstat/protocol');
    const { default: nacl } = await import('tweetnacl');
    const { createPrivateKey, createPublicKey, diffieHellman, randomBytes } = await import('node:crypto');
    // JWK imports: OpenSSL 3's DER decoders cost ~10x more per key (measured ~80-500 µs vs ~7-45 µs).
    const publicKeyObject = (raw) => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
    const BASE = publicKeyObject(Buffer.from([9, ...new Array(31).fill(0)]));
    // Sealed box exactly as @cipherstat/protocol `seal` (ephemeral X25519, nonce = SHA-512(epk || pk)[0..24],
    // XSalsa20-Poly1305), with the two X25519 steps through node:crypto: the load generator is not what
    // is measured, and tweetnacl's scalar multiplication would cost ~1.8 ms per batch.
    const sealFast = (message, recipientPk, recipientKey) => {
      const priv = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: randomBytes(32).toString('base64url'), x: '' }, format: 'jwk' });
      const epk = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: BASE }));
      const shared = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: recipientKey }));
      const key = P.sharedKey(new Uint8Array(32), recipientPk, () => shared);
      if (!key) throw new Error('low-order recipient key');
      return P.concat(epk, nacl.secretbox(message, nacl.hash(P.concat(epk, recipientPk)).subarray(0, 24), key));
    };
    // Self-test against the protocol's own open.
    const probe = P.keyPair();
    const msg = P.utf8('self-test');
    const opened = P.openSeal(sealFast(msg, probe.publicKey, publicKeyObject(probe.publicKey)), probe);
    if (!opened.ok || P.fromUtf8(opened.value) !== 'self-test') throw new Error('fast seal does not match the protocol');

    const accountPk = new Uint8Array(keys.accountPublicKey);
    const collectorPk = new Uint8Array(keys.collectorPublicKey);
    const accountKey = publicKeyObject(accountPk);
    const collectorKey = publicKeyObject(collectorPk);
    const prefix = P.concat(new Uint8Array([0x43, 0x53, P.VERSION, 0]), P.fromHex(keys.collectorKeyId));
    encode = (i) => {
      const points = makePoints(i, baseTime);
      const batchId = randomBytes(16).toString('hex');
      const header = P.encodeHeader({ accountId: keys.accountId, batchId, createdAt: baseTime, sdk: 'bench/1', count: points.length });
      const inner = sealFast(P.encodeInner(keys.accountId, batchId, points), accountPk, accountKey);
      const outer = sealFast(P.concat(new Uint8Array([header.length >> 8, header.length & 0xff]), header, inner), collectorPk, collectorKey);
      return P.concat(prefix, outer);
    };
  } else {
    const enc = new TextEncoder();
    encode = (i) => enc.encode(JSON.stringify(makePoints(i, baseTime)));
  }
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
    parentPort.postMessage({ start, buf, offsets }, [buf.buffer, offsets.buffer]);
  }
}

/** Builds n bodies with one worker per core; prints progress every second. */
async function buildBodies(mode, n, baseTime, keys) {
  const workers = Math.max(1, Math.min(os.cpus().length, 4));
  const bodies = new Array(n);
  let built = 0;
  const t0 = performance.now();
  const tick = setInterval(() => progress(`  built ${fmt(built)}/${fmt(n)} ${mode} bodies (${fmt(built / ((performance.now() - t0) / 1000))}/s)`), 1000);
  try {
    await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const from = Math.floor((n * w) / workers);
        const to = Math.floor((n * (w + 1)) / workers);
        return new Promise((resolve, reject) => {
          const worker = new Worker(SELF, { workerData: { mode, from, to, baseTime, keys } });
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
  progress(`  built ${fmt(n)} ${mode} bodies in ${fmt(secs, 1)} s, ${fmt(bytes / n)} bytes each on average`);
  return { bodies, avgBytes: bytes / n };
}

// ---------------------------------------------------------------------------------------------
// Child: the plaintext Hono → chDB baseline.

async function servePlaintext() {
  const { Hono } = await import('hono');
  const { serve } = await import('@hono/node-server');
  const { Session } = await import('chdb');
  const { pointError } = await import('@cipherstat/protocol');
  const dir = process.env.PLAIN_DATA_DIR;
  const session = new Session(dir, { connectionArgs: ['--async_load_databases=0'] });
  await session.queryAsync('CREATE DATABASE IF NOT EXISTS plain');
  // Same durability as the collector's batches table: a 202 means fsynced.
  await session.queryAsync(`CREATE TABLE IF NOT EXISTS plain.points (
    time DateTime64(3, 'UTC'),
    name LowCardinality(String),
    kind LowCardinality(String),
    value Float64,
    tags Map(LowCardinality(String), String)
  ) ENGINE = MergeTree ORDER BY (name, time)
  SETTINGS fsync_after_insert = 1, fsync_part_directory = 1`);

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
    let rows = '';
    let rejected = 0;
    for (const p of points) {
      if (p === null || typeof p !== 'object' || pointError(p, now)) {
        rejected++;
        continue;
      }
      rows += JSON.stringify({ time: p.time, name: p.name, kind: p.kind, value: p.value, tags: p.tags }) + '\n';
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

async function diskUsage(dir, database) {
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
  for (const { table } of asIngested) await q(`OPTIMIZE TABLE ${database}.${table} FINAL`);
  const optimized = await parts();
  s.close();
  process.stdout.write(JSON.stringify({ asIngested, optimized }) + '\n');
}

// ---------------------------------------------------------------------------------------------
// Orchestrator helpers.

const children = new Set();
function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function startChild(name, args, env, { pin } = {}) {
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

async function waitReady(url, child, path, timeoutMs = 60_000) {
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

async function stopChild(child, timeoutMs = 30_000) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exited;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const r = await child.exited;
  clearTimeout(timer);
  children.delete(child);
  return r;
}

async function runChildJson(args) {
  const child = startChild('disk', args, {}, {});
  let out = '';
  child.stdout.removeAllListeners('data');
  child.stdout.on('data', (c) => (out += c));
  const { code } = await child.exited;
  children.delete(child);
  if (code !== 0) throw new Error(`${args.join(' ')} exited with ${code}:\n${child.tail.join('\n')}`);
  return JSON.parse(out.trim().split('\n').at(-1));
}

/** A sender: POSTs a body and resolves with the status once the response has been read. */
function makeSender(kind, url, path, contentType, concurrency) {
  if (kind === 'fetch') {
    const target = url + path;
    const headers = { 'content-type': contentType };
    return async (body) => {
      const r = await fetch(target, { method: 'POST', headers, body });
      await r.arrayBuffer();
      return r.status;
    };
  }
  const { hostname, port } = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  return (body) =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { hostname, port, path, method: 'POST', agent, headers: { 'content-type': contentType, 'content-length': body.length } },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => resolve(res.statusCode));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
}

async function scrape(url) {
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
    writerQueue: get('cipherstat_ingest_queue_batches'),
    processQueue: get('cipherstat_process_queue_batches'),
  };
}

/**
 * Sends bodies with `concurrency` clients for warmupMs + durationMs. A batch counts when
 * answered 202, inside the window when its 202 arrives inside it; latencies of requests
 * started inside the window.
 */
async function runLoad({ name, send, bodies, warmupMs, durationMs, concurrency, serverPid, onWindowStart, onTick }) {
  const t0 = performance.now();
  const windowStart = t0 + warmupMs;
  const windowEnd = windowStart + durationMs;
  const latencies = new Float64Array(bodies.length);
  let nLat = 0;
  let next = 0;
  let acked = 0;
  let ackedInWindow = 0;
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
  let lastTick = { at: t0, acked: 0 };
  const ticker = setInterval(async () => {
    const now = performance.now();
    const inst = ((acked - lastTick.acked) * POINTS_PER_BATCH) / ((now - lastTick.at) / 1000);
    lastTick = { at: now, acked };
    const phase = now < windowStart ? 'warm-up' : 'measure';
    const avg = now >= windowStart ? `, window avg ${fmt((ackedInWindow * POINTS_PER_BATCH) / ((now - windowStart) / 1000))} pts/s` : '';
    const extra = onTick ? await onTick(now).catch(() => '') : '';
    const errs = Object.keys(errors).length || Object.keys(statuses).some((s) => s !== '202') ? `, other: ${JSON.stringify({ ...statuses, 202: undefined, ...errors })}` : '';
    progress(`  ${name} ${phase} ${fmt((now - t0) / 1000, 0)} s: acked ${fmt(inst)} pts/s${avg}${extra}${errs}`);
  }, 1000);

  const client = async () => {
    for (;;) {
      const start = performance.now();
      if (start >= windowEnd) return;
      const i = next++;
      if (i >= bodies.length) {
        exhausted = true;
        return;
      }
      let status;
      try {
        status = await send(bodies[i]);
      } catch (e) {
        errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const end = performance.now();
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status !== 202) {
        if (status === 429 || status === 503) await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      acked++;
      lastAck = end;
      if (end >= windowStart && end <= windowEnd) {
        ackedInWindow++;
        if (!firstWindowAck) firstWindowAck = end;
        lastWindowAck = end;
      }
      if (start >= windowStart) latencies[nLat++] = end - start;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
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
  if (exhausted) progress(`  ${name}: ran out of pre-built bodies after ${fmt(acked)} batches; raise --batches (window shortened to ${fmt(windowSec, 1)} s)`);
  return {
    windowSec,
    exhausted,
    batchesSent: next,
    batchesAcked: acked,
    batchesAckedInWindow: ackedInWindow,
    pointsPerSecAcked: (ackedInWindow * POINTS_PER_BATCH) / windowSec,
    ackMs: { p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), max: lat.at(-1) },
    statuses,
    errors,
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
async function loadPipeline(o, name, send, bodies, serverPid, hooks = {}) {
  const pre = await send(bodies[bodies.length - 1]);
  if (pre !== 202) throw new Error(`preflight batch answered ${pre}`);
  bodies.pop();
  progress(`${name} pipeline: load (${o.warmup} s warm-up + ${o.duration} s measured, ${o.concurrency} concurrent ${o.client} clients)`);
  pinSelf(o.pin ? '0' : undefined);
  return runLoad({ name, send, bodies, warmupMs: o.warmup * 1000, durationMs: o.duration * 1000, concurrency: o.concurrency, serverPid, ...hooks });
}

/** Top functions of a V8 .cpuprofile: self time and inclusive time per function. */
function summarizeProfile(file, window, top = 20) {
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

// ---------------------------------------------------------------------------------------------
// The two pipelines.

async function encryptedPipeline(o, tmp) {
  progress('encrypted pipeline: starting the collector child');
  const dataDir = join(tmp, 'collector');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const profDir = join(tmp, 'profile');
  const args = [...(o.profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []), o.cli, 'serve', ...(o.role ? ['--role', o.role] : [])];
  const child = startChild(
    'collector',
    args,
    {
      PORT: String(port),
      HOST: '127.0.0.1',
      CIPHERSTAT_DATA_DIR: dataDir,
      CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN,
      CIPHERSTAT_RATE_LIMIT: '1000000',
      // one load generator stands for many senders: no per-address budget
      CIPHERSTAT_IP_RATE_LIMIT: '1000000',
      CIPHERSTAT_IP_BYTE_RATE: String(1 << 30),
      CIPHERSTAT_LOG_LEVEL: 'warn',
      ...(o.processWorker !== undefined ? { CIPHERSTAT_PROCESS_WORKER: o.processWorker } : {}),
    },
    { pin: o.pin ? { cpu: 1 } : undefined },
  );
  try {
    await waitReady(url, child, '/readyz');
    const res = await fetch(url + '/v1/accounts', {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: '{}',
    });
    if (res.status !== 201) throw new Error(`create account: ${res.status} ${await res.text()}`);
    const account = await res.json();
    progress(`encrypted pipeline: collector ready at ${url}, account ${account.accountId}; pre-building ${fmt(o.batches)} envelopes`);
    const keys = {
      accountId: account.accountId,
      accountPublicKey: Buffer.from(account.writeKey, 'base64'),
      collectorKeyId: account.collectorKey.keyId,
      collectorPublicKey: Buffer.from(account.collectorKey.publicKey, 'base64'),
    };
    const { bodies, avgBytes } = await buildBodies('envelope', o.batches, Date.now(), keys);

    const send = makeSender(o.client, url, '/v1/batches', 'application/octet-stream', o.concurrency);
    let atStart;
    let lastScrape;
    const load = await loadPipeline(o, 'encrypted', send, bodies, child.pid, {
      onWindowStart: async () => {
        atStart = await scrape(url);
      },
      onTick: async () => {
        const s = await scrape(url);
        const prev = lastScrape;
        lastScrape = s;
        if (!prev) return '';
        return `, processed ${fmt((s.processed - prev.processed) / ((s.at - prev.at) / 1000))} pts/s, queues ingest ${s.writerQueue} / process ${s.processQueue} batches`;
      },
    });
    const atEnd = await scrape(url);
    pinSelf(o.pin ? '0-' + (os.cpus().length - 1) : undefined);
    progress(`encrypted pipeline: load stopped; waiting for processing to catch up (${fmt(atEnd.processQueue)} batches queued)`);
    const want = load.batchesAcked + 1; // + preflight
    let final = atEnd;
    const drainStart = performance.now();
    while (o.role !== 'ingest' && final.lagCount < want && performance.now() - drainStart < o.drainTimeout * 1000) {
      await new Promise((r) => setTimeout(r, 100));
      final = await scrape(url);
    }
    const drained = final.lagCount >= want;
    const drainSec = (performance.now() - load.lastAck) / 1000;
    progress(`encrypted pipeline: ${drained ? 'all processed' : 'NOT all processed'} ${fmt(drainSec, 2)} s after the last 202 (${fmt(final.lagCount)}/${fmt(want)} batches)`);

    const lagBuckets = final.lag.map((b, i) => ({ le: b.le, count: b.count - (atStart?.lag[i]?.count ?? 0) }));
    const lagCount = lagBuckets.at(-1)?.count ?? 0;
    const within2s = lagBuckets.find((b) => b.le === 2)?.count ?? NaN;
    const windowSec = load.windowSec;
    const result = {
      url,
      envelopeBytes: avgBytes,
      ...load,
      pointsPerSecProcessed: o.role === 'ingest' ? NaN : atStart ? (atEnd.processed - atStart.processed) / ((atEnd.at - atStart.at) / 1000) : NaN,
      pointsAcked: (load.batchesAcked + 1) * POINTS_PER_BATCH,
      pointsProcessed: final.processed,
      pointsRejected: final.rejected,
      lagSec: {
        p50: histogramQuantile(lagBuckets, 0.5),
        p95: histogramQuantile(lagBuckets, 0.95),
        p99: histogramQuantile(lagBuckets, 0.99),
        mean: (final.lagSum - (atStart?.lagSum ?? 0)) / Math.max(1, lagCount),
        shareWithin2s: within2s / Math.max(1, lagCount),
        batches: lagCount,
      },
      drainedAfterLastAckSec: drained ? drainSec : null,
      insertMs: {
        batchesMean: (1000 * (atEnd.insertBatchesSum - atStart.insertBatchesSum)) / Math.max(1, atEnd.insertBatchesCount - atStart.insertBatchesCount),
        batchesInserts: atEnd.insertBatchesCount - atStart.insertBatchesCount,
        rollupsMean: (1000 * (atEnd.insertRollupsSum - atStart.insertRollupsSum)) / Math.max(1, atEnd.insertRollupsCount - atStart.insertRollupsCount),
        rollupsInserts: atEnd.insertRollupsCount - atStart.insertRollupsCount,
      },
      batchesPerInsert: ((atEnd.accepted - atStart.accepted) / Math.max(1, atEnd.insertBatchesCount - atStart.insertBatchesCount)),
      windowSecUsed: windowSec,
    };
    progress('encrypted pipeline: stopping the collector');
    const stopped = await stopChild(child);
    if (stopped.code !== 0) progress(`  collector exited with ${stopped.code ?? stopped.signal}`);
    if (o.profile) {
      // Main thread only (tid 0 in CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile; the tick worker writes its own).
      const files = readdirSync(profDir).filter((f) => /\.0\.\d+\.cpuprofile$/.test(f));
      if (files.length) {
        // Outside the temporary directory, so it survives the cleanup (open it in Chrome DevTools).
        const file = join(os.tmpdir(), 'cipherstat-ingest-collector.cpuprofile');
        copyFileSync(join(profDir, files[0]), file);
        result.profile = { file, ...summarizeProfile(file, { startUs: load.windowStartHrUs, endUs: load.windowEndHrUs }) };
      }
    }
    progress('encrypted pipeline: measuring bytes on disk');
    result.disk = await runChildJson([SELF, '--disk-usage', join(dataDir, 'clickhouse'), 'cipherstat']);
    return result;
  } finally {
    await stopChild(child, 5000);
  }
}

async function plaintextPipeline(o, tmp) {
  progress('plaintext pipeline: starting the Hono → chDB child');
  const dataDir = join(tmp, 'plain');
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = startChild('plaintext', [SELF, '--serve-plaintext'], { PORT: String(port), PLAIN_DATA_DIR: dataDir }, { pin: o.pin ? { cpu: 1 } : undefined });
  try {
    await waitReady(url, child, '/healthz');
    progress(`plaintext pipeline: ready at ${url}; pre-building ${fmt(o.batches)} JSON bodies (the same points)`);
    const { bodies, avgBytes } = await buildBodies('json', o.batches, Date.now());
    const send = makeSender(o.client, url, '/v1/points', 'application/json', o.concurrency);
    const load = await loadPipeline(o, 'plaintext', send, bodies, child.pid);
    pinSelf(o.pin ? '0-' + (os.cpus().length - 1) : undefined);
    const result = {
      url,
      bodyBytes: avgBytes,
      ...load,
      // A 202 comes after the insert: acknowledged points are queryable.
      pointsPerSecProcessed: load.pointsPerSecAcked,
      pointsAcked: (load.batchesAcked + 1) * POINTS_PER_BATCH,
      lagSec: { p50: 0, p95: 0 },
    };
    progress('plaintext pipeline: stopping the server');
    await stopChild(child);
    progress('plaintext pipeline: measuring bytes on disk');
    result.disk = await runChildJson([SELF, '--disk-usage', dataDir, 'plain']);
    return result;
  } finally {
    await stopChild(child, 5000);
  }
}

/** Which collector was measured: commit, uncommitted files, and whether dist is older than src. */
function buildInfo(cli) {
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

function pinSelf(cpus) {
  if (!cpus) return;
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) progress(`  taskset failed: ${r.stderr}`);
}

function diskSummary(disk, points) {
  const sum = (rows) => rows.reduce((s, r) => s + Number(r.bytes), 0);
  const perTable = (rows) => Object.fromEntries(rows.map((r) => [r.table, { bytes: Number(r.bytes), rows: Number(r.rows), parts: Number(r.parts), bytesPerPoint: Number(r.bytes) / points }]));
  return {
    points,
    asIngested: { bytes: sum(disk.asIngested), bytesPerPoint: sum(disk.asIngested) / points, tables: perTable(disk.asIngested) },
    optimized: { bytes: sum(disk.optimized), bytesPerPoint: sum(disk.optimized) / points, tables: perTable(disk.optimized) },
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '12' },
      warmup: { type: 'string', default: '3' },
      concurrency: { type: 'string', default: '64' },
      batches: { type: 'string', default: '30000' },
      client: { type: 'string', default: 'http' },
      only: { type: 'string' },
      'drain-timeout': { type: 'string', default: '60' },
      cli: { type: 'string', default: 'services/collector/dist/cli.js' },
      role: { type: 'string' },
      'process-worker': { type: 'string' },
      pin: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  });
  const o = {
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    concurrency: Number(values.concurrency),
    batches: Number(values.batches),
    client: values.client === 'fetch' ? 'fetch' : 'http',
    drainTimeout: Number(values['drain-timeout']),
    cli: values.cli,
    role: values.role,
    processWorker: values['process-worker'],
    pin: values.pin,
    profile: values.profile,
  };
  const tmp = mkdtempSync(join(os.tmpdir(), 'cipherstat-bench-ingest-'));
  // Everything is bounded: a watchdog ends the run (and the children) if something hangs.
  const watchdog = setTimeout(() => {
    console.error('ingest bench: watchdog fired (run took too long); killing children');
    killAll();
    process.exit(2);
  }, (2 * (o.warmup + o.duration + o.drainTimeout) + 300) * 1000);
  watchdog.unref();
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => (killAll(), process.exit(130)));

  const build = buildInfo(o.cli);
  if (build.stale) progress(`WARNING: ${build.stale}`);
  progress(`ingest bench: ${os.cpus().length} cores, ${o.pin ? 'load generator pinned to CPU 0, server child to CPU 1' : 'no CPU pinning (OS shares both cores; CPU use of each side is measured)'}; data in ${tmp}`);
  const results = {};
  try {
    if (values.only !== 'plaintext') results.encrypted = await encryptedPipeline(o, tmp);
    globalThis.gc?.(); // drop the encrypted bodies before building the plaintext ones
    if (values.only !== 'encrypted') results.plaintext = await plaintextPipeline(o, tmp);
  } finally {
    if (!values.keep) rmSync(tmp, { recursive: true, force: true });
    else progress(`kept ${tmp}`);
  }

  const e = results.encrypted;
  const p = results.plaintext;
  // End to end = acknowledged and processed; with --role ingest nothing is processed (ingest ceiling).
  const e2e = (r) => (r ? (o.role === 'ingest' && r === e ? r.pointsPerSecAcked : Math.min(r.pointsPerSecAcked, r.pointsPerSecProcessed)) : NaN);
  const ratio = e && p ? e2e(e) / e2e(p) : NaN;
  for (const r of [e, p]) {
    if (!r) continue;
    r.diskSummary = diskSummary(r.disk, r.pointsAcked);
    r.pointsPerSecEndToEnd = e2e(r);
    r.serverCpuMicrosPerPoint = (r.serverCpuCores * 1e6) / e2e(r);
  }
  const row = (name, r, isEnc) => ({
    pipeline: name,
    'pts/s acked': fmt(r.pointsPerSecAcked),
    'pts/s e2e': fmt(e2e(r)),
    'ratio e2e': isEnc ? (Number.isFinite(ratio) ? fmt(ratio, 2) + '×' : '-') : '1.00×',
    'ack p50 ms': fmt(r.ackMs.p50, 1),
    'ack p99 ms': fmt(r.ackMs.p99, 1),
    'lag p50/p95 s': isEnc ? (o.role === 'ingest' ? 'n/a' : `${fmt(r.lagSec.p50, 2)} / ${fmt(r.lagSec.p95, 2)}`) : '0 (202 after insert)',
    'B/point': `${fmt(r.diskSummary.asIngested.bytesPerPoint, 1)} (${fmt(r.diskSummary.optimized.bytesPerPoint, 1)} opt.)`,
    'srv CPU µs/pt': fmt((r.serverCpuCores * 1e6) / e2e(r), 1),
    'CPU srv/gen/other': `${fmt(r.serverCpuCores, 2)} / ${fmt(r.loadgenCpuCores, 2)} / ${fmt(r.otherCpuCores, 2)}`,
  });
  console.log('');
  table([...(e ? [row(o.role === 'ingest' ? 'encrypted, ingest role only' : 'encrypted (collector)', e, true)] : []), ...(p ? [row('plaintext Hono→chDB', p, false)] : [])]);
  console.log('CPU columns: server CPU time per end-to-end point; cores used during the measured window by the server child / the load generator / everything else on the machine.');
  const noisy = [e, p].filter((r) => r && r.otherCpuCores > 0.2);
  if (noisy.length) console.log(`WARNING: other processes used ${noisy.map((r) => fmt(r.otherCpuCores, 2)).join(' / ')} cores during the run; the numbers are skewed. Re-run on a quiet machine.`);
  console.log('');
  const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
  const targets = {};
  if (e && o.role !== 'ingest') {
    targets.throughput = { target: '>= 100k points/s end to end', value: e2e(e), pass: e2e(e) >= 100_000 };
    targets.freshness = { target: 'processing lag p95 <= 2 s', value: e.lagSec.p95, pass: e.lagSec.p95 <= 2 && e.drainedAfterLastAckSec !== null };
    console.log(`target ≥ 100k points/s end to end: ${fmt(e2e(e))} → ${verdict(targets.throughput.pass)}`);
    console.log(`target freshness p95 ≤ 2 s: p95 ${fmt(e.lagSec.p95, 2)} s, ${fmt(100 * e.lagSec.shareWithin2s, 1)}% of batches ≤ 2 s, all processed ${e.drainedAfterLastAckSec === null ? 'NOT within timeout' : `${fmt(e.drainedAfterLastAckSec, 2)} s after the last 202`} → ${verdict(targets.freshness.pass)}`);
    console.log(`  collector: ${fmt(e.batchesPerInsert, 1)} batches per group-commit insert, insert mean ${fmt(e.insertMs.batchesMean, 1)} ms; rollup insert mean ${fmt(e.insertMs.rollupsMean, 1)} ms`);
  }
  if (e && p) {
    targets.ratio = { target: '>= 0.5x plaintext', value: ratio, pass: ratio >= 0.5 };
    console.log(`target ≥ 0.5× plaintext: ${fmt(ratio, 2)}× → ${verdict(targets.ratio.pass)}`);
  }
  for (const [name, r] of [['encrypted', e], ['plaintext', p]]) {
    if (!r) continue;
    const t = Object.entries(r.diskSummary.asIngested.tables).map(([k, v]) => `${k} ${fmt(v.bytesPerPoint, 2)}`).join(', ');
    console.log(`bytes on disk per point, ${name}: ${fmt(r.diskSummary.asIngested.bytesPerPoint, 1)} as ingested (${t}); ${fmt(r.diskSummary.optimized.bytesPerPoint, 1)} after OPTIMIZE FINAL`);
  }
  if (e?.profile) {
    console.log(`\ncollector CPU profile (main thread, ${e.profile.scope}, ${fmt(e.profile.durationSec, 1)} s, busy ${e.profile.busyPct}%): ${e.profile.file}`);
    table(e.profile.self.slice(0, 15).map((x, i) => ({ 'self %': x.pct, function: x.fn.slice(0, 110), 'incl %': e.profile.inclusive[i]?.pct, 'inclusive function': e.profile.inclusive[i]?.fn.slice(0, 80) })));
  }
  for (const r of [e, p]) if (r) delete r.disk;
  writeResult('ingest', {
    options: { ...o, pointsPerBatch: POINTS_PER_BATCH, cpuSplit: o.pin ? 'loadgen CPU 0, server CPU 1' : 'unpinned' },
    build,
    targets,
    ratio,
    encrypted: e,
    plaintext: p,
  });
  clearTimeout(watchdog);
}

// ---------------------------------------------------------------------------------------------

const isEntry = process.argv[1] && fileURLToPath(new URL(`file://${process.argv[1]}`)) === SELF;
if (!isMainThread) {
  if (workerData?.mode) await buildWorker();
} else if (!isEntry) {
  // imported (makePoints): nothing to run
} else if (process.argv[2] === '--serve-plaintext') {
  await servePlaintext();
} else if (process.argv[2] === '--disk-usage') {
  await diskUsage(process.argv[3], process.argv[4]);
} else {
  try {
    await main();
  } catch (err) {
    console.error(`ingest bench failed: ${err?.stack ?? err}`);
    killAll();
    process.exit(1);
  }
}
