/**
 * host.evacuate's plan, as xapi computes it (compute_evacuation_plan_no_wlb):
 * the other enabled, live hosts are the targets; a VM that cannot boot on
 * every one of them (storage, networks) or cannot migrate now stays with its
 * reason; the rest are packed by memory, largest first, each onto the target
 * with the most memory left; what does not fit gets HOST_NOT_ENOUGH_FREE_MEMORY.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Store } from '../db/store.ts';
import { freeMemory, vmFootprint } from '../messages/vm-domains/memory.ts';
import { assertOperation } from '../messages/vm-operations.ts';
import { assertCanBootHere } from './placement.ts';

export type Plan = Map<string, { readonly to: string } | { readonly error: readonly string[] }>;

const reason = (f: () => void): readonly string[] | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    if (e instanceof XenApiError) return e.description;
    throw e;
  }
};

export function evacuationPlan(store: Store, host: string): Plan {
  const plan: Plan = new Map();
  const vms = store.where('VM', (v) => v.resident_on === host && !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused'));
  const targets = store.refs('host').filter((h) => h !== host && store.must('host', h).enabled && store.get('host_metrics', store.must('host', h).metrics)?.live === true);
  if (targets.length === 0) {
    for (const [vm] of vms) plan.set(vm, { error: ['NO_HOSTS_AVAILABLE', vm] });
    return plan;
  }
  const movable: string[] = [];
  for (const [vm] of vms) {
    const why = reason(() => assertOperation(store, vm, 'pool_migrate')) ?? reason(() => targets.forEach((t) => assertCanBootHere(store, vm, t, { memory: false })));
    if (why) plan.set(vm, { error: why });
    else movable.push(vm);
  }
  const left = new Map(targets.map((t) => [t, freeMemory(store, t)]));
  const size = (vm: string): number => vmFootprint(store.must('VM', vm));
  for (const vm of movable.sort((a, b) => size(b) - size(a))) {
    const best = [...left.entries()].filter(([, free]) => free >= size(vm)).sort((a, b) => b[1] - a[1])[0];
    if (!best) {
      plan.set(vm, { error: ['HOST_NOT_ENOUGH_FREE_MEMORY', vm] });
      continue;
    }
    left.set(best[0], best[1] - size(vm));
    plan.set(vm, { to: best[0] });
  }
  return plan;
}

/** The VMs that stop an evacuation, with their reasons (host.get_vms_which_prevent_evacuation). */
export function preventingEvacuation(plan: Plan): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [vm, p] of plan) if ('error' in p) out[vm] = [...p.error];
  return out;
}
