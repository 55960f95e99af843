/**
 * Random access to a single VHD file (fixed, dynamic or differencing), with
 * read-through to the parent chain for differencing disks.
 */
import { open, stat, realpath, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve, basename } from 'node:path';
import { VhdError } from './errors.ts';
import {
  BAT_UNUSED,
  DEFAULT_BLOCK_SIZE,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR,
  type DiskType,
  type ParentLocator,
  type VhdFooter,
  type VhdHeader,
  batSize,
  bitmapAllSet,
  bitmapRun,
  bitmapSetRange,
  bitmapSize,
  chsGeometry,
  decodeFooter,
  decodeHeader,
  diskTypeName,
  encodeFooter,
  encodeHeader,
  fullBitmap,
  newFooter,
  newHeader,
  roundUp,
  uuidToString,
  vhdTimestamp,
} from './format.ts';
import { readAt, readFull, writeFull, writevFull, zeros } from './io.ts';

export interface OpenOptions {
  /** Open read-write (default false). Parents are always opened read-only. */
  writable?: boolean;
  /** For differencing disks, open the parent chain so reads fall through (default true). */
  parents?: boolean;
  /**
   * Defer BAT and bitmap updates until `flush()`, which first fdatasyncs the
   * data and then writes the metadata (and syncs again). Used by coalesce.
   */
  deferMetadata?: boolean;
}

const BITMAP_CACHE_MAX = 4096;

/** A bitmap being read from disk; `valid` is cleared when a write makes what it read possibly stale. */
interface BitmapLoad {
  promise: Promise<Buffer>;
  valid: boolean;
}
const MAX_CHAIN_DEPTH = 64;
const MAX_LOCATOR_LENGTH = 64 * 1024;

export class Vhd {
  readonly path: string;
  footer: VhdFooter;
  header: VhdHeader | undefined;
  /** Parent disk, for differencing disks opened with `parents: true`. */
  parent: Vhd | undefined;
  readonly writable: boolean;

  private fh: FileHandle | undefined;
  private bat: Uint32Array = new Uint32Array(0);
  /** Offset where the next block (and then the footer) goes. */
  private nextFree = 0;
  /**
   * Cached sector bitmaps. Once cached, a bitmap is the authoritative copy:
   * writes set bits in it in place (after the data is written) and then store
   * it; a load from disk never replaces a cached entry.
   */
  private bitmaps = new Map<number, Buffer>();
  private pendingBitmaps = new Map<number, Buffer>();
  /** Bitmap reads in flight, shared by concurrent callers. */
  private bitmapLoads = new Map<number, BitmapLoad>();
  /** Block whose bitmap a write is updating: never evicted from the cache meanwhile. */
  private pinnedBlock = -1;
  /**
   * Tail of the queue serializing write(), flush(), sync(), grow() and close()
   * (reads are not serialized): keeps BAT/bitmap/footer updates, block
   * allocation and the read-modify-write of partial sectors atomic.
   */
  private writeQueue: Promise<void> = Promise.resolve();
  private pendingBat = new Set<number>();
  private readonly deferMetadata: boolean;
  private resolvedParent: string | undefined;
  private parentCandidates: string[] = [];
  /** True when the trailing footer was unreadable and the copy at offset 0 was used. */
  footerFromCopy = false;

  private constructor(path: string, fh: FileHandle, footer: VhdFooter, writable: boolean, defer: boolean) {
    this.path = path;
    this.fh = fh;
    this.footer = footer;
    this.writable = writable;
    this.deferMetadata = defer;
  }

  get type(): DiskType {
    return diskTypeName(this.footer.diskType);
  }
  get virtualSize(): number {
    return this.footer.currentSize;
  }
  /** Allocation unit: the dynamic block size, or 2 MiB (nominal) for fixed disks. */
  get blockSize(): number {
    return this.header?.blockSize ?? DEFAULT_BLOCK_SIZE;
  }
  get uuid(): string {
    return uuidToString(this.footer.uuid);
  }
  get blockCount(): number {
    return Math.ceil(this.virtualSize / this.blockSize);
  }
  private get bitmapBytes(): number {
    return bitmapSize(this.blockSize);
  }
  private get handle(): FileHandle {
    if (!this.fh) throw new VhdError('VHD_CLOSED', this.path);
    return this.fh;
  }

  // -------------------------------------------------------------------------
  // Opening and validation

