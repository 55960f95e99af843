/**
 * VM operations that work on disks: snapshot, clone (fast, via chains),
 * copy (full), revert to a snapshot, and provision from a template's plan.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { getClass } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { DbRecord } from '../db/store.ts';
import type { VM_handlers } from './generated/handlers.ts';
import type { Args, CallContext } from './context.ts';
import { storageOf } from './sr.ts';
import { cloneVdi, copyVdi, createVdi, destroyVdi, snapshotVdi } from './vdi.ts';
import { allowedOperations, withOperation } from './vm-operations.ts';
import { randomMac } from './xenops.ts';

/** VM fields a copy takes over: everything a client set, none of the runtime state. */
function configOf(vm: DbRecord): Record<string, unknown> {
  const cls = getClass('VM')!;
  const out: Record<string, unknown> = {};
  for (const f of cls.fields) if (f.qualifier !== 'RO/runtime' && f.name !== 'uuid') out[f.name] = vm[f.name];
  return out;
}

type DiskAction = (ctx: CallContext, vdi: string) => Promise<string>;

/**
 * A new VM made from `src`: its record, VIFs, and for each disk VBD a VDI
 * made by `disk`; CD drives keep their media.
 */
async function copyVm(ctx: CallContext, src: string, fields: Record<string, unknown>, disk: DiskAction, freshMacs: boolean, ignoreVdis: readonly string[] = []): Promise<string> {
  const { store } = ctx.services;
  const vm = store.must('VM', src);
  const vbds = (vm.VBDs as string[]).map((r) => [r, store.must('VBD', r)] as const).filter(([, v]) => !ignoreVdis.includes(String(v.VDI)));
  const newDisks = new Map<string, string>();
  for (const [ref, vbd] of vbds) {
    if (vbd.type !== 'CD' && !vbd.empty && vbd.VDI !== NULL_REF) newDisks.set(ref, await disk(ctx, String(vbd.VDI)));
  }
  return store.transact((tx) => {
    const metrics = tx.create('VM_metrics', {});
    const ref = tx.create('VM', { ...configOf(vm), power_state: 'Halted', metrics, ...fields });
    for (const [vbdRef, vbd] of vbds) {
      const vdi = newDisks.get(vbdRef) ?? vbd.VDI;
      tx.create('VBD', {
        VM: ref, VDI: vdi, userdevice: vbd.userdevice, bootable: vbd.bootable, mode: vbd.mode, type: vbd.type,
        unpluggable: vbd.unpluggable, empty: vbd.empty, other_config: vbd.other_config, qos_algorithm_type: vbd.qos_algorithm_type, qos_algorithm_params: vbd.qos_algorithm_params,
      });
    }
    for (const vifRef of vm.VIFs as string[]) {
      const vif = tx.get('VIF', vifRef);
      if (!vif) continue;
      tx.create('VIF', {
        VM: ref, network: vif.network, device: vif.device, MAC: freshMacs ? randomMac() : vif.MAC, MTU: vif.MTU, other_config: vif.other_config,
        locking_mode: vif.locking_mode, ipv4_allowed: vif.ipv4_allowed, ipv6_allowed: vif.ipv6_allowed, qos_algorithm_type: vif.qos_algorithm_type, qos_algorithm_params: vif.qos_algorithm_params,
      });
    }
    tx.update('VM', ref, { allowed_operations: allowedOperations(tx.get('VM', ref)!) });
    return ref;
  });
}

const snapshotDisk: DiskAction = (ctx, vdi) => snapshotVdi(ctx, vdi);
const cloneDisk: DiskAction = (ctx, vdi) => cloneVdi(ctx, vdi);

const vmArg = (a: Args): string => (a.vm ?? a.self) as string;

/** Parses a template's other_config:disks plan. */
function provisionPlan(xml: string): { device: string; size: number; sr: string; bootable: boolean; type: string }[] {
  return [...xml.matchAll(/<disk\b([^>]*)\/?>/g)].map((m) => {
    const attr = (n: string): string => new RegExp(`${n}="([^"]*)"`).exec(m[1])?.[1] ?? '';
    return { device: attr('device'), size: Number(attr('size')), sr: attr('sr'), bootable: attr('bootable') === 'true', type: attr('type') || 'system' };
  });
}

