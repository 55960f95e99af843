// Open vSwitch backend: a private ovsdb-server + ovs-vswitchd (user-space
// `netdev` datapath) per run directory, optionally inside a network
// namespace. VLAN networks are OVS fake bridges (`add-br child parent tag`,
// as XenServer does), taps are persistent kernel taps added as ports, MAC/IP
// locking is OpenFlow rules, bonds are OVS bonds, cross-host private networks
// are GRE/VXLAN tunnel ports (tunnels.ts).
//
// Daemon lifetime: see daemons.ts. With the netdev datapath the switching
// happens inside ovs-vswitchd, so the daemons are detached and outlive the
// toolstack; `detach()` leaves them running, `stop()` stops them. If
// ovs-vswitchd dies, `start()` (or the optional watchdog) restarts it: it
// rebuilds bridges and reopens the persistent taps from the database, and
// the backend re-installs the locking flows (which OVS does not persist).
import { Runner } from '../exec.ts';
import {
  BridgeNotFoundError, ConflictError, InvalidArgumentError, NotOwnedError,
  type BondMode, type BridgeOptions, type BridgeSpec, type InterfaceStats, type LockingSpec,
  type NetworkBackend, type PortOptions, type ReconcileResult, type TapOptions, type TapSpec, type TunnelSpec,
} from '../backend.ts';
import {
  checkIfName, checkMac, checkMtu, checkTag, deleteTapDevice, ensureTapDevice, getLink, linkStats,
  listOwnedTapDevices,
} from '../links.ts';
import { OvsDaemons, OvsPaths, DEFAULT_SCHEMA } from './daemons.ts';
import { snapshot, ovsString, type OvsSnapshot } from './ovsdb.ts';
import { tunnelCommands } from './tunnels.ts';
import { decodeLocking, encodeLocking, lockingBundle, normalizeLocking } from './locking.ts';

export interface OvsBackendOptions {
  /** Private run directory: conf.db, sockets, pidfiles, logs (e.g. `<dataDir>/run/ovs`). */
  runDir: string;
  /** Network namespace the daemons (and hence bridges, taps) live in. */
  netns?: string;
  schema?: string;
  /** Seconds ovs-vsctl waits for ovs-vswitchd to apply a change. */
  timeoutSec?: number;
  /**
   * Enable OVS user-space TSO (default true). Without it the netdev datapath
   * cannot forward the TSO/GSO super-frames that veths and vnet_hdr taps
   * (QEMU virtio-net) hand it, and TCP between ports stalls. Applied when
   * ovs-vswitchd is (re)started.
   */
  userspaceTso?: boolean;
  /** If > 0, start() also runs a watchdog restarting dead daemons every this many ms. */
  watchdogMs?: number;
  log?: (msg: string) => void;
}

const UNLOCKED: LockingSpec = { mode: 'unlocked', ipv4: [], ipv6: [], mac: '' };

export class OvsBackend implements NetworkBackend {
  readonly kind = 'ovs' as const;
  readonly runner: Runner;
  readonly daemons: OvsDaemons;
  private watchdog: NodeJS.Timeout | null = null;
  private watchdogTickP: Promise<void> | null = null;
  private readonly timeoutSec: number;

  constructor(readonly opts: OvsBackendOptions) {
    this.runner = new Runner(opts.netns, new OvsPaths(opts.runDir).env());
    this.daemons = new OvsDaemons(this.runner, opts.runDir, opts.schema ?? DEFAULT_SCHEMA, {
      'userspace-tso-enable': String(opts.userspaceTso ?? true),
    });
    this.timeoutSec = opts.timeoutSec ?? 15;
  }

  get runDir(): string { return this.opts.runDir; }

  private log(msg: string) { this.opts.log?.(msg); }

  // ---- low-level helpers -------------------------------------------------

  vsctlArgs(): string[] {
    return [`--db=unix:${this.daemons.paths.dbSock}`, `--timeout=${this.timeoutSec}`];
  }

  async vsctl(...args: string[]): Promise<string> {
    const res = await this.runner.run('ovs-vsctl', [...this.vsctlArgs(), ...args], {
      noNetns: true, timeoutMs: (this.timeoutSec + 5) * 1000,
    });
    return res.stdout;
  }

