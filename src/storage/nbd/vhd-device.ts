/**
 * A VHD (fixed, dynamic or differencing, with its parent chain) as a
 * BlockDevice, through Xenon's VHD library: reads fall through the chain,
 * writes go to the leaf only (parents are opened read-only by the library).
 *
 * Concurrency: the Vhd object keeps a BAT and a sector-bitmap cache that a
 * write updates; a read that loads a bitmap concurrently with a write to the
 * same block could put a stale bitmap back into that cache. Reads are
 * therefore run under a shared lock and writes / flush / close under an
 * exclusive one: reads still proceed in parallel with each other.
 */
import { isVhdError, openVhd, type Vhd } from '../vhd/index.ts';
import { RwLock } from './lock.ts';
import { NBD_EINVAL, NBD_EPERM, NbdDeviceError, type BlockDevice } from './server.ts';

export interface VhdBlockDevice extends BlockDevice {
  /** The opened leaf (its `.parent` chain is open too). */
  readonly vhd: Vhd;
  /**
   * With all I/O held back and the image closed, runs `change` (which may
   * rename files, e.g. turn the leaf into a snapshot's base and put an empty
   * child in its place), then opens the leaf path again. The client sees no gap.
   */
  reopen(change: () => Promise<void>): Promise<void>;
}

const ZERO = Buffer.alloc(1024 * 1024);

function mapError(e: unknown): unknown {
  if (isVhdError(e, 'VHD_READONLY')) return new NbdDeviceError(NBD_EPERM, e.message, { cause: e });
  if (isVhdError(e, 'VHD_OUT_OF_RANGE') || isVhdError(e, 'VHD_INVALID_ARG')) return new NbdDeviceError(NBD_EINVAL, e.message, { cause: e });
  return e; // VHD_CORRUPT, VHD_TRUNCATED, I/O errors ... → EIO (ENOSPC etc. keep their errno code)
}

async function mapped<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw mapError(e);
  }
}

/**
 * Open the VHD at `leafPath` (and, for a differencing disk, its parents) as a
 * BlockDevice. `readOnly` opens the leaf read-only too (default false).
 */
export async function vhdBlockDevice(leafPath: string, opts: { readOnly?: boolean } = {}): Promise<VhdBlockDevice> {
  const readOnly = opts.readOnly ?? false;
  let vhd = await openVhd(leafPath, { writable: !readOnly, parents: true });
  const lock = new RwLock();
  let closed = false;
  return {
    get vhd() {
      return vhd;
    },
    size: vhd.virtualSize,
    reopen(change) {
      return lock.exclusive(async () => {
        if (closed) throw new Error('device closed');
        if (!readOnly) await vhd.sync();
        await vhd.close();
        try {
          await change();
        } finally {
          vhd = await openVhd(leafPath, { writable: !readOnly, parents: true });
        }
      });
    },
    readOnly,
    read(offset, length) {
      return lock.shared(() => mapped(vhd.read(offset, length)));
    },
    write(offset, data) {
      return lock.exclusive(() => mapped(vhd.write(offset, data)));
    },
    async writeZeroes(offset, length) {
      await lock.exclusive(async () => {
        // Nothing anywhere in the chain there: it already reads as zeros.
        if (!vhd.hasData(offset, length)) return;
        for (let pos = 0; pos < length; pos += ZERO.length) {
          await mapped(vhd.write(offset + pos, ZERO.subarray(0, Math.min(ZERO.length, length - pos))));
        }
      });
    },
    flush() {
      if (readOnly) return Promise.resolve();
      return lock.exclusive(() => mapped(vhd.sync()));
    },
    close() {
      return lock.exclusive(async () => {
        if (closed) return;
        closed = true;
        await vhd.close();
      });
    },
  };
}
