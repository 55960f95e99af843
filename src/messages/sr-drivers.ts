/**
 * Where SR/PBD/VDI records meet the SR drivers: one driver per attached SR
 * (its chain-changing methods behind the SR's lock), VDI records kept in
 * step with the images (scan), snapshot and clone as chains with hidden base
 * copies, and the disk provider the domain manager boots guests from. The
 * collector that folds bases no one needs is in sr-collector.ts.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import { SrDriverError, type SrDriver, type VolumeInfo } from '../storage/sr/driver.ts';
import { FileSr } from '../storage/sr/file.ts';
import { IsoSr } from '../storage/sr/iso.ts';
import type { Services } from './context.ts';
import { Collector } from './sr-collector.ts';
import { ChainLocks, lockedDriver } from './sr-locks.ts';
import type { DiskProvider } from './vm-domains/index.ts';

/** Above this, VHD cannot go (2040 GiB, as XenServer's VHD limit). */
export const VHD_MAX = 2040 * 1024 ** 3;
/** Largest VDI a file SR makes (as qcow2); qcow2 itself would go further. */
export const FILE_VDI_MAX = 64 * 1024 ** 4;

/** Turns driver failures into the XenAPI errors xapi raises. */
export function storageError(e: unknown, vdi = ''): unknown {
  if (e instanceof SrDriverError) {
    if (e.code === 'SR_FULL') {
      const [requested = '0', maximum = '0'] = e.message.split(' ');
      return new XenApiError('SR_FULL', requested, maximum);
    }
    if (e.code === 'VDI_MISSING') return new XenApiError('VDI_MISSING', vdi || e.message, 'the image is not in the SR');
    if (e.code === 'SR_OPERATION_NOT_SUPPORTED') return new XenApiError('SR_OPERATION_NOT_SUPPORTED', e.message);
    return new XenApiError('SR_BACKEND_FAILURE', 'SR_BACKEND_FAILURE', '', e.message);
  }
  if ((e as NodeJS.ErrnoException)?.code === 'ENOSPC') return new XenApiError('SR_FULL', '0', '0');
  return e;
}

export class Storage implements DiskProvider {
  private readonly drivers = new Map<string, SrDriver>();
  /** NBD exports serving VHD VDIs to QEMU, by VDI uuid. */
  private readonly exports = new Map<string, { socketPath: string; close(): Promise<void>; device: { reopen(change: () => Promise<void>): Promise<void>; activate(): Promise<void> } }>();
  /** VDIs (by uuid) handed to a guest and not detached since: the collector leaves their chains alone. */
  readonly attached = new Set<string>();
  readonly locks = new ChainLocks();
  readonly collector: Collector;

  constructor(private readonly services: Services) {
    this.collector = new Collector(services, this);
  }

  private get store(): Store {
    return this.services.store;
  }

  /** A driver for an SR, built from its type and this host's PBD device_config; chain changes take the SR's lock. */
  driverFor(sr: string): SrDriver {
    return lockedDriver(this.bareDriver(sr), sr, this.locks);
  }

  /** The driver without locking, for code already inside the SR's lock. */
  bareDriver(sr: string): SrDriver {
    const hit = this.drivers.get(sr);
    if (hit) return hit;
    const rec = this.store.must('SR', sr);
    const host = this.storageHost(sr);
    const pbd = this.store.where('PBD', (p) => p.SR === sr && p.host === host)[0]?.[1];
    const config = (pbd?.device_config ?? {}) as Record<string, string>;
    const local = makeDriver(String(rec.type), String(rec.uuid), config, this.services.dataDir);
    // an SR only a member has (its local SR): the member's own driver does the file work, as xapi runs SM where the PBD is
    const d = host === this.services.hostRef() || !this.services.pool ? local : this.services.pool.srDriverOn(host, sr, local);
    this.drivers.set(sr, d);
    return d;
  }

