/**
 * Memory accounting as xapi does it: a VM's footprint is its static maximum
 * plus an overhead computed from its memory and vCPUs (xapi's memory model for
 * HVM and PV domains), and a host keeps some memory back for itself.
 */
import { XenApiError } from '../../datamodel/api-error.ts';
import type { DbRecord, Store } from '../../db/store.ts';
import { HOST_MEMORY_OVERHEAD } from '../../host/facts.ts';

const MiB = 1024 * 1024;
const PAGES_PER_MIB = 256;

const mibUsed = (bytes: number): number => Math.ceil(bytes / MiB);
const mibOfPagesUsed = (pages: number): number => Math.ceil(pages / PAGES_PER_MIB);

/**
 * xapi's per-VM overhead in bytes: internal and external extras (1 MiB each
 * for HVM; PV has no internal extra), shadow memory (a page table per vCPU
 * plus two pages per MiB of guest, times the shadow multiplier, at least
 * 1 MiB), and 38 pages per vCPU that Xen itself uses.
 */
export function vmMemoryOverhead(vm: DbRecord): number {
  const staticMaxMib = mibUsed(Number(vm.memory_static_max) || 0);
  const vcpus = Math.max(0, Number(vm.VCPUs_max) || 0);
  const multiplier = Number(vm.HVM_shadow_multiplier) || 1;
  const extras = vm.domain_type === 'pv' ? 1 : 2;
  const shadow = Math.max(1, Math.floor(mibOfPagesUsed(256 * vcpus + 2 * staticMaxMib) * multiplier));
  return (extras + shadow + mibOfPagesUsed(38 * vcpus)) * MiB;
}

/** What running a VM takes from the host: its static maximum and its overhead. */
export const vmFootprint = (vm: DbRecord): number => (Number(vm.memory_static_max) || 0) + vmMemoryOverhead(vm);

/** Memory not taken by the host's own reserve or by the VMs that run (or are paused) on it. */
export function freeMemory(store: Store, hostRef: string): number {
  const host = store.must('host', hostRef);
  const metrics = store.get('host_metrics', String(host.metrics));
  const total = Number(metrics?.memory_total ?? 0);
  let used = HOST_MEMORY_OVERHEAD;
  for (const [, vm] of store.where('VM', (v) => !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused') && v.resident_on === hostRef)) {
    used += vmFootprint(vm);
  }
  return Math.max(0, total - used);
}

/** HOST_NOT_ENOUGH_FREE_MEMORY unless the VM fits next to what runs already. */
export function assertMemory(store: Store, hostRef: string, vm: DbRecord): void {
  const needed = vmFootprint(vm);
  const available = freeMemory(store, hostRef);
  if (needed > available) throw new XenApiError('HOST_NOT_ENOUGH_FREE_MEMORY', needed, available);
}
