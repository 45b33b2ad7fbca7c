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
// over the same pre-built, distinct bodies, in each of --runs runs (default 3; the median run by
// ratio is reported, with every run's row). Results: bench/results/ingest.json.
//
//   node bench/ingest.mjs [--runs 3] [--duration 12] [--warmup 3] [--concurrency 64] [--batches 30000]
//                         [--client http|fetch] [--only encrypted|plaintext] [--pin] [--envelope v2|v2plain|v1|v1,v2|v2plain,v2]
//                         [--result ingest]
//                         [--profile] [--keep] [--cli path/to/collector/dist/cli.js]
//
// --envelope which envelope version(s) the encrypted pipeline is sent (default v2, what the Library
//            sends in Node: deflated inner plaintext, flag 0x01; v2plain: without compression, flags 0, as browsers send;
//            sends); `v1,v2` measures both in every run, each with its own ratio to the same plaintext run.
// --result   name of the JSON in bench/results/ (default ingest; `npm run bench hpke` writes its own).
// --pin      load generator on CPU 0, server child on CPU 1 (default: no pinning, the OS
//            shares both cores; each side's CPU use is measured and printed).
// --profile  runs the collector child (run 1) with --cpu-prof: one profile per thread in bench/results/
//            (ingest-main.cpuprofile, ingest-tick-worker.cpuprofile, …); prints the top self-time
//            functions of the main thread and of the tick worker over the measured window.
// --keep     keeps the temporary data directories.
// --cli      another build of the collector (A/B experiments on a scratch copy).
// --store-only  CIPHERSTAT_PROCESSING=false for the collector: batches stored, nothing processed (the ingest ceiling).
// --process-worker 0|1  sets CIPHERSTAT_PROCESS_WORKER for the collector (default: its own default, on).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  LIB, mainThreadCpuSeconds, buildBodies, buildInfo, collectProfiles, diskSummary, envelopeSealer, fmt, formatColumnSplit, formatTickSplit, freePort, killAll, loadPipeline, makeSender, pinSelf, postBodies, printProfile,
  processCpuSeconds, profileFlags, plaintextRun, processingTicker, progress, runChildJson, scrape, startChild, stopChild, table, tickSplit, waitProcessed, waitReady, watchdog, writeResult,
} from './lib.mjs';
import { mulberry32 } from '../test/support/seeded.mjs';

const SELF = fileURLToPath(import.meta.url);
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
  let encode;
  if (mode === 'envelope') {
    const seal = await envelopeSealer({ ...keys, envelope: workerData.envelope });
    const accountPk = new Uint8Array(keys.accountPublicKey);
    encode = (i) => seal(keys.accountId, accountPk, makePoints(i, baseTime), baseTime);
  } else {
    const enc = new TextEncoder();
    encode = (i) => enc.encode(JSON.stringify(makePoints(i, baseTime)));
  }
  postBodies(parentPort, from, to, encode);
}




// ---------------------------------------------------------------------------------------------
// The two pipelines.

