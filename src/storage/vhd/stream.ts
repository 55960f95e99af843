/**
 * Streaming import/export. Exports are `Readable`s generated block by block;
 * imports consume any async-iterable byte source (a `Readable`) sequentially,
 * never holding more than a few blocks in memory.
 */
import { Readable } from 'node:stream';
import { open, realpath, unlink, type FileHandle } from 'node:fs/promises';
import { VhdError } from './errors.ts';
import {
  BAT_UNUSED,
  DEFAULT_BLOCK_SIZE,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR,
  batSize,
  bitmapSize,
  decodeFooter,
  decodeHeader,
  encodeFooter,
  encodeHeader,
  fullBitmap,
  isZero,
  newFooter,
  newHeader,
  type VhdFooter,
} from './format.ts';
import { WriteQueue, writeFull, writevFull, zeros } from './io.ts';
import { Vhd } from './vhd.ts';

const EXPORT_HIGH_WATER_MARK = 16 * 1024 * 1024;
/** Handed out (sliced) for unallocated ranges by exportRaw; kept apart from the buffers used internally. */
const EXPORT_ZEROS = Buffer.alloc(DEFAULT_BLOCK_SIZE);

// ---------------------------------------------------------------------------
// Exports

export interface ExportRawOptions {
  /** Size of the chunks emitted (default: 2 MiB). */
  chunkSize?: number;
}

/**
 * The whole virtual disk as raw bytes, reading through the parent chain.
 * Chunks of unallocated ranges are slices of one shared zero buffer: consumers
 * must not modify the chunks they receive.
 */
export function exportRaw(path: string, opts: ExportRawOptions = {}): Readable {
  const chunk = opts.chunkSize ?? DEFAULT_BLOCK_SIZE;
  async function* gen(): AsyncGenerator<Buffer> {
    const top = await Vhd.open(path);
    try {
      const size = top.virtualSize;
      for (let pos = 0; pos < size; pos += chunk) {
        const n = Math.min(chunk, size - pos);
        if (n <= EXPORT_ZEROS.length && !top.hasData(pos, n)) {
          yield EXPORT_ZEROS.subarray(0, n); // shared, read-only
          continue;
        }
        const b = Buffer.allocUnsafe(n);
        await top.readInto(b, 0, pos, n);
        yield b;
      }
    } finally {
      await top.close();
    }
  }
  return Readable.from(gen(), { objectMode: false, highWaterMark: EXPORT_HIGH_WATER_MARK });
}

export interface ExportVhdOptions {
  /**
   * Path of an ancestor of `path` in its chain. Only blocks allocated in the
   * disks above it are emitted (with their full, chain-resolved content): a
   * delta to apply on top of `base`.
   */
  base?: string;
}

/**
 * The disk (chain-resolved) as a dynamic VHD stream: footer copy, header, BAT,
 * then only the blocks allocated somewhere in the chain (or above `base`),
 * then the footer. Block size is the top disk's (2 MiB if it is fixed).
 */
