/** What FifoMap and LruMap share: a Map bounded to `max` entries, each forgetting by its own rule. */
export interface BoundedMap<K, V> {
  get(key: K): V | undefined;
  has(key: K): boolean;
  set(key: K, value: V): unknown;
  delete(key: K): boolean;
  deleteWhere(test: (key: K) => boolean): void;
  keys(): IterableIterator<K>;
  clear(): void;
  readonly size: number;
}

/** The Map and what FifoMap and LruMap do alike (their entries differ: LruMap keeps a write count with each value). */
abstract class Bounded<K, E> {
  protected readonly map = new Map<K, E>();
  /**
   * One iterator kept over the map's keys: it stands at the front, since every key it has passed
   * was forgotten through it (or deleted before). A new `keys()` per eviction walked from the
   * start of V8's table over every entry deleted since it was last rebuilt — O(deletions): a
   * full 250,000-entry map took 24-120 µs per eviction (the tick worker's pseudonym and series
   * caches, once full) instead of ~1.
   */
  private front: IterableIterator<K> = this.map.keys();
  constructor(protected readonly max: number) {}
  /** Puts `entry` at the back (moving `key` there), then forgets the front entry beyond `max`. */
  protected put(key: K, entry: E): void {
    this.map.delete(key);
    this.map.set(key, entry);
    if (this.map.size > this.max) {
      let first = this.front.next();
      if (first.done) first = (this.front = this.map.keys()).next(); // never while the map holds entries; a fresh start if it did
      this.map.delete(first.value as K);
    }
  }
  has(key: K): boolean {
    return this.map.has(key);
  }
  delete(key: K): boolean {
    return this.map.delete(key);
  }
  /** Deletes every entry whose key passes `test` (rare admin paths: O(size)). */
  deleteWhere(test: (key: K) => boolean): void {
    for (const k of [...this.map.keys()]) if (test(k)) this.map.delete(k);
  }
  /** Keys, front (next to be forgotten) first. */
  keys(): IterableIterator<K> {
    return this.map.keys();
  }
  clear(): void {
    this.map.clear();
  }
  get size(): number {
    return this.map.size;
  }
}

/**
 * A bounded Map that forgets the least recently *written* entries first: `set` moves a key to
 * the back, `get` does not (first in, first out by last write; not LRU: LruMap).
 */
export class FifoMap<K, V> extends Bounded<K, V> implements BoundedMap<K, V> {
  get(key: K): V | undefined {
    return this.map.get(key);
  }
  set(key: K, value: V): this {
    this.put(key, value);
    return this;
  }
}

/**
 * A bounded Map that forgets the least recently *used* entry first, approximately: an entry read
 * all the time is never the one evicted, however many others come and go (a FIFO by write evicts
 * the busiest shop's series as readily as a one-off's once it is full).
 *
 * A hit moves its entry to the back (a delete and an insert in the Map) only when it is stale:
 * `stale = max(1, floor(max / 2))` or more entries were inserted or moved since it was (each
 * entry keeps the write count at its last move); a hit on a fresh entry is one Map lookup — the
 * delete and insert per hit were the busiest tick worker's largest self time. A fresh entry has
 * fewer than `stale` entries behind it, so an entry stays as long as at most `max - stale` other
 * keys were used (set or read) since its own last use (true LRU: `max - 1`), and one nobody
 * uses leaves after at most `max` insertions, as under LRU.
 */
export class LruMap<K, V> extends Bounded<K, { value: V; at: number }> implements BoundedMap<K, V> {
  /** Insertions and moves so far: an entry's `at` is this count at its last one. */
  private writes = 0;
  private readonly stale = Math.max(1, Math.floor(this.max / 2));
  get(key: K): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (this.writes - e.at >= this.stale) {
      this.map.delete(key);
      this.map.set(key, e);
      e.at = ++this.writes;
    }
    return e.value;
  }
  set(key: K, value: V): this {
    this.put(key, { value, at: ++this.writes });
    return this;
  }
}
