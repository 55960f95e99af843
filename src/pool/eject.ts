/**
 * pool.eject: the member is told to leave (it forgets the pool's records and
 * restarts as a pool of one, as xapi's ejected host does), then the master
 * removes its records — the host, its CPUs and NICs, its storage connections,
 * its local SRs with their disks and the VMs that need them, its control domain.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Tx } from '../db/store.ts';
import type { Services } from '../messages/context.ts';
import { certificateDir } from './certs.ts';
import { peerCall } from './channel.ts';
import { memberCertificate } from './peers.ts';
import { newSecret, writeRole } from './role.ts';

/** On the member: the next start begins a pool of one (the local accounts stay). */
export function forgetPool(dataDir: string): void {
  writeRole(dataDir, { role: 'master', secret: newSecret(), reset: true });
}


export async function ejectHost(services: Services, secret: string, host: string): Promise<void> {
  const { store } = services;
  const rec = store.must('host', host);
  if (host === services.hostRef()) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the pool master cannot be ejected: designate another master first');
  if (store.where('VM', (v) => v.resident_on === host && !v.is_control_domain && v.power_state !== 'Halted').length) {
    throw new XenApiError('OPERATION_NOT_ALLOWED', 'VM resident on host');
  }
  if (store.get('pool', services.poolRef())?.ha_enabled) throw new XenApiError('HA_IS_ENABLED');
  await peerCall({ address: rec.address, cert: memberCertificate(services, host), secret }, '/pool/eject', {}, 30_000).catch((e: unknown) => {
    if (e instanceof XenApiError && e.code !== 'INTERNAL_ERROR') throw e;
    throw new XenApiError('CANNOT_CONTACT_HOST', host);
  });
  store.transact((tx) => forgetHost(tx, host));
  rmSync(join(certificateDir(services.dataDir), `${rec.uuid}.pem`), { force: true });
  services.log.info({ host }, 'host ejected from the pool');
}

/** Removes a host's records and what only it had. */
function forgetHost(tx: Tx, host: string): void {
  const rec = tx.get('host', host)!;
  const localSrs = new Set<string>();
  for (const pbd of rec.PBDs) {
    const p = tx.get('PBD', pbd);
    if (!p) continue;
    const sr = tx.get('SR', p.SR);
    if (sr && !sr.shared) localSrs.add(p.SR);
    tx.delete('PBD', pbd);
  }
  const localVdis = new Set<string>();
  for (const sr of localSrs) for (const vdi of tx.get('SR', sr)?.VDIs ?? []) localVdis.add(vdi);
  const doomedVms = new Set<string>();
  for (const vdi of localVdis) for (const vbd of tx.get('VDI', vdi)?.VBDs ?? []) {
    const vm = tx.get('VBD', vbd)?.VM;
    if (vm) doomedVms.add(vm);
  }
  if (rec.control_domain !== NULL_REF) doomedVms.add(rec.control_domain);
  for (const vm of doomedVms) destroyVm(tx, vm);
  for (const vdi of localVdis) if (tx.get('VDI', vdi)) tx.delete('VDI', vdi);
  for (const sr of localSrs) tx.delete('SR', sr);
  for (const pif of rec.PIFs) {
    const p = tx.get('PIF', pif);
    if (!p) continue;
    // its VLANs and tunnels go with it (VLAN_slave_of: the VLANs on it; the rest: the PIF is their access or transport)
    for (const v of [...p.VLAN_slave_of, ...(p.VLAN_master_of !== NULL_REF ? [p.VLAN_master_of] : [])]) if (tx.get('VLAN', v)) tx.delete('VLAN', v);
    for (const t of [...p.tunnel_access_PIF_of, ...p.tunnel_transport_PIF_of]) if (tx.get('tunnel', t)) tx.delete('tunnel', t);
    if (p.metrics !== NULL_REF && tx.get('PIF_metrics', p.metrics)) tx.delete('PIF_metrics', p.metrics);
    tx.delete('PIF', pif);
  }
  for (const cpu of rec.host_CPUs) if (tx.get('host_cpu', cpu)) tx.delete('host_cpu', cpu);
  if (rec.metrics !== NULL_REF && tx.get('host_metrics', rec.metrics)) tx.delete('host_metrics', rec.metrics);
  tx.delete('host', host);
}

function destroyVm(tx: Tx, vm: string): void {
  const rec = tx.get('VM', vm);
  if (!rec) return;
  for (const vbd of rec.VBDs) if (tx.get('VBD', vbd)) tx.delete('VBD', vbd);
  for (const vif of rec.VIFs) if (tx.get('VIF', vif)) tx.delete('VIF', vif);
  for (const c of rec.consoles) if (tx.get('console', c)) tx.delete('console', c);
  if (rec.metrics !== NULL_REF && tx.get('VM_metrics', rec.metrics)) tx.delete('VM_metrics', rec.metrics);
  if (rec.guest_metrics !== NULL_REF && tx.get('VM_guest_metrics', rec.guest_metrics)) tx.delete('VM_guest_metrics', rec.guest_metrics);
  tx.delete('VM', vm);
}
