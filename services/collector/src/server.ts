/**
 * Starts one collector process: its services (services.ts), their background work and the
 * HTTP server (app.ts); `close` shuts it down gracefully. What `cipherstat serve` and the tests call.
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Config } from './config.js';
import { createApp } from './app.js';
import { openServices, type OpenOptions, type Services } from './services.js';
import { x25519 } from './x25519.js';

export interface RunningCollector {
  url: string;
  services: Services;
  server: ServerType;
  close: () => Promise<void>;
}

/** Starts the HTTP server and background work; `close` shuts down gracefully. */
export async function startCollector(config: Config, opts: OpenOptions = {}): Promise<RunningCollector> {
  const services = await openServices(config, opts);
  const { processor, log } = services;
  if (services.ownership.length) {
    // Role process: the processor and the compactor run while their leases are held (ownership.ts).
    for (const o of services.ownership) o.start();
  } else {
    if (processor) {
      await processor.recover();
      processor.start();
    }
    // After recovery: orphans of a crashed tick are gone before the first pass looks.
    services.compactor?.start();
  }
  if (services.roles.process) services.lifecycle.start();
  services.accounts.start(); // account state refreshed in the background (accounts.ts)
  services.refusals.start();
  const app = createApp(services);
  const server = await new Promise<ServerType>((resolve) => {
    const srv = serve(
      {
        fetch: app.fetch,
        port: config.port,
        hostname: config.host,
        // Slow or idle clients cannot hold connections open (Node's defaults: 60 s, 300 s, no cap).
        serverOptions: {
          headersTimeout: config.headersTimeoutMs,
          requestTimeout: config.requestTimeoutMs,
          keepAliveTimeout: config.keepAliveTimeoutMs,
        },
      },
      () => resolve(srv),
    );
  });
  server.maxConnections = config.maxConnections;
  const address = server.address() as AddressInfo;
  const url = `http://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}`;
  log.info({ url, role: config.role, dataDir: config.dataDir, x25519: x25519.name }, 'cipherstat collector listening');
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      log.info('shutting down: no new connections, flushing');
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      });
      await services.writer.close();
      services.visitors.destroy(); // today's visitor secret: zeroed, never written anywhere
      await services.refusals.close();
      for (const o of services.ownership) await o.close(); // stops the work, then gives the leases up
      await processor?.stop();
      await services.compactor?.stop();
      await services.lifecycle.stop();
      await services.accounts.stop();
      await services.store.close();
      log.info('stopped');
    })());
  return { url, services, server, close };
}