async function encryptedPipeline(o, tmp, envelope) {
  progress(`encrypted pipeline (envelope ${envelope}): starting the collector child`);
  const dataDir = join(tmp, `collector-${envelope}`);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const profDir = join(tmp, 'profile');
  const args = [...(o.profile ? profileFlags(profDir) : []), o.cli, 'serve'];
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
      ...(o.storeOnly ? { CIPHERSTAT_PROCESSING: 'false' } : {}),
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
    const { bodies, avgBytes } = await buildBodies(SELF, `envelope ${envelope}`, o.batches, { mode: 'envelope', envelope, baseTime: Date.now(), keys });

    const send = makeSender(o.client, url, '/v1/batches', 'application/octet-stream', o.concurrency);
    let atStart;
    let cpuAtStart;
    let mainCpuAtStart;
    const load = await loadPipeline(o, 'encrypted', send, bodies, child.pid, {
      pointsOf: () => POINTS_PER_BATCH,
      onWindowStart: async () => {
        cpuAtStart = processCpuSeconds(child.pid);
        mainCpuAtStart = mainThreadCpuSeconds(child.pid);
        atStart = await scrape(url);
      },
      onTick: processingTicker(url),
    });
    const atEnd = await scrape(url);
    pinSelf(o.pin ? '0-' + (os.cpus().length - 1) : undefined);
    progress(`encrypted pipeline: load stopped; waiting for processing to catch up (${fmt(atEnd.processQueue)} batches queued)`);
    const want = load.batchesAcked + 1; // + preflight
    const drain = o.storeOnly ? { final: atEnd, lagSec: {}, drainedAfterLastAckSec: null } : await waitProcessed(url, { want, atStart, lastAck: load.lastAck, timeoutSec: o.drainTimeout });
    const { final } = drain;
    // Load-insensitive: the collector's CPU (all threads) from the window's start until all was
    // processed, per point and per batch processed in that span (each also ingested in it).
    const processedInSpan = final.processed - (atStart?.processed ?? 0);
    const spanCpuSec = processCpuSeconds(child.pid) - cpuAtStart;
    const spanMainCpuSec = mainThreadCpuSeconds(child.pid) - mainCpuAtStart;
    const windowSec = load.windowSec;
    const result = {
      url,
      envelope,
      envelopeBytes: avgBytes,
      ...load,
      pointsPerSecProcessed: o.storeOnly ? NaN : atStart ? (atEnd.processed - atStart.processed) / ((atEnd.at - atStart.at) / 1000) : NaN,
      pointsAcked: (load.batchesAcked + 1) * POINTS_PER_BATCH,
      pointsProcessed: final.processed,
      pointsRejected: final.rejected,
      lagSec: drain.lagSec,
      drainedAfterLastAckSec: drain.drainedAfterLastAckSec,
      insertMs: {
        batchesMean: (1000 * (atEnd.insertBatchesSum - atStart.insertBatchesSum)) / Math.max(1, atEnd.insertBatchesCount - atStart.insertBatchesCount),
        batchesInserts: atEnd.insertBatchesCount - atStart.insertBatchesCount,
        rollupsMean: (1000 * (atEnd.insertRollupsSum - atStart.insertRollupsSum)) / Math.max(1, atEnd.insertRollupsCount - atStart.insertRollupsCount),
        rollupsInserts: atEnd.insertRollupsCount - atStart.insertRollupsCount,
      },
      // Ticks from the window's start until all was processed (the drain included).
      tick: tickSplit(atStart, final),
      batchesPerInsert: ((atEnd.accepted - atStart.accepted) / Math.max(1, atEnd.insertBatchesCount - atStart.insertBatchesCount)),
      windowSecUsed: windowSec,
      cpuWholeRun: {
        seconds: spanCpuSec,
        points: processedInSpan,
        microsPerPoint: (spanCpuSec * 1e6) / processedInSpan,
        microsPerBatch: (spanCpuSec * 1e6 * POINTS_PER_BATCH) / processedInSpan,
        // Of which the main thread (HTTP, envelopes, storage calls): what limits ingest when it is saturated.
        mainMicrosPerPoint: (spanMainCpuSec * 1e6) / processedInSpan,
      },
    };
    progress('encrypted pipeline: stopping the collector');
    const stopped = await stopChild(child);
    if (stopped.code !== 0) progress(`  collector exited with ${stopped.code ?? stopped.signal}`);
    if (o.profile) result.profiles = collectProfiles(profDir, `ingest-${envelope}`, { startUs: load.windowStartHrUs, endUs: load.windowEndHrUs });
    progress('encrypted pipeline: measuring bytes on disk');
    result.disk = await runChildJson([LIB, '--disk-usage', join(dataDir, 'clickhouse'), 'cipherstat']);
    return result;
  } finally {
    await stopChild(child, 5000);
  }
}

