/** VM: creation, the power-state machine, and the settings with rules attached. */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Enum_vm_operations } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { DbRecord } from '../db/store.ts';
import type { VM_handlers } from './generated/handlers.ts';
import type { Args, CallContext, XenopsService } from './context.ts';
import { creatableFields, setField } from './generic.ts';
import { allowedOperations, assertOperation, refreshAllowed, withOperation } from './vm-operations.ts';
import { vmMemoryOverhead } from './vm-domains/memory.ts';
import { assertCanBootHere, chooseHost, possibleHosts } from '../pool/placement.ts';
import { liveMigrate } from '../pool/migrate.ts';

export function xenopsOf(ctx: CallContext): XenopsService {
  const x = ctx.services.xenops;
  if (!x) throw new XenApiError('NOT_IMPLEMENTED', 'no hypervisor backend on this host');
  return x;
}

/** The domain manager of a host: this one's, or a pool member's (HOST_OFFLINE without a pool to reach it). */
export function xenopsOn(ctx: CallContext, host: string): XenopsService {
  if (host === ctx.services.hostRef()) return xenopsOf(ctx);
  const x = ctx.services.pool?.xenopsOn(host);
  if (!x) throw new XenApiError('HOST_OFFLINE', host);
  return x;
}

const vmArg = (a: Args): string => (a.vm ?? a.self) as string;

/** Where a VM's domain is: the host it is resident on. */
function residentXenops(ctx: CallContext, ref: string): XenopsService {
  const host = ctx.services.store.must('VM', ref).resident_on;
  return xenopsOn(ctx, host === NULL_REF ? ctx.services.hostRef() : host);
}

/** A power operation on the VM's domain where it is: checked, marked in current_operations, run through xenops. */
const power =
  (op: Enum_vm_operations, run: (x: XenopsService, ref: string, a: Args, ctx: CallContext) => Promise<void>) =>
  (ctx: CallContext, a: Args): Promise<void> =>
    withOperation(ctx.services, vmArg(a), op, ctx.task?.ref ?? null, () => run(residentXenops(ctx, vmArg(a)), vmArg(a), a, ctx));

/**
 * xapi's `ha_always_run` bookkeeping: a VM HA restarts (priority `restart`)
 * is marked to run always when it starts or resumes, and unmarked when it is
 * shut down or suspended on purpose.
 */
function markAlwaysRun(ctx: CallContext, vm: string, on: boolean): void {
  const rec = ctx.services.store.must('VM', vm);
  const value = on && rec.ha_restart_priority === 'restart';
  if (rec.ha_always_run !== value && (value || !on)) ctx.services.store.transact((tx) => tx.update('VM', vm, { ha_always_run: value }));
}

/** A shutdown or suspend the caller asked for: HA no longer keeps the VM running. */
const stopping =
  (op: Enum_vm_operations, run: (x: XenopsService, ref: string, a: Args, ctx: CallContext) => Promise<void>) =>
  (ctx: CallContext, a: Args): Promise<void> =>
    power(op, async (x, ref, args, c) => {
      await run(x, ref, args, c);
      markAlwaysRun(c, ref, false);
    })(ctx, a);

/** A boot (start, resume): on the host given, checked as xapi checks it, or on the one placement picks. */
const boot =
  (op: Enum_vm_operations, run: (x: XenopsService, ref: string, a: Args) => Promise<void>) =>
  (ctx: CallContext, a: Args): Promise<void> =>
    withOperation(ctx.services, vmArg(a), op, ctx.task?.ref ?? null, async () => {
      const { store } = ctx.services;
      const given = a.host as string | undefined;
      if (given !== undefined) assertCanBootHere(store, vmArg(a), given, { memory: false });
      await run(xenopsOn(ctx, given ?? chooseHost(store, vmArg(a))), vmArg(a), a);
      markAlwaysRun(ctx, vmArg(a), true);
      const at = String(store.get('VM', vmArg(a))?.resident_on ?? NULL_REF);
      if (at !== NULL_REF && at !== ctx.services.hostRef()) void handOverRrd(ctx.services, vmArg(a), at);
    });

