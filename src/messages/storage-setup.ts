/** Storage at start: SM records for each driver, and the host's "Local storage" SR on first start. */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Ref } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import { SR_TYPE_NAMES, SR_TYPES, smFeatures } from '../datamodel/sr-types.ts';
import type { Services, StorageService } from './context.ts';
import { makeDriver } from './sr-drivers.ts';

/** One SM record per SR type, as the SR types declare them. */
export function ensureSmRecords(services: Services): void {
  const { store } = services;
  store.transact((tx) => {
    for (const type of SR_TYPE_NAMES) {
      if (store.where('SM', (r) => r.type === type).length) continue;
      const sm = SR_TYPES[type];
      tx.create('SM', {
        name_label: sm.name, name_description: sm.description, type, vendor: 'Xenon', copyright: '', version: '1.0',
        required_api_version: '1.0', configuration: sm.configuration, capabilities: [...sm.capabilities],
        features: smFeatures(sm.capabilities), driver_filename: `xenon:${type}`,
      });
    }
  });
}

/** "Local storage" on first start; the pool's default SR if none is set. */
export async function ensureLocalSr(services: Services, storage: StorageService): Promise<void> {
  const { store } = services;
  const host = services.hostRef();
  const local = store.where('PBD', (p) => p.host === host && store.get('SR', p.SR)?.type === 'ext')[0];
  let sr: Ref<'SR'>;
  if (local) sr = local[1].SR;
  else {
    const uuid = randomUUID();
    const dir = join(services.dataDir, 'sr', uuid);
    mkdirSync(dir, { recursive: true, mode: 0o700 }); // local disks: root's alone
    await makeDriver('ext', uuid, { path: dir }, services.dataDir).create();
    sr = store.transact((tx) => {
      const ref = tx.create('SR', {
        uuid, name_label: 'Local storage', name_description: `Local storage on ${store.must('host', host).name_label}`,
        type: 'ext', content_type: 'user', shared: false, other_config: { 'i18n-key': 'local-storage' },
        allowed_operations: ['scan', 'destroy', 'forget', 'plug', 'unplug', 'update', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot'],
      });
      tx.create('PBD', { host, SR: ref, device_config: { path: dir }, currently_attached: true });
      return ref;
    });
  }
  const pool = store.must('pool', services.poolRef());
  if (pool.default_SR === NULL_REF || !store.get('SR', pool.default_SR)) {
    store.transact((tx) => {
      tx.update('pool', services.poolRef(), { default_SR: sr, suspend_image_SR: sr, crash_dump_SR: sr });
      tx.update('host', host, { suspend_image_sr: sr, crash_dump_sr: sr });
    });
  }
  // every plugged SR of this host is checked and rescanned at start
  for (const [pbd, p] of store.where('PBD', (x) => x.host === host && x.currently_attached)) {
    try {
      await storage.driverFor(p.SR).attach();
      await storage.scan(p.SR);
    } catch (err) {
      services.log.warn({ err, sr: p.SR }, 'an SR could not be attached at start');
      store.transact((tx) => tx.update('PBD', pbd, { currently_attached: false }));
    }
  }
}
