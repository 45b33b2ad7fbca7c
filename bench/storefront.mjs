// Storefront benchmark: many small shops. 10,000 accounts with Zipf-distributed traffic (a few
// big shops, a long tail), ~10-point batches as one page view sends, ~20 series per account,
// keep-alive clients; beside the plaintext Hono → chDB baseline (bench/lib.mjs) fed the SAME
// requests (the same points of the same accounts, the account in an `x-account` header).
//
//   node bench/storefront.mjs [--accounts 10000] [--zipf 1] [--duration 15] [--warmup 5] [--steady 15]
//                             [--concurrency 128] [--batches 200000] [--profile] [--keep]
//                             [--only encrypted|plaintext] [--cli path/to/collector/dist/cli.js]
//                             [--envelope v2|v2plain|v1] [--env CIPHERSTAT_NAME=value ...]
//                             [--accounts-dir DIR] [--base path/to/base/collector/dist/cli.js [--pairs 2]]
//
// Phases, the same for both pipelines: cold (--warmup s, then --duration s measured: the Zipf
// traffic as shops first arrive — most of the 10,000 accounts are first seen in it), a warm pass
// (one batch per account, not measured), steady (--warmup s, then --steady s measured: the Zipf
// traffic continued over accounts all seen before; --steady 0 skips the warm pass and this phase).
// The targets are judged on the steady phase; the cold one is reported beside it.
// Clients behave like the Library (bench/lib.mjs runLoad, the same code for both pipelines): a
// batch refused with 429/503 is sent again after its Retry-After plus jitter (random(0, max(1 s,
// after / 2)), packages/library/src/transport.ts), while the client goes on with the next batch;
// a batch due again goes first. Per phase the bench reports refusals, resends, resends
// acknowledged and batches still waiting to be resent when the phase ended.
// Per phase the collector's CPU is split by thread (main, tick worker, Node's other threads —
// libuv's pool, where chDB's calls run, and V8's platform threads, its GC helpers —, chDB's
// engine threads), its storage calls by kind (per second, ms waiting for the engine and
// running), and its 202s' wait by phase.
// --env      passes a CIPHERSTAT_* setting to the collector (e.g. a tick cadence to compare).
// --accounts-dir DIR  keeps the created accounts (data directory and keyring, before any load) in
//            DIR/<n>-accounts and copies them from there in later runs: creating 10,000 accounts
//            takes minutes of keyring fsyncs, which A/B runs of two builds need not repeat.
//
// Accounts are created in bulk through the collector's own Accounts API on the data directory
// (a child process, before the server starts), not by 10,000 HTTP calls.
// --base     A/B: the encrypted pipeline runs --pairs times with each build, interleaved (base,
//            this, base, this…), on the same envelopes (built once) and copies of the same accounts,
//            then the plaintext pipeline once; a table gives each run's steady figures (batches/s,
//            ratio, CPU per batch by thread). The detail below it is the last run of this build.
// --profile  runs the collector with --cpu-prof: one profile per thread in bench/results/
//            (storefront-main.cpuprofile, storefront-tick-worker.cpuprofile, …); prints the top
//            self-time functions of its main thread and of its tick worker over the measured window.
// --envelope  what the shops send: v2 (default: envelope v2, the inner layer deflated — what the
//             Library sends, browsers included), v2plain (flags 0: browsers without
//             CompressionStream('deflate-raw')), v1 (deprecated NaCl boxes).
// Results: bench/results/storefront.json.
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  ROOT, ackSplit, mainThreadCpuSeconds, processCpuSeconds, buildBodies, storageCallSplit, threadCpuSeconds, threadCpuSplit, buildInfo, collectProfiles, envelopeSealer, fmt, formatTickSplit, freePort, killAll, makeSender, parsePrometheus, postBodies,
  printProfile, profileFlags, plaintextRun, processingTicker, progress, runChildJson, runLoad, scrape, startChild, stopChild, table, tickSplit, waitProcessed, waitReady, watchdog, writeResult,
} from './lib.mjs';
import { mulberry32 } from '../test/support/seeded.mjs';

const SELF = fileURLToPath(import.meta.url);
const ADMIN_TOKEN = 'csa_bench_admin_token_0123456789abcdefghijklmnop';

// ---------------------------------------------------------------------------------------------
// Deterministic traffic: batch i has the same account and points in both pipelines.

const PAGES = ['/', '/cart', '/checkout', '/search', '/account', ...Array.from({ length: 20 }, (_, i) => `/p/${100 + i * 7}`)];
const COUNTRIES = 'DE FR US GB NL ES IT PL SE AT'.split(' ');
const SERIES_PER_ACCOUNT = 20;

