/**
 * The little tar an XVA needs: ustar headers over 512-byte blocks, regular
 * files only, written and read as streams (see docs/xva.md for why this is
 * not an npm package).
 */

export const BLOCK = 512;
const END = Buffer.alloc(2 * BLOCK);

export class TarError extends Error {
  constructor(
    readonly code: 'TRUNCATED' | 'CORRUPT',
    message: string,
  ) {
    super(message);
  }
}

function putString(b: Buffer, off: number, len: number, s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > len) throw new TarError('CORRUPT', `tar field too long: ${s}`);
  bytes.copy(b, off);
}

function putOctal(b: Buffer, off: number, len: number, n: number): void {
  const s = n.toString(8);
  if (s.length <= len - 1) {
    putString(b, off, len, s.padStart(len - 1, '0'));
    return;
  }
  // base-256 (GNU) for values too big for the octal field
  b[off] = 0x80;
  let v = BigInt(n);
  for (let i = off + len - 1; i > off; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

/** A ustar header block for a regular file. */
export function tarHeader(name: string, size: number, mtime = Math.floor(Date.now() / 1000)): Buffer {
  const b = Buffer.alloc(BLOCK);
  let prefix = '';
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new TarError('CORRUPT', `tar name too long: ${name}`);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  putString(b, 0, 100, base);
  putOctal(b, 100, 8, 0o644);
  putOctal(b, 108, 8, 0);
  putOctal(b, 116, 8, 0);
  putOctal(b, 124, 12, size);
  putOctal(b, 136, 12, mtime);
  b.fill(0x20, 148, 156); // checksum counted as spaces
  b[156] = 0x30; // '0': regular file
  putString(b, 257, 6, 'ustar');
  putString(b, 263, 2, '00');
  putString(b, 345, 155, prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  putString(b, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return b;
}

/** Zero bytes that round a member of `size` bytes up to a whole block. */
export function tarPadding(size: number): Buffer {
  const r = size % BLOCK;
  return r === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - r);
}

/** The end-of-archive marker: two zero blocks. */
export const tarEnd = (): Buffer => END;

/** A whole member: header, data, padding. */
export function tarMember(name: string, data: Buffer): Buffer[] {
  return [tarHeader(name, data.length), data, tarPadding(data.length)];
}

// ------------------------------------------------------------------ reading

/** Exact-length reads over any async byte source, holding at most one chunk of it. */
export class ByteReader {
  private readonly it: AsyncIterator<Buffer | string>;
  /** Buffered bytes not yet handed out, in order. */
  private chunks: Buffer[] = [];
  private length = 0;
  private done = false;
  /** Bytes consumed so far. */
  consumed = 0;

  constructor(source: AsyncIterable<Buffer | string>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    if (chunk.length) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    return true;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - got);
        c.copy(out, got, 0, k);
        got += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.length -= n;
    this.consumed += n;
    return out;
  }

  /** Exactly n bytes, or null at a clean end (nothing read); throws TRUNCATED mid-way. */
  async readOrEnd(n: number): Promise<Buffer | null> {
    while (this.length < n) {
      if (!(await this.fill())) {
        if (this.length === 0) return null;
        throw new TarError('TRUNCATED', `the stream ended ${n - this.length} bytes short`);
      }
    }
    return this.take(n);
  }

  async read(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const b = await this.readOrEnd(n);
    if (!b) throw new TarError('TRUNCATED', 'the stream ended early');
    return b;
  }

  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, 1 << 20);
      await this.read(k);
      n -= k;
    }
  }

  /** Reads and drops whatever is left. */
  async drain(): Promise<void> {
    this.chunks = [];
    this.length = 0;
    while (await this.fill()) {
      this.chunks = [];
      this.length = 0;
    }
  }
}

export interface TarEntry {
  name: string;
  size: number;
  type: string;
}

function readString(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

function readNumber(b: Buffer, off: number, len: number): number {
  if (b[off] & 0x80) {
    let v = 0n;
    for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(b[i]);
    return Number(v);
  }
  const s = readString(b, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarError('CORRUPT', `bad number in a tar header: '${s}'`);
  return parseInt(s, 8);
}

/** Parses a header block; null for an all-zero (end) block. */
export function parseHeader(b: Buffer): TarEntry | null {
  if (b.every((x) => x === 0)) return null;
  const stored = readNumber(b, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i];
  if (sum !== stored) throw new TarError('CORRUPT', 'a tar header checksum is wrong');
  let name = readString(b, 0, 100);
  const magic = b.toString('latin1', 257, 262);
  if (magic === 'ustar') {
    const prefix = readString(b, 345, 155);
    if (prefix && b[263] === 0x30) name = `${prefix}/${name}`; // POSIX ustar ("00"), not the old GNU layout
  }
  return { name, size: readNumber(b, 124, 12), type: String.fromCharCode(b[156] || 0x30) };
}

/**
 * Tar members one by one. `next()` returns the next regular file's header
 * (GNU long names and pax headers applied), or null at the end of the
 * archive; its data must then be read (`data`) or skipped (`skip`) before
 * asking for the next one.
 */
export class TarReader {
  private pending = 0;
  private padding = 0;

  constructor(readonly bytes: ByteReader) {}

  async next(): Promise<TarEntry | null> {
    await this.skip();
    let longName: string | undefined;
    for (;;) {
      const block = await this.bytes.readOrEnd(BLOCK);
      if (!block) return null; // no end marker: a stream cut at a member boundary still ends here
      const h = parseHeader(block);
      if (!h) return null;
      if (h.type === 'L' || h.type === 'x' || h.type === 'g') {
        const body = await this.bytes.read(h.size);
        await this.bytes.skip(tarPadding(h.size).length);
        if (h.type === 'L') longName = readString(body, 0, body.length);
        else if (h.type === 'x') {
          const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
          if (m) longName = m[1];
        }
        continue;
      }
      if (longName !== undefined) h.name = longName;
      this.pending = h.size;
      this.padding = tarPadding(h.size).length;
      if (h.type !== '0' && h.type !== '\0') {
        await this.skip();
        longName = undefined;
        continue; // directories, links…: an XVA has none worth reading
      }
      return h;
    }
  }

  /** The current member's data, whole (members of an XVA are at most a few MiB). */
  async data(): Promise<Buffer> {
    const b = await this.bytes.read(this.pending);
    this.pending = 0;
    await this.bytes.skip(this.padding);
    this.padding = 0;
    return b;
  }

  async skip(): Promise<void> {
    await this.bytes.skip(this.pending + this.padding);
    this.pending = 0;
    this.padding = 0;
  }
}
