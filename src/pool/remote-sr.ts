/**
 * The master's driver for an SR plugged only on a member (the member's local
 * SR): the same SrDriver the messages use, its file work done by the member's
 * own driver over the host interface (host-api.ts `sr.volume.*`), as xapi
 * runs an SM operation on the host that has the SR's PBD plugged. The master
 * keeps the records; nothing here touches the master's disk.
 */
import type { SmCapability } from '../datamodel/sr-types.ts';
import { SrDriverError, type SrDriver, type SrStats, type VolumeInfo } from '../storage/sr/driver.ts';
import type { HostArgs, HostMethod, HostResult } from './host-api.ts';

type Call = <M extends HostMethod>(method: M, args: HostArgs<M>) => Promise<HostResult<M>>;

export class RemoteSrDriver implements SrDriver {
  readonly type: string;
  readonly shared = false;
  readonly capabilities: readonly SmCapability[];
  readonly maxVolumeSize: number;
  /** Images a branch just made, told by the member with it: they have no records yet, so the member would not name them to `info`. */
  private readonly fresh = new Map<string, VolumeInfo>();

  constructor(
    /** The member whose PBD is plugged. */
    readonly host: string,
    /** The SR's ref, as the member knows it too. */
    readonly sr: string,
    /** A driver of the SR's type, for what the type declares (never used for I/O). */
    shape: SrDriver,
    private readonly call: Call,
  ) {
    this.type = shape.type;
    this.capabilities = shape.capabilities;
    this.maxVolumeSize = shape.maxVolumeSize;
  }

  private elsewhere(what: string): never {
    throw new SrDriverError('SR_OPERATION_NOT_SUPPORTED', `${what}: the SR's storage is on another host (${this.host})`);
  }

  // the member's PBD is plugged and unplugged through sr.plug/sr.unplug, never through this driver
  create(): Promise<void> {
    this.elsewhere('SR create');
  }

  attach(): Promise<void> {
    this.elsewhere('PBD plug');
  }

  detach(): Promise<void> {
    this.elsewhere('PBD unplug');
  }

  async destroy(): Promise<void> {
    await this.call('sr.destroy', { sr: this.sr });
  }

  stats(): Promise<SrStats> {
    return this.call('sr.volume.stats', { sr: this.sr });
  }

  scan(): Promise<VolumeInfo[]> {
    return this.call('sr.volume.scan', { sr: this.sr });
  }

  recover(): Promise<string[]> {
    return this.call('sr.volume.recover', { sr: this.sr });
  }

  info(uuid: string): Promise<VolumeInfo> {
    const made = this.fresh.get(uuid);
    this.fresh.delete(uuid);
    if (made) return Promise.resolve(made);
    return this.call('sr.volume.info', { sr: this.sr, uuid });
  }

  createVolume(uuid: string, size: number, format?: 'vhd' | 'qcow2'): Promise<VolumeInfo> {
    return this.call('sr.volume.create', { sr: this.sr, uuid, size, ...(format ? { format } : {}) });
  }

  async deleteVolume(uuid: string): Promise<void> {
    await this.call('sr.volume.delete', { sr: this.sr, uuid });
  }

  resizeVolume(uuid: string, size: number): Promise<VolumeInfo> {
    return this.call('sr.volume.resize', { sr: this.sr, uuid, size });
  }

  async branch(uuid: string, newLeaves: string[], baseUuid: string): Promise<void> {
    const after = await this.call('sr.volume.branch', { sr: this.sr, uuid, newLeaves, base: baseUuid });
    for (const v of after) if (v.uuid !== uuid) this.fresh.set(v.uuid, v);
  }

  /** Within the member only: a copy between hosts would stream the image across the pool (not done). */
  copyVolume(uuid: string, into: SrDriver, newUuid: string): Promise<VolumeInfo> {
    if (!(into instanceof RemoteSrDriver) || into.host !== this.host) this.elsewhere('VDI copy to another host');
    return this.call('sr.volume.copy', { sr: this.sr, uuid, into: into.sr, newUuid });
  }

  async coalesce(childUuid: string, baseUuid: string): Promise<void> {
    await this.call('sr.volume.coalesce', { sr: this.sr, child: childUuid, base: baseUuid });
  }

  async checkChain(uuid: string): Promise<void> {
    await this.call('sr.volume.checkChain', { sr: this.sr, uuid });
  }

  async resetLeaf(uuid: string): Promise<void> {
    await this.call('sr.volume.resetLeaf', { sr: this.sr, uuid });
  }

  /** No path on this host: HTTP transfers and the master's own guests cannot use the image. */
  path(): string {
    this.elsewhere('image path');
  }
}
