/**
 * Ingest nodes hold transport keys only (README, "The transport keyring"): `cipherstat keyring
 * export-transport` writes an ingest node's data directory whose keyring has the collector's
 * transport keys and no account entry, wrapped under a master key of its own. An ingest-only
 * node refuses to start on a keyring whose account entries it can read; on the exported one it
 * acknowledges batches that a process node (with the full keyring) then processes, and a dump
 * of its whole memory (/proc/PID/mem: ArrayBuffers and native heaps too) and its V8 heap
 * snapshot hold none of the account's keys in any encoding. Positive controls: the same dump
 * finds the ingest node's transport secret key, and the dump of the full node finds the
 * account key. All nodes are the built CLI in child processes on one ClickHouse HTTP endpoint.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { until } from './lifecycle-support.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { Keyring, staticMasterKeys } from '../src/keyring/index.js';
import { startClickHouseHttp, type ClickHouseHttp } from './support/clickhouse-http.js';
import { ADMIN_TOKEN, createAccount, envelope, points, post } from './support/collector.js';
import { CLI, startCollectorProcess, stopProcess, type CollectorProcess } from './support/faults.js';
import { encodings, processMemoryIncludes } from './support/memory.js';
import { tempDirs } from './support/temp-dirs.js';

const exec = promisify(execFile);
/** README.md's transport keyring block: the export line and the ingest node's serve line. */
const README_LINES = /<!-- readme-test: transport-keyring -->\n```sh\n([\s\S]*?)\n```/
  .exec(readFileSync(fileURLToPath(new URL('../../../README.md', import.meta.url)), 'utf8'))![1]!
  .split('\n')
  .map((l) => l.replace(/\s+#.*$/, '').trim())
  .filter(Boolean);
const tmp = tempDirs('cipherstat-transport-');

let shim: ClickHouseHttp;
beforeAll(async () => {
  shim = await startClickHouseHttp({ dataDir: tmp('ch') });
});
afterAll(async () => {
  await shim?.close();
});


const processedOn = async (accountId: string): Promise<number> => {
  const q = `SELECT count() FROM cipherstat.processed FINAL WHERE account_id = '${accountId}'`;
  const res = await fetch(`${shim.url}/?query=${encodeURIComponent(q)}`);
  return res.ok ? Number((await res.text()).trim()) : 0;
};

describe('the transport keyring of ingest nodes', () => {
  it('an ingest node refuses the full keyring, ingests with the exported one, and its memory holds no account key', { timeout: 600_000 }, async () => {
    expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
    const masterKey = toBase64(randomBytes(32));
    const fullDir = tmp('full');
    const common = { CLICKHOUSE_URL: shim.url, CIPHERSTAT_MASTER_KEY: masterKey };
    const nodes: CollectorProcess[] = [];
    try {
      // A node with the full keyring creates the account and processes what ingest stores.
      const full = await startCollectorProcess(fullDir, common);
      nodes.push(full);
      const account = await createAccount({
        admin: (method, path, body) =>
          fetch(full.url + path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) }),
      });

      // 1. The full keyring on an ingest-only node: refused, naming what to do.
      const refused = (await startCollectorProcess(fullDir, { ...common, CIPHERSTAT_ROLE: 'ingest' }).then(
        (p) => (nodes.push(p), undefined),
        (e: { output: string; code: number }) => e,
      ))!;
      expect(refused, 'the ingest node started on the full keyring').toBeDefined();
      expect(refused.code).toBe(1);
      expect(refused.output).toContain('an ingest-only node holds transport keys only, but it can read 1 account entry');
      expect(refused.output).toContain('cipherstat keyring export-transport');

      // 2. The export, as the README writes it: transport keys only, under the ingest node's own master key.
      const ingestDir = join(tmp('ingest'), 'data');
      const [exportLine, serveLine] = README_LINES.map((l) => l.replaceAll('/srv/ingest-data', ingestDir).split(/\s+/));
      expect(exportLine!.slice(0, 2)).toEqual(['cipherstat', 'keyring']);
      expect(serveLine!.slice(0, 2)).toEqual(['cipherstat', 'serve']);
      const env = { ...process.env, CIPHERSTAT_DATA_DIR: fullDir, CIPHERSTAT_MASTER_KEY: masterKey };
      const { stdout } = await exec(process.execPath, [CLI, ...exportLine!.slice(1), '--json'], { env });
      const exported = JSON.parse(stdout) as { keyIds: string[]; accounts: number };
      expect(exported).toMatchObject({ keyIds: [account.collectorKey.keyId], accounts: 0 });
      expect(readdirSync(join(ingestDir, 'keyring')).filter((n) => n.endsWith('.json') && n !== 'master-rotation.json')).toEqual(['transport.json']);
      // Its master key opens nothing of the full keyring: it is not the full keyring's.
      expect(readFileSync(join(ingestDir, 'master-keys', 'v1.key'), 'utf8').trim()).not.toBe(masterKey);
      // A second export into the same place is refused (nothing overwritten).
      await expect(exec(process.execPath, [CLI, 'keyring', 'export-transport', '--out', ingestDir], { env })).rejects.toMatchObject({ stderr: expect.stringContaining('exists') });

      // 3. The ingest node on the exported keyring (no CIPHERSTAT_MASTER_KEY: its own key in its data directory).
      const snapshots = tmp('snap');
      const ingest = await startCollectorProcess(tmp('unused'), { CLICKHOUSE_URL: shim.url }, { args: serveLine!.slice(2), nodeArgs: ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshots}`] });
      nodes.push(ingest);
      expect(ingest.output()).toContain('transport-only keyring');
      for (let i = 0; i < 5; i++) {
        const res = await post(ingest.url, envelope(account, points(10, (j) => ({ value: j, tags: { country: ['DE', 'FR'][j % 2]! } }))).bytes);
        expect(res.status).toBe(202);
      }
      // The process node (full keyring) opens and counts them: the ingest node stored them whole.
      await until(async () => (await processedOn(account.accountId)) === 5, 180_000, 'the ingest node\'s batches processed');

      // 4. Memory: the account's secret, data and MAC keys, raw, base64, base64url and hex.
      const fullKeyring = Keyring.open({ dir: join(fullDir, 'keyring'), master: staticMasterKeys({ 1: Buffer.from(masterKey, 'base64') }) });
      const keys = fullKeyring.accountKeys(account.accountId)!;
      const needles = keys.flatMap((k) => [k.secretKey, k.dataKey, k.macKey]).flatMap(encodings);
      const transportSecret = Buffer.from(fullKeyring.currentTransportKey().secretKey);
      const [transportSeen, ...accountSeen] = processMemoryIncludes(ingest.child.pid!, [transportSecret, ...needles]);
      expect(transportSeen, 'positive control: the dump sees the ingest node\'s transport secret key').toBe(true);
      expect(accountSeen.filter(Boolean).length, 'account key material in the ingest node\'s memory').toBe(0);
      // Positive control: the full node, which processed the batches, holds the account key.
      expect(processMemoryIncludes(full.child.pid!, [Buffer.from(keys[0]!.secretKey)])[0], 'the full node\'s dump finds the account key').toBe(true);

      // The V8 heap snapshot of the ingest node (written on SIGUSR2; the next answer comes after it).
      ingest.child.kill('SIGUSR2');
      await until(async () => readdirSync(snapshots).some((n) => n.endsWith('.heapsnapshot')), 180_000, 'the heap snapshot');
      expect((await fetch(`${ingest.url}/healthz`)).status).toBe(200);
      const snapshot = readFileSync(join(snapshots, readdirSync(snapshots).find((n) => n.endsWith('.heapsnapshot'))!));
      expect(snapshot.includes(Buffer.from(account.accountId)), 'positive control: the snapshot holds the account id it served').toBe(true);
      expect(needles.filter((n) => snapshot.includes(n)).length, 'account key material in the heap snapshot').toBe(0);
    } finally {
      for (const n of nodes) await stopProcess(n);
    }
  });
});
