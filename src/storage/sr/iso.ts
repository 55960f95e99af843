/** An ISO library: a read-only directory of .iso files, found by scanning. */
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SR_TYPES } from '../../datamodel/sr-types.ts';
import { srDirectory } from './names.ts';
import { SrDriverError, type SrDriver, type SrStats, type VolumeInfo } from './driver.ts';

/** A stable uuid for a file name, so a rescan finds the same VDI. */
function uuidFor(srUuid: string, name: string): string {
  const h = createHash('sha1').update(`${srUuid}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const readOnly = (): never => {
  throw new SrDriverError('SR_OPERATION_NOT_SUPPORTED', 'an ISO library is read-only');
};

export class IsoSr implements SrDriver {
  readonly type = 'iso';
  readonly shared = true;
  readonly capabilities = SR_TYPES.iso.capabilities;
  private names = new Map<string, string>();

  readonly dir: string;

  constructor(
    dir: string,
    readonly srUuid: string,
  ) {
    this.dir = srDirectory(dir, 'location');
  }

  async create(): Promise<void> {
    await this.attach();
  }

  async attach(): Promise<void> {
    const s = await stat(this.dir).catch(() => undefined);
    if (!s?.isDirectory()) throw new SrDriverError('SR_BACKEND_FAILURE', `${this.dir} is not a directory`);
  }

  async detach(): Promise<void> {}
  async destroy(): Promise<void> {}

  async stats(): Promise<SrStats> {
    const vols = await this.scan();
    const used = vols.reduce((a, v) => a + v.physicalUtilisation, 0);
    return { physicalSize: used, physicalUtilisation: used };
  }

  async scan(): Promise<VolumeInfo[]> {
    const out: VolumeInfo[] = [];
    this.names.clear();
    for (const f of (await readdir(this.dir)).sort()) {
      if (!f.toLowerCase().endsWith('.iso')) continue;
      const st = await stat(join(this.dir, f));
      if (!st.isFile()) continue;
      const uuid = uuidFor(this.srUuid, f);
      this.names.set(uuid, f);
      out.push({ uuid, location: f, virtualSize: st.size, physicalUtilisation: st.size, format: 'raw', readOnly: true, label: f });
    }
    return out;
  }

  path(uuid: string): string {
    const name = this.names.get(uuid);
    if (!name) throw new SrDriverError('VDI_MISSING', uuid);
    return join(this.dir, name);
  }

  async info(uuid: string): Promise<VolumeInfo> {
    if (!this.names.has(uuid)) await this.scan();
    const v = (await this.scan()).find((x) => x.uuid === uuid);
    if (!v) throw new SrDriverError('VDI_MISSING', uuid);
    return v;
  }

  readonly maxVolumeSize = 0;
  createVolume = readOnly;
  deleteVolume = readOnly;
  resizeVolume = readOnly;
  branch = readOnly;
  coalesce = readOnly;
  async recover(): Promise<string[]> {
    return [];
  }
  async checkChain(): Promise<void> {}
  resetLeaf = readOnly;
  copyVolume = readOnly;
}
