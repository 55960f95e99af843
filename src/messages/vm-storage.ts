/**
 * VM operations that work on disks: snapshot, clone (fast, via chains),
 * copy (full), revert to a snapshot, and provision from a template's plan.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { getClass } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Enum_vdi_type } from '../datamodel/generated/records.ts';
import type { DbRecord } from '../db/store.ts';
import type { VM_handlers } from './generated/handlers.ts';
import type { Args, CallContext } from './context.ts';
import { storageOf } from './sr.ts';
import { cloneVdi, copyVdi, createVdi, destroyVdi, snapshotVdi } from './vdi.ts';
import { allowedOperations, withOperation } from './vm-operations.ts';
import { randomMac } from './vm-domains/index.ts';
import { vmMemoryOverhead } from './vm-domains/memory.ts';

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
    const made = tx.get('VM', ref)!;
    tx.update('VM', ref, { memory_overhead: vmMemoryOverhead(made), allowed_operations: allowedOperations(ctx.services, made) });
    return ref;
  });
}

const snapshotDisk: DiskAction = (ctx, vdi) => snapshotVdi(ctx, vdi);
const cloneDisk: DiskAction = (ctx, vdi) => cloneVdi(ctx, vdi);

const vmArg = (a: Args): string => (a.vm ?? a.self) as string;

/** What a clone or copy of `vm` is: a new top-level VM (a template if its source was one), never the built-in one. */
const newVmFields = (vm: DbRecord, a: Args): Record<string, unknown> => ({
  name_label: a.new_name, is_a_snapshot: false, snapshot_of: NULL_REF, snapshot_time: '19700101T00:00:00Z', is_default_template: false,
  is_a_template: vm.is_a_template === true || vm.is_a_snapshot === true, other_config: clonedOtherConfig(vm), parent: NULL_REF,
});

const VDI_TYPES: readonly Enum_vdi_type[] = ['system', 'user', 'ephemeral', 'suspend', 'crashdump'];
const vdiType = (s: string): Enum_vdi_type => VDI_TYPES.find((t) => t === s) ?? 'system';

interface PlannedDisk { device: string; size: number; sr: string; bootable: boolean; type: Enum_vdi_type }

/** Parses a template's other_config:disks plan (`<provision><disk device= size= sr= bootable= type=/>…</provision>`). */
function provisionPlan(xml: string): PlannedDisk[] {
  return [...xml.matchAll(/<disk\b([^>]*)\/?>/g)].map((m) => {
    const attr = (n: string): string => new RegExp(`\\b${n}="([^"]*)"`).exec(m[1])?.[1] ?? '';
    const size = Number(attr('size'));
    if (!attr('device') || !Number.isSafeInteger(size) || size <= 0) throw new XenApiError('INVALID_VALUE', 'other_config:disks', m[0]);
    return { device: attr('device'), size, sr: attr('sr'), bootable: attr('bootable') === 'true', type: vdiType(attr('type')) };
  });
}

/**
 * The SR a planned disk goes to: the one its sr attribute names by UUID, as
 * xapi (UUID_INVALID otherwise); an empty sr — how XenServer's templates
 * leave it for the installer to fill — means the pool's default SR.
 */
function plannedSr(ctx: CallContext, vm: string, d: PlannedDisk): string {
  const { store } = ctx.services;
  if (d.sr) {
    const sr = store.byUuid('SR', d.sr);
    if (!sr) throw new XenApiError('UUID_INVALID', 'sr', d.sr);
    return sr;
  }
  const sr = String(store.must('pool', ctx.services.poolRef()).default_SR);
  if (sr === NULL_REF || !store.get('SR', sr)) throw new XenApiError('VM_REQUIRES_SR', vm, sr);
  return sr;
}

