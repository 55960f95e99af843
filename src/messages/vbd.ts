/** VBD: connecting disks and CD drives to VMs, hot-plug, insert and eject. */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Row } from '../db/store.ts';
import type { CallContext } from './context.ts';
import { creatable } from './generic.ts';
import type { VBD_handlers } from './generated/handlers.ts';
import { xenopsOf } from './vm.ts';

function vmOf(ctx: CallContext, vbd: Row<'VBD'>): Row<'VM'> {
  return ctx.services.store.must('VM', vbd.VM);
}

const running = (vm: Row<'VM'>): boolean => vm.power_state === 'Running' || vm.power_state === 'Paused';

export const vbdHandlers: VBD_handlers = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const { VM = NULL_REF, VDI = NULL_REF, type, mode, empty = false, userdevice: asked = 'autodetect', ...rest } = creatable('VBD', a.args);
    const vm = store.must('VM', VM);
    const cd = type === 'CD';
    if (cd && mode === 'RW') throw new XenApiError('VBD_CDS_MUST_BE_READONLY');
    if (empty && !cd) throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', 'new VBD');
    if (!empty && store.must('VDI', VDI).read_only && mode === 'RW') throw new XenApiError('VDI_READONLY', VDI);
    const used = new Set(vm.VBDs.map((r) => store.get('VBD', r)?.userdevice));
    let userdevice = asked;
    if (userdevice === 'autodetect' || userdevice === '') userdevice = String([...Array(16).keys()].find((i) => !used.has(String(i))) ?? 16);
    else if (used.has(userdevice)) throw new XenApiError('DEVICE_ALREADY_EXISTS', userdevice);
    return store.transact((tx) =>
      tx.create('VBD', { ...rest, VM, type, userdevice, empty, VDI: empty ? NULL_REF : VDI, mode: cd ? 'RO' : mode ?? 'RW', currently_attached: false, allowed_operations: ['attach'] }),
    );
  },

  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const vbd = store.must('VBD', a.self);
    if (vbd.currently_attached && running(vmOf(ctx, vbd))) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the VBD is plugged into a running VM: unplug it first');
    store.transact((tx) => tx.delete('VBD', a.self));
  },

  plug: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = a.self;
    const vbd = store.must('VBD', ref);
    const vm = vmOf(ctx, vbd);
    if (!running(vm)) throw new XenApiError('VM_BAD_POWER_STATE', vbd.VM, 'running', vm.power_state.toLowerCase());
    if (vbd.currently_attached) throw new XenApiError('DEVICE_ALREADY_ATTACHED', ref);
    const x = xenopsOf(ctx);
    const disk = await x.diskFor(ref);
    if (!disk) throw new XenApiError('VBD_IS_EMPTY', ref);
    await x.backend.plugDisk(vm.uuid, disk);
    store.transact((tx) => tx.update('VBD', ref, { currently_attached: true }));
  },

  unplug: (ctx, a) => unplug(ctx, a.self),
  unplug_force: (ctx, a) => unplug(ctx, a.self),

  insert: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = a.vbd;
    const vbd = store.must('VBD', ref);
    if (vbd.type !== 'CD') throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', ref);
    if (!vbd.empty) throw new XenApiError('VBD_NOT_EMPTY', ref);
    store.must('VDI', a.vdi);
    store.transact((tx) => tx.update('VBD', ref, { VDI: a.vdi, empty: false }));
    const vm = vmOf(ctx, vbd);
    if (running(vm) && vbd.currently_attached) {
      const disk = await xenopsOf(ctx).diskFor(ref);
      await xenopsOf(ctx).backend.insertCd(vm.uuid, vbd.uuid, disk?.path ?? null, disk?.format);
    }
  },

  eject: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = a.vbd;
    const vbd = store.must('VBD', ref);
    if (vbd.type !== 'CD') throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', ref);
    if (vbd.empty) throw new XenApiError('VBD_IS_EMPTY', ref);
    const vm = vmOf(ctx, vbd);
    if (running(vm) && vbd.currently_attached) await xenopsOf(ctx).backend.insertCd(vm.uuid, vbd.uuid, null);
    store.transact((tx) => tx.update('VBD', ref, { VDI: NULL_REF, empty: true }));
  },

  assert_attachable: (ctx, a) => {
    const vbd = ctx.services.store.must('VBD', a.self);
    if (!vbd.empty) ctx.services.store.must('VDI', vbd.VDI);
  },

  set_mode: (ctx, a) => {
    const vbd = ctx.services.store.must('VBD', a.self);
    if (vbd.type === 'CD' && a.value === 'RW') throw new XenApiError('VBD_CDS_MUST_BE_READONLY');
    ctx.services.store.transact((tx) => tx.update('VBD', a.self, { mode: a.value }));
  },
};

async function unplug(ctx: CallContext, ref: Ref<'VBD'>): Promise<void> {
  const { store } = ctx.services;
  const vbd = store.must('VBD', ref);
  const vm = vmOf(ctx, vbd);
  if (!vbd.currently_attached || !running(vm)) throw new XenApiError('DEVICE_ALREADY_DETACHED', ref);
  if (!vbd.unpluggable) throw new XenApiError('VBD_NOT_UNPLUGGABLE', ref);
  await xenopsOf(ctx).backend.unplugDisk(vm.uuid, vbd.uuid);
  store.transact((tx) => tx.update('VBD', ref, { currently_attached: false }));
  if (vbd.VDI !== NULL_REF) await ctx.services.storage?.detach(vbd.VDI);
}
