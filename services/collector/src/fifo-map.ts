/**
 * A bounded Map that forgets the least recently *written* entries first: `set` moves a key to
 * the back, `get` does not (first in, first out by last write; not LRU).
 */
export class FifoMap<K, V> {
  protected readonly map = new Map<K, V>();
  constructor(protected readonly max: number) {}
  get(key: K): V | undefined {
    return this.map.get(key);
  }
  has(key: K): boolean {
    return this.map.has(key);
  }
  set(key: K, value: V): this {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
    return this;
  }
  delete(key: K): boolean {
    return this.map.delete(key);
  }
  /** Deletes every entry whose key passes `test` (rare admin paths: O(size)). */
  deleteWhere(test: (key: K) => boolean): void {
    for (const k of [...this.map.keys()]) if (test(k)) this.map.delete(k);
  }
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
 * A FifoMap whose reads count as writes: it forgets the least recently *used* entry first, so
 * an entry read all the time is never the one evicted, however many others come and go (a
 * FIFO by write evicts the busiest shop's series as readily as a one-off's once it is full).
 * A hit costs a delete and an insert in the Map.
 */
export class LruMap<K, V> extends FifoMap<K, V> {
  override get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
}
