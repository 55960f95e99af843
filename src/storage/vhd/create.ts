/** Creating VHD files: fixed, dynamic and differencing (with parent locators). */
import { open, stat } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import { VhdError } from './errors.ts';
import {
  DEFAULT_BLOCK_SIZE,
  DISK_TYPE_DIFFERENCING,
  DISK_TYPE_DYNAMIC,
  DISK_TYPE_FIXED,
  FOOTER_SIZE,
  HEADER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR,
  type ParentLocator,
  batSize,
  encodeFooter,
  encodeHeader,
  newFooter,
  newHeader,
  roundUp,
  vhdTimestamp,
} from './format.ts';
import { writeFull, writevFull } from './io.ts';

import { Vhd } from './vhd.ts';

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
