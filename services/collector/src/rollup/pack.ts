/**
 * A pack: the aggregates of one series in one UTC day (or hour), in one plaintext (written by
 * compaction): the day's hour aggregates (rollup level 2, 24 slots), its quarter-hour
 * aggregates (level 4, 96 slots), or one UTC hour's minute aggregates (level 5, 60 slots); the
 * level is bound into the row's identity, so a pack of one kind never opens as another.
 * Layout: u8 version (1), then per slot in increasing order: u8 slot (hour 0–23, quarter hour
 * 0–95, or minute 0–59), varint length, the aggregate's encoding (aggregate.ts).
 */
import { RollupError } from './errors.js';

const VERSION = 1;
const malformed = (why: string) => new RollupError('malformed_aggregate', `malformed day pack: ${why}`);

/** Encodes the slots of a pack (`slots`: 24 for hours, 96 for quarter hours, 60 for minutes). */
export function encodeDayPack(hours: { hour: number; bytes: Uint8Array }[], slots = 24): Uint8Array {
  const sorted = [...hours].sort((a, b) => a.hour - b.hour);
  const chunks: number[] = [VERSION];
  let size = 1;
  const heads: number[][] = [];
  for (const { hour, bytes } of sorted) {
    if (!Number.isInteger(hour) || hour < 0 || hour >= slots) throw malformed('slot out of range');
    const head = [hour];
    for (let n = bytes.length; ; n = Math.floor(n / 128)) {
      if (n < 128) {
        head.push(n);
        break;
      }
      head.push((n % 128) | 0x80);
    }
    heads.push(head);
    size += head.length + bytes.length;
  }
  const out = new Uint8Array(size);
  out.set(chunks, 0);
  let o = 1;
  sorted.forEach(({ bytes }, i) => {
    out.set(heads[i]!, o);
    o += heads[i]!.length;
    out.set(bytes, o);
    o += bytes.length;
  });
  return out;
}

/**
 * Walks the slots of a pack without a view or an array per slot (the query engine's hot loop):
 * after `reset`, each `next()` that answers true locates one slot's aggregate at
 * `pack[start, end)`; `next()` throws at the first fault of a malformed pack (an unknown version
 * at the first call; the slots before it were visited). Reusable.
 */
export class PackSlots {
  pack: Uint8Array = new Uint8Array(0);
  slot = -1;
  start = 0;
  end = 0;
  private slots = 24;

  /** Starts a walk over `pack` (`slots`: 24 for hours, 96 for quarter hours, 60 for minutes). */
  reset(pack: Uint8Array, slots = 24): this {
    this.pack = pack;
    this.slots = slots;
    this.slot = -1;
    this.end = 0;
    return this;
  }

  next(): boolean {
    const pack = this.pack;
    let o = this.end;
    if (o === 0) {
      if (pack[0] !== VERSION) throw malformed('unknown version');
      o = 1;
    }
    if (o >= pack.length) return false;
    const slot = pack[o++]!;
    if (slot >= this.slots || slot <= this.slot) throw malformed('slots out of order');
    let len = 0;
    for (let shift = 1; ; shift *= 128) {
      if (o >= pack.length || shift > 2 ** 28) throw malformed('truncated');
      const b = pack[o++]!;
      len += (b & 0x7f) * shift;
      if (b < 0x80) break;
    }
    if (o + len > pack.length) throw malformed('truncated');
    this.slot = slot;
    this.start = o;
    this.end = o + len;
    return true;
  }
}

/** Each (slot, aggregateBytes) of a pack in order (views into `pack`); throws at the first fault of a malformed pack. */
export function* daySlots(pack: Uint8Array, slots = 24): Generator<[slot: number, bytes: Uint8Array]> {
  const c = new PackSlots().reset(pack, slots);
  while (c.next()) yield [c.slot, pack.subarray(c.start, c.end)];
}
