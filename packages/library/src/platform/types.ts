/**
 * The platform seam: everything that differs between browsers and Node. One
 * implementation per runtime (browser.ts, node.ts); the browser build never sees node.ts.
 */
import type { Config } from '../options.js';
import type { Store } from '../persist.js';
import type { Fallback } from '../fallback.js';
import type { HpkeSeal } from '@cipherstat/protocol';

export interface Platform {
  fetch(url: string, init?: RequestInit): Promise<Response>;
  /** Queues a text/plain body that outlives the page (browser only). */
  beacon?(url: string, text: string): boolean;
  /** The persistent store for this configuration, or undefined (memory only). */
  store(c: Config): Store | undefined;
  /** Calls `hide` when the page is hidden/unloaded (browser) or on `beforeExit` (Node),
   * `online` when the network comes back; returns the function that stops listening. */
  listen(hide: () => void, online: () => void): () => void;
  /** setTimeout; in Node the timer does not keep the process alive unless `keep`. */
  timer(fn: () => void, ms: number, keep?: boolean): ReturnType<typeof setTimeout>;
  /** True when the runtime knows it is offline (navigator.onLine === false). */
  offline(): boolean;
  /** How long a request may go unanswered before it is abandoned (ms; default transport.ts REQUEST_TIMEOUT). Tests shorten it. */
  timeout?: number;
  /** Global Privacy Control signal. */
  gpc: boolean;
  /** Loads the fallback (tweetnacl) when the platform needs it; default: platform/fallback.ts. */
  fallback?(): Promise<Fallback>;
  /** A synchronous HPKE seal (Node: node:crypto); browsers use WebCrypto. */
  hpke?: HpkeSeal;
  /** Deflate-raw the platform brings (Node: node:zlib; browsers: CompressionStream): v2 batches are then deflated (flag 0x01); where it throws or rejects, the batch goes with flags 0. */
  deflate?: (plain: Uint8Array) => Uint8Array | Promise<Uint8Array>;
}
