/** Storage at start: SM records for each driver, and the host's "Local storage" SR on first start. */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { NULL_REF } from '../datamodel/types.ts';
import { FileSr } from '../storage/sr/file.ts';
import type { Services } from './context.ts';
import type { Storage } from './sr-drivers.ts';

const SM_INFO: Record<string, { name: string; description: string; configuration: Record<string, string>; capabilities: string[] }> = {
  ext: {
    name: 'Local EXT3 VHD', description: 'VHD files in a local directory',
    configuration: { path: 'directory for the VHD files (default: under the data dir)' },
    capabilities: ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_RESIZE', 'VDI_SNAPSHOT', 'VDI_CLONE', 'VDI_INTRODUCE', 'VDI_RESET_ON_BOOT/2'],
  },
  file: {
    name: 'Shared file VHD', description: 'VHD files in a directory every host mounts (NFS, CephFS, GlusterFS …)',
    configuration: { location: 'the mounted directory' },
    capabilities: ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_RESIZE', 'VDI_SNAPSHOT', 'VDI_CLONE', 'VDI_INTRODUCE', 'VDI_RESET_ON_BOOT/2'],
  },
  iso: {
    name: 'ISO', description: 'A read-only library of ISO images',
    configuration: { location: 'directory of .iso files' },
    capabilities: ['VDI_INTRODUCE', 'VDI_ATTACH', 'VDI_DETACH'],
  },
};

export function ensureSmRecords(services: Services): void {
  const { store } = services;
  store.transact((tx) => {
    for (const [type, sm] of Object.entries(SM_INFO)) {
      if (store.where('SM', (r) => r.type === type).length) continue;
      tx.create('SM', {
        name_label: sm.name, name_description: sm.description, type, vendor: 'Xenon', copyright: '', version: '1.0',
        required_api_version: '1.0', configuration: sm.configuration, capabilities: sm.capabilities,
        features: Object.fromEntries(sm.capabilities.map((c) => [c.split('/')[0], Number(c.split('/')[1] ?? 1)])), driver_filename: `xenon:${type}`,
      });
    }
  });
}

/** "Local storage" on first start; the pool's default SR if none is set. */
export async function ensureLocalSr(services: Services, storage: Storage): Promise<void> {
  const { store } = services;
  const host = services.hostRef();
  const local = store.where('PBD', (p) => p.host === host && store.get('SR', String(p.SR))?.type === 'ext')[0];
  let sr: string;
  if (local) sr = String(local[1].SR);
  else {
    const uuid = randomUUID();
    const dir = join(services.dataDir, 'sr', uuid);
    mkdirSync(dir, { recursive: true });
    await new FileSr('ext', dir, uuid).create();
    sr = store.transact((tx) => {
      const ref = tx.create('SR', {
        uuid, name_label: 'Local storage', name_description: `Local storage on ${String(store.must('host', host).name_label)}`,
        type: 'ext', content_type: 'user', shared: false, other_config: { 'i18n-key': 'local-storage' },
        allowed_operations: ['scan', 'destroy', 'forget', 'plug', 'unplug', 'update', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot'],
      });
      tx.create('PBD', { host, SR: ref, device_config: { path: dir }, currently_attached: true });
      return ref;
    });
  }
  const pool = store.must('pool', services.poolRef());
  if (pool.default_SR === NULL_REF || !store.get('SR', String(pool.default_SR))) {
    store.transact((tx) => {
      tx.update('pool', services.poolRef(), { default_SR: sr, suspend_image_SR: sr, crash_dump_SR: sr });
      tx.update('host', host, { suspend_image_sr: sr, crash_dump_sr: sr });
    });
  }
  // every plugged SR of this host is checked and rescanned at start
  for (const [pbd, p] of store.where('PBD', (x) => x.host === host && x.currently_attached === true)) {
    try {
      await storage.driverFor(String(p.SR)).attach();
      await storage.scan(String(p.SR));
    } catch (err) {
      services.log.warn({ err, sr: p.SR }, 'an SR could not be attached at start');
      store.transact((tx) => tx.update('PBD', pbd, { currently_attached: false }));
    }
  }
}
