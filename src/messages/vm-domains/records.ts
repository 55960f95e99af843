/**
 * The records a domain's life changes: power state and residence, metrics,
 * consoles, device attachment, the host's free memory — written in one
 * transaction per change, then allowed_operations recomputed.
 */
import { formatDateTime, NULL_REF } from '../../datamodel/types.ts';
import type { DbRecord, Tx } from '../../db/store.ts';
import type { DomainInfo } from '../../xenops/backend.ts';
import type { Services } from '../context.ts';
import { refreshAllowed } from '../vm-operations.ts';
import { freeMemory, vmMemoryOverhead } from './memory.ts';

const now = (): string => formatDateTime(new Date());

function updateHostFree(services: Services, tx: Tx): void {
  const host = services.store.must('host', services.hostRef());
  if (services.store.get('host_metrics', String(host.metrics))) {
    tx.update('host_metrics', String(host.metrics), { memory_free: freeMemory(services.store, services.hostRef()), last_updated: now() });
  }
}

function ensureMetrics(tx: Tx, ref: string, vm: DbRecord, patch: Record<string, unknown>): void {
  const m = String(vm.metrics);
  const fields = { ...patch, last_updated: now(), hvm: !vm.PV_kernel, current_domain_type: 'hvm' as const };
  if (m !== NULL_REF && tx.get('VM_metrics', m)) tx.update('VM_metrics', m, fields);
  else tx.update('VM', ref, { metrics: tx.create('VM_metrics', { ...fields, install_time: now() }) });
}

/** xapi's console location: https://<the resident host's address>/console?uuid=<console uuid> (a bare path when the host has no address). */
export function consoleLocation(address: string, uuid: string): string {
  const path = `/console?uuid=${uuid}`;
  if (!address) return path;
  // an IPv6 address is bracketed; host:port (one colon) is kept as it is
  const host = address.split(':').length > 2 && !address.startsWith('[') ? `[${address}]` : address;
  return `https://${host}${path}`;
}

/**
 * Records a domain as running (or paused) here: state, consoles, devices,
 * metrics. A fresh boot also drops the guest metrics of the previous boot
 * (they lived on after it halted, as in xapi).
 */
export function markRunning(services: Services, ref: string, info: DomainInfo, opts: { fresh: boolean }): void {
  const { store } = services;
  const vm = store.must('VM', ref);
  store.transact((tx) => {
    const gm = String(vm.guest_metrics);
    const dropGuest = opts.fresh && gm !== NULL_REF;
    if (dropGuest && tx.get('VM_guest_metrics', gm)) tx.delete('VM_guest_metrics', gm);
    tx.update('VM', ref, {
      power_state: info.state === 'paused' ? 'Paused' : 'Running',
      resident_on: services.hostRef(),
      scheduled_to_be_resident_on: NULL_REF,
      domid: info.pid,
      memory_overhead: vmMemoryOverhead(vm),
      ...(opts.fresh ? { last_boot_CPU_flags: {}, last_booted_record: '' } : {}),
      ...(dropGuest ? { guest_metrics: NULL_REF } : {}),
    });
    // a domain that moved here (or was found again) keeps the start of its boot
    const started = opts.fresh || !tx.get('VM_metrics', String(vm.metrics)) ? { start_time: formatDateTime(new Date(info.startedAt)) } : {};
    ensureMetrics(tx, ref, vm, { ...started, state: [], VCPUs_number: Number(vm.VCPUs_at_startup), memory_actual: Number(vm.memory_static_max) });
    // as xapi's: the location names the host the VM runs on, and moves with it (any host of the pool serves it: messages/console.ts)
    const address = String(tx.get('host', services.hostRef())?.address ?? '');
    const existing = (vm.consoles as string[]).filter((c) => tx.get('console', c));
    for (const c of existing) tx.update('console', c, { location: consoleLocation(address, String(tx.get('console', c)!.uuid)) });
    if (existing.length === 0) {
      for (const protocol of ['rfb', 'vt100'] as const) {
        const c = tx.create('console', { protocol, VM: ref });
        tx.update('console', c, { location: consoleLocation(address, String(tx.get('console', c)!.uuid)) });
      }
    }
    for (const vbd of vm.VBDs as string[]) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { currently_attached: true });
    for (const vif of vm.VIFs as string[]) if (tx.get('VIF', vif)) tx.update('VIF', vif, { currently_attached: true });
    updateHostFree(services, tx);
  });
  refreshAllowed(services, ref);
}

/**
 * Records a VM as halted (or suspended): no residence, no consoles, devices
 * detached. Its guest metrics stay (no longer live) until it next starts.
 */
export function markStoppedRecords(services: Services, ref: string, state: 'Halted' | 'Suspended'): void {
  const { store } = services;
  const vm = store.get('VM', ref);
  if (!vm) return;
  store.transact((tx) => {
    tx.update('VM', ref, { power_state: state, resident_on: NULL_REF, domid: -1 });
    for (const c of vm.consoles as string[]) if (tx.get('console', c)) tx.delete('console', c);
    for (const vbd of vm.VBDs as string[]) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { currently_attached: false });
    for (const vif of vm.VIFs as string[]) if (tx.get('VIF', vif)) tx.update('VIF', vif, { currently_attached: false });
    const m = String(vm.metrics);
    if (tx.get('VM_metrics', m)) tx.update('VM_metrics', m, { VCPUs_utilisation: {}, memory_actual: 0, last_updated: now() });
    const gm = String(vm.guest_metrics);
    if (gm !== NULL_REF && tx.get('VM_guest_metrics', gm)) tx.update('VM_guest_metrics', gm, { live: false, last_updated: now() });
    updateHostFree(services, tx);
  });
  refreshAllowed(services, ref);
}
