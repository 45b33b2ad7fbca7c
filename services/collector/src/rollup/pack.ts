/**
 * A pack: the aggregates of one series in one UTC day (or hour), in one plaintext (written by
 * compaction): the day's hour aggregates (rollup level 2, 24 slots), its quarter-hour
 * aggregates (level 4, 96 slots), or one UTC hour's minute aggregates (level 5, 60 slots); the
 * level is bound into the row's identity, so a pack of one kind never opens as another.
 * Layout, version 1: u8 version (1), then per slot in increasing order: u8 slot (hour 0–23,
 * quarter hour 0–95, or minute 0–59), varint length, the aggregate's encoding (aggregate.ts).
 *
 * Version 2 (schema version 16) adds coarser aggregates before the slots, for readers whose
 * bucket holds a whole span of them (query/merge.ts: a UTC day's hours in a daily bucket):
 * u8 version (2), u8 span width w (0: none), then the totals — the pack's total (code 0xFF),
 * then in increasing order the total of each span of w slots (code 0x80 + span, slots
 * [span·w, span·w + w)) — each as code, varint length, encoding; then the slots as in version 1.
 * A total is written only where two or more slots are (else it is that slot). Totals are never
 * given to the encoder: encodeTotalsPack merges them from the slots it writes, so a pack whose
 * total disagrees with its slots cannot be built. A reader that does not ask for totals
 * (compaction's repack, the volume) walks the slots only.
 */
import { RollupError } from './errors.js';
import { cloneAggregate, encodeAggregate, mergeInto, type Aggregate } from './aggregate.js';

const VERSION = 1;
const VERSION_TOTALS = 2;
const TOTAL = 0xff;
const SPAN = 0x80;
/** Most spans of a version 2 pack (PackSlots keeps the ones taken in a 32-bit mask). */
const MAX_SPANS = 32;
const malformed = (why: string) => new RollupError('malformed_aggregate', `malformed day pack: ${why}`);

/** Encodes the slots of a pack (`slots`: 24 for hours, 96 for quarter hours, 60 for minutes). */
export function encodeDayPack(hours: { hour: number; bytes: Uint8Array }[], slots = 24): Uint8Array {
  const sorted = [...hours].sort((a, b) => a.hour - b.hour);
  for (const { hour } of sorted) if (!Number.isInteger(hour) || hour < 0 || hour >= slots) throw malformed('slot out of range');
  return layout([VERSION], sorted.map(({ hour, bytes }) => ({ code: hour, bytes })));
}

/**
 * Encodes a version 2 pack: the slots' aggregates (each slot at most once), the pack's total and,
 * when `width` > 0, the total of each span of `width` slots, all merged here from the slots.
 */
export function encodeTotalsPack(aggs: { slot: number; agg: Aggregate }[], slots: number, width = 0): Uint8Array {
  if (!Number.isInteger(width) || width < 0 || (width > 0 && (slots % width !== 0 || slots / width > MAX_SPANS))) throw malformed('span width');
  const sorted = [...aggs].sort((a, b) => a.slot - b.slot);
  const entries: { code: number; bytes: Uint8Array }[] = [];
  const total = (list: typeof sorted, code: number): void => {
    if (list.length < 2) return;
    const sum = cloneAggregate(list[0]!.agg);
    for (let i = 1; i < list.length; i++) mergeInto(sum, list[i]!.agg);
    entries.push({ code, bytes: encodeAggregate(sum) });
  };
  total(sorted, TOTAL);
  for (let span = 0; width > 0 && span < slots / width; span++) total(sorted.filter((a) => Math.floor(a.slot / width) === span), SPAN + span);
  let prev = -1;
  for (const { slot, agg } of sorted) {
    if (!Number.isInteger(slot) || slot < 0 || slot >= slots || slot <= prev) throw malformed('slot out of range');
    prev = slot;
    entries.push({ code: slot, bytes: encodeAggregate(agg) });
  }
  return layout([VERSION_TOTALS, width], entries);
}

