// Abuse benchmark: a noisy-neighbour run on one collector (issue 10).
//
// Tenant B sends well-formed storefront batches at a steady rate through the whole run. In
// turn, and then together, (a) an anonymous client floods garbage and maximum-size junk,
// (b) tenant A sends maximum-cardinality batches as fast as it is allowed (honouring
// Retry-After), (c) a read token of A runs the heaviest legal query in a loop. Per phase:
// B's acknowledged share (first try or after one Retry-After), B's ack p50/p99 against its
// quiet baseline of the same run, B's freshness p95 (202 → visible in a query), /healthz p99,
// and what A and the flooder got. Results: bench/results/abuse.json.
//
//   node bench/abuse.mjs [--phase 10] [--gap 3] [--rate 20] [--seed-minutes 100] [--keep]
//     [--node-args='--cpu-prof --cpu-prof-dir=/tmp/prof']   (flags for the collector's node)
//
// Loopback only (B from 127.0.0.1, the flooder from 127.0.0.2, A from 127.0.0.3, so
// per-address limits see three senders); every loop is bounded by the phase clock and a
// watchdog ends the run.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { sealBatch, toHex } from '@cipherstat/protocol';
import { fmt, freePort, killAll, parsePrometheus, percentile, progress, startChild, stopChild, table, waitReady, writeResult } from './lib.mjs';
import { makePoints } from './ingest.mjs';

const ADMIN_TOKEN = 'csa_bench_admin_token_0123456789abcdefghijklmnop';
const CLI = 'services/collector/dist/cli.js';
const B_POINTS = 20;
const TARGETS = { ackedPct: 99, p99Ratio: 3, freshnessP95Ms: 2000, healthzP99Ms: 100 };

const { values: opt } = parseArgs({
  options: {
    phase: { type: 'string', default: '10' },
    gap: { type: 'string', default: '3' },
    rate: { type: 'string', default: '20' },
    'seed-minutes': { type: 'string', default: '100' },
    keep: { type: 'boolean', default: false },
    'node-args': { type: 'string', default: '' },
  },
});
const PHASE_MS = Number(opt.phase) * 1000;
const GAP_MS = Number(opt.gap) * 1000;
const B_RATE = Number(opt.rate);
const PHASES = [
  { name: 'quiet', flood: false, cardinality: false, query: false },
  { name: 'flood', flood: true, cardinality: false, query: false },
  { name: 'cardinality', flood: false, cardinality: true, query: false },
  { name: 'query', flood: false, cardinality: false, query: true },
  { name: 'together', flood: true, cardinality: true, query: true },
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One HTTP client per actor (its own keep-alive pool and source address). */
function client(url, localAddress, maxSockets) {
  const { hostname, port } = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets, localAddress });
  return (method, path, body, headers = {}) =>
    new Promise((resolve) => {
      const t0 = performance.now();
      const req = http.request({ hostname, port, path, method, agent, localAddress, headers: { ...headers, ...(body ? { 'content-length': body.length } : {}) } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0, retryAfter: Number(res.headers['retry-after'] ?? 0), timing: res.headers['server-timing'], body: Buffer.concat(chunks) }));
        res.on('error', () => resolve({ status: 'error', ms: performance.now() - t0, retryAfter: 0, body: Buffer.alloc(0) }));
      });
      req.on('error', (e) => resolve({ status: e.code ?? 'error', ms: performance.now() - t0, retryAfter: 0, body: Buffer.alloc(0) }));
      req.end(body);
    });
}

const keysOf = (a) => ({
  accountPublicKey: Buffer.from(a.writeKey, 'base64'),
  collectorKeyId: a.collectorKey.keyId,
  collectorPublicKey: Buffer.from(a.collectorKey.publicKey, 'base64'),
});
const seal = (a, points) => sealBatch({ accountId: a.accountId, batchId: toHex(randomBytes(16)), createdAt: Date.now(), sdk: 'bench-abuse/1' }, points, keysOf(a));

/** B's batch i: 20 storefront points and one `bench.batch` point (counts B's batches once processed). */
function bBatch(b, i) {
  const now = Date.now();
  const points = makePoints(i, now).slice(0, B_POINTS);
  points.push({ id: B_POINTS, kind: 'counter', name: 'bench.batch', value: 1, time: now, tags: {} });
  return seal(b, points);
}