  /** The host whose driver does an SR's file work: this one if it has a PBD of it, else a member that has (plugged first). */
  storageHost(sr: string): string {
    const here = this.services.hostRef();
    const pbds = this.store.where('PBD', (p) => p.SR === sr).map(([, p]) => p);
    if (pbds.length === 0 || pbds.some((p) => p.host === here)) return here;
    return (pbds.find((p) => p.currently_attached === true) ?? pbds[0]).host;
  }

  /** SRs whose file work this host's storage does, plugged, on a host that answers (the collector's round). */
  pluggedSrs(): string[] {
    return this.store.where('SR', () => true).map(([ref]) => ref).filter((sr) => this.isPlugged(sr) && this.isLive(this.storageHost(sr)));
  }

  /** This host, or a member the master last heard from (host_metrics.live). */
  private isLive(host: string): boolean {
    if (host === this.services.hostRef()) return true;
    const metrics = this.store.get('host', host)?.metrics;
    return metrics !== undefined && this.store.get('host_metrics', metrics)?.live === true;
  }

  forgetDriver(sr: string): void {
    this.drivers.delete(sr);
  }

  /** The SR must be plugged on this host. */
  attachedDriver(sr: string): SrDriver {
    this.assertPlugged(sr);
    return this.driverFor(sr);
  }

  /**
   * The driver of an SR whose files this host can read and write (HTTP
   * transfers, the master's own guests): an SR only a member has answers
   * NOT_IMPLEMENTED rather than touch a path here (xapi forwards these to the
   * SR's host; Xenon's members do not serve transfers yet).
   */
  imageDriver(sr: string): SrDriver {
    const driver = this.attachedDriver(sr);
    const host = this.storageHost(sr);
    if (host !== this.services.hostRef()) {
      const name = String(this.store.get('host', host)?.name_label ?? host);
      throw new XenApiError('NOT_IMPLEMENTED', `moving the images of an SR of another host (${name}) through this one: its files are on that host`);
    }
    return driver;
  }

  /** The SR must be plugged on the host that does its file work. */
  assertPlugged(sr: string): void {
    if (!this.isPlugged(sr)) throw new XenApiError('SR_NOT_ATTACHED', sr);
    // a member that does not answer: say so now rather than wait for the call to time out
    const host = this.storageHost(sr);
    if (!this.isLive(host)) throw new XenApiError('HOST_OFFLINE', host);
  }

  private isPlugged(sr: string): boolean {
    const host = this.storageHost(sr);
    return this.store.where('PBD', (p) => p.SR === sr && p.host === host && p.currently_attached === true).length > 0;
  }

  /** Runs `fn` (which reads or writes images without restructuring chains) while no coalesce or snapshot runs on the SR. */
  usingImages<T>(sr: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.shared(sr, fn);
  }

  /** `usingImages` over several SRs (taken in one order, so that two callers cannot wait on each other). */
  async usingImagesOf<T>(srs: Iterable<string>, fn: () => Promise<T>): Promise<T> {
    const [first, ...rest] = [...new Set(srs)].sort();
    if (first === undefined) return fn();
    return this.usingImages(first, () => this.usingImagesOf(rest, fn));
  }

  /** The SRs holding a VM's disks. */
  srsOfVm(vm: string): string[] {
    const vbds = (this.store.get('VM', vm)?.VBDs as string[] | undefined) ?? [];
    return vbds.map((r) => this.store.get('VDI', String(this.store.get('VBD', r)?.VDI))?.SR).filter((sr): sr is string => typeof sr === 'string');
  }

  /** One collector pass (or the one already queued): SR.scan and a timer kick it, as in xapi. */
  collect(): Promise<number> {
    return this.collector.collect();
  }

  // ------------------------------------------------------------- records

  /**
   * Makes VDI records match the images (adds new ones, marks vanished ones),
   * after finishing or rolling back whatever a crash interrupted; then kicks
   * the collector, as xapi's SR.scan does.
   */
  async scan(sr: string): Promise<void> {
    this.assertPlugged(sr);
    await this.locks.exclusive(sr, async () => {
      const driver = this.bareDriver(sr);
      try {
        for (const note of await driver.recover()) this.services.log.warn({ sr }, `storage: ${note}`);
        this.syncRecords(sr, await driver.scan());
      } catch (e) {
        throw storageError(e);
      }
    });
    await this.update(sr);
    this.collect().catch((err: unknown) => this.services.log.error({ err }, 'storage collector failed'));
  }

