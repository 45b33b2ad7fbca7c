/** Cross-package browser tests: Debian's Chromium (playwright-core) and a storefront server on another origin. */
import { existsSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';

/** Debian's Chromium; `ignoreDefaultArgs`: playwright's defaults to leave out (e.g. `--disable-back-forward-cache`). */
export async function launchChromium(ignoreDefaultArgs?: string[]): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install -y chromium)`);
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], ignoreDefaultArgs });
}

/** Serves `pages` (path → HTML, read at each request) with `headers`; 404 otherwise. */
export const servePages =
  (pages: Map<string, string>, headers: Record<string, string> = {}): RequestListener =>
  (req, res) => {
    const page = pages.get((req.url ?? '/').split('?')[0]!);
    if (!page) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'text/html', ...headers });
    res.end(page);
  };

/** A storefront on 127.0.0.1 (its own origin, not the collector's). */
export async function startShop(handler: RequestListener): Promise<{ server: Server; origin: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}
