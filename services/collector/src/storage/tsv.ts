/**
 * Rows to ClickHouse TabSeparated bytes, the insert format of both adapters. TSV is
 * byte-transparent: a String field is its raw bytes with only `\`, TAB, LF and CR escaped,
 * so ciphertext goes in as itself (no base64 on disk, no JSON UTF-8 mangling) and the
 * engine's native parser does the work.
 */
import { StorageError } from './errors.js';

const BACKSLASH = 0x5c;
/** Byte -> the letter after the backslash, or 0 when the byte goes through as is. */
const ESCAPE = new Uint8Array(256);
ESCAPE[0x09] = 0x74; // \t
ESCAPE[0x0a] = 0x6e; // \n
ESCAPE[0x0d] = 0x72; // \r
ESCAPE[BACKSLASH] = BACKSLASH;

/** Escapes raw bytes as one TSV String field. */
export function escapeBytes(b: Uint8Array): Buffer {
  let extra = 0;
  for (let i = 0; i < b.length; i++) if (ESCAPE[b[i]!] !== 0) extra++;
  if (extra === 0) return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = Buffer.allocUnsafe(b.length + extra);
  let j = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    const e = ESCAPE[c]!;
    if (e === 0) out[j++] = c;
    else {
      out[j++] = BACKSLASH;
      out[j++] = e;
    }
  }
  return out;
}

const invalid = (what: string, v: unknown): never => {
  throw new StorageError('storage_invalid_input', `invalid ${what}: ${JSON.stringify(v)?.slice(0, 80)}`);
};

const NEEDS_ESCAPE = /[\t\n\r\\]/;

/** A JS string as one TSV String field (the string itself when it holds nothing to escape: written as UTF-8). */
export const str = (s: string): string | Buffer =>
  typeof s === 'string' ? (NEEDS_ESCAPE.test(s) ? escapeBytes(Buffer.from(s, 'utf8')) : s) : invalid('string', s);

export const bytes = (b: Uint8Array): Buffer => (b instanceof Uint8Array ? escapeBytes(b) : invalid('bytes', b));

export function uint(n: number, max = 0xffffffff): string {
  return Number.isSafeInteger(n) && n >= 0 && n <= max ? String(n) : invalid('unsigned integer', n);
}

const UINT64_MAX = (1n << 64n) - 1n;

const UINT64_MAX_TEXT = UINT64_MAX.toString();

/** A UInt64 pseudonym given as a decimal string. */
export function u64(s: string): string {
  // Up to 19 digits always fit; 20 digits fit up to UINT64_MAX (same length: text order is numeric order).
  return typeof s === 'string' && /^(0|[1-9]\d{0,19})$/.test(s) && (s.length < 20 || s <= UINT64_MAX_TEXT) ? s : invalid('UInt64', s);
}

/** `YYYY-MM-DD hh:mm:ss` by whole second: rows of one insert share a handful of seconds. */
const SECONDS = new Map<number, string>();
const MILLIS = Array.from({ length: 1000 }, (_, i) => `.${String(i).padStart(3, '0')}`);

/**
 * Epoch milliseconds as a DateTime64(3, 'UTC') text value. Never a bare number: the text
 * parser reads `1` as a year-less date and `1000` as the year 1000 (measured on chDB).
 */
export function time(ms: number): string {
  // DateTime64 holds 1900-01-01 .. 2299-12-31.
  if (!Number.isSafeInteger(ms) || ms < -2208988800000 || ms > 10413791999999) invalid('time', ms);
  const rest = ((ms % 1000) + 1000) % 1000;
  const sec = ms - rest;
  let prefix = SECONDS.get(sec);
  if (prefix === undefined) {
    if (SECONDS.size >= 4096) SECONDS.clear();
    prefix = new Date(sec).toISOString().slice(0, 19).replace('T', ' ');
    SECONDS.set(sec, prefix);
  }
  return prefix + MILLIS[rest]!;
}

export const nullable = <T>(v: T | null, f: (v: T) => string): string => (v === null ? '\\N' : f(v));

export const bool = (b: boolean): string => (typeof b === 'boolean' ? (b ? 'true' : 'false') : invalid('boolean', b));

/** Array(String): quoted elements inside the TSV field. */
export function strArray(a: string[]): Buffer {
  if (!Array.isArray(a)) invalid('string array', a);
  const quoted = a.map((s) => {
    if (typeof s !== 'string') invalid('string', s);
    return `'${s.replace(/[\\'\t\n\r\0]/g, (c) => QUOTED[c]!)}'`;
  });
  // TSV writes composite values in their quoted text form, with no second escaping level.
  return Buffer.from(`[${quoted.join(',')}]`, 'utf8');
}
const QUOTED: Record<string, string> = { '\\': '\\\\', "'": "\\'", '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' };

export const u64Array = (a: string[]): string => (Array.isArray(a) ? `[${a.map(u64).join(',')}]` : invalid('UInt64 array', a));

/** Rows encoded between two turns of the event loop when building an insert (a big tick's rows take ~0.1-0.3 s at once otherwise). */
export const TSV_SLICE_ROWS = 1000;

/**
 * A TSV payload written row by row into one growing buffer (strings as UTF-8), not gathered as
 * a buffer per field. Its buffer is its own (never Node's shared pool): a worker thread may
 * transfer it.
 */
export class TsvWriter {
  private out = Buffer.allocUnsafe(64 * 1024);
  private o = 0;

  /** Bytes written so far (a row's end, after row()). */
  get length(): number {
    return this.o;
  }

  /** Room for n more bytes. */
  reserve(n: number): void {
    if (this.o + n <= this.out.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.o + n));
    this.out.copy(next, 0, 0, this.o);
    this.out = next;
  }

  /** One row of already-encoded fields: TAB between fields, LF after the row. */
  row(f: (string | Buffer)[]): void {
    for (let j = 0; j < f.length; j++) {
      const v = f[j]!;
      if (typeof v === 'string') {
        this.reserve(v.length * 3 + 1); // a UTF-16 unit is at most 3 UTF-8 bytes
        this.o += this.out.write(v, this.o, 'utf8');
      } else {
        this.reserve(v.length + 1);
        this.out.set(v, this.o);
        this.o += v.length;
      }
      this.out[this.o++] = j === f.length - 1 ? 0x0a : 0x09;
    }
  }

  bytes(): Buffer {
    return this.out.subarray(0, this.o);
  }
}

/**
 * Builds a TSV payload from rows of already-encoded fields, giving the event loop a turn
 * (setImmediate: pending I/O first) every `sliceRows` rows; `onTurn` counts the turns.
 */
export async function tsv<R>(rows: readonly R[], fields: (r: R) => (string | Buffer)[], sliceRows = TSV_SLICE_ROWS, onTurn?: () => void): Promise<Buffer> {
  const w = new TsvWriter();
  for (let i = 0; i < rows.length; i++) {
    if (i > 0 && i % sliceRows === 0) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      onTurn?.();
    }
    w.row(fields(rows[i]!));
    if (i === 0 && rows.length > 1) w.reserve(Math.ceil(w.length * rows.length * 1.25) - w.length); // sized from the first row: few regrowths
  }
  return w.bytes();
}
