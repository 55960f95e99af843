// Kernel link helpers shared by both backends (iproute2 JSON output).
import { isIPv4, isIPv6 } from 'node:net';
import type { Runner } from './exec.ts';
import { InvalidArgumentError, NotOwnedError, type InterfaceStats } from './backend.ts';

export const TAP_ALIAS = 'xenon-tap';
export const BRIDGE_ALIAS = 'xenon-bridge';

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
  ifalias?: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
  stats64?: {
    rx: { bytes: number; packets: number; dropped: number };
    tx: { bytes: number; packets: number; dropped: number };
  };
}

export function checkIfName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name) || name === '.' || name === '..') {
    throw new InvalidArgumentError(`invalid interface name ${JSON.stringify(name)} (1-15 chars of [A-Za-z0-9_.-])`);
  }
}

export function checkMac(mac: string): string {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new InvalidArgumentError(`invalid MAC ${JSON.stringify(mac)}`);
  return mac.toLowerCase();
}

export function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 1 || tag > 4094) throw new InvalidArgumentError(`invalid VLAN tag ${tag} (1-4094)`);
}

export function checkMtu(mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new InvalidArgumentError(`invalid MTU ${mtu}`);
}

export function checkIp(ip: string, family: 4 | 6): void {
  if (family === 4 ? !isIPv4(ip) : !isIPv6(ip)) throw new InvalidArgumentError(`invalid IPv${family} address ${JSON.stringify(ip)}`);
}

export async function getLink(r: Runner, name: string): Promise<LinkInfo | null> {
  const res = await r.tryRun('ip', ['-d', '-s', '-j', 'link', 'show', 'dev', name]);
  if (!res) return null;
  const arr = JSON.parse(res.stdout || '[]') as LinkInfo[];
  return arr[0] ?? null;
}

export async function listLinks(r: Runner): Promise<LinkInfo[]> {
  const res = await r.run('ip', ['-d', '-j', 'link', 'show']);
  return JSON.parse(res.stdout || '[]') as LinkInfo[];
}

export function isTap(l: LinkInfo): boolean {
  return l.linkinfo?.info_kind === 'tun';
}

/**
 * Create (or adopt, if it is already ours) a persistent tap device, owned by
 * root, single-queue (QEMU must attach with queues=1), marked with the
 * xenon-tap alias, and up.
 */
export async function ensureTapDevice(r: Runner, name: string, mtu?: number, up = true): Promise<void> {
  const existing = await getLink(r, name);
  if (existing) {
    if (!isTap(existing) || existing.ifalias !== TAP_ALIAS) throw new NotOwnedError(`device ${name}`);
  } else {
    await r.run('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
    await r.run('ip', ['link', 'set', 'dev', name, 'alias', TAP_ALIAS]);
  }
  if (mtu !== undefined) await r.run('ip', ['link', 'set', 'dev', name, 'mtu', String(mtu)]);
  if (up) await r.run('ip', ['link', 'set', 'dev', name, 'up']);
}

/** Delete a tap device if it exists and is ours. */
export async function deleteTapDevice(r: Runner, name: string): Promise<boolean> {
  const l = await getLink(r, name);
  if (!l) return false;
  if (!isTap(l) || l.ifalias !== TAP_ALIAS) throw new NotOwnedError(`device ${name}`);
  await r.run('ip', ['tuntap', 'del', 'dev', name, 'mode', 'tap']);
  return true;
}

export async function listOwnedTapDevices(r: Runner): Promise<LinkInfo[]> {
  return (await listLinks(r)).filter((l) => isTap(l) && l.ifalias === TAP_ALIAS);
}

export async function linkStats(r: Runner, name: string): Promise<InterfaceStats> {
  const l = await getLink(r, name);
  if (!l) throw new InvalidArgumentError(`no such interface ${name}`);
  const s = l.stats64;
  return {
    rxBytes: s?.rx.bytes ?? 0,
    txBytes: s?.tx.bytes ?? 0,
    rxPackets: s?.rx.packets ?? 0,
    txPackets: s?.tx.packets ?? 0,
    rxDropped: s?.rx.dropped ?? 0,
    txDropped: s?.tx.dropped ?? 0,
  };
}