  static async open(path: string, opts: OpenOptions = {}, seen: Set<string> = new Set()): Promise<Vhd> {
    const writable = opts.writable ?? false;
    const fh = await open(path, writable ? 'r+' : 'r');
    let vhd: Vhd | undefined;
    try {
      const size = (await fh.stat()).size;
      if (size < FOOTER_SIZE) throw new VhdError('VHD_TRUNCATED', `${path}: ${size} bytes, too small for a footer`);
      let footer: VhdFooter;
      let fromCopy = false;
      try {
        footer = decodeFooter(await readAt(fh, FOOTER_SIZE, size - FOOTER_SIZE), `${path}: footer`);
      } catch (e) {
        // The copy at offset 0 of a dynamic disk lets us recover from a torn trailing footer.
        let copy: VhdFooter | undefined;
        try {
          copy = decodeFooter(await readAt(fh, FOOTER_SIZE, 0), `${path}: footer copy`);
        } catch {
          copy = undefined;
        }
        if (!copy || copy.diskType === DISK_TYPE_FIXED) throw e;
        footer = copy;
        fromCopy = true;
      }
      vhd = new Vhd(path, fh, footer, writable, opts.deferMetadata ?? false);
      vhd.footerFromCopy = fromCopy;
      if (footer.diskType === DISK_TYPE_FIXED) {
        if (footer.currentSize > size - FOOTER_SIZE) {
          throw new VhdError('VHD_TRUNCATED', `${path}: fixed disk of ${footer.currentSize} bytes but file has ${size - FOOTER_SIZE} data bytes`);
        }
        vhd.nextFree = footer.currentSize;
      } else {
        await vhd.loadDynamic(size);
      }
      if (writable && footer.diskType !== DISK_TYPE_FIXED && (fromCopy || size !== vhd.nextFree + FOOTER_SIZE)) {
        // Repair: footer missing/stale at the end (e.g. interrupted allocation). Rewrite it.
        await writeFull(fh, encodeFooter(vhd.footer), vhd.nextFree);
        await fh.truncate(vhd.nextFree + FOOTER_SIZE);
        vhd.footerFromCopy = false;
      }
      if (footer.diskType === DISK_TYPE_DIFFERENCING && (opts.parents ?? true)) {
        const real = await realpath(path);
        if (seen.has(real) || seen.size >= MAX_CHAIN_DEPTH) {
          throw new VhdError('VHD_PARENT_MISMATCH', `${path}: parent chain loops or is deeper than ${MAX_CHAIN_DEPTH}`);
        }
        seen.add(real);
        const pp = vhd.parentPath();
        if (!pp || !existsSync(pp)) {
          throw new VhdError('VHD_PARENT_MISSING', `${path}: parent not found (tried ${vhd.parentCandidates.join(', ') || 'nothing'})`);
        }
        const parent = await Vhd.open(pp, { parents: true }, seen);
        vhd.parent = parent;
        if (!parent.footer.uuid.equals(vhd.header!.parentUuid)) {
          throw new VhdError(
            'VHD_PARENT_MISMATCH',
            `${path}: parent ${pp} has UUID ${parent.uuid}, expected ${uuidToString(vhd.header!.parentUuid)}`,
          );
        }
      }
      return vhd;
    } catch (e) {
      if (vhd) await vhd.close().catch(() => {});
      else await fh.close().catch(() => {});
      throw e;
    }
  }