async function plaintextPipeline(o, tmp) {
  const result = await plaintextRun(o, tmp, {
    self: SELF,
    bodyData: { mode: 'json', baseTime: Date.now() },
    label: 'the same points',
    client: o.client,
    pointsOf: () => POINTS_PER_BATCH,
    pin: o.pin ? { cpu: 1 } : undefined,
    disk: true,
    afterLoad: () => pinSelf(o.pin ? '0-' + (os.cpus().length - 1) : undefined),
  });
  return { ...result, pointsAcked: (result.batchesAcked + 1) * POINTS_PER_BATCH };
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
      envelope: { type: 'string', default: 'v2' },
      result: { type: 'string', default: 'ingest' },
      'drain-timeout': { type: 'string', default: '60' },
      cli: { type: 'string', default: 'services/collector/dist/cli.js' },
      'store-only': { type: 'boolean', default: false },
      'process-worker': { type: 'string' },
      pin: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      runs: { type: 'string', default: '3' },
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
    storeOnly: values['store-only'],
    processWorker: values['process-worker'],
    pin: values.pin,
    profile: values.profile,
    runs: Math.max(1, Number(values.runs)),
    envelopes: values.envelope.split(','),
  };
  if (!o.envelopes.every((v) => v === 'v1' || v === 'v2' || v === 'v2plain')) throw new Error(`--envelope: v1, v2, v2plain or a list of them (got ${values.envelope})`);
  // Everything is bounded: a watchdog ends the run (and the children) if something hangs.
  const stopWatchdog = watchdog('ingest', o.runs * ((1 + o.envelopes.length) * (o.warmup + o.duration + o.drainTimeout) + 300));

  const build = buildInfo(o.cli);
  if (build.stale) progress(`WARNING: ${build.stale}`);
  progress(`ingest bench: ${o.runs} run(s), ${os.cpus().length} cores, ${o.pin ? 'load generator pinned to CPU 0, server child to CPU 1' : 'no CPU pinning (OS shares both cores; CPU use of each side is measured)'}`);
  // End to end = acknowledged and processed; with --store-only nothing is processed (ingest ceiling).
  const e2e = (r, enc) => (r ? (o.storeOnly && enc ? r.pointsPerSecAcked : Math.min(r.pointsPerSecAcked, r.pointsPerSecProcessed)) : NaN);
  const runs = [];
  for (let n = 1; n <= o.runs; n++) {
    const tmp = mkdtempSync(join(os.tmpdir(), 'cipherstat-bench-ingest-'));
    progress(`run ${n}/${o.runs}: data in ${tmp}`);
    const run = { n };
    try {
      // Each run measures both pipelines back to back, so every ratio has a baseline of its own moment.
      // With several envelopes, the order alternates between runs (load drifts on a shared machine).
      const order = n % 2 ? o.envelopes : [...o.envelopes].reverse();
      if (values.only !== 'plaintext') {
        run.envelopes = {};
        for (const v of order) {
          run.envelopes[v] = await encryptedPipeline({ ...o, profile: o.profile && n === 1 && v === order[0] }, tmp, v);
          globalThis.gc?.(); // drop the encrypted bodies before building the next ones
        }
        run.encrypted = run.envelopes[o.envelopes[0]];
      }
      if (values.only !== 'encrypted') run.plaintext = await plaintextPipeline(o, tmp);
    } finally {
      if (!values.keep) rmSync(tmp, { recursive: true, force: true });
      else progress(`kept ${tmp}`);
    }
    for (const [r, enc] of [...Object.values(run.envelopes ?? {}).map((r) => [r, true]), [run.plaintext, false]]) {
      if (!r) continue;
      r.diskSummary = diskSummary(r.disk, r.pointsAcked);
      delete r.disk;
      r.pointsPerSecEndToEnd = e2e(r, enc);
      r.serverCpuMicrosPerPoint = (r.serverCpuCores * 1e6) / e2e(r, enc);
    }
    for (const r of Object.values(run.envelopes ?? {})) r.ratio = run.plaintext ? r.pointsPerSecEndToEnd / run.plaintext.pointsPerSecEndToEnd : NaN;
    run.ratio = run.encrypted ? run.encrypted.ratio : NaN;
    runs.push(run);
    globalThis.gc?.();
  }

  // The median run by ratio (or by encrypted throughput when only one pipeline ran).
  const byRatio = [...runs].sort((a, b) => (a.ratio - b.ratio) || ((a.encrypted?.pointsPerSecEndToEnd ?? 0) - (b.encrypted?.pointsPerSecEndToEnd ?? 0)));
  const median = byRatio[Math.floor((byRatio.length - 1) / 2)];
  const medianOf = (f) => {
    const v = runs.map(f).filter(Number.isFinite).sort((a, b) => a - b);
    return v.length ? (v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2) : NaN;
  };
  const ratio = medianOf((r) => r.ratio);
  const lagP95 = medianOf((r) => r.encrypted?.lagSec.p95);
  const row = (name, r, isEnc, runRatio) => ({
    pipeline: name,
    'pts/s acked': fmt(r.pointsPerSecAcked),
    'pts/s e2e': fmt(r.pointsPerSecEndToEnd),
    'ratio e2e': isEnc ? (Number.isFinite(runRatio) ? fmt(runRatio, 2) + '×' : '-') : '1.00×',
    'ack p50 ms': fmt(r.ackMs.p50, 1),
    'ack p99 ms': fmt(r.ackMs.p99, 1),
    'lag p50/p95 s': isEnc ? (o.storeOnly ? 'n/a' : `${fmt(r.lagSec.p50, 2)} / ${fmt(r.lagSec.p95, 2)}`) : '0 (202 after insert)',
    'B/point': `${fmt(r.diskSummary.asIngested.bytesPerPoint, 1)} (${fmt(r.diskSummary.optimized.bytesPerPoint, 1)} opt.)`,
    'srv CPU µs/pt': fmt(r.serverCpuMicrosPerPoint, 1),
    'CPU µs/pt (/batch; main thread) window→drained': r.cpuWholeRun ? `${fmt(r.cpuWholeRun.microsPerPoint, 1)} (${fmt(r.cpuWholeRun.microsPerBatch)}; main ${fmt(r.cpuWholeRun.mainMicrosPerPoint, 1)})` : `${fmt(r.serverCpuMicrosPerPoint, 1)} (${fmt(r.serverCpuMicrosPerPoint * POINTS_PER_BATCH)})`,
    'RSS MB': fmt(r.rssMaxBytes / 2 ** 20),
    'CPU srv/gen/other': `${fmt(r.serverCpuCores, 2)} / ${fmt(r.loadgenCpuCores, 2)} / ${fmt(r.otherCpuCores, 2)}`,
  });
  console.log('');
  table(
    runs.flatMap((run) => [
      ...Object.entries(run.envelopes ?? {}).map(([v, r]) =>
        row(`run ${run.n}${run === median ? ' (median)' : ''}: ${o.storeOnly ? 'encrypted, stored only (not processed)' : 'encrypted (collector)'}, envelope ${v}`, r, true, r.ratio),
      ),
      ...(run.plaintext ? [row(`run ${run.n}: plaintext Hono→chDB`, run.plaintext, false)] : []),
    ]),
  );
  console.log('CPU columns: server CPU time per end-to-end point; cores used during the measured window by the server child / the load generator / everything else on the machine.');
  const noisy = runs.flatMap((run) => [...Object.values(run.envelopes ?? {}), run.plaintext]).filter((r) => r && r.otherCpuCores > 0.2);
  if (noisy.length) console.log(`WARNING: other processes used ${noisy.map((r) => fmt(r.otherCpuCores, 2)).join(' / ')} cores during the runs; the numbers are skewed. Re-run on a quiet machine.`);
  console.log('');
  const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
  const targets = {};
  const e = median.encrypted;
  const p = median.plaintext;
  const rows = [];
  if (e && !o.storeOnly) {
    const drained = runs.every((r) => r.encrypted.drainedAfterLastAckSec !== null);
    targets.freshness = { target: 'processing lag p95 <= 2 s (median of runs), every run drained', value: lagP95, pass: lagP95 <= 2 && drained };
    rows.push({ figure: 'freshness p95 (median of runs)', target: '≤ 2 s', value: `${fmt(lagP95, 2)} s (runs: ${runs.map((r) => fmt(r.encrypted.lagSec.p95, 2)).join(', ')})${drained ? '' : ', NOT all drained'}`, verdict: verdict(targets.freshness.pass) });
    targets.throughput = { target: '>= 100k points/s end to end (median run)', value: e.pointsPerSecEndToEnd, pass: e.pointsPerSecEndToEnd >= 100_000 };
    rows.push({ figure: 'encrypted end to end (median run)', target: '≥ 100k pts/s', value: `${fmt(e.pointsPerSecEndToEnd)} pts/s`, verdict: verdict(targets.throughput.pass) });
  }
  if (e && p) {
    targets.ratio = { target: '>= 0.6x plaintext (median of runs)', value: ratio, pass: ratio >= 0.6 };
    rows.push({ figure: `ratio to plaintext (median of runs, envelope ${o.envelopes[0]})`, target: '≥ 0.6×', value: `${fmt(ratio, 2)}× (runs: ${runs.map((r) => fmt(r.ratio, 2) + '×').join(', ')})`, verdict: verdict(targets.ratio.pass) });
  }
  // Both envelopes measured: v2 (what the Library sends) against v1, each against the plaintext run it shared.
  const ratios = Object.fromEntries(o.envelopes.map((v) => [v, medianOf((r) => r.envelopes?.[v]?.ratio)]));
  // Bytes on disk per point as ingested (system.parts right after processing drained, before any
  // OPTIMIZE), each envelope against the plaintext table of its own run (median run).
  if (p) {
    const bytes = {};
    for (const [v, r] of Object.entries(median.envelopes ?? {})) {
      const t = r.diskSummary.asIngested.tables;
      const ratioB = r.diskSummary.asIngested.bytesPerPoint / p.diskSummary.asIngested.bytesPerPoint;
      bytes[v] = { bytesPerPoint: r.diskSummary.asIngested.bytesPerPoint, batches: t.batches?.bytesPerPoint, rollups: t.rollups?.bytesPerPoint, plaintext: p.diskSummary.asIngested.bytesPerPoint, ratio: ratioB, pass: ratioB <= 4 };
      rows.push({
        figure: `bytes on disk per point as ingested, envelope ${v} (median run)`,
        target: '≤ 4× plaintext',
        value: `${fmt(ratioB, 2)}× (${fmt(bytes[v].bytesPerPoint, 1)} vs ${fmt(bytes[v].plaintext, 1)}; batches ${fmt(bytes[v].batches, 1)}, rollups ${fmt(bytes[v].rollups, 1)})`,
        verdict: verdict(bytes[v].pass),
      });
    }
    targets.bytes = { target: 'bytes on disk per point as ingested <= 4x plaintext (median run)', value: bytes, pass: Object.values(bytes).every((b) => b.pass) };
  }
  if (e && p && o.envelopes.includes('v1') && o.envelopes.includes('v2')) {
    targets.envelopes = { target: 'v2 ratio >= v1 ratio (medians of runs)', value: ratios, pass: ratios.v2 >= ratios.v1 };
    rows.push({ figure: 'ratio to plaintext, envelope v1 → v2 (medians)', target: 'v2 ≥ v1', value: `${fmt(ratios.v1, 2)}× → ${fmt(ratios.v2, 2)}×`, verdict: verdict(targets.envelopes.pass) });
  }
  if (rows.length) table(rows);
  if (e && !o.storeOnly) {
    console.log(`  collector (median run): ${fmt(e.batchesPerInsert, 1)} batches per group-commit insert, insert mean ${fmt(e.insertMs.batchesMean, 1)} ms; rollup insert mean ${fmt(e.insertMs.rollupsMean, 1)} ms`);
    console.log(`  ticks (median run): ${formatTickSplit(e.tick)}`);
  }
  for (const [name, r] of [['encrypted', e], ['plaintext', p]]) {
    if (!r) continue;
    const t = Object.entries(r.diskSummary.asIngested.tables).map(([k, v]) => `${k} ${fmt(v.bytesPerPoint, 2)}`).join(', ');
    console.log(`bytes on disk per point, ${name} (median run): ${fmt(r.diskSummary.asIngested.bytesPerPoint, 1)} as ingested (${t}); ${fmt(r.diskSummary.optimized.bytesPerPoint, 1)} after OPTIMIZE FINAL`);
    for (const line of formatColumnSplit(r.diskSummary)) console.log(line);
  }
  for (const [thread, prof] of Object.entries(runs[0]?.encrypted?.profiles ?? {})) {
    if (thread === 'main' || thread === 'tick-worker') printProfile(`run 1, ${thread}`, prof);
  }
  writeResult(values.result, {
    options: { ...o, pointsPerBatch: POINTS_PER_BATCH, cpuSplit: o.pin ? 'loadgen CPU 0, server CPU 1' : 'unpinned' },
    build,
    targets,
    ratio,
    ratios,
    medianRun: median.n,
    encrypted: e,
    plaintext: p,
    runs: runs.map(({ encrypted, ...run }) => run),
  });
  stopWatchdog();
}

// ---------------------------------------------------------------------------------------------

const isEntry = process.argv[1] && fileURLToPath(new URL(`file://${process.argv[1]}`)) === SELF;
if (!isMainThread) {
  if (workerData?.mode) await buildWorker();
} else if (!isEntry) {
  // imported (makePoints): nothing to run
} else {
  try {
    await main();
  } catch (err) {
    console.error(`ingest bench failed: ${err?.stack ?? err}`);
    killAll();
    process.exit(1);
  }
}