/** An account's ~20 series (metric, kind, tags): page loads by page and country, orders, revenue, cart size. */
function accountSeries(a) {
  const rnd = mulberry32(a * 7919 + 17);
  const series = [];
  const pick = (list) => list[Math.floor(rnd() * list.length)];
  for (let k = 0; k < 12; k++) series.push(['page.load_ms', 'histogram', { page: pick(PAGES), country: pick(COUNTRIES) }]);
  for (let k = 0; k < 3; k++) series.push(['orders', 'counter', { country: pick(COUNTRIES) }]);
  for (let k = 0; k < 3; k++) series.push(['revenue.eur', 'counter', { country: pick(COUNTRIES) }]);
  series.push(['cart.items', 'gauge', {}], ['checkout.step', 'counter', { step: String(1 + Math.floor(rnd() * 4)) }]);
  return series.slice(0, SERIES_PER_ACCOUNT);
}

/** Cumulative Zipf(s) weights over n ranks (rank 0 the biggest shop). */
export function zipfCdf(n, s) {
  const w = Array.from({ length: n }, (_, r) => 1 / (r + 1) ** s);
  const total = w.reduce((a, b) => a + b, 0);
  let acc = 0;
  return Float64Array.from(w, (x) => (acc += x / total));
}

/**
 * Batch i: its account (Zipf rank, or `account` when given) and 8–12 points (10 on average) of
 * that account's series, in the 10 s before baseTime.
 */
export function makeBatch(i, cdf, baseTime, account) {
  const rnd = mulberry32(i * 2654435761 + 7);
  const u = rnd();
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  if (account !== undefined) lo = account;
  const series = accountSeries(lo);
  const n = 8 + Math.floor(rnd() * 5);
  const points = new Array(n);
  for (let id = 0; id < n; id++) {
    const [name, kind, tags] = series[Math.floor(rnd() * series.length)];
    const value = name === 'page.load_ms' ? Math.round(80 + 4000 * rnd() * rnd()) : name === 'revenue.eur' ? Math.round(500 + rnd() * 25000) / 100 : name === 'cart.items' ? Math.floor(rnd() * 9) : 1;
    points[id] = { id, kind, name, value, time: baseTime - Math.floor(rnd() * 10_000), tags };
  }
  return { account: lo, points };
}

/** Body i of a run: Zipf traffic below `o.batches`, then the warm pass's batch of account i - batches. */
const batchAt = (i, o, cdf, baseTime) => makeBatch(i, cdf, baseTime, i < o.batches ? undefined : i - o.batches);

// ---------------------------------------------------------------------------------------------
// Worker: bodies [from, to).

async function buildWorker() {
  const { mode, from, to, baseTime, accountsFile, accounts: n, batches, zipf, envelope } = workerData;
  const cdf = zipfCdf(n, zipf);
  const list = JSON.parse(readFileSync(accountsFile, 'utf8'));
  let encode;
  if (mode === 'envelope') {
    const seal = await envelopeSealer({ collectorKeyId: list.collectorKey.keyId, collectorPublicKey: Buffer.from(list.collectorKey.publicKey, 'base64'), envelope });
    const pks = list.accounts.map((a) => new Uint8Array(Buffer.from(a.writeKey, 'base64')));
    encode = (i) => {
      const { account, points } = batchAt(i, { batches }, cdf, baseTime);
      return seal(list.accounts[account].accountId, pks[account], points, baseTime);
    };
  } else {
    const enc = new TextEncoder();
    encode = (i) => enc.encode(JSON.stringify(batchAt(i, { batches }, cdf, baseTime).points));
  }
  postBodies(parentPort, from, to, encode);
}

// ---------------------------------------------------------------------------------------------
// Child: creates the accounts through the collector's Accounts API on its data directory.

async function createAccounts(dataDir, n, out) {
  const dist = join(ROOT, 'services/collector/dist/');
  const { loadConfig } = await import(join(dist, 'config.js'));
  const { openServices } = await import(join(dist, 'services.js'));
  const { createLogger } = await import(join(dist, 'logger.js'));
  const s = await openServices(loadConfig({ role: 'query', 'data-dir': dataDir }), { log: createLogger({ level: 'warn' }) });
  const accounts = new Array(n);
  let next = 0;
  const t0 = performance.now();
  let collectorKey;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const a = await s.accounts.create({});
      accounts[i] = { accountId: a.accountId, writeKey: a.writeKey };
      collectorKey ??= a.collectorKey;
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await s.store.close();
  writeFileSync(out, JSON.stringify({ collectorKey, accounts }));
  process.stdout.write(JSON.stringify({ accounts: n, seconds: (performance.now() - t0) / 1000 }) + '\n');
}

// ---------------------------------------------------------------------------------------------

/**
 * Per-account cache lookups the collector exports (`cipherstat_cache_lookups_total{cache,outcome}`),
 * and its compaction so far (passes ended, their seconds, rows merged and written, packs written):
 * compaction runs on the main thread and the engine beside ingest.
 */
