/**
 * The typed host-to-host interface: the work a master asks of a member for
 * the member's own VMs and devices. Each method names its arguments and its
 * result; the member serves them (member-agent.ts), the master calls them
 * (remote-host.ts). Every call carries the master's database position, and
 * the member first waits until its replica holds it, so the records the
 * master just wrote are the ones the member reads.
 */
import type { data_source_record } from '../datamodel/generated/records.ts';
import type { SrStats, VolumeInfo } from '../storage/sr/driver.ts';
import type { HostIpConfig } from '../network/addresses.ts';
import type { ConsoleAddress, DomainConfig, DomainCounters, DomainEvent, DomainInfo, DomainStats, GuestInfo, MigrationStats } from '../xenops/backend.ts';

export interface HostMethods {
  'domain.start': { args: { cfg: DomainConfig; paused: boolean }; result: DomainInfo };
  'domain.shutdown': { args: { uuid: string; mode: 'clean' | 'hard'; timeoutMs?: number }; result: null };
  'domain.reboot': { args: { uuid: string; mode: 'clean' | 'hard'; timeoutMs?: number }; result: null };
  'domain.pause': { args: { uuid: string }; result: null };
  'domain.unpause': { args: { uuid: string }; result: null };
  'domain.list': { args: Record<string, never>; result: DomainInfo[] };
  'domain.get': { args: { uuid: string }; result: DomainInfo | null };
  'domain.stats': { args: { uuid: string }; result: DomainStats };
  'domain.counters': { args: { uuid: string }; result: DomainCounters };
  /** The counters of several domains at once (the master's metrics step); null for one that is not here. */
  'domain.countersMany': { args: { uuids: string[] }; result: (DomainCounters | null)[] };
  'domain.consoles': { args: { uuid: string }; result: { serial: { path: string; socket?: string }; vnc: ConsoleAddress } };
  'domain.guestInfo': { args: { uuid: string; timeoutMs?: number }; result: GuestInfo | null };
  /** Guest events since `after` (a sequence number of the member's), waiting up to waitMs for one. */
  'events.next': { args: { after: number; waitMs: number }; result: { next: number; events: DomainEvent[] } };
  /** standby: for a domain receiving a live migration (DiskProvider.attach); 'disk.activate' opens such a disk. */
  'disk.attach': { args: { vdi: string; readOnly: boolean; standby?: boolean }; result: { path: string; format: DomainConfig['disks'][number]['format'] } };
  'disk.activate': { args: { vdi: string }; result: null };
  'disk.detach': { args: { vdi: string }; result: null };
  'nic.plug': { args: { vif: string }; result: { tap?: string; bridge?: string; mtu?: number } };
  'nic.unplug': { args: { vif: string }; result: null };
  /** Live migration: a domain here waiting for its state (listening on this host's address), its arrival, and sending one away. */
  'migrate.prepare': { args: { cfg: DomainConfig }; result: { uri: string } };
  'migrate.finish': { args: { uuid: string }; result: DomainInfo };
  'migrate.send': { args: { uuid: string; uri: string }; result: MigrationStats };
  /** This host's own data sources (the master answers host.*_data_source* of a member with them). */
  'metrics.hostSources': { args: Record<string, never>; result: data_source_record[] };
  'metrics.hostQuery': { args: { name: string }; result: number };
  'metrics.hostChange': { args: { op: 'record' | 'forget'; name: string }; result: null };
  /** The RRD of a VM that moved here, from the master's (serialised as metrics/persist.ts does). */
  'metrics.adopt': { args: { uuid: string; rrd: string }; result: null };
  /** Plugs this host's PBD of an SR (the driver's attach): the master then records it as attached. */
  'sr.plug': { args: { pbd: string }; result: null };
  'sr.unplug': { args: { pbd: string }; result: null };
  /**
   * The file work of an SR plugged only on this host (its local SR), for the
   * master's record keeping: each names the SR by ref and images by uuid, and
   * the member checks both against its own records (never a path).
   */
  'sr.volume.stats': { args: { sr: string }; result: SrStats };
  'sr.volume.scan': { args: { sr: string }; result: VolumeInfo[] };
  'sr.volume.recover': { args: { sr: string }; result: string[] };
  'sr.volume.info': { args: { sr: string; uuid: string }; result: VolumeInfo };
  'sr.volume.create': { args: { sr: string; uuid: string; size: number; format?: 'vhd' | 'qcow2' }; result: VolumeInfo };
  'sr.volume.delete': { args: { sr: string; uuid: string }; result: null };
  'sr.volume.resize': { args: { sr: string; uuid: string; size: number }; result: VolumeInfo };
  /**
   * A snapshot or clone step; a disk a guest of this host has open is branched with its I/O held back.
   * The result: the images after it (the branched one, the new leaves, the base), which have no records yet.
   */
  'sr.volume.branch': { args: { sr: string; uuid: string; newLeaves: string[]; base: string }; result: VolumeInfo[] };
  /** A full copy into another SR of this host. */
  'sr.volume.copy': { args: { sr: string; uuid: string; into: string; newUuid: string }; result: VolumeInfo };
  'sr.volume.coalesce': { args: { sr: string; child: string; base: string }; result: null };
  'sr.volume.checkChain': { args: { sr: string; uuid: string }; result: null };
  'sr.volume.resetLeaf': { args: { sr: string; uuid: string }; result: null };
  /** Prepares the storage of a new SR of this host's, from its PBD's device_config (SR.create on this host). */
  'sr.create': { args: { pbd: string }; result: null };
  /** Removes the storage of an SR of this host's (SR.destroy, its PBD unplugged). */
  'sr.destroy': { args: { sr: string }; result: null };
  /** Makes this host's tunnel ports on a network match the records (after a tunnel came or went, or an access PIF was plugged). */
  'network.tunnels': { args: { network: string }; result: null };
  /** Applies the IP configuration of one of this host's PIFs (to its network's bridge). */
  'network.applyIp': { args: { pif: string }; result: null };
  /** Makes a network's bridge here as the records say; `replace` removes the old one first (a plain bridge becoming a VLAN's, and back). */
  'network.ensure': { args: { network: string; replace: boolean }; result: null };
  /** Makes a bond of this host's PIFs (Bond.create), or removes it (Bond.destroy, before the records go). */
  'network.bond': { args: { bond: string }; result: null };
  /** The host's own IPv4 configuration (addresses per device, default route, name servers), for its PIF records. */
  'network.addresses': { args: Record<string, never>; result: HostIpConfig };
  /** PIF.unplug: a network's bridge device (and the uplink Xenon gave it) down here. */
  'network.down': { args: { network: string }; result: null };
  'network.unbond': { args: { bond: string }; result: null };
}

