/** SR and PBD: creating, plugging, scanning, forgetting and destroying storage. */
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Enum_storage_operations, Ref } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import { notImplemented, type CallContext, type PoolService, type StorageService } from './context.ts';
import { setField } from './generic.ts';
import type { PBD_handlers, SR_handlers } from './generated/handlers.ts';
import { isSrType, SR_TYPE_NAMES } from '../datamodel/sr-types.ts';
import { makeDriver, storageError } from './sr-drivers.ts';
import { probeFileSrs } from '../storage/sr/file.ts';
import { escapeXml } from '../wire/xmlrpc.ts';

export function storageOf(ctx: CallContext): StorageService {
  const s = ctx.services.storage;
  if (!s) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
  return s;
}

/** The pool that reaches another host's PBDs; HOST_OFFLINE without one. */
function poolFor(ctx: CallContext, host: string): PoolService {
  const pool = ctx.services.pool;
  if (!pool || !ctx.services.store.get('host', host)) throw new XenApiError('HOST_OFFLINE', host);
  return pool;
}

async function plug(ctx: CallContext, pbd: Ref<'PBD'>): Promise<void> {
  const { store } = ctx.services;
  const rec = store.must('PBD', pbd);
  if (rec.currently_attached) return;
  if (rec.host !== ctx.services.hostRef()) return poolFor(ctx, rec.host).plugOn(pbd);
  const storage = storageOf(ctx);
  storage.forgetDriver(rec.SR);
  try {
    await storage.driverFor(rec.SR).attach();
  } catch (e) {
    throw storageError(e);
  }
  store.transact((tx) => tx.update('PBD', pbd, { currently_attached: true }));
  await storage.scan(rec.SR);
}

function assertNoVdiInUse(ctx: CallContext, sr: string, op: string): void {
  const storage = storageOf(ctx);
  for (const [ref] of ctx.services.store.where('VDI', (v) => v.SR === sr)) {
    if (storage.inUse(ref)) throw new XenApiError('VDI_IN_USE', ref, op);
  }
}

const SR_OPERATIONS = (): Enum_storage_operations[] => ['scan', 'destroy', 'forget', 'plug', 'unplug', 'update', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot'];

interface NewSr {
  host: Ref<'host'>;
  device_config: Record<string, string>;
  physical_size: number;
  name_label: string;
  name_description: string;
  type: string;
  content_type: string;
  shared: boolean;
  sm_config: Record<string, string>;
}

/** SR.create and SR.make: make the storage, the SR record and this host's PBD, plugged. */
async function create(ctx: CallContext, a: NewSr): Promise<Ref<'SR'>> {
  const { store } = ctx.services;
  const { type } = a;
  if (!isSrType(type)) throw new XenApiError('SR_UNKNOWN_DRIVER', type);
  const uuid = randomUUID();
  const config = { ...a.device_config };
  const driver = makeDriver(type, uuid, config, ctx.services.dataDir);
  if (a.host !== ctx.services.hostRef()) {
    // a member's own SR: made there (xapi runs SR.create on the host named); a shared one is made from the master
    if (a.shared || driver.shared) throw new XenApiError('HOST_OFFLINE', a.host);
    return createOnMember(ctx, a, uuid, config);
  }
  try {
    await driver.create();
  } catch (e) {
    throw storageError(e);
  }
  const sr = store.transact((tx) => {
    const ref = tx.create('SR', {
      uuid, name_label: a.name_label, name_description: a.name_description, type, content_type: a.content_type,
      shared: a.shared || driver.shared, sm_config: a.sm_config, physical_size: a.physical_size,
      allowed_operations: SR_OPERATIONS(),
    });
    tx.create('PBD', { host: a.host, SR: ref, device_config: config, currently_attached: false });
    // a shared SR is reached the same way from every host of the pool: a PBD each
    if (a.shared || driver.shared) for (const h of store.refs('host')) if (h !== a.host) tx.create('PBD', { host: h, SR: ref, device_config: config, currently_attached: false });
    return ref;
  });
  const pbds = store.where('PBD', (p) => p.SR === sr).sort((x, y) => Number(y[1].host === a.host) - Number(x[1].host === a.host)).map(([r]) => r);
  for (const pbd of pbds) await plug(ctx, pbd);
  return sr;
}

/** The SR and PBD recorded, the storage made by the member from them, then plugged there; the records go if it fails. */
async function createOnMember(ctx: CallContext, a: NewSr, uuid: string, config: Record<string, string>): Promise<Ref<'SR'>> {
  const { store } = ctx.services;
  const pool = poolFor(ctx, a.host);
  const [sr, pbd] = store.transact((tx) => {
    const ref = tx.create('SR', {
      uuid, name_label: a.name_label, name_description: a.name_description, type: a.type, content_type: a.content_type,
      shared: false, sm_config: a.sm_config, physical_size: a.physical_size, allowed_operations: SR_OPERATIONS(),
    });
    return [ref, tx.create('PBD', { host: a.host, SR: ref, device_config: config, currently_attached: false })] as const;
  });
  try {
    await pool.createSrOn(pbd);
  } catch (e) {
    store.transact((tx) => {
      tx.delete('PBD', pbd);
      tx.delete('SR', sr);
    });
    throw e;
  }
  await plug(ctx, pbd);
  return sr;
}

function forget(ctx: CallContext, sr: Ref<'SR'>): void {
  const { store } = ctx.services;
  store.must('SR', sr);
  if (store.where('PBD', (p) => p.SR === sr && p.currently_attached).length) throw new XenApiError('SR_HAS_PBD', sr);
  store.transact((tx) => {
    for (const [ref, vdi] of store.where('VDI', (v) => v.SR === sr)) {
      for (const vbd of vdi.VBDs) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { VDI: NULL_REF, empty: true });
      tx.delete('VDI', ref);
    }
    for (const [ref] of store.where('PBD', (p) => p.SR === sr)) tx.delete('PBD', ref);
    tx.delete('SR', sr);
  });
  storageOf(ctx).forgetDriver(sr);
}

