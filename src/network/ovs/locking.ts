// MAC/IP locking of a VIF port as OpenFlow rules (the XenServer model):
//   unlocked  - no rules; the bridge's NORMAL action applies.
//   locked    - only frames from the VIF's MAC and (for ARP/IPv4/IPv6) from
//               the listed addresses pass; everything else from the port is
//               dropped. No addresses = no traffic at all.
//   disabled  - everything from the port is dropped.
// Rules only filter what the port *sends*; they are tagged with a cookie
// derived from the port name so they can be replaced atomically (one
// OpenFlow 1.4 bundle) without a window where the port is unfiltered.
import { createHash } from 'node:crypto';
import type { LockingSpec } from '../backend.ts';
import { InvalidArgumentError } from '../backend.ts';
import { checkIp, checkMac } from '../links.ts';

export const PRIO_ALLOW = 4010;
export const PRIO_DROP = 4000;

/** 64-bit cookie: 0x58 ('X') in the top byte, 56 bits of sha1(port name). */
export function lockingCookie(port: string): string {
  const h = createHash('sha1').update(port).digest('hex').slice(0, 14);
  return '0x58' + h;
}

export function normalizeLocking(l: LockingSpec, fallbackMac?: string): LockingSpec {
  if (!['unlocked', 'locked', 'disabled'].includes(l.mode)) throw new InvalidArgumentError(`invalid locking mode ${l.mode}`);
  for (const ip of l.ipv4) checkIp(ip, 4);
  for (const ip of l.ipv6) checkIp(ip, 6);
  let mac = l.mac || fallbackMac || '';
  if (l.mode === 'locked') {
    if (!mac) throw new InvalidArgumentError('locked mode needs the VIF MAC (locking.mac or the tap mac)');
    mac = checkMac(mac);
  }
  return { mode: l.mode, ipv4: [...l.ipv4], ipv6: [...l.ipv6], mac: mac ? mac.toLowerCase() : '' };
}

/** Flow specs (ovs-ofctl syntax, without command word) for one port. */
export function lockingFlows(ofport: number, port: string, l: LockingSpec): string[] {
  const c = `cookie=${lockingCookie(port)}`;
  const base = `in_port=${ofport}`;
  if (l.mode === 'unlocked') return [];
  const drop = `${c},priority=${PRIO_DROP},${base},actions=drop`;
  if (l.mode === 'disabled') return [drop];
  const m = l.mac;
  const flows: string[] = [];
  const allow = (match: string) => flows.push(`${c},priority=${PRIO_ALLOW},${base},dl_src=${m},${match},actions=NORMAL`);
  for (const ip of l.ipv4) {
    allow(`arp,arp_sha=${m},arp_spa=${ip}`);
    allow(`ip,nw_src=${ip}`);
  }
  for (const ip of l.ipv6) {
    allow(`ipv6,ipv6_src=${ip}`);
    // Duplicate address detection: neighbour solicitation from :: for our address.
    allow(`icmp6,ipv6_src=::,icmp_type=135,nd_target=${ip}`);
  }
  if (l.ipv6.length > 0) {
    // Router and neighbour solicitations sent before an address is configured
    // come from ::; multicast listener reports from :: are needed for DAD.
    allow('icmp6,ipv6_src=::,icmp_type=133');
    allow('icmp6,ipv6_src=::,icmp_type=143');
  }
  flows.push(drop);
  return flows;
}

/** A bundle (ovs-ofctl --bundle add-flows) replacing all locking flows of a port. */
export function lockingBundle(ofport: number | null, port: string, l: LockingSpec | null): string {
  const lines = [`delete cookie=${lockingCookie(port)}/-1`];
  if (l && ofport !== null && ofport > 0) for (const f of lockingFlows(ofport, port, l)) lines.push(`add ${f}`);
  return lines.join('\n') + '\n';
}

/** Stored form in Interface external_ids:xenon-locking. */
export function encodeLocking(l: LockingSpec): string {
  return JSON.stringify({ mode: l.mode, ipv4: l.ipv4, ipv6: l.ipv6, mac: l.mac });
}

export function decodeLocking(s: string | undefined): LockingSpec | null {
  if (!s) return null;
  try {
    const o = JSON.parse(s) as LockingSpec;
    return { mode: o.mode, ipv4: o.ipv4 ?? [], ipv6: o.ipv6 ?? [], mac: o.mac ?? '' };
  } catch {
    return null;
  }
}
