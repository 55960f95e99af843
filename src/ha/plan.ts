/**
 * The failover plan, as arithmetic: can the protected VMs of any n failed
 * hosts be restarted on the survivors' free memory? Placement is first-fit
 * decreasing (largest VM first, onto the survivor with most room), which is
 * what xapi's planner approximates too; a VM that is not agile (a disk on a
 * host's local storage) cannot be restarted elsewhere at all.
 */

export interface PlanHost {
  readonly ref: string;
  /** Memory free now (bytes). */
  readonly free: number;
}

export interface PlanVm {
  readonly ref: string;
  /** What running it takes (bytes). */
  readonly footprint: number;
  /** Where it runs now. */
  readonly host: string;
  /** Whether it may run on another host (every disk on shared storage). */
  readonly agile: boolean;
}

export type Placement = { readonly host: string } | { readonly error: 'HOST_NOT_ENOUGH_FREE_MEMORY' | 'VM_REQUIRES_SR' };

/** Beyond this many combinations of failed hosts, the plan is not searched exhaustively: it is said not to exist. */
const MAX_COMBINATIONS = 20_000;

/** Where each of `vms` would restart if `failed` hosts died (the VMs of survivors stay put). */
export function placeAfterFailure(hosts: readonly PlanHost[], vms: readonly PlanVm[], failed: ReadonlySet<string>): Map<string, Placement> {
  const room = new Map(hosts.filter((h) => !failed.has(h.ref)).map((h) => [h.ref, h.free]));
  const out = new Map<string, Placement>();
  const moving = vms.filter((v) => failed.has(v.host) || !room.has(v.host)).sort((a, b) => b.footprint - a.footprint);
  for (const vm of moving) {
    if (!vm.agile) {
      out.set(vm.ref, { error: 'VM_REQUIRES_SR' });
      continue;
    }
    let best: string | undefined;
    for (const [host, free] of room) if (free >= vm.footprint && (best === undefined || free > room.get(best)!)) best = host;
    if (best === undefined) out.set(vm.ref, { error: 'HOST_NOT_ENOUGH_FREE_MEMORY' });
    else {
      room.set(best, room.get(best)! - vm.footprint);
      out.set(vm.ref, { host: best });
    }
  }
  return out;
}

function* combinations<T>(items: readonly T[], k: number, start = 0, acc: T[] = []): Generator<T[]> {
  if (acc.length === k) {
    yield acc;
    return;
  }
  for (let i = start; i <= items.length - (k - acc.length); i++) yield* combinations(items, k, i + 1, [...acc, items[i]]);
}

function choose(n: number, k: number): number {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - i + 1)) / i;
  return r;
}

/** Whether the protected VMs survive any `n` host failures (n ≥ hosts never: no one is left to run them). */
export function planExistsFor(hosts: readonly PlanHost[], vms: readonly PlanVm[], n: number): boolean {
  if (n <= 0) return true;
  if (n >= hosts.length) return false;
  if (choose(hosts.length, n) > MAX_COMBINATIONS) return false;
  for (const failed of combinations(hosts.map((h) => h.ref), n)) {
    const placed = placeAfterFailure(hosts, vms, new Set(failed));
    for (const p of placed.values()) if ('error' in p) return false;
  }
  return true;
}

/** The most host failures the protected VMs survive (at most hosts − 1: someone must be left). */
export function maxFailuresTolerated(hosts: readonly PlanHost[], vms: readonly PlanVm[]): number {
  let n = 0;
  while (n + 1 < hosts.length && planExistsFor(hosts, vms, n + 1)) n++;
  return n;
}
