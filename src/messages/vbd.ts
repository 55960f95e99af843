/** VBD: connecting disks and CD drives to VMs, hot-plug, insert and eject. */
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { DbRecord } from '../db/store.ts';
import type { Args, CallContext, HandlerTable } from './context.ts';
import { creatableFields } from './generic.ts';
import { xenopsOf } from './vm.ts';

const vbdArg = (a: Args): string => (a.vbd ?? a.self) as string;

function vmOf(ctx: CallContext, vbd: DbRecord): DbRecord {
  return ctx.services.store.must('VM', String(vbd.VM));
}

const running = (vm: DbRecord): boolean => vm.power_state === 'Running' || vm.power_state === 'Paused';

export const vbdHandlers: HandlerTable = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const f = creatableFields('VBD', a.args as Args);
    const vm = store.must('VM', String(f.VM ?? NULL_REF));
    const cd = f.type === 'CD';
    const empty = f.empty === true;
    if (cd && f.mode === 'RW') throw new XenApiError('VBD_CDS_MUST_BE_READONLY');
    if (empty && !cd) throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', 'new VBD');
    if (!empty) {
      const vdi = store.must('VDI', String(f.VDI ?? NULL_REF));
      if (vdi.read_only === true && f.mode === 'RW') throw new XenApiError('VDI_READONLY', String(f.VDI));
    }
    const used = new Set((vm.VBDs as string[]).map((r) => String(store.get('VBD', r)?.userdevice)));
    let userdevice = String(f.userdevice ?? 'autodetect');
    if (userdevice === 'autodetect' || userdevice === '') userdevice = String([...Array(16).keys()].find((i) => !used.has(String(i))) ?? 16);
    else if (used.has(userdevice)) throw new XenApiError('DEVICE_ALREADY_EXISTS', userdevice);
    return store.transact((tx) =>
      tx.create('VBD', { ...f, userdevice, empty, VDI: empty ? NULL_REF : f.VDI, mode: cd ? 'RO' : f.mode ?? 'RW', currently_attached: false, allowed_operations: ['attach'] }),
    );
  },

  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const vbd = store.must('VBD', vbdArg(a));
    if (vbd.currently_attached && running(vmOf(ctx, vbd))) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the VBD is plugged into a running VM: unplug it first');
    store.transact((tx) => tx.delete('VBD', vbdArg(a)));
  },

  plug: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = vbdArg(a);
    const vbd = store.must('VBD', ref);
    const vm = vmOf(ctx, vbd);
    if (!running(vm)) throw new XenApiError('VM_BAD_POWER_STATE', String(vbd.VM), 'running', String(vm.power_state).toLowerCase());
    if (vbd.currently_attached) throw new XenApiError('DEVICE_ALREADY_ATTACHED', ref);
    const x = xenopsOf(ctx);
    const disk = await x.diskFor(ref);
    await x.backend.plugDisk(String(vm.uuid), disk!);
    store.transact((tx) => tx.update('VBD', ref, { currently_attached: true }));
  },

  unplug: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = vbdArg(a);
    const vbd = store.must('VBD', ref);
    const vm = vmOf(ctx, vbd);
    if (!vbd.currently_attached || !running(vm)) throw new XenApiError('DEVICE_ALREADY_DETACHED', ref);
    if (vbd.unpluggable === false) throw new XenApiError('VBD_NOT_UNPLUGGABLE', ref);
    await xenopsOf(ctx).backend.unplugDisk(String(vm.uuid), String(vbd.uuid));
    store.transact((tx) => tx.update('VBD', ref, { currently_attached: false }));
    if (vbd.VDI !== NULL_REF) await (ctx.services.ext.disks as { detach(v: string): Promise<void> } | undefined)?.detach(String(vbd.VDI));
  },

  unplug_force: (ctx, a) => vbdHandlers.unplug(ctx, a),

  insert: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = vbdArg(a);
    const vbd = store.must('VBD', ref);
    if (vbd.type !== 'CD') throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', ref);
    if (!vbd.empty) throw new XenApiError('VBD_NOT_EMPTY', ref);
    store.must('VDI', a.vdi as string);
    store.transact((tx) => tx.update('VBD', ref, { VDI: a.vdi, empty: false }));
    const vm = vmOf(ctx, vbd);
    if (running(vm) && vbd.currently_attached) {
      const disk = await xenopsOf(ctx).diskFor(ref);
      await xenopsOf(ctx).backend.insertCd(String(vm.uuid), String(vbd.uuid), disk?.path ?? null, disk?.format);
    }
  },

  eject: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = vbdArg(a);
    const vbd = store.must('VBD', ref);
    if (vbd.type !== 'CD') throw new XenApiError('VBD_NOT_REMOVABLE_MEDIA', ref);
    if (vbd.empty) throw new XenApiError('VBD_IS_EMPTY', ref);
    const vm = vmOf(ctx, vbd);
    if (running(vm) && vbd.currently_attached) await xenopsOf(ctx).backend.insertCd(String(vm.uuid), String(vbd.uuid), null);
    store.transact((tx) => tx.update('VBD', ref, { VDI: NULL_REF, empty: true }));
  },

  assert_attachable: (ctx, a) => {
    const vbd = ctx.services.store.must('VBD', vbdArg(a));
    if (!vbd.empty) ctx.services.store.must('VDI', String(vbd.VDI));
  },

  set_mode: (ctx, a) => {
    const vbd = ctx.services.store.must('VBD', vbdArg(a));
    if (vbd.type === 'CD' && a.value === 'RW') throw new XenApiError('VBD_CDS_MUST_BE_READONLY');
    ctx.services.store.transact((tx) => tx.update('VBD', vbdArg(a), { mode: a.value }));
  },
};