/** A version byte (and header) followed by each entry as code, varint length, bytes. */
function layout(header: number[], entries: { code: number; bytes: Uint8Array }[]): Uint8Array {
  let size = header.length;
  const heads: number[][] = [];
  for (const { code, bytes } of entries) {
    const head = [code];
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
  out.set(header, 0);
  let o = header.length;
  entries.forEach(({ bytes }, i) => {
    out.set(heads[i]!, o);
    o += heads[i]!.length;
    out.set(bytes, o);
    o += bytes.length;
  });
  return out;
}

/**
 * Walks the entries of a pack without a view or an array per entry (the query engine's hot
 * loop): after `reset`, each `next()` that answers true locates one entry's aggregate at
 * `pack[start, end)`: slots `[slot, slot + width)` — one slot (width 1) or, first in a version 2
 * pack, a total (the pack's: slot 0, width `slots`; a span's). `next()` throws at the first
 * fault of a malformed pack (an unknown version at the first call; the entries before it were
 * visited). Reusable.
 */
export class PackSlots {
  pack: Uint8Array = new Uint8Array(0);
  slot = -1;
  width = 1;
  start = 0;
  end = 0;
  private slots = 24;
  /** A version 2 pack's span width (0: none). */
  private spanWidth = 0;
  /** What may come next: 0 the pack's total or anything after it, 1 a span from `nextSpan` on or a slot, 2 a slot after `lastSlot`. */
  private phase = 2;
  private nextSpan = 0;
  private lastSlot = -1;

  /** Starts a walk over `pack` (`slots`: 24 for hours, 96 for quarter hours, 60 for minutes). */
  reset(pack: Uint8Array, slots = 24): this {
    this.pack = pack;
    this.slots = slots;
    this.slot = -1;
    this.width = 1;
    this.end = 0;
    return this;
  }

  next(): boolean {
    const pack = this.pack;
    let o = this.end;
    if (o === 0) {
      this.lastSlot = -1;
      this.phase = 2;
      if (pack[0] === VERSION) o = 1;
      else if (pack[0] === VERSION_TOTALS && pack.length >= 2) {
        const w = pack[1]!;
        if (w > 0 && (this.slots % w !== 0 || this.slots / w > MAX_SPANS)) throw malformed('span width');
        this.spanWidth = w;
        this.phase = 0;
        this.nextSpan = 0;
        o = 2;
      } else throw malformed('unknown version');
    }
    if (o >= pack.length) return false;
    const code = pack[o++]!;
    if (code === TOTAL) {
      if (this.phase !== 0) throw malformed('totals out of order');
      this.phase = 1;
      this.slot = 0;
      this.width = this.slots;
    } else if (code >= SPAN) {
      const span = code - SPAN;
      if (this.phase > 1 || this.spanWidth === 0 || span < this.nextSpan || span >= this.slots / this.spanWidth) throw malformed('totals out of order');
      this.phase = 1;
      this.nextSpan = span + 1;
      this.slot = span * this.spanWidth;
      this.width = this.spanWidth;
    } else {
      if (code >= this.slots || code <= this.lastSlot) throw malformed('slots out of order');
      this.phase = 2;
      this.lastSlot = this.slot = code;
      this.width = 1;
    }
    let len = 0;
    for (let shift = 1; ; shift *= 128) {
      if (o >= pack.length || shift > 2 ** 28) throw malformed('truncated');
      const b = pack[o++]!;
      len += (b & 0x7f) * shift;
      if (b < 0x80) break;
    }
    if (o + len > pack.length) throw malformed('truncated');
    this.start = o;
    this.end = o + len;
    return true;
  }
}

/** Each (slot, aggregateBytes) of a pack in order (its totals left out) (views into `pack`); throws at the first fault of a malformed pack. */
export function* daySlots(pack: Uint8Array, slots = 24): Generator<[slot: number, bytes: Uint8Array]> {
  const c = new PackSlots().reset(pack, slots);
  while (c.next()) if (c.width === 1) yield [c.slot, pack.subarray(c.start, c.end)];
}
