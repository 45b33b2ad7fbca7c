/**
 * The demo shop's web server: the static pages of public/, each with the storefront script
 * tag filled in for one collector and account. Routes: `/` and `/category/NAME` (the list;
 * categories are History API navigations), `/product/ID`, `/cart`, `/checkout`, `/thank-you`.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const PUBLIC = new URL('./public/', import.meta.url);
const PAGES = { list: 'list.html', product: 'product.html', cart: 'cart.html', checkout: 'checkout.html', thanks: 'thank-you.html' };
const ASSETS = { '/shop.js': 'text/javascript', '/shop.css': 'text/css' };

const page = (path) =>
  path == '/' || path.startsWith('/category/')
    ? PAGES.list
    : path.startsWith('/product/')
      ? PAGES.product
      : { '/cart': PAGES.cart, '/checkout': PAGES.checkout, '/thank-you': PAGES.thanks }[path];

/**
 * Starts the shop. `tag`: the values of the script tag (collector URL, account id, write
 * key, collector key id and public key); `attributes`: extra attributes for the tag (e.g.
 * ` data-require-consent`). Resolves to { server, origin }.
 */
export async function startShopServer({ tag, attributes = '', port = 0, host = '127.0.0.1' }) {
  const fill = (html) =>
    html
      .replace(/\{\{(\w+)\}\}/g, (_, k) => String(tag[k] ?? ''))
      .replace(' data-auto>', ` data-auto${attributes}>`);
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const file = page(path);
    if (file) return res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(fill(readFileSync(new URL(file, PUBLIC), 'utf8')));
    if (ASSETS[path]) return res.writeHead(200, { 'content-type': ASSETS[path] }).end(readFileSync(new URL('.' + path, PUBLIC)));
    res.writeHead(path == '/favicon.ico' ? 204 : 404, { 'content-type': 'text/plain' }).end(path == '/favicon.ico' ? undefined : 'not found');
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  return { server, origin: `http://${host}:${server.address().port}` };
}