/** A's maximum-cardinality batch under the default 64 KiB body cap: 350 points, each a new series (3 random tag values). */
function cardinalityBatch(a, i) {
  const now = Date.now();
  const rnd = () => randomBytes(12).toString('base64');
  const points = Array.from({ length: 350 }, (_, id) => ({
    id, kind: 'counter', name: `card.m${(i * 7 + id) % 50}`, value: 1, time: now - 1000,
    tags: { a: rnd(), b: rnd(), c: rnd() },
  }));
  return seal(a, points);
}

/** A's history for the heavy query: half `half` of 1200 series for one minute bucket of one histogram (600 points). */
function seedBatch(a, minute, half, now) {
  const t = now - (minute + 1) * 60_000;
  const points = Array.from({ length: 600 }, (_, id) => ({ id, kind: 'histogram', name: 'seed.load_ms', value: 50 + ((id * 37 + minute) % 2000), time: t, tags: { item: `i${half * 600 + id}` } }));
  return seal(a, points);
}

async function scrape(url) {
  const rows = parsePrometheus(await (await fetch(url + '/metrics')).text());
  const get = (name, labels = {}) => rows.find((r) => r.name === name && Object.entries(labels).every(([k, v]) => r.labels[k] === v))?.value ?? 0;
  return {
    processed: get('cipherstat_points_total', { outcome: 'processed' }),
    rejected: get('cipherstat_points_total', { outcome: 'rejected' }),
    processQueue: get('cipherstat_process_queue_batches'),
    // Since the previous scrape (prom-client resets the event-loop histogram on every scrape).
    loopP99Ms: get('nodejs_eventloop_lag_p99_seconds') * 1000,
    loopMaxMs: get('nodejs_eventloop_lag_max_seconds') * 1000,
    // Cumulative: the collector's CPU (all threads, chDB's included) and the batches table's inserts.
    cpuSec: get('process_cpu_seconds_total'),
    batchInsertSec: get('cipherstat_storage_insert_seconds_sum', { table: 'batches' }),
    batchInserts: get('cipherstat_storage_insert_seconds_count', { table: 'batches' }),
  };
}

const count = (m, k) => (m[k] = (m[k] ?? 0) + 1);

/**
 * CPU seconds of the collector's main thread (its HTTP, storage I/O and JSON; Linux
 * /proc/<pid>/task/<pid>/stat, utime + stime in clock ticks of 10 ms) and of the whole process:
 * CPU time, not wall time, so a loaded machine stretches it far less than latencies. NaN elsewhere.
 */
function cpuOf(pid) {
  const ticks = (path) => {
    try {
      const text = readFileSync(path, 'utf8');
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15 (utime, stime)
    } catch {
      return NaN;
    }
  };
  // Threads running at a positive nice value: the query workers (CIPHERSTAT_QUERY_WORKER_NICE).
  let nicedSec = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const v = f.slice(f.lastIndexOf(')') + 2).split(' ');
        if (Number(v[16]) > 0) nicedSec += (Number(v[11]) + Number(v[12])) / 100; // nice (field 19), utime + stime
      } catch {
        // the thread ended
      }
    }
  } catch {
    nicedSec = NaN;
  }
  return { mainSec: ticks(`/proc/${pid}/task/${pid}/stat`), processSec: ticks(`/proc/${pid}/stat`), nicedSec };
}