export function exportVhd(path: string, opts: ExportVhdOptions = {}): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    const top = await Vhd.open(path);
    try {
      const chain: Vhd[] = [];
      for (let v: Vhd | undefined = top; v; v = v.parent) chain.push(v);
      let members = chain;
      if (opts.base !== undefined) {
        const baseReal = await realpath(opts.base);
        let k = -1;
        for (let j = 0; j < chain.length; j++) {
          if ((await realpath(chain[j]!.path)) === baseReal) {
            k = j;
            break;
          }
        }
        if (k <= 0) throw new VhdError('VHD_INVALID_ARG', `${opts.base} is not a strict ancestor of ${path}`);
        members = chain.slice(0, k);
      }
      const size = top.virtualSize;
      const bs = top.type === 'fixed' ? DEFAULT_BLOCK_SIZE : top.blockSize;
      const entries = Math.ceil(size / bs);
      const wanted = new Uint8Array(entries);
      for (const m of members) {
        const mbs = m.blockSize;
        for (const j of m.allocatedBlocks()) {
          const start = j * mbs;
          const end = Math.min(start + mbs, m.virtualSize, size);
          if (end <= start) continue;
          for (let b = Math.floor(start / bs); b < Math.ceil(end / bs); b++) wanted[b] = 1;
        }
      }
      const bm = bitmapSize(bs);
      const blockTotal = bm + bs;
      const batOffset = FOOTER_SIZE + HEADER_SIZE;
      const bat = Buffer.alloc(batSize(entries), 0xff);
      let pos = batOffset + bat.length;
      for (let i = 0; i < entries; i++) {
        if (!wanted[i]) continue;
        bat.writeUInt32BE(pos / SECTOR, i * 4);
        pos += blockTotal;
      }
      const footer = encodeFooter(newFooter(DISK_TYPE_DYNAMIC, size, Buffer.from(top.footer.uuid)));
      const header = encodeHeader(newHeader(batOffset, entries, bs));
      yield Buffer.concat([footer, header, bat]);
      const bitmap = fullBitmap(bs);
      for (let i = 0; i < entries; i++) {
        if (!wanted[i]) continue;
        const b = Buffer.allocUnsafe(blockTotal);
        bitmap.copy(b, 0);
        const n = Math.min(bs, size - i * bs);
        await top.readInto(b, bm, i * bs, n);
        if (n < bs) b.fill(0, bm + n);
        yield b;
      }
      yield footer;
    } finally {
      await top.close();
    }
  }
  return Readable.from(gen(), { objectMode: false, highWaterMark: EXPORT_HIGH_WATER_MARK });
}

// ---------------------------------------------------------------------------
// Sequential byte reader over an async iterable

type ByteSource = AsyncIterable<unknown> | Readable;

class ByteReader {
  private it: AsyncIterator<unknown>;
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  private avail = 0;
  private done = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(src: ByteSource) {
    this.it = (src as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  }

  /** Buffer until at least `n` bytes are available or the source ends; returns bytes available. */
  async fill(n: number): Promise<number> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const v = r.value;
      const b = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v, 'latin1') : v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : undefined;
      if (!b) throw new VhdError('VHD_INVALID_ARG', 'input stream yields non-binary chunks');
      if (b.length) {
        this.chunks.push(b);
        this.avail += b.length;
      }
    }
    return this.avail;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first && first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
    } else {
      out = Buffer.allocUnsafe(n);
      let o = 0;
      while (o < n) {
        const c = this.chunks[0]!;
        const k = Math.min(n - o, c.length - this.head);
        c.copy(out, o, this.head, this.head + k);
        o += k;
        this.head += k;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    this.avail -= n;
    this.position += n;
    return out;
  }

  async read(n: number, what: string): Promise<Buffer> {
    if ((await this.fill(n)) < n) {
      throw new VhdError('VHD_TRUNCATED', `stream ended at ${this.position + this.avail} while reading ${what} (${n} bytes at ${this.position})`);
    }
    return this.take(n);
  }

  async readUpTo(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.take(Math.min(n, this.avail));
  }

  async skip(n: number, what: string): Promise<void> {
    while (n > 0) {
      if ((await this.fill(1)) === 0) throw new VhdError('VHD_TRUNCATED', `stream ended at ${this.position} before ${what}`);
      const k = Math.min(n, this.chunks[0]!.length - this.head);
      this.take(k);
      n -= k;
    }
  }

  async close(): Promise<void> {
    await this.it.return?.().catch(() => {});
  }
}