  /** ovs-ofctl against one of our bridges (over its private mgmt socket). */
  async ofctl(bridge: string, cmd: string, ...rest: string[]): Promise<string> {
    const res = await this.runner.run('ovs-ofctl', ['-O', 'OpenFlow14', cmd, `unix:${this.daemons.paths.mgmt(bridge)}`, ...rest], { noNetns: true });
    return res.stdout;
  }

  async appctl(...args: string[]): Promise<string> {
    const res = await this.runner.run('ovs-appctl', ['-t', this.daemons.paths.vsCtl, ...args], { noNetns: true });
    return res.stdout;
  }

  snapshot(): Promise<OvsSnapshot> {
    return snapshot(this.runner, this.vsctlArgs());
  }

  // ---- lifecycle ---------------------------------------------------------

  async start(): Promise<void> {
    const { startedOvsdb, startedVswitchd } = await this.daemons.ensureRunning();
    if (startedOvsdb || startedVswitchd) this.log(`ovs: started ${[startedOvsdb && 'ovsdb-server', startedVswitchd && 'ovs-vswitchd'].filter(Boolean).join(', ')}`);
    await this.restoreRuntimeState();
    if (this.opts.watchdogMs && this.opts.watchdogMs > 0 && !this.watchdog) {
      this.watchdog = setInterval(() => {
        if (!this.watchdogTickP) this.watchdogTickP = this.watchdogTick().finally(() => { this.watchdogTickP = null; });
      }, this.opts.watchdogMs);
      this.watchdog.unref();
    }
  }

  private async watchdogTick(): Promise<void> {
    try {
      const { startedOvsdb, startedVswitchd } = await this.daemons.ensureRunning();
      if (startedOvsdb || startedVswitchd) {
        this.log('ovs watchdog: restarted daemons');
        await this.restoreRuntimeState();
      }
    } catch (e) {
      this.log(`ovs watchdog: ${(e as Error).message}`);
    }
  }

  /** State OVS does not keep across an ovs-vswitchd restart: link state of bridge devices, OpenFlow rules. */
  private async restoreRuntimeState(): Promise<void> {
    const s = await this.snapshot();
    for (const b of s.bridges.values()) {
      if (b.owned) await this.runner.tryRun('ip', ['link', 'set', 'dev', b.name, 'up']);
    }
    for (const p of s.ports.values()) {
      if (!p.owned || (p.role !== 'tap' && p.role !== 'port')) continue;
      await this.applyLocking(p.name, s).catch((e: Error) => this.log(`ovs: re-applying locking of ${p.name}: ${e.message}`));
    }
  }

  async stop(): Promise<void> {
    await this.stopWatchdog();
    // the user-space datapath's bridge devices are persistent taps: they go with the switch
    for (const bridge of (await this.listBridges().catch(() => [] as string[])).reverse()) {
      await this.removeBridge(bridge).catch(() => undefined);
    }
    await this.daemons.stopAll();
  }

  async detach(): Promise<void> {
    await this.stopWatchdog();
  }

  private async stopWatchdog(): Promise<void> {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    await this.watchdogTickP; // let an in-flight check finish before anyone stops the daemons
  }

  // ---- bridges -----------------------------------------------------------

