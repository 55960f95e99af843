/**
 * Where network/PIF/VIF/VLAN/Bond records meet the network backend (OVS or
 * Linux bridge): bridges for networks, fake bridges for VLANs, taps for the
 * VIFs of running VMs, and the reconcile that makes the host match the
 * database at start — creating what is missing, removing what a crash left.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Row, Store } from '../db/store.ts';
import type { BridgeSpec, LockingSpec, NetworkBackend, TapSpec } from '../network/backend.ts';
import { listHostNics } from '../network/host-nics.ts';
import type { Services } from './context.ts';
import type { NicProvider } from './vm-domains/index.ts';
import { tunnelOfAccess, tunnelSpecOf } from './tunnel-records.ts';
import { readHostIpConfig } from '../network/addresses.ts';
import { OBSERVED_ON, recordHostAddresses } from './pif-address.ts';

const run = promisify(execFile);

/** Linux interface names stop at 15 characters. */
export const tapName = (vifUuid: string): string => `xv${vifUuid.replace(/-/g, '').slice(0, 12)}`;

export class Networking implements NicProvider {
  constructor(
    readonly backend: NetworkBackend,
    private readonly services: Services,
    /** Put physical NICs into their networks' bridges (off by default: it would take over the host's own links). */
    private readonly attachUplinks = false,
    private readonly netns?: string,
  ) {}

  get host(): string {
    return this.services.hostRef();
  }

  private get store(): Store {
    return this.services.store;
  }

  /** The bridge spec a network needs: its own bridge, or a fake bridge on its VLAN's parent. */
  bridgeSpec(network: string): BridgeSpec {
    const net = this.store.must('network', network);
    const pif = net.PIFs.map((p) => this.store.get('PIF', p)).find((p) => p && p.host === this.services.hostRef());
    if (pif && pif.VLAN >= 0) {
      const vlan = this.store.get('VLAN', pif.VLAN_master_of);
      const tagged = vlan ? this.store.get('PIF', vlan.tagged_PIF) : undefined;
      const parentNet = tagged ? this.store.get('network', tagged.network) : undefined;
      if (parentNet) return { name: net.bridge, mtu: net.MTU, vlan: { parentBridge: parentNet.bridge, tag: pif.VLAN } };
    }
    // a NIC whose address Xenon configures has it on its bridge: the NIC must be the bridge's uplink
    // (an address the admin configured on the NIC itself is only recorded: the NIC stays the host's)
    const xenonIp = pif && pif.ip_configuration_mode !== 'None' && !(OBSERVED_ON in pif.other_config);
    const uplink = pif?.physical && (this.attachUplinks || xenonIp) ? pif.device : undefined;
    const tunnels = pif && pif.tunnel_access_PIF_of.length ? tunnelSpecOf(this.store, pif.host, network) : undefined;
    return { name: net.bridge, mtu: net.MTU, ...(uplink ? { uplink } : {}), ...(tunnels ? { tunnels } : {}) };
  }

  /** The network a tunnel access PIF of this host carries its tunnels over (its transport PIF's). */
  private transportNetwork(network: string): string | undefined {
    const pif = this.store.must('network', network).PIFs.map((p) => this.store.get('PIF', p)).find((p) => p && p.host === this.services.hostRef());
    const tunnel = pif ? tunnelOfAccess(this.store, pif) : undefined;
    return tunnel ? this.store.get('PIF', tunnel[1].transport_PIF)?.network : undefined;
  }

  async ensureNetwork(network: string, how: { replace?: boolean } = {}): Promise<void> {
    const spec = this.bridgeSpec(network);
    // a plain bridge that becomes a VLAN's fake bridge (or back) is made anew
    if (how.replace) await this.backend.removeBridge(spec.name).catch(() => undefined);
    if (spec.vlan) {
      const parent = this.store.where('network', (n) => n.bridge === spec.vlan!.parentBridge)[0];
      if (parent) await this.ensureNetwork(parent[0]);
    }
    // the transport bridge first: OVS routes the tunnels' packets out through it
    const transport = spec.tunnels ? this.transportNetwork(network) : undefined;
    if (transport) await this.ensureNetwork(transport);
    const { name, tunnels, ...opts } = spec;
    await this.backend.ensureBridge(name, opts);
    if (tunnels || this.hasTunnels(network)) await this.backend.setTunnels(name, tunnels ?? null);
  }