async function main() {
  const watchdog = setTimeout(() => {
    console.error('abuse bench: watchdog fired; killing the collector');
    killAll();
    process.exit(2);
  }, 15 * 60_000 + PHASES.length * (PHASE_MS + GAP_MS));
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => (killAll(), process.exit(130)));

  const tmp = mkdtempSync(join(os.tmpdir(), 'cipherstat-abuse-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = startChild('collector', [...opt['node-args'].split(' ').filter(Boolean), CLI, 'serve'], { PORT: String(port), HOST: '127.0.0.1', CIPHERSTAT_DATA_DIR: join(tmp, 'data'), CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'warn' });
  try {
    await waitReady(url, child, '/readyz');
    const admin = async (body) => {
      const r = await fetch(url + '/v1/accounts', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (r.status !== 201) throw new Error(`create account: ${r.status}`);
      return r.json();
    };
    const A = await admin({});
    const B = await admin({});
    progress(`collector at ${url} (defaults: no limit configured by this bench); tenants A ${A.accountId}, B ${B.accountId}`);

    const bSend = client(url, '127.0.0.1', 64);
    const aSend = client(url, '127.0.0.3', 8);
    const floodSend = client(url, '127.0.0.2', 8);
    const probe = client(url, '127.0.0.1', 2);

    // A's history: the heavy query reads ~120,000 minute rows (default --seed-minutes 100).
    const SEED_MINUTES = Number(opt['seed-minutes']);
    const seedNow = Date.now();
    progress(`seeding A: ${SEED_MINUTES * 2} batches of 600 points (1200 series × ${SEED_MINUTES} minutes)`);
    for (let k = 0; k < SEED_MINUTES * 2; k++) {
      const body = seedBatch(A, k >> 1, k & 1, seedNow);
      for (;;) {
        const r = await aSend('POST', '/v1/batches', body, { 'content-type': 'application/octet-stream' });
        if (r.status === 202) break;
        await sleep(Math.max(1, r.retryAfter) * 1000);
      }
    }
    for (let i = 0; i < 600; i++) {
      const s = await scrape(url);
      if (s.processQueue === 0 && s.processed >= SEED_MINUTES * 1200) break;
      await sleep(500);
    }
    const heavyQuery = Buffer.from(JSON.stringify({ metric: 'seed.load_ms', aggregation: 'p99', interval: 'minute', from: seedNow - (SEED_MINUTES + 1) * 60_000, to: seedNow }));
    const q0 = await aSend('POST', '/v1/query', heavyQuery, { authorization: `Bearer ${A.readToken}`, 'content-type': 'application/json' });
    const q0meta = q0.status === 200 ? JSON.parse(q0.body).meta : {};
    progress(`heavy query: ${q0.status}, ${fmt(q0meta.rows ?? 0)} rows, ${fmt(q0.ms)} ms alone (${q0.timing ?? ''})`);
    // The heavy query alone, three times (other aggregations: not answered from the cache): how
    // much CPU the collector's main thread spent on it (load-insensitive where wall time is not).
    const alone = [];
    for (const aggregation of ['p95', 'p90', 'p50']) {
      const body = Buffer.from(JSON.stringify({ ...JSON.parse(heavyQuery), aggregation }));
      const c0 = cpuOf(child.pid);
      const r = await aSend('POST', '/v1/query', body, { authorization: `Bearer ${A.readToken}`, 'content-type': 'application/json' });
      const c1 = cpuOf(child.pid);
      alone.push({ status: r.status, ms: r.ms, mainCpuMs: (c1.mainSec - c0.mainSec) * 1000, cpuMs: (c1.processSec - c0.processSec) * 1000, timing: r.timing });
      await sleep(300);
    }
    const median = (xs) => percentile([...xs].sort((x, y) => x - y), 0.5);
    const aloneSummary = { wallMs: median(alone.map((x) => x.ms)), mainCpuMs: median(alone.map((x) => x.mainCpuMs)), cpuMs: median(alone.map((x) => x.cpuMs)) };
    progress(`heavy query alone ×3 (median): ${fmt(aloneSummary.wallMs)} ms wall, collector main-thread CPU ${fmt(aloneSummary.mainCpuMs)} ms, collector CPU (all threads) ${fmt(aloneSummary.cpuMs)} ms`);

    // Pre-built bodies (building is not measured).
    const total = Math.ceil(((PHASE_MS + GAP_MS) * PHASES.length + GAP_MS * 2) / 1000 * B_RATE) + 20;
    progress(`building ${total} B batches and 60 cardinality batches of A`);
    const bBodies = Array.from({ length: total }, (_, i) => bBatch(B, i));
    const cardBodies = Array.from({ length: 60 }, (_, i) => cardinalityBatch(A, i));
    const junk = [
      { type: 'application/octet-stream', body: randomBytes(2048) },
      { type: 'application/octet-stream', body: randomBytes(64 * 1024) },
      { type: 'application/octet-stream', body: randomBytes(1024 * 1024) },
      { type: 'text/plain', body: Buffer.alloc(1_400_000, 'A') },
    ];

    // ---- the run ----
    const t0 = performance.now();
    const schedule = PHASES.map((p, i) => ({ ...p, start: GAP_MS + i * (PHASE_MS + GAP_MS), end: GAP_MS + i * (PHASE_MS + GAP_MS) + PHASE_MS }));
    const runEnd = schedule.at(-1).end + GAP_MS;
    const now = () => performance.now() - t0;
    const phaseAt = (t) => schedule.find((p) => t >= p.start && t < p.end);
    const stats = Object.fromEntries(PHASES.map((p) => [p.name, { b: [], healthz: [], a: {}, aQuery: {}, aQueryMs: [], aQueryTiming: [], flood: {}, floodBytes: 0, server: {} }]));
    const bAcks = []; // { at, phase }

    // B: steady rate, open loop; one retry after Retry-After.
    const bDone = [];
    const bLoop = (async () => {
      for (let i = 0; ; i++) {
        const at = (i * 1000) / B_RATE;
        if (at >= runEnd || i >= bBodies.length) break;
        const wait = at - now();
        if (wait > 0) await sleep(wait);
        const phase = phaseAt(now());
        const body = bBodies[i];
        bDone.push((async () => {
          const first = await bSend('POST', '/v1/batches', body, { 'content-type': 'application/octet-stream' });
          const rec = { phase: phase?.name, firstMs: first.ms, firstStatus: first.status, outcome: 'failed' };
          if (first.status === 202) rec.outcome = 'first';
          else if (first.status === 429 || first.status === 503) {
            await sleep(Math.max(1, first.retryAfter) * 1000);
            const second = await bSend('POST', '/v1/batches', body, { 'content-type': 'application/octet-stream' });
            if (second.status === 202) rec.outcome = 'retry';
          }
          if (rec.outcome !== 'failed') bAcks.push({ at: now(), phase: rec.phase });
          if (phase) stats[phase.name].b.push(rec);
        })());
      }
    })();

    // /healthz prober: sequential.
    const healthLoop = (async () => {
      while (now() < runEnd) {
        const r = await probe('GET', '/healthz');
        const p = phaseAt(now() - r.ms);
        if (p) stats[p.name].healthz.push(r.status === 200 ? r.ms : Infinity);
        await sleep(20);
      }
    })();

    // B's freshness: how many of B's batches are visible in a query, over time.
    const visible = []; // { at, n }
    const bQuery = Buffer.from(JSON.stringify({ metric: 'bench.batch', aggregation: 'sum', interval: 'hour', from: Date.now() - 2 * 3_600_000, to: Date.now() + 3 * 3_600_000 }));
    const pollLoop = async (until, enough = () => false) => {
      while (now() < until && !enough()) {
        const r = await probe('POST', '/v1/query', bQuery, { authorization: `Bearer ${B.readToken}`, 'content-type': 'application/json' });
        if (r.status === 200) {
          const n = JSON.parse(r.body).series[0].points.reduce((s, [, v]) => s + (v ?? 0), 0);
          visible.push({ at: now(), n });
        }
        await sleep(100);
      }
    };
    const freshLoop = pollLoop(runEnd);

    // Attackers, each active only inside its phases.
    const during = (flag, fn, workers) =>
      Promise.all(schedule.filter((p) => p[flag]).map(async (p) => {
        while (now() < p.start) await sleep(Math.min(200, p.start - now()));
        await Promise.all(Array.from({ length: workers }, (_, w) => fn(p, w)));
      }));
    let cardNext = 0;
    const floodLoop = during('flood', async (p, w) => {
      for (let i = w; now() < p.end; i++) {
        const j = junk[i % junk.length];
        const r = await floodSend('POST', '/v1/batches', j.body, { 'content-type': j.type });
        count(stats[p.name].flood, String(r.status));
        stats[p.name].floodBytes += j.body.length;
      }
    }, 4);
    const cardLoop = during('cardinality', async (p) => {
      while (now() < p.end) {
        const body = cardBodies[cardNext++ % cardBodies.length]; // a resent body is a duplicate: cheap, still counted
        const r = await aSend('POST', '/v1/batches', body, { 'content-type': 'application/octet-stream' });
        count(stats[p.name].a, String(r.status));
        if (r.status === 429 || r.status === 503) await sleep(Math.min(p.end - now(), Math.max(1, r.retryAfter) * 1000));
      }
    }, 2);
    const queryLoop = during('query', async (p) => {
      while (now() < p.end) {
        const r = await aSend('POST', '/v1/query', heavyQuery, { authorization: `Bearer ${A.readToken}`, 'content-type': 'application/json' });
        count(stats[p.name].aQuery, String(r.status));
        if (r.status === 200) stats[p.name].aQueryMs.push(r.ms);
        // Server-Timing: storage (the SELECT in chDB, rows read) and merge (opening, merging in slices).
        const dur = (k) => Number(new RegExp(`${k};dur=([\\d.]+)`).exec(r.timing ?? '')?.[1] ?? NaN);
        if (r.timing) stats[p.name].aQueryTiming.push([dur('storage'), dur('merge')]);
        if (r.status === 429) await sleep(Math.min(p.end - now(), Math.max(1, r.retryAfter) * 1000));
      }
    }, 2);

    // The collector's own view per phase: event-loop delay (main-thread blocking), CPU, and how
    // long the batches table's inserts took (storage contention: chDB runs one statement at a time).
    const serverLoop = (async () => {
      for (const p of schedule) {
        while (now() < p.start) await sleep(Math.min(200, p.start - now()));
        const s0 = await scrape(url);
        const c0 = cpuOf(child.pid);
        while (now() < p.end) await sleep(Math.min(200, p.end - now()));
        const c1 = cpuOf(child.pid);
        const s1 = await scrape(url);
        const inserts = s1.batchInserts - s0.batchInserts;
        stats[p.name].server = {
          loopP99Ms: s1.loopP99Ms,
          loopMaxMs: s1.loopMaxMs,
          cpuPerSec: (s1.cpuSec - s0.cpuSec) / ((p.end - p.start) / 1000),
          mainCpuPerSec: (c1.mainSec - c0.mainSec) / ((p.end - p.start) / 1000),
          queryWorkersCpuPerSec: (c1.nicedSec - c0.nicedSec) / ((p.end - p.start) / 1000),
          batchInsertMeanMs: inserts ? ((s1.batchInsertSec - s0.batchInsertSec) / inserts) * 1000 : NaN,
        };
      }
    })();

    const ticker = setInterval(() => {
      const p = phaseAt(now());
      progress(`  ${fmt(now() / 1000)} s ${p ? p.name : 'gap'}: B acked ${bAcks.length}, visible ${visible.at(-1)?.n ?? 0}`);
    }, 2000);
    await Promise.all([bLoop, healthLoop, floodLoop, cardLoop, queryLoop, serverLoop]);
    await Promise.all(bDone);
    // Let B's last batches become visible (bounded).
    await freshLoop;
    await pollLoop(now() + 15_000, () => (visible.at(-1)?.n ?? 0) >= bAcks.length);
    clearInterval(ticker);
    const afterAll = await scrape(url);

    // Freshness: the k-th acknowledged batch of B is visible once a query counts k batches.
    const acks = [...bAcks].sort((x, y) => x.at - y.at);
    const fresh = Object.fromEntries(PHASES.map((p) => [p.name, []]));
    let v = 0;
    acks.forEach((ack, k) => {
      while (v < visible.length && (visible[v].n < k + 1 || visible[v].at < ack.at)) v++;
      if (ack.phase) fresh[ack.phase].push(v < visible.length ? visible[v].at - ack.at : Infinity);
    });

    const summarize = (name) => {
      const s = stats[name];
      const first = s.b.map((r) => r.firstMs).sort((x, y) => x - y);
      const acked = s.b.filter((r) => r.outcome !== 'failed').length;
      const f = fresh[name].sort((x, y) => x - y);
      const h = s.healthz.sort((x, y) => x - y);
      return {
        bSent: s.b.length,
        bAckedPct: s.b.length ? (100 * acked) / s.b.length : NaN,
        bFirstTry: s.b.filter((r) => r.outcome === 'first').length,
        bAfterRetry: s.b.filter((r) => r.outcome === 'retry').length,
        bFirstStatuses: s.b.reduce((m, r) => (count(m, String(r.firstStatus)), m), {}),
        bAckP50: percentile(first, 0.5),
        bAckP99: percentile(first, 0.99),
        bFreshP95: percentile(f, 0.95),
        healthzP99: percentile(h, 0.99),
        healthzN: h.length,
        a: s.a,
        aQuery: s.aQuery,
        aQueryP50: percentile(s.aQueryMs.sort((x, y) => x - y), 0.5),
        aQueryStorageP50: percentile(s.aQueryTiming.map(([x]) => x).sort((x, y) => x - y), 0.5),
        aQueryMergeP50: percentile(s.aQueryTiming.map(([, x]) => x).sort((x, y) => x - y), 0.5),
        flood: s.flood,
        floodMiB: s.floodBytes / 1048576,
        server: s.server,
      };
    };
    const results = Object.fromEntries(PHASES.map((p) => [p.name, summarize(p.name)]));
    const base = results.quiet.bAckP99;
    const rows = PHASES.map(({ name }) => {
      const r = results[name];
      const ratio = r.bAckP99 / base;
      r.pass = {
        acked: r.bAckedPct >= TARGETS.ackedPct,
        p99: name === 'quiet' || ratio <= TARGETS.p99Ratio,
        freshness: r.bFreshP95 <= TARGETS.freshnessP95Ms,
        healthz: r.healthzP99 <= TARGETS.healthzP99Ms,
      };
      r.p99Ratio = ratio;
      const pf = (ok) => (ok ? 'PASS' : 'FAIL');
      return {
        phase: name,
        'B acked % (≥99)': `${fmt(r.bAckedPct, 1)} ${pf(r.pass.acked)}`,
        'B ack p50 ms': fmt(r.bAckP50, 1),
        'B ack p99 ms (≤3× quiet)': `${fmt(r.bAckP99, 1)} (${fmt(ratio, 2)}×) ${name === 'quiet' ? 'base' : pf(r.pass.p99)}`,
        'B fresh p95 ms (≤2000)': `${fmt(r.bFreshP95)} ${pf(r.pass.freshness)}`,
        'healthz p99 ms (≤100)': `${fmt(r.healthzP99, 1)} ${pf(r.pass.healthz)}`,
      };
    });
    console.log('\nB = well-behaved tenant (20-point storefront batches at ' + B_RATE + '/s); same run, same machine (2 cores shared with the load generator and other work: noisy).\n');
    table(rows);
    console.log('\nWhat the others got (HTTP statuses):');
    table(PHASES.map(({ name }) => {
      const r = results[name];
      return {
        phase: name,
        'B first-try statuses': JSON.stringify(r.bFirstStatuses),
        'flooder (a)': r.floodMiB ? `${JSON.stringify(r.flood)} ${fmt(r.floodMiB)} MiB` : '-',
        'A ingest (b)': Object.keys(r.a).length ? JSON.stringify(r.a) : '-',
        'A heavy query (c)': Object.keys(r.aQuery).length ? `${JSON.stringify(r.aQuery)} p50 ${fmt(r.aQueryP50)} ms (storage ${fmt(r.aQueryStorageP50)}, merge ${fmt(r.aQueryMergeP50)})` : '-',
      };
    }));
    console.log('\nThe collector\'s view (event-loop delay: main-thread blocking; CPU: all its threads, chDB included; batches insert: storage contention):');
    table(PHASES.map(({ name }) => {
      const v = results[name].server;
      return {
        phase: name,
        'event loop p99 ms': fmt(v.loopP99Ms, 1),
        'event loop max ms': fmt(v.loopMaxMs, 1),
        'collector CPU (cores)': fmt(v.cpuPerSec, 2),
        'main-thread CPU (cores)': fmt(v.mainCpuPerSec, 2),
        'query workers CPU (cores, niced)': fmt(v.queryWorkersCpuPerSec, 2),
        'batches insert mean ms': fmt(v.batchInsertMeanMs, 1),
      };
    }));
    const allPass = PHASES.every(({ name }) => Object.values(results[name].pass).every(Boolean));
    console.log(`\nheavy query alone (median of 3): ${fmt(aloneSummary.wallMs)} ms wall, collector main-thread CPU ${fmt(aloneSummary.mainCpuMs)} ms, collector CPU (all threads) ${fmt(aloneSummary.cpuMs)} ms; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    console.log(`heavy query: ${fmt(q0meta.rows ?? 0)} rows, ${fmt(q0.ms)} ms alone; points processed ${fmt(afterAll.processed)}, rejected ${fmt(afterAll.rejected)}; overall ${allPass ? 'PASS' : 'FAIL'}`);
    writeResult('abuse', {
      options: { phaseSec: PHASE_MS / 1000, gapSec: GAP_MS / 1000, bRate: B_RATE, bPointsPerBatch: B_POINTS + 1 },
      targets: TARGETS,
      heavyQuery: { status: q0.status, rows: q0meta.rows, msAlone: q0.ms, alone, aloneMedian: aloneSummary },
      loadAverage: os.loadavg(),
      phases: results,
      pass: allPass,
    });
  } finally {
    await stopChild(child);
    if (!opt.keep) rmSync(tmp, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

main().catch((e) => {
  console.error(`abuse bench failed: ${e?.stack ?? e}`);
  killAll();
  process.exit(1);
});
