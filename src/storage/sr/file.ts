/**
 * A directory of VHD files: the `ext` SR (local storage) and the shared
 * `file` SR (a directory every host mounts — NFS, CephFS, GlusterFS …).
 * Each image is `<uuid>.vhd` or, above VHD's 2 TiB (or when asked for),
 * `<uuid>.qcow2`; snapshots and clones are differencing / backing chains.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { createDifferencing, createDynamic, exportRaw, importRaw, openVhd, resize, verifyChain, Vhd } from '../vhd/index.ts';
import { coalesceInto, recoverCoalesces } from './chain-coalesce.ts';
import { exportQcow2Raw, importRawQcow2, NBD_CHUNK, openQcow2, qcow2Convert, qcow2Create, qcow2Info, qcow2Resize, qemuImg } from './qcow2.ts';
import { SR_TYPES, type SmCapability } from '../../datamodel/sr-types.ts';
import { isUuid, srDirectory, volumeName } from './names.ts';
import { SrDriverError, type SrDriver, type SrStats, type VolumeInfo } from './driver.ts';

/** Above this VHD cannot go (XenServer's 2040 GiB): larger volumes are qcow2. */
export const VHD_LIMIT = 2040 * 1024 ** 3;
export type FileFormat = 'vhd' | 'qcow2';


/** Turns an ENOSPC into SR_FULL; other errors pass. */
export function spaceError(e: unknown, requested: number, maximum: number): unknown {
  return (e as NodeJS.ErrnoException).code === 'ENOSPC' ? new SrDriverError('SR_FULL', `${requested} ${maximum}`) : e;
}

