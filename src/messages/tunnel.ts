/**
 * tunnel.create / tunnel.destroy and the plugging of tunnel access PIFs, as
 * xapi's xapi_tunnel.ml and xapi_pif.ml: a tunnel is made per host (a
 * pool-wide private network is one tunnel per host, on the same network);
 * its access PIF (`tunnel<N>`, VLAN -1) is the host's PIF on the network.
 * The master keeps the records and has each host concerned make its ports
 * (its own networking, a member's through the host interface): the host
 * whose access PIF is plugged, and every other host with a plugged tunnel on
 * the network, whose set of remotes changed.
 */
import { OBSERVED_ON } from './pif-address.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Row } from '../db/store.ts';
import { UnsupportedError } from '../network/backend.ts';
import { MAX_TUNNEL_KEY } from '../network/ovs/tunnels.ts';
import type { Services } from './context.ts';
import type { tunnel_handlers } from './generated/handlers.ts';
import { networkKey, tunnelOfAccess, tunnelsOfNetwork } from './tunnel-records.ts';
import { randomMac } from './vm-domains/providers.ts';

/** Has `host` make its tunnel ports on `network` as the records say; a backend without tunnels is OPENVSWITCH_NOT_ACTIVE. */
async function refreshOn(services: Services, host: string, network: string): Promise<void> {
  try {
    // the networking at hand is this daemon's own (services.hostRef() names a member in a member's domain manager)
    if (services.networking && host === services.networking.host) {
      await services.networking.refreshTunnels(network);
    } else {
      if (!services.pool) throw new XenApiError('CANNOT_CONTACT_HOST', host);
      await services.pool.refreshTunnelsOn(host, network);
    }
  } catch (e) {
    if (e instanceof UnsupportedError && e.feature === 'tunnel') throw new XenApiError('OPENVSWITCH_NOT_ACTIVE');
    throw e;
  }
}

/** The other hosts with a plugged tunnel on the network learn that the set of hosts changed (best effort: a host that is away catches up when its access PIF is plugged again). */
export async function refreshOthers(services: Services, network: string, except: string): Promise<void> {
  for (const { access } of tunnelsOfNetwork(services.store, network)) {
    if (access.host === except || !access.currently_attached) continue;
    await refreshOn(services, access.host, network).catch((err: unknown) => services.log.warn({ err, host: access.host, network }, 'a host could not update its tunnels'));
  }
}

function setStatus(services: Services, tunnel: string, active: boolean): void {
  const cur = services.store.get('tunnel', tunnel);
  if (cur) services.store.transact((tx) => tx.update('tunnel', tunnel, { status: { ...cur.status, active: String(active) } }));
}

/** xapi's checks before an access PIF comes up: its transport PIF has an address to carry tunnels from. */
function assertTransportConfigured(services: Services, tunnel: Row<'tunnel'>): void {
  const transport = services.store.get('PIF', tunnel.transport_PIF);
  if (!transport || !carriesTunnels(services, transport)) throw new XenApiError('TRANSPORT_PIF_NOT_CONFIGURED', tunnel.transport_PIF);
}

/**
 * Whether a PIF's address can carry tunnels: OVS's user-space datapath routes
 * the outer packets only out of an OVS bridge, so the address must be on the
 * PIF's bridge (Xenon's PIF.reconfigure_ip puts it there). An address the
 * admin configured on the NIC itself is recorded (Static/DHCP) but is not on
 * a bridge: refused as xapi refuses a PIF without an address.
 */
function carriesTunnels(services: Services, pif: Row<'PIF'>): boolean {
  if (pif.ip_configuration_mode === 'None') return false;
  const on = pif.other_config[OBSERVED_ON];
  return on === undefined || on === services.store.get('network', pif.network)?.bridge;
}

/** xapi's check before a PIF goes down: no VIF in use on its network by a VM running on its host. */
export function assertNoVifsInUseOn(services: Services, host: string, network: string): void {
  const { store } = services;
  for (const v of store.get('network', network)?.VIFs ?? []) {
    const vif = store.get('VIF', v);
    const vm = vif ? store.get('VM', vif.VM) : undefined;
    const live = vm?.power_state === 'Running' || vm?.power_state === 'Paused';
    if (vif?.currently_attached && vm?.resident_on === host && live) throw new XenApiError('VIF_IN_USE', network, v);
  }
}

/**
 * A VM coming to a host (start, resume, arriving by migration) brings up the
 * host's tunnel access PIFs on its VIFs' networks that are down, as xapi's
 * attach_for_vm brings up the PIFs a VM needs.
 */
export async function attachNetworksFor(services: Services, vm: string, host: string): Promise<void> {
  const { store } = services;
  if (store.isReplica) return;
  const networks = new Set(store.must('VM', vm).VIFs.map((v) => store.get('VIF', v)?.network).filter((n): n is string => n !== undefined));
  for (const network of networks) {
    const down = (store.get('network', network)?.PIFs ?? [])
      .map((p) => [p, store.get('PIF', p)] as const)
      .find(([, p]) => p?.host === host && p.tunnel_access_PIF_of.length > 0 && !p.currently_attached);
    if (down) await plugAccessPif(services, down[0]);
  }
}