  async bringDown(network: string): Promise<void> {
    const spec = this.bridgeSpec(network);
    // a NIC that is not Xenon's uplink (the admin's, with its own address) is left alone
    for (const dev of [spec.name, ...(spec.uplink ? [spec.uplink] : [])]) {
      await (this.netns ? run('ip', ['-n', this.netns, 'link', 'set', dev, 'down']) : run('ip', ['link', 'set', dev, 'down'])).catch(() => undefined);
    }
  }

  async createBond(bond: string): Promise<void> {
    const rec = this.store.must('Bond', bond);
    const master = this.store.must('PIF', rec.master);
    const slaves = this.store.where('PIF', (p) => p.bond_slave_of === bond).map(([, p]) => p.device);
    await this.ensureNetwork(master.network);
    const mode = rec.mode === 'active-backup' ? 'active-backup' : 'balance-slb';
    await this.backend.createBond(this.store.must('network', master.network).bridge, master.device, slaves, mode);
  }

  async removeBond(bond: string): Promise<void> {
    const master = this.store.get('PIF', this.store.must('Bond', bond).master);
    const net = master ? this.store.get('network', master.network) : undefined;
    if (master && net) await this.backend.removeBond(net.bridge, master.device).catch(() => undefined);
  }

  private hasTunnels(network: string): boolean {
    return this.store.must('network', network).PIFs.some((p) => (this.store.get('PIF', p)?.tunnel_access_PIF_of.length ?? 0) > 0);
  }

  /**
   * This host's tunnel ports on a network as its records say now: after a
   * tunnel of any host on the network came or went, or this host's access
   * PIF was plugged or unplugged.
   */
  async refreshTunnels(network: string): Promise<void> {
    const net = this.store.get('network', network);
    if (!net) return;
    if (this.bridgeSpec(network).tunnels) await this.ensureNetwork(network);
    else await this.backend.setTunnels(net.bridge, null);
  }

  private locking(vif: Row<'VIF'>, net: Row<'network'>): LockingSpec {
    const fallback = net.default_locking_mode === 'disabled' ? 'disabled' : 'unlocked';
    const mode = vif.locking_mode === 'network_default' ? fallback : vif.locking_mode;
    return { mode, mac: vif.MAC, ipv4: vif.ipv4_allowed, ipv6: vif.ipv6_allowed };
  }

  // ------------------------------------------------------------- NicProvider

  async plug(vif: string): Promise<{ tap: string; mtu: number }> {
    const rec = this.store.must('VIF', vif);
    const net = this.store.must('network', rec.network);
    await this.ensureNetwork(rec.network);
    const tap = tapName(rec.uuid);
    const mtu = rec.MTU || net.MTU;
    await this.backend.removeTap(tap).catch(() => undefined); // a stale one from a crash
    await this.backend.createTap(tap, net.bridge, { mac: rec.MAC, mtu, locking: this.locking(rec, net) });
    return { tap, mtu };
  }

  async unplug(vif: string): Promise<void> {
    const rec = this.store.get('VIF', vif);
    if (rec) await this.backend.removeTap(tapName(rec.uuid)).catch(() => undefined);
  }

  async applyLocking(vif: string): Promise<void> {
    const rec = this.store.must('VIF', vif);
    if (!rec.currently_attached) return;
    await this.backend.setLocking(tapName(rec.uuid), this.locking(rec, this.store.must('network', rec.network)));
  }

  // ------------------------------------------------------------- host

  /** First start: each NIC becomes a PIF with a network and bridge of its own. */
  async introduceNics(): Promise<void> {
    const host = this.services.hostRef();
    if (this.store.where('PIF', (p) => p.host === host && p.physical).length) return;
    const nics = (await listHostNics({ netns: this.netns, includeVeth: true })).sort((a, b) => a.device.localeCompare(b.device));
    const management = await this.defaultRouteDevice();
    this.store.transact((tx) => {
      nics.forEach((nic, i) => {
        const network = tx.create('network', {
          name_label: `Pool-wide network associated with ${nic.device}`, bridge: `xenbr${i}`, MTU: nic.mtu, managed: true,
          other_config: { automatic: 'true' },
        });
        const metrics = tx.create('PIF_metrics', { carrier: nic.carrier, speed: nic.speedMbps ?? 0, duplex: true, last_updated: formatDateTime(new Date()) });
        tx.create('PIF', {
          device: nic.device, network, host, MAC: nic.mac, MTU: nic.mtu, VLAN: -1, metrics, physical: true, currently_attached: true,
          ip_configuration_mode: 'None', management: nic.device === management || (management === undefined && i === 0), managed: true,
          properties: { gro: 'on' }, capabilities: [],
        });
      });
    });
  }