function checkMemoryOrder(vm: DbRecord, patch: Record<string, number>): void {
  const m = { static_min: Number(vm.memory_static_min), dynamic_min: Number(vm.memory_dynamic_min), dynamic_max: Number(vm.memory_dynamic_max), static_max: Number(vm.memory_static_max), ...patch };
  if (!(m.static_min <= m.dynamic_min && m.dynamic_min <= m.dynamic_max && m.dynamic_max <= m.static_max)) {
    throw new XenApiError('MEMORY_CONSTRAINT_VIOLATION', 'memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max');
  }
}

const setMemory =
  (fields: (a: Args) => Record<string, number>, halted: boolean) =>
  (ctx: CallContext, a: Args): void => {
    const { store } = ctx.services;
    const vm = store.must('VM', vmArg(a));
    if (halted && vm.power_state !== 'Halted') throw new XenApiError('VM_BAD_POWER_STATE', vmArg(a), 'halted', String(vm.power_state).toLowerCase());
    const patch = fields(a);
    checkMemoryOrder(vm, patch);
    store.transact((tx) => {
      const rec = tx.update('VM', vmArg(a), Object.fromEntries(Object.entries(patch).map(([k, v]) => [`memory_${k}`, v])));
      tx.update('VM', vmArg(a), { memory_overhead: vmMemoryOverhead(rec) });
    });
  };

function setVcpus(field: 'VCPUs_max' | 'VCPUs_at_startup') {
  return (ctx: CallContext, a: Args): void => {
    const { store } = ctx.services;
    const vm = store.must('VM', vmArg(a));
    const value = Number(a.value);
    if (value < 1) throw new XenApiError('INVALID_VALUE', field, String(value));
    if (field === 'VCPUs_max' && vm.power_state !== 'Halted') throw new XenApiError('VM_BAD_POWER_STATE', vmArg(a), 'halted', String(vm.power_state).toLowerCase());
    const max = field === 'VCPUs_max' ? value : Number(vm.VCPUs_max);
    const atStartup = field === 'VCPUs_at_startup' ? value : Number(vm.VCPUs_at_startup);
    if (atStartup > max) throw new XenApiError('INVALID_VALUE', 'VCPUs_at_startup', `${atStartup} exceeds VCPUs_max ${max}`);
    store.transact((tx) => {
      const rec = tx.update('VM', vmArg(a), { [field]: value });
      tx.update('VM', vmArg(a), { memory_overhead: vmMemoryOverhead(rec) });
    });
  };
}

/**
 * The master's RRD of a VM that moved to (or booted on) a member goes there,
 * as xapi's moves with the VM: clients ask the resident host for a VM's
 * figures. Its loss costs only history on the member, so a failure is logged,
 * not raised.
 */
async function handOverRrd(services: CallContext['services'], vm: string, host: string): Promise<void> {
  try {
    const uuid = services.store.must('VM', vm).uuid;
    const rrd = await services.metrics?.vmRrdText(uuid);
    if (rrd) await services.pool?.sendRrd(host, uuid, rrd);
  } catch (err) {
    services.log.warn({ err, vm, host }, 'could not hand the VM\'s RRD to its new host');
  }
}

/**
 * VM.pool_migrate: checked as a boot on the destination (an anchored VM gets
 * VM_REQUIRES_SR), then moved live (pool/migrate.ts). To the host it is on
 * already, there is nothing to move.
 */
