/**
 * One host's part of HA: its etcd member (on the first three hosts), its
 * lease and liveness key, the fencer that holds its deadline, the master
 * election, and the watch on its peers' liveness keys. What the daemon does
 * with a new term, a fence or a dead peer is the caller's (the HA plugin).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRIVATE_FILE } from '../auth/private-files.ts';
import { Election, type Term } from './election.ts';
import { EtcdEndpoints, monotonicNs } from './etcd-client.ts';
import { clientUrl, EtcdMember, memberPaths, type MemberAddress } from './etcd-member.ts';
import { Fencer } from './fencer-client.ts';
import { haKeys, type HaKeys } from './keys.ts';
import { Liveness } from './liveness.ts';
import { RedoLog } from './redo-log.ts';
import { RunLocks } from './run-locks.ts';

export interface HaEngineOptions {
  readonly dataDir: string;
  readonly poolUuid: string;
  readonly hostUuid: string;
  /** This host's address on the pool network. */
  readonly address: string;
  /** The three voting members (the pool's first three hosts). */
  readonly members: readonly MemberAddress[];
  /** The QEMU run directory whose guests the fencer kills. */
  readonly runDir: string;
  /** Wraps etcd's command line (tests: a network namespace). */
  readonly wrapEtcd?: (argv: string[]) => string[];
  readonly ttlS?: number;
  readonly pollMs?: number;
  /** Whether this host may stand for master besides being alive (default: always). */
  readonly eligible?: () => boolean;
  readonly log: (msg: string, fields?: Record<string, unknown>) => void;
  /** A new master term (maybe this host's), or none for now. */
  readonly onTerm?: (term: Term | undefined, mine: boolean) => void;
  /** This host's deadline passed (or its lease is gone): its guests are being killed, it must not act as alive. */
  readonly onFenced?: (why: string) => void;
  /** The fencer killed this host's guests (how many): their deadline passed. */
  readonly onGuestsKilled?: (killed: number) => void;
  /** After a fence, this host has a new lease and may stand for master again. */
  readonly onRecovered?: () => void;
  /** etcd deleted a peer's liveness key: that host is dead and fenced. */
  readonly onHostGone?: (hostUuid: string) => void;
}

/** How long start() waits for etcd to form its quorum. */
const QUORUM_WAIT_MS = 60_000;

export class HaEngine {
  readonly keys: HaKeys;
  readonly etcd: EtcdEndpoints;
  readonly redo: RedoLog;
  readonly locks: RunLocks;
  readonly member: EtcdMember | undefined;
  private readonly fencer: Fencer;
  private liveness: Liveness | undefined;
  private election: Election | undefined;
  private peers = new Set<string>();
  private peerTimer: NodeJS.Timeout | undefined;
  private fencedWhy: string | undefined;
  private stopped = false;
  private o: HaEngineOptions;

  constructor(options: HaEngineOptions) {
    const o = options;
    this.o = o;
    this.keys = haKeys(o.poolUuid);
    const self = o.members.find((m) => m.name === o.hostUuid);
    this.member = self
      ? new EtcdMember({ dataDir: o.dataDir, self, cluster: o.members, token: o.poolUuid, wrap: o.wrapEtcd })
      : undefined;
    // the host's own member first: while this host is alive and networked it answers
    const ordered = [...o.members].sort((a, b) => Number(b.name === o.hostUuid) - Number(a.name === o.hostUuid));
    this.etcd = new EtcdEndpoints(ordered.map((m) => clientUrl(m.address)));
    this.redo = new RedoLog(this.etcd, this.keys);
    this.locks = new RunLocks(this.etcd, this.keys);
    this.fencer = new Fencer({
      runDir: o.runDir,
      stateDir: memberPaths(o.dataDir).dir,
      onFenced: (n) => {
        this.o.log('fencer killed this host\'s guests', { killed: n });
        this.o.onGuestsKilled?.(n);
      },
      log: (m) => this.o.log(m),
    });
  }