async function cacheCounts(url) {
  const rows = parsePrometheus(await (await fetch(url + '/metrics')).text());
  const out = {};
  for (const r of rows) if (r.name === 'cipherstat_cache_lookups_total') (out[r.labels.cache] ??= { hit: 0, miss: 0 })[r.labels.outcome] = r.value;
  const get = (name, outcome) => rows.find((r) => r.name === name && (outcome === undefined || r.labels.outcome === outcome))?.value ?? 0;
  const compaction = {
    passes: get('cipherstat_compaction_pass_seconds_count'),
    seconds: get('cipherstat_compaction_pass_seconds_sum'),
    merged: get('cipherstat_compaction_rows_total', 'merged'),
    written: get('cipherstat_compaction_rows_total', 'written'),
    yieldSeconds: get('cipherstat_compaction_yield_seconds_total'),
  };
  return { caches: out, compaction };
}

/** Compaction between two cacheCounts (passes ended in between). */
const compactionSplit = (a, b) => Object.fromEntries(Object.keys(b.compaction).map((k) => [k, b.compaction[k] - (a?.compaction[k] ?? 0)]));

/**
 * The bodies of a run: [0, batches) Zipf traffic, then one batch per account (the warm pass),
 * the last of which is the preflight. Phases: cold (the Zipf window as shops first arrive),
 * then — with --steady — the warm pass (every account sends once, not measured) and steady (the
 * same Zipf traffic, continued, over accounts all seen before). Both pipelines run the same phases
 * on the same bodies.
 */
async function runPhases(o, name, { send, bodies, serverPid, pointsOf, headersOf, measure, drain }) {
  const zipf = bodies.slice(0, o.batches);
  const warm = bodies.slice(o.batches);
  const preflight = warm.pop();
  const { status: pre } = await send(preflight, headersOf?.(o.batches + warm.length));
  if (pre !== 202) throw new Error(`preflight batch answered ${pre}`);
  const phase = (label, from, list, warmupSec, durationSec, hooks = {}) =>
    runLoad({
      name: `${name} ${label}`,
      send,
      bodies: list,
      pointsOf: (i) => pointsOf(from + i),
      headersOf: headersOf && ((i) => headersOf(from + i)),
      warmupMs: warmupSec * 1000,
      durationMs: durationSec * 1000,
      concurrency: o.concurrency,
      serverPid,
      ...hooks,
    });
  progress(`${name} pipeline: cold phase (${o.warmup} s + ${o.duration} s measured, ${o.concurrency} concurrent clients; most accounts are first seen in it)`);
  const cold = await measure((hooks) => phase('cold', 0, zipf, o.warmup, o.duration, hooks));
  if (!o.steady) return cold;
  progress(`${name} pipeline: warm pass (one batch for each of ${fmt(warm.length + 1)} accounts, not measured)`);
  const t0 = performance.now();
  const pass = await phase('warm pass', o.batches, warm, 0, 3600, { untilExhausted: true });
  cold.warmPass = { batches: pass.batchesAcked, seconds: (performance.now() - t0) / 1000 };
  // Steady starts from a steady state: the warm pass's batches processed first (encrypted; the
  // plaintext pipeline stores and is done), not left as a backlog its window would measure.
  await drain?.(pass);
  const from = cold.batchesSent;
  // The steady phase sends at the cold phase's rate or faster: too few bodies left would end its
  // window early (or before it starts) and measure nothing.
  const need = Math.max(1000, Math.ceil((cold.batchesSent / (o.warmup + o.duration)) * (o.warmup + o.steady) * 1.25));
  if (zipf.length - from < need) throw new Error(`too few Zipf bodies left for the steady phase (${zipf.length - from}, ~${need} needed at the cold phase's rate): raise --batches`);
  progress(`${name} pipeline: steady phase (${o.warmup} s + ${o.steady} s measured, the Zipf traffic continued from batch ${fmt(from)})`);
  cold.steady = await measure((hooks) => phase('steady', from, zipf.slice(from), o.warmup, o.steady, hooks));
  return cold;
}

/**
 * One run of the encrypted pipeline: a collector (`cli`, default --cli) on its own copy of the
 * accounts. The envelopes are built once per bench (`o.built`) and sent again by later runs
 * (--base: the same bodies to both builds).
 */
