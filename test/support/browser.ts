/** Cross-package browser tests: Debian's Chromium (playwright-core) and a storefront server on another origin. */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

/** `ignoreDefaultArgs`: playwright's defaults to leave out (e.g. `--disable-back-forward-cache`). */
export const launchChromium = (ignoreDefaultArgs?: string[]): Promise<Browser> =>
  chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'], ignoreDefaultArgs });

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
