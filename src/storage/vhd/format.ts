/**
 * On-disk structures of the VHD format (Microsoft "Virtual Hard Disk Image
 * Format Specification"): the 512-byte footer, the 1024-byte dynamic disk
 * header, parent locators, the block allocation table and sector bitmaps.
 * All multi-byte fields are big-endian.
 */
import { randomUUID } from 'node:crypto';
import { VhdError } from './errors.ts';

export const SECTOR = 512;
export const FOOTER_SIZE = 512;
export const HEADER_SIZE = 1024;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
export const BAT_UNUSED = 0xffffffff;
/** Largest virtual size accepted/created: 2040 GiB, the specification's limit. */
export const MAX_VIRTUAL_SIZE = 2040 * 1024 * 1024 * 1024;
/** Sanity bounds used when validating foreign images. */
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
export const MAX_TABLE_ENTRIES = 1 << 24;

export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;
export type DiskType = 'fixed' | 'dynamic' | 'differencing';

export const FOOTER_COOKIE = 'conectix';
export const HEADER_COOKIE = 'cxsparse';
/** "tap\0": XenServer's creator application; qemu then trusts current_size, not CHS. */
export const CREATOR_APP = Buffer.from([0x74, 0x61, 0x70, 0x00]);
export const CREATOR_VERSION = 0x00010003;
export const CREATOR_HOST_OS = 0x5769326b; // "Wi2k"
export const NO_DATA_OFFSET = 0xffffffffffffffffn;

/** Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z). */
const VHD_EPOCH = 946684800;

export function vhdTimestamp(date: Date = new Date()): number {
  const s = Math.floor(date.getTime() / 1000) - VHD_EPOCH;
  return Math.max(0, Math.min(0xffffffff, s)) >>> 0;
}

export function dateFromVhdTimestamp(ts: number): Date {
  return new Date((ts + VHD_EPOCH) * 1000);
}

export function newUuid(): Buffer {
  return Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
}

export function uuidToString(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Ones' complement of the byte sum of `buf`, skipping the 4-byte checksum field at `skip`. */
export function checksum(buf: Buffer, skip: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= skip && i < skip + 4) continue;
    sum += buf[i]!;
  }
  return ~sum >>> 0;
}

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** CHS geometry for a number of sectors, per the algorithm in the specification's appendix. */
export function chsGeometry(totalSectorsIn: number): Geometry {
  const totalSectors = Math.min(totalSectorsIn, 65535 * 16 * 255);
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

// ---------------------------------------------------------------------------
// Footer

export interface VhdFooter {
  features: number;
  fileFormatVersion: number;
  /** Absolute offset of the dynamic header, or 2^64-1 for fixed disks. */
  dataOffset: bigint;
  timestamp: number;
  creatorApplication: Buffer;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: number;
  checksum: number;
  uuid: Buffer;
  savedState: number;
}

export function diskTypeName(t: number): DiskType {
  if (t === DISK_TYPE_FIXED) return 'fixed';
  if (t === DISK_TYPE_DYNAMIC) return 'dynamic';
  if (t === DISK_TYPE_DIFFERENCING) return 'differencing';
  throw new VhdError('VHD_UNSUPPORTED', `disk type ${t}`);
}

export function newFooter(diskType: number, size: number, uuid: Buffer = newUuid()): VhdFooter {
  return {
    features: 2,
    fileFormatVersion: 0x00010000,
    dataOffset: diskType === DISK_TYPE_FIXED ? NO_DATA_OFFSET : BigInt(FOOTER_SIZE),
    timestamp: vhdTimestamp(),
    creatorApplication: Buffer.from(CREATOR_APP),
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: CREATOR_HOST_OS,
    originalSize: size,
    currentSize: size,
    geometry: chsGeometry(size / SECTOR),
    diskType,
    checksum: 0,
    uuid,
    savedState: 0,
  };
}

export function encodeFooter(f: VhdFooter): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  b.write(FOOTER_COOKIE, 0, 'latin1');
  b.writeUInt32BE(f.features >>> 0, 8);
  b.writeUInt32BE(f.fileFormatVersion >>> 0, 12);
  b.writeBigUInt64BE(f.dataOffset, 16);
  b.writeUInt32BE(f.timestamp >>> 0, 24);
  f.creatorApplication.copy(b, 28, 0, 4);
  b.writeUInt32BE(f.creatorVersion >>> 0, 32);
  b.writeUInt32BE(f.creatorHostOs >>> 0, 36);
  b.writeBigUInt64BE(BigInt(f.originalSize), 40);
  b.writeBigUInt64BE(BigInt(f.currentSize), 48);
  b.writeUInt16BE(Math.min(f.geometry.cylinders, 0xffff), 56);
  b.writeUInt8(f.geometry.heads & 0xff, 58);
  b.writeUInt8(f.geometry.sectorsPerTrack & 0xff, 59);
  b.writeUInt32BE(f.diskType >>> 0, 60);
  f.uuid.copy(b, 68, 0, 16);
  b.writeUInt8(f.savedState & 0xff, 84);
  const c = checksum(b, 64);
  b.writeUInt32BE(c, 64);
  f.checksum = c;
  return b;
}

