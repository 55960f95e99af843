/**
 * Disks inside an XVA: each disk is a directory `Ref:<id>/` of members named
 * by 8-digit chunk numbers holding 1 MiB of the disk, each followed by a
 * checksum member (`.checksum`: SHA-1 hex, or `.xxhash`: XXH64 as newer xapi
 * writes). All-zero chunks are left out, except the first and the last.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Vhd } from '../vhd/index.ts';
import { TarError, type TarMember, type TarReader } from './tar.ts';
import { xxh64Hex } from './xxhash.ts';

export const CHUNK = 1024 * 1024;
const ZERO = Buffer.alloc(CHUNK);

export type XvaErrorCode = 'PREMATURE_EOF' | 'CHECKSUM' | 'UNEXPECTED_FILE' | 'INVALID';

export class XvaError extends Error {
  constructor(
    readonly code: XvaErrorCode,
    message: string,
    readonly params: string[] = [],
  ) {
    super(message);
  }
}

export const isZero = (b: Buffer): boolean => (b.length === CHUNK ? b.equals(ZERO) : b.equals(ZERO.subarray(0, b.length)));
export const sha1Hex = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

/** Random read access to a disk's contents. */
export interface DiskSource {
  readonly size: number;
  /** False only when the range is known to read as zeros. */
  hasData(offset: number, length: number): boolean;
  readInto(target: Buffer, offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}

/** A disk image as a source: VHD (through its chain) or raw. */
export async function openDiskSource(path: string, format: string): Promise<DiskSource> {
  if (format === 'vpc') {
    const vhd = await Vhd.open(path);
    return {
      size: vhd.virtualSize,
      hasData: (o, l) => vhd.hasData(o, l),
      readInto: (t, o, l) => vhd.readInto(t, 0, o, l),
      close: () => vhd.close(),
    };
  }
  if (format !== 'raw') throw new XvaError('INVALID', `cannot export a ${format} image`);
  const fh = await open(path, 'r');
  const size = (await fh.stat()).size;
  return {
    size,
    hasData: () => true,
    readInto: async (t, o, l) => {
      t.fill(0, 0, l);
      let got = 0;
      while (got < l) {
        const { bytesRead } = await fh.read(t, got, l - got, o + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    },
    close: () => fh.close(),
  };
}

export const chunkName = (prefix: string, n: number): string => `${prefix}/${String(n).padStart(8, '0')}`;

/**
 * The tar members of one disk, block by block: each yielded buffer is
 * consumed before the next chunk is read, so a slow reader slows the disk
 * reads down and no more than a chunk is held. `progress` gets the bytes of
 * disk covered (read or skipped).
 */
export async function* diskMembers(prefix: string, src: DiskSource, size: number, progress: (bytes: number) => void): AsyncGenerator<TarMember> {
  const last = Math.max(0, Math.ceil(size / CHUNK) - 1);
  for (let n = 0, off = 0; off < size; n++, off += CHUNK) {
    const len = Math.min(CHUNK, size - off);
    const edge = n === 0 || n === last;
    if (!edge && !src.hasData(off, len)) {
      progress(len);
      continue;
    }
    const data = Buffer.allocUnsafe(len);
    await src.readInto(data, off, len);
    if (!edge && isZero(data)) {
      progress(len);
      continue;
    }
    const name = chunkName(prefix, n);
    const sum = Buffer.from(sha1Hex(data), 'latin1');
    yield { name, data };
    yield { name: `${name}.checksum`, data: sum };
    progress(len);
  }
}

/** Where one imported disk goes. */
export interface DiskTarget {
  /** The directory its chunks are in (`Ref:<id>`). */
  readonly prefix: string;
  readonly size: number;
  /** Writes data at offset; never called for all-zero chunks (the target starts zeroed). */
  write(offset: number, data: Buffer): Promise<void>;
}

/**
 * Reads the disks' chunks from the tar, in xapi's order (directories sorted
 * as strings), into their targets. A chunk's place is worked out as xapi's
 * reader does: a gap in the numbering stands for that many chunks of the
 * first chunk's length, then the chunk itself follows (so the empty
 * keep-alive members xapi may send cost nothing). Every chunk's checksum
 * member is checked unless `force`.
 */
export async function receiveDisks(tar: TarReader, disks: readonly DiskTarget[], opts: { force: boolean; progress(bytes: number): void }): Promise<void> {
  const ordered = [...disks].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
  let firstLength = -1;
  try {
    for (const disk of ordered) {
      let last = -1;
      let offset = 0;
      while (offset < disk.size) {
        const entry = await tar.next();
        if (!entry) throw new XvaError('PREMATURE_EOF', `the archive ended before disk ${disk.prefix} was complete`);
        const want = `${disk.prefix}/`;
        if (!entry.name.startsWith(want)) throw new XvaError('UNEXPECTED_FILE', `expected a chunk of ${disk.prefix}, found ${entry.name}`, [`${want}…`, entry.name]);
        const suffix = entry.name.slice(want.length);
        if (!/^\d+$/.test(suffix)) throw new XvaError('UNEXPECTED_FILE', `not a chunk: ${entry.name}`, [`${want}NNNNNNNN`, entry.name]);
        const n = Number(suffix);
        if (n <= last) throw new XvaError('INVALID', `chunk ${entry.name} is out of order`);
        if (entry.size > CHUNK) throw new XvaError('INVALID', `chunk ${entry.name} is larger than 1 MiB`);
        if (firstLength < 0) firstLength = entry.size;
        offset += (n - last - 1) * firstLength;
        if (offset + entry.size > disk.size) throw new XvaError('INVALID', `chunk ${entry.name} lies beyond the end of the disk`);
        const data = await tar.data();
        const sumEntry = await tar.next();
        if (!sumEntry) throw new XvaError('PREMATURE_EOF', `the archive ended before the checksum of ${entry.name}`);
        let algo: ((b: Buffer) => string) | undefined;
        if (sumEntry.name === `${entry.name}.checksum`) algo = sha1Hex;
        else if (sumEntry.name === `${entry.name}.xxhash`) algo = xxh64Hex;
        else throw new XvaError('UNEXPECTED_FILE', `expected the checksum of ${entry.name}, found ${sumEntry.name}`, [`${entry.name}.checksum`, sumEntry.name]);
        const expected = (await tar.data()).toString('latin1').trim();
        if (!opts.force && algo(data).toLowerCase() !== expected.toLowerCase()) {
          throw new XvaError('CHECKSUM', `the checksum of ${entry.name} does not match its data`);
        }
        if (data.length > 0 && !isZero(data)) await disk.write(offset, data);
        offset += data.length;
        opts.progress(data.length + (n - last - 1) * firstLength);
        last = n;
      }
    }
  } catch (e) {
    if (e instanceof TarError) throw new XvaError(e.code === 'TRUNCATED' ? 'PREMATURE_EOF' : 'INVALID', e.message);
    throw e;
  }
}