export const srHandlers: SR_handlers = {
  create,
  make: async (ctx, a) => ctx.services.store.must('SR', await create(ctx, { ...a, shared: false })).uuid,

  introduce: (ctx, a) => {
    const { store } = ctx.services;
    if (store.byUuid('SR', a.uuid)) throw new XenApiError('SR_UUID_EXISTS', a.uuid);
    if (!isSrType(a.type)) throw new XenApiError('SR_UNKNOWN_DRIVER', a.type);
    return store.transact((tx) =>
      tx.create('SR', { uuid: a.uuid, name_label: a.name_label, name_description: a.name_description, type: a.type, content_type: a.content_type, shared: a.shared, sm_config: a.sm_config }),
    );
  },

  forget: (ctx, a) => forget(ctx, a.sr),

  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    store.must('SR', a.sr);
    if (store.where('PBD', (p) => p.SR === a.sr && p.currently_attached).length) throw new XenApiError('SR_HAS_PBD', a.sr);
    assertNoVdiInUse(ctx, a.sr, 'destroy');
    const driver = storageOf(ctx).driverFor(a.sr);
    try {
      await driver.destroy();
    } catch (e) {
      throw storageError(e);
    }
    forget(ctx, a.sr);
  },

  scan: (ctx, a) => storageOf(ctx).scan(a.sr),
  update: (ctx, a) => storageOf(ctx).update(a.sr),
  get_supported_types: () => [...SR_TYPE_NAMES],

  probe: async (_ctx, a) => {
    const config = a.device_config;
    const dir = config.location ?? config.path;
    if (!dir) throw new XenApiError('SR_BACKEND_FAILURE', 'SR_BACKEND_FAILURE_LOCATION', '', 'device-config:location is required');
    let found: string[];
    try {
      found = await probeFileSrs(dir, config.location ? 'location' : 'path');
    } catch (e) {
      throw storageError(e);
    }
    return `<?xml version="1.0" ?><SRlist>${found.map((uuid) => `<SR><UUID>${uuid}</UUID><type>${escapeXml(a.type)}</type></SR>`).join('')}</SRlist>`;
  },

  set_name_label: setField('SR', 'name_label'),
  set_name_description: setField('SR', 'name_description'),
  set_shared: setField('SR', 'shared'),
  set_physical_size: setField('SR', 'physical_size'),
  forget_data_source_archives: notImplemented,
  query_data_source: notImplemented,
  record_data_source: notImplemented,
  get_data_sources: notImplemented,
  disable_database_replication: notImplemented,
  enable_database_replication: notImplemented,
  assert_supports_database_replication: notImplemented,
  assert_can_host_ha_statefile: notImplemented,
  create_new_blob: notImplemented,
  probe_ext: notImplemented,
};

export const pbdHandlers: PBD_handlers = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const { SR: sr = NULL_REF, host = NULL_REF, device_config = {}, other_config = {} } = a.args;
    store.must('SR', sr);
    const existing = store.where('PBD', (p) => p.SR === sr && p.host === host)[0];
    if (existing) throw new XenApiError('PBD_EXISTS', sr, host, existing[0]);
    return store.transact((tx) => tx.create('PBD', { host, SR: sr, device_config, other_config }));
  },
  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const rec = store.must('PBD', a.self);
    if (rec.currently_attached) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the PBD is plugged: unplug it first');
    store.transact((tx) => tx.delete('PBD', a.self));
  },
  plug: (ctx, a) => plug(ctx, a.self),
  unplug: async (ctx, a) => {
    const { store } = ctx.services;
    const rec = store.must('PBD', a.self);
    if (!rec.currently_attached) return;
    assertNoVdiInUse(ctx, rec.SR, 'unplug');
    if (rec.host !== ctx.services.hostRef()) return poolFor(ctx, rec.host).unplugOn(a.self);
    await storageOf(ctx).driverFor(rec.SR).detach();
    store.transact((tx) => tx.update('PBD', a.self, { currently_attached: false }));
  },
  set_device_config: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('PBD', a.self, { device_config: a.value }));
    storageOf(ctx).forgetDriver(ctx.services.store.must('PBD', a.self).SR);
  },
};
