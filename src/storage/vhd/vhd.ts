/**
 * Random access to a single VHD file (fixed, dynamic or differencing), with
 * read-through to the parent chain for differencing disks: opening and
 * validation, reads, writes and growth. The allocation state they work on
 * (BAT, bitmaps, footer, flushing) is `VhdBlocks` in blocks.ts; creating
 * files is create.ts.
 */
import { open, realpath } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve, basename } from 'node:path';
import { VhdError } from './errors.ts';
import {
  BAT_UNUSED,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_FIXED,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR,
  type VhdFooter,
  batSize,
  bitmapAllSet,
  bitmapRun,
  bitmapSetRange,
  bitmapSize,
  chsGeometry,
  decodeFooter,
  decodeHeader,
  encodeFooter,
  encodeHeader,
  roundUp,
  uuidToString,
} from './format.ts';
import { readAt, readFull, writeFull, writevFull } from './io.ts';

import { VhdBlocks } from './blocks.ts';

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

const MAX_CHAIN_DEPTH = 64;
const MAX_LOCATOR_LENGTH = 64 * 1024;

export class Vhd extends VhdBlocks {
  /** Parent disk, for differencing disks opened with `parents: true`. */
  declare parent: Vhd | undefined;

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
