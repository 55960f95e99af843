/** VDI: creating, resizing, snapshotting, cloning and copying virtual disks. */
import { isUuid } from '../storage/sr/names.ts';
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import type { Patch } from '../db/store.ts';
import { notImplemented, type CallContext } from './context.ts';
import { creatable, setField } from './generic.ts';
import type { VDI_handlers } from './generated/handlers.ts';
import { storageOf } from './sr.ts';
import { FILE_VDI_MAX, storageError, VHD_MAX } from './sr-drivers.ts';
import { exportSource } from './vdi-export-source.ts';
import { transferError, writeImage } from './vdi-import-sink.ts';

function assertNotInUse(ctx: CallContext, vdi: string, op: string): void {
  if (storageOf(ctx).inUse(vdi)) throw new XenApiError('VDI_IN_USE', vdi, op);
}

function assertManaged(ctx: CallContext, vdi: string): void {
  const rec = ctx.services.store.must('VDI', vdi);
  if (rec.managed !== true) throw new XenApiError('VDI_NOT_MANAGED', vdi);
}

/** Makes a new VDI in an SR: an empty thin image plus its record. */
export async function createVdi(ctx: CallContext, sr: string, size: number, fields: Patch<'VDI'>): Promise<Ref<'VDI'>> {
  const storage = storageOf(ctx);
  const driver = storage.attachedDriver(sr);
  if (!driver.capabilities.includes('VDI_CREATE')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
  if (!Number.isFinite(size) || size <= 0) throw new XenApiError('INVALID_VALUE', 'virtual_size', String(size));
  // file SRs go past VHD's 2 TiB with qcow2 (chosen above it, or asked for with sm_config:type=qcow2)
  if (size > driver.maxVolumeSize) throw new XenApiError('INVALID_VALUE', 'virtual_size', String(size));
  const asked = fields.sm_config?.type ?? '';
  if (asked !== '' && asked !== 'qcow2' && asked !== 'vhd') throw new XenApiError('INVALID_VALUE', 'sm_config:type', asked);
  if (asked === 'vhd' && size > VHD_MAX) throw new XenApiError('VDI_TOO_LARGE' as never, 'VDI', String(VHD_MAX));
  const uuid = randomUUID();
  let v;
  try {
    v = await driver.createVolume(uuid, size, asked === '' ? undefined : asked);
  } catch (e) {
    throw storageError(e);
  }
  const ref = storage.recordVolume(sr, v, fields);
  await storage.update(sr);
  return ref;
}

/** Deletes a VDI's image and record, with its unplugged VBDs. */
export async function destroyVdi(ctx: CallContext, vdi: string): Promise<void> {
  const { store } = ctx.services;
  const rec = store.must('VDI', vdi);
  assertNotInUse(ctx, vdi, 'destroy');
  const storage = storageOf(ctx);
  const sr = rec.SR;
  const driver = storage.attachedDriver(sr);
  const children = store.where('VDI', (v) => v.SR === sr && v.sm_config['vhd-parent'] === rec.uuid);
  if (children.length > 0) {
    // others are built on this image: it stays as a hidden base until the collector folds it
    store.transact((tx) => tx.update('VDI', vdi, { managed: false, name_label: 'base copy', read_only: true }));
  } else {
    try {
      await driver.deleteVolume(rec.uuid);
    } catch (e) {
      throw storageError(e, vdi);
    }
    store.transact((tx) => {
      for (const vbd of rec.VBDs) if (tx.get('VBD', vbd)) tx.delete('VBD', vbd);
      for (const s of rec.snapshots) if (tx.get('VDI', s)) tx.update('VDI', s, { snapshot_of: NULL_REF });
      tx.delete('VDI', vdi);
    });
  }
  await storage.update(sr);
}

/** A snapshot of a disk: a new leaf on the same chain, marked as a snapshot of it. */
export function snapshotVdi(ctx: CallContext, vdi: Ref<'VDI'>): Promise<Ref<'VDI'>> {
  assertManaged(ctx, vdi);
  return storageOf(ctx).branch(vdi, { is_a_snapshot: true, snapshot_of: vdi, snapshot_time: formatDateTime(new Date()), read_only: false });
}

/** A writable clone of a disk, sharing its chain. */
export function cloneVdi(ctx: CallContext, vdi: Ref<'VDI'>): Promise<Ref<'VDI'>> {
  assertManaged(ctx, vdi);
  return storageOf(ctx).branch(vdi, { is_a_snapshot: false });
}

/** A full, independent copy of a disk into an SR. */
export async function copyVdi(ctx: CallContext, vdi: Ref<'VDI'>, sr: Ref<'SR'>): Promise<Ref<'VDI'>> {
  const rec = ctx.services.store.must('VDI', vdi);
  const storage = storageOf(ctx);
  const src = storage.attachedDriver(rec.SR);
  const dst = storage.attachedDriver(sr);
  if (!dst.capabilities.includes('VDI_CREATE')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
  const fields = { name_label: rec.name_label, name_description: rec.name_description, type: rec.type, sharable: rec.sharable, other_config: rec.other_config };
  if (storage.storageHost(rec.SR) !== storage.storageHost(sr)) return copyAcrossHosts(ctx, vdi, sr, fields);
  const uuid = randomUUID();
  let v;
  try {
    v = await src.copyVolume(rec.uuid, dst, uuid, (f: number) => ctx.task?.progress(f));
  } catch (e) {
    throw storageError(e, vdi);
  }
  const ref = storage.recordVolume(sr, v, fields);
  await storage.update(sr);
  return ref;
}

/**
 * A copy between SRs whose files are on different hosts (a member's local SR
 * and a shared or another host's SR): a new image of the same format and size
 * on the destination, recorded first (a member writes only into images of its
 * records), then the source's contents streamed into it, as an export and an
 * import would; undone if that fails.
 */
async function copyAcrossHosts(ctx: CallContext, vdi: Ref<'VDI'>, sr: Ref<'SR'>, fields: Patch<'VDI'>): Promise<Ref<'VDI'>> {
  const { services } = ctx;
  const rec = services.store.must('VDI', vdi);
  const storage = storageOf(ctx);
  const [from, to] = [storage.storageHost(rec.SR), storage.storageHost(sr)];
  const pool = services.pool;
  if (!pool) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
  const src = storage.attachedDriver(rec.SR);
  const dst = storage.attachedDriver(sr);
  let ref: Ref<'VDI'>;
  try {
    const info = await src.info(rec.uuid);
    const asked = info.format === 'qcow2' || info.virtualSize > VHD_MAX ? 'qcow2' : undefined;
    const v = await dst.createVolume(randomUUID(), info.virtualSize, asked);
    ref = storage.recordVolume(sr, v, fields);
  } catch (e) {
    throw storageError(e, vdi);
  }
  const uuid = services.store.must('VDI', ref).uuid;
  try {
    await storage.usingImagesOf([rec.SR, sr], async () => {
      const here = services.hostRef();
      const ask = { sr: rec.SR, uuid: rec.uuid, format: 'raw' as const };
      const { stream } = from === here ? await exportSource(storage.imageDriver(rec.SR), rec.uuid, vdi, 'raw') : await pool.exportOn(from, ask);
      if (to === here) await writeImage(storage.imageDriver(sr), uuid, 'raw', stream);
      else await pool.importOn(to, { sr, uuid, format: 'raw' }, stream);
    });
  } catch (e) {
    await dst.deleteVolume(uuid).catch(() => undefined);
    services.store.transact((tx) => tx.delete('VDI', ref));
    throw transferError(e, vdi);
  }
  await storage.refreshVolume(ref);
  await storage.update(sr);
  return ref;
}

export const vdiHandlers: VDI_handlers = {
  create: (ctx, a) => {
    const { SR: sr = NULL_REF, virtual_size: size = 0, ...rest } = creatable('VDI', a.args);
    ctx.services.store.must('SR', sr);
    return createVdi(ctx, sr, size, rest);
  },
  destroy: (ctx, a) => destroyVdi(ctx, a.self),

  resize: async (ctx, a) => {
    const { vdi, size } = a;
    assertManaged(ctx, vdi);
    assertNotInUse(ctx, vdi, 'resize');
    const rec = ctx.services.store.must('VDI', vdi);
    if (size < rec.virtual_size) throw new XenApiError('VDI_TOO_SMALL', vdi, String(rec.virtual_size));
    const storage = storageOf(ctx);
    const qcow2 = rec.sm_config.vdi_type === 'qcow2';
    if (size > (qcow2 ? FILE_VDI_MAX : VHD_MAX)) throw new XenApiError('INVALID_VALUE', 'size', String(size));
    try {
      await storage.attachedDriver(rec.SR).resizeVolume(rec.uuid, size);
    } catch (e) {
      throw storageError(e, vdi);
    }
    await storage.refreshVolume(vdi);
    await storage.update(rec.SR);
  },

  snapshot: (ctx, a) => snapshotVdi(ctx, a.vdi),
  clone: (ctx, a) => cloneVdi(ctx, a.vdi),
  copy: (ctx, a) => {
    if (a.into_vdi !== NULL_REF) throw new XenApiError('NOT_IMPLEMENTED', 'VDI.copy into an existing VDI');
    return copyVdi(ctx, a.vdi, a.sr);
  },

  introduce: async (ctx, a) => {
    const { store } = ctx.services;
    const { SR: sr, uuid } = a;
    const storage = storageOf(ctx);
    // the uuid names the image's file: only a well-formed one may reach the SR
    if (!isUuid(uuid)) throw new XenApiError('UUID_INVALID', 'VDI', uuid);
    if (store.byUuid('VDI', uuid)) throw new XenApiError('DB_UNIQUENESS_CONSTRAINT_VIOLATION', 'VDI', 'uuid', uuid);
    let v;
    try {
      v = await storage.attachedDriver(sr).info(uuid);
    } catch (e) {
      throw storageError(e);
    }
    return storage.recordVolume(sr, v, { name_label: a.name_label, name_description: a.name_description, type: a.type, sharable: a.sharable, read_only: a.read_only, other_config: a.other_config, managed: a.managed });
  },

  forget: (ctx, a) => {
    assertNotInUse(ctx, a.vdi, 'forget');
    ctx.services.store.transact((tx) => tx.delete('VDI', a.vdi));
  },

  update: (ctx, a) => storageOf(ctx).refreshVolume(a.vdi),

  set_on_boot: async (ctx, a) => {
    const vdi = a.self;
    const rec = ctx.services.store.must('VDI', vdi);
    assertNotInUse(ctx, vdi, 'set_on_boot');
    if (a.value === 'reset' && !rec.sm_config['vhd-parent']) {
      // reset-on-boot needs a base to go back to: freeze the current contents as one
      const storage = storageOf(ctx);
      const baseUuid = randomUUID();
      try {
        await storage.attachedDriver(rec.SR).branch(rec.uuid, [], baseUuid);
      } catch (e) {
        throw storageError(e, vdi);
      }
      await storage.scan(rec.SR);
    }
    ctx.services.store.transact((tx) => tx.update('VDI', vdi, { on_boot: a.value }));
  },

  set_name_label: setField('VDI', 'name_label'),
  set_name_description: setField('VDI', 'name_description'),
  set_read_only: setField('VDI', 'read_only'),
  set_sharable: setField('VDI', 'sharable'),
  set_allow_caching: setField('VDI', 'allow_caching'),
  get_nbd_info: notImplemented,
  list_changed_blocks: notImplemented,
  data_destroy: notImplemented,
  disable_cbt: notImplemented,
  enable_cbt: notImplemented,
  pool_migrate: notImplemented,
  read_database_pool_uuid: notImplemented,
  open_database: notImplemented,
};
