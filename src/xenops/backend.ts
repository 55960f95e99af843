/**
 * The domain-manager backend interface (xenops). A backend runs domains
 * (VMs) on this host; it knows nothing of the XenAPI wire or the database.
 *
 * Implementations: QemuBackend (src/xenops/qemu/) runs one qemu-system-x86_64
 * process per domain; SimBackend (src/xenops/sim/) is an in-process simulator.
 *
 * Conventions:
 * - Domains are identified by the VM uuid.
 * - Operations requested through the backend (start, shutdown, reboot, pause,
 *   suspend, ...) resolve their promise and do NOT emit events. Events report
 *   what happened on the guest's own initiative (poweroff, reboot, panic) or
 *   unexpectedly (device model died, internal error), and the caller decides
 *   what to do (actions_after_shutdown / _reboot / _crash). The backend never
 *   restarts a guest by itself.
 * - After a guest-initiated 'shutdown', 'reboot' or 'crash' the domain still
 *   exists (state 'shutdown' or 'crashed') until the caller calls
 *   shutdown(uuid, 'hard') (destroy) or reboot(uuid) (restart in place).
 */

export type Firmware = 'bios' | 'uefi';

export interface DiskConfig {
  /** VBD uuid. */
  id: string;
  /** userdevice, e.g. '0'. Decides the QEMU device slot/name. */
  device: string;
  /** Image path (file or block device); absent = empty CD drive. */
  path?: string;
  format: 'raw' | 'vpc' | 'qcow2';
  readOnly: boolean;
  kind: 'disk' | 'cdrom';
  bootable: boolean;
}

export interface NicConfig {
  /** VIF uuid. */
  id: string;
  /** VIF device number, e.g. '0'. */
  device: string;
  mac: string;
  /** Existing tap device (created by the network layer) to attach to... */
  tap?: string;
  /** ...or a Linux bridge: the backend then creates (and removes) a tap on it. */
  bridge?: string;
  mtu?: number;
  model?: 'virtio-net-pci' | 'e1000';
}

export interface DomainConfig {
  uuid: string;
  name: string;
  vcpusMax: number;
  vcpusAtStartup: number;
  memoryBytes: number;
  firmware: Firmware;
  /** Boot order like xapi's HVM_boot_params order: c = disk, d = cdrom, n = network. */
  bootOrder: string;
  /** Direct kernel boot (PV-like / test guests). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** xapi platform keys; understood: vga=std|cirrus|none, pvpanic=true|false. */
  platform: Record<string, string>;
  disks: DiskConfig[];
  nics: NicConfig[];
}

export type PowerState = 'running' | 'paused' | 'shutdown' | 'crashed' | 'suspending' | 'resuming';

export interface DomainInfo {
  uuid: string;
  name: string;
  state: PowerState;
  /** OS process id of the device model (0 for the simulator). */
  pid: number;
  /** Raw hypervisor status (e.g. QMP query-status 'status'). */
  status: string;
  /** For state 'shutdown'/'crashed': why ('poweroff', 'reboot', 'panic', 'internal-error', ...). */
  reason?: string;
  /** The configuration the domain was started with. */
  config: DomainConfig;
  /** Milliseconds since epoch when the domain was started. */
  startedAt: number;
}

export type DomainEventKind = 'shutdown' | 'reboot' | 'crash' | 'paused' | 'resumed' | 'exited';
export interface DomainEvent { uuid: string; kind: DomainEventKind; reason?: string }

export interface DomainStats { cpuSeconds: number; memoryActual: number; vcpus: number }

/**
 * A domain's cumulative counters, read once per metrics step. Rates are the
 * metrics layer's business: these only ever grow (until the domain is rebuilt).
 */
export interface DomainCounters {
  /** Seconds each vCPU was busy (running, or ready to run and waiting for a host CPU), by vCPU index. */
  vcpuSeconds: number[];
  /** Memory the domain has now (bytes). */
  memoryBytes: number;
  /** Free memory as the guest sees it (bytes), when something inside tells. */
  memoryFreeBytes?: number;
  /** By disk: its `device` (userdevice) and I/O totals. */
  disks: { device: string; readBytes: number; writeBytes: number; readOps: number; writeOps: number }[];
  /** By NIC: its `device`, totals as the guest sees them (what it received, what it sent). */
  nics: { device: string; rxBytes: number; txBytes: number; rxErrors: number; txErrors: number }[];
}

/** What a live migration took, as the sending device model measured it. */
export interface MigrationStats {
  /** From the start of the migration to the destination's taking over (ms). */
  totalMs: number;
  /** How long the guest was stopped (ms). */
  downtimeMs: number;
  /** Bytes of guest memory sent. */
  transferredBytes: number;
}

