/**
 * The master's links to its members: one RemoteHost each (remote-host.ts),
 * and on it a domain manager for the member's VMs, made when first needed or
 * when the member comes back, reconciled with what the member runs.
 */
import type { Logger } from 'pino';
import type { Services, XenopsService } from '../messages/context.ts';
import { recordHostAddresses } from '../messages/pif-address.ts';
import { plugAccessPif } from '../messages/tunnel.ts';
import { Xenops } from '../messages/vm-domains/index.ts';
import type { DomainCounters } from '../xenops/backend.ts';
import type { Peer } from './channel.ts';
import { memberCertificate } from './peers.ts';
import { RemoteHost } from './remote-host.ts';
import { RemoteSrDriver } from './remote-sr.ts';
import type { SrDriver } from '../storage/sr/driver.ts';
import type { ReplicationSource } from './replication.ts';

/** A metrics step is 5 s: a member slower than this leaves a gap in its VMs' figures rather than hold the step. */
const COUNTERS_TIMEOUT_MS = 4000;

interface Link {
  readonly remote: RemoteHost;
  readonly xenops: Xenops;
}

export class PoolHosts {
  private readonly links = new Map<string, Link>();
  private readonly log: Logger;

  constructor(
    private readonly services: Services,
    private readonly secret: string,
    private readonly source: ReplicationSource,
  ) {
    this.log = services.log.child({ subsystem: 'pool' });
  }

  /** Links every member the database names (at the master's start). */
  start(): void {
    for (const [ref] of this.services.store.all('host')) if (ref !== this.services.hostRef()) this.link(ref);
  }

  /** The link to a member; made (and its domains reconciled) on first use. */
  link(host: string): Link {
    const have = this.links.get(host);
    if (have) return have;
    const { store } = this.services;
    const remote = new RemoteHost(
      host,
      () => this.peerOf(host),
      () => ({ epoch: this.source.epoch, generation: store.events.current }),
      store,
      this.log,
    );
    const memberServices: Services = { ...this.services, hostRef: () => host };
    const xenops = new Xenops(remote.backend(), memberServices, { disks: remote.disks(), nics: remote.nics() });
    const link = { remote, xenops };
    this.links.set(host, link);
    xenops.listen();
    void remote.run();
    void this.reconcileWhenLive(link);
    return link;
  }

  /** How to reach a member over the channel. */
  peerOf(host: string): Peer {
    return { address: this.services.store.must('host', host).address, cert: memberCertificate(this.services, host), secret: this.secret };
  }

