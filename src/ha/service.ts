/**
 * HA in the daemon: `pool.enable_ha` on the master starts the engine on
 * every host of the pool (the first three run etcd's voting members), each
 * host remembers that in `<data-dir>/ha/config.json` and resumes it when it
 * restarts. The pool master, elected HA master first, writes the redo log;
 * when etcd deletes a host's liveness key, the master restarts that host's
 * protected VMs on live hosts, each after taking its run lock. Every host
 * keeps run locks for the VMs it runs.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRIVATE_DIR, PRIVATE_FILE } from '../auth/private-files.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { HaService, Services, XenopsService } from '../messages/context.ts';
import { markStoppedRecords } from '../messages/vm-domains/records.ts';
import { addressHost, peerCall, type Peer } from '../pool/channel.ts';
import { possibleHosts } from '../pool/placement.ts';
import type { Term } from './election.ts';
import { HaEngine } from './engine.ts';
import { restartGraceMs } from './fencer-hold.ts';
import type { MemberAddress } from './etcd-member.ts';
import { memberPaths } from './etcd-member.ts';
import { RedoFeeder } from './redo-feeder.ts';
import type { RedoContents, RedoRow } from './redo-log.ts';

export const HA_ROUTE = '/pool/ha';
const VOTING_MEMBERS = 3;
const RESTART = 'restart';
/** Past this, a master that cannot write its redo log has fenced itself (its deadline is at most 4 s away). */
const BARRIER_TIMEOUT_MS = 10_000;

/** What a host needs to run its part of HA (its `ha/config.json`). */
export interface HaConfig {
  readonly poolUuid: string;
  readonly hostUuid: string;
  /** This host's address on the pool network (no port). */
  readonly address: string;
  readonly members: readonly MemberAddress[];
}

/** A request on the channel from the master: start (with this host's configuration) or stop. */
export type HaRequest = { readonly op: 'start'; readonly config: HaConfig } | { readonly op: 'stop' };

const configFile = (dataDir: string): string => join(memberPaths(dataDir).dir, 'config.json');

const isText = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length < 256;

function checkConfig(v: unknown): HaConfig {
  if (typeof v !== 'object' || v === null) throw new XenApiError('INVALID_VALUE', 'config', 'not an object');
  const c = v as Record<string, unknown>;
  const members = c.members;
  if (!isText(c.poolUuid) || !isText(c.hostUuid) || !isText(c.address) || !Array.isArray(members) || members.length !== VOTING_MEMBERS) {
    throw new XenApiError('INVALID_VALUE', 'config', 'malformed');
  }
  const checked = members.map((m: unknown): MemberAddress => {
    const r = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
    if (!isText(r.name) || !isText(r.address)) throw new XenApiError('INVALID_VALUE', 'config', 'malformed member');
    return { name: r.name, address: r.address };
  });
  return { poolUuid: c.poolUuid, hostUuid: c.hostUuid, address: c.address, members: checked };
}

/** The request a member gets over the channel, checked as input. */
export function checkHaRequest(body: unknown): HaRequest {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  if (b.op === 'stop') return { op: 'stop' };
  if (b.op === 'start') return { op: 'start', config: checkConfig(b.config) };
  throw new XenApiError('INVALID_VALUE', 'op', String(b.op));
}

/** What HA asks of the pool when the election names another master (pool/master-change.ts). */
export interface MasterRoles {
  /** This member becomes the pool master: it restarts in place as one. */
  becomeMaster(): void;
  /** This host follows the master at `address`; a master restarts in place as its member. */
  follow(address: string): Promise<void>;
}

/**
 * Engines that go on running while their daemon restarts in place after a
 * master change, by data directory: the lease, the fencer's deadline and the
 * term must not lapse for a restart (the guests would be fenced).
 */
const parked = new Map<string, { engine: HaEngine; tookOver: boolean }>();