export function poolMigrate(ctx: CallContext, vm: string, host: string): Promise<void> {
  return withOperation(ctx.services, vm, 'pool_migrate', ctx.task?.ref ?? null, async () => {
    const { store } = ctx.services;
    const from = store.must('VM', vm).resident_on;
    if (from === host) return;
    assertCanBootHere(store, vm, host);
    const stats = await liveMigrate(store, vm, { source: residentXenops(ctx, vm), sourceHost: from, destination: xenopsOn(ctx, host), destinationHost: host,
      prepared: () => ctx.services.pool?.migrationPrepared(vm, host) });
    ctx.services.log.info({ vm, from, to: host, ...stats }, 'VM migrated');
    if (host !== ctx.services.hostRef()) void handOverRrd(ctx.services, vm, host);
  });
}

export const vmHandlers = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const fields = creatableFields('VM', a.args as Args);
    return store.transact((tx) => {
      const ref = tx.create('VM', { ...fields, power_state: 'Halted', resident_on: NULL_REF });
      const metrics = tx.create('VM_metrics', { VCPUs_number: 0, memory_actual: 0 });
      const rec = tx.update('VM', ref, { metrics });
      tx.update('VM', ref, { memory_overhead: vmMemoryOverhead(rec), allowed_operations: allowedOperations(ctx.services, rec) });
      return ref;
    });
  },

  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const ref = vmArg(a);
    const vm = assertOperation(store, ref, 'destroy');
    store.transact((tx) => {
      for (const vbd of vm.VBDs as string[]) if (tx.get('VBD', vbd)) tx.delete('VBD', vbd);
      for (const vif of vm.VIFs as string[]) if (tx.get('VIF', vif)) tx.delete('VIF', vif);
      for (const c of vm.consoles as string[]) if (tx.get('console', c)) tx.delete('console', c);
      for (const m of [vm.metrics, vm.guest_metrics]) {
        if (m !== NULL_REF && tx.get('VM_metrics', String(m))) tx.delete('VM_metrics', String(m));
        else if (m !== NULL_REF && tx.get('VM_guest_metrics', String(m))) tx.delete('VM_guest_metrics', String(m));
      }
      for (const s of vm.snapshots as string[]) if (tx.get('VM', s)) tx.update('VM', s, { snapshot_of: NULL_REF });
      tx.delete('VM', ref);
    });
  },

  start: boot('start', (x, ref, a) => x.start(ref, a.start_paused === true)),
  start_on: boot('start_on', (x, ref, a) => x.start(ref, a.start_paused === true)),
  clean_shutdown: stopping('clean_shutdown', (x, ref) => x.cleanShutdown(ref)),
  hard_shutdown: stopping('hard_shutdown', (x, ref) => x.hardShutdown(ref)),
  // as xapi: clean within shutdown_delay seconds (xapi's 1200 when unset), else hard
  shutdown: stopping('shutdown', async (x, ref, _a, ctx) => {
    const vm = ctx.services.store.must('VM', ref);
    if (vm.power_state !== 'Running') return x.hardShutdown(ref);
    try {
      const delay = Number(vm.shutdown_delay);
      await x.cleanShutdown(ref, delay > 0 ? delay : undefined);
    } catch {
      await x.hardShutdown(ref);
    }
  }),
  clean_reboot: power('clean_reboot', (x, ref) => x.reboot(ref, 'clean')),
  hard_reboot: power('hard_reboot', (x, ref) => x.reboot(ref, 'hard')),
  pause: power('pause', (x, ref) => x.pause(ref)),
  unpause: power('unpause', (x, ref) => x.unpause(ref)),
  suspend: stopping('suspend', (x, ref) => x.suspend(ref)),
  resume: boot('resume', (x, ref, a) => x.resume(ref, a.start_paused === true)),
  resume_on: boot('resume_on', (x, ref, a) => x.resume(ref, a.start_paused === true)),
  power_state_reset: async (ctx, a) => {
    const ref = vmArg(a);
    const x = residentXenops(ctx, ref);
    const vm = ctx.services.store.must('VM', ref);
    if (vm.is_control_domain) throw new XenApiError('OPERATION_NOT_ALLOWED', 'not on the control domain');
    await x.backend.shutdown(String(vm.uuid), 'hard').catch(() => undefined);
    ctx.services.store.transact((tx) => tx.update('VM', ref, { current_operations: {} }));
    await x.markStopped(ref);
  },

  assert_operation_valid: (ctx, a) => {
    assertOperation(ctx.services.store, vmArg(a), String(a.op));
  },
  update_allowed_operations: (ctx, a) => refreshAllowed(ctx.services, vmArg(a)),
  assert_can_boot_here: (ctx, a) => assertCanBootHere(ctx.services.store, vmArg(a), a.host as string),
  get_possible_hosts: (ctx, a) => possibleHosts(ctx.services.store, vmArg(a)),
  pool_migrate: (ctx, a) => poolMigrate(ctx, a.vm, a.host),
  get_allowed_VBD_devices: (ctx, a) => {
    const used = new Set((ctx.services.store.must('VM', vmArg(a)).VBDs as string[]).map((r) => String(ctx.services.store.get('VBD', r)?.userdevice)));
    return Array.from({ length: 16 }, (_, i) => String(i)).filter((d) => !used.has(d));
  },
  get_allowed_VIF_devices: (ctx, a) => {
    const used = new Set((ctx.services.store.must('VM', vmArg(a)).VIFs as string[]).map((r) => String(ctx.services.store.get('VIF', r)?.device)));
    return Array.from({ length: 7 }, (_, i) => String(i)).filter((d) => !used.has(d));
  },
  get_boot_record: (ctx, a) => ctx.services.store.must('VM', vmArg(a)),
  get_cooperative: () => true,
  compute_memory_overhead: (ctx, a) => vmMemoryOverhead(ctx.services.store.must('VM', vmArg(a))),

  set_VCPUs_max: setVcpus('VCPUs_max'),
  set_VCPUs_at_startup: setVcpus('VCPUs_at_startup'),
  set_memory_static_max: setMemory((a) => ({ static_max: Number(a.value) }), true),
  set_memory_static_min: setMemory((a) => ({ static_min: Number(a.value) }), true),
  set_memory_static_range: setMemory((a) => ({ static_min: Number(a.min), static_max: Number(a.max) }), true),
  set_memory_dynamic_max: setMemory((a) => ({ dynamic_max: Number(a.value) }), false),
  set_memory_dynamic_min: setMemory((a) => ({ dynamic_min: Number(a.value) }), false),
  set_memory_dynamic_range: setMemory((a) => ({ dynamic_min: Number(a.min), dynamic_max: Number(a.max) }), false),
  set_memory_limits: setMemory((a) => ({ static_min: Number(a.static_min), static_max: Number(a.static_max), dynamic_min: Number(a.dynamic_min), dynamic_max: Number(a.dynamic_max) }), true),
  set_memory: setMemory((a) => ({ dynamic_min: Number(a.value), dynamic_max: Number(a.value), static_max: Number(a.value) }), true),
  set_HVM_boot_policy: setField('VM', 'HVM_boot_policy'),
  set_domain_type: setField('VM', 'domain_type'),
  set_actions_after_crash: setField('VM', 'actions_after_crash'),
  set_is_a_template: (ctx, a) => {
    const vm = ctx.services.store.must('VM', vmArg(a));
    if (a.value === true && vm.power_state !== 'Halted') throw new XenApiError('VM_BAD_POWER_STATE', vmArg(a), 'halted', String(vm.power_state).toLowerCase());
    ctx.services.store.transact((tx) => tx.update('VM', vmArg(a), { is_a_template: a.value === true, ...(a.value === false ? { is_default_template: false } : {}) }));
    refreshAllowed(ctx.services, vmArg(a));
  },
  set_suspend_VDI: setField('VM', 'suspend_VDI'),
} satisfies Partial<VM_handlers>;
