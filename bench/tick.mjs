// Tick-worker harness: the tick's CPU part (computeTick: inner open, aggregation, sealing,
// encoding the insert) on storefront-shaped batches, in-process — no server, no engine, so its
// CPU per batch can be compared between two builds without the storefront's noise.
//
//   node --expose-gc bench/tick.mjs [--accounts 10000] [--zipf 1] [--batches-per-tick 1000]
//        [--ticks 40] [--warm-ticks 10] [--dist services/collector/dist] [--base DIR --pairs N]
//        [--profile FILE (a CPU profile of the measured ticks)]
//
// Traffic is the storefront's (bench/storefront.mjs makeBatch: Zipf accounts, 8–12 points of
// an account's ~20 series, envelope v2 with the inner layer deflated). Every account is first
// seen once (a warm pass, as the storefront's steady phase), then --warm-ticks ticks are run
// unmeasured and --ticks measured, each of --batches-per-tick batches on one TickState (the
// worker's: it owns its key copies, a fresh copy per tick as the main thread sends them).
// Reported: CPU µs per batch (this thread's user + system, GC included) and the tick's own
// phase timings (wall ms per tick: open, aggregate, seal, encode), rollup rows per tick, the
// caches' lookups and the heap used at the end; and, apart, `cross`: CPU ms per tick of the
// output's crossing to the main thread, cloned (structuredClone, with the same transfer list) as
// the worker's postMessage sends it — the worker's serializing and the main thread's reading back
// (the build's forTransfer when it has one, else the whole output).
// --base DIR: runs the harness on DIR's collector build (DIR/services/collector/dist) and on
// this one, --pairs times each, interleaved (base, this, base, this…), each in its own process.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { makeBatch, zipfCdf } from './storefront.mjs';
import { fmt, percentile, ROOT } from './lib.mjs';

