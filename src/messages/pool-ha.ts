/**
 * HA's messages: turning it on and off, restart priorities, how many host
 * failures the pool tolerates and the plan behind that number. The plan is
 * arithmetic on the records (ha/plan.ts); enabling and disabling are the HA
 * service's (services.ha), which a daemon without it answers NOT_IMPLEMENTED.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import type { Store } from '../db/store.ts';
import { maxFailuresTolerated, placeAfterFailure, planExistsFor, type PlanHost, type PlanVm } from '../ha/plan.ts';
import type { CallContext } from './context.ts';
import type { pool_handlers, VM_handlers } from './generated/handlers.ts';
import { freeMemory, vmFootprint } from './vm-domains/memory.ts';

/** HA runs etcd with one voting member on each of three hosts: fewer cannot keep a quorum through a failure. */
export const HA_MIN_HOSTS = 3;
const RESTART = 'restart';
const VALID_PRIORITIES = new Set([RESTART, 'best-effort', '']);

const running = (state: string): boolean => state === 'Running' || state === 'Paused';

/** Hosts that are up, with the memory they have free. */
export function liveHosts(store: Store): PlanHost[] {
  return store
    .where('host', (h) => store.get('host_metrics', h.metrics)?.live === true)
    .map(([ref]) => ({ ref, free: freeMemory(store, ref) }));
}

/** Whether a VM can run on another host: each of its disks is on a shared SR. */
function agile(store: Store, vm: Ref<'VM'>): boolean {
  for (const vbd of store.must('VM', vm).VBDs) {
    const rec = store.get('VBD', vbd);
    if (!rec || rec.empty) continue;
    const vdi = store.get('VDI', rec.VDI);
    if (vdi && store.get('SR', vdi.SR)?.shared !== true) return false;
  }
  return true;
}

/** The running VMs protected under a restart-priority configuration (default: their own priorities). */
function protectedVms(store: Store, priorityOf: (vm: Ref<'VM'>, own: string) => string = (_, own) => own): PlanVm[] {
  return store
    .where('VM', (v) => !v.is_control_domain && !v.is_a_template && running(v.power_state))
    .filter(([ref, v]) => priorityOf(ref, v.ha_restart_priority) === RESTART)
    .map(([ref, v]) => ({ ref, footprint: vmFootprint(v), host: v.resident_on, agile: agile(store, ref) }));
}

/** xapi's update_pool_status: records how many failures the plan covers, and whether the pool is overcommitted. */
export function updatePlanStatus(store: Store, pool: Ref<'pool'>): void {
  const rec = store.must('pool', pool);
  const hosts = liveHosts(store);
  const vms = protectedVms(store);
  const wanted = rec.ha_host_failures_to_tolerate;
  const covered = planExistsFor(hosts, vms, wanted) ? wanted : Math.min(wanted, maxFailuresTolerated(hosts, vms));
  const overcommitted = covered < wanted;
  if (rec.ha_plan_exists_for !== covered || rec.ha_overcommitted !== overcommitted) {
    store.transact((tx) => tx.update('pool', pool, { ha_plan_exists_for: covered, ha_overcommitted: overcommitted }));
  }
}

/** HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN if HA is on with a plan that `vms` would no longer fit. */
function assertPlanKept(ctx: CallContext, vms: PlanVm[], failures?: number): void {
  const store = ctx.services.store;
  const pool = store.must('pool', ctx.services.poolRef());
  if (!pool.ha_enabled || pool.ha_plan_exists_for <= 0 || pool.ha_allow_overcommit) return;
  if (!planExistsFor(liveHosts(store), vms, failures ?? pool.ha_host_failures_to_tolerate)) throw new XenApiError('HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN');
}

export const poolHaHandlers: Pick<
  pool_handlers,
  'enable_ha' | 'disable_ha' | 'set_ha_host_failures_to_tolerate' | 'ha_compute_vm_failover_plan' | 'ha_compute_hypothetical_max_host_failures_to_tolerate' | 'ha_compute_max_host_failures_to_tolerate' | 'ha_failover_plan_exists'
