/**
 * The host's own IPv4 configuration, as the kernel has it: addresses per
 * device, the default route, the resolver's name servers. What an admin (or
 * a DHCP client) configured outside Xenon, read so that the PIF records can
 * say what the host really has (xapi's Helpers.update_pif_address does the
 * same for DHCP PIFs, from networkd).
 */
import { Runner } from './exec.ts';

export interface DeviceAddress {
  readonly ip: string;
  readonly prefixlen: number;
  /** A lifetime that is not "forever": a DHCP client (or other autoconfiguration) holds it. */
  readonly dynamic: boolean;
}

export interface HostIpConfig {
  /** Per device, its global IPv4 addresses in the kernel's order (the primary first). A plain object: it travels as JSON. */
  readonly addresses: Readonly<Record<string, DeviceAddress[]>>;
  readonly defaultRoute?: { gateway: string; device: string };
  readonly nameservers: readonly string[];
}

interface IpAddrJson {
  ifname?: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string; dynamic?: boolean; valid_life_time?: number }[];
}

const FOREVER = 4294967295;

export async function readHostIpConfig(netns?: string): Promise<HostIpConfig> {
  const r = new Runner(netns);
  const addresses: Record<string, DeviceAddress[]> = {};
  const links = JSON.parse((await r.run('ip', ['-j', '-4', 'addr', 'show'])).stdout || '[]') as IpAddrJson[];
  for (const l of links) {
    const list = (l.addr_info ?? [])
      .filter((a) => a.family === 'inet' && a.scope === 'global' && a.local)
      .map((a) => ({ ip: a.local!, prefixlen: a.prefixlen ?? 32, dynamic: a.dynamic === true || (a.valid_life_time ?? FOREVER) !== FOREVER }));
    if (l.ifname && list.length) addresses[l.ifname] = list;
  }
  const routes = JSON.parse((await r.run('ip', ['-j', '-4', 'route', 'show', 'default']).catch(() => ({ stdout: '[]' }))).stdout || '[]') as { gateway?: string; dev?: string }[];
  const def = routes.find((x) => x.gateway && x.dev);
  // `ip netns exec` shows the namespace's /etc/netns/<ns>/resolv.conf where there is one
  const resolv = (await r.run('cat', ['/etc/resolv.conf']).catch(() => ({ stdout: '' }))).stdout;
  const nameservers = [...resolv.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter((ns) => /^\d+\.\d+\.\d+\.\d+$/.test(ns));
  return { addresses, ...(def ? { defaultRoute: { gateway: def.gateway!, device: def.dev! } } : {}), nameservers };
}

export function prefixToNetmask(bits: number): string {
  const n = bits <= 0 ? 0 : (0xffffffff << (32 - Math.min(bits, 32))) >>> 0;
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}
