/** VDI: creating, resizing, snapshotting, cloning and copying virtual disks. */
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Args, CallContext, HandlerTable } from './context.ts';
import { creatableFields, setField } from './generic.ts';
import { storageOf } from './sr.ts';
import { FileSr } from '../storage/sr/file.ts';
import { FILE_VDI_MAX, storageError, VHD_MAX } from './sr-drivers.ts';

const vdiArg = (a: Args): string => (a.vdi ?? a.self) as string;

function assertNotInUse(ctx: CallContext, vdi: string, op: string): void {
  if (storageOf(ctx).inUse(vdi)) throw new XenApiError('VDI_IN_USE', vdi, op);
}

function assertManaged(ctx: CallContext, vdi: string): void {
  const rec = ctx.services.store.must('VDI', vdi);
  if (rec.managed !== true) throw new XenApiError('VDI_NOT_MANAGED', vdi);
}

/** Makes a new VDI in an SR: an empty thin image plus its record. */
export async function createVdi(ctx: CallContext, sr: string, size: number, fields: Record<string, unknown>): Promise<string> {
  const storage = storageOf(ctx);
  const driver = storage.attachedDriver(sr);
  if (!driver.capabilities.includes('VDI_CREATE')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
  if (!Number.isFinite(size) || size <= 0) throw new XenApiError('INVALID_VALUE', 'virtual_size', String(size));
  // file SRs go past VHD's 2 TiB with qcow2 (chosen above it, or asked for with sm_config:type=qcow2)
  const max = driver instanceof FileSr ? FILE_VDI_MAX : VHD_MAX;
  if (size > max) throw new XenApiError('INVALID_VALUE', 'virtual_size', String(size));
  const asked = String((fields.sm_config as Record<string, string> | undefined)?.type ?? '');
  if (asked && asked !== 'qcow2' && asked !== 'vhd') throw new XenApiError('INVALID_VALUE', 'sm_config:type', asked);
  if (asked === 'vhd' && size > VHD_MAX) throw new XenApiError('VDI_TOO_LARGE' as never, 'VDI', String(VHD_MAX));
  const uuid = randomUUID();
  let v;
  try {
    v = driver instanceof FileSr ? await driver.createVolume(uuid, size, (asked || undefined) as 'vhd' | 'qcow2' | undefined) : await driver.createVolume(uuid, size);
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
  const sr = String(rec.SR);
  const driver = storage.attachedDriver(sr);
  const children = store.where('VDI', (v) => v.SR === sr && (v.sm_config as Record<string, string>)['vhd-parent'] === rec.uuid);
  if (children.length > 0) {
    // others are built on this image: it stays as a hidden base until the collector folds it
    store.transact((tx) => tx.update('VDI', vdi, { managed: false, name_label: 'base copy', read_only: true }));
  } else {
    try {
      await driver.deleteVolume(String(rec.uuid));
    } catch (e) {
      throw storageError(e, vdi);
    }
    store.transact((tx) => {
      for (const vbd of rec.VBDs as string[]) if (tx.get('VBD', vbd)) tx.delete('VBD', vbd);
      for (const s of rec.snapshots as string[]) if (tx.get('VDI', s)) tx.update('VDI', s, { snapshot_of: NULL_REF });
      tx.delete('VDI', vdi);
    });
  }
  await storage.update(sr);
}

export const vdiHandlers: HandlerTable = {
  create: (ctx, a) => {
    const args = a.args as Record<string, unknown>;
    const fields = creatableFields('VDI', args);
    const sr = String(fields.SR ?? NULL_REF);
    ctx.services.store.must('SR', sr);
    const { SR: _sr, virtual_size: size, ...rest } = fields;
    return createVdi(ctx, sr, Number(size), rest);
  },
  destroy: (ctx, a) => destroyVdi(ctx, vdiArg(a)),

  resize: async (ctx, a) => {
    const vdi = vdiArg(a);
    assertManaged(ctx, vdi);
    assertNotInUse(ctx, vdi, 'resize');
    const rec = ctx.services.store.must('VDI', vdi);
    const size = Number(a.size);
    if (size < Number(rec.virtual_size)) throw new XenApiError('VDI_TOO_SMALL', vdi, String(rec.virtual_size));
    const storage = storageOf(ctx);
    const qcow2 = (rec.sm_config as Record<string, string>).vdi_type === 'qcow2';
    if (size > (qcow2 ? FILE_VDI_MAX : VHD_MAX)) throw new XenApiError('INVALID_VALUE', 'size', String(size));
    try {
      await storage.attachedDriver(String(rec.SR)).resizeVolume(String(rec.uuid), size);
    } catch (e) {
      throw storageError(e, vdi);
    }
    await storage.refreshVolume(vdi);
    await storage.update(String(rec.SR));
  },

  snapshot: (ctx, a) => {
    const vdi = vdiArg(a);
    assertManaged(ctx, vdi);
    return storageOf(ctx).branch(vdi, { is_a_snapshot: true, snapshot_of: vdi, snapshot_time: formatDateTime(new Date()), read_only: false });
  },

  clone: (ctx, a) => {
    const vdi = vdiArg(a);
    assertManaged(ctx, vdi);
    return storageOf(ctx).branch(vdi, { is_a_snapshot: false });
  },

  copy: async (ctx, a) => {
    const { store } = ctx.services;
    const vdi = vdiArg(a);
    const rec = store.must('VDI', vdi);
    const storage = storageOf(ctx);
    const src = storage.attachedDriver(String(rec.SR));
    const intoVdi = a.into_vdi as string | undefined;
    if (intoVdi && intoVdi !== NULL_REF) throw new XenApiError('NOT_IMPLEMENTED', 'VDI.copy into an existing VDI');
    const sr = a.sr as string;
    const dst = storage.attachedDriver(sr);
    if (!dst.capabilities.includes('VDI_CREATE')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
    const uuid = randomUUID();
    let v;
    try {
      v = await src.copyVolume(String(rec.uuid), dst, uuid, (f) => ctx.task?.progress(f));
    } catch (e) {
      throw storageError(e, vdi);
    }
    const ref = storage.recordVolume(sr, v, { name_label: rec.name_label, name_description: rec.name_description, type: rec.type, sharable: rec.sharable, other_config: rec.other_config });
    await storage.update(sr);
    return ref;
  },

  introduce: async (ctx, a) => {
    const { store } = ctx.services;
    const sr = a.SR as string;
    const storage = storageOf(ctx);
    const uuid = String(a.uuid);
    if (store.byUuid('VDI', uuid)) throw new XenApiError('DB_UNIQUENESS_CONSTRAINT_VIOLATION', 'VDI', 'uuid', uuid);
    let v;
    try {
      v = await storage.attachedDriver(sr).info(uuid);
    } catch (e) {
      throw storageError(e);
    }
    return storage.recordVolume(sr, v, { name_label: a.name_label, name_description: a.name_description, type: a.type, sharable: a.sharable, read_only: a.read_only, other_config: a.other_config, managed: a.managed !== false });
  },

  forget: (ctx, a) => {
    const vdi = vdiArg(a);
    assertNotInUse(ctx, vdi, 'forget');
    ctx.services.store.transact((tx) => tx.delete('VDI', vdi));
  },

  update: async (ctx, a) => {
    const vdi = vdiArg(a);
    await storageOf(ctx).refreshVolume(vdi);
  },

  set_on_boot: async (ctx, a) => {
    const vdi = vdiArg(a);
    const rec = ctx.services.store.must('VDI', vdi);
    assertNotInUse(ctx, vdi, 'set_on_boot');
    if (a.value === 'reset' && !(rec.sm_config as Record<string, string>)['vhd-parent']) {
      // reset-on-boot needs a base to go back to: freeze the current contents as one
      const storage = storageOf(ctx);
      const baseUuid = randomUUID();
      try {
        await storage.attachedDriver(String(rec.SR)).branch(String(rec.uuid), [], baseUuid);
      } catch (e) {
        throw storageError(e, vdi);
      }
      await storage.scan(String(rec.SR));
    }
    ctx.services.store.transact((tx) => tx.update('VDI', vdi, { on_boot: a.value }));
  },

  set_name_label: setField('name_label'),
  set_name_description: setField('name_description'),
  set_read_only: setField('read_only'),
  set_sharable: setField('sharable'),
  set_allow_caching: setField('allow_caching'),
};