  private async loadDynamic(fileSize: number): Promise<void> {
    const fh = this.handle;
    const f = this.footer;
    const where = this.path;
    if (f.dataOffset < BigInt(FOOTER_SIZE) || f.dataOffset + BigInt(HEADER_SIZE) > BigInt(fileSize)) {
      throw new VhdError('VHD_CORRUPT', `${where}: header offset ${f.dataOffset} outside file of ${fileSize} bytes`);
    }
    const headerOffset = Number(f.dataOffset);
    const h = decodeHeader(await readAt(fh, HEADER_SIZE, headerOffset), `${where}: dynamic header`);
    this.header = h;
    const bs = h.blockSize;
    if (h.maxTableEntries * bs < f.currentSize) {
      throw new VhdError('VHD_CORRUPT', `${where}: BAT of ${h.maxTableEntries} x ${bs} bytes cannot cover ${f.currentSize} bytes`);
    }
    const batBytes = h.maxTableEntries * 4;
    if (h.tableOffset < FOOTER_SIZE || overlaps(h.tableOffset, batBytes, headerOffset, HEADER_SIZE)) {
      throw new VhdError('VHD_CORRUPT', `${where}: BAT offset ${h.tableOffset} overlaps the footer copy or header`);
    }
    const dataEnd = this.footerFromCopy ? fileSize : fileSize - FOOTER_SIZE;
    if (h.tableOffset + batBytes > dataEnd) {
      throw new VhdError('VHD_TRUNCATED', `${where}: BAT (${batBytes} bytes at ${h.tableOffset}) beyond end of file`);
    }
    const raw = await readAt(fh, batBytes, h.tableOffset, `${where}: BAT`);
    const bat = new Uint32Array(h.maxTableEntries);
    for (let i = 0; i < bat.length; i++) bat[i] = raw.readUInt32BE(i * 4);
    this.bat = bat;

    const bm = bitmapSize(bs);
    const blockTotal = bm + bs;
    let nextFree = Math.max(headerOffset + HEADER_SIZE, h.tableOffset + batSize(h.maxTableEntries));
    const starts: number[] = [];
    for (let i = 0; i < bat.length; i++) {
      const e = bat[i]!;
      if (e === BAT_UNUSED) continue;
      const start = e * SECTOR;
      // The last block of a disk may legitimately be cut at the virtual size.
      const needed = bm + Math.max(0, Math.min(bs, f.currentSize - i * bs));
      if (start < FOOTER_SIZE || start + needed > dataEnd) {
        throw new VhdError('VHD_CORRUPT', `${where}: BAT entry ${i} points to ${start}, outside the data area (file ${fileSize} bytes)`);
      }
      if (overlaps(start, blockTotal, headerOffset, HEADER_SIZE) || overlaps(start, blockTotal, h.tableOffset, batBytes)) {
        throw new VhdError('VHD_CORRUPT', `${where}: BAT entry ${i} overlaps the header or BAT`);
      }
      starts.push(start);
      nextFree = Math.max(nextFree, start + blockTotal);
    }
    starts.sort((a, b) => a - b);
    for (let k = 1; k < starts.length; k++) {
      if (starts[k]! < starts[k - 1]! + blockTotal) {
        throw new VhdError('VHD_CORRUPT', `${where}: data blocks at ${starts[k - 1]} and ${starts[k]} overlap`);
      }
    }
    if (f.diskType === DISK_TYPE_DIFFERENCING) {
      for (const l of h.parentLocators) {
        if (!l.platformCode || l.platformDataLength === 0) continue;
        if (l.platformDataLength > MAX_LOCATOR_LENGTH || l.platformDataOffset < FOOTER_SIZE || l.platformDataOffset + l.platformDataLength > dataEnd) {
          throw new VhdError('VHD_CORRUPT', `${where}: parent locator ${l.platformCode} outside the file`);
        }
        nextFree = Math.max(nextFree, l.platformDataOffset + roundUp(l.platformDataLength, SECTOR));
        const data = await readAt(fh, l.platformDataLength, l.platformDataOffset, `${where}: parent locator`);
        const p = decodeLocator(l.platformCode, data, dirname(this.path));
        if (p) this.parentCandidates.push(p);
      }
      if (h.parentUnicodeName) {
        const n = h.parentUnicodeName.replace(/\\/g, '/');
        this.parentCandidates.push(isAbsolute(n) ? n : resolve(dirname(this.path), n));
        this.parentCandidates.push(resolve(dirname(this.path), basename(n)));
      }
      this.resolvedParent = this.parentCandidates.find((p) => existsSync(p)) ?? this.parentCandidates[0];
    }
    this.nextFree = roundUp(nextFree, SECTOR);
  }

  // -------------------------------------------------------------------------
  // Queries

  /** Absolute path of the parent (differencing disks), resolved from the locators; undefined otherwise. */
  parentPath(): string | undefined {
    return this.resolvedParent;
  }

  /** Indices of the blocks holding data in this file (every block for a fixed disk). */
  allocatedBlocks(): number[] {
    const out: number[] = [];
    if (this.footer.diskType === DISK_TYPE_FIXED) {
      for (let i = 0; i < this.blockCount; i++) out.push(i);
      return out;
    }
    const n = Math.min(this.bat.length, this.blockCount);
    for (let i = 0; i < n; i++) if (this.bat[i] !== BAT_UNUSED) out.push(i);
    return out;
  }

  isBlockAllocated(i: number): boolean {
    if (this.footer.diskType === DISK_TYPE_FIXED) return i >= 0 && i < this.blockCount;
    return i >= 0 && i < this.bat.length && this.bat[i] !== BAT_UNUSED;
  }

  /**
   * False when no disk of the chain has a block allocated over [offset, offset+length):
   * the range then reads as zeros without any I/O.
   */
  hasData(offset: number, length: number): boolean {
    const end = Math.min(offset + length, this.virtualSize);
    if (offset >= end) return false;
    if (this.footer.diskType === DISK_TYPE_FIXED) return true;
    const bs = this.blockSize;
    for (let i = Math.floor(offset / bs); i < Math.ceil(end / bs); i++) if (this.isBlockAllocated(i)) return true;
    return this.parent ? this.parent.hasData(offset, end - offset) : false;
  }

  /** Sector bitmap of an allocated block (a copy), or undefined if the block is not allocated. */
  async blockBitmap(i: number): Promise<Buffer | undefined> {
    if (this.footer.diskType === DISK_TYPE_FIXED) return this.isBlockAllocated(i) ? fullBitmap(this.blockSize) : undefined;
    if (!this.isBlockAllocated(i)) return undefined;
    return Buffer.from(await this.getBitmap(i));
  }

