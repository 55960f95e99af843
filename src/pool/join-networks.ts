/**
 * The pool's VLANs and tunnels on a host that joins (xapi's sync_vlans and
 * sync_tunnels, which a joining host runs at its first start as a member):
 * for each VLAN and tunnel of the master, the joining host gets the same on
 * its PIF on the same network — a VLAN PIF with the same tag, a tunnel access
 * PIF with the same protocol (and the network's key). The tunnels are plugged
 * once the member runs (PoolHosts.plugAll).
 */
import { formatDateTime } from '../datamodel/types.ts';
import type { Services } from '../messages/context.ts';
import { createTunnelRecords } from '../messages/tunnel.ts';
import { tunnelOfAccess } from '../messages/tunnel-records.ts';

/** The host's PIF on a network, if it has one. */
function pifOn(services: Services, host: string, network: string): string | undefined {
  return services.store.where('PIF', (p) => p.host === host && p.network === network)[0]?.[0];
}

export function syncPoolNetworks(services: Services, host: string): { vlans: number; tunnels: number } {
  const { store } = services;
  const master = services.hostRef();
  let vlans = 0;
  let tunnels = 0;
  for (const [, vlan] of store.all('VLAN')) {
    const tagged = store.get('PIF', vlan.tagged_PIF);
    const untagged = store.get('PIF', vlan.untagged_PIF);
    if (tagged?.host !== master || !untagged) continue;
    const base = pifOn(services, host, tagged.network);
    if (!base || pifOn(services, host, untagged.network)) continue;
    const baseRec = store.must('PIF', base);
    store.transact((tx) => {
      const metrics = tx.create('PIF_metrics', { carrier: true, last_updated: formatDateTime(new Date()) });
      const pif = tx.create('PIF', {
        device: baseRec.device, network: untagged.network, host, MAC: baseRec.MAC, MTU: baseRec.MTU, VLAN: vlan.tag, metrics,
        physical: false, currently_attached: true, ip_configuration_mode: 'None', managed: true,
      });
      const v = tx.create('VLAN', { tagged_PIF: base, untagged_PIF: pif, tag: vlan.tag });
      tx.update('PIF', pif, { VLAN_master_of: v });
    });
    vlans++;
  }
  for (const [, access] of store.where('PIF', (p) => p.host === master && p.tunnel_access_PIF_of.length > 0)) {
    const t = tunnelOfAccess(store, access);
    const transport = t ? store.get('PIF', t[1].transport_PIF) : undefined;
    if (!t || !transport) continue;
    const base = pifOn(services, host, transport.network);
    if (!base || pifOn(services, host, access.network)) continue;
    createTunnelRecords(services, base, access.network, t[1].protocol);
    tunnels++;
  }
  return { vlans, tunnels };
}