  /**
   * Hands the running engine to another owner (the daemon restarting in place
   * after a master change): its lease, fencer and term go on, only the
   * callbacks change.
   */
  rebind(handlers: Pick<HaEngineOptions, 'log' | 'eligible' | 'onTerm' | 'onFenced' | 'onGuestsKilled' | 'onRecovered' | 'onHostGone'>): void {
    this.o = { ...this.o, ...handlers };
  }

  /** Whether this engine was built for these options (the same pool, host and members). */
  sameAs(o: Pick<HaEngineOptions, 'poolUuid' | 'hostUuid' | 'members'>): boolean {
    return this.o.poolUuid === o.poolUuid && this.o.hostUuid === o.hostUuid && JSON.stringify(this.o.members) === JSON.stringify(o.members);
  }

  get leaseId(): string {
    return this.liveness?.id ?? '';
  }

  get term(): Term | undefined {
    return this.election?.term;
  }

  /** Master by the election and not fenced (a fenced master's key lingers until its lease runs out). */
  get isMaster(): boolean {
    return !this.fenced && (this.election?.isMaster ?? false);
  }

  /** This host's current fencing deadline (monotonic ns; 0 before the lease). */
  get deadlineNs(): bigint {
    return this.liveness?.deadlineNs ?? 0n;
  }

  get fenced(): boolean {
    return this.fencedWhy !== undefined;
  }

  get fencerPid(): number | undefined {
    return this.fencer.pid;
  }

  /**
   * Starts (or adopts) the member, waits for a quorum, adopts or starts the
   * fencer, keeps the lease this host had before a restart if etcd still has
   * it (else takes a new one), arms the fencer, stands for master.
   */
  async start(): Promise<void> {
    this.member?.start();
    await this.waitForQuorum();
    const adopted = await this.fencer.start();
    const previous = this.recordedLease();
    const kept = await this.startLiveness(previous);
    this.o.log(kept ? 'HA lease kept across the restart' : 'HA lease granted', { lease: this.leaseId, previous, fencerAdopted: adopted });
    this.election = new Election({
      etcd: this.etcd,
      key: this.keys.master,
      hostUuid: this.o.hostUuid,
      leaseId: () => this.leaseId,
      eligible: () => !this.fenced && !this.stopped && (this.liveness?.alive ?? false) && (this.o.eligible?.() ?? true),
      pollMs: this.o.pollMs,
      onTerm: (t) => this.o.onTerm?.(t, t?.host === this.o.hostUuid),
    });
    await this.election.poll();
    this.election.start();
    this.watchPeers();
  }

  private get leaseFile(): string {
    return join(memberPaths(this.o.dataDir).dir, 'lease');
  }

  /** The lease this host's last daemon held (a decimal id), if it recorded one. */
  private recordedLease(): string | undefined {
    try {
      const id = readFileSync(this.leaseFile, 'utf8').trim();
      return /^\d{1,20}$/.test(id) ? id : undefined;
    } catch {
      return undefined;
    }
  }

  /** This host's lease (fresh, or `previous` if etcd still renews it) and liveness key; the lease id recorded. */
  private async startLiveness(previous?: string): Promise<boolean> {
    const liveness = new Liveness({
      etcd: this.etcd,
      key: this.keys.host(this.o.hostUuid),
      value: JSON.stringify({ address: this.o.address }),
      ttlS: this.o.ttlS,
      onDeadline: (d) => this.fencer.arm(d),
      onExpired: (why) => this.fence(why),
      onKeepaliveError: (err, tookMs) => this.o.log('keepalive failed', { err: String(err), tookMs }),
    });
    this.liveness = liveness;
    const kept = await liveness.start(previous);
    writeFileSync(this.leaseFile, `${liveness.id}\n`, { mode: PRIVATE_FILE });
    return kept;
  }