export class HaDaemon implements HaService {
  private engine: HaEngine | undefined;
  private feeder: RedoFeeder | undefined;
  private lockTimer: NodeJS.Timeout | undefined;
  /** Set when this daemon restarts for a master change: close() parks the engine instead of stopping it. */
  private parkOnClose: { tookOver: boolean } | undefined;
  /** This host took the master's place after a failover: hosts without a liveness key are dead. */
  private tookOver = false;
  private followedTerm = '';
  private readonly log;

  constructor(
    private readonly services: Services,
    /** The pool secret and the master's certificate store: how the master reaches members. */
    private readonly peerOf: (host: string) => Peer,
    private readonly isPoolMaster: () => boolean,
    private readonly roles: MasterRoles,
  ) {
    this.log = services.log.child({ subsystem: 'ha' });
  }

  get armed(): boolean {
    return this.engine !== undefined;
  }

  /** At daemon start: resumes HA if this host was told to run it. */
  async resume(): Promise<void> {
    let config: HaConfig;
    try {
      config = checkConfig(JSON.parse(readFileSync(configFile(this.services.dataDir), 'utf8')));
    } catch {
      return; // HA is not on here
    }
    this.startEngine(config);
  }

  /** The master's pool.enable_ha: every host starts its part, the master first wins the election. */
  async enable(configuration: Readonly<Record<string, string>>): Promise<void> {
    const { store } = this.services;
    const pool = this.services.poolRef();
    const master = this.services.hostRef();
    const hosts = store.refs('host').sort((a, b) => Number(b === master) - Number(a === master) || store.must('host', a).uuid.localeCompare(store.must('host', b).uuid));
    const members = hosts.slice(0, VOTING_MEMBERS).map((h): MemberAddress => ({ name: store.must('host', h).uuid, address: addressHost(store.must('host', h).address) }));
    const configOf = (h: string): HaConfig => ({ poolUuid: store.must('pool', pool).uuid, hostUuid: store.must('host', h).uuid, address: addressHost(store.must('host', h).address), members });
    // the master stands alone at first: members stand only once they have seen a master
    this.startEngine(configOf(master));
    for (const h of hosts.filter((x) => x !== master)) {
      await peerCall(this.peerOf(h), HA_ROUTE, { op: 'start', config: configOf(h) } satisfies HaRequest).catch((err: unknown) => {
        throw new XenApiError('HA_HOST_CANNOT_SEE_PEERS', h, hosts.join(','), String(err));
      });
    }
    const until = Date.now() + 60_000;
    while (!this.engine?.isMaster || !this.feeder) {
      if (Date.now() > until) {
        await this.disable().catch(() => undefined);
        throw new XenApiError('HA_FAILED_TO_FORM_LIVESET');
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    store.transact((tx) => tx.update('pool', pool, { ha_enabled: true, ha_configuration: { ...configuration } }));
  }

  /** The master's pool.disable_ha: every host stops its part and forgets it. */
  async disable(): Promise<void> {
    const { store } = this.services;
    const master = this.services.hostRef();
    for (const h of store.refs('host').filter((x) => x !== master)) {
      await peerCall(this.peerOf(h), HA_ROUTE, { op: 'stop' } satisfies HaRequest).catch((err: unknown) => this.log.warn({ err, host: h }, 'a host did not stop HA'));
    }
    await this.stopEngine(true);
    const pool = this.services.poolRef();
    if (store.must('pool', pool).ha_enabled) store.transact((tx) => tx.update('pool', pool, { ha_enabled: false, ha_plan_exists_for: 0 }));
  }

  /** Waits for the redo log to hold every write so far; a deposed or cut-off master's write is refused. */
  async barrier(): Promise<void> {
    const feeder = this.feeder ?? (await this.feederOfHaMaster());
    if (!feeder) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the redo log did not take the write in time')), BARRIER_TIMEOUT_MS);
    });
    try {
      await Promise.race([feeder.barrier(), late]);
    } catch (err) {
      this.log.error({ err }, 'a write did not reach the redo log');
      throw new XenApiError('HA_SHOULD_BE_FENCED', this.services.hostRef());
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * With HA on, the pool master writes only as HA master, its redo log
   * following: while it is not (yet) that, a write waits for it, and is
   * refused if it does not come — it may be a deposed master.
   */
  private async feederOfHaMaster(): Promise<RedoFeeder | undefined> {
    const { store } = this.services;
    if (!this.engine || !this.isPoolMaster() || !store.must('pool', this.services.poolRef()).ha_enabled) return undefined;
    const until = Date.now() + BARRIER_TIMEOUT_MS;
    while (!this.feeder) {
      if (Date.now() > until || !this.engine) throw new XenApiError('HA_SHOULD_BE_FENCED', this.services.hostRef());
      await new Promise((r) => setTimeout(r, 100));
    }
    return this.feeder;
  }

  /** A member's side of the channel route. */
  async serve(req: HaRequest): Promise<null> {
    if (req.op === 'stop') await this.stopEngine(true);
    else if (!this.engine) this.startEngine(req.config);
    return null;
  }

  private startEngine(config: HaConfig): void {
    mkdirSync(memberPaths(this.services.dataDir).dir, { recursive: true, mode: PRIVATE_DIR });
    writeFileSync(configFile(this.services.dataDir), `${JSON.stringify(config)}\n`, { mode: PRIVATE_FILE });
    const kept = parked.get(this.services.dataDir);
    parked.delete(this.services.dataDir);
    let seenMaster = this.isPoolMaster() || kept !== undefined;
    const handlers = {
      eligible: () => seenMaster,
      log: (msg: string, fields?: Record<string, unknown>) => this.log.info(fields ?? {}, msg),
      onTerm: (term: Term | undefined, mine: boolean) => {
        if (term) seenMaster = true;
        this.onTerm(term, mine);
      },
      onFenced: (why: string) => this.log.error({ why }, 'fenced: this host\'s guests were killed'),
      onHostGone: (host: string) => void this.restartVmsOf(host).catch((err: unknown) => this.log.error({ err, host }, 'restarting a dead host\'s VMs failed')),
    };
    if (kept?.engine.sameAs(config)) {
      // back from a restart in place: the same lease, fencer and term go on
      kept.engine.rebind(handlers);
      this.engine = kept.engine;
      this.tookOver = kept.tookOver;
      this.log.info({ term: kept.engine.term }, 'HA engine kept across the restart');
      this.keepLocks();
      const term = kept.engine.term;
      this.onTerm(term, term?.host === config.hostUuid);
      return;
    }
    if (kept) void kept.engine.stop({ stopMember: false }).catch(() => undefined);
    const engine = new HaEngine({ ...config, dataDir: this.services.dataDir, runDir: join(this.services.dataDir, 'run', 'qemu'), ...handlers });
    this.engine = engine;
    engine.start().then(
      () => {
        this.log.info({ members: config.members.map((m) => m.address) }, 'HA running');
        this.keepLocks();
      },
      (err: unknown) => this.log.error({ err }, 'HA did not start'),
    );
  }

  private keepLocks(): void {
    clearInterval(this.lockTimer);
    this.lockTimer = setInterval(() => void this.keepRunLocks(), 1000);
    this.lockTimer.unref();
  }

  private async stopEngine(forget: boolean): Promise<void> {
    clearInterval(this.lockTimer);
    this.feeder?.stop();
    this.feeder = undefined;
    const engine = this.engine;
    this.engine = undefined;
    if (forget) rmSync(configFile(this.services.dataDir), { force: true });
    await engine?.stop(forget ? { stopMember: true, wipe: true } : { stopMember: false, handOverMs: restartGraceMs() });
  }

  private onTerm(term: Term | undefined, mine: boolean): void {
    if (!term || !mine) {
      this.feeder?.stop();
      this.feeder = undefined;
      if (term) void this.followTerm(term);
      return;
    }
    if (!this.isPoolMaster()) void this.takeOver(term);
    else void this.startFeeder(term);
  }

  /** The uuid of the pool master this host's database names. */
  private poolMasterUuid(): string {
    const { store } = this.services;
    if (this.isPoolMaster()) return store.must('host', this.services.hostRef()).uuid;
    const master = store.get('pool', this.services.poolRef())?.master;
    return master === undefined ? '' : (store.get('host', master)?.uuid ?? '');
  }

  /** Another host is HA master: this host follows it (a deposed pool master becomes its member). */
  private async followTerm(term: Term): Promise<void> {
    if (term.host === this.poolMasterUuid() || this.followedTerm === term.revision) return;
    const host = this.services.store.byUuid('host', term.host);
    const address = host === undefined ? '' : this.services.store.must('host', host).address;
    if (address === '') return void this.log.error({ term }, 'the HA master is a host this database does not know');
    this.followedTerm = term.revision;
    this.log.warn({ master: term.host, address }, 'another host is HA master: following it as pool master');
    if (this.isPoolMaster()) this.parkOnClose = { tookOver: false };
    try {
      await this.roles.follow(address);
    } catch (err) {
      this.parkOnClose = undefined;
      this.followedTerm = '';
      this.log.error({ err }, 'could not follow the new master');
    }
  }

  /**
   * A member elected HA master: the pool master is dead (its lease is gone).
   * This host rebuilds the database from the redo log — which holds every
   * write the old master confirmed — and restarts in place as pool master;
   * then it restarts the protected VMs of every host without a liveness key.
   */
  private async takeOver(term: Term): Promise<void> {
    const engine = this.engine;
    if (!engine || this.parkOnClose) return;
    this.log.warn({ term }, 'elected HA master: taking over as pool master');
    let rows: RedoRow[] | undefined;
    try {
      rows = replay(await engine.redo.read());
    } catch (err) {
      this.log.error({ err }, 'the redo log could not be read: taking over with this host\'s replica');
    }
    this.parkOnClose = { tookOver: true };
    this.roles.becomeMaster(); // stops the replica; the restart comes after this turn
    if (rows) this.services.store.applyReplicated(rows, true);
  }

  private async startFeeder(term: Term): Promise<void> {
    const engine = this.engine;
    if (!engine) return;
    try {
      const { nextSeq } = await engine.redo.read();
      const feeder = new RedoFeeder(this.services.store, engine.redo, term, nextSeq, (err) => this.log.error({ err }, 'deposed: the redo log refused this master'));
      await feeder.start();
      this.feeder = feeder;
      this.log.info({ term }, 'HA master: the redo log follows the database');
      if (this.tookOver) {
        this.tookOver = false;
        await this.restartVmsOfDeadHosts();
      }
    } catch (err) {
      this.log.error({ err }, 'the redo log did not start');
    }
  }

  /**
   * Each host holds the run locks of the VMs the database says it runs, bound
   * to its lease: it takes a free lock, re-binds one the master took for it (a
   * restart here), takes over one another host held (the VM migrated here: the
   * database moves resident_on only once the source's domain is gone), and lets
   * go of its locks for VMs that no longer run here.
   */
  private async keepRunLocks(): Promise<void> {
    const engine = this.engine;
    if (!engine || engine.fenced || !engine.leaseId) return;
    const lease = engine.leaseId;
    const here = this.services.hostRef();
    const me = this.services.store.must('host', here).uuid;
    const running = new Set(
      this.services.store
        .where('VM', (v) => v.resident_on === here && !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused'))
        .map(([, v]) => v.uuid),
    );
    try {
      const locks = await engine.locks.all();
      for (const vm of running) {
        const held = locks.get(vm);
        if (!held) await engine.locks.claim(vm, me, lease);
        else if (held.host !== me || held.lease !== lease) {
          if (held.host !== me) this.log.info({ vm, from: held.host }, 'run lock follows the VM here');
          await engine.locks.move(vm, held.host, me, lease);
        }
      }
      for (const [vm, held] of locks) if (held.host === me && held.lease === lease && !running.has(vm)) await engine.locks.release(vm, me);
    } catch (err) {
      this.log.debug({ err }, 'run locks not refreshed (etcd unreachable)');
    }
  }

  /** After a failover: every host without a liveness key is dead and fenced (the old master among them). */
  private async restartVmsOfDeadHosts(): Promise<void> {
    const engine = this.engine;
    if (!engine) return;
    const live = new Set(await engine.liveHosts());
    for (const [ref, host] of this.services.store.all('host')) {
      if (ref !== this.services.hostRef() && !live.has(host.uuid)) await this.restartVmsOf(host.uuid).catch((err: unknown) => this.log.error({ err, host: host.uuid }, 'restarting a dead host\'s VMs failed'));
    }
  }

  /** etcd deleted a host's key: it is dead and fenced. The master restarts its protected VMs. */
  private async restartVmsOf(deadUuid: string): Promise<void> {
    const engine = this.engine;
    if (!engine?.isMaster || !this.isPoolMaster()) return;
    const { store } = this.services;
    const dead = store.byUuid('host', deadUuid);
    if (!dead) return;
    const live = new Set(await engine.liveHosts());
    const victims = store.where('VM', (v) => v.resident_on === dead && !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused'));
    this.log.warn({ host: deadUuid, vms: victims.length }, 'a host is dead: its VMs are halted, the protected ones restarted');
    for (const [ref] of victims) markStoppedRecords(this.services, ref, 'Halted');
    for (const [ref, vm] of victims.filter(([, v]) => v.ha_restart_priority === RESTART)) {
      const target = possibleHosts(store, ref).find((h) => h !== dead && live.has(store.must('host', h).uuid));
      const xenops = target === undefined ? undefined : this.xenopsOn(target);
      if (!target || !xenops) {
        this.log.error({ vm: vm.uuid }, 'no live host can restart a protected VM');
        continue;
      }
      const owner = store.must('host', target).uuid;
      // the lock is taken for the target host under the master's lease; the target's own loop re-binds it to its lease
      if (!(await engine.locks.claim(vm.uuid, owner, engine.leaseId))) {
        this.log.error({ vm: vm.uuid }, 'the run lock of a protected VM is held: not restarted');
        continue;
      }
      try {
        await xenops.start(ref, false);
        this.log.info({ vm: vm.uuid, host: owner }, 'protected VM restarted');
      } catch (err) {
        await engine.locks.release(vm.uuid, owner).catch(() => undefined);
        this.log.error({ err, vm: vm.uuid }, 'restarting a protected VM failed');
      }
    }
  }

  private xenopsOn(host: Ref<'host'> | string): XenopsService | undefined {
    return host === this.services.hostRef() ? this.services.xenops : this.services.pool?.xenopsOn(host);
  }

  async close(): Promise<void> {
    const park = this.parkOnClose;
    if (park && this.engine) {
      // restarting in place for a master change: the engine goes on and the next start takes it back
      clearInterval(this.lockTimer);
      this.feeder?.stop();
      this.feeder = undefined;
      this.engine.rebind({ log: (msg, fields) => this.log.info(fields ?? {}, msg), eligible: () => false });
      parked.set(this.services.dataDir, { engine: this.engine, tookOver: park.tookOver });
      this.engine = undefined;
      return;
    }
    // a daemon stopping keeps HA on: the next start resumes it (the etcd member keeps running, like guests);
    // the fencer keeps the lease alive for the grace period, and the next daemon adopts it and its lease
    await this.stopEngine(false);
  }
}

/** The database the redo log holds: the snapshot's rows, each entry's rows applied in order, deletions dropped. */
export function replay(contents: RedoContents): RedoRow[] {
  const rows = new Map<string, RedoRow>();
  for (const r of contents.snapshot) rows.set(`${r.cls}\0${r.ref}`, r);
  for (const entry of contents.entries) for (const r of entry) rows.set(`${r.cls}\0${r.ref}`, r);
  return [...rows.values()].filter((r) => r.rec !== null);
}
