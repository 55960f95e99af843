/** Hot-plugging disks and NICs into a running QEMU domain, and changing CD media, over QMP. */
import path from 'node:path';
import { OperationTimeout, type DiskConfig, type NicConfig } from '../backend.ts';
import { blockdevFileArgs, blockdevFormatArgs, diskDeviceArgs, diskIds, nicDeviceArgs, nicIds } from './args.ts';
import { createTap, type Dom } from './domain.ts';
import { ip } from './proc.ts';

/** Writes the domain's record after its configuration changed. */
export type Persist = (d: Dom) => Promise<void>;

export async function plugDisk(d: Dom, disk: DiskConfig, persist: Persist): Promise<void> {
  if (disk.kind === 'cdrom') throw new Error('CD drives cannot be hot-plugged (IDE); use insertCd on an existing drive');
  if (d.p.config.disks.some((x) => x.id === disk.id || x.device === disk.device)) throw new Error(`disk ${disk.id}/${disk.device} already plugged`);
  if (!disk.path) throw new Error('hot-plugged disk needs a path');
  const q = d.qmp!;
  await q.execute('blockdev-add', blockdevFileArgs(disk));
  try {
    await q.execute('blockdev-add', blockdevFormatArgs(disk));
  } catch (e) { await q.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {}); throw e; }
  try {
    await q.execute('device_add', diskDeviceArgs(disk, undefined));
  } catch (e) {
    await q.execute('blockdev-del', { 'node-name': diskIds(disk).fmt }).catch(() => {});
    await q.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {});
    throw e;
  }
  d.p.config.disks.push(structuredClone(disk));
  await persist(d);
}

async function deviceDel(d: Dom, id: string, timeoutMs: number): Promise<void> {
  const q = d.qmp!;
  const deleted = q.waitEvent((e) => e.event === 'DEVICE_DELETED' && (e.data as { device?: unknown } | undefined)?.device === id, timeoutMs);
  deleted.catch(() => {});
  await q.execute('device_del', { id });
  try { await deleted; } catch { throw new OperationTimeout(d.uuid, `unplug ${id} (guest did not release it)`, timeoutMs); }
}

export async function unplugDisk(d: Dom, diskId: string, persist: Persist): Promise<void> {
  const disk = d.p.config.disks.find((x) => x.id === diskId);
  if (!disk) throw new Error(`disk ${diskId} not plugged in ${d.uuid}`);
  if (disk.kind === 'cdrom') throw new Error('CD drives cannot be unplugged (IDE)');
  await deviceDel(d, diskIds(disk).dev, 20000);
  await d.qmp!.execute('blockdev-del', { 'node-name': diskIds(disk).fmt }).catch(() => {});
  await d.qmp!.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {});
  d.p.config.disks = d.p.config.disks.filter((x) => x.id !== diskId);
  await persist(d);
}

export async function plugNic(d: Dom, nic: NicConfig, persist: Persist): Promise<void> {
  if (d.p.config.nics.some((x) => x.id === nic.id || x.device === nic.device)) throw new Error(`nic ${nic.id}/${nic.device} already plugged`);
  let tap = nic.tap;
  if (!tap && nic.bridge) { tap = await createTap(d.uuid, nic); d.p.createdTaps[nic.id] = tap; }
  const q = d.qmp!;
  try {
    if (tap) await q.execute('netdev_add', { type: 'tap', id: nicIds(nic).netdev, ifname: tap, script: 'no', downscript: 'no' });
    await q.execute('device_add', nicDeviceArgs(nic, tap));
  } catch (e) {
    if (tap) await q.execute('netdev_del', { id: nicIds(nic).netdev }).catch(() => {});
    if (d.p.createdTaps[nic.id]) { await ip(['link', 'del', d.p.createdTaps[nic.id]!]).catch(() => {}); delete d.p.createdTaps[nic.id]; }
    throw e;
  }
  d.p.config.nics.push(structuredClone(nic));
  await persist(d);
}

export async function unplugNic(d: Dom, nicId: string, persist: Persist): Promise<void> {
  const nic = d.p.config.nics.find((x) => x.id === nicId);
  if (!nic) throw new Error(`nic ${nicId} not plugged in ${d.uuid}`);
  await deviceDel(d, nicIds(nic).dev, 20000);
  await d.qmp!.execute('netdev_del', { id: nicIds(nic).netdev }).catch(() => {});
  const t = d.p.createdTaps[nicId];
  if (t) { await ip(['link', 'del', t]).catch(() => {}); delete d.p.createdTaps[nicId]; }
  d.p.config.nics = d.p.config.nics.filter((x) => x.id !== nicId);
  await persist(d);
}

export async function insertCd(d: Dom, diskId: string, p: string | null, format: DiskConfig['format'], persist: Persist): Promise<void> {
  const disk = d.p.config.disks.find((x) => x.id === diskId);
  if (!disk || disk.kind !== 'cdrom') throw new Error(`no CD drive ${diskId} in ${d.uuid}`);
  const id = diskIds(disk).dev;
  if (p === null) {
    await d.qmp!.execute('eject', { id, force: true });
    delete disk.path;
  } else {
    const abs = path.resolve(p);
    await d.qmp!.execute('blockdev-change-medium', { id, filename: abs, format, 'read-only-mode': 'read-only' });
    disk.path = abs; disk.format = format;
  }
  await persist(d);
}
