import { malformed } from './errors.js';

/** Growable little-endian byte writer: unsigned LEB128 varints, zigzag varints, float64. */
export class ByteWriter {
  private buf = new Uint8Array(64);
  private view = new DataView(this.buf.buffer);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v;
  }

  /** v: a non-negative safe integer (at most 8 bytes). Arithmetic, not bit ops: v may exceed 2^32. */
  varint(v: number): void {
    this.ensure(8);
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  /** Zigzag maps 0, -1, 1, -2, ... to 0, 1, 2, 3, ... so small negatives stay short. |v| < 2^52. */
  zigzag(v: number): void {
    this.varint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.len, v, true);
    this.len += 8;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** The bytes written so far, not copied: valid until the next write. */
  written(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

/**
 * Bounds-checked reader: every read either succeeds or throws a malformed RollupError.
 * Allocation-free and reusable (`reset`), for the query engine's hot loop.
 */
export class ByteReader {
  bytes: Uint8Array = new Uint8Array(0);
  pos = 0;
  /** Where the bytes read end (exclusive): `bytes.length`, or the end of a range (`reset`). */
  end = 0;
  private readonly f = new Uint8Array(8);
  private readonly view = new DataView(this.f.buffer);

  constructor(bytes?: Uint8Array) {
    if (bytes) this.reset(bytes);
  }

  /** Reads `bytes[start, end)` (default: all of it): a range without a view of its own. */
  reset(bytes: Uint8Array, start = 0, end = bytes.length): void {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    if (this.pos >= this.end) throw malformed('truncated');
    return this.bytes[this.pos++]!;
  }

  varint(): number {
    const p = this.pos;
    if (p < this.end) {
      const b = this.bytes[p]!;
      if (b < 0x80) {
        this.pos = p + 1;
        return b;
      }
    }
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) throw malformed('varint out of range');
        return result;
      }
      mul *= 0x80;
    }
    throw malformed('varint too long');
  }

  zigzag(): number {
    const v = this.varint();
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  f64(): number {
    if (this.remaining < 8) throw malformed('truncated');
    for (let i = 0; i < 8; i++) this.f[i] = this.bytes[this.pos + i]!;
    this.pos += 8;
    return this.view.getFloat64(0, true);
  }
}
