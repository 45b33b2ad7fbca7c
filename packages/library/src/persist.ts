/**
 * Persist: unsent sealed batches and the fetched collector key, kept in a platform Store
 * (localStorage in browsers, a JSON file in Node, memory otherwise) and bounded by count
 * and characters, oldest dropped first.
 *
 * Every change is read-modify-write on the stored value, so several tabs sharing one
 * localStorage entry add and remove their own batches without erasing each other's.
 */
import type { CollectorKey } from './options.js';

/** One sealed batch as stored: `inner` is the inner layer (sealed to the account key).
 * Envelope v1: `other` is the outer layer's ephemeral secret, so the envelope is rebuilt
 * byte-identically. Envelope v2 (`version` 2): `other` is the sealed envelope once it was
 * sealed for the collector key `keyId` ('' before), resent as it is; `flags` 1 when the inner
 * layer seals a deflated plaintext (absent in batches stored before: 0). */
export type StoredBatch = [batchId: string, createdAt: number, count: number, inner: string, other: string, version?: 2, keyId?: string, flags?: 0 | 1];

export interface Stored {
  k?: CollectorKey;
  q: StoredBatch[];
}

/** What a platform provides: read and write one JSON value. */
export interface Store {
  read(): Stored | null | undefined;
  write(value: Stored | null): void;
  /** Resolves when writes reached their medium (Node's file). */
  settle?(): Promise<void>;
}

export const memoryStore = (): Store => {
  let v: Stored | null = null;
  return { read: () => v, write: (x) => (v = x) };
};

export interface Outbox {
  load(): Stored;
  /** Adds a batch and returns the batches evicted to stay within bounds. */
  add(batch: StoredBatch): StoredBatch[];
  remove(batchId: string): void;
  /** Stores a batch's new form (its envelope was sealed) if it is still stored. */
  update(batch: StoredBatch): void;
  key(key: CollectorKey): void;
  clear(): void;
  settle(): Promise<void> | undefined;
}

export function outbox(store: Store, maxBatches: number, maxChars: number): Outbox {
  const load = (): Stored => {
    let s: Stored | null | undefined;
    try {
      s = store.read();
    } catch {}
    // Entries that are not batches (a corrupt or foreign value) are left out: never read as one.
    return s && Array.isArray(s.q) ? ((s.q = s.q.filter(Array.isArray)), s) : { q: [] };
  };
  const change = (f: (s: Stored) => StoredBatch[] | void) => {
    const s = load();
    const evicted = f(s) || [];
    store.write(s);
    return evicted;
  };
  return {
    load,
    add: (batch) =>
      change((s) => {
        const q = s.q;
        q.push(batch);
        let chars = 0;
        for (const b of q) chars += b[3].length + b[4].length;
        const evicted: StoredBatch[] = [];
        // the newest batch is never evicted: it is being sent right now
        while (q.length > 1 && (q.length > maxBatches || chars > maxChars)) {
          const b = q.shift()!;
          chars -= b[3].length + b[4].length;
          evicted.push(b);
        }
        return evicted;
      }),
    remove: (id) => change((s) => void (s.q = s.q.filter((b) => b[0] != id))),
    update: (batch) => change((s) => void (s.q = s.q.map((b) => (b[0] == batch[0] ? batch : b)))),
    key: (k) => change((s) => void (s.k = { keyId: k.keyId, publicKey: k.publicKey })),
    clear: () => store.write(null),
    settle: () => store.settle?.(),
  };
}
