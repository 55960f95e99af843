// Linux-bridge backend for hosts without Open vSwitch. Same interface, fewer
// features: no VLANs (this kernel has neither 802.1Q devices nor bridge VLAN
// filtering), no bonds (no bonding driver), no MAC/IP locking (only
// 'unlocked' is accepted), no tunnels. Those throw UnsupportedError
// subclasses (a reconcile leaves tunnels out: they cannot have been made here).
//
// Ownership: bridges carry ifalias "xenon-bridge", taps "xenon-tap"; any
// port enslaved to a Xenon bridge is considered Xenon's.
import { Runner } from '../exec.ts';
import {
  BridgeNotFoundError, InvalidArgumentError, NotOwnedError, UnsupportedError, VlanUnsupportedError,
  type BondMode, type BridgeOptions, type BridgeSpec, type InterfaceStats, type LockingSpec,
  type NetworkBackend, type PortOptions, type ReconcileResult, type TapOptions, type TapSpec, type TunnelSpec,
} from '../backend.ts';
import {
  BRIDGE_ALIAS, checkIfName, checkMac, checkMtu, deleteTapDevice, ensureTapDevice, getLink, isTap, linkStats,
  listLinks, TAP_ALIAS, type LinkInfo,
} from '../links.ts';

export interface BridgeBackendOptions {
  netns?: string;
  log?: (msg: string) => void;
}

function isOwnedBridge(l: LinkInfo | null | undefined): boolean {
  return !!l && l.linkinfo?.info_kind === 'bridge' && l.ifalias === BRIDGE_ALIAS;
}

export class BridgeBackend implements NetworkBackend {
  readonly kind = 'bridge' as const;
  readonly runner: Runner;

  constructor(readonly opts: BridgeBackendOptions = {}) {
    this.runner = new Runner(opts.netns);
  }

  private ip(...args: string[]) {
    return this.runner.run('ip', args);
  }

  async start(): Promise<void> {
    await this.ip('link', 'show', 'lo');
  }
  async stop(): Promise<void> {}
  async detach(): Promise<void> {}

  private checkLocking(l?: LockingSpec): void {
    if (l && l.mode !== 'unlocked') throw new UnsupportedError('locking', `locking mode ${l.mode} is not supported by the Linux bridge backend`);
  }

  async ensureBridge(name: string, opts: BridgeOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.vlan) throw new VlanUnsupportedError();
    if (opts.mtu !== undefined) checkMtu(opts.mtu);
    const l = await getLink(this.runner, name);
    if (l && !isOwnedBridge(l)) throw new NotOwnedError(`device ${name}`);
    if (!l) {
      await this.ip('link', 'add', 'name', name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
      await this.ip('link', 'set', 'dev', name, 'alias', BRIDGE_ALIAS);
    }
    if (opts.mtu !== undefined) await this.ip('link', 'set', 'dev', name, 'mtu', String(opts.mtu));
    if (opts.uplink !== undefined) {
      checkIfName(opts.uplink);
      const u = await getLink(this.runner, opts.uplink);
      if (!u) throw new InvalidArgumentError(`no such device ${opts.uplink}`);
      if (u.master && u.master !== name) {
        if (!isOwnedBridge(await getLink(this.runner, u.master))) throw new NotOwnedError(`device ${opts.uplink} (on ${u.master})`);
      }
      if (opts.mtu !== undefined) await this.ip('link', 'set', 'dev', opts.uplink, 'mtu', String(opts.mtu));
      await this.ip('link', 'set', 'dev', opts.uplink, 'master', name, 'up');
    }
    await this.ip('link', 'set', 'dev', name, 'up');
  }

  async removeBridge(name: string): Promise<void> {
    checkIfName(name);
    const l = await getLink(this.runner, name);
    if (!l) return;
    if (!isOwnedBridge(l)) throw new NotOwnedError(`device ${name}`);
    await this.ip('link', 'del', 'dev', name);
  }

  async listBridges(): Promise<string[]> {
    return (await listLinks(this.runner)).filter(isOwnedBridge).map((l) => l.ifname).sort();
  }

  private async requireBridge(bridge: string): Promise<void> {
    const b = await getLink(this.runner, bridge);
    if (!b) throw new BridgeNotFoundError(bridge);
    if (!isOwnedBridge(b)) throw new NotOwnedError(`bridge ${bridge}`);
  }

