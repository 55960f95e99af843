/**
 * Coalescing, the data half: a differencing disk's sectors written into its
 * parent, and the checks the collector runs around it. The switch that makes
 * the merged parent take the child's place (identity, then name) is the
 * SR driver's, under its journal (see docs/vhd.md, "Crash-safe coalesce").
 */
import { VhdError } from './errors.ts';
import { SECTOR, bitmapRun, uuidToString } from './format.ts';
import { Vhd } from './vhd.ts';

export interface CoalesceResult {
  parentPath: string;
  /** Child blocks visited. */
  blocks: number;
  /** Bytes copied into the parent. */
  bytes: number;
}

export interface CoalesceOptions {
  /** Make the parent's metadata durable after roughly this many bytes (default 256 MiB). */
  flushEvery?: number;
}

/**
 * Write every sector present in the differencing disk `childPath` into its
 * parent. The parent is grown first if the child is larger. Ordering: data
 * goes first (in place, or into new blocks appended behind the parent's data
 * with a fresh footer after them), then — after an fdatasync — the parent's
 * BAT entries and bitmaps. An interrupted coalesce therefore leaves the parent
 * a valid VHD, and the chain still reads the same because the child keeps
 * masking the sectors being copied. The child is left untouched; the caller
 * re-parents/deletes it afterwards.
 */
export async function coalesce(childPath: string, opts: CoalesceOptions = {}): Promise<CoalesceResult> {
  const flushEvery = opts.flushEvery ?? 256 * 1024 * 1024;
  const child = await Vhd.open(childPath, { parents: false });
  let parent: Vhd | undefined;
  try {
    if (child.type !== 'differencing') throw new VhdError('VHD_INVALID_ARG', `${childPath} is not a differencing disk`);
    const parentPath = child.parentPath();
    if (!parentPath) throw new VhdError('VHD_PARENT_MISSING', `${childPath}: no parent locator`);
    // parents: true so that a differencing parent widening a write to 4 KiB reads the true chain contents
    parent = await Vhd.open(parentPath, { writable: true, parents: true, deferMetadata: true }).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VhdError('VHD_PARENT_MISSING', `${childPath}: parent ${parentPath} not found`);
      throw e;
    });
    if (!parent.footer.uuid.equals(child.header!.parentUuid)) {
      throw new VhdError('VHD_PARENT_MISMATCH', `${parentPath} has UUID ${parent.uuid}, child expects ${uuidToString(child.header!.parentUuid)}`);
    }
    if (child.virtualSize > parent.virtualSize) await parent.grow(child.virtualSize);
    const bs = child.blockSize;
    let bytes = 0;
    let sinceFlush = 0;
    let blocks = 0;
    let buf = Buffer.allocUnsafe(bs);
    for (const i of child.allocatedBlocks()) {
      blocks++;
      const bm = (await child.blockBitmap(i))!;
      const blockStart = i * bs;
      const sectors = Math.min(bs, child.virtualSize - blockStart) / SECTOR;
      let s = 0;
      while (s < sectors) {
        const run = bitmapRun(bm, s, sectors);
        if (run.set) {
          const off = blockStart + s * SECTOR;
          const len = (run.end - s) * SECTOR;
          if (buf.length < len) buf = Buffer.allocUnsafe(len);
          const data = buf.subarray(0, len);
          await child.readInto(data, 0, off, len);
          await parent.write(off, data);
          bytes += len;
          sinceFlush += len;
        }
        s = run.end;
      }
      if (sinceFlush >= flushEvery) {
        await parent.flush();
        sinceFlush = 0;
      }
    }
    await parent.flush();
    return { parentPath, blocks, bytes };
  } finally {
    await parent?.close();
    await child.close();
  }
}

/**
 * Opens a disk and its whole chain (every parent found, every parent UUID as
 * its child expects) and closes it again: throws the VhdError that says what
 * is wrong with the chain.
 */
export async function verifyChain(path: string): Promise<void> {
  const top = await Vhd.open(path, { parents: true });
  await top.close();
}

/** The 16-byte footer UUID of a disk (its identity for children). */
export async function diskUuid(path: string): Promise<Buffer> {
  const v = await Vhd.open(path, { parents: false });
  try {
    return Buffer.from(v.footer.uuid);
  } finally {
    await v.close();
  }
}

/** The parent UUID a differencing disk expects, or undefined for other types. */
export async function expectedParentUuid(path: string): Promise<Buffer | undefined> {
  const v = await Vhd.open(path, { parents: false });
  try {
    return v.type === 'differencing' ? Buffer.from(v.header!.parentUuid) : undefined;
  } finally {
    await v.close();
  }
}

/** Sets a disk's footer UUID (both copies), durably. */
export async function setDiskUuid(path: string, uuid: Buffer): Promise<void> {
  const v = await Vhd.open(path, { writable: true, parents: false });
  try {
    await v.setUuid(uuid);
  } finally {
    await v.close();
  }
}
