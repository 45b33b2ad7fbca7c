import type { Browser, BrowserContext, BrowserContextOptions } from 'playwright-core';
export interface Plan {
  referrer?: string;
  utm?: { utm_source: string; utm_medium: string; utm_campaign: string };
  category?: 'shoes' | 'shirts';
  product: string;
  /** 0 views only, 1 adds to the cart, 2 begins checkout, 3 pays */
  depth: 0 | 1 | 2 | 3;
  currency: 'EUR' | 'USD';
  /** Which visitor (one browser each): the last two of n ≥ 3 visits are returning visitors. */
  visitor: number;
}
export function plans(n: number): Plan[];
export function shopperAgent(visitor: number): string;
export function visit(browser: Browser, origin: string, plan: Plan, contextOptions?: BrowserContextOptions, prepare?: (context: BrowserContext) => Promise<unknown>): Promise<void>;