export type ConsoleAddress = { unixSocket: string } | { host: string; port: number };

/** What a guest agent inside the domain reports (QEMU guest agent protocol). */
export interface GuestInfo {
  /** Human-readable OS name (os-release PRETTY_NAME, else NAME). */
  osName: string;
  /** os-release VERSION_ID (else VERSION). */
  osVersion: string;
  /** os-release ID (e.g. debian), when the agent reports it. */
  distro?: string;
  /** Kernel release (uname -r). */
  kernel: string;
  hostname: string;
  /** MAC addresses in lower case; addresses without prefix length. */
  interfaces: { name: string; mac: string; ipv4: string[]; ipv6: string[] }[];
  agentVersion: string;
}

export interface HypervisorBackend {
  readonly name: string;
  /** Create and start a domain (paused: create it but do not run the vCPUs). */
  start(cfg: DomainConfig, opts: { paused: boolean }): Promise<DomainInfo>;
  /** clean = ACPI power button, wait for the guest to power off (rejects on timeout, guest left running); hard = destroy. Both remove the domain. */
  shutdown(uuid: string, mode: 'clean' | 'hard', timeoutMs?: number): Promise<void>;
  /** clean = ask the guest (ctrl-alt-del like; rejects on timeout); hard = reset in place. Also restarts a domain stopped after a guest reboot/shutdown. */
  reboot(uuid: string, mode: 'clean' | 'hard', timeoutMs?: number): Promise<void>;
  pause(uuid: string): Promise<void>;
  unpause(uuid: string): Promise<void>;
  /** Save the domain's memory and device state to statePath, then remove the domain. */
  suspend(uuid: string, statePath: string): Promise<void>;
  /** Start a domain from a state file written by suspend (same config). */
  resume(cfg: DomainConfig, statePath: string, opts: { paused: boolean }): Promise<DomainInfo>;
  plugDisk(uuid: string, disk: DiskConfig): Promise<void>;
  unplugDisk(uuid: string, diskId: string): Promise<void>;
  plugNic(uuid: string, nic: NicConfig): Promise<void>;
  unplugNic(uuid: string, nicId: string): Promise<void>;
  /** Insert (path) or eject (null) the medium of a CD drive. */
  insertCd(uuid: string, diskId: string, path: string | null, format?: DiskConfig['format']): Promise<void>;
  /** Domains that exist now, including ones started by a previous daemon process (re-adopted). */
  list(): Promise<DomainInfo[]>;
  get(uuid: string): Promise<DomainInfo | undefined>;
  stats(uuid: string): Promise<DomainStats>;
  /** The domain's counters for metrics: at most one round trip to the device model. */
  readCounters(uuid: string): Promise<DomainCounters>;
  /** Bounded log file of the serial console (and, when available, a unix socket for interactive use). */
  serialLog(uuid: string): { path: string; socket?: string };
  /** Where the RFB (VNC) console listens. */
  vncAddress(uuid: string): ConsoleAddress;
  /** Ask the guest agent (if the guest runs one) about the OS and its network; undefined when none answers within timeoutMs. */
  guestInfo?(uuid: string, timeoutMs?: number): Promise<GuestInfo | undefined>;
  /**
   * Live migration, receiving side: a domain with this configuration that
   * waits for its state at the returned URI (listening on this host's address
   * `listen`). finishIncoming resolves once the state has arrived and the
   * domain runs; a failed migration is cleaned up with shutdown(uuid, 'hard').
   */
  prepareIncoming?(cfg: DomainConfig, listen: string): Promise<{ uri: string }>;
  finishIncoming?(uuid: string): Promise<DomainInfo>;
  /** Sending side: the running domain's state goes to `uri` while it runs; on success the domain is gone here, on failure it runs on. */
  migrateOut?(uuid: string, uri: string): Promise<MigrationStats>;
  onEvent(listener: (e: DomainEvent) => void): () => void;
  /** Stop watching domains (does NOT kill guests). */
  close(): Promise<void>;
}

export class DomainNotFound extends Error {
  constructor(public readonly uuid: string) { super(`domain ${uuid} not found`); this.name = 'DomainNotFound'; }
}
export class DomainExists extends Error {
  constructor(public readonly uuid: string) { super(`domain ${uuid} already exists`); this.name = 'DomainExists'; }
}
export class BadPowerState extends Error {
  constructor(public readonly uuid: string, public readonly state: string, op: string) {
    super(`domain ${uuid}: cannot ${op} in state ${state}`); this.name = 'BadPowerState';
  }
}
export class OperationTimeout extends Error {
  constructor(public readonly uuid: string, op: string, ms: number) {
    super(`domain ${uuid}: ${op} did not complete within ${ms} ms`); this.name = 'OperationTimeout';
  }
}
