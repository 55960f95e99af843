/**
 * Where a VM may run, as xapi decides it (xapi_vm_helpers.ml,
 * assert_can_boot_here and choose_host_for_vm): a live, enabled host that
 * sees every SR the VM's disks are on (a plugged PBD), every network its
 * VIFs are on (a PIF there, or a network with no PIFs at all), and has the
 * memory. Starting with no host chooses among those with the most free memory;
 * when none has the memory, the rest of the checks still choose one, and the
 * start itself then fails on memory, as in xapi.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import { assertMemory, freeMemory } from '../messages/vm-domains/memory.ts';

/** Whether a host's liveness is known good: its metrics say live. */
function isLive(store: Store, host: string): boolean {
  const metrics = store.get('host', host)?.metrics;
  return metrics !== undefined && store.get('host_metrics', metrics)?.live === true;
}

/** The SRs a VM needs: those of its disks (and of its suspend image when suspended). */
function requiredSrs(store: Store, vm: string): string[] {
  const rec = store.must('VM', vm);
  const vdis = rec.VBDs.map((b) => store.get('VBD', b)).filter((b) => b && !b.empty && b.VDI !== NULL_REF).map((b) => b!.VDI);
  if (rec.power_state === 'Suspended' && rec.suspend_VDI !== NULL_REF) vdis.push(rec.suspend_VDI);
  return [...new Set(vdis.map((v) => store.get('VDI', v)?.SR).filter((s): s is string => s !== undefined))];
}

/** Throws xapi's error for the first reason the VM cannot run on this host. */
export function assertCanBootHere(store: Store, vm: string, host: string, opts: { memory?: boolean } = {}): void {
  const rec = store.must('VM', vm);
  store.must('host', host);
  if (rec.is_a_template || rec.is_a_snapshot) throw new XenApiError('VM_IS_TEMPLATE', vm);
  if (!isLive(store, host)) throw new XenApiError('HOST_NOT_LIVE');
  const localMigration = rec.power_state === 'Running' && rec.resident_on === host;
  if (!rec.is_control_domain && !localMigration && !store.must('host', host).enabled) throw new XenApiError('HOST_DISABLED', host);
  const plugged = new Set(store.where('PBD', (p) => p.host === host && p.currently_attached).map(([, p]) => p.SR));
  const missing = requiredSrs(store, vm).find((sr) => !plugged.has(sr));
  if (missing) throw new XenApiError('VM_REQUIRES_SR', vm, missing);
  for (const vif of rec.VIFs) {
    const network = store.get('VIF', vif)?.network;
    if (!network || !store.get('network', network)) continue;
    const pifs = store.must('network', network).PIFs.map((p) => store.get('PIF', p)).filter((p) => p !== undefined);
    if (pifs.length > 0 && !pifs.some((p) => p!.host === host)) throw new XenApiError('VM_REQUIRES_NETWORK', vm, network);
  }
  if (opts.memory !== false && !localMigration) assertMemory(store, host, rec);
}

const passes = (f: () => void): boolean => {
  try {
    f();
    return true;
  } catch (e) {
    if (e instanceof XenApiError) return false;
    throw e;
  }
};

/** Every host the VM could boot on now (VM.get_possible_hosts). */
export function possibleHosts(store: Store, vm: string): string[] {
  const scheduled = store.must('VM', vm).scheduled_to_be_resident_on;
  if (scheduled !== NULL_REF && store.get('host', scheduled)) return [scheduled];
  return store.refs('host').filter((h) => passes(() => assertCanBootHere(store, vm, h)));
}

/** The host a VM.start with no host picks: NO_HOSTS_AVAILABLE when none can take it. */
export function chooseHost(store: Store, vm: string): string {
  const hosts = store.refs('host');
  const fits = hosts.filter((h) => passes(() => assertCanBootHere(store, vm, h)));
  // xapi tries again without the memory check: the start then says what memory is missing
  const candidates = fits.length ? fits : hosts.filter((h) => passes(() => assertCanBootHere(store, vm, h, { memory: false })));
  if (candidates.length === 0) throw new XenApiError('NO_HOSTS_AVAILABLE');
  const affinity = store.must('VM', vm).affinity;
  if (candidates.includes(affinity)) return affinity;
  return candidates.reduce((best, h) => (freeMemory(store, h) > freeMemory(store, best) ? h : best));
}