  private cachedBitmap(i: number): Buffer | undefined {
    return this.pendingBitmaps.get(i) ?? this.bitmaps.get(i);
  }

  /**
   * The bitmap of allocated block `i`. A copy read from disk is cached only if
   * nothing is cached by then and no bitmap store for the block completed
   * while it was being read (it could predate that store); otherwise the
   * cached copy is returned, or the disk copy is used for this call only.
   */
  private async getBitmap(i: number): Promise<Buffer> {
    const cached = this.cachedBitmap(i);
    if (cached) return cached;
    let load = this.bitmapLoads.get(i);
    if (!load) {
      const l: BitmapLoad = {
        promise: readAt(this.handle, this.bitmapBytes, this.bat[i]! * SECTOR, `${this.path}: bitmap of block ${i}`),
        valid: true,
      };
      const forget = () => {
        if (this.bitmapLoads.get(i) === l) this.bitmapLoads.delete(i);
      };
      l.promise.then(forget, forget);
      this.bitmapLoads.set(i, l);
      load = l;
    }
    const bm = await load.promise;
    const now = this.cachedBitmap(i);
    if (now) return now;
    if (!load.valid) return bm;
    this.cacheBitmap(i, bm);
    return bm;
  }

  private cacheBitmap(i: number, bm: Buffer): void {
    if (this.bitmaps.size >= BITMAP_CACHE_MAX && !this.bitmaps.has(i)) {
      for (const k of this.bitmaps.keys()) {
        if (k !== this.pinnedBlock) {
          this.bitmaps.delete(k);
          break;
        }
      }
    }
    this.bitmaps.set(i, bm);
  }

  /** A bitmap store for block `i` completed: loads still in flight may have read the older copy. */
  private invalidateBitmapLoad(i: number): void {
    const l = this.bitmapLoads.get(i);
    if (l) {
      l.valid = false;
      this.bitmapLoads.delete(i);
    }
  }

