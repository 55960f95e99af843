/** Chain-level operations: open a chain, grow a disk. */
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
