/** SR and PBD: creating, plugging, scanning, forgetting and destroying storage. */
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Args, CallContext, HandlerTable } from './context.ts';
import { setField } from './generic.ts';
import { makeDriver, SR_TYPES, storageError, type Storage } from './sr-drivers.ts';

export function storageOf(ctx: CallContext): Storage {
  const s = ctx.services.ext.storage as Storage | undefined;
  if (!s) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
  return s;
}

const srArg = (a: Args): string => (a.sr ?? a.self) as string;

async function plug(ctx: CallContext, pbd: string): Promise<void> {
  const { store } = ctx.services;
  const rec = store.must('PBD', pbd);
  if (rec.currently_attached) return;
  const storage = storageOf(ctx);
  storage.forgetDriver(String(rec.SR));
  try {
    await storage.driverFor(String(rec.SR)).attach();
  } catch (e) {
    throw storageError(e);
  }
  store.transact((tx) => tx.update('PBD', pbd, { currently_attached: true }));
  await storage.scan(String(rec.SR));
}

function assertNoVdiInUse(ctx: CallContext, sr: string, op: string): void {
  const storage = storageOf(ctx);
  for (const [ref] of ctx.services.store.where('VDI', (v) => v.SR === sr)) {
    if (storage.inUse(ref)) throw new XenApiError('VDI_IN_USE', ref, op);
  }
}

/** SR.create and SR.make: make the storage, the SR record and this host's PBD, plugged. */
async function create(ctx: CallContext, a: Args): Promise<string> {
  const { store } = ctx.services;
  const type = String(a.type);
  if (!(SR_TYPES as readonly string[]).includes(type)) throw new XenApiError('SR_UNKNOWN_DRIVER', type);
  if (a.host !== ctx.services.hostRef()) throw new XenApiError('HOST_OFFLINE', String(a.host));
  const { randomUUID } = await import('node:crypto');
  const uuid = randomUUID();
  const config = { ...(a.device_config as Record<string, string>) };
  const driver = makeDriver(type, uuid, config, ctx.services.dataDir);
  try {
    await driver.create();
  } catch (e) {
    throw storageError(e);
  }
  const sr = store.transact((tx) => {
    const ref = tx.create('SR', {
      uuid, name_label: a.name_label, name_description: a.name_description, type, content_type: a.content_type,
      shared: a.shared === true || driver.shared, sm_config: a.sm_config ?? {}, physical_size: Number(a.physical_size ?? 0),
      allowed_operations: ['scan', 'destroy', 'forget', 'plug', 'unplug', 'update', 'vdi_create', 'vdi_destroy', 'vdi_resize', 'vdi_clone', 'vdi_snapshot'],
    });
    tx.create('PBD', { host: a.host, SR: ref, device_config: config, currently_attached: false });
    return ref;
  });
  const [pbd] = store.where('PBD', (p) => p.SR === sr).map(([r]) => r);
  await plug(ctx, pbd);
  return sr;
}

export const srHandlers: HandlerTable = {
  create,
  make: async (ctx, a) => String(ctx.services.store.must('SR', await create(ctx, a)).uuid),

  introduce: (ctx, a) => {
    const { store } = ctx.services;
    if (store.byUuid('SR', String(a.uuid))) throw new XenApiError('SR_UUID_EXISTS', String(a.uuid));
    if (!(SR_TYPES as readonly string[]).includes(String(a.type))) throw new XenApiError('SR_UNKNOWN_DRIVER', String(a.type));
    return store.transact((tx) =>
      tx.create('SR', { uuid: a.uuid, name_label: a.name_label, name_description: a.name_description, type: a.type, content_type: a.content_type, shared: a.shared, sm_config: a.sm_config }),
    );
  },

  forget: (ctx, a) => {
    const { store } = ctx.services;
    const sr = srArg(a);
    store.must('SR', sr);
    if (store.where('PBD', (p) => p.SR === sr && p.currently_attached === true).length) throw new XenApiError('SR_HAS_PBD', sr);
    store.transact((tx) => {
      for (const [ref] of store.where('VDI', (v) => v.SR === sr)) {
        for (const vbd of (store.get('VDI', ref)!.VBDs as string[])) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { VDI: NULL_REF, empty: true });
        tx.delete('VDI', ref);
      }
      for (const [ref] of store.where('PBD', (p) => p.SR === sr)) tx.delete('PBD', ref);
      tx.delete('SR', sr);
    });
    storageOf(ctx).forgetDriver(sr);
  },

  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const sr = srArg(a);
    store.must('SR', sr);
    if (store.where('PBD', (p) => p.SR === sr && p.currently_attached === true).length) throw new XenApiError('SR_HAS_PBD', sr);
    assertNoVdiInUse(ctx, sr, 'destroy');
    const driver = storageOf(ctx).driverFor(sr);
    try {
      await driver.destroy();
    } catch (e) {
      throw storageError(e);
    }
    await srHandlers.forget(ctx, a);
  },

  scan: (ctx, a) => storageOf(ctx).scan(srArg(a)),
  update: (ctx, a) => storageOf(ctx).update(srArg(a)),
  get_supported_types: () => [...SR_TYPES],

  probe: async (_ctx, a) => {
    const type = String(a.type);
    const config = a.device_config as Record<string, string>;
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const dir = config.location ?? config.path;
    if (!dir) throw new XenApiError('SR_BACKEND_FAILURE', 'SR_BACKEND_FAILURE_LOCATION', '', 'device-config:location is required');
    const found = await readFile(join(dir, '.xenon-sr'), 'utf8').then((s) => s.trim()).catch(() => '');
    return `<?xml version="1.0" ?><SRlist>${found ? `<SR><UUID>${found}</UUID><type>${type}</type></SR>` : ''}</SRlist>`;
  },

  set_name_label: setField('name_label'),
  set_name_description: setField('name_description'),
  set_shared: setField('shared'),
  set_physical_size: setField('physical_size'),
};

export const pbdHandlers: HandlerTable = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const args = a.args as Record<string, unknown>;
    const sr = String(args.SR);
    store.must('SR', sr);
    const existing = store.where('PBD', (p) => p.SR === sr && p.host === args.host)[0];
    if (existing) throw new XenApiError('PBD_EXISTS', sr, String(args.host), existing[0]);
    return store.transact((tx) => tx.create('PBD', { host: args.host, SR: sr, device_config: args.device_config ?? {}, other_config: args.other_config ?? {} }));
  },
  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const rec = store.must('PBD', a.self as string);
    if (rec.currently_attached) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the PBD is plugged: unplug it first');
    store.transact((tx) => tx.delete('PBD', a.self as string));
  },
  plug: (ctx, a) => plug(ctx, a.self as string),
  unplug: async (ctx, a) => {
    const { store } = ctx.services;
    const rec = store.must('PBD', a.self as string);
    if (!rec.currently_attached) return;
    assertNoVdiInUse(ctx, String(rec.SR), 'unplug');
    await storageOf(ctx).driverFor(String(rec.SR)).detach();
    store.transact((tx) => tx.update('PBD', a.self as string, { currently_attached: false }));
  },
  set_device_config: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('PBD', a.self as string, { device_config: a.value }));
    storageOf(ctx).forgetDriver(String(ctx.services.store.must('PBD', a.self as string).SR));
  },
};
