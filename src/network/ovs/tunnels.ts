// Tunnel ports of an OVS bridge: a cross-host private network is a bridge on
// every host with a GRE or VXLAN port to each other host (OVS's own tunnel
// ports: with the user-space datapath OVS encapsulates itself, so the
// transport address must be on an OVS bridge that has the NIC as uplink, as
// a XenServer host's management address is on xenbr0).
//
// Every port carries the network's key (GRE key / VXLAN VNI), so private
// networks over the same hosts stay apart, and is `protected`: OVS does not
// forward between protected ports, so a frame that came in from one host is
// never sent on to another — the full mesh has no loop and needs no STP.
import { createHash } from 'node:crypto';
import { BridgeNotFoundError, InvalidArgumentError, NotOwnedError, type TunnelSpec } from '../backend.ts';
import { ovsString, type OvsSnapshot } from './ovsdb.ts';

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
export const MAX_TUNNEL_KEY = 0xffffff;

/** What a port is for, kept in its external_ids: a change of protocol or key replaces the port. */
const identity = (protocol: string, key: number, remote: string): string => `${protocol}:${key}:${remote}`;

/** A stable port name per bridge and remote (Linux names stop at 15 characters). */
export function tunnelPortName(bridge: string, remote: string): string {
  return `xt${createHash('sha256').update(`${bridge}/${remote}`).digest('hex').slice(0, 11)}`;
}

export function checkTunnelSpec(spec: TunnelSpec): void {
  if (spec.protocol !== 'gre' && spec.protocol !== 'vxlan') throw new InvalidArgumentError(`invalid tunnel protocol ${String(spec.protocol)}`);
  if (!Number.isInteger(spec.key) || spec.key < 1 || spec.key > MAX_TUNNEL_KEY) throw new InvalidArgumentError(`invalid tunnel key ${spec.key}`);
  for (const r of spec.remotes) if (!IPV4.test(r)) throw new InvalidArgumentError(`invalid tunnel remote ${r}`);
}

/** The ovs-vsctl commands that make `bridge`'s tunnel ports those of `spec` (one transaction). */
export function tunnelCommands(s: OvsSnapshot, bridge: string, spec: TunnelSpec | null): string[][] {
  const br = s.bridges.get(bridge);
  if (!br) {
    if (spec === null) return [];
    throw new BridgeNotFoundError(bridge);
  }
  if (!br.owned) throw new NotOwnedError(`bridge ${bridge}`);
  if (spec && br.fake) throw new InvalidArgumentError(`bridge ${bridge} is a VLAN bridge: tunnels belong on a bridge of their own`);
  if (spec) checkTunnelSpec(spec);
  const want = new Map((spec?.remotes ?? []).map((r) => [tunnelPortName(bridge, r), identity(spec!.protocol, spec!.key, r)]));
  const cmds: string[][] = [];
  const keep = new Set<string>();
  for (const p of s.ports.values()) {
    if (!p.owned || p.role !== 'tunnel' || p.realBridge !== br.parent) continue;
    if (p.bridge === bridge && want.get(p.name) === p.externalIds['xenon-tunnel']) keep.add(p.name);
    else if (p.bridge === bridge) cmds.push(['--', '--if-exists', 'del-port', p.name]);
  }
  for (const [name, id] of want) {
    if (keep.has(name)) continue;
    if (s.ports.has(name) && !s.ports.get(name)!.owned) throw new NotOwnedError(`port ${name}`);
    const remote = id.slice(id.lastIndexOf(':') + 1);
    cmds.push(
      ['--', '--if-exists', 'del-port', name],
      ['--', 'add-port', bridge, name],
      ['--', 'set', 'Interface', name, `type=${spec!.protocol}`, `options:remote_ip=${remote}`, `options:key=${spec!.key}`, 'external_ids:xenon=1'],
      ['--', 'set', 'Port', name, 'protected=true', 'external_ids:xenon=1', 'external_ids:xenon-role=tunnel', `external_ids:xenon-tunnel=${ovsString(id)}`],
    );
  }
  return cmds;
}