  /** Once the member answers: its domains and its VMs' records agree, its storage connections are plugged. */
  private async reconcileWhenLive(link: Link): Promise<void> {
    while (!link.remote.live) {
      if (!this.links.has(link.remote.host)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    try {
      const r = await link.xenops.reconcileHost();
      this.log.info({ host: link.remote.host, ...r }, 'member domains reconciled');
      await this.recordAddresses(link.remote.host).catch((err: unknown) => this.log.warn({ err, host: link.remote.host }, 'reading a member\'s addresses failed'));
      await this.plugAll(link.remote.host);
    } catch (err) {
      this.log.warn({ err, host: link.remote.host }, 'reconciling a member failed');
    }
  }

  /** Plugs the member's PBDs that are not (shared SRs it was given at join, or after a restart), and its tunnels. */
  async plugAll(host: string): Promise<void> {
    const { store } = this.services;
    await this.plugTunnels(host);
    for (const [pbd, rec] of store.where('PBD', (p) => p.host === host && !p.currently_attached)) {
      try {
        await this.plug(pbd);
      } catch (err) {
        this.log.warn({ err, pbd, sr: rec.SR }, 'a member could not plug a PBD');
      }
    }
  }

  /**
   * A member's tunnels: those it was given at join are plugged now that it
   * runs; those already plugged are made again (a member that restarted may
   * have lost its switch, and others' tunnels may have changed meanwhile).
   */
  private async plugTunnels(host: string): Promise<void> {
    const { store } = this.services;
    for (const [pif, rec] of store.where('PIF', (p) => p.host === host && p.tunnel_access_PIF_of.length > 0)) {
      try {
        if (rec.currently_attached) await this.link(host).remote.call('network.tunnels', { network: rec.network });
        else await plugAccessPif(this.services, pif);
      } catch (err) {
        this.log.warn({ err, pif, network: rec.network }, 'a member could not plug a tunnel');
      }
    }
  }

  /** Has a member make its tunnel ports on a network match the records. */
  async refreshTunnels(host: string, network: string): Promise<void> {
    await this.link(host).remote.call('network.tunnels', { network });
  }

  async applyIp(pif: string): Promise<void> {
    await this.link(this.services.store.must('PIF', pif).host).remote.call('network.applyIp', { pif });
  }

  /** Has a member make a network's bridge as the records say (`replace`: remove its old one first). */
  async ensureNetwork(host: string, network: string, replace: boolean): Promise<void> {
    await this.link(host).remote.call('network.ensure', { network, replace });
  }

  /** A member's PIFs show the addresses it has outside Xenon (its start, PIF.scan): xapi's update_pif_addresses, run there. */
  async recordAddresses(host: string): Promise<string[]> {
    return recordHostAddresses(this.services.store, host, await this.link(host).remote.call('network.addresses', {}));
  }

  /** Has a member take a network's bridge down (PIF.unplug of its PIF). */
  async bringDown(host: string, network: string): Promise<void> {
    await this.link(host).remote.call('network.down', { network });
  }

  /** Has the member whose PIFs a bond joins make (or remove) it. */
  async bond(bond: string, make: boolean): Promise<void> {
    const { store } = this.services;
    const host = store.must('PIF', store.must('Bond', bond).master).host;
    await this.link(host).remote.call(make ? 'network.bond' : 'network.unbond', { bond });
  }

  /** Plugs a member's PBD through its host interface, then records it. */
  async plug(pbd: string): Promise<void> {
    const { store } = this.services;
    const rec = store.must('PBD', pbd);
    await this.link(rec.host).remote.call('sr.plug', { pbd });
    store.transact((tx) => tx.update('PBD', pbd, { currently_attached: true }));
  }

  async unplug(pbd: string): Promise<void> {
    const { store } = this.services;
    const rec = store.must('PBD', pbd);
    await this.link(rec.host).remote.call('sr.unplug', { pbd });
    store.transact((tx) => tx.update('PBD', pbd, { currently_attached: false }));
  }

  /** The driver of a member's local SR: its file work done by the member's own driver. */
  srDriver(host: string, sr: string, shape: SrDriver): SrDriver {
    const { remote } = this.link(host);
    return new RemoteSrDriver(host, sr, shape, (method, args) => remote.call(method, args));
  }

  xenopsOn(host: string): XenopsService | undefined {
    if (!this.services.store.get('host', host)) return undefined;
    return this.link(host).xenops;
  }

  /** A metrics step's counters of a member's domains: one call, a short wait; nothing from a member that is not live. */
  async counters(host: string, uuids: readonly string[]): Promise<(DomainCounters | null)[]> {
    const none = uuids.map(() => null);
    if (!this.isLive(host) || uuids.length === 0) return none;
    return this.link(host).remote.call('domain.countersMany', { uuids: [...uuids] }, COUNTERS_TIMEOUT_MS).catch(() => none);
  }

  isLive(host: string): boolean {
    return this.links.get(host)?.remote.live ?? false;
  }

  /** Drops a member's link (it left the pool). */
  forget(host: string): void {
    const link = this.links.get(host);
    if (!link) return;
    link.remote.stop();
    this.links.delete(host);
    void link.xenops.close();
  }

  close(): void {
    for (const host of [...this.links.keys()]) this.forget(host);
  }
}