  /** Records from what is on disk: the disk is the truth for which images exist and what they are built on. */
  syncRecords(sr: string, vols: VolumeInfo[]): void {
    const byUuid = new Map(vols.map((v) => [v.uuid, v]));
    const hidden = new Set(vols.map((v) => v.parent).filter((p): p is string => Boolean(p)));
    this.store.transact((tx) => {
      for (const [ref, vdi] of this.store.where('VDI', (v) => v.SR === sr)) {
        const v = byUuid.get(String(vdi.uuid));
        byUuid.delete(String(vdi.uuid));
        if (!v) {
          if ((vdi.VBDs as string[]).length === 0) tx.delete('VDI', ref);
          else tx.update('VDI', ref, { missing: true });
          continue;
        }
        tx.update('VDI', ref, { ...this.volumeFields(v), missing: false, managed: !hidden.has(v.uuid) });
      }
      for (const v of byUuid.values()) {
        tx.create('VDI', {
          uuid: v.uuid,
          name_label: v.label ?? (hidden.has(v.uuid) ? 'base copy' : ''),
          SR: sr,
          type: 'user',
          read_only: v.readOnly || hidden.has(v.uuid),
          managed: !hidden.has(v.uuid),
          ...this.volumeFields(v),
        });
      }
    });
    this.relinkParents(sr);
  }

  /** Fields of a VDI record that come from its image. */
  volumeFields(v: VolumeInfo): Record<string, unknown> {
    return {
      location: v.location,
      virtual_size: v.virtualSize,
      physical_utilisation: v.physicalUtilisation,
      // vhd-parent names the parent for qcow2 chains too: the collector and destroy follow it
      sm_config: { vdi_type: v.format === 'qcow2' ? 'qcow2' : v.format === 'vpc' ? 'vhd' : 'raw', ...(v.parent ? { 'vhd-parent': v.parent } : {}) },
    };
  }

  /** VDI.parent from sm_config:vhd-parent, for clients that follow chains. */
  relinkParents(sr: string): void {
    this.store.transact((tx) => {
      for (const [ref, vdi] of this.store.where('VDI', (v) => v.SR === sr)) {
        const p = (vdi.sm_config as Record<string, string>)['vhd-parent'];
        const parentRef = p ? this.store.byUuid('VDI', p) ?? NULL_REF : NULL_REF;
        if (vdi.parent !== parentRef) tx.update('VDI', ref, { parent: parentRef });
      }
    });
  }

  /** physical_size, physical_utilisation and virtual_allocation, kept true. */
  async update(sr: string): Promise<void> {
    const driver = this.attachedDriver(sr);
    const s = await driver.stats().catch((e: unknown) => {
      throw storageError(e);
    });
    const allocation = this.store.where('VDI', (v) => v.SR === sr && v.managed === true).reduce((a, [, v]) => a + Number(v.virtual_size), 0);
    this.store.transact((tx) => tx.update('SR', sr, { physical_size: s.physicalSize, physical_utilisation: s.physicalUtilisation, virtual_allocation: allocation }));
  }

  /** A fresh VDI record for an image just made. */
  recordVolume(sr: string, v: VolumeInfo, fields: Record<string, unknown>): string {
    return this.store.transact((tx) =>
      tx.create('VDI', { type: 'user', managed: true, ...fields, uuid: v.uuid, SR: sr, ...this.volumeFields(v) }),
    );
  }

  async refreshVolume(vdi: string): Promise<void> {
    const rec = this.store.must('VDI', vdi);
    const v = await this.attachedDriver(String(rec.SR)).info(String(rec.uuid));
    this.store.transact((tx) => tx.update('VDI', vdi, this.volumeFields(v)));
  }

