import type { Server } from 'node:http';
export interface ScriptTag {
  collector?: string;
  account?: string;
  writeKey?: string;
  keyId?: string;
  publicKey?: string;
}
export function startShopServer(o: { tag: ScriptTag; attributes?: string; port?: number; host?: string }): Promise<{ server: Server; origin: string }>;
