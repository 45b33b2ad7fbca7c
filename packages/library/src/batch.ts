/**
 * Batch: cuts the queue of recorded points into batches by count and estimated bytes.
 * The estimate is an upper bound of a point's share of the envelope (names are ASCII;
 * a tag value character is counted as 3 UTF-8 bytes), so a batch does not outgrow
 * maxBatchBytes after sealing. Only control characters in tag values (JSON-escaped to 6
 * bytes) can break the bound; such a batch is a little larger, and still delivered.
 */
import type { Point } from '@cipherstat/protocol';
import type { Tags } from './options.js';

/** A recorded point waiting for its batch, with its estimated share of the envelope. */
export type QueuedPoint = Point & { _size: number };

/** Envelope bytes besides the points: prefix, two seals, header, inner JSON frame. */
export const OVERHEAD = 400;

export const pointSize = (name: string, tags: Tags | undefined) => {
  let n = 50 + name.length;
  for (const k in tags) n += k.length + 3 * tags[k]!.length + 6;
  return n;
};

/** How many of the first points fit one batch (at least one). */
export function fits(points: readonly QueuedPoint[], maxPoints: number, maxBytes: number): number {
  let n = 0;
  let bytes = OVERHEAD;
  while (n < points.length && n < maxPoints && (!n || bytes + points[n]!._size <= maxBytes)) bytes += points[n++]!._size;
  return n;
}