export type HostMethod = keyof HostMethods;
export type HostArgs<M extends HostMethod> = HostMethods[M]['args'];
export type HostResult<M extends HostMethod> = HostMethods[M]['result'];

/** One call as it travels: the method, its arguments, and the master's database position. */
export interface HostCall<M extends HostMethod = HostMethod> {
  readonly method: M;
  readonly args: HostArgs<M>;
  readonly epoch: string;
  readonly generation: number;
}

export const HOST_METHODS: readonly HostMethod[] = [
  'domain.start', 'domain.shutdown', 'domain.reboot', 'domain.pause', 'domain.unpause', 'domain.list', 'domain.get', 'domain.stats', 'domain.counters', 'domain.countersMany',
  'domain.consoles', 'domain.guestInfo', 'events.next', 'disk.attach', 'disk.activate', 'disk.detach', 'nic.plug', 'nic.unplug', 'sr.plug', 'sr.unplug',
  'network.tunnels', 'network.applyIp', 'network.ensure', 'network.bond', 'network.unbond', 'network.down', 'network.addresses', 'migrate.prepare', 'migrate.finish', 'migrate.send', 'metrics.adopt',
  'metrics.hostSources', 'metrics.hostQuery', 'metrics.hostChange',
  'sr.volume.stats', 'sr.volume.scan', 'sr.volume.recover', 'sr.volume.info', 'sr.volume.create', 'sr.volume.delete', 'sr.volume.resize',
  'sr.volume.branch', 'sr.volume.copy', 'sr.volume.coalesce', 'sr.volume.checkChain', 'sr.volume.resetLeaf', 'sr.create', 'sr.destroy',
];