async function encryptedPipeline(o, tmp, { cli = o.cli, run = 0 } = {}) {
  const dataDir = join(tmp, run ? `collector-${run}` : 'collector');
  const accountsFile = join(tmp, 'accounts.json');
  const env = { CIPHERSTAT_DATA_DIR: dataDir, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'warn', ...o.collectorEnv };
  const saved = o.accountsDir && join(o.accountsDir, `${o.accounts}-accounts`);
  let created = { accounts: o.accounts, seconds: NaN };
  if (saved && existsSync(join(saved, 'accounts.json'))) {
    progress(`encrypted pipeline: ${fmt(o.accounts)} accounts from ${saved} (created by an earlier run; copied, never changed)`);
    cpSync(join(saved, 'collector'), dataDir, { recursive: true });
    cpSync(join(saved, 'accounts.json'), accountsFile);
  } else {
    progress(`encrypted pipeline: creating ${fmt(o.accounts)} accounts through the Accounts API on the data directory`);
    // Set-up, not measured: on a busy machine 32 creations at once can keep one storage call past the 5 s deadline.
    created = await runChildJson([SELF, '--create-accounts', dataDir, String(o.accounts), accountsFile], { ...env, CIPHERSTAT_STORAGE_TIMEOUT_MS: '120000' });
    progress(`  created ${fmt(created.accounts)} accounts in ${fmt(created.seconds, 1)} s`);
    if (saved) {
      cpSync(dataDir, join(saved, 'collector'), { recursive: true });
      cpSync(accountsFile, join(saved, 'accounts.json'));
    }
  }

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const profDir = join(tmp, 'profile');
  const args = [...(o.profile ? profileFlags(profDir) : []), cli, 'serve'];
  const child = startChild('collector', args, {
    ...env,
    PORT: String(port),
    HOST: '127.0.0.1',
    // Shops' visitors come from many addresses; here they all come from 127.0.0.1.
    CIPHERSTAT_RATE_LIMIT: '1000000',
    CIPHERSTAT_IP_RATE_LIMIT: '1000000',
    CIPHERSTAT_IP_BYTE_RATE: String(1 << 30),
  });
  try {
    await waitReady(url, child, '/readyz');
    const count = o.batches + o.accounts;
    if (!o.built) {
      progress(`encrypted pipeline: collector ready at ${url}; pre-building ${fmt(count)} envelopes`);
      const baseTime = Date.now();
      o.built = { baseTime, ...(await buildBodies(SELF, 'envelope', count, { mode: 'envelope', baseTime, accountsFile, accounts: o.accounts, batches: o.batches, zipf: o.zipf, envelope: o.envelope })) };
    } else progress(`encrypted pipeline: collector (${cli}) ready at ${url}; the same ${fmt(count)} envelopes as the first run`);
    const { bodies, avgBytes, baseTime } = o.built;
    const pointsOf = pointCounter(o, baseTime);
    const send = makeSender('http', url, '/v1/batches', 'application/octet-stream', o.concurrency);
    let profileWindow;
    const measure = async (load) => {
      let atStart;
      let cachesAtStart;
      let cpuAtStart;
      const run = await load({
        onWindowStart: async () => {
          cpuAtStart = { all: processCpuSeconds(child.pid), main: mainThreadCpuSeconds(child.pid), threads: threadCpuSeconds(child.pid) };
          [atStart, cachesAtStart] = await Promise.all([scrape(url), cacheCounts(url)]);
        },
        onTick: processingTicker(url),
      });
      profileWindow ??= { startUs: run.windowStartHrUs, endUs: run.windowEndHrUs }; // the cold window
      const [atEnd, cachesAtEnd] = await Promise.all([scrape(url), cacheCounts(url)]);
      progress(`encrypted pipeline: load stopped; waiting for processing to catch up (${fmt(atEnd.processQueue)} batches queued)`);
      const drain = await waitProcessed(url, { want: atEnd.accepted, atStart, lastAck: run.lastAck, timeoutSec: o.drainTimeout });
      // Load-insensitive: the collector's CPU (all threads, and its main thread) from the window's
      // start until all was processed, per batch and per point processed in that span.
      const spanBatches = drain.final.lagCount - atStart.lagCount;
      const spanPoints = drain.final.processed - atStart.processed;
      const spanCpu = { all: processCpuSeconds(child.pid) - cpuAtStart.all, main: mainThreadCpuSeconds(child.pid) - cpuAtStart.main };
      const threads = threadCpuSplit(cpuAtStart.threads, threadCpuSeconds(child.pid));
      const caches = {};
      const compaction = compactionSplit(cachesAtStart, await cacheCounts(url)); // until all was processed
      for (const [name, c] of Object.entries(cachesAtEnd.caches)) {
        const hit = c.hit - (cachesAtStart?.caches[name]?.hit ?? 0);
        const miss = c.miss - (cachesAtStart?.caches[name]?.miss ?? 0);
        caches[name] = { hit, miss, hitRate: hit + miss ? hit / (hit + miss) : NaN };
      }
      const processedPerSec = (atEnd.processed - atStart.processed) / ((atEnd.at - atStart.at) / 1000);
      return {
        envelopeBytes: avgBytes,
        ...run,
        pointsPerSecProcessed: processedPerSec,
        batchesPerSecProcessed: (atEnd.lagCount - atStart.lagCount) / ((atEnd.at - atStart.at) / 1000),
        lagSec: drain.lagSec,
        drainedAfterLastAckSec: drain.drainedAfterLastAckSec,
        insertMs: {
          batchesInsertsPerSec: (atEnd.insertBatchesCount - atStart.insertBatchesCount) / run.windowSec,
          rollupsInsertsPerSec: (atEnd.insertRollupsCount - atStart.insertRollupsCount) / run.windowSec,
          rollupsMean: (1000 * (atEnd.insertRollupsSum - atStart.insertRollupsSum)) / Math.max(1, atEnd.insertRollupsCount - atStart.insertRollupsCount),
        },
        caches,
        compaction,
        cpuWholeRun: {
          batches: spanBatches,
          points: spanPoints,
          microsPerBatch: (spanCpu.all * 1e6) / spanBatches,
          microsPerPoint: (spanCpu.all * 1e6) / spanPoints,
          mainMicrosPerBatch: (spanCpu.main * 1e6) / spanBatches,
          // By thread (µs per batch): main, tick worker, Node's other threads (libuv's pool runs chDB's calls; V8), chDB's engine threads and ended threads.
          threadsMicrosPerBatch: Object.fromEntries(Object.entries(threads).map(([k, v]) => [k, (v * 1e6) / spanBatches])),
        },
        // Storage calls over the window by kind (per second, ms waiting for the engine and running per call) and the 202's wait split.
        storageCalls: storageCallSplit(atStart, atEnd, (atEnd.at - atStart.at) / 1000),
        ackMsPerBatch: ackSplit(atStart, atEnd),
        // Ticks from the window's start until all was processed (the drain included).
        tick: tickSplit(atStart, drain.final),
      };
    };
    const drain = async (pass) => {
      const at = await scrape(url);
      progress(`encrypted pipeline: warm pass sent; waiting for processing to catch up (${fmt(at.processQueue)} batches queued)`);
      await waitProcessed(url, { want: at.accepted, lastAck: pass.lastAck, timeoutSec: o.drainTimeout });
    };
    const result = await runPhases(o, 'encrypted', { send, bodies, serverPid: child.pid, pointsOf, measure, drain });
    result.accountsCreatedSec = created.seconds;
    await stopChild(child);
    if (o.profile) result.profiles = collectProfiles(profDir, 'storefront', profileWindow);
    return result;
  } finally {
    await stopChild(child, 5000);
  }
}

