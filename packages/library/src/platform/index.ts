/**
 * Picks the platform at run time. Browser builds (IIFE and the `browser` export) alias this
 * module to ./browser.ts, so Node code never reaches them.
 */
import { platform as browser } from './browser.js';
import { platform as node } from './node.js';
import type { Platform } from './types.js';

export const platform = (): Platform =>
  typeof process == 'object' && process.versions?.node && typeof document == 'undefined' ? node() : browser();
