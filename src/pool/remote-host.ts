/**
 * The master's view of a member: the typed host interface as calls over the
 * channel (host-api.ts), and on it a hypervisor backend, a disk provider and
 * a NIC provider, so that the domain manager (messages/vm-domains) runs the
 * member's VMs exactly as it runs its own — the master writing every record.
 * A loop collects the member's guest events; whether it answers is the
 * host's liveness (host_metrics.live).
 */
import type { Logger } from 'pino';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import type { DiskProvider, NicProvider } from '../messages/context.ts';
import type {
  ConsoleAddress, DiskConfig, DomainConfig, DomainCounters, DomainEvent, DomainInfo, DomainStats, GuestInfo, HypervisorBackend, MigrationStats, NicConfig,
} from '../xenops/backend.ts';
import { peerCall, type Peer } from './channel.ts';
import type { HostArgs, HostCall, HostMethod, HostResult } from './host-api.ts';

/** How long the master waits for an answer to one call (a clean shutdown may take xapi's 1200 s). */
const CALL_TIMEOUT_MS = 1_300_000;

export class RemoteHost {
  private stopped = false;
  private listeners = new Set<(e: DomainEvent) => void>();
  private readonly consoles = new Map<string, HostResult<'domain.consoles'>>();
  /** Whether the member answered its last event poll. */
  live = false;