/** Points per body index (the bodies' own counts, recomputed from the seed). */
function pointCounter(o, baseTime) {
  const cdf = zipfCdf(o.accounts, o.zipf);
  const counts = new Uint8Array(o.batches + o.accounts);
  for (let i = 0; i < counts.length; i++) counts[i] = batchAt(i, o, cdf, baseTime).points.length;
  return (i) => counts[i];
}

async function plaintextPipeline(encrypted, tmp) {
  // Twice the Zipf bodies of the encrypted pipeline: the plaintext one is the faster, and its
  // steady phase needs bodies at its own cold rate (JSON bodies take a second per 200,000). The
  // first --batches are the same requests as the encrypted pipeline's; the rest continue the same
  // Zipf traffic (its warm pass, not measured, comes after them).
  const o = { ...encrypted, batches: encrypted.batches * 2 };
  const accountsFile = join(tmp, 'accounts.json');
  const { accounts } = JSON.parse(readFileSync(accountsFile, 'utf8'));
  const baseTime = Date.now();
  const cdf = zipfCdf(o.accounts, o.zipf);
  const count = o.batches + o.accounts;
  const heads = new Array(count);
  const counts = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const b = batchAt(i, o, cdf, baseTime);
    heads[i] = { 'x-account': accounts[b.account].accountId };
    counts[i] = b.points.length;
  }
  const pointsOf = (i) => counts[i];
  const headersOf = (i) => heads[i];
  // Its 202 comes after the insert: processed = acknowledged.
  const measure = async (load) => {
    const r = await load({});
    return { ...r, pointsPerSecProcessed: r.pointsPerSecAcked, batchesPerSecProcessed: r.batchesPerSecAcked, lagSec: { p50: 0, p95: 0, p99: 0 } };
  };
  return plaintextRun(o, tmp, {
    self: SELF,
    bodyData: { mode: 'json', baseTime, accountsFile, accounts: o.accounts, batches: o.batches, zipf: o.zipf },
    label: 'the same accounts and points',
    count,
    pointsOf,
    headersOf,
    run: ({ send, bodies, serverPid }) => runPhases(o, 'plaintext', { send, bodies, serverPid, pointsOf, headersOf, measure }),
  });
}

