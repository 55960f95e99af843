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
 *
 * Standby (live migration's receiving end): the device knows the disk's
 * size (enough for the NBD handshake) and keeps nothing open; writes wait
 * until `activate()`, which opens the chain then. Another host's export
 * writes the same leaf until the guest's state has arrived here, so the BAT,
 * bitmaps and footer are kept only once that writer has flushed and let go
 * (the caller sequences that), and nothing here writes before it (not even
 * the footer repair a writable open may do). Reads cannot wait: QEMU reads
 * the first sector of a disk as it opens it, incoming migration or not, and
 * its main loop (QMP included) blocks until answered. A read in standby
 * opens the chain read-only for itself and closes it again: it sees the
 * image as it is at that moment (the writer puts data down before the BAT
 * entry and bitmap bits that point at it).
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
  /** Whether the chain is open (false while a standby device waits for `activate`). */
  readonly active: boolean;
  /** Opens the chain of a standby device and lets the I/O held back through; nothing for an active one. */
  activate(): Promise<void>;
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

/** The virtual size of the VHD at `path`, from its footer (opened read-only, alone, and closed again). */
async function virtualSizeOf(path: string): Promise<number> {
  const v = await openVhd(path, { writable: false, parents: false });
  try {
    return v.virtualSize;
  } finally {
    await v.close();
  }
}

/**
 * Open the VHD at `leafPath` (and, for a differencing disk, its parents) as a
 * BlockDevice. `readOnly` opens the leaf read-only too (default false);
 * `standby` defers the opening to `activate()` (see above).
 */
export async function vhdBlockDevice(leafPath: string, opts: { readOnly?: boolean; standby?: boolean } = {}): Promise<VhdBlockDevice> {
  const readOnly = opts.readOnly ?? false;
  const open = (): Promise<Vhd> => openVhd(leafPath, { writable: !readOnly, parents: true });
  let vhd: Vhd | undefined = opts.standby ? undefined : await open();
  const size = vhd ? vhd.virtualSize : await virtualSizeOf(leafPath);
  let activated: Promise<void> | undefined = vhd ? Promise.resolve() : undefined;
  let release: (() => void) | undefined;
  let refuse: ((e: Error) => void) | undefined;
  /** Resolves once the chain is open: I/O of a standby device waits on it. */
  const ready = vhd
    ? Promise.resolve()
    : new Promise<void>((resolve, reject) => {
        release = resolve;
        refuse = reject;
      });
  ready.catch(() => undefined); // observed by the I/O that waits on it
  const lock = new RwLock();
  let closed = false;
  const leaf = (): Vhd => {
    if (!vhd) throw new Error('device not active');
    return vhd;
  };
  /** A read in standby: the chain as it is now, opened for this read alone. */
  const glimpse = async <T>(fn: (v: Vhd) => Promise<T>): Promise<T> => {
    const v = await mapped(openVhd(leafPath, { writable: false, parents: true }));
    try {
      return await mapped(fn(v));
    } finally {
      await v.close();
    }
  };
  const shared = <T>(fn: (v: Vhd) => Promise<T>): Promise<T> =>
    lock.shared(() => {
      if (closed) throw new Error('device closed');
      return vhd ? mapped(fn(vhd)) : glimpse(fn);
    });
  const exclusive = async <T>(fn: (v: Vhd) => Promise<T>): Promise<T> => {
    await ready;
    return lock.exclusive(() => fn(leaf()));
  };
  return {
    get vhd() {
      return leaf();
    },
    get active() {
      return vhd !== undefined;
    },
    size,
    activate() {
      activated ??= lock.exclusive(async () => {
        if (closed) throw new Error('device closed');
        try {
          vhd = await open();
        } catch (e) {
          refuse?.(e instanceof Error ? e : new Error(String(e))); // the writes held back fail with it
          throw e;
        }
        release?.();
      });
      return activated;
    },
    reopen(change) {
      return lock.exclusive(async () => {
        if (closed) throw new Error('device closed');
        if (!vhd) return change(); // standby: nothing open to let go of
        if (!readOnly) await vhd.sync();
        await vhd.close();
        try {
          await change();
        } finally {
          vhd = await open();
        }
      });
    },
    readOnly,
    read(offset, length) {
      return shared((v) => v.read(offset, length));
    },
    write(offset, data) {
      return exclusive((v) => mapped(v.write(offset, data)));
    },
    async writeZeroes(offset, length) {
      await exclusive(async (v) => {
        // Nothing anywhere in the chain there: it already reads as zeros.
        if (!v.hasData(offset, length)) return;
        for (let pos = 0; pos < length; pos += ZERO.length) {
          await mapped(v.write(offset + pos, ZERO.subarray(0, Math.min(ZERO.length, length - pos))));
        }
      });
    },
    flush() {
      // a standby device has written nothing: there is nothing to make durable (and QEMU may flush an inactive disk on quit)
      if (readOnly || !vhd) return Promise.resolve();
      return exclusive((v) => mapped(v.sync()));
    },
    abort() {
      refuse?.(new Error('device closed before it was activated'));
    },
    close() {
      refuse?.(new Error('device closed before it was activated'));
      return lock.exclusive(async () => {
        if (closed) return;
        closed = true;
        await vhd?.close();
      });
    },
  };
}
