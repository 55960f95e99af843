/**
 * A member's side of the typed host interface (host-api.ts): the master's
 * calls for this host's own domains, disks, NICs and storage connections,
 * served by the drivers this daemon runs, reading the records from its
 * replica once it holds the master's position of the call.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { MetricsOwner, MetricsService, NetworkingService, Services } from '../messages/context.ts';
import { readHostIpConfig } from '../network/addresses.ts';
import { UnsupportedError } from '../network/backend.ts';
import type { DomainEvent, HypervisorBackend } from '../xenops/backend.ts';
import { HOST_METHODS, type HostArgs, type HostCall, type HostMethod, type HostResult } from './host-api.ts';
import { memberStorageMethods, type VolumeMethod } from './member-storage.ts';
import type { Replica } from './replication.ts';

const REPLICA_WAIT_MS = 15_000;
const EVENTS_KEPT = 10_000;
/** The most domains one batched call may name. */
const MAX_BATCH = 10_000;

type Serve = { [M in HostMethod]: (args: HostArgs<M>) => Promise<HostResult<M>> };

/** Guest events of this host's domains, numbered, for the master to collect. */
class EventQueue {
  private seq = 0;
  private readonly kept: { seq: number; e: DomainEvent }[] = [];
  private waiters = new Set<() => void>();

  push(e: DomainEvent): void {
    this.kept.push({ seq: ++this.seq, e });
    if (this.kept.length > EVENTS_KEPT) this.kept.shift();
    for (const w of this.waiters) w();
  }

  async next(after: number, waitMs: number): Promise<{ next: number; events: DomainEvent[] }> {
    // a new link (a master that started, or came back) asks from beyond: it reconciles instead of replaying
    if (after > this.seq) return { next: this.seq, events: [] };
    if (this.seq === after && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          this.waiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, Math.min(waitMs, 30_000));
        this.waiters.add(done);
      });
    }
    return { next: this.seq, events: this.kept.filter((k) => k.seq > after).map((k) => k.e) };
  }
}

const str = (v: unknown, name: string): string => {
  if (typeof v !== 'string' || v.length === 0 || v.length > 1024) throw new XenApiError('INVALID_VALUE', name, String(v));
  return v;
};

export class MemberAgent {
  private readonly events = new EventQueue();
  private unsubscribe?: () => void;
  private readonly methods: Serve;

  constructor(
    private readonly services: Services,
    private readonly replica: Replica,
  ) {
    this.methods = { ...this.ownMethods, ...memberStorageMethods(services) };
  }

  private get backend(): HypervisorBackend {
    const x = this.services.xenops;
    if (!x) throw new XenApiError('NOT_IMPLEMENTED', 'no hypervisor backend on this host');
    return x.backend;
  }

  private networking(): NetworkingService {
    const n = this.services.networking;
    if (!n) throw new XenApiError('OPENVSWITCH_NOT_ACTIVE');
    return n;
  }

  /** A bond of this host's PIFs (its master PIF is this host's). */
  private ownBond(bond: unknown): string {
    const ref = str(bond, 'bond');
    const master = this.services.store.get('PIF', this.services.store.must('Bond', ref).master);
    if (master?.host !== this.services.hostRef()) throw new XenApiError('HANDLE_INVALID', 'Bond', ref);
    return ref;
  }

  private get metrics(): MetricsService {
    const m = this.services.metrics;
    if (!m) throw new XenApiError('NOT_IMPLEMENTED', 'no metrics on this host');
    return m;
  }

  private hostOwner(): MetricsOwner {
    return { kind: 'host', uuid: String(this.services.store.must('host', this.services.hostRef()).uuid) };
  }

  /** Starts collecting guest events (after the plugins have started). */
  listen(): void {
    if (!this.unsubscribe && this.services.xenops) this.unsubscribe = this.services.xenops.backend.onEvent((e) => this.events.push(e));
  }

  close(): void {
    this.unsubscribe?.();
  }