  constructor(
    readonly host: string,
    private readonly peer: () => Peer,
    private readonly position: () => { epoch: string; generation: number },
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  async call<M extends HostMethod>(method: M, args: HostArgs<M>, timeoutMs = CALL_TIMEOUT_MS): Promise<HostResult<M>> {
    const body: HostCall<M> = { method, args, ...this.position() };
    try {
      return (await peerCall(this.peer(), '/pool/host', body, timeoutMs)) as HostResult<M>;
    } catch (e) {
      if (e instanceof XenApiError) throw e;
      throw new XenApiError('CANNOT_CONTACT_HOST', this.host);
    }
  }

  /** Follows the member's guest events until stopped; marks the host live or not as it answers. */
  async run(): Promise<void> {
    let after = 0;
    let first = true;
    while (!this.stopped) {
      try {
        // until the member is known live, ask without waiting: the answer itself is the news
        const r = await this.call('events.next', { after: first ? Number.MAX_SAFE_INTEGER : after, waitMs: this.live ? 20_000 : 0 }, 40_000);
        first = false;
        after = r.next;
        this.setLive(true);
        for (const e of r.events) for (const l of this.listeners) l(e);
      } catch (err) {
        if (this.stopped) return;
        if (this.live) this.log.warn({ err, host: this.host }, 'a member does not answer');
        this.setLive(false);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Whether live has been written since this link was made (the record may say otherwise from before). */
  private recorded = false;

  private setLive(live: boolean): void {
    if (this.recorded && this.live === live) return;
    this.recorded = true;
    this.live = live;
    const metrics = this.store.get('host', this.host)?.metrics;
    if (metrics && this.store.get('host_metrics', metrics) && !this.store.isReplica) {
      this.store.transact((tx) => tx.update('host_metrics', metrics, { live, last_updated: formatDateTime(new Date()) }));
    }
  }

  stop(): void {
    this.stopped = true;
  }

  onEvent(l: (e: DomainEvent) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Where a domain's consoles are on the member (learnt when it starts). */
  async learnConsoles(uuid: string): Promise<void> {
    this.consoles.set(uuid, await this.call('domain.consoles', { uuid }));
  }

  consolesOf(uuid: string): HostResult<'domain.consoles'> {
    const c = this.consoles.get(uuid);
    if (!c) throw new XenApiError('NOT_IMPLEMENTED', 'the consoles of a VM on another host are served by that host');
    return c;
  }

  backend(): HypervisorBackend {
    return new RemoteBackend(this);
  }

  disks(): DiskProvider {
    return {
      attach: (vdi, readOnly, opts) => this.call('disk.attach', { vdi, readOnly, ...(opts?.standby ? { standby: true } : {}) }),
      activate: async (vdi) => void (await this.call('disk.activate', { vdi })),
      detach: async (vdi) => void (await this.call('disk.detach', { vdi })),
    };
  }

  nics(): NicProvider {
    return {
      plug: (vif) => this.call('nic.plug', { vif }),
      unplug: async (vif) => void (await this.call('nic.unplug', { vif })),
    };
  }
}

const notHere = (what: string): never => {
  throw new XenApiError('NOT_IMPLEMENTED', `${what} of a VM on another host of the pool`);
};

/** A member's hypervisor, through the host interface. */
class RemoteBackend implements HypervisorBackend {
  readonly name = 'remote';

  constructor(private readonly remote: RemoteHost) {}

  async start(cfg: DomainConfig, opts: { paused: boolean }): Promise<DomainInfo> {
    const info = await this.remote.call('domain.start', { cfg, paused: opts.paused });
    await this.remote.learnConsoles(cfg.uuid).catch(() => undefined);
    return info;
  }

  async shutdown(uuid: string, mode: 'clean' | 'hard', timeoutMs?: number): Promise<void> {
    await this.remote.call('domain.shutdown', { uuid, mode, timeoutMs });
  }

  async reboot(uuid: string, mode: 'clean' | 'hard', timeoutMs?: number): Promise<void> {
    await this.remote.call('domain.reboot', { uuid, mode, timeoutMs });
  }

  async pause(uuid: string): Promise<void> {
    await this.remote.call('domain.pause', { uuid });
  }

  async unpause(uuid: string): Promise<void> {
    await this.remote.call('domain.unpause', { uuid });
  }

  suspend(): Promise<void> {
    return notHere('suspend');
  }

  resume(): Promise<DomainInfo> {
    return notHere('resume');
  }

  plugDisk(_uuid: string, _disk: DiskConfig): Promise<void> {
    return notHere('disk hot-plug');
  }

  unplugDisk(): Promise<void> {
    return notHere('disk hot-unplug');
  }

  plugNic(_uuid: string, _nic: NicConfig): Promise<void> {
    return notHere('NIC hot-plug');
  }

  unplugNic(): Promise<void> {
    return notHere('NIC hot-unplug');
  }

  insertCd(): Promise<void> {
    return notHere('CD insertion');
  }

  async list(): Promise<DomainInfo[]> {
    const all = await this.remote.call('domain.list', {});
    await Promise.all(all.map((d) => this.remote.learnConsoles(d.uuid).catch(() => undefined)));
    return all;
  }

  async get(uuid: string): Promise<DomainInfo | undefined> {
    return (await this.remote.call('domain.get', { uuid })) ?? undefined;
  }

  stats(uuid: string): Promise<DomainStats> {
    return this.remote.call('domain.stats', { uuid });
  }

  readCounters(uuid: string): Promise<DomainCounters> {
    return this.remote.call('domain.counters', { uuid });
  }

  serialLog(uuid: string): { path: string; socket?: string } {
    return this.remote.consolesOf(uuid).serial;
  }

  vncAddress(uuid: string): ConsoleAddress {
    return this.remote.consolesOf(uuid).vnc;
  }

  async guestInfo(uuid: string, timeoutMs?: number): Promise<GuestInfo | undefined> {
    return (await this.remote.call('domain.guestInfo', { uuid, timeoutMs }, (timeoutMs ?? 5000) + 10_000)) ?? undefined;
  }

  prepareIncoming(cfg: DomainConfig): Promise<{ uri: string }> {
    return this.remote.call('migrate.prepare', { cfg });
  }

  async finishIncoming(uuid: string): Promise<DomainInfo> {
    const info = await this.remote.call('migrate.finish', { uuid });
    await this.remote.learnConsoles(uuid).catch(() => undefined);
    return info;
  }

  migrateOut(uuid: string, uri: string): Promise<MigrationStats> {
    return this.remote.call('migrate.send', { uuid, uri });
  }

  onEvent(listener: (e: DomainEvent) => void): () => void {
    return this.remote.onEvent(listener);
  }

  async close(): Promise<void> {
    // the member's domains keep running; nothing of ours to release
  }
}
