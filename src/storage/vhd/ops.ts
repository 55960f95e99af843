/** Chain-level operations: open a chain, grow a disk, coalesce a child into its parent. */
import { VhdError } from './errors.ts';
import { SECTOR, bitmapRun, uuidToString } from './format.ts';
import { Vhd, type OpenOptions } from './vhd.ts';

/** Open a VHD; differencing disks get their parent chain opened read-only (unless `parents: false`). */
export function openVhd(path: string, opts: OpenOptions = {}): Promise<Vhd> {
  return Vhd.open(path, opts);
}

/**
 * Open `path` and its whole parent chain. Returns the disks top first
 * (`[0]` is `path`, each `[k].parent === [k+1]`). Closing `[0]` closes all.
 */
export async function openChain(path: string, opts: { writable?: boolean } = {}): Promise<Vhd[]> {
  const top = await Vhd.open(path, { writable: opts.writable, parents: true });
  const out: Vhd[] = [];
  for (let v: Vhd | undefined = top; v; v = v.parent) out.push(v);
  return out;
}

/** Grow a VHD to `newSize` bytes (multiple of 512). Shrinking throws VHD_UNSUPPORTED. */
export async function resize(path: string, newSize: number): Promise<void> {
  const v = await Vhd.open(path, { writable: true, parents: false });
  try {
    await v.grow(newSize);
  } finally {
    await v.close();
  }
}

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