  /** Runs one call of the master's, after the replica holds the master's position. */
  async serve(body: unknown): Promise<unknown> {
    const call = body as Partial<HostCall> | null;
    if (!call || typeof call.method !== 'string' || !(HOST_METHODS as readonly string[]).includes(call.method) || !call.args || typeof call.args !== 'object') {
      throw new XenApiError('MESSAGE_METHOD_UNKNOWN', String(call?.method));
    }
    if (typeof call.epoch !== 'string' || !Number.isSafeInteger(call.generation)) throw new XenApiError('INVALID_VALUE', 'generation', String(call.generation));
    this.listen();
    await this.replica.reached(call.epoch, Number(call.generation), REPLICA_WAIT_MS).catch(() => {
      throw new XenApiError('HOST_OFFLINE', this.services.hostRef());
    });
    const fn = this.methods[call.method] as (a: unknown) => Promise<unknown>;
    try {
      return await fn(call.args);
    } catch (e) {
      // what the master reports: xapi's error for a host without Open vSwitch
      if (e instanceof UnsupportedError && e.feature === 'tunnel') throw new XenApiError('OPENVSWITCH_NOT_ACTIVE');
      throw e;
    }
  }

  private readonly ownMethods: Omit<Serve, VolumeMethod> = {
    'domain.start': async (a) => this.backend.start(a.cfg, { paused: a.paused === true }),
    'domain.shutdown': async (a) => {
      await this.backend.shutdown(str(a.uuid, 'uuid'), a.mode === 'clean' ? 'clean' : 'hard', a.timeoutMs);
      return null;
    },
    'domain.reboot': async (a) => {
      await this.backend.reboot(str(a.uuid, 'uuid'), a.mode === 'clean' ? 'clean' : 'hard', a.timeoutMs);
      return null;
    },
    'domain.pause': async (a) => {
      await this.backend.pause(str(a.uuid, 'uuid'));
      return null;
    },
    'domain.unpause': async (a) => {
      await this.backend.unpause(str(a.uuid, 'uuid'));
      return null;
    },
    'domain.list': async () => this.backend.list(),
    'domain.get': async (a) => (await this.backend.get(str(a.uuid, 'uuid'))) ?? null,
    'domain.stats': async (a) => this.backend.stats(str(a.uuid, 'uuid')),
    'domain.counters': async (a) => this.backend.readCounters(str(a.uuid, 'uuid')),
    'domain.countersMany': async (a) => {
      if (!Array.isArray(a.uuids) || a.uuids.length > MAX_BATCH) throw new XenApiError('INVALID_VALUE', 'uuids', 'a list of at most 10000');
      const backend = this.backend;
      return Promise.all(a.uuids.map((u) => backend.readCounters(str(u, 'uuid')).catch(() => null)));
    },
    'domain.consoles': async (a) => ({ serial: this.backend.serialLog(str(a.uuid, 'uuid')), vnc: this.backend.vncAddress(a.uuid) }),
    'domain.guestInfo': async (a) => (await this.backend.guestInfo?.(str(a.uuid, 'uuid'), a.timeoutMs)) ?? null,
    'events.next': (a) => this.events.next(Number(a.after) || 0, Number(a.waitMs) || 0),
    'disk.attach': async (a) => {
      const storage = this.services.storage;
      if (!storage) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
      return storage.attach(str(a.vdi, 'vdi'), a.readOnly === true, { standby: a.standby === true });
    },
    'disk.activate': async (a) => {
      const storage = this.services.storage;
      if (!storage) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
      await storage.activate(str(a.vdi, 'vdi'));
      return null;
    },
    'disk.detach': async (a) => {
      await this.services.storage?.detach(str(a.vdi, 'vdi'));
      return null;
    },
    'nic.plug': async (a) => {
      const nics = this.services.nics;
      if (!nics) throw new XenApiError('NOT_IMPLEMENTED', 'no networking on this host');
      return nics.plug(str(a.vif, 'vif'));
    },
    'nic.unplug': async (a) => {
      await this.services.nics?.unplug(str(a.vif, 'vif'));
      return null;
    },
    'network.tunnels': async (a) => {
      const network = str(a.network, 'network');
      this.services.store.must('network', network);
      await this.networking().refreshTunnels(network);
      return null;
    },
    'network.applyIp': async (a) => {
      const pif = this.services.store.must('PIF', str(a.pif, 'pif'));
      if (pif.host !== this.services.hostRef()) throw new XenApiError('HANDLE_INVALID', 'PIF', a.pif);
      await this.networking().applyIp(a.pif);
      return null;
    },
    'network.ensure': async (a) => {
      const network = str(a.network, 'network');
      this.services.store.must('network', network);
      // a daemon without networking keeps records only, as the master does then
      await this.services.networking?.ensureNetwork(network, { replace: a.replace === true });
      return null;
    },
    'network.addresses': () => readHostIpConfig(),
    'network.down': async (a) => {
      const network = str(a.network, 'network');
      this.services.store.must('network', network);
      await this.services.networking?.bringDown(network);
      return null;
    },
    'network.bond': async (a) => {
      await this.services.networking?.createBond(this.ownBond(a.bond));
      return null;
    },
    'network.unbond': async (a) => {
      await this.services.networking?.removeBond(this.ownBond(a.bond));
      return null;
    },
    'migrate.prepare': async (a) => {
      const prepare = this.backend.prepareIncoming?.bind(this.backend);
      if (!prepare) throw new XenApiError('NOT_IMPLEMENTED', 'live migration with this hypervisor backend');
      return prepare(a.cfg, this.services.store.must('host', this.services.hostRef()).address);
    },
    'migrate.finish': async (a) => {
      const finish = this.backend.finishIncoming?.bind(this.backend);
      if (!finish) throw new XenApiError('NOT_IMPLEMENTED', 'live migration with this hypervisor backend');
      return finish(str(a.uuid, 'uuid'));
    },
    'migrate.send': async (a) => {
      const send = this.backend.migrateOut?.bind(this.backend);
      if (!send) throw new XenApiError('NOT_IMPLEMENTED', 'live migration with this hypervisor backend');
      return send(str(a.uuid, 'uuid'), str(a.uri, 'uri'));
    },
    'metrics.adopt': async (a) => {
      const metrics = this.services.metrics;
      if (!metrics) throw new XenApiError('NOT_IMPLEMENTED', 'no metrics on this host');
      if (typeof a.rrd !== 'string') throw new XenApiError('INVALID_VALUE', 'rrd', typeof a.rrd);
      metrics.adoptVmRrd(str(a.uuid, 'uuid'), a.rrd);
      return null;
    },
    'metrics.hostSources': async () => this.metrics.dataSources(this.hostOwner()),
    'metrics.hostQuery': async (a) => this.metrics.query(this.hostOwner(), str(a.name, 'name')),
    'metrics.hostChange': async (a) => {
      if (a.op === 'record') this.metrics.record(this.hostOwner(), str(a.name, 'name'));
      else if (a.op === 'forget') this.metrics.forget(this.hostOwner(), str(a.name, 'name'));
      else throw new XenApiError('INVALID_VALUE', 'op', String(a.op));
      return null;
    },
    'sr.plug': async (a) => {
      const storage = this.services.storage;
      if (!storage) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
      const pbd = this.services.store.must('PBD', str(a.pbd, 'pbd'));
      if (pbd.host !== this.services.hostRef()) throw new XenApiError('HANDLE_INVALID', 'PBD', a.pbd);
      storage.forgetDriver(pbd.SR);
      await storage.driverFor(pbd.SR).attach();
      return null;
    },
    'sr.unplug': async (a) => {
      const pbd = this.services.store.must('PBD', str(a.pbd, 'pbd'));
      const storage = this.services.storage;
      if (storage && pbd.host === this.services.hostRef()) {
        await storage.driverFor(pbd.SR).detach();
        storage.forgetDriver(pbd.SR);
      }
      return null;
    },
  };
}