const SELF = fileURLToPath(import.meta.url);
const { values: o } = parseArgs({
  options: {
    accounts: { type: 'string', default: '10000' },
    zipf: { type: 'string', default: '1' },
    'batches-per-tick': { type: 'string', default: '1000' },
    ticks: { type: 'string', default: '40' },
    'warm-ticks': { type: 'string', default: '10' },
    dist: { type: 'string', default: join(ROOT, 'services/collector/dist') },
    base: { type: 'string' },
    pairs: { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
    profile: { type: 'string' },
  },
});

/** One run's result as printed (alone, or as one side of a pair). */
const summary = (res) =>
  `${fmt(res.usPerBatch, 1)} µs/batch CPU; per tick ${fmt(res.rowsPerTick)} rows, cross ${fmt(res.crossMs, 1)} ms, ms open ${fmt(res.ms.open, 1)} aggregate ${fmt(res.ms.aggregate, 1)} seal ${fmt(res.ms.seal, 1)} encode ${fmt(res.ms.encode, 1)}; load ${res.load}; heap ${res.heapMB} MB; lookups ${JSON.stringify(res.lookups)}`;

if (o.base) {
  // A/B: each run in its own process, interleaved.
  const runs = { base: [], this: [] };
  const args = (dist) => ['--expose-gc', SELF, '--json', '--dist', dist, ...['accounts', 'zipf', 'batches-per-tick', 'ticks', 'warm-ticks'].flatMap((k) => [`--${k}`, o[k]])];
  for (let i = 0; i < Number(o.pairs); i++) {
    for (const [name, dist] of [['base', join(resolve(o.base), 'services/collector/dist')], ['this', o.dist]]) {
      const r = spawnSync(process.execPath, args(dist), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (r.status !== 0) throw new Error(`${name} run failed`);
      const res = JSON.parse(r.stdout.trim().split('\n').pop());
      runs[name].push(res);
      console.log(`pair ${i + 1} ${name.padEnd(4)}: ${summary(res)}`);
    }
  }
  const med = (xs) => percentile([...xs].sort((a, b) => a - b), 0.5);
  console.log(`median µs/batch: base ${fmt(med(runs.base.map((r) => r.usPerBatch)), 1)}, this ${fmt(med(runs.this.map((r) => r.usPerBatch)), 1)}`);
  console.log(`median cross ms/tick: base ${fmt(med(runs.base.map((r) => r.crossMs)), 1)}, this ${fmt(med(runs.this.map((r) => r.crossMs)), 1)}`);
  process.exit(0);
}

const accounts = Number(o.accounts);
const perTick = Number(o['batches-per-tick']);
const P = await import('@cipherstat/protocol');
const N = await import('@cipherstat/protocol/node');
const { computeTick, TickState, transferables, forTransfer } = await import(pathToFileURL(join(o.dist, 'process/tick.js')).href);

// Accounts: one key version each (X25519 pair, data key, MAC key).
const keys = Array.from({ length: accounts }, () => {
  const secretKey = new Uint8Array(randomBytes(32));
  return { version: 1, publicKey: N.nodePublicKeyOf(secretKey), secretKey, dataKey: new Uint8Array(randomBytes(32)), macKey: new Uint8Array(randomBytes(32)) };
});
const ids = Array.from({ length: accounts }, (_, i) => `acct_${String(i).padStart(6, '0')}_bench`);
// minute-aligned (5 s into a minute: a batch's 10 s span two minute buckets), so every run has the same rows per tick
const baseTime = Math.floor(Date.now() / 60_000) * 60_000 + 5_000;
const cdf = zipfCdf(accounts, Number(o.zipf));
let nextBatch = 0;
/** The inner layer of a storefront batch, as ingest hands it to processing. */
function batch(account) {
  const b = makeBatch(nextBatch++, cdf, baseTime, account);
  const accountId = ids[b.account];
  const batchId = randomBytes(16).toString('hex');
  const plain = P.encodeInner(accountId, batchId, b.points);
  const sealed = N.hpkeSeal(keys[b.account].publicKey, P.INFO_INNER, P.innerAad(accountId, batchId, P.FLAG_DEFLATE), N.deflateRaw(plain));
  return { accountId, batchId, sealed, pointCount: b.points.length, receivedAt: baseTime, version: 2, flags: P.FLAG_DEFLATE };
}
const copy = (k) => ({ version: k.version, publicKey: k.publicKey, secretKey: k.secretKey.slice(), dataKey: k.dataKey.slice(), macKey: k.macKey.slice() });
function input(rows, t) {
  const accs = new Map();
  for (const r of rows) if (!accs.has(r.accountId)) accs.set(r.accountId, { keys: [copy(keys[Number(r.accountId.slice(5, 11))])], retentionDays: 400, confidential: false });
  return { rows, accounts: accs, now: baseTime + 1000 + t, part: `bench-${t}`, limits: { seriesPerMetric: 1000, newValuesPerHour: 100_000 } };
}

const state = new TickState(true);
// The warm pass: every account once.
for (let a = 0; a < accounts; a += perTick) computeTick(state, input(Array.from({ length: Math.min(perTick, accounts - a) }, (_, i) => batch(a + i)), a));
const ticks = Number(o['warm-ticks']) + Number(o.ticks);
const inputs = Array.from({ length: ticks }, (_, t) => input(Array.from({ length: perTick }, () => batch()), accounts + t));
let cpu = 0;
let cross = 0;
let rows = 0;
const ms = { open: 0, aggregate: 0, seal: 0, encode: 0 };
const lookups = {};
globalThis.gc?.();
let session;
for (let t = 0; t < ticks; t++) {
  const measured = t >= Number(o['warm-ticks']);
  if (measured && o.profile && !session) {
    // --profile FILE: a CPU profile of the measured ticks only (chrome://inspect, or bench/lib.mjs printProfile)
    session = new (await import('node:inspector')).Session();
    session.connect();
    await new Promise((r) => session.post('Profiler.enable', () => session.post('Profiler.start', r)));
  }
  const c0 = process.cpuUsage();
  const out = computeTick(state, inputs[t]);
  const c = process.cpuUsage(c0);
  inputs[t] = undefined;
  const x0 = process.cpuUsage();
  const sent = forTransfer ? forTransfer(out) : out;
  structuredClone(sent, { transfer: transferables(sent) });
  const x = process.cpuUsage(x0);
  if (!measured) continue;
  cross += x.user + x.system;
  cpu += c.user + c.system;
  rows += out.rollups.length;
  for (const k in ms) ms[k] += out.timings[k];
  for (const [k, v] of Object.entries(out.cacheLookups)) ((lookups[k] ??= { hit: 0, miss: 0 }).hit += v.hit), (lookups[k].miss += v.miss);
}
if (session) {
  const { profile } = await new Promise((r, j) => session.post('Profiler.stop', (e, p) => (e ? j(e) : r(p))));
  (await import('node:fs')).writeFileSync(o.profile, JSON.stringify(profile));
}
const n = Number(o.ticks);
const res = { usPerBatch: cpu / (n * perTick), crossMs: cross / 1000 / n, rowsPerTick: rows / n, ms: Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, v / n])), load: (await import('node:os')).loadavg()[0].toFixed(1), lookups, heapMB: Math.round(process.memoryUsage().heapUsed / 1e6) };
if (o.json) console.log(JSON.stringify(res));
else console.log(summary(res));