/** PIF.plug of a tunnel access PIF: the host makes its ports, the others add it. */
export async function plugAccessPif(services: Services, pif: string): Promise<void> {
  const { store } = services;
  const rec = store.must('PIF', pif);
  const t = tunnelOfAccess(store, rec);
  if (!t) return;
  assertTransportConfigured(services, t[1]);
  store.transact((tx) => tx.update('PIF', pif, { currently_attached: true }));
  try {
    await refreshOn(services, rec.host, rec.network);
  } catch (e) {
    store.transact((tx) => tx.update('PIF', pif, { currently_attached: false }));
    throw e;
  }
  setStatus(services, t[0], true);
  await refreshOthers(services, rec.network, rec.host);
}

/** PIF.unplug of a tunnel access PIF: its ports go; the other hosts keep theirs (the transport address still answers once it is plugged again). */
export async function unplugAccessPif(services: Services, pif: string): Promise<void> {
  const { store } = services;
  const rec = store.must('PIF', pif);
  const t = tunnelOfAccess(store, rec);
  if (!t) return;
  assertNoVifsInUseOn(services, rec.host, rec.network);
  store.transact((tx) => tx.update('PIF', pif, { currently_attached: false }));
  setStatus(services, t[0], false);
  await refreshOn(services, rec.host, rec.network);
}

/** The host's next free tunnel device name (xapi's choose_tunnel_device_name). */
function deviceName(services: Services, host: string): string {
  const used = new Set(services.store.where('PIF', (p) => p.host === host && p.tunnel_access_PIF_of.length > 0).map(([, p]) => p.device));
  for (let i = 0; ; i++) if (!used.has(`tunnel${i}`)) return `tunnel${i}`;
}

/** A key no other network's tunnels use (the network's own when it has tunnels already). */
function chooseKey(services: Services, network: string): number {
  const own = networkKey(services.store, network);
  if (own !== undefined) return own;
  const used = new Set(services.store.where('tunnel', () => true).map(([, t]) => Number(t.status.key)));
  for (let k = 1; k <= MAX_TUNNEL_KEY; k++) if (!used.has(k)) return k;
  throw new XenApiError('OPERATION_NOT_ALLOWED', 'no tunnel key left');
}

/** The records of a tunnel (not plugged): also what a joining host is given for the pool's tunnels. */
export function createTunnelRecords(services: Services, transportPif: string, network: string, protocol: Row<'tunnel'>['protocol']): { tunnel: string; access: string } {
  const { store } = services;
  const transport = store.must('PIF', transportPif);
  const key = chooseKey(services, network);
  const device = deviceName(services, transport.host);
  return store.transact((tx) => {
    const access = tx.create('PIF', {
      device, network, host: transport.host, MAC: randomMac(), MTU: -1, VLAN: -1, metrics: transport.metrics, physical: false,
      currently_attached: false, ip_configuration_mode: 'None', managed: true, primary_address_type: transport.primary_address_type,
    });
    const tunnel = tx.create('tunnel', { access_PIF: access, transport_PIF: transportPif, protocol, status: { active: 'false', key: String(key) } });
    return { tunnel, access };
  });
}

function assertCanCreate(services: Services, transportPif: string, network: string, protocol: string): void {
  const { store } = services;
  const net = store.must('network', network);
  const transport = store.must('PIF', transportPif);
  if (!net.managed) throw new XenApiError('NETWORK_UNMANAGED', network);
  const here = net.PIFs.find((p) => store.get('PIF', p)?.host === transport.host);
  if (here) throw new XenApiError('NETWORK_ALREADY_CONNECTED', transport.host, here);
  if (!transport.managed) throw new XenApiError('PIF_UNMANAGED', transportPif);
  if (transport.bond_slave_of !== NULL_REF) throw new XenApiError('CANNOT_ADD_TUNNEL_TO_BOND_SLAVE', transportPif);
  if (transport.tunnel_access_PIF_of.length) throw new XenApiError('IS_TUNNEL_ACCESS_PIF', transportPif);
  if (services.networking?.backend.kind !== 'ovs') throw new XenApiError('OPENVSWITCH_NOT_ACTIVE');
  // Xenon's: the ports of a network are one protocol on every host (each end must agree with the other)
  const other = tunnelsOfNetwork(store, network)[0];
  if (other && other.tunnel.protocol !== protocol) throw new XenApiError('OPERATION_NOT_ALLOWED', `the network's tunnels use ${other.tunnel.protocol}`);
  if (!carriesTunnels(services, transport)) throw new XenApiError('TRANSPORT_PIF_NOT_CONFIGURED', transportPif);
}

function deleteTunnel(services: Services, tunnel: string): void {
  services.store.transact((tx) => {
    const rec = tx.get('tunnel', tunnel);
    if (!rec) return;
    // the access PIF shares its transport PIF's metrics (as xapi's): they stay
    if (tx.get('PIF', rec.access_PIF)) tx.delete('PIF', rec.access_PIF);
    tx.delete('tunnel', tunnel);
  });
}

export const tunnelHandlers: tunnel_handlers = {
  create: async (ctx, a) => {
    const { services } = ctx;
    assertCanCreate(services, a.transport_PIF, a.network, a.protocol);
    const { tunnel, access } = createTunnelRecords(services, a.transport_PIF, a.network, a.protocol);
    try {
      await plugAccessPif(services, access);
    } catch (e) {
      deleteTunnel(services, tunnel);
      throw e;
    }
    return tunnel;
  },
  destroy: async (ctx, a) => {
    const { services } = ctx;
    const rec = services.store.must('tunnel', a.self);
    const access = services.store.get('PIF', rec.access_PIF);
    if (access) await unplugAccessPif(services, rec.access_PIF);
    deleteTunnel(services, a.self);
    if (access) await refreshOthers(services, access.network, access.host);
  },
};