  async ensureBridge(name: string, opts: BridgeOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.mtu !== undefined) checkMtu(opts.mtu);
    if (opts.uplink !== undefined) checkIfName(opts.uplink);
    const s = await this.snapshot();
    const existing = s.bridges.get(name);
    if (existing && !existing.owned) throw new NotOwnedError(`bridge ${name}`);
    if (opts.vlan) {
      const { parentBridge, tag } = opts.vlan;
      checkTag(tag);
      const parent = s.bridges.get(parentBridge);
      if (!parent) throw new BridgeNotFoundError(parentBridge);
      if (parent.fake) throw new InvalidArgumentError(`VLAN parent ${parentBridge} is itself a VLAN bridge`);
      if (opts.uplink) throw new InvalidArgumentError('a VLAN bridge takes its uplink from its parent');
      if (existing) {
        if (!existing.fake || existing.parent !== parentBridge || existing.tag !== tag) {
          throw new ConflictError(`bridge ${name} exists with a different VLAN configuration`);
        }
      } else {
        const clash = [...s.bridges.values()].find((b) => b.fake && b.parent === parentBridge && b.tag === tag);
        if (clash) throw new ConflictError(`VLAN ${tag} on ${parentBridge} already has bridge ${clash.name}`);
        await this.vsctl('add-br', name, parentBridge, String(tag), '--', 'br-set-external-id', name, 'xenon', '1');
      }
    } else {
      if (existing) {
        if (existing.fake) throw new ConflictError(`bridge ${name} exists as a VLAN bridge`);
      } else {
        await this.vsctl('add-br', name, '--', 'set', 'Bridge', name, 'datapath_type=netdev',
          '--', 'br-set-external-id', name, 'xenon', '1');
      }
    }
    if (opts.mtu !== undefined) await this.vsctl('set', 'Interface', name, `mtu_request=${opts.mtu}`);
    if (opts.uplink !== undefined) {
      const cur = s.ports.get(opts.uplink);
      if (cur && !cur.owned) throw new NotOwnedError(`port ${opts.uplink}`);
      if (cur && cur.realBridge !== name) await this.vsctl('del-port', opts.uplink);
      for (const p of s.ports.values()) {
        if (p.realBridge === name && p.owned && p.role === 'uplink' && p.name !== opts.uplink) {
          await this.vsctl('del-port', p.name);
        }
      }
      await this.runner.run('ip', ['link', 'set', 'dev', opts.uplink, 'up']);
      await this.vsctl('--may-exist', 'add-port', name, opts.uplink,
        '--', 'set', 'Port', opts.uplink, 'external_ids:xenon=1', 'external_ids:xenon-role=uplink',
        '--', 'set', 'Interface', opts.uplink, 'external_ids:xenon=1',
        ...(opts.mtu !== undefined ? [`mtu_request=${opts.mtu}`] : []));
    }
    await this.runner.tryRun('ip', ['link', 'set', 'dev', name, 'up']);
  }

  async removeBridge(name: string): Promise<void> {
    checkIfName(name);
    const s = await this.snapshot();
    const b = s.bridges.get(name);
    if (!b) return;
    if (!b.owned) throw new NotOwnedError(`bridge ${name}`);
    if (!b.fake) {
      const foreignChild = [...s.bridges.values()].find((c) => c.fake && c.parent === name && !c.owned);
      if (foreignChild) throw new NotOwnedError(`VLAN bridge ${foreignChild.name} on ${name}`);
    }
    // Locking flows die with a real bridge; on a fake bridge they live on the parent.
    if (b.fake) {
      for (const p of s.ports.values()) if (p.bridge === name && p.owned) await this.clearLockingFlows(p.name, p.realBridge);
    }
    await this.vsctl('--if-exists', 'del-br', name);
  }

  async listBridges(): Promise<string[]> {
    const s = await this.snapshot();
    return [...s.bridges.values()].filter((b) => b.owned).map((b) => b.name).sort();
  }

  // ---- ports and taps ----------------------------------------------------

  private portTagArgs(name: string, bridge: { fake: boolean; tag?: number }, vlanTag?: number): string[] {
    if (vlanTag !== undefined) {
      checkTag(vlanTag);
      if (bridge.fake && vlanTag !== bridge.tag) throw new InvalidArgumentError(`bridge is VLAN ${bridge.tag}; cannot tag port ${name} with ${vlanTag}`);
    }
    if (bridge.fake) return [];
    return vlanTag !== undefined ? ['--', 'set', 'Port', name, `tag=${vlanTag}`] : ['--', 'clear', 'Port', name, 'tag'];
  }

  /** Ensure `name` is a port of `bridge` (moving it if it is on another one). */
  private async attach(s: OvsSnapshot, name: string, bridge: string, role: string, extra: string[]): Promise<boolean> {
    const br = s.bridges.get(bridge);
    if (!br) throw new BridgeNotFoundError(bridge);
    if (!br.owned) throw new NotOwnedError(`bridge ${bridge}`);
    const cur = s.ports.get(name);
    if (cur && !cur.owned) throw new NotOwnedError(`port ${name}`);
    if (cur && cur.bridge !== bridge) {
      await this.clearLockingFlows(name, cur.realBridge);
      await this.vsctl('del-port', name);
    }
    const isNew = !cur || cur.bridge !== bridge;
    await this.vsctl('--may-exist', 'add-port', bridge, name,
      '--', 'set', 'Port', name, 'external_ids:xenon=1', `external_ids:xenon-role=${role}`,
      ...extra);
    return isNew;
  }

  async addPort(name: string, bridge: string, opts: PortOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.mtu !== undefined) checkMtu(opts.mtu);
    const mac = opts.mac ? checkMac(opts.mac) : '';
    const locking = opts.locking ? normalizeLocking(opts.locking, mac) : UNLOCKED;
    const s = await this.snapshot();
    const br = s.bridges.get(bridge);
    if (!br) throw new BridgeNotFoundError(bridge);
    if (!(await getLink(this.runner, name))) throw new InvalidArgumentError(`no such device ${name}`);
    await this.attach(s, name, bridge, 'port', [
      ...this.portTagArgs(name, br, opts.vlanTag),
      '--', 'set', 'Interface', name, 'external_ids:xenon=1',
      `external_ids:attached-mac=${ovsString(mac)}`,
      `external_ids:xenon-locking=${ovsString(encodeLocking(locking))}`,
      ...(opts.mtu !== undefined ? [`mtu_request=${opts.mtu}`] : []),
    ]);
    await this.applyLocking(name);
    await this.runner.run('ip', ['link', 'set', 'dev', name, 'up']);
  }

  async removePort(name: string): Promise<void> {
    checkIfName(name);
    const s = await this.snapshot();
    const p = s.ports.get(name);
    if (!p) return;
    if (!p.owned) throw new NotOwnedError(`port ${name}`);
    await this.clearLockingFlows(name, p.realBridge);
    await this.vsctl('--if-exists', 'del-port', name);
  }

  async createTap(name: string, bridge: string, opts: TapOptions = {}): Promise<void> {
    checkIfName(name);
    if (opts.mtu !== undefined) checkMtu(opts.mtu);
    const mac = opts.mac ? checkMac(opts.mac) : '';
    const locking = opts.locking ? normalizeLocking(opts.locking, mac) : UNLOCKED;
    const s = await this.snapshot();
    const br = s.bridges.get(bridge);
    if (!br) throw new BridgeNotFoundError(bridge);
    const tagArgs = this.portTagArgs(name, br, opts.vlanTag);
    const hadDevice = (await getLink(this.runner, name)) !== null;
    // Keep a new tap down until its locking rules are installed.
    await ensureTapDevice(this.runner, name, opts.mtu, false);
    await this.attach(s, name, bridge, 'tap', [
      ...tagArgs,
      '--', 'set', 'Interface', name, 'external_ids:xenon=1',
      `external_ids:attached-mac=${ovsString(mac)}`,
      `external_ids:xenon-locking=${ovsString(encodeLocking(locking))}`,
      ...(opts.mtu !== undefined ? [`mtu_request=${opts.mtu}`] : []),
    ]);
    await this.applyLocking(name);
    await this.runner.run('ip', ['link', 'set', 'dev', name, 'up']);
    this.log(`ovs: tap ${name} on ${bridge}${hadDevice ? ' (existing device)' : ''}`);
  }

  async setLocking(name: string, locking: LockingSpec): Promise<void> {
    const s = await this.snapshot();
    const iface = s.ifaces.get(name);
    const p = s.ports.get(name);
    if (!iface || !p || !p.owned || (p.role !== 'tap' && p.role !== 'port')) throw new InvalidArgumentError(`no Xenon tap or port ${name}`);
    const l = normalizeLocking(locking, iface.externalIds['attached-mac']);
    await this.vsctl('set', 'Interface', name, `external_ids:xenon-locking=${ovsString(encodeLocking(l))}`);
    await this.applyLocking(name);
    // the datapath's cached flows still pass a frame or two until they are revalidated: the change holds once this returns
    await this.appctl('revalidator/wait').catch(() => undefined);
  }

  /** Install the locking rules stored for a tap port (one atomic bundle). */
  async applyLocking(name: string, s?: OvsSnapshot): Promise<void> {
    s ??= await this.snapshot();
    const p = s.ports.get(name);
    const iface = s.ifaces.get(name);
    if (!p || !iface) return;
    const l = decodeLocking(iface.externalIds['xenon-locking']) ?? UNLOCKED;
    const ofport = iface.ofport ?? -1;
    if (l.mode !== 'unlocked' && ofport <= 0) {
      throw new InvalidArgumentError(`port ${name} has no OpenFlow port number (ofport ${ofport}); cannot lock it`);
    }
    await this.runner.run('ovs-ofctl', ['-O', 'OpenFlow14', '--bundle', 'add-flows', `unix:${this.daemons.paths.mgmt(p.realBridge)}`, '-'], {
      noNetns: true, input: lockingBundle(ofport, name, l),
    });
  }

  private async clearLockingFlows(name: string, realBridge: string): Promise<void> {
    await this.runner.tryRun('ovs-ofctl', ['-O', 'OpenFlow14', '--bundle', 'add-flows', `unix:${this.daemons.paths.mgmt(realBridge)}`, '-'], {
      noNetns: true, input: lockingBundle(null, name, null),
    });
  }

  async removeTap(name: string): Promise<void> {
    checkIfName(name);
    const s = await this.snapshot();
    const p = s.ports.get(name);
    if (p) {
      if (!p.owned) throw new NotOwnedError(`port ${name}`);
      await this.clearLockingFlows(name, p.realBridge);
      await this.vsctl('--if-exists', 'del-port', name);
    }
    await deleteTapDevice(this.runner, name);
  }

  async listTaps(): Promise<{ name: string; bridge: string }[]> {
    const s = await this.snapshot();
    const out = new Map<string, string>();
    for (const l of await listOwnedTapDevices(this.runner)) out.set(l.ifname, '');
    for (const p of s.ports.values()) if (p.owned && p.role === 'tap') out.set(p.name, p.bridge);
    return [...out].map(([name, bridge]) => ({ name, bridge })).sort((a, b) => a.name.localeCompare(b.name));
  }

  // ---- bonds -------------------------------------------------------------

  async createBond(bridge: string, name: string, members: string[], mode: BondMode): Promise<void> {
    checkIfName(name);
    members.forEach(checkIfName);
    if (members.length < 2) throw new InvalidArgumentError('a bond needs at least two members');
    if (mode !== 'active-backup' && mode !== 'balance-slb') throw new InvalidArgumentError(`invalid bond mode ${mode}`);
    const s = await this.snapshot();
    const br = s.bridges.get(bridge);
    if (!br) throw new BridgeNotFoundError(bridge);
    if (br.fake) throw new InvalidArgumentError('bonds belong on the parent bridge, not a VLAN bridge');
    if (!br.owned) throw new NotOwnedError(`bridge ${bridge}`);
    const cur = s.ports.get(name);
    if (cur) {
      if (!cur.owned) throw new NotOwnedError(`port ${name}`);
      const same = cur.realBridge === bridge && [...cur.interfaces].sort().join() === [...members].sort().join();
      if (!same) await this.vsctl('del-port', name);
    }
    for (const m of members) {
      const inBond = [...s.ports.values()].find((p) => p.name !== m && p.name !== name && p.interfaces.includes(m));
      if (inBond) throw new ConflictError(`${m} is already a member of ${inBond.name}`);
      const mp = s.ports.get(m);
      if (mp) {
        if (!mp.owned) throw new NotOwnedError(`port ${m}`);
        await this.vsctl('del-port', m);
      }
      await this.runner.run('ip', ['link', 'set', 'dev', m, 'up']);
    }
    await this.vsctl('--may-exist', 'add-bond', bridge, name, ...members,
      '--', 'set', 'Port', name, `bond_mode=${mode}`, 'lacp=off', 'other_config:bond-detect-mode=carrier',
      'other_config:bond-rebalance-interval=10000',
      'external_ids:xenon=1', 'external_ids:xenon-role=bond');
    for (const m of members) await this.vsctl('set', 'Interface', m, 'external_ids:xenon=1');
  }

  async removeBond(bridge: string, name: string): Promise<void> {
    const s = await this.snapshot();
    const p = s.ports.get(name);
    if (!p) return;
    if (!p.owned) throw new NotOwnedError(`bond ${name}`);
    if (p.realBridge !== bridge) throw new InvalidArgumentError(`bond ${name} is on ${p.realBridge}, not ${bridge}`);
    await this.vsctl('--if-exists', 'del-port', name);
  }

  /** `ovs-appctl bond/show` for a bond (diagnostics, tests). */
  bondShow(name: string): Promise<string> {
    return this.appctl('bond/show', name);
  }

  async setTunnels(bridge: string, spec: TunnelSpec | null): Promise<void> {
    checkIfName(bridge);
    const cmds = tunnelCommands(await this.snapshot(), bridge, spec);
    if (cmds.length) await this.vsctl(...cmds.flat().slice(1));
  }

  async interfaceStats(name: string): Promise<InterfaceStats> {
    checkIfName(name);
    return linkStats(this.runner, name);
  }

  // ---- reconcile -----------------------------------------------------------

  async reconcile(desired: { bridges: BridgeSpec[]; taps: TapSpec[] }): Promise<ReconcileResult> {
    const removed: string[] = [];
    const created: string[] = [];
    const wantBr = new Map(desired.bridges.map((b) => [b.name, b]));
    const wantTap = new Map(desired.taps.map((t) => [t.name, t]));

    // 1. stale taps
    for (const t of await this.listTaps()) {
      if (!wantTap.has(t.name)) {
        await this.removeTap(t.name);
        removed.push(t.name);
      }
    }
    // 2. stale or mis-configured bridges (VLAN children before parents)
    let s = await this.snapshot();
    const owned = [...s.bridges.values()].filter((b) => b.owned).sort((a, b) => Number(b.fake) - Number(a.fake));
    for (const b of owned) {
      const w = wantBr.get(b.name);
      const ok = w && (w.vlan
        ? b.fake && b.parent === w.vlan.parentBridge && b.tag === w.vlan.tag
        : !b.fake);
      if (!ok) {
        await this.removeBridge(b.name);
        removed.push(b.name);
      }
    }
    // 3. stale ports (uplinks, bonds, extra ports) on Xenon bridges
    s = await this.snapshot();
    const wantPorts = new Map<string, string>();
    for (const b of desired.bridges) {
      if (b.uplink) wantPorts.set(b.uplink, b.name);
      if (b.bond) wantPorts.set(b.bond.name, b.name);
      for (const p of b.ports ?? []) wantPorts.set(p, b.name);
    }
    for (const p of s.ports.values()) {
      // taps are step 5's, tunnel ports step 4's (per bridge)
      if (!p.owned || p.role === 'tap' || p.role === 'tunnel') continue;
      if (wantPorts.get(p.name) !== p.bridge) {
        await this.vsctl('--if-exists', 'del-port', p.name);
        removed.push(p.name);
      }
    }
    // 4. bridges, real ones first
    const ordered = [...desired.bridges].sort((a, b) => Number(!!a.vlan) - Number(!!b.vlan));
    for (const b of ordered) {
      const had = s.bridges.has(b.name);
      await this.ensureBridge(b.name, { mtu: b.mtu, uplink: b.uplink, vlan: b.vlan });
      if (!had) created.push(b.name);
      if (b.bond) {
        await this.createBond(b.name, b.bond.name, b.bond.members, b.bond.mode);
        if (!s.ports.has(b.bond.name)) created.push(b.bond.name);
      }
      for (const p of b.ports ?? []) {
        if (s.ports.get(p)?.bridge !== b.name) created.push(p);
        await this.addPort(p, b.name);
      }
      if (!b.vlan) await this.setTunnels(b.name, b.tunnels ?? null);
    }
    // 5. taps (idempotent; also corrects tag, locking, bridge)
    s = await this.snapshot();
    for (const t of desired.taps) {
      const had = s.ports.get(t.name)?.bridge === t.bridge && (await getLink(this.runner, t.name)) !== null;
      await this.createTap(t.name, t.bridge, t);
      if (!had) created.push(t.name);
    }
    return { removed, created };
  }
}