/** Run `body` on a freshly created file; on any error close and delete it. */
async function withNewFile<T>(path: string, input: { close(): Promise<void> }, body: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, 'wx');
  try {
    const r = await body(fh);
    await fh.datasync();
    await fh.close();
    return r;
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    await input.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Imports

export interface ImportRawOptions {
  blockSize?: number;
}

/** Where importRaw gets its blocks from; `release` hands a buffer back once written. */
interface BlockSource {
  next(n: number, what: string): Promise<Buffer>;
  release(b: Buffer): void;
  /** True if the source holds more data after the last block. */
  hasMore(): Promise<boolean>;
  close(): Promise<void>;
}

function streamSource(reader: ByteReader): BlockSource {
  return {
    next: (n, what) => reader.read(n, what),
    release: () => {},
    hasMore: async () => (await reader.fill(1)) > 0,
    close: () => reader.close(),
  };
}

/** Positional reads from a raw file into a small pool of recycled buffers (no per-block allocation). */
async function fileSource(path: string, bs: number, poolSize: number): Promise<BlockSource> {
  const fh = await open(path, 'r');
  const free: Buffer[] = [];
  for (let k = 0; k < poolSize; k++) free.push(Buffer.allocUnsafe(bs));
  const owner = new WeakMap<Buffer, Buffer>();
  let pos = 0;
  let closed = false;
  return {
    async next(n, what) {
      const b = free.pop() ?? Buffer.allocUnsafe(bs);
      let done = 0;
      while (done < n) {
        const { bytesRead } = await fh.read(b, done, n - done, pos + done);
        if (bytesRead === 0) {
          throw new VhdError('VHD_TRUNCATED', `input ended at ${pos + done} while reading ${what}`);
        }
        done += bytesRead;
      }
      pos += n;
      const view = b.subarray(0, n);
      owner.set(view, b);
      return view;
    },
    release(view) {
      const b = owner.get(view);
      if (b && free.length < poolSize) free.push(b);
    },
    async hasMore() {
      const { bytesRead } = await fh.read(Buffer.alloc(1), 0, 1, pos);
      return bytesRead > 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

/**
 * Write exactly `size` bytes from `input` into a new dynamic VHD at `path`,
 * leaving all-zero blocks unallocated. `input` is a Readable / async iterable
 * of Buffers, or the path of a raw file (read with positional reads into
 * recycled buffers: the fastest way to import a local file). A short input
 * throws VHD_TRUNCATED, a longer one VHD_INVALID_ARG; on error the partial
 * file is removed.
 */
export async function importRaw(input: ByteSource | string, path: string, size: number, opts: ImportRawOptions = {}): Promise<void> {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size > MAX_VIRTUAL_SIZE) {
    throw new VhdError('VHD_INVALID_ARG', `size ${size} must be a positive multiple of 512`);
  }
  const bs = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (bs < 4096 || bs > 256 * 1024 * 1024 || (bs & (bs - 1)) !== 0) throw new VhdError('VHD_INVALID_ARG', `bad block size ${bs}`);
  const depth = 4;
  const src = typeof input === 'string' ? await fileSource(input, bs, depth + 2) : streamSource(new ByteReader(input));
  try {
    await withNewFile(path, src, async (fh) => {
      const entries = Math.ceil(size / bs);
      const bat = Buffer.alloc(batSize(entries), 0xff);
      const bm = fullBitmap(bs);
      const blockTotal = bm.length + bs;
      let pos = FOOTER_SIZE + HEADER_SIZE + bat.length;
      const q = new WriteQueue(fh, depth);
      for (let i = 0; i < entries; i++) {
        const n = Math.min(bs, size - i * bs);
        const data = await src.next(n, `block ${i}`);
        if (isZero(data)) {
          src.release(data);
          continue;
        }
        bat.writeUInt32BE(pos / SECTOR, i * 4);
        await q.push([bm, data, ...zeros(bs - n)], pos, () => src.release(data));
        pos += blockTotal;
      }
      if (await src.hasMore()) throw new VhdError('VHD_INVALID_ARG', `input is longer than ${size} bytes`);
      await q.drain();
      const footer = encodeFooter(newFooter(DISK_TYPE_DYNAMIC, size));
      await writeFull(fh, footer, pos);
      await writevFull(fh, [footer, encodeHeader(newHeader(FOOTER_SIZE + HEADER_SIZE, entries, bs)), bat], 0);
    });
  } finally {
    if (typeof input === 'string') await src.close();
  }
}

/**
 * Import a fixed or dynamic VHD stream into a new dynamic VHD at `path`,
 * validating it strictly: footer/header cookies and checksums, sizes, BAT
 * entries (in order, non-overlapping, after the BAT), trailing footer equal to
 * the leading copy, stream length. Bad input throws VhdError (VHD_CORRUPT,
 * VHD_TRUNCATED, VHD_UNSUPPORTED) and the partial output is removed.
 * Dynamic input keeps its block size and allocation (allocated zero blocks
 * included, so delta streams keep their meaning); fixed input is made sparse.
 */
export async function importVhd(input: ByteSource, path: string): Promise<void> {
  const reader = new ByteReader(input);
  let first: Buffer;
  try {
    first = Buffer.from(await reader.read(FOOTER_SIZE, 'first sector'));
  } catch (e) {
    await reader.close();
    throw e;
  }
  await withNewFile(path, reader, async (fh) => {
    if (first.toString('latin1', 0, 8) === FOOTER_COOKIE) await importDynamic(reader, first, fh);
    else await importFixed(reader, first, fh);
  });
}

async function importDynamic(reader: ByteReader, first: Buffer, fh: FileHandle): Promise<void> {
  const footer = decodeFooter(first, 'footer copy');
  if (footer.diskType === DISK_TYPE_FIXED) throw new VhdError('VHD_CORRUPT', 'fixed-disk footer at the start of the stream');
  if (footer.diskType === DISK_TYPE_DIFFERENCING) throw new VhdError('VHD_UNSUPPORTED', 'differencing VHD streams cannot be imported standalone');
  if (footer.dataOffset < BigInt(FOOTER_SIZE) || footer.dataOffset > BigInt(1 << 30)) {
    throw new VhdError('VHD_CORRUPT', `header offset ${footer.dataOffset} out of range`);
  }
  const headerOffset = Number(footer.dataOffset);
  await reader.skip(headerOffset - FOOTER_SIZE, 'dynamic header');
  const header = decodeHeader(await reader.read(HEADER_SIZE, 'dynamic header'));
  const bs = header.blockSize;
  const size = footer.currentSize;
  const entries = Math.ceil(size / bs);
  if (header.maxTableEntries < entries) {
    throw new VhdError('VHD_CORRUPT', `BAT has ${header.maxTableEntries} entries, ${entries} needed for ${size} bytes`);
  }
  if (header.tableOffset < reader.position) {
    throw new VhdError(header.tableOffset < headerOffset + HEADER_SIZE && header.tableOffset + header.maxTableEntries * 4 > headerOffset ? 'VHD_CORRUPT' : 'VHD_UNSUPPORTED', `BAT at ${header.tableOffset} precedes the header end (${reader.position}); cannot stream`);
  }
  await reader.skip(header.tableOffset - reader.position, 'BAT');
  const rawBat = await reader.read(header.maxTableEntries * 4, 'BAT');
  const bm = bitmapSize(bs);
  const blockTotal = bm + bs;
  const batEnd = reader.position;
  const blocks: { i: number; start: number }[] = [];
  for (let i = 0; i < header.maxTableEntries; i++) {
    const e = rawBat.readUInt32BE(i * 4);
    if (e === BAT_UNUSED) continue;
    const start = e * SECTOR;
    if (start < batEnd) {
      const inMeta = start < FOOTER_SIZE || (start < headerOffset + HEADER_SIZE && start + blockTotal > headerOffset) || (start < batEnd && start + blockTotal > header.tableOffset);
      throw new VhdError(inMeta ? 'VHD_CORRUPT' : 'VHD_UNSUPPORTED', `BAT entry ${i} (${start}) lies before the end of the BAT (${batEnd})`);
    }
    if (i >= entries) continue; // beyond the virtual size: ignore (still skipped over in the stream)
    blocks.push({ i, start });
  }
  blocks.sort((a, b) => a.start - b.start);
  for (let k = 1; k < blocks.length; k++) {
    if (blocks[k]!.start < blocks[k - 1]!.start + blockTotal) {
      throw new VhdError('VHD_CORRUPT', `blocks ${blocks[k - 1]!.i} and ${blocks[k]!.i} overlap`);
    }
  }
  const outBat = Buffer.alloc(batSize(entries), 0xff);
  let out = FOOTER_SIZE + HEADER_SIZE + outBat.length;
  const q = new WriteQueue(fh);
  for (const { i, start } of blocks) {
    await reader.skip(start - reader.position, `block ${i}`);
    const data = await reader.read(blockTotal, `block ${i}`);
    outBat.writeUInt32BE(out / SECTOR, i * 4);
    await q.push([data], out);
    out += blockTotal;
  }
  // The rest of the stream must end with a footer identical in substance to the copy.
  let tail = Buffer.alloc(0);
  for (;;) {
    const b = await reader.readUpTo(4 * 1024 * 1024);
    if (b.length === 0) break;
    tail = tail.length + b.length <= FOOTER_SIZE ? Buffer.concat([tail, b]) : Buffer.from(Buffer.concat([tail, b]).subarray(-FOOTER_SIZE));
  }
  if (tail.length < FOOTER_SIZE) throw new VhdError('VHD_TRUNCATED', `stream ended at ${reader.position} without the trailing footer`);
  const end = decodeFooter(tail, 'trailing footer');
  checkSameDisk(footer, end);
  await q.drain();
  const outFooter = encodeFooter({ ...footer, dataOffset: BigInt(FOOTER_SIZE) });
  const outHeader = newHeader(FOOTER_SIZE + HEADER_SIZE, entries, bs);
  await writeFull(fh, outFooter, out);
  await writevFull(fh, [outFooter, encodeHeader(outHeader), outBat], 0);
}

function checkSameDisk(a: VhdFooter, b: VhdFooter): void {
  if (a.diskType !== b.diskType || a.currentSize !== b.currentSize || !a.uuid.equals(b.uuid) || a.dataOffset !== b.dataOffset) {
    throw new VhdError('VHD_CORRUPT', 'trailing footer differs from the footer copy');
  }
}

async function importFixed(reader: ByteReader, first: Buffer, fh: FileHandle): Promise<void> {
  // Data blocks go right after footer copy + header; the BAT is appended once the size is known.
  const bs = DEFAULT_BLOCK_SIZE;
  const bm = fullBitmap(bs);
  const blockTotal = bm.length + bs;
  const q = new WriteQueue(fh);
  const batEntries: number[] = [];
  let out = FOOTER_SIZE + HEADER_SIZE;
  let dataBytes = 0;
  const put = async (i: number, data: Buffer) => {
    dataBytes += data.length;
    if (isZero(data)) return;
    if (i >= 0xffffff) throw new VhdError('VHD_UNSUPPORTED', 'fixed disk stream too large');
    batEntries[i] = out / SECTOR;
    await q.push([bm, data, ...zeros(bs - data.length)], out);
    out += blockTotal;
  };
  let footerBuf: Buffer;
  for (let i = 0; ; i++) {
    let blk = i === 0 ? Buffer.concat([first, await reader.readUpTo(bs - FOOTER_SIZE)]) : await reader.readUpTo(bs);
    const after = await reader.fill(FOOTER_SIZE);
    if (blk.length === bs && after >= FOOTER_SIZE) {
      await put(i, blk);
      continue;
    }
    // End of stream: the last 512 bytes are the footer.
    blk = Buffer.concat([blk, await reader.readUpTo(after)]);
    if (blk.length < FOOTER_SIZE) throw new VhdError('VHD_TRUNCATED', 'stream too short for a footer');
    const data = blk.subarray(0, blk.length - FOOTER_SIZE);
    footerBuf = blk.subarray(blk.length - FOOTER_SIZE);
    if (data.length) await put(i, data);
    break;
  }
  if (footerBuf.toString('latin1', 0, 8) !== FOOTER_COOKIE) {
    throw new VhdError('VHD_TRUNCATED', `no VHD footer at the end of the stream (${reader.position} bytes; truncated or not a VHD)`);
  }
  const footer = decodeFooter(footerBuf, 'footer');
  if (footer.diskType !== DISK_TYPE_FIXED) throw new VhdError('VHD_CORRUPT', 'dynamic-disk footer at the end but no footer copy at the start');
  if (dataBytes < footer.currentSize) throw new VhdError('VHD_TRUNCATED', `fixed disk of ${footer.currentSize} bytes but the stream holds ${dataBytes} data bytes`);
  if (dataBytes > footer.currentSize) throw new VhdError('VHD_CORRUPT', `fixed disk of ${footer.currentSize} bytes but the stream holds ${dataBytes} data bytes`);
  const size = footer.currentSize;
  const entries = Math.ceil(size / bs);
  const bat = Buffer.alloc(batSize(entries), 0xff);
  for (let i = 0; i < entries; i++) if (batEntries[i] !== undefined) bat.writeUInt32BE(batEntries[i]!, i * 4);
  await q.drain();
  const batOffset = out;
  const outFooter = encodeFooter(newFooter(DISK_TYPE_DYNAMIC, size, Buffer.from(footer.uuid)));
  await writevFull(fh, [bat, outFooter], batOffset);
  await writevFull(fh, [outFooter, encodeHeader(newHeader(batOffset, entries, bs))], 0);
}