/** The collector's figures of one measured phase (cold or steady): caches, inserts, ticks, CPU by thread, the 202 split, storage calls. */
function printCollectorDetail(label, e, p) {
  console.log(`${label}:`);
  const cacheRows = Object.entries(e.caches).map(([cache, c]) => ({ cache, lookups: fmt(c.hit + c.miss), 'hit rate': `${fmt(100 * c.hitRate, 1)}%` }));
  if (cacheRows.length) table(cacheRows);
  else console.log('per-account caches: the collector exports no cipherstat_cache_lookups_total');
  console.log(`collector: rollup inserts ${fmt(e.insertMs.rollupsInsertsPerSec, 1)}/s (mean ${fmt(e.insertMs.rollupsMean, 1)} ms), batch inserts ${fmt(e.insertMs.batchesInsertsPerSec, 1)}/s`);
  console.log(`ticks: ${formatTickSplit(e.tick)}`);
  const k = e.compaction;
  console.log(`compaction from the window's start until all was processed: ${fmt(k.passes)} passes ended, ${fmt(k.seconds, 2)} s in passes, ${fmt(k.yieldSeconds, 1)} s yielded to ingest, ${fmt(k.merged)} rows merged into ${fmt(k.written)} written`);
  const w = e.cpuWholeRun;
  console.log(`collector CPU from the window's start until all was processed: ${fmt(w.microsPerBatch)} µs per batch (main thread ${fmt(w.mainMicrosPerBatch)}), ${fmt(w.microsPerPoint, 1)} µs per point; plaintext (its window): ${p ? `${fmt(p.serverCpuMicrosPerBatch)} µs per batch` : '-'}`);
  const th = w.threadsMicrosPerBatch;
  console.log(`  by thread, µs per batch: main ${fmt(th.main)}, tick worker ${fmt(th.tickWorker)}, Node's other threads ${fmt(th.nodeThreads)} (libuv pool running chDB calls ${fmt(th.poolThreads)}, V8 platform: GC helpers and compiler ${fmt(th.v8Threads)}), chDB engine threads (and ended threads) ${fmt(th.engine)}`);
  const a = e.ackMsPerBatch;
  console.log(`202 wait per stored batch (ms): queued behind the group commit in flight ${fmt(a.queued, 1)}, duplicate check ${fmt(a.dedup, 1)}, insert ${fmt(a.insert, 1)}; client-side ack p50 ${fmt(e.ackMs.p50, 1)}`);
  console.log('storage calls in the window (the engine runs one at a time; wait = for the engine):');
  table(e.storageCalls.slice(0, 12).map((c) => ({ call: c.call, 'calls/s': fmt(c.perSec, 1), 'wait ms/call': fmt(c.waitMs, 1), 'run ms/call': fmt(c.runMs, 1), 'engine busy': `${fmt(100 * c.busy, 1)}%` })));
  console.log('');
}