  /** Run `fn` after every write-side operation queued before it. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writeQueue.then(fn);
    this.writeQueue = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  // -------------------------------------------------------------------------
  // Reading

  /** Read `length` bytes at virtual `offset` (zeros where nothing in the chain holds data). */
  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    await this.readInto(b, 0, offset, length);
    return b;
  }

  /** Like read() but into `target` at `targetOffset`. */
  async readInto(target: Buffer, targetOffset: number, offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    if (targetOffset < 0 || targetOffset + length > target.length) throw new VhdError('VHD_INVALID_ARG', 'target buffer too small');
    if (length === 0) return;
    if (this.footer.diskType === DISK_TYPE_FIXED) {
      await readFull(this.handle, target, targetOffset, length, offset, this.path);
      return;
    }
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const i = Math.floor(pos / bs);
      const inBlk = pos - i * bs;
      const n = Math.min(bs - inBlk, end - pos);
      await this.readBlockRange(i, inBlk, n, target, targetOffset + (pos - offset));
      pos += n;
    }
  }

  /** Read allowing ranges beyond the virtual size (zeros there): used when a child outgrew its parent. */
  private async readClipped(target: Buffer, tpos: number, offset: number, length: number): Promise<void> {
    const inside = Math.max(0, Math.min(length, this.virtualSize - offset));
    if (inside > 0) await this.readInto(target, tpos, offset, inside);
    if (inside < length) target.fill(0, tpos + inside, tpos + length);
  }

  private async readFromBelow(target: Buffer, tpos: number, offset: number, length: number): Promise<void> {
    if (this.parent) await this.parent.readClipped(target, tpos, offset, length);
    else target.fill(0, tpos, tpos + length);
  }

  private async readBlockRange(i: number, inBlk: number, n: number, target: Buffer, tpos: number): Promise<void> {
    const bs = this.blockSize;
    const entry = i < this.bat.length ? this.bat[i]! : BAT_UNUSED;
    if (entry === BAT_UNUSED) {
      await this.readFromBelow(target, tpos, i * bs + inBlk, n);
      return;
    }
    const dataStart = entry * SECTOR + this.bitmapBytes;
    const bm = await this.getBitmap(i);
    const s0 = Math.floor(inBlk / SECTOR);
    const s1 = Math.ceil((inBlk + n) / SECTOR);
    if (bitmapAllSet(bm, s0, s1)) {
      await readFull(this.handle, target, tpos, n, dataStart + inBlk, this.path);
      return;
    }
    let s = s0;
    while (s < s1) {
      const run = bitmapRun(bm, s, s1);
      const a = Math.max(s * SECTOR, inBlk);
      const b = Math.min(run.end * SECTOR, inBlk + n);
      if (run.set) await readFull(this.handle, target, tpos + (a - inBlk), b - a, dataStart + a, this.path);
      else await this.readFromBelow(target, tpos + (a - inBlk), i * bs + a, b - a);
      s = run.end;
    }
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.virtualSize) {
      throw new VhdError('VHD_OUT_OF_RANGE', `${this.path}: [${offset}, +${length}) outside virtual size ${this.virtualSize}`);
    }
  }

  // -------------------------------------------------------------------------
  // Writing

  /**
   * Write `data` at virtual `offset`, allocating blocks as needed. Any offset/length is allowed.
   * Writes (and flush/sync/grow/close) are applied one at a time in call order;
   * reads may run concurrently and see each sector either before or after a write.
   */
  async write(offset: number, data: Buffer): Promise<void> {
    if (!this.writable) throw new VhdError('VHD_READONLY', this.path);
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.serialized(() => this.writeLocked(offset, data));
  }

  private async writeLocked(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length); // the size may have changed while queued (grow)
    if (this.footer.diskType === DISK_TYPE_FIXED) {
      await writeFull(this.handle, data, offset);
      return;
    }
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const i = Math.floor(pos / bs);
      const inBlk = pos - i * bs;
      const n = Math.min(bs - inBlk, end - pos);
      await this.writeBlockRange(i, inBlk, data.subarray(pos - offset, pos - offset + n));
      pos += n;
    }
  }

  private async writeBlockRange(i: number, inBlk: number, chunk: Buffer): Promise<void> {
    const bs = this.blockSize;
    let s0 = Math.floor(inBlk / SECTOR);
    let s1 = Math.ceil((inBlk + chunk.length) / SECTOR);
    if (this.footer.diskType === DISK_TYPE_DIFFERENCING) {
      // Keep differencing bitmaps at 4 KiB (one bitmap byte) granularity: some
      // readers (libvhdi) only look at whole bitmap bytes. The extra sectors are
      // filled with what the chain currently shows, so contents are unchanged.
      const limit = Math.min(bs, this.virtualSize - i * bs) / SECTOR;
      s0 = s0 & ~7;
      s1 = Math.min(limit, (s1 + 7) & ~7);
    }
    const alignedStart = s0 * SECTOR;
    const alignedLen = (s1 - s0) * SECTOR;
    let payload = chunk;
    const headLen = inBlk - alignedStart;
    const tailLen = alignedStart + alignedLen - (inBlk + chunk.length);
    if (headLen > 0 || tailLen > 0) {
      // Read-modify-write of the partial head/tail (through the chain).
      payload = Buffer.allocUnsafe(alignedLen);
      const base = i * bs + alignedStart;
      if (headLen > 0) await this.readInto(payload, 0, base, headLen);
      if (tailLen > 0) await this.readInto(payload, alignedLen - tailLen, base + alignedLen - tailLen, tailLen);
      chunk.copy(payload, headLen);
    }
    const entry = this.bat[i]!;
    if (entry === BAT_UNUSED) {
      await this.allocateBlock(i, s0, payload);
      return;
    }
    await writeFull(this.handle, payload, entry * SECTOR + this.bitmapBytes + alignedStart);
    this.pinnedBlock = i;
    try {
      const bm = await this.getBitmap(i);
      if (!bitmapAllSet(bm, s0, s1)) {
        // Bits are set only now that the data is on disk, so concurrent readers never see unwritten sectors.
        bitmapSetRange(bm, s0, s1);
        await this.storeBitmap(i, bm);
      }
    } finally {
      this.pinnedBlock = -1;
    }
  }

  private async storeBitmap(i: number, bm: Buffer): Promise<void> {
    if (this.deferMetadata) {
      this.pendingBitmaps.set(i, bm);
      this.bitmaps.delete(i);
      return;
    }
    // Writes are serialized and the bitmap is pinned, so `bm` is the cached copy.
    await writeFull(this.handle, bm, this.bat[i]! * SECTOR);
    this.invalidateBitmapLoad(i);
  }

  /** Append a new block at the end of the file: bitmap + data + new footer in one write, then the BAT entry. */
  private async allocateBlock(i: number, s0: number, payload: Buffer): Promise<void> {
    const bs = this.blockSize;
    const at = this.nextFree;
    if (at / SECTOR >= BAT_UNUSED) throw new VhdError('VHD_UNSUPPORTED', `${this.path}: file would exceed 2 TiB of sectors`);
    let bm: Buffer;
    if (this.footer.diskType === DISK_TYPE_DIFFERENCING) {
      bm = Buffer.alloc(this.bitmapBytes);
      bitmapSetRange(bm, s0, s0 + payload.length / SECTOR);
    } else {
      bm = fullBitmap(bs);
    }
    const pre = s0 * SECTOR;
    const post = bs - pre - payload.length;
    const blockTotal = this.bitmapBytes + bs;
    await writevFull(this.handle, [bm, ...zeros(pre), payload, ...zeros(post), encodeFooter(this.footer)], at);
    this.nextFree = at + blockTotal;
    // Publish the entry and its bitmap together (synchronously) for concurrent readers.
    this.bat[i] = at / SECTOR;
    this.invalidateBitmapLoad(i);
    this.pendingBitmaps.delete(i);
    this.cacheBitmap(i, bm);
    if (this.deferMetadata) this.pendingBat.add(i);
    else await this.writeBatEntries([i]);
  }

  private async writeBatEntries(indices: Iterable<number>): Promise<void> {
    // Group by BAT sector so each touched sector is written once.
    const sectors = new Set<number>();
    for (const i of indices) sectors.add(Math.floor((i * 4) / SECTOR));
    const tableOffset = this.header!.tableOffset;
    const total = this.bat.length * 4;
    for (const s of [...sectors].sort((a, b) => a - b)) {
      const from = s * SECTOR;
      const to = Math.min(total, from + SECTOR);
      const b = Buffer.allocUnsafe(to - from);
      for (let o = from; o < to; o += 4) b.writeUInt32BE(this.bat[o / 4]!, o - from);
      await writeFull(this.handle, b, tableOffset + from);
    }
  }

  private async writeHeaderAndFooters(): Promise<void> {
    const fh = this.handle;
    const footer = encodeFooter(this.footer);
    if (this.header) {
      await writeFull(fh, encodeHeader(this.header), Number(this.footer.dataOffset));
      await writeFull(fh, footer, 0);
    }
    await writeFull(fh, footer, this.nextFree);
    await fh.truncate(this.nextFree + FOOTER_SIZE);
  }

  /** Make deferred metadata durable: sync data, write BAT entries and bitmaps, sync again. */
  async flush(): Promise<void> {
    if (!this.fh || !this.writable) return;
    await this.serialized(() => this.flushLocked());
  }

  private async flushLocked(): Promise<void> {
    if (!this.fh || !this.writable) return;
    if (this.pendingBat.size === 0 && this.pendingBitmaps.size === 0) return;
    await this.fh.datasync();
    if (this.pendingBitmaps.size) {
      for (const [i, bm] of [...this.pendingBitmaps].sort((a, b) => this.bat[a[0]]! - this.bat[b[0]]!)) {
        await writeFull(this.fh, bm, this.bat[i]! * SECTOR);
        this.invalidateBitmapLoad(i);
        this.cacheBitmap(i, bm);
        this.pendingBitmaps.delete(i);
      }
    }
    if (this.pendingBat.size) {
      await this.writeBatEntries(this.pendingBat);
      this.pendingBat.clear();
    }
    await this.fh.datasync();
  }

  /** fdatasync the file. */
  async sync(): Promise<void> {
    await this.serialized(async () => {
      await this.flushLocked();
      await this.fh?.datasync();
    });
  }

  // -------------------------------------------------------------------------
  // Growing

  /** Grow the virtual size to `newSize` (multiple of 512). Relocates data blocks when the BAT needs room. */
  async grow(newSize: number): Promise<void> {
    if (!this.writable) throw new VhdError('VHD_READONLY', this.path);
    if (!Number.isSafeInteger(newSize) || newSize % SECTOR !== 0 || newSize > MAX_VIRTUAL_SIZE) {
      throw new VhdError('VHD_INVALID_ARG', `invalid size ${newSize}`);
    }
    await this.serialized(() => this.growLocked(newSize));
  }

  private async growLocked(newSize: number): Promise<void> {
    if (newSize < this.virtualSize) throw new VhdError('VHD_UNSUPPORTED', `${this.path}: shrinking is not supported`);
    if (newSize === this.virtualSize) return;
    await this.flushLocked();
    const fh = this.handle;
    if (this.footer.diskType === DISK_TYPE_FIXED) {
      const old = this.virtualSize;
      this.footer.currentSize = newSize;
      this.footer.geometry = chsGeometry(newSize / SECTOR);
      await writeFull(fh, encodeFooter(this.footer), newSize);
      await writeFull(fh, Buffer.alloc(FOOTER_SIZE), old); // old footer becomes data: must read as zeros
      await fh.truncate(newSize + FOOTER_SIZE);
      await fh.datasync();
      this.nextFree = newSize;
      return;
    }
    const h = this.header!;
    const bs = h.blockSize;
    const need = Math.ceil(newSize / bs);
    if (need > h.maxTableEntries) {
      const oldEntries = h.maxTableEntries;
      const regionStart = h.tableOffset + oldEntries * 4;
      const regionEnd = h.tableOffset + batSize(need);
      const headerOffset = Number(this.footer.dataOffset);
      if (overlaps(regionStart, regionEnd - regionStart, headerOffset, HEADER_SIZE)) {
        throw new VhdError('VHD_UNSUPPORTED', `${this.path}: header follows the BAT; cannot grow it in place`);
      }
      const blockTotal = this.bitmapBytes + bs;
      // 1. Move data blocks lying where the BAT will grow to the end of the file.
      const victims: number[] = [];
      for (let i = 0; i < this.bat.length; i++) {
        const e = this.bat[i]!;
        if (e !== BAT_UNUSED && overlaps(e * SECTOR, blockTotal, regionStart, regionEnd - regionStart)) victims.push(i);
      }
      this.nextFree = Math.max(this.nextFree, regionEnd);
      for (const i of victims) {
        const from = this.bat[i]! * SECTOR;
        const buf = await readAt(fh, blockTotal, from, `${this.path}: block ${i}`);
        const at = this.nextFree;
        await writevFull(fh, [buf, encodeFooter(this.footer)], at);
        await fh.datasync();
        this.bat[i] = at / SECTOR;
        this.invalidateBitmapLoad(i);
        await this.writeBatEntries([i]);
        this.nextFree = at + blockTotal;
      }
      // 2. Move parent locator data out of the way too.
      let headerDirty = false;
      for (const l of h.parentLocators) {
        if (!l.platformCode || l.platformDataLength === 0) continue;
        const space = Math.max(roundUp(l.platformDataLength, SECTOR), 0);
        if (!overlaps(l.platformDataOffset, space, regionStart, regionEnd - regionStart)) continue;
        const data = await readAt(fh, l.platformDataLength, l.platformDataOffset);
        const at = this.nextFree;
        const padded = Buffer.alloc(space);
        data.copy(padded);
        await writevFull(fh, [padded, encodeFooter(this.footer)], at);
        l.platformDataOffset = at;
        l.platformDataSpace = space;
        this.nextFree = at + space;
        headerDirty = true;
      }
      if (headerDirty) {
        await fh.datasync();
        await writeFull(fh, encodeHeader(h), headerOffset);
      }
      if (victims.length) await fh.datasync();
      // 3. Extend the BAT with unused entries, then publish the new entry count.
      const bat = new Uint32Array(need);
      bat.set(this.bat);
      bat.fill(BAT_UNUSED, oldEntries);
      this.bat = bat;
      await writeFull(fh, Buffer.alloc(regionEnd - regionStart, 0xff), regionStart);
      await fh.datasync();
      h.maxTableEntries = need;
    }
    this.footer.currentSize = newSize;
    this.footer.geometry = chsGeometry(newSize / SECTOR);
    await this.writeHeaderAndFooters();
    await fh.datasync();
  }

  /**
   * Give the disk another identity (footer UUID), both footer copies, made
   * durable: the last step of a coalesce, where the merged parent takes the
   * place of the child that its grandchildren name by UUID.
   */
  async setUuid(uuid: Buffer): Promise<void> {
    if (!this.writable) throw new VhdError('VHD_READONLY', this.path);
    if (uuid.length !== 16) throw new VhdError('VHD_INVALID_ARG', 'a UUID is 16 bytes');
    await this.serialized(async () => {
      await this.flushLocked();
      this.footer.uuid = Buffer.from(uuid);
      const footer = encodeFooter(this.footer);
      const fh = this.handle;
      if (this.footer.diskType !== DISK_TYPE_FIXED) await writeFull(fh, footer, 0);
      await writeFull(fh, footer, this.nextFree);
      await fh.datasync();
    });
  }

  // -------------------------------------------------------------------------

  /** Close this disk and the parents it opened. */
  async close(): Promise<void> {
    await this.serialized(() => this.closeLocked());
  }

  private async closeLocked(): Promise<void> {
    const fh = this.fh;
    if (fh) {
      try {
        await this.flushLocked();
      } finally {
        this.fh = undefined;
        await fh.close();
      }
    }
    const p = this.parent;
    this.parent = undefined;
    if (p) await p.close();
  }

  /** Offset of a block's sector bitmap in the file (dynamic/differencing), for internal tools. */
  blockFileOffset(i: number): number | undefined {
    if (!this.isBlockAllocated(i) || this.footer.diskType === DISK_TYPE_FIXED) return undefined;
    return this.bat[i]! * SECTOR;
  }
}

