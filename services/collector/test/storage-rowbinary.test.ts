import { describe, expect, it } from 'vitest';
import { RowBinaryReader } from '../src/storage/index.js';

/** Unsigned LEB128. */
function leb(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n % 128) | (n >= 128 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
}

const str = (b: Uint8Array | number[]): number[] => [...leb(b.length), ...b];
const u64le = (v: bigint): number[] => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return [...b];
};

describe('RowBinaryReader', () => {
  it('reads fixed-size values little-endian', () => {
    const f = Buffer.alloc(8);
    f.writeDoubleLE(-1.25e-300);
    const r = new RowBinaryReader(Uint8Array.from([
      0xff, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12,
      ...u64le(2n ** 64n - 1n), ...u64le(2n ** 53n - 1n), ...u64le(2n ** 53n + 1n), ...u64le(-5n), ...u64le(BigInt(Date.UTC(1950, 0, 1))), ...f,
    ]));
    expect([r.u8(), r.u16(), r.u32()]).toEqual([255, 0x1234, 0x12345678]);
    expect(r.u64()).toBe('18446744073709551615');
    expect(r.u64Number()).toBe(Number.MAX_SAFE_INTEGER);
    expect(r.u64()).toBe('9007199254740993');
    expect(r.i64()).toBe(-5);
    expect(r.dateTime64ms()).toBe(Date.UTC(1950, 0, 1));
    expect(r.f64()).toBe(-1.25e-300);
    expect(r.done).toBe(true);
  });

  it('refuses 64-bit integers that are not safe as numbers', () => {
    expect(() => new RowBinaryReader(Uint8Array.from(u64le(2n ** 53n))).u64Number()).toThrow(/not a safe integer/);
    expect(() => new RowBinaryReader(Uint8Array.from(u64le(-(2n ** 60n)))).i64()).toThrow(/not a safe integer/);
    expect(new RowBinaryReader(Uint8Array.from(u64le(-(2n ** 53n) + 1n))).i64()).toBe(-Number.MAX_SAFE_INTEGER);
  });

  it('reads LEB128 lengths above 127 and zero-copy string views', () => {
    const long = Uint8Array.from({ length: 20_000 }, (_, i) => i % 251);
    const src = Buffer.from([...str(Uint8Array.of(1, 2)), ...str(long), ...str([]), ...leb(300)]);
    expect(leb(300)).toEqual([0xac, 0x02]);
    expect(leb(20_000).length).toBe(3);
    // A view into a larger buffer (as pooled Buffers are): offsets are honoured.
    const padded = Buffer.concat([Buffer.from([9, 9, 9]), src]).subarray(3);
    const r = new RowBinaryReader(padded);
    const first = r.bytes();
    expect([...first]).toEqual([1, 2]);
    expect(first.constructor).toBe(Uint8Array);
    expect(first.buffer).toBe(padded.buffer);
    expect(r.bytes()).toEqual(long);
    expect(r.bytes().length).toBe(0);
    expect(r.arrayLength()).toBe(300);
    expect([r.done, r.remaining]).toEqual([true, 0]);
    padded[1] = 7;
    expect(first[0]).toBe(7);
  });

  it('decodes UTF-8 strings, short and long, ASCII or not', () => {
    const words = ['', 'plain', 'ünïcødé', '日本語 ✓ 🔐', 'x'.repeat(100), `${'y'.repeat(70)}é`, '🔐'.repeat(40)];
    const r = new RowBinaryReader(Uint8Array.from(words.flatMap((w) => str(Buffer.from(w)))));
    expect(words.map(() => r.string())).toEqual(words);
    expect(new RowBinaryReader(Uint8Array.from(str([0x61, 0xff]))).string()).toBe('a\uFFFD');
  });

  it('gives a repeated short string as the string its bytes decode to, through collisions and past a full intern table', () => {
    // 3,000 distinct short strings (more than the table takes, so many share a slot), each
    // read three times in shuffled order, with invalid UTF-8, the empty string and long ones.
    const words = Array.from({ length: 3000 }, (_, i) => Buffer.from(i % 7 === 0 ? `${i},${i * 31}` : String(BigInt(i) * 6364136223846793005n)));
    words.push(Buffer.from(''), Buffer.from([0x61, 0xff]), Buffer.from([0xff, 0x61]), Buffer.from('é'), Buffer.from('x'.repeat(64)), Buffer.from('x'.repeat(65)));
    const order = [...words.keys(), ...words.keys(), ...words.keys()];
    let seed = 7;
    for (let i = order.length - 1; i > 0; i--) {
      seed = (seed * 48271) % 2147483647;
      const j = seed % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const r = new RowBinaryReader(Uint8Array.from(order.flatMap((i) => str(words[i]!))));
    expect(order.map(() => r.string())).toEqual(order.map((i) => words[i]!.toString('utf8')));
    expect(r.done).toBe(true);
  });

  it('throws storage_query_failed on truncated input', () => {
    const cases = [[], [1], [1, 2, 3], [1, 2, 3, 4, 5, 6, 7], [5, 0x61, 0x62], [0x80], [0xac, 0x02, ...new Array(299).fill(0)]];
    const reads: ((r: RowBinaryReader) => unknown)[] = [(r) => r.u8(), (r) => r.u16(), (r) => r.u32(), (r) => r.u64(), (r) => r.bytes(), (r) => r.arrayLength(), (r) => r.string()];
    for (const [i, c] of cases.entries()) {
      expect(() => reads[i]!(new RowBinaryReader(Uint8Array.from(c)))).toThrow(expect.objectContaining({ name: 'StorageError', code: 'storage_query_failed' }));
    }
    const r = new RowBinaryReader(Uint8Array.of(1));
    r.u8();
    expect(() => r.f64()).toThrow(/truncated at byte 1/);
    expect(() => new RowBinaryReader(Uint8Array.from(new Array(11).fill(0xff))).arrayLength()).toThrow(/length too long/);
  });
});
