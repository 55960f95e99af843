/**
 * PIF records that say what the host really has: a physical PIF whose NIC
 * or bridge holds an address configured outside Xenon (the management
 * interface, typically) shows it — IP, netmask, gateway, DNS, and Static, or
 * DHCP when a DHCP client holds the lease — without Xenon touching the
 * address. As xapi records its management interface. PIFs whose IP
 * configuration Xenon owns (PIF.reconfigure_ip) are left alone.
 */
import type { Row, Store } from '../db/store.ts';
import { prefixToNetmask, type HostIpConfig } from '../network/addresses.ts';

/** other_config key: the device the recorded address was found on (set only for addresses read from the host). */
export const OBSERVED_ON = 'xenon_ip_observed_on';

type IpFields = Pick<Row<'PIF'>, 'ip_configuration_mode' | 'IP' | 'netmask' | 'gateway' | 'DNS' | 'other_config'>;

/** What a PIF's record should say about an address found on its bridge (preferred, as xapi reads it) or NIC; undefined: nothing to say. */
export function observedIp(pif: Row<'PIF'>, bridge: string, cfg: HostIpConfig): IpFields | undefined {
  const device = [bridge, pif.device].find((d) => cfg.addresses[d]?.length);
  if (!device) return undefined;
  const addr = cfg.addresses[device]![0]!;
  const routed = cfg.defaultRoute?.device === device;
  const { [OBSERVED_ON]: _old, ...rest } = pif.other_config;
  return {
    ip_configuration_mode: addr.dynamic ? 'DHCP' : 'Static',
    IP: addr.ip,
    netmask: prefixToNetmask(addr.prefixlen),
    gateway: routed ? cfg.defaultRoute!.gateway : '',
    // xapi records the resolver's servers on the interface that carries the default route (or the management one)
    DNS: routed || (pif.management && !cfg.defaultRoute) ? cfg.nameservers.join(',') : '',
    other_config: { ...rest, [OBSERVED_ON]: device },
  };
}

/** Records the host's own addresses on its physical PIFs whose IP configuration is not Xenon's; returns the PIFs changed. */
export function recordHostAddresses(store: Store, host: string, cfg: HostIpConfig): string[] {
  const changed: string[] = [];
  const mine = store.where('PIF', (p) => p.host === host && p.physical && (p.ip_configuration_mode === 'None' || OBSERVED_ON in p.other_config));
  store.transact((tx) => {
    for (const [ref, pif] of mine) {
      const bridge = store.get('network', pif.network)?.bridge ?? '';
      const seen = observedIp(pif, bridge, cfg);
      // an address that went away: back to None (only for what was read from the host)
      const next: IpFields | undefined = seen ?? (OBSERVED_ON in pif.other_config ? noAddress(pif) : undefined);
      if (!next || same(pif, next)) continue;
      tx.update('PIF', ref, next);
      changed.push(ref);
    }
  });
  return changed;
}

function noAddress(pif: Row<'PIF'>): IpFields {
  const { [OBSERVED_ON]: _old, ...rest } = pif.other_config;
  return { ip_configuration_mode: 'None', IP: '', netmask: '', gateway: '', DNS: '', other_config: rest };
}

const same = (pif: Row<'PIF'>, f: IpFields): boolean =>
  pif.ip_configuration_mode === f.ip_configuration_mode && pif.IP === f.IP && pif.netmask === f.netmask && pif.gateway === f.gateway
  && pif.DNS === f.DNS && JSON.stringify(pif.other_config) === JSON.stringify(f.other_config);