function overlaps(a: number, alen: number, b: number, blen: number): boolean {
  return a < b + blen && b < a + alen;
}

/** Turn the data of a parent locator into an absolute path, or undefined if unusable. */
function decodeLocator(code: string, data: Buffer, childDir: string): string | undefined {
  let s: string;
  if (code === 'MacX') {
    s = data.toString('utf8');
    s = s.replace(/\0+$/, '');
    if (s.startsWith('file://')) s = s.slice('file://'.length);
  } else if (code === 'W2ru' || code === 'W2ku') {
    s = data.toString('utf16le').replace(/\0+$/, '').replace(/\\/g, '/');
    if (/^[A-Za-z]:\//.test(s)) return resolve(childDir, basename(s)); // foreign absolute path: try next to the child
  } else {
    return undefined;
  }
  if (!s) return undefined;
  return isAbsolute(s) ? s : resolve(childDir, s);
}

// ---------------------------------------------------------------------------
// Creation

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size > MAX_VIRTUAL_SIZE) {
    throw new VhdError('VHD_INVALID_ARG', `virtual size ${size} must be a positive multiple of 512 up to ${MAX_VIRTUAL_SIZE}`);
  }
}

function checkBlockSize(bs: number): void {
  if (!Number.isSafeInteger(bs) || bs < 4096 || bs > 256 * 1024 * 1024 || (bs & (bs - 1)) !== 0) {
    throw new VhdError('VHD_INVALID_ARG', `block size ${bs} must be a power of two between 4 KiB and 256 MiB`);
  }
}