function safeNumber(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new VhdError('VHD_CORRUPT', `${what} too large (${v})`);
  return Number(v);
}

/** Parse and validate a footer (cookie, checksum, disk type, size). */
export function decodeFooter(b: Buffer, where = 'footer'): VhdFooter {
  if (b.length < FOOTER_SIZE) throw new VhdError('VHD_TRUNCATED', `${where}: short read`);
  if (b.toString('latin1', 0, 8) !== FOOTER_COOKIE) throw new VhdError('VHD_CORRUPT', `${where}: bad cookie`);
  const stored = b.readUInt32BE(64);
  const computed = checksum(b.subarray(0, FOOTER_SIZE), 64);
  if (stored !== computed) {
    throw new VhdError('VHD_CORRUPT', `${where}: checksum mismatch (stored ${stored.toString(16)}, computed ${computed.toString(16)})`);
  }
  const diskType = b.readUInt32BE(60);
  if (diskType !== DISK_TYPE_FIXED && diskType !== DISK_TYPE_DYNAMIC && diskType !== DISK_TYPE_DIFFERENCING) {
    throw new VhdError('VHD_UNSUPPORTED', `${where}: disk type ${diskType}`);
  }
  const currentSize = safeNumber(b.readBigUInt64BE(48), 'current size');
  if (currentSize % SECTOR !== 0) throw new VhdError('VHD_CORRUPT', `${where}: size ${currentSize} not a multiple of 512`);
  if (currentSize > MAX_VIRTUAL_SIZE * 2) throw new VhdError('VHD_UNSUPPORTED', `${where}: size ${currentSize} too large`);
  const major = b.readUInt16BE(12);
  if (major !== 1) throw new VhdError('VHD_UNSUPPORTED', `${where}: file format version ${b.readUInt32BE(12).toString(16)}`);
  return {
    features: b.readUInt32BE(8),
    fileFormatVersion: b.readUInt32BE(12),
    dataOffset: b.readBigUInt64BE(16),
    timestamp: b.readUInt32BE(24),
    creatorApplication: Buffer.from(b.subarray(28, 32)),
    creatorVersion: b.readUInt32BE(32),
    creatorHostOs: b.readUInt32BE(36),
    originalSize: safeNumber(b.readBigUInt64BE(40), 'original size'),
    currentSize,
    geometry: { cylinders: b.readUInt16BE(56), heads: b.readUInt8(58), sectorsPerTrack: b.readUInt8(59) },
    diskType,
    checksum: stored,
    uuid: Buffer.from(b.subarray(68, 84)),
    savedState: b.readUInt8(84),
  };
}

// ---------------------------------------------------------------------------
// Dynamic disk header

export interface ParentLocator {
  /** Four-character platform code, e.g. "MacX", "W2ru", "W2ku"; "" for an unused slot. */
  platformCode: string;
  /** Bytes reserved for the locator data (we write a multiple of 512; some writers store sectors). */
  platformDataSpace: number;
  platformDataLength: number;
  platformDataOffset: number;
}