/** The file that names the SR a directory belongs to (SR.probe reads it). */
const MARKER = '.xenon-sr';
/** Images, their in-flight imports and coalesce journals: what an SR writes into its directory. */
const OWN_FILE = /^(\.coalesce-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(vhd|qcow2|json)(\.import-[0-9a-f]{8}|\.reset)?$/;

function markerOf(dir: string): string | undefined {
  try {
    return readFileSync(join(dir, MARKER), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The SRs a directory holds: its own marker (the old layout) and those of its uuid-named subdirectories. */
export async function probeFileSrs(given: string, key: string): Promise<string[]> {
  const dir = srDirectory(given, key);
  const names = await readdir(dir).catch(() => [] as string[]);
  const found = [markerOf(dir), ...names.filter(isUuid).map((n) => (markerOf(join(dir, n)) === n ? n : undefined))];
  return [...new Set(found.filter((u): u is string => u !== undefined && isUuid(u)))];
}

export class FileSr implements SrDriver {
  readonly capabilities: readonly SmCapability[];
  /** qcow2 goes past VHD's 2040 GiB; 64 TiB is where a file SR stops. */
  readonly maxVolumeSize = 64 * 1024 ** 4;

  /** Where the SR's files are: a subdirectory named after its uuid inside the directory it was given (as xapi's file SRs). */
  readonly dir: string;
  /**
   * An SR made before that layout keeps its files directly in the directory
   * it was given, beside whatever else the admin keeps there: it is used as
   * it is, and destroying it removes only its own files.
   */
  private readonly sharesItsDirectory: boolean;

  constructor(
    readonly type: 'ext' | 'file',
    given: string,
    readonly srUuid: string,
  ) {
    this.capabilities = SR_TYPES[type].capabilities;
    if (!isUuid(srUuid)) throw new SrDriverError('SR_BACKEND_FAILURE', `SR uuid ${JSON.stringify(srUuid)} is not a UUID`);
    const base = srDirectory(given, type === 'ext' ? 'path' : 'location');
    const own = basename(base) === srUuid;
    this.sharesItsDirectory = !own && markerOf(base) === srUuid;
    this.dir = own || this.sharesItsDirectory ? base : join(base, srUuid);
  }

  get shared(): boolean {
    return this.type === 'file';
  }

  /** The image's file: whichever of `.qcow2` and `.vhd` exists (`.vhd` for one not made yet). */
  path(uuid: string): string {
    const q = this.fileFor(uuid, 'qcow2');
    return existsSync(q) ? q : this.fileFor(uuid, 'vhd');
  }

  fileFor(uuid: string, format: FileFormat): string {
    return join(this.dir, `${volumeName(uuid)}.${format}`);
  }

  formatOf(uuid: string): FileFormat {
    return this.path(uuid).endsWith('.qcow2') ? 'qcow2' : 'vhd';
  }

  async create(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, MARKER), `${this.srUuid}\n`);
  }

  async attach(): Promise<void> {
    const s = await stat(this.dir).catch(() => undefined);
    if (!s?.isDirectory()) throw new SrDriverError('SR_BACKEND_FAILURE', `${this.dir} is not a directory`);
  }

  async detach(): Promise<void> {}

  /** Removes the SR's own directory, or in the old layout only the SR's own files: never what else the admin keeps there. */
  async destroy(): Promise<void> {
    if (!this.sharesItsDirectory) return void (await rm(this.dir, { recursive: true, force: true }));
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const f of names) if (OWN_FILE.test(f)) await rm(join(this.dir, f), { force: true });
    await rm(join(this.dir, MARKER), { force: true });
  }

  async stats(): Promise<SrStats> {
    const fs = await statfs(this.dir);
    let used = 0;
    for (const f of await readdir(this.dir)) if (/\.(vhd|qcow2)$/.test(f)) used += (await stat(join(this.dir, f))).blocks * 512;
    return { physicalSize: fs.blocks * fs.bsize, physicalUtilisation: used };
  }

  async info(uuid: string): Promise<VolumeInfo> {
    const p = this.path(uuid);
    if (!existsSync(p)) throw new SrDriverError('VDI_MISSING', uuid);
    if (p.endsWith('.qcow2')) {
      const q = await qcow2Info(p);
      const st = await stat(p);
      return {
        uuid, location: uuid, virtualSize: q.virtualSize, physicalUtilisation: st.blocks * 512, format: 'qcow2',
        parent: q.backing ? /([0-9a-f-]{36})\.qcow2$/.exec(q.backing)?.[1] : undefined, readOnly: false,
      };
    }
    const vhd = await openVhd(p, { parents: false });
    try {
      const parent = vhd.parentPath();
      const st = await stat(p);
      return {
        uuid, location: uuid, virtualSize: vhd.virtualSize, physicalUtilisation: st.blocks * 512, format: 'vpc',
        parent: parent ? /([0-9a-f-]{36})\.vhd$/.exec(parent)?.[1] : undefined, readOnly: false,
      };
    } finally {
      await vhd.close();
    }
  }

  async scan(): Promise<VolumeInfo[]> {
    const out: VolumeInfo[] = [];
    for (const f of await readdir(this.dir)) {
      const m = /^([0-9a-f-]{36})\.(?:vhd|qcow2)$/.exec(f);
      if (m) out.push(await this.info(m[1]).catch(() => undefined as never));
    }
    return out.filter(Boolean);
  }

  /** VHD up to its limit, qcow2 above it — or the `format` asked for. */
  async createVolume(uuid: string, size: number, format?: FileFormat): Promise<VolumeInfo> {
    const fmt = format ?? (size > VHD_LIMIT ? 'qcow2' : 'vhd');
    const file = this.fileFor(uuid, fmt);
    try {
      if (fmt === 'qcow2') await qcow2Create(file, roundSize(size));
      else await createDynamic(file, roundSize(size));
    } catch (e) {
      await rm(file, { force: true });
      throw spaceError(e, size, 0);
    }
    return this.info(uuid);
  }

  async deleteVolume(uuid: string): Promise<void> {
    await rm(this.path(uuid), { force: true });
  }

  async resizeVolume(uuid: string, size: number): Promise<VolumeInfo> {
    if (this.formatOf(uuid) === 'qcow2') await qcow2Resize(this.path(uuid), roundSize(size));
    else await resize(this.path(uuid), roundSize(size));
    return this.info(uuid);
  }

  async branch(uuid: string, newLeaves: string[], baseUuid: string): Promise<void> {
    const fmt = this.formatOf(uuid);
    if (!existsSync(this.fileFor(uuid, fmt))) throw new SrDriverError('VDI_MISSING', uuid);
    const base = this.fileFor(baseUuid, fmt);
    await rename(this.fileFor(uuid, fmt), base);
    const made: string[] = [];
    try {
      for (const leaf of [uuid, ...newLeaves]) {
        if (fmt === 'qcow2') await qcow2Create(this.fileFor(leaf, fmt), 0, base);
        else await createDifferencing(this.fileFor(leaf, fmt), base);
        made.push(leaf);
      }
    } catch (e) {
      for (const leaf of made) await rm(this.fileFor(leaf, fmt), { force: true });
      await rename(base, this.fileFor(uuid, fmt));
      throw spaceError(e, 0, 0);
    }
  }

  async copyVolume(uuid: string, into: SrDriver, newUuid: string, progress?: (f: number) => void): Promise<VolumeInfo> {
    const src = await this.info(uuid);
    if (src.format === 'qcow2') {
      // qcow2 stays qcow2 (it may be beyond VHD's reach): flattened by qemu-img
      if (!(into instanceof FileSr)) throw new SrDriverError('SR_OPERATION_NOT_SUPPORTED', `${into.type} cannot hold a qcow2 copy`);
      const target = into.fileFor(newUuid, 'qcow2');
      try {
        await qcow2Convert(this.path(uuid), target, 'qcow2', progress);
      } catch (e) {
        await rm(target, { force: true });
        throw spaceError(e, src.virtualSize, 0);
      }
      return into.info(newUuid);
    }
    const target = into.path(newUuid);
    try {
      let seen = 0;
      const counted = exportRaw(this.path(uuid));
      counted.on('data', (c: Buffer) => progress?.((seen += c.length) / src.virtualSize));
      await importRaw(counted, target, src.virtualSize);
    } catch (e) {
      await rm(target, { force: true });
      throw spaceError(e, src.virtualSize, 0);
    }
    return into.info(newUuid);
  }

  coalesce(childUuid: string, baseUuid: string): Promise<void> {
    return coalesceInto(this, childUuid, baseUuid);
  }

  recover(): Promise<string[]> {
    return recoverCoalesces(this);
  }

  async checkChain(uuid: string): Promise<void> {
    if (this.formatOf(uuid) === 'qcow2') await qemuImg('info', '-U', '--backing-chain', '-f', 'qcow2', this.path(uuid));
    else await verifyChain(this.path(uuid));
  }

  async resetLeaf(uuid: string): Promise<void> {
    const info = await this.info(uuid);
    if (!info.parent) throw new SrDriverError('SR_OPERATION_NOT_SUPPORTED', `${uuid} has no base to reset to`);
    const tmp = `${this.path(uuid)}.reset`;
    if (info.format === 'qcow2') await qcow2Create(tmp, 0, this.fileFor(info.parent, 'qcow2'));
    else await createDifferencing(tmp, this.path(info.parent));
    await rename(tmp, this.path(uuid));
  }
}

/** The guest-visible bytes of an image, whichever its format. */
export function exportVolumeRaw(path: string): Readable {
  return path.endsWith('.qcow2') ? exportQcow2Raw(path) : exportRaw(path);
}

/** Writes a raw stream into a new image at `path` (VHD or qcow2 by its name). */
export async function importVolumeRaw(input: Readable, path: string, size: number): Promise<void> {
  if (path.endsWith('.qcow2') || path.endsWith('.qcow2.import')) await importRawQcow2(input, path, roundSize(size));
  else await importRaw(input, path, roundSize(size));
}

/** More bytes were given than the disk holds. */
export class VolumeOverflowError extends Error {
  constructor(readonly size: number) {
    super(`the data is longer than the disk (${size} bytes)`);
  }
}

/** Where raw bytes are written over an existing image. */
interface RawTarget {
  readonly size: number;
  /** False only where the image is known to read as zeros. */
  hasData(offset: number, length: number): boolean;
  write(offset: number, data: Buffer): Promise<void>;
  close(): Promise<void>;
}

async function rawTarget(path: string): Promise<RawTarget> {
  if (path.endsWith('.qcow2')) {
    const img = await openQcow2(path, { readOnly: false });
    return { size: img.size, hasData: () => true, write: (o, d) => img.write(o, d), close: () => img.close() };
  }
  const vhd = await Vhd.open(path, { writable: true });
  return { size: vhd.virtualSize, hasData: (o, l) => vhd.hasData(o, l), write: (o, d) => vhd.write(o, d), close: () => vhd.close() };
}

/**
 * Writes a raw stream over an existing image from offset 0, as xapi writes a
 * raw upload onto the disk: the image keeps its size, bytes past the end of
 * the stream stay as they were, and all-zero chunks where nothing is stored
 * cost nothing. Returns the number of bytes written.
 */
export async function overwriteRaw(path: string, input: AsyncIterable<Buffer>): Promise<number> {
  const target = await rawTarget(path);
  let pos = 0;
  let pending: Buffer[] = [];
  let pendingLength = 0;
  const flush = async (): Promise<void> => {
    if (pendingLength === 0) return;
    const data = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingLength);
    pending = [];
    pendingLength = 0;
    if (pos + data.length > target.size) throw new VolumeOverflowError(target.size);
    if (!isZero(data) || target.hasData(pos, data.length)) await target.write(pos, data);
    pos += data.length;
  };
  try {
    for await (const chunk of input) {
      pending.push(chunk);
      pendingLength += chunk.length;
      if (pendingLength >= NBD_CHUNK) await flush();
    }
    await flush();
  } finally {
    await target.close();
  }
  return pos;
}

const ZEROS = Buffer.alloc(NBD_CHUNK);

function isZero(b: Buffer): boolean {
  for (let o = 0; o < b.length; o += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - o);
    if (!b.subarray(o, o + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

/** VHD sizes are whole sectors. */
const roundSize = (n: number): number => Math.ceil(n / 512) * 512;