/** The disks of a plan, each a new VDI and VBD as xapi's provisioner makes them; all undone if one fails. */
async function createPlannedDisks(ctx: CallContext, ref: string, plan: PlannedDisk[]): Promise<void> {
  const { store } = ctx.services;
  const uuid = String(store.must('VM', ref).uuid);
  const made: string[] = [];
  try {
    for (const d of plan) {
      const sr = plannedSr(ctx, ref, d);
      storageOf(ctx).attachedDriver(sr);
      const vdi = await createVdi(ctx, sr, d.size, { name_label: d.device, name_description: 'Created by template provisioner', type: d.type, sm_config: { vmhint: uuid } });
      made.push(vdi);
      store.transact((tx) => tx.create('VBD', {
        VM: ref, VDI: vdi, userdevice: d.device, bootable: d.bootable, mode: 'RW', type: 'Disk', empty: false,
        unpluggable: d.type !== 'system', other_config: { owner: '' },
      }));
    }
  } catch (e) {
    for (const vdi of made) await destroyVdi(ctx, vdi).catch(() => undefined);
    throw e;
  }
}

/** Keys a clone does not inherit (xapi drops them: the copy is not the built-in template). */
const NOT_CLONED = ['default_template', 'xensource_internal'];

/** A clone's or copy's other_config: without the built-in markers, naming the template it came from. */
function clonedOtherConfig(vm: DbRecord): Record<string, string> {
  const out = Object.fromEntries(Object.entries(vm.other_config as Record<string, string>).filter(([k]) => !NOT_CLONED.includes(k)));
  if (vm.is_a_template && out.base_template_name === undefined) out.base_template_name = String(vm.name_label);
  return out;
}

export const vmStorageHandlers = {
  snapshot: (ctx, a) =>
    // a snapshot is a template, as xapi makes it: it cannot be started, only reverted to, cloned or copied
    withOperation(ctx.services, vmArg(a), 'snapshot', ctx.task?.ref ?? null, (vm) =>
      copyVm(ctx, vmArg(a), {
        name_label: a.new_name, is_a_snapshot: true, snapshot_of: vmArg(a), snapshot_time: formatDateTime(new Date()),
        is_a_template: true, is_default_template: false, power_state: 'Halted', other_config: { ...(vm.other_config as object) },
      }, snapshotDisk, false, (a.ignore_vdis as string[] | undefined) ?? []),
    ),

  clone: (ctx, a) =>
    withOperation(ctx.services, vmArg(a), 'clone', ctx.task?.ref ?? null, (vm) =>
      copyVm(ctx, vmArg(a), newVmFields(vm, a), cloneDisk, true),
    ),

  copy: (ctx, a) =>
    withOperation(ctx.services, vmArg(a), 'copy', ctx.task?.ref ?? null, (vm) => {
      const target = a.sr as string;
      const copyDisk: DiskAction = async (c, vdi) => {
        const sr = target && target !== NULL_REF ? target : String(c.services.store.must('VDI', vdi).SR);
        return copyVdi(c, vdi, sr);
      };
      return copyVm(ctx, vmArg(a), newVmFields(vm, a), copyDisk, true);
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

  /**
   * As xapi: the VM stops being a template, then the disks its
   * other_config:disks plan asks for are made and the plan removed (so a
   * second provision makes none).
   */
  provision: (ctx, a) =>
    withOperation(ctx.services, vmArg(a), 'provision', ctx.task?.ref ?? null, async (vm) => {
      const { store } = ctx.services;
      const ref = vmArg(a);
      store.transact((tx) => tx.update('VM', ref, { is_a_template: false, is_default_template: false }));
      const plan = provisionPlan(String((vm.other_config as Record<string, string>).disks ?? ''));
      await createPlannedDisks(ctx, ref, plan);
      const now = store.must('VM', ref).other_config as Record<string, string>;
      const { disks: _done, ...rest } = now;
      if (_done !== undefined) store.transact((tx) => tx.update('VM', ref, { other_config: rest }));
    }),
} satisfies Partial<VM_handlers>;