export interface VhdHeader {
  dataOffset: bigint;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUuid: Buffer;
  parentTimestamp: number;
  parentUnicodeName: string;
  parentLocators: ParentLocator[];
}

export function emptyLocator(): ParentLocator {
  return { platformCode: '', platformDataSpace: 0, platformDataLength: 0, platformDataOffset: 0 };
}

export function newHeader(tableOffset: number, maxTableEntries: number, blockSize: number): VhdHeader {
  return {
    dataOffset: NO_DATA_OFFSET,
    tableOffset,
    headerVersion: 0x00010000,
    maxTableEntries,
    blockSize,
    checksum: 0,
    parentUuid: Buffer.alloc(16),
    parentTimestamp: 0,
    parentUnicodeName: '',
    parentLocators: Array.from({ length: 8 }, emptyLocator),
  };
}

export function encodeHeader(h: VhdHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(HEADER_COOKIE, 0, 'latin1');
  b.writeBigUInt64BE(h.dataOffset, 8);
  b.writeBigUInt64BE(BigInt(h.tableOffset), 16);
  b.writeUInt32BE(h.headerVersion >>> 0, 24);
  b.writeUInt32BE(h.maxTableEntries >>> 0, 28);
  b.writeUInt32BE(h.blockSize >>> 0, 32);
  h.parentUuid.copy(b, 40, 0, 16);
  b.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  // Parent unicode name: UTF-16 big-endian, at most 256 code units.
  const name = Buffer.from(h.parentUnicodeName.slice(0, 256), 'utf16le');
  name.swap16();
  name.copy(b, 64, 0, Math.min(name.length, 512));
  for (let i = 0; i < 8; i++) {
    const l = h.parentLocators[i] ?? emptyLocator();
    const o = 576 + i * 24;
    if (l.platformCode) b.write(l.platformCode.padEnd(4, ' ').slice(0, 4), o, 'latin1');
    b.writeUInt32BE(l.platformDataSpace >>> 0, o + 4);
    b.writeUInt32BE(l.platformDataLength >>> 0, o + 8);
    b.writeBigUInt64BE(BigInt(l.platformDataOffset), o + 16);
  }
  const c = checksum(b, 36);
  b.writeUInt32BE(c, 36);
  h.checksum = c;
  return b;
}

export function decodeHeader(b: Buffer, where = 'dynamic header'): VhdHeader {
  if (b.length < HEADER_SIZE) throw new VhdError('VHD_TRUNCATED', `${where}: short read`);
  if (b.toString('latin1', 0, 8) !== HEADER_COOKIE) throw new VhdError('VHD_CORRUPT', `${where}: bad cookie`);
  const stored = b.readUInt32BE(36);
  const computed = checksum(b.subarray(0, HEADER_SIZE), 36);
  if (stored !== computed) {
    throw new VhdError('VHD_CORRUPT', `${where}: checksum mismatch (stored ${stored.toString(16)}, computed ${computed.toString(16)})`);
  }
  const headerVersion = b.readUInt32BE(24);
  if (headerVersion >>> 16 !== 1) throw new VhdError('VHD_UNSUPPORTED', `${where}: header version ${headerVersion.toString(16)}`);
  const blockSize = b.readUInt32BE(32);
  if (blockSize === 0 || blockSize % SECTOR !== 0 || blockSize > MAX_BLOCK_SIZE) {
    throw new VhdError('VHD_CORRUPT', `${where}: invalid block size ${blockSize}`);
  }
  const maxTableEntries = b.readUInt32BE(28);
  if (maxTableEntries > MAX_TABLE_ENTRIES) throw new VhdError('VHD_CORRUPT', `${where}: ${maxTableEntries} BAT entries`);
  const nameBuf = Buffer.from(b.subarray(64, 576));
  nameBuf.swap16();
  let name = nameBuf.toString('utf16le');
  const nul = name.indexOf('\0');
  if (nul >= 0) name = name.slice(0, nul);
  const parentLocators: ParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const o = 576 + i * 24;
    const code = b.readUInt32BE(o) === 0 ? '' : b.toString('latin1', o, o + 4);
    parentLocators.push({
      platformCode: code,
      platformDataSpace: b.readUInt32BE(o + 4),
      platformDataLength: b.readUInt32BE(o + 8),
      platformDataOffset: safeNumber(b.readBigUInt64BE(o + 16), 'locator offset'),
    });
  }
  return {
    dataOffset: b.readBigUInt64BE(8),
    tableOffset: safeNumber(b.readBigUInt64BE(16), 'table offset'),
    headerVersion,
    maxTableEntries,
    blockSize,
    checksum: stored,
    parentUuid: Buffer.from(b.subarray(40, 56)),
    parentTimestamp: b.readUInt32BE(56),
    parentUnicodeName: name,
    parentLocators,
  };
}