  /**
   * After a fence: once etcd has let the old lease go (so the keys bound to it —
   * the master key, run locks — are gone and survivors acted on it), this host
   * comes back with a new lease as an ordinary member, its guests dead.
   */
  private async recover(): Promise<void> {
    const old = this.liveness;
    while (!this.stopped) {
      try {
        if (old?.id) {
          const ttl = await this.etcd.call((c) => c.leaseClient.leaseTimeToLive({ ID: old.id }));
          if (Number(ttl.TTL) > 0) throw new Error('the old lease is still alive');
          await old.stop(false);
        }
        await this.startLiveness();
        this.fencedWhy = undefined;
        this.o.log('back with a new lease after a fence', { lease: this.leaseId });
        this.o.onRecovered?.();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private async waitForQuorum(): Promise<void> {
    const until = Date.now() + QUORUM_WAIT_MS;
    for (;;) {
      try {
        // a linearizable read succeeds only once the cluster has a leader
        await this.etcd.call((c) => c.get(this.keys.master).exec());
        return;
      } catch (err) {
        if (Date.now() > until) throw new Error(`etcd formed no quorum within ${QUORUM_WAIT_MS / 1000} s: ${String(err)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /** The deadline passed: the fencer is killing the guests (its own clock says so too); stop acting as alive. */
  private fence(why: string): void {
    if (this.fencedWhy) return;
    this.fencedWhy = why;
    this.o.log('fenced', { why });
    this.fencer.arm(monotonicNs()); // etcd may say the lease is gone before our own deadline passes: fence now
    this.o.onFenced?.(why);
    void this.recover();
  }

  /** Polls the peers' liveness keys; a key that was there and is gone is a dead, fenced host. */
  private watchPeers(): void {
    const poll = async (): Promise<void> => {
      try {
        const keys = await this.etcd.call((c) => c.getAll().prefix(this.keys.hosts).keys());
        const now = new Set(keys.map((k) => k.slice(this.keys.hosts.length)));
        for (const h of this.peers) if (!now.has(h) && h !== this.o.hostUuid && !this.fenced) this.o.onHostGone?.(h);
        this.peers = now;
      } catch {
        // unreachable: nothing is known to be gone
      }
      if (!this.stopped) this.peerTimer = setTimeout(() => void poll(), this.o.pollMs ?? 250);
    };
    void poll();
  }

  /** Hosts whose liveness keys exist now. */
  async liveHosts(): Promise<string[]> {
    return (await this.etcd.call((c) => c.getAll().prefix(this.keys.hosts).keys())).map((k) => k.slice(this.keys.hosts.length));
  }

  /**
   * Leaves cleanly: disarms the fencer, resigns, revokes the lease (its keys go
   * at once). `stopMember` also stops the etcd member (HA disabled). A daemon
   * stopping with HA on leaves the member running and, with `handOverMs`, hands
   * its lease to the fencer, which keeps it alive that long for the next daemon
   * (its keys — run locks, a master term — stay) and fences if none comes.
   */
  async stop(o: { stopMember: boolean; wipe?: boolean; handOverMs?: number }): Promise<void> {
    this.stopped = true;
    clearTimeout(this.peerTimer);
    this.election?.stop();
    if (o.handOverMs !== undefined) {
      const liveness = this.liveness;
      await liveness?.stop(false);
      // a fenced host's lease is not ours to keep alive: the fencer fences at the deadline it holds
      if (liveness?.id && !this.fenced) {
        await this.fencer.handOver({ lease: liveness.id, endpoints: this.etcd.endpoints, ttlS: liveness.ttl, graceMs: o.handOverMs });
        this.o.log('HA lease handed to the fencer until a daemon is back', { lease: liveness.id, graceMs: o.handOverMs });
      }
      this.etcd.close();
      return;
    }
    await this.fencer.stop();
    await this.election?.resign().catch(() => undefined);
    await this.liveness?.stop(true);
    rmSync(this.leaseFile, { force: true });
    this.etcd.close();
    if (o.stopMember) await this.member?.stop();
    if (o.wipe) this.member?.wipe();
  }
}