> = {
  enable_ha: async (ctx, a) => {
    const { store } = ctx.services;
    if (store.must('pool', ctx.services.poolRef()).ha_enabled) throw new XenApiError('HA_IS_ENABLED');
    // etcd takes the place of xapi's statefiles: the SRs are checked, not used
    for (const sr of a.heartbeat_srs) store.must('SR', sr);
    if (store.count('host') < HA_MIN_HOSTS) throw new XenApiError('HA_TOO_FEW_HOSTS');
    const ha = ctx.services.ha;
    if (!ha) throw new XenApiError('NOT_IMPLEMENTED', 'pool.enable_ha');
    await ha.enable(a.configuration);
  },
  disable_ha: async (ctx) => {
    if (!ctx.services.store.must('pool', ctx.services.poolRef()).ha_enabled) throw new XenApiError('HA_NOT_ENABLED');
    const ha = ctx.services.ha;
    if (!ha) throw new XenApiError('NOT_IMPLEMENTED', 'pool.disable_ha');
    await ha.disable();
  },
  set_ha_host_failures_to_tolerate: (ctx, a) => {
    if (a.value < 0) throw new XenApiError('INVALID_VALUE', 'ha_host_failures_to_tolerate', String(a.value));
    const { store } = ctx.services;
    assertPlanKept(ctx, protectedVms(store), a.value);
    store.transact((tx) => tx.update('pool', a.self, { ha_host_failures_to_tolerate: a.value }));
    updatePlanStatus(store, a.self);
  },
  ha_compute_vm_failover_plan: (ctx, a) => {
    const { store } = ctx.services;
    for (const h of a.failed_hosts) store.must('host', h);
    const failed = new Set<string>(a.failed_hosts);
    // the failed VMs are the ones to place, wherever they run now
    const vms = a.failed_vms.map((ref): PlanVm => {
      const v = store.must('VM', ref);
      failed.add(`failed:${ref}`);
      return { ref, footprint: vmFootprint(v), host: `failed:${ref}`, agile: agile(store, ref) };
    });
    const placed = placeAfterFailure(liveHosts(store), vms, failed);
    const plan: Record<string, Record<string, string>> = {};
    for (const [vm, p] of placed) plan[vm] = 'host' in p ? { host: p.host } : { error_code: p.error };
    return plan;
  },
  ha_compute_hypothetical_max_host_failures_to_tolerate: (ctx, a) => {
    const { store } = ctx.services;
    for (const [vm, priority] of Object.entries(a.configuration)) {
      store.must('VM', vm);
      if (!VALID_PRIORITIES.has(priority)) throw new XenApiError('INVALID_VALUE', 'ha_restart_priority', priority);
    }
    const vms = protectedVms(store, (vm) => a.configuration[vm] ?? '');
    return maxFailuresTolerated(liveHosts(store), vms);
  },
  ha_compute_max_host_failures_to_tolerate: (ctx) => maxFailuresTolerated(liveHosts(ctx.services.store), protectedVms(ctx.services.store)),
  ha_failover_plan_exists: (ctx, a) => planExistsFor(liveHosts(ctx.services.store), protectedVms(ctx.services.store), a.n),
};

export const vmHaHandlers: Pick<VM_handlers, 'set_ha_restart_priority' | 'set_ha_always_run'> = {
  set_ha_restart_priority: (ctx, a) => setRestartPriority(ctx, a.self, a.value),
  // deprecated: true means "restart", false no protection (as xapi degrades it)
  set_ha_always_run: (ctx, a) => setRestartPriority(ctx, a.self, a.value ? RESTART : ''),
};

function setRestartPriority(ctx: CallContext, vm: Ref<'VM'>, value: string): void {
  if (!VALID_PRIORITIES.has(value)) throw new XenApiError('INVALID_VALUE', 'ha_restart_priority', value);
  const { store } = ctx.services;
  const rec = store.must('VM', vm);
  if (rec.ha_restart_priority === value) return;
  if (value === RESTART && rec.power_state !== 'Halted') assertPlanKept(ctx, protectedVms(store, (ref, own) => (ref === vm ? RESTART : own)));
  store.transact((tx) => {
    tx.update('VM', vm, { ha_restart_priority: value });
    // a running VM is protected (or not) at once
    if (rec.power_state === 'Running') tx.update('VM', vm, { ha_always_run: value === RESTART });
  });
  if (store.must('pool', ctx.services.poolRef()).ha_enabled) updatePlanStatus(store, ctx.services.poolRef());
}
