/**
 * What the tunnel records say a host's bridge needs (read by the host that
 * plumbs it, master or member, from its database or replica): for a network
 * this host reaches through an attached tunnel access PIF, a port to each
 * other host with a tunnel on the same network, at that host's transport
 * address, with the network's key.
 */
import type { Row, Store } from '../db/store.ts';
import type { TunnelSpec } from '../network/backend.ts';

/** The tunnel a PIF is the access PIF of, if any. */
export function tunnelOfAccess(store: Store, pif: Row<'PIF'>): [string, Row<'tunnel'>] | undefined {
  for (const t of pif.tunnel_access_PIF_of) {
    const rec = store.get('tunnel', t);
    if (rec) return [t, rec];
  }
  return undefined;
}

/** Every tunnel carrying `network`, with its access PIF. */
export function tunnelsOfNetwork(store: Store, network: string): { ref: string; tunnel: Row<'tunnel'>; access: Row<'PIF'> }[] {
  const net = store.get('network', network);
  const out: { ref: string; tunnel: Row<'tunnel'>; access: Row<'PIF'> }[] = [];
  for (const p of net?.PIFs ?? []) {
    const access = store.get('PIF', p);
    const t = access ? tunnelOfAccess(store, access) : undefined;
    if (access && t) out.push({ ref: t[0], tunnel: t[1], access });
  }
  return out;
}

/** The address a transport PIF carries tunnels from: its configured IPv4 address ('' when it has none). */
export function transportAddress(store: Store, pif: string): string {
  const rec = store.get('PIF', pif);
  return rec && rec.ip_configuration_mode !== 'None' ? rec.IP : '';
}

/** A network's tunnel key: the one its tunnels have (status:key), or undefined for a network without. */
export function networkKey(store: Store, network: string): number | undefined {
  for (const { tunnel } of tunnelsOfNetwork(store, network)) {
    const key = Number(tunnel.status.key);
    if (Number.isInteger(key) && key > 0) return key;
  }
  return undefined;
}

/** The tunnel ports `host` needs on `network`'s bridge; undefined when it has no attached access PIF there. */
export function tunnelSpecOf(store: Store, host: string, network: string): TunnelSpec | undefined {
  const all = tunnelsOfNetwork(store, network);
  const mine = all.find((t) => t.access.host === host);
  if (!mine || !mine.access.currently_attached) return undefined;
  const key = Number(mine.tunnel.status.key);
  if (!Number.isInteger(key) || key < 1) return undefined;
  const remotes = all
    .filter((t) => t.access.host !== host)
    .map((t) => transportAddress(store, t.tunnel.transport_PIF))
    .filter((a) => a !== '');
  return { protocol: mine.tunnel.protocol, key, remotes: [...new Set(remotes)].sort() };
}