  /** This host's PIFs show the addresses the host has outside Xenon's configuration (at start; PIF.scan). */
  async recordAddresses(): Promise<string[]> {
    return recordHostAddresses(this.store, this.services.hostRef(), await readHostIpConfig(this.netns));
  }

  private async defaultRouteDevice(): Promise<string | undefined> {
    const args = ['route', 'show', 'default'];
    const r = await (this.netns ? run('ip', ['-n', this.netns, ...args]) : run('ip', args)).catch(() => ({ stdout: '' }));
    return /dev (\S+)/.exec(r.stdout)?.[1];
  }

  /** Applies a PIF's IP configuration to its bridge. */
  async applyIp(pif: string): Promise<void> {
    const rec = this.store.must('PIF', pif);
    const { bridge } = this.store.must('network', rec.network);
    await this.ensureNetwork(rec.network);
    const ip = async (...args: string[]): Promise<void> => {
      await (this.netns ? run('ip', ['-n', this.netns, ...args]) : run('ip', args));
    };
    await ip('addr', 'flush', 'dev', bridge).catch(() => undefined);
    if (rec.ip_configuration_mode === 'Static' && rec.IP) {
      const bits = rec.netmask.split('.').reduce((n, o) => n + (Number(o) >>> 0).toString(2).split('1').length - 1, 0);
      await ip('addr', 'add', `${rec.IP}/${bits || 24}`, 'dev', bridge);
      await ip('link', 'set', bridge, 'up');
      // the NIC is now its bridge's uplink: an address left on it (the admin's, from before Xenon took the
      // configuration over) would leave the host by the NIC, beside OVS; it goes, and the default route with it
      if (rec.physical) await ip('-4', 'addr', 'flush', 'dev', rec.device).catch(() => undefined);
      if (rec.management && /^\d+\.\d+\.\d+\.\d+$/.test(rec.gateway)) await ip('route', 'replace', 'default', 'via', rec.gateway, 'dev', bridge);
    }
  }

  // ------------------------------------------------------------- start-up

  /** Bridges of every network and taps of running VMs' VIFs exist; anything else of ours goes. */
  async reconcile(): Promise<{ removed: string[]; created: string[] }> {
    const bridges = this.store.refs('network').map((n) => this.bridgeSpec(n));
    const taps: TapSpec[] = [];
    for (const [, vif] of this.store.where('VIF', (v) => v.currently_attached)) {
      const vm = this.store.get('VM', vif.VM);
      if (!vm || (vm.power_state !== 'Running' && vm.power_state !== 'Paused')) continue;
      const net = this.store.get('network', vif.network);
      if (!net) continue;
      taps.push({ name: tapName(vif.uuid), bridge: net.bridge, mac: vif.MAC, locking: this.locking(vif, net) });
    }
    return this.backend.reconcile({ bridges, taps });
  }

  /** Counters into PIF_metrics and VIF_metrics. */
  async sampleMetrics(): Promise<void> {
    const now = formatDateTime(new Date());
    for (const [, vif] of this.store.where('VIF', (v) => v.currently_attached)) {
      const s = await this.backend.interfaceStats(tapName(vif.uuid)).catch(() => undefined);
      if (!s || vif.metrics === NULL_REF || !this.store.get('VIF_metrics', vif.metrics)) continue;
      this.store.transact((tx) => tx.update('VIF_metrics', vif.metrics, { io_read_kbs: s.rxBytes / 1024, io_write_kbs: s.txBytes / 1024, last_updated: now }));
    }
  }

  nextBridgeName(): string {
    const used = new Set(this.store.where('network', () => true).map(([, n]) => n.bridge));
    for (let i = 0; ; i++) if (!used.has(`xapi${i}`)) return `xapi${i}`;
  }

  assertNoActiveVifs(network: string): void {
    const active = this.store.must('network', network).VIFs.filter((v) => this.store.get('VIF', v)?.currently_attached);
    if (active.length) throw new XenApiError('NETWORK_CONTAINS_VIF', ...active);
  }
}
