/**
 * A directory of VHD files: the `ext` SR (local storage) and the shared
 * `file` SR (a directory every host mounts — NFS, CephFS, GlusterFS …).
 * Each image is `<uuid>.vhd`; snapshots and clones are differencing chains.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { coalesce, createDifferencing, createDynamic, exportRaw, importRaw, openVhd, resize } from '../vhd/index.ts';
import { SrDriverError, type SrDriver, type SrStats, type VolumeInfo } from './driver.ts';

const CAPABILITIES = ['SR_PROBE', 'SR_UPDATE', 'SR_SCAN', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_INTRODUCE',
  'VDI_RESIZE', 'VDI_SNAPSHOT', 'VDI_CLONE', 'VDI_UPDATE', 'VDI_GENERATE_CONFIG', 'VDI_RESET_ON_BOOT/2'];

/** Turns an ENOSPC into SR_FULL; other errors pass. */
export function spaceError(e: unknown, requested: number, maximum: number): unknown {
  return (e as NodeJS.ErrnoException).code === 'ENOSPC' ? new SrDriverError('SR_FULL', `${requested} ${maximum}`) : e;
}

export class FileSr implements SrDriver {
  readonly capabilities = CAPABILITIES;

  constructor(
    readonly type: 'ext' | 'file',
    readonly dir: string,
    readonly srUuid: string,
  ) {}

  get shared(): boolean {
    return this.type === 'file';
  }

  path(uuid: string): string {
    return join(this.dir, `${uuid}.vhd`);
  }

  async create(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, '.xenon-sr'), `${this.srUuid}\n`);
  }

  async attach(): Promise<void> {
    const s = await stat(this.dir).catch(() => undefined);
    if (!s?.isDirectory()) throw new SrDriverError('SR_BACKEND_FAILURE', `${this.dir} is not a directory`);
  }

  async detach(): Promise<void> {}

  async destroy(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  async stats(): Promise<SrStats> {
    const fs = await statfs(this.dir);
    let used = 0;
    for (const f of await readdir(this.dir)) if (f.endsWith('.vhd')) used += (await stat(join(this.dir, f))).blocks * 512;
    return { physicalSize: fs.blocks * fs.bsize, physicalUtilisation: used };
  }

  async info(uuid: string): Promise<VolumeInfo> {
    const p = this.path(uuid);
    if (!existsSync(p)) throw new SrDriverError('VDI_MISSING', uuid);
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
      const m = /^([0-9a-f-]{36})\.vhd$/.exec(f);
      if (m) out.push(await this.info(m[1]).catch(() => undefined as never));
    }
    return out.filter(Boolean);
  }

  async createVolume(uuid: string, size: number): Promise<VolumeInfo> {
    try {
      await createDynamic(this.path(uuid), roundSize(size));
    } catch (e) {
      await rm(this.path(uuid), { force: true });
      throw spaceError(e, size, 0);
    }
    return this.info(uuid);
  }

  async deleteVolume(uuid: string): Promise<void> {
    await rm(this.path(uuid), { force: true });
  }

  async resizeVolume(uuid: string, size: number): Promise<VolumeInfo> {
    await resize(this.path(uuid), roundSize(size));
    return this.info(uuid);
  }

  async branch(uuid: string, newLeaves: string[], baseUuid: string): Promise<void> {
    const base = this.path(baseUuid);
    await rename(this.path(uuid), base);
    const made: string[] = [];
    try {
      for (const leaf of [uuid, ...newLeaves]) {
        await createDifferencing(this.path(leaf), base);
        made.push(leaf);
      }
    } catch (e) {
      for (const leaf of made) await rm(this.path(leaf), { force: true });
      await rename(base, this.path(uuid));
      throw spaceError(e, 0, 0);
    }
  }

  async copyVolume(uuid: string, into: SrDriver, newUuid: string, progress?: (f: number) => void): Promise<VolumeInfo> {
    const src = await this.info(uuid);
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

  async coalesce(leafUuid: string): Promise<void> {
    const { parentPath } = await coalesce(this.path(leafUuid));
    // the parent now holds the merged data: it becomes the leaf
    await rename(parentPath, this.path(leafUuid));
  }

  async resetLeaf(uuid: string): Promise<void> {
    const info = await this.info(uuid);
    if (!info.parent) throw new SrDriverError('SR_OPERATION_NOT_SUPPORTED', `${uuid} has no base to reset to`);
    const tmp = `${this.path(uuid)}.reset`;
    await createDifferencing(tmp, this.path(info.parent));
    await rename(tmp, this.path(uuid));
  }
}

/** VHD sizes are whole sectors. */
const roundSize = (n: number): number => Math.ceil(n / 512) * 512;