export const vmStorageHandlers = {
  snapshot: (ctx, a) =>
    withOperation(ctx.services.store, vmArg(a), 'snapshot', ctx.task?.ref ?? null, (vm) =>
      copyVm(ctx, vmArg(a), {
        name_label: a.new_name, is_a_snapshot: true, snapshot_of: vmArg(a), snapshot_time: formatDateTime(new Date()),
        is_a_template: false, power_state: 'Halted', other_config: { ...(vm.other_config as object) },
      }, snapshotDisk, false, (a.ignore_vdis as string[] | undefined) ?? []),
    ),

  clone: (ctx, a) =>
    withOperation(ctx.services.store, vmArg(a), 'clone', ctx.task?.ref ?? null, () =>
      copyVm(ctx, vmArg(a), { name_label: a.new_name, is_a_snapshot: false, snapshot_of: NULL_REF, is_default_template: false }, cloneDisk, true),
    ),

  copy: (ctx, a) =>
    withOperation(ctx.services.store, vmArg(a), 'copy', ctx.task?.ref ?? null, () => {
      const target = a.sr as string;
      const copyDisk: DiskAction = async (c, vdi) => {
        const sr = target && target !== NULL_REF ? target : String(c.services.store.must('VDI', vdi).SR);
        return copyVdi(c, vdi, sr);
      };
      return copyVm(ctx, vmArg(a), { name_label: a.new_name, is_a_snapshot: false, snapshot_of: NULL_REF, is_default_template: false }, copyDisk, true);
    }),

  revert: async (ctx, a) => {
    const { store } = ctx.services;
    const snap = a.snapshot as string;
    const s = store.must('VM', snap);
    if (!s.is_a_snapshot) throw new XenApiError('VM_NOT_A_SNAPSHOT' as never, snap);
    const vm = String(s.snapshot_of);
    if (!store.get('VM', vm)) throw new XenApiError('VM_REVERT_FAILED', snap, 'the VM this snapshot was taken of is gone');
    const rec = store.must('VM', vm);
    if (rec.power_state !== 'Halted') throw new XenApiError('VM_BAD_POWER_STATE', vm, 'halted', String(rec.power_state).toLowerCase());
    // the VM's current disks go; clones of the snapshot's disks take their place
    for (const vbdRef of rec.VBDs as string[]) {
      const vbd = store.must('VBD', vbdRef);
      store.transact((tx) => tx.delete('VBD', vbdRef));
      if (vbd.type !== 'CD' && !vbd.empty && vbd.VDI !== NULL_REF && store.get('VDI', String(vbd.VDI))) await destroyVdi(ctx, String(vbd.VDI));
    }
    for (const vbdRef of s.VBDs as string[]) {
      const vbd = store.must('VBD', vbdRef);
      const vdi = vbd.type !== 'CD' && !vbd.empty && vbd.VDI !== NULL_REF ? await cloneDisk(ctx, String(vbd.VDI)) : vbd.VDI;
      store.transact((tx) => tx.create('VBD', { VM: vm, VDI: vdi, userdevice: vbd.userdevice, bootable: vbd.bootable, mode: vbd.mode, type: vbd.type, empty: vbd.empty, unpluggable: vbd.unpluggable }));
    }
    const keep = { name_label: rec.name_label, name_description: rec.name_description, is_a_snapshot: false, snapshot_of: NULL_REF, snapshot_time: rec.snapshot_time, is_a_template: false };
    store.transact((tx) => tx.update('VM', vm, { ...configOf(s), ...keep, parent: snap }));
  },

  provision: async (ctx, a) => {
    const { store } = ctx.services;
    const ref = vmArg(a);
    const vm = store.must('VM', ref);
    const plan = provisionPlan(String((vm.other_config as Record<string, string>).disks ?? ''));
    const pool = store.must('pool', ctx.services.poolRef());
    for (const d of plan) {
      const sr = d.sr ? store.byUuid('SR', d.sr) ?? NULL_REF : String(pool.default_SR);
      if (sr === NULL_REF || !store.get('SR', sr)) throw new XenApiError('VM_REQUIRES_SR', ref, d.sr || String(pool.default_SR));
      storageOf(ctx).attachedDriver(sr);
      const vdi = await createVdi(ctx, sr, d.size, { name_label: `${String(vm.name_label)} ${d.device}`, type: d.type === 'system' ? 'system' : 'user' });
      store.transact((tx) => tx.create('VBD', { VM: ref, VDI: vdi, userdevice: d.device, bootable: d.bootable, mode: 'RW', type: 'Disk', empty: false, unpluggable: true }));
    }
    const { disks: _done, ...rest } = vm.other_config as Record<string, string>;
    store.transact((tx) => tx.update('VM', ref, { other_config: rest }));
  },
} satisfies Partial<VM_handlers>;