// ---------------------------------------------------------------------------
// Geometry of the dynamic layout

export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Bytes of the per-block sector bitmap, padded to a whole sector. */
export function bitmapSize(blockSize: number): number {
  return roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR);
}

/** Bytes reserved for a BAT of `entries` entries (padded to a whole sector). */
export function batSize(entries: number): number {
  return roundUp(entries * 4, SECTOR);
}

/** A sector bitmap with every sector of a block marked present. */
export function fullBitmap(blockSize: number): Buffer {
  const b = Buffer.alloc(bitmapSize(blockSize));
  const sectors = blockSize / SECTOR;
  b.fill(0xff, 0, Math.floor(sectors / 8));
  if (sectors % 8) b[Math.floor(sectors / 8)] = (0xff << (8 - (sectors % 8))) & 0xff;
  return b;
}

/** Bit for sector `s` (MSB first within each byte). */
export function bitmapTest(bm: Buffer, s: number): boolean {
  return (bm[s >> 3]! & (0x80 >> (s & 7))) !== 0;
}

export function bitmapSetRange(bm: Buffer, from: number, to: number): void {
  let s = from;
  while (s < to && s & 7) {
    bm[s >> 3] = bm[s >> 3]! | (0x80 >> (s & 7));
    s++;
  }
  if (to - s >= 8) {
    const full = (to - s) >> 3;
    bm.fill(0xff, s >> 3, (s >> 3) + full);
    s += full * 8;
  }
  while (s < to) {
    bm[s >> 3] = bm[s >> 3]! | (0x80 >> (s & 7));
    s++;
  }
}

/** True when every sector in [from, to) is marked present. */
export function bitmapAllSet(bm: Buffer, from: number, to: number): boolean {
  let s = from;
  while (s < to && s & 7) {
    if (!bitmapTest(bm, s)) return false;
    s++;
  }
  while (to - s >= 8) {
    if (bm[s >> 3] !== 0xff) return false;
    s += 8;
  }
  while (s < to) {
    if (!bitmapTest(bm, s)) return false;
    s++;
  }
  return true;
}

/** Length of the run of sectors starting at `from` (bounded by `to`) sharing the bit value of `from`. */
export function bitmapRun(bm: Buffer, from: number, to: number): { set: boolean; end: number } {
  const set = bitmapTest(bm, from);
  const whole = set ? 0xff : 0x00;
  let s = from + 1;
  while (s < to) {
    if ((s & 7) === 0 && to - s >= 8 && bm[s >> 3] === whole) {
      s += 8;
      continue;
    }
    if (bitmapTest(bm, s) !== set) break;
    s++;
  }
  return { set, end: s };
}

export const ZERO_BUFFER = Buffer.alloc(DEFAULT_BLOCK_SIZE);

export function isZero(b: Buffer): boolean {
  let off = 0;
  while (off < b.length) {
    const n = Math.min(ZERO_BUFFER.length, b.length - off);
    if (b.compare(ZERO_BUFFER, 0, n, off, off + n) !== 0) return false;
    off += n;
  }
  return true;
}
