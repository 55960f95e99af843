/**
 * A VHD file's allocation state (the in-memory base of `Vhd`): footer and
 * header, the BAT, sector bitmaps (cached, loaded once, stored after the
 * data they describe), block allocation at the end of the file, deferred
 * metadata and its flush, the write queue, identity and closing. Opening,
 * reading through the chain, writing and growing are in vhd.ts.
 */
import type { FileHandle } from 'node:fs/promises';
import { VhdError } from './errors.ts';
import {
  BAT_UNUSED,
  DEFAULT_BLOCK_SIZE,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_FIXED,
  FOOTER_SIZE,
  SECTOR,
  type DiskType,
  type VhdFooter,
  type VhdHeader,
  bitmapSetRange,
  bitmapSize,
  diskTypeName,
  encodeFooter,
  encodeHeader,
  fullBitmap,
  uuidToString,
} from './format.ts';
import { readAt, writeFull, writevFull, zeros } from './io.ts';

const BITMAP_CACHE_MAX = 4096;

/** A bitmap being read from disk; `valid` is cleared when a write makes what it read possibly stale. */
interface BitmapLoad {
  promise: Promise<Buffer>;
  valid: boolean;
}
/** Allocation state of an open VHD file; `Vhd` adds opening, chain reads, writes and growth. */
export class VhdBlocks {
  readonly path: string;
  footer: VhdFooter;
  header: VhdHeader | undefined;
  /** Parent disk, for differencing disks opened with `parents: true`. */
  parent: VhdBlocks | undefined;
  readonly writable: boolean;

  protected fh: FileHandle | undefined;
  protected bat: Uint32Array = new Uint32Array(0);
  /** Offset where the next block (and then the footer) goes. */
  protected nextFree = 0;
  /**
   * Cached sector bitmaps. Once cached, a bitmap is the authoritative copy:
   * writes set bits in it in place (after the data is written) and then store
   * it; a load from disk never replaces a cached entry.
   */
  protected bitmaps = new Map<number, Buffer>();
  protected pendingBitmaps = new Map<number, Buffer>();
  /** Bitmap reads in flight, shared by concurrent callers. */
  protected bitmapLoads = new Map<number, BitmapLoad>();
  /** Block whose bitmap a write is updating: never evicted from the cache meanwhile. */
  protected pinnedBlock = -1;
  /**
   * Tail of the queue serializing write(), flush(), sync(), grow() and close()
   * (reads are not serialized): keeps BAT/bitmap/footer updates, block
   * allocation and the read-modify-write of partial sectors atomic.
   */
  protected writeQueue: Promise<void> = Promise.resolve();
  protected pendingBat = new Set<number>();
  protected readonly deferMetadata: boolean;
  protected resolvedParent: string | undefined;
  protected parentCandidates: string[] = [];
  /** True when the trailing footer was unreadable and the copy at offset 0 was used. */
  footerFromCopy = false;

  protected constructor(path: string, fh: FileHandle, footer: VhdFooter, writable: boolean, defer: boolean) {
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
  protected get bitmapBytes(): number {
    return bitmapSize(this.blockSize);
  }
  protected get handle(): FileHandle {
    if (!this.fh) throw new VhdError('VHD_CLOSED', this.path);
    return this.fh;
  }

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

  protected cachedBitmap(i: number): Buffer | undefined {
    return this.pendingBitmaps.get(i) ?? this.bitmaps.get(i);
  }

  /**
   * The bitmap of allocated block `i`. A copy read from disk is cached only if
   * nothing is cached by then and no bitmap store for the block completed
   * while it was being read (it could predate that store); otherwise the
   * cached copy is returned, or the disk copy is used for this call only.
   */
  protected async getBitmap(i: number): Promise<Buffer> {
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

  protected cacheBitmap(i: number, bm: Buffer): void {
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
  protected invalidateBitmapLoad(i: number): void {
    const l = this.bitmapLoads.get(i);
    if (l) {
      l.valid = false;
      this.bitmapLoads.delete(i);
    }
  }

  /** Run `fn` after every write-side operation queued before it. */
  protected serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writeQueue.then(fn);
    this.writeQueue = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  protected async storeBitmap(i: number, bm: Buffer): Promise<void> {
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
  protected async allocateBlock(i: number, s0: number, payload: Buffer): Promise<void> {
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

  protected async writeBatEntries(indices: Iterable<number>): Promise<void> {
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

  protected async writeHeaderAndFooters(): Promise<void> {
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

  protected async flushLocked(): Promise<void> {
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

  /** Close this disk and the parents it opened. */
  async close(): Promise<void> {
    await this.serialized(() => this.closeLocked());
  }

  protected async closeLocked(): Promise<void> {
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
