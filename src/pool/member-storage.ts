/**
 * A member's side of `sr.volume.*` (host-api.ts): the file work of its local
 * SRs, asked by the master, which keeps the records. The wire is not trusted:
 * an SR must be one this host has a PBD of (plugged, for image work), an
 * image must be a VDI of that SR in the records (a new one a well-formed uuid
 * no VDI has), sizes finite; paths come only from this host's own PBD.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services, StorageService } from '../messages/context.ts';
import { storageError } from '../messages/sr-drivers.ts';
import type { SrDriver } from '../storage/sr/driver.ts';
import { isUuid } from '../storage/sr/names.ts';
import type { HostArgs, HostResult } from './host-api.ts';

export type VolumeMethod =
  | 'sr.volume.stats' | 'sr.volume.scan' | 'sr.volume.recover' | 'sr.volume.info' | 'sr.volume.create' | 'sr.volume.delete' | 'sr.volume.resize'
  | 'sr.volume.branch' | 'sr.volume.copy' | 'sr.volume.coalesce' | 'sr.volume.checkChain' | 'sr.volume.resetLeaf' | 'sr.create' | 'sr.destroy';

type Serve = { [M in VolumeMethod]: (args: HostArgs<M>) => Promise<HostResult<M>> };

/** The most images one branch may make. */
const MAX_LEAVES = 64;

function storageOf(services: Services): StorageService {
  const s = services.storage;
  if (!s) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
  return s;
}

/** This host's PBD of the SR (plugged, unless `unplugged`), or HANDLE_INVALID. */
export function ownSr(services: Services, sr: unknown, state: 'plugged' | 'unplugged' = 'plugged'): string {
  const { store } = services;
  const ref = typeof sr === 'string' ? sr : '';
  const pbd = store.get('SR', ref) ? store.where('PBD', (p) => p.SR === ref && p.host === services.hostRef())[0]?.[1] : undefined;
  if (!pbd) throw new XenApiError('HANDLE_INVALID', 'SR', String(sr).slice(0, 100));
  if ((pbd.currently_attached === true) !== (state === 'plugged')) throw new XenApiError(state === 'plugged' ? 'SR_NOT_ATTACHED' : 'SR_HAS_PBD', ref);
  return ref;
}

/** A uuid of a VDI of the SR in the records. */
export function knownVolume(services: Services, sr: string, uuid: unknown): string {
  const u = typeof uuid === 'string' && isUuid(uuid) ? uuid.toLowerCase() : '';
  const ref = u ? services.store.byUuid('VDI', u) : undefined;
  if (!ref || services.store.get('VDI', ref)?.SR !== sr) throw new XenApiError('UUID_INVALID', 'VDI', String(uuid).slice(0, 100));
  return u;
}

/** A uuid for a new image: well formed, no VDI's. */
function fresh(services: Services, uuid: unknown): string {
  if (typeof uuid !== 'string' || !isUuid(uuid) || services.store.byUuid('VDI', uuid.toLowerCase())) throw new XenApiError('UUID_INVALID', 'VDI', String(uuid).slice(0, 100));
  return uuid.toLowerCase();
}

function size(v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new XenApiError('INVALID_VALUE', 'size', String(v));
  return v;
}

/** Runs a driver step, its failure as the XenAPI error the master would raise. */
async function run<T>(fn: () => Promise<T>, vdi = ''): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw storageError(e, vdi);
  }
}

/** The serving functions, on this host's storage (its chain locks taken as its own disk work takes them). */
export function memberStorageMethods(services: Services): Serve {
  const driver = (sr: string): SrDriver => storageOf(services).driverFor(sr);
  return {
    'sr.volume.stats': (a) => run(() => driver(ownSr(services, a.sr)).stats()),
    'sr.volume.scan': (a) => run(() => driver(ownSr(services, a.sr)).scan()),
    'sr.volume.recover': (a) => run(() => driver(ownSr(services, a.sr)).recover()),
    'sr.volume.info': (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      return run(() => driver(sr).info(uuid), uuid);
    },
    'sr.volume.create': (a) => {
      const sr = ownSr(services, a.sr);
      const format = a.format === 'vhd' || a.format === 'qcow2' ? a.format : undefined;
      if (a.format !== undefined && !format) throw new XenApiError('INVALID_VALUE', 'sm_config:type', String(a.format));
      const uuid = fresh(services, a.uuid);
      return run(() => driver(sr).createVolume(uuid, size(a.size), format));
    },
    'sr.volume.delete': async (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      await run(() => driver(sr).deleteVolume(uuid), uuid);
      return null;
    },
    'sr.volume.resize': (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      return run(() => driver(sr).resizeVolume(uuid, size(a.size)), uuid);
    },
    'sr.volume.branch': async (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      if (!Array.isArray(a.newLeaves) || a.newLeaves.length > MAX_LEAVES) throw new XenApiError('INVALID_VALUE', 'newLeaves', 'a list of at most 64');
      const leaves = a.newLeaves.map((l) => fresh(services, l));
      const base = fresh(services, a.base);
      if (new Set([...leaves, base]).size !== leaves.length + 1) throw new XenApiError('INVALID_VALUE', 'newLeaves', 'uuids repeated');
      await run(() => storageOf(services).branchImage(sr, uuid, leaves, base), uuid);
      const d = driver(sr);
      return run(() => Promise.all([uuid, ...leaves, base].map((u) => d.info(u))), uuid);
    },
    'sr.volume.copy': (a) => {
      const sr = ownSr(services, a.sr);
      const into = ownSr(services, a.into);
      const uuid = knownVolume(services, sr, a.uuid);
      const newUuid = fresh(services, a.newUuid);
      return run(() => driver(sr).copyVolume(uuid, driver(into), newUuid), uuid);
    },
    'sr.volume.coalesce': async (a) => {
      const sr = ownSr(services, a.sr);
      const child = knownVolume(services, sr, a.child);
      const base = knownVolume(services, sr, a.base);
      // never under a guest of this host's: the master checks its records, this host checks what it has open
      if (storageOf(services).attached.has(child)) throw new XenApiError('VDI_IN_USE', child, 'coalesce');
      await run(() => driver(sr).coalesce(child, base), child);
      return null;
    },
    'sr.volume.checkChain': async (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      await run(() => driver(sr).checkChain(uuid), uuid);
      return null;
    },
    'sr.volume.resetLeaf': async (a) => {
      const sr = ownSr(services, a.sr);
      const uuid = knownVolume(services, sr, a.uuid);
      if (storageOf(services).attached.has(uuid)) throw new XenApiError('VDI_IN_USE', uuid, 'reset');
      await run(() => driver(sr).resetLeaf(uuid), uuid);
      return null;
    },
    'sr.create': async (a) => {
      const pbd = typeof a.pbd === 'string' ? services.store.get('PBD', a.pbd) : undefined;
      if (!pbd || pbd.host !== services.hostRef()) throw new XenApiError('HANDLE_INVALID', 'PBD', String(a.pbd).slice(0, 100));
      const sr = ownSr(services, pbd.SR, 'unplugged');
      const storage = storageOf(services);
      storage.forgetDriver(sr);
      await run(() => storage.bareDriver(sr).create());
      return null;
    },
    'sr.destroy': async (a) => {
      const sr = ownSr(services, a.sr, 'unplugged');
      await run(() => driver(sr).destroy());
      storageOf(services).forgetDriver(sr);
      return null;
    },
  };
}
