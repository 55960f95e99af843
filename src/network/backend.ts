// The network driver layer: a small, typed interface over the host's virtual
// switching. It knows nothing about the XenAPI or the database; callers pass
// plain values (bridge names, tap names, tags, addresses).
//
// Ownership: a backend only ever lists, changes or removes objects it marked
// as Xenon's own (OVS: external_ids:xenon=1; kernel devices: ifalias
// "xenon-bridge" / "xenon-tap"). Anything else is left alone and
// operations on it throw NotOwnedError.

export type LockingMode = 'unlocked' | 'locked' | 'disabled';

export interface LockingSpec {
  mode: LockingMode;
  /** IPv4 addresses the VIF may send from (locked mode). */
  ipv4: string[];
  /** IPv6 addresses the VIF may send from (locked mode); list link-local ones too. */
  ipv6: string[];
  /** The guest's MAC; empty = use TapOptions.mac. */
  mac: string;
}

export interface BridgeOptions {
  mtu?: number;
  /** A host NIC (PIF device) to attach as the bridge's uplink port. */
  uplink?: string;
  /** Make this bridge a VLAN of another bridge (OVS fake bridge, like XenServer). */
  vlan?: { parentBridge: string; tag: number };
}

export interface TapOptions {
  /** The guest's MAC address (what QEMU uses). Recorded, and used for locking; the host side of the tap keeps its own MAC. */
  mac?: string;
  mtu?: number;
  /** Access VLAN tag on the port (not allowed on VLAN/fake bridges, where the bridge's tag applies). */
  vlanTag?: number;
  locking?: LockingSpec;
}

/** An existing device (veth end, NIC) attached as a port; locking works as for taps. */
export interface PortOptions {
  vlanTag?: number;
  mtu?: number;
  mac?: string;
  locking?: LockingSpec;
}

/**
 * A bridge's tunnels to other hosts (a cross-host private network): one port
 * per remote address, all with the network's key so that several private
 * networks over the same hosts stay apart. The ports do not forward to each
 * other (each host reaches every other directly), so a full mesh has no loop.
 */
export interface TunnelSpec {
  protocol: 'gre' | 'vxlan';
  /** GRE key / VXLAN network identifier, the same on every host of the network (1..2^24-1). */
  key: number;
  /** The other hosts' transport addresses (IPv4). */
  remotes: string[];
}

export interface BridgeSpec extends BridgeOptions {
  name: string;
  /** Tunnels to other hosts carrying this bridge's network. */
  tunnels?: TunnelSpec;
  /** A bond as the bridge's uplink (OVS only). */
  bond?: { name: string; members: string[]; mode: BondMode };
  /** Other Xenon-owned ports (existing devices, see addPort) to keep on the bridge. */
  ports?: string[];
}

export interface TapSpec extends TapOptions {
  name: string;
  bridge: string;
}

export type BondMode = 'active-backup' | 'balance-slb';

export interface InterfaceStats {
  /** Raw kernel counters of the host-side device (for a tap: rx = sent by the guest, tx = delivered to the guest). */
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  txDropped: number;
}

export interface ReconcileResult {
  removed: string[];
  created: string[];
}

export interface NetworkBackend {
  readonly kind: 'ovs' | 'bridge';
  /** Start or adopt whatever the backend needs (OVS: private ovsdb-server + ovs-vswitchd). Idempotent. */
  start(): Promise<void>;
  /** Stop daemons this backend runs (OVS: ovs-vswitchd + ovsdb-server; all switching stops). */
  stop(): Promise<void>;
  /** Let go of the daemons without stopping them (toolstack restart); a new instance adopts them with start(). */
  detach(): Promise<void>;

  ensureBridge(name: string, opts?: BridgeOptions): Promise<void>;
  removeBridge(name: string): Promise<void>;
  /** Xenon-owned bridges only (VLAN/fake bridges included). */
  listBridges(): Promise<string[]>;

  createTap(name: string, bridge: string, opts?: TapOptions): Promise<void>;
  removeTap(name: string): Promise<void>;
  /** Xenon-owned taps; bridge is '' for a tap that is currently on no bridge. */
  listTaps(): Promise<{ name: string; bridge: string }[]>;
  /** Change the locking of an existing tap or port. */
  setLocking(name: string, locking: LockingSpec): Promise<void>;

  /** Attach an existing device (veth end, NIC) as a Xenon-owned port. */
  addPort(name: string, bridge: string, opts?: PortOptions): Promise<void>;
  removePort(name: string): Promise<void>;

  createBond(bridge: string, name: string, members: string[], mode: BondMode): Promise<void>;
  removeBond(bridge: string, name: string): Promise<void>;

  interfaceStats(name: string): Promise<InterfaceStats>;

  /**
   * Makes the bridge's tunnel ports those of `spec` (none when null): ports to
   * remotes no longer listed go, missing ones are added. OVS only; the
   * Linux-bridge backend throws UnsupportedError('tunnel') for a non-null spec.
   */
  setTunnels(bridge: string, spec: TunnelSpec | null): Promise<void>;

  /** Remove stale Xenon-owned bridges/ports/taps and create missing ones. Non-Xenon objects are never touched. */
  reconcile(desired: { bridges: BridgeSpec[]; taps: TapSpec[] }): Promise<ReconcileResult>;
}

export class NetworkError extends Error {
  override name = 'NetworkError';
}
/** The backend cannot do this on this host (e.g. VLANs on the Linux-bridge backend). */
export class UnsupportedError extends NetworkError {
  override name = 'UnsupportedError';
  constructor(readonly feature: 'vlan' | 'bond' | 'locking' | 'tunnel', message: string) {
    super(message);
  }
}
export class VlanUnsupportedError extends UnsupportedError {
  override name = 'VlanUnsupportedError';
  constructor(message = 'VLAN networks are not supported by the Linux bridge backend (this kernel has no 802.1Q devices or bridge VLAN filtering)') {
    super('vlan', message);
  }
}
export class BridgeNotFoundError extends NetworkError {
  override name = 'BridgeNotFoundError';
  constructor(readonly bridge: string) {
    super(`bridge ${bridge} does not exist`);
  }
}
export class NotOwnedError extends NetworkError {
  override name = 'NotOwnedError';
  constructor(readonly object: string) {
    super(`${object} exists but is not owned by Xenon; refusing to change it`);
  }
}
export class ConflictError extends NetworkError {
  override name = 'ConflictError';
}
export class InvalidArgumentError extends NetworkError {
  override name = 'InvalidArgumentError';
}