async function main() {
  const { values } = parseArgs({
    options: {
      accounts: { type: 'string', default: '10000' },
      zipf: { type: 'string', default: '1' },
      duration: { type: 'string', default: '15' },
      warmup: { type: 'string', default: '5' },
      steady: { type: 'string', default: '15' },
      concurrency: { type: 'string', default: '128' },
      batches: { type: 'string', default: '200000' },
      'drain-timeout': { type: 'string', default: '60' },
      cli: { type: 'string', default: 'services/collector/dist/cli.js' },
      env: { type: 'string', multiple: true, default: [] },
      only: { type: 'string' },
      profile: { type: 'boolean', default: false },
      envelope: { type: 'string', default: 'v2' },
      keep: { type: 'boolean', default: false },
      'accounts-dir': { type: 'string' },
      base: { type: 'string' },
      pairs: { type: 'string', default: '2' },
    },
  });
  const o = {
    accounts: Number(values.accounts),
    zipf: Number(values.zipf),
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    steady: Number(values.steady),
    concurrency: Number(values.concurrency),
    batches: Number(values.batches),
    client: 'http',
    drainTimeout: Number(values['drain-timeout']),
    cli: values.cli,
    collectorEnv: Object.fromEntries(values.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    profile: values.profile,
    envelope: values.envelope,
    accountsDir: values['accounts-dir'],
    base: values.base,
    pairs: Number(values.pairs),
  };
  if (o.base && o.profile) throw new Error('--base and --profile: profile one build at a time');
  if (!['v1', 'v2', 'v2plain'].includes(o.envelope)) throw new Error(`--envelope ${o.envelope}: v1, v2 or v2plain`);
  if (values.env.some((kv) => !/^CIPHERSTAT_[A-Z0-9_]+=/.test(kv))) throw new Error('--env CIPHERSTAT_NAME=value');
  const tmp = mkdtempSync(join(os.tmpdir(), 'cipherstat-bench-storefront-'));
  // Generous: creating 10,000 accounts is bound by the keyring's fsyncs (minutes on a busy disk).
  const stopWatchdog = watchdog('storefront', 2 * (2 * o.warmup + o.duration + o.steady + 2 * o.drainTimeout) + 3600);
  const build = buildInfo(o.cli);
  if (build.stale) progress(`WARNING: ${build.stale}`);
  progress(`storefront bench: ${fmt(o.accounts)} accounts, Zipf s=${o.zipf}, ~10-point batches, ${SERIES_PER_ACCOUNT} series per account, envelope ${o.envelope}, ${o.concurrency} keep-alive clients; data in ${tmp}`);
  let e;
  let p;
  const runs = []; // --base: [label, result] of each encrypted run, interleaved base, this, base, this…
  try {
    // The accounts file is written by the encrypted pipeline's set-up; the plaintext one reuses its ids.
    if (o.base) {
      o.accountsDir ??= join(tmp, 'accounts'); // every run starts from the same accounts
      for (let k = 0, n = 0; k < o.pairs; k++) {
        for (const [label, cli] of [['base', o.base], ['this', o.cli]]) {
          progress(`A/B pair ${k + 1} of ${o.pairs}: ${label} (${cli})`);
          runs.push([label, (e = await encryptedPipeline(o, tmp, { cli, run: ++n }))]);
          globalThis.gc?.();
        }
      }
    } else e = await encryptedPipeline(o, tmp);
    globalThis.gc?.();
    if (values.only !== 'encrypted') p = await plaintextPipeline(o, tmp);
  } finally {
    if (!values.keep) rmSync(tmp, { recursive: true, force: true });
    else progress(`kept ${tmp}`);
  }

  const e2e = (r) => Math.min(r.pointsPerSecAcked, r.pointsPerSecProcessed);
  const e2eBatches = (r) => Math.min(r.batchesPerSecAcked, r.batchesPerSecProcessed);
  for (const r of [e, p, e.steady, p?.steady, ...runs.flatMap(([, x]) => [x, x.steady])]) {
    if (!r) continue;
    r.pointsPerSecEndToEnd = e2e(r);
    r.batchesPerSecEndToEnd = e2eBatches(r);
    r.serverCpuMicrosPerPoint = (r.serverCpuCores * 1e6) / e2e(r);
    r.serverCpuMicrosPerBatch = (r.serverCpuCores * 1e6) / e2eBatches(r);
  }
  const ratioOf = (er, pr) => (er && pr ? e2e(er) / e2e(pr) : NaN);
  const coldRatio = ratioOf(e, p);
  const steadyRatio = ratioOf(e.steady, p?.steady);
  const other = (r) => Object.entries(r.statuses).filter(([s]) => s !== '202').map(([s, n]) => `${s}×${n}`).join(' ') || '-';
  const row = (name, r, ratio) => ({
    pipeline: name,
    'pts/s e2e': fmt(r.pointsPerSecEndToEnd),
    'batches/s e2e': fmt(r.batchesPerSecEndToEnd),
    ratio: ratio === 1 ? '1.00×' : Number.isFinite(ratio) ? fmt(ratio, 2) + '×' : '-',
    'ack p50/p99 ms': `${fmt(r.ackMs.p50, 1)} / ${fmt(r.ackMs.p99, 1)}`,
    'lag p50/p95 s': ratio !== 1 ? `${fmt(r.lagSec.p50, 2)} / ${fmt(r.lagSec.p95, 2)}` : '0 (202 after insert)',
    'srv µs/pt': fmt(r.serverCpuMicrosPerPoint, 1),
    'srv µs/batch': fmt(r.serverCpuMicrosPerBatch, 0),
    'RSS max MB': fmt(r.rssMaxBytes / 2 ** 20),
    'not 202': other(r),
    'CPU srv/gen/other': `${fmt(r.serverCpuCores, 2)} / ${fmt(r.loadgenCpuCores, 2)} / ${fmt(r.otherCpuCores, 2)}`,
  });
  console.log('');
  const rows = [row('cold: encrypted (collector)', e, coldRatio), ...(p ? [row('cold: plaintext Hono→chDB', p, 1)] : [])];
  if (e.steady) rows.push(row('steady: encrypted (collector)', e.steady, steadyRatio), ...(p?.steady ? [row('steady: plaintext Hono→chDB', p.steady, 1)] : []));
  table(rows);
  const resendRows = [['cold', e, p], ['steady', e.steady, p?.steady]].flatMap(([phase, er, pr]) =>
    [['encrypted', er], ['plaintext', pr]].filter(([, r]) => r?.resends).map(([pipeline, r]) => ({ phase, pipeline, 'refused (429/503)': fmt(r.resends.refused), resent: fmt(r.resends.resent), 'resent, acked': fmt(r.resends.resentAcked), 'not resent by the end': fmt(r.resends.notResent), 'network errors': fmt(r.resends.networkErrors) })),
  );
  console.log('clients as the Library: a refused batch is sent again after Retry-After + jitter');
  table(resendRows);
  if (e.warmPass) console.log(`warm pass between them (every account sends one batch): encrypted ${fmt(e.warmPass.seconds, 1)} s${p?.warmPass ? `, plaintext ${fmt(p.warmPass.seconds, 1)} s` : ''}`);
  const noisy = [e, p, e.steady, p?.steady].filter((r) => r && r.otherCpuCores > 0.2);
  if (noisy.length) console.log(`WARNING: other processes used ${noisy.map((r) => fmt(r.otherCpuCores, 2)).join(' / ')} cores during the runs; the numbers are skewed.`);
  console.log('');
  printCollectorDetail('cold phase (most accounts first seen in it)', e, p);
  if (e.steady) printCollectorDetail('steady phase (every account seen before)', e.steady, p?.steady);
  const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
  // The targets hold for the steady phase (the service as it runs); the cold one is reported beside it.
  const s = e.steady ?? e;
  const ratio = e.steady ? steadyRatio : coldRatio;
  const targets = {
    ratio: { target: '>= 0.5x plaintext', value: ratio, pass: ratio >= 0.5 },
    freshness: { target: 'processing lag p95 <= 2 s, all processed', value: s.lagSec.p95, pass: s.lagSec.p95 <= 2 && s.drainedAfterLastAckSec !== null },
    rss: { target: 'RSS bounded and reported', value: Math.max(e.rssMaxBytes, s.rssMaxBytes), pass: Number.isFinite(s.rssMaxBytes) },
  };
  const phase = e.steady ? 'steady' : 'cold';
  table([
    { figure: `ingest, ${fmt(o.accounts)} accounts, ~10-point batches (${phase})`, target: '≥ 0.5× plaintext', value: `${fmt(ratio, 2)}×`, verdict: verdict(targets.ratio.pass) },
    ...(e.steady ? [{ figure: 'the same, cold (not a target)', target: 'reported', value: `${fmt(coldRatio, 2)}×`, verdict: '-' }] : []),
    { figure: `freshness p95 (${phase})`, target: '≤ 2 s', value: `${fmt(s.lagSec.p95, 2)} s${s.drainedAfterLastAckSec === null ? ', NOT all processed' : ''}`, verdict: verdict(targets.freshness.pass) },
    { figure: 'collector RSS (max during the windows)', target: 'reported', value: `${fmt(targets.rss.value / 2 ** 20)} MB`, verdict: verdict(targets.rss.pass) },
  ]);
  if (runs.length) {
    console.log(`A/B: ${o.base} (base) and ${o.cli} (this), interleaved, the same envelopes; steady phase unless said${p ? `; plaintext steady ${fmt(e2eBatches(p.steady ?? p))} batches/s` : ''}`);
    table(
      runs.map(([label, r], i) => {
        const st = r.steady ?? r;
        const th = st.cpuWholeRun.threadsMicrosPerBatch;
        return {
          run: `${Math.floor(i / 2) + 1} ${label}`,
          'batches/s e2e': fmt(e2eBatches(st)),
          ratio: p ? `${fmt(ratioOf(st, p.steady ?? p), 2)}×` : '-',
          'cold batches/s': fmt(e2eBatches(r)),
          'lag p95 s': fmt(st.lagSec.p95, 2),
          'CPU µs/batch': fmt(st.cpuWholeRun.microsPerBatch),
          'main / tick / node (pool + V8) / engine': `${fmt(th.main)} / ${fmt(th.tickWorker)} / ${fmt(th.nodeThreads)} (${fmt(th.poolThreads)} + ${fmt(th.v8Threads)}) / ${fmt(th.engine)}`,
          'refused / resent': `${fmt(st.resends.refused)} / ${fmt(st.resends.resent)}`,
          'compaction passes / s': `${fmt(st.compaction.passes)} / ${fmt(st.compaction.seconds, 2)}`,
          'other CPU': fmt(st.otherCpuCores, 2),
        };
      }),
    );
  }
  for (const [name, prof] of Object.entries(e.profiles ?? {})) {
    if (name === 'main' || name === 'tick-worker') printProfile(name, prof);
  }
  writeResult('storefront', { options: { ...o, built: undefined }, build, targets, ratio, coldRatio, steadyRatio, encrypted: e, plaintext: p, ...(runs.length ? { pairs: runs.map(([label, r]) => ({ label, result: r })) } : {}) });
  stopWatchdog();
}

// ---------------------------------------------------------------------------------------------

const isEntry = process.argv[1] && fileURLToPath(new URL(`file://${process.argv[1]}`)) === SELF;
if (!isMainThread) {
  if (workerData?.mode) await buildWorker();
} else if (isEntry && process.argv[2] === '--create-accounts') {
  await createAccounts(process.argv[3], Number(process.argv[4]), process.argv[5]);
} else if (isEntry) {
  try {
    await main();
  } catch (err) {
    console.error(`storefront bench failed: ${err?.stack ?? err}`);
    killAll();
    process.exit(1);
  }
}