  // ------------------------------------------------------------- chains

  /**
   * Snapshot or clone: the VDI's image becomes a hidden read-only base, the
   * VDI keeps a fresh empty child, and the new VDI gets another — O(1).
   */
  async branch(vdi: string, fields: Record<string, unknown>): Promise<string> {
    const sr = String(this.store.must('VDI', vdi).SR);
    this.assertPlugged(sr);
    const ref = await this.locks.exclusive(sr, () => this.branchLocked(vdi, sr, fields));
    await this.update(sr);
    return ref;
  }

  private async branchLocked(vdi: string, sr: string, fields: Record<string, unknown>): Promise<string> {
    const rec = this.store.must('VDI', vdi);
    const driver = this.bareDriver(sr);
    if (!driver.capabilities.includes('VDI_SNAPSHOT')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
    const newUuid = randomUUID();
    const baseUuid = randomUUID();
    try {
      // an image on a member is branched there (its guest's disk too, with I/O held back there)
      if (this.storageHost(sr) === this.services.hostRef()) await this.branchImageLocked(sr, String(rec.uuid), [newUuid], baseUuid, vdi);
      else await driver.branch(String(rec.uuid), [newUuid], baseUuid);
    } catch (e) {
      throw storageError(e, vdi);
    }
    const base = await driver.info(baseUuid);
    const child = await driver.info(newUuid);
    const self = await driver.info(String(rec.uuid));
    const ref = this.store.transact((tx) => {
      tx.create('VDI', { uuid: baseUuid, name_label: 'base copy', SR: sr, type: rec.type, read_only: true, managed: false, ...this.volumeFields(base) });
      tx.update('VDI', vdi, this.volumeFields(self));
      return tx.create('VDI', {
        name_label: rec.name_label, name_description: rec.name_description, type: rec.type, sharable: rec.sharable,
        read_only: false, other_config: rec.other_config, managed: true, SR: sr, uuid: newUuid, ...this.volumeFields(child), ...fields,
      });
    });
    this.relinkParents(sr);
    return ref;
  }

  branchImage(sr: string, uuid: string, newLeaves: string[], base: string): Promise<void> {
    return this.locks.exclusive(sr, () => this.branchImageLocked(sr, uuid, newLeaves, base, this.store.byUuid('VDI', uuid) ?? uuid));
  }

  /** Branches an image of this host's; a disk in use is branched with its guest's I/O held back for the moment of the rename. */
  private async branchImageLocked(sr: string, uuid: string, newLeaves: string[], base: string, vdi: string): Promise<void> {
    const live = this.exports.get(uuid);
    if (!live && this.inUse(vdi)) throw new XenApiError('VDI_IN_USE', vdi, 'snapshot');
    const branch = (): Promise<void> => this.bareDriver(sr).branch(uuid, newLeaves, base);
    await (live ? live.device.reopen(branch) : branch());
  }

  /** Attached to a running VM (through a plugged VBD). */
  inUse(vdi: string): boolean {
    return (this.store.get('VDI', vdi)?.VBDs as string[] | undefined ?? []).some((vbd) => this.store.get('VBD', vbd)?.currently_attached === true);
  }

  // ------------------------------------------------------------- disk provider

  async attach(vdi: string, readOnly: boolean, opts: { standby?: boolean } = {}): Promise<{ path: string; format: 'raw' | 'vpc' | 'qcow2' }> {
    const sr = String(this.store.must('VDI', vdi).SR);
    this.imageDriver(sr); // a guest of this host's needs the image here
    // never half-way through a coalesce of this chain: the guest would write to a file about to be replaced
    return this.locks.exclusive(sr, () => this.attachLocked(vdi, sr, readOnly, opts.standby === true));
  }

  private async attachLocked(vdi: string, sr: string, readOnly: boolean, standby: boolean): Promise<{ path: string; format: 'raw' | 'vpc' | 'qcow2' }> {
    const rec = this.store.must('VDI', vdi);
    const driver = this.bareDriver(sr);
    // a standby attach is of a disk another host's guest still uses: never reset under it
    if (rec.on_boot === 'reset' && !standby && !this.inUse(vdi)) await driver.resetLeaf(String(rec.uuid)).catch(() => undefined);
    let info: VolumeInfo;
    try {
      info = await driver.info(String(rec.uuid));
    } catch (e) {
      throw storageError(e, vdi);
    }
    this.attached.add(String(rec.uuid));
    if (info.format !== 'vpc') return { path: driver.path(String(rec.uuid)), format: info.format };
    return { path: await this.serveVhd(String(rec.uuid), driver.path(String(rec.uuid)), readOnly || rec.read_only === true, standby), format: 'raw' };
  }

  /** Opens the chain of a VHD exported in standby (live migration's receiving end); nothing for other disks. */
  async activate(vdi: string): Promise<void> {
    const rec = this.store.get('VDI', vdi);
    const exp = rec ? this.exports.get(String(rec.uuid)) : undefined;
    if (exp) await exp.device.activate();
  }

  /**
   * QEMU's vpc driver ignores a VHD's parent, so Xenon serves VHDs to QEMU
   * itself, over NBD: reads go through the chain, writes to the leaf, and a
   * live snapshot can swap the leaf under a running guest. In standby (a
   * domain receiving a live migration) the export answers the handshake with
   * the disk's size and holds I/O back until `activate`.
   */
  private async serveVhd(uuid: string, leaf: string, readOnly: boolean, standby: boolean): Promise<string> {
    const existing = this.exports.get(uuid);
    if (existing) return `nbd+unix:///?socket=${existing.socketPath}`;
    const dir = join(this.services.dataDir, 'run', 'nbd');
    mkdirSync(dir, { recursive: true });
    const socketPath = join(dir, `${uuid.slice(0, 8)}-${uuid.slice(-12)}.sock`);
    const { serveNbd } = await import('../storage/nbd/server.ts');
    const { vhdBlockDevice } = await import('../storage/nbd/vhd-device.ts');
    const device = await vhdBlockDevice(leaf, { readOnly, standby });
    const exp = await serveNbd(device, socketPath);
    this.exports.set(uuid, { socketPath: exp.socketPath, close: () => exp.close(), device });
    return `nbd+unix:///?socket=${socketPath}`;
  }

  async detach(vdi: string): Promise<void> {
    const rec = this.store.get('VDI', vdi);
    if (!rec) return;
    this.attached.delete(String(rec.uuid));
    const exp = this.exports.get(String(rec.uuid));
    if (exp) {
      this.exports.delete(String(rec.uuid));
      await exp.close();
    }
  }

  async close(): Promise<void> {
    for (const e of this.exports.values()) await e.close().catch(() => undefined);
    this.exports.clear();
  }
}

export function makeDriver(type: string, srUuid: string, config: Record<string, string>, dataDir: string): SrDriver {
  try {
    return driverOfType(type, srUuid, config, dataDir);
  } catch (e) {
    throw storageError(e); // a directory or uuid the driver refuses to make a path of
  }
}

function driverOfType(type: string, srUuid: string, config: Record<string, string>, dataDir: string): SrDriver {
  switch (type) {
    case 'ext':
      return new FileSr('ext', config.path || join(dataDir, 'sr', srUuid), srUuid);
    case 'file':
      if (!config.location) throw new XenApiError('SR_BACKEND_FAILURE', 'SR_BACKEND_FAILURE_LOCATION', '', 'device-config:location is required (a directory every host mounts)');
      return new FileSr('file', config.location, srUuid);
    case 'iso':
      if (!config.location) throw new XenApiError('SR_BACKEND_FAILURE', 'SR_BACKEND_FAILURE_LOCATION', '', 'device-config:location is required (a directory of .iso files)');
      return new IsoSr(config.location, srUuid);
    default:
      throw new XenApiError('SR_UNKNOWN_DRIVER', type);
  }
}

