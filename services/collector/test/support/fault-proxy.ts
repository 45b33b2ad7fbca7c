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
import { createServer, connect, type Server, type Socket } from 'node:net';

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