/** Create a fixed VHD: `sizeBytes` of (sparse) zeros followed by the footer. Fails if `path` exists. */
export async function createFixed(path: string, sizeBytes: number): Promise<void> {
  checkSize(sizeBytes);
  const fh = await open(path, 'wx');
  try {
    await fh.truncate(sizeBytes);
    await writeFull(fh, encodeFooter(newFooter(DISK_TYPE_FIXED, sizeBytes)), sizeBytes);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

export interface CreateDynamicOptions {
  /** Block size in bytes (power of two, default 2 MiB). */
  blockSize?: number;
}

/** Create an empty dynamic VHD. Fails if `path` exists. */
export async function createDynamic(path: string, sizeBytes: number, opts: CreateDynamicOptions = {}): Promise<void> {
  checkSize(sizeBytes);
  const bs = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(bs);
  const entries = Math.ceil(sizeBytes / bs);
  const footer = encodeFooter(newFooter(DISK_TYPE_DYNAMIC, sizeBytes));
  const header = encodeHeader(newHeader(FOOTER_SIZE + HEADER_SIZE, entries, bs));
  const bat = Buffer.alloc(batSize(entries), 0xff);
  const fh = await open(path, 'wx');
  try {
    await writevFull(fh, [footer, header, bat, footer], 0);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

function locatorPaths(rel: string): { macx: Buffer; w2ru: Buffer } {
  const posix = rel.split('\\').join('/');
  const dotted = posix.startsWith('../') || posix.startsWith('./') ? posix : `./${posix}`;
  return {
    macx: Buffer.from(`file://${dotted}`, 'utf8'),
    w2ru: Buffer.from(dotted.replace(/\//g, '\\'), 'utf16le'),
  };
}

/**
 * Create a differencing VHD over `parentPath` (any VHD type). The child has the
 * parent's virtual size and block size (2 MiB for a fixed parent); its parent
 * locators ("MacX" file URL in UTF-8 and "W2ru" in UTF-16LE) record the parent
 * path relative to the child's directory, and its header the parent's UUID and
 * modification time. Fails if `path` exists.
 */
export async function createDifferencing(path: string, parentPath: string): Promise<void> {
  const parent = await Vhd.open(parentPath, { parents: false });
  let size: number;
  let bs: number;
  let parentUuid: Buffer;
  try {
    size = parent.virtualSize;
    bs = parent.type === 'fixed' ? DEFAULT_BLOCK_SIZE : parent.blockSize;
    parentUuid = Buffer.from(parent.footer.uuid);
  } finally {
    await parent.close();
  }
  const st = await stat(parentPath);
  const rel = relative(dirname(resolve(path)), resolve(parentPath));
  const { macx, w2ru } = locatorPaths(rel);
  const entries = Math.ceil(size / bs);
  const batOffset = FOOTER_SIZE + HEADER_SIZE;
  const locOffset = batOffset + batSize(entries);
  const macxSpace = roundUp(macx.length, SECTOR);
  const w2ruSpace = roundUp(w2ru.length, SECTOR);
  const h = newHeader(batOffset, entries, bs);
  h.parentUuid = parentUuid;
  h.parentTimestamp = vhdTimestamp(st.mtime);
  h.parentUnicodeName = rel;
  h.parentLocators[0] = { platformCode: 'MacX', platformDataSpace: macxSpace, platformDataLength: macx.length, platformDataOffset: locOffset };
  h.parentLocators[1] = {
    platformCode: 'W2ru',
    platformDataSpace: w2ruSpace,
    platformDataLength: w2ru.length,
    platformDataOffset: locOffset + macxSpace,
  } satisfies ParentLocator;
  const footer = encodeFooter(newFooter(DISK_TYPE_DIFFERENCING, size));
  const pad = (b: Buffer, n: number) => Buffer.concat([b, Buffer.alloc(n - b.length)]);
  const fh = await open(path, 'wx');
  try {
    await writevFull(
      fh,
      [footer, encodeHeader(h), Buffer.alloc(batSize(entries), 0xff), pad(macx, macxSpace), pad(w2ru, w2ruSpace), footer],
      0,
    );
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