  async createTap(name: string, bridge: string, opts: TapOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.vlanTag !== undefined) throw new VlanUnsupportedError();
    this.checkLocking(opts.locking);
    if (opts.mac) checkMac(opts.mac);
    if (opts.mtu !== undefined) checkMtu(opts.mtu);
    await this.requireBridge(bridge);
    await ensureTapDevice(this.runner, name, opts.mtu, false);
    await this.ip('link', 'set', 'dev', name, 'master', bridge);
    await this.ip('link', 'set', 'dev', name, 'up');
  }

  async removeTap(name: string): Promise<void> {
    checkIfName(name);
    await deleteTapDevice(this.runner, name);
  }

  async listTaps(): Promise<{ name: string; bridge: string }[]> {
    const links = await listLinks(this.runner);
    const owned = new Set(links.filter(isOwnedBridge).map((l) => l.ifname));
    return links
      .filter((l) => isTap(l) && l.ifalias === TAP_ALIAS)
      .map((l) => ({ name: l.ifname, bridge: l.master && owned.has(l.master) ? l.master : '' }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async setLocking(name: string, locking: LockingSpec): Promise<void> {
    checkIfName(name);
    this.checkLocking(locking);
  }

  async addPort(name: string, bridge: string, opts: PortOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.vlanTag !== undefined) throw new VlanUnsupportedError();
    this.checkLocking(opts.locking);
    await this.requireBridge(bridge);
    const l = await getLink(this.runner, name);
    if (!l) throw new InvalidArgumentError(`no such device ${name}`);
    if (l.master && l.master !== bridge && !isOwnedBridge(await getLink(this.runner, l.master))) {
      throw new NotOwnedError(`device ${name} (on ${l.master})`);
    }
    if (opts.mtu !== undefined) await this.ip('link', 'set', 'dev', name, 'mtu', String(opts.mtu));
    await this.ip('link', 'set', 'dev', name, 'master', bridge, 'up');
  }

  async removePort(name: string): Promise<void> {
    checkIfName(name);
    const l = await getLink(this.runner, name);
    if (!l?.master) return;
    if (!isOwnedBridge(await getLink(this.runner, l.master))) throw new NotOwnedError(`port ${name} of ${l.master}`);
    await this.ip('link', 'set', 'dev', name, 'nomaster');
  }

  async createBond(_bridge: string, _name: string, _members: string[], _mode: BondMode): Promise<void> {
    throw new UnsupportedError('bond', 'bonds are not supported by the Linux bridge backend (no bonding driver on this kernel)');
  }
  async removeBond(_bridge: string, _name: string): Promise<void> {
    throw new UnsupportedError('bond', 'bonds are not supported by the Linux bridge backend');
  }

  async setTunnels(_bridge: string, spec: TunnelSpec | null): Promise<void> {
    if (spec) throw new UnsupportedError('tunnel', 'tunnels need Open vSwitch (the Linux bridge backend has none; this kernel has no GRE devices)');
  }

  async interfaceStats(name: string): Promise<InterfaceStats> {
    checkIfName(name);
    return linkStats(this.runner, name);
  }

  async reconcile(desired: { bridges: BridgeSpec[]; taps: TapSpec[] }): Promise<ReconcileResult> {
    for (const b of desired.bridges) {
      if (b.vlan) throw new VlanUnsupportedError();
      if (b.bond) throw new UnsupportedError('bond', 'bonds are not supported by the Linux bridge backend');
    }
    for (const t of desired.taps) {
      if (t.vlanTag !== undefined) throw new VlanUnsupportedError();
      this.checkLocking(t.locking);
    }
    const removed: string[] = [];
    const created: string[] = [];
    const wantBr = new Set(desired.bridges.map((b) => b.name));
    const wantTap = new Map(desired.taps.map((t) => [t.name, t.bridge]));
    for (const t of await this.listTaps()) {
      if (!wantTap.has(t.name)) {
        await this.removeTap(t.name);
        removed.push(t.name);
      }
    }
    for (const b of await this.listBridges()) {
      if (!wantBr.has(b)) {
        await this.removeBridge(b);
        removed.push(b);
      }
    }
    // ports on Xenon bridges that nobody wants any more
    const wantPorts = new Map<string, string>();
    for (const b of desired.bridges) {
      if (b.uplink) wantPorts.set(b.uplink, b.name);
      for (const p of b.ports ?? []) wantPorts.set(p, b.name);
    }
    const links = await listLinks(this.runner);
    const ownedBr = new Set(links.filter(isOwnedBridge).map((l) => l.ifname));
    for (const l of links) {
      if (!l.master || !ownedBr.has(l.master) || (isTap(l) && l.ifalias === TAP_ALIAS)) continue;
      if (wantPorts.get(l.ifname) !== l.master) {
        await this.ip('link', 'set', 'dev', l.ifname, 'nomaster');
        removed.push(l.ifname);
      }
    }
    for (const b of desired.bridges) {
      const had = ownedBr.has(b.name);
      await this.ensureBridge(b.name, { mtu: b.mtu, uplink: b.uplink });
      if (!had) created.push(b.name);
      for (const p of b.ports ?? []) {
        if ((await getLink(this.runner, p))?.master !== b.name) created.push(p);
        await this.addPort(p, b.name);
      }
    }
    const tapsNow = new Map((await this.listTaps()).map((t) => [t.name, t.bridge]));
    for (const t of desired.taps) {
      const had = tapsNow.get(t.name) === t.bridge;
      await this.createTap(t.name, t.bridge, t);
      if (!had) created.push(t.name);
    }
    return { removed, created };
  }
}
