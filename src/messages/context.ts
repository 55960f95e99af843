/**
 * What the behaviour of a message gets to work with: the core services, the
 * subsystems that plugins attach (each a small typed interface), and the
 * shape of a handler.
 */
import type { Duplex, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { AuditLog } from '../auth/audit.ts';
import type { Sessions, SessionInfo } from '../auth/sessions.ts';
import type { data_source_record, Ref, VM_record } from '../datamodel/generated/records.ts';
import type { ModelMessage } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import type { NetworkBackend } from '../network/backend.ts';
import type { SrDriver, VolumeInfo } from '../storage/sr/driver.ts';
import type { TaskHandle, Tasks } from '../tasks/manager.ts';
import type { DiskConfig, DomainConfig, DomainCounters, DomainInfo, HypervisorBackend } from '../xenops/backend.ts';

/** What storage provides the domain manager: a disk image to boot a guest from. */
export interface DiskProvider {
  /**
   * `standby`: for a domain receiving a live migration, whose disks another
   * host still writes: a VHD chain is exported with its image left closed
   * until `activate` (the sender has flushed and let go by then).
   */
  attach(vdi: string, readOnly: boolean, opts?: { standby?: boolean }): Promise<{ path: string; format: DiskConfig['format'] }>;
  /** Opens what a standby attach left closed (nothing to do for other disks). */
  activate(vdi: string): Promise<void>;
  detach(vdi: string): Promise<void>;
}

/** What networking provides the domain manager: a tap (or bridge) for a VIF. */
export interface NicProvider {
  plug(vif: string): Promise<{ tap?: string; bridge?: string; mtu?: number }>;
  unplug(vif: string): Promise<void>;
}

/** The domain manager (messages/vm-domains/), as messages use it. */
export interface XenopsService {
  readonly backend: HypervisorBackend;
  vmByUuid(uuid: string): string | undefined;
  /** `incoming`: for a domain receiving a live migration (its disks attached in standby, see DiskProvider). */
  domainConfig(vm: string, opts?: { incoming?: boolean }): Promise<DomainConfig>;
  /** Opens the disks a domainConfig for an incoming domain attached in standby. */
  activateDisks(vm: string): Promise<void>;
  diskFor(vbd: string, index?: number): Promise<DiskConfig | undefined>;
  freeMemory(): number;
  assertMemory(vm: Readonly<VM_record>): void;
  markStopped(vm: string, state?: 'Halted' | 'Suspended'): Promise<void>;
  /** Records a domain as running (or paused) on this manager's host. */
  markRunning(vm: string, info: DomainInfo, opts: { fresh: boolean }): void;
  /** Lets go of the disks and NICs attached here for a VM's domain, writing no records. */
  releaseDevices(vm: string): Promise<void>;
  /** Runs a backend operation whose effects (domain events) are expected, not acted on. */
  quietly<T>(vm: string, fn: () => Promise<T>): Promise<T>;
  start(vm: string, paused: boolean): Promise<void>;
  hardShutdown(vm: string): Promise<void>;
  /** Waits timeoutS seconds (default xapi's 1200) for the guest to power off. */
  cleanShutdown(vm: string, timeoutS?: number): Promise<void>;
  reboot(vm: string, mode: 'clean' | 'hard'): Promise<void>;
  pause(vm: string): Promise<void>;
  unpause(vm: string): Promise<void>;
  suspend(vm: string): Promise<void>;
  resume(vm: string, paused: boolean): Promise<void>;
  suspendImage(uuid: string): string;
  /** Refreshes guest-agent reports. */
  sampleMetrics(): Promise<void>;
}

/** SR drivers behind the SR/PBD/VDI records (messages/storage.ts), as messages use them. */
export interface StorageService extends DiskProvider {
  driverFor(sr: string): SrDriver;
  forgetDriver(sr: string): void;
  attachedDriver(sr: string): SrDriver;
  /** The driver without the SR's lock. */
  bareDriver(sr: string): SrDriver;
  /** attachedDriver of an SR whose files are on this host (HTTP transfers); NOT_IMPLEMENTED for a member's local SR. */
  imageDriver(sr: string): SrDriver;
  /** The host whose driver does an SR's file work: this one if it has a PBD of it, else the one member that has (its local SR). */
  storageHost(sr: string): string;
  /** A snapshot or clone step on an image of this host's (a disk a guest has open here: with its I/O held back). */
  branchImage(sr: string, uuid: string, newLeaves: string[], base: string): Promise<void>;
  /** Runs `fn` while no coalesce or snapshot restructures the SR's chains. */
  usingImages<T>(sr: string, fn: () => Promise<T>): Promise<T>;
  usingImagesOf<T>(srs: Iterable<string>, fn: () => Promise<T>): Promise<T>;
  /** VDI uuids handed to a guest of this host. */
  readonly attached: ReadonlySet<string>;
  scan(sr: string): Promise<void>;
  update(sr: string): Promise<void>;
  volumeFields(v: VolumeInfo): Record<string, unknown>;
  recordVolume(sr: string, v: VolumeInfo, fields: Record<string, unknown>): string;
  refreshVolume(vdi: string): Promise<void>;
  branch(vdi: string, fields: Record<string, unknown>): Promise<string>;
  inUse(vdi: string): boolean;
  /** The collector: coalesces chain bases no one needs; returns how many. */
  collect(): Promise<number>;
}

/** Whose round-robin database: the host's or a VM's, by uuid. */
export interface MetricsOwner { readonly kind: 'host' | 'vm'; readonly uuid: string }

/** The RRDs behind the data-source messages (metrics/service.ts). */
export interface MetricsService {
  dataSources(owner: MetricsOwner): data_source_record[];
  query(owner: MetricsOwner, name: string): number;
  record(owner: MetricsOwner, name: string): void;
  forget(owner: MetricsOwner, name: string): void;
  /** A VM's RRD as text (to hand over when it moves), and taking one over. */
  vmRrdText(uuid: string): Promise<string | undefined>;
  adoptVmRrd(uuid: string, rrd: string): void;
}

/** Bridges, taps, VLANs and bonds behind the network records (messages/network-bridges.ts). */
export interface NetworkingService extends NicProvider {
  readonly backend: NetworkBackend;
  /** The host whose switch this is (this daemon's). */
  readonly host: string;
  /** This host's bridge of a network as the records say; `replace` removes the old bridge first. */
  ensureNetwork(network: string, opts?: { replace?: boolean }): Promise<void>;
  /** Makes or removes a bond of this host's PIFs (Bond.create, Bond.destroy before its records go). */
  createBond(bond: string): Promise<void>;
  /** PIF.unplug: the network's bridge device down on this host, and its uplink NIC when Xenon made it one. */
  bringDown(network: string): Promise<void>;
  removeBond(bond: string): Promise<void>;
  applyLocking(vif: string): Promise<void>;
  applyIp(pif: string): Promise<void>;
  nextBridgeName(): string;
  assertNoActiveVifs(network: string): void;
  /** This host's tunnel ports on a network as the records say now. */
  refreshTunnels(network: string): Promise<void>;
  /** Records the host's NICs as PIFs (PIF.scan). */
  introduceNics(): Promise<void>;
  /** This host's PIFs show the addresses the host has outside Xenon's configuration; returns the PIFs changed. */
  recordAddresses(): Promise<string[]>;
}

/** The pool this host belongs to (src/pool/), as messages use it. */
/** An export of an image of a member's SR: the SR's ref, the image's uuid, the format, a base uuid for a VHD delta. */
export interface ExportAsk {
  readonly sr: string;
  readonly uuid: string;
  readonly format: 'raw' | 'vhd';
  readonly base?: string;
}

export interface PoolService {
  join(ctx: CallContext, masterAddress: string, user: string, password: string, force: boolean): Promise<void>;
  eject(host: string): Promise<void>;
  /** The domain manager of a member's VMs (its drivers reached through the host interface); undefined for an unknown host. */
  xenopsOn(host: string): XenopsService | undefined;
  /** Has a member prepare the storage of a new SR of its own (its PBD's device_config). */
  createSrOn(pbd: string): Promise<void>;
  /** Plugs or unplugs a member's PBD on that member. */
  plugOn(pbd: string): Promise<void>;
  unplugOn(pbd: string): Promise<void>;
  /** Master changes (pool/master-change.ts). */
  designateNewMaster(host: string): Promise<void>;
  emergencyTransitionToMaster(): void;
  emergencyResetMaster(address: string): Promise<void>;
  recoverSlaves(): Promise<string[]>;
  /** Has a member make its tunnel ports on a network match the records (NetworkingService.refreshTunnels there). */
  refreshTunnelsOn(host: string, network: string): Promise<void>;
  /** Has a member apply its PIF's IP configuration (NetworkingService.applyIp there). */
  applyIpOn(pif: string): Promise<void>;
  /** The driver of an SR plugged on a member (its local SR), its file work done there; `shape` is one of the SR's type for what the type declares. */
  srDriverOn(host: string, sr: string, shape: SrDriver): SrDriver;
  /** The bytes of an export of an image of a member's SR, sent by that member (its length, when known). */
  exportOn(host: string, ask: ExportAsk): Promise<{ stream: Readable; length?: number }>;
  /** Relays an upload into an image of a member's SR (raw written over it, or a VHD put in its place), written by that member. */
  importOn(host: string, ask: Omit<ExportAsk, 'base'>, input: AsyncIterable<Buffer>): Promise<void>;
  /** A console stream of a domain (by VM uuid) on a member, over the pool channel; rejects when it is not there. */
  consoleOn(host: string, uuid: string, protocol: 'rfb' | 'vt100'): Promise<Duplex>;
  /** The serial log text of a domain on a member (its last `tail` bytes); null when it has printed nothing. */
  consoleLogOn(host: string, uuid: string, tail?: number): Promise<Readable | null>;
  /** The metrics counters of domains on a member, in one call (null for one it does not run, all null when it does not answer in time). */
  countersOn(host: string, uuids: readonly string[]): Promise<(DomainCounters | null)[]>;
  /** A member's own host data sources (host.*_data_source* of a member, answered by it). */
  hostDataSourcesOn(host: string): Promise<data_source_record[]>;
  queryHostDataSourceOn(host: string, name: string): Promise<number>;
  changeHostDataSourceOn(host: string, op: 'record' | 'forget', name: string): Promise<void>;
  /** Hands a VM's RRD to the member it moved to (whose /rrd_updates clients such as Xen Orchestra ask for the VM's figures). */
  sendRrd(host: string, uuid: string, rrd: string): Promise<void>;
  /** Live migration tells when the destination's domain exists, waiting for its state (consoles may follow it there). */
  migrationPrepared(vm: string, destination: string): void;
  onMigrationPrepared(listener: (vm: string, destination: string) => void): () => void;
  /** Has a member make a network's bridge as the records say (NetworkingService.ensureNetwork there). */
  ensureNetworkOn(host: string, network: string, replace: boolean): Promise<void>;
  /** Records a member's own addresses on its PIFs (as NetworkingService.recordAddresses does here). */
  recordAddressesOn(host: string): Promise<void>;
  /** Has a member take a network's bridge down (NetworkingService.bringDown there). */
  bringDownOn(host: string, network: string): Promise<void>;
  /** Has the member whose PIFs a bond joins make it (`make`) or remove it. */
  bondOn(bond: string, make: boolean): Promise<void>;
}

/** On a pool member: where its master is (the database is a read-only replica, the API answers HOST_IS_SLAVE). */
export interface MemberInfo {
  readonly master: string;
}

/** High availability (ha/): turning it on and off across the pool. */
export interface HaService {
  enable(configuration: Readonly<Record<string, string>>): Promise<void>;
  disable(): Promise<void>;
  /** Resolves once every write committed so far is in HA's redo log (at once with HA off); rejects when this host may no longer write. */
  barrier(): Promise<void>;
  /** Whether this host runs its part of HA (xapi's "HA armed"): the master is then chosen by the HA election alone. */
  readonly armed: boolean;
}

export interface Services {
  readonly store: Store;
  readonly sessions: Sessions;
  readonly tasks: Tasks;
  readonly log: Logger;
  readonly audit: AuditLog;
  readonly dataDir: string;
  /** This host's record and its pool's. */
  hostRef(): Ref<'host'>;
  poolRef(): Ref<'pool'>;
  /** Whether a message ("Class.name") has behaviour on this daemon (explicit or generic). */
  implemented(message: string): boolean;
  /** Subsystems, set by their plugins at start; absent where the daemon runs without them. */
  xenops?: XenopsService;
  storage?: StorageService;
  networking?: NetworkingService;
  metrics?: MetricsService;
  /** Membership of a pool of several hosts: set by the pool plugin. */
  pool?: PoolService;
  /** Set on a pool member. */
  readonly member?: MemberInfo;
  /** Asks the daemon to restart itself (after joining or leaving a pool), once the current call is answered. */
  readonly restart?: () => void;
  ha?: HaService;
  /** Where the domain manager gets a VIF's tap: networking, or a stand-in where guests need NICs without it. */
  nics?: NicProvider;
}

/** Where a call came from, as the HTTP layer saw it. */
export interface CallOrigin {
  /** The client's address ('' when unknown): logins are throttled by it, the audit trail names it. */
  readonly address: string;
  /** Came in on the local root socket: a login there is the local superuser's. */
  readonly localRoot: boolean;
}

export const UNKNOWN_ORIGIN: CallOrigin = { address: '', localRoot: false };

export interface CallContext {
  readonly services: Services;
  readonly session: SessionInfo;
  /** Absent for calls made inside the daemon (HTTP handlers reusing message helpers). */
  readonly origin?: CallOrigin;
  readonly message: ModelMessage;
  /** Set for Async calls (and for long sync calls that want progress). */
  readonly task: TaskHandle | null;
}

/** The behaviour of one message: its arguments by name (defaults filled in), its declared result. */
export type Handler<A, R> = (ctx: CallContext, args: A) => R | Promise<R>;

/** Marks an explicit message that has no behaviour yet: it answers NOT_IMPLEMENTED. */
export const notImplemented: unique symbol = Symbol('not implemented');
export type NotImplemented = typeof notImplemented;

/** Arguments by name, for code that serves any message (generic handlers, dispatch). */
export type Args = Readonly<Record<string, unknown>>;
