/**
 * Test support: a TCP proxy in front of a storage endpoint that fails for real.
 * - `pass`: bytes flow both ways;
 * - `refuse`: nothing listens on the port any more (connect → ECONNREFUSED), open
 *   connections are closed;
 * - `kill`: every open connection is reset mid-request, then like `refuse` (the server died);
 * - `hang`: connections are accepted and open ones kept, but no byte flows either way (a
 *   stalled server or a black-holed network). Leaving `hang` resets those connections, as the
 *   network would once its timeouts fire.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../../src/config.js';
import { startClickHouseHttp, type ClickHouseHttp } from './clickhouse-http.js';
import { startTestCollector, type TestCollector } from './collector.js';

export type FaultMode = 'pass' | 'refuse' | 'kill' | 'hang';

export interface FaultProxy {
  url: string;
  mode(m: FaultMode): Promise<void>;
  close(): Promise<void>;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  let current: FaultMode = 'pass';
  const open = new Set<Socket>();
  const hung = new Set<Socket>();

  const onConnection = (client: Socket) => {
    open.add(client);
    client.on('close', () => {
      open.delete(client);
      hung.delete(client);
    });
    client.on('error', () => {});
    if (current === 'hang') {
      hung.add(client); // accepted, never answered
      client.resume();
      return;
    }
    const server = connect(Number(target.port), target.hostname);
    open.add(server);
    server.on('close', () => {
      open.delete(server);
      client.destroy();
    });
    server.on('error', () => client.destroy());
    client.on('close', () => server.destroy());
    client.on('data', (d) => {
      if (current === 'hang') hung.add(client);
      else server.write(d);
    });
    server.on('data', (d) => {
      if (current === 'hang') hung.add(client);
      else client.write(d);
    });
  };

  let listener: Server = createServer(onConnection);
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const port = (listener.address() as { port: number }).port;
  // Stops accepting at once (the close callback would wait for open connections).
  const stopListening = () => void listener.close();

  return {
    url: `http://127.0.0.1:${port}`,
    async mode(m) {
      const was = current;
      current = m;
      if (was === 'hang' && m !== 'hang') for (const s of hung) s.resetAndDestroy();
      if (m === 'kill') for (const s of open) s.resetAndDestroy();
      if (m === 'refuse') for (const s of open) s.destroy();
      const listening = was !== 'refuse' && was !== 'kill';
      if ((m === 'refuse' || m === 'kill') && listening) stopListening();
      if ((m === 'pass' || m === 'hang') && !listening) {
        listener = createServer(onConnection);
        await new Promise<void>((resolve, reject) => {
          listener.once('error', reject);
          listener.listen(port, '127.0.0.1', resolve);
        });
      }
    },
    async close() {
      for (const s of open) s.destroy();
      if (current !== 'refuse' && current !== 'kill') stopListening();
    },
  };
}

/**
 * A test collector on the test ClickHouse HTTP endpoint (chDB in this process, on a temp dir)
 * behind a fault proxy, without compaction unless a test runs it. `close` ends all three.
 */
export async function collectorBehindFaultProxy(config: Partial<Config> = {}): Promise<{ c: TestCollector; proxy: FaultProxy; shim: ClickHouseHttp; close: () => Promise<void> }> {
  const chDir = mkdtempSync(join(tmpdir(), 'cipherstat-faults-ch-'));
  const shim = await startClickHouseHttp({ dataDir: chDir });
  const proxy = await startFaultProxy(shim.url);
  const c = await startTestCollector({ config: { clickhouseUrl: proxy.url, ...config }, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
  const close = async () => {
    await proxy.mode('pass');
    await c.stop();
    await proxy.close();
    await shim.close();
    rmSync(chDir, { recursive: true, force: true });
  };
  return { c, proxy, shim, close };
}
