/**
 * A host's liveness: a key on a short lease (5 s), kept alive by keepalives
 * this module sends itself, to every member at once (the first acknowledgement
 * counts), rather than by the library's keepalive loop, whose "lost" event
 * comes only after 2×TTL. Each acknowledged keepalive moves the fencing
 * deadline to its *send* time + TTL − 1 s on the monotonic clock: etcd started
 * the lease's new TTL no earlier than the send, so the guests are dead a
 * second before the lease can expire and survivors may restart them.
 */
import type { Etcd3 } from 'etcd3';
import { monotonicNs, type EtcdEndpoints } from './etcd-client.ts';

export const LEASE_TTL_S = 5;
const MARGIN_NS = 1_000_000_000n;

export interface LivenessOptions {
  readonly etcd: EtcdEndpoints;
  /** The liveness key, and what it holds (the host's address, for peers). */
  readonly key: string;
  readonly value: string;
  readonly ttlS?: number;
  /** Between keepalives (default TTL/5). */
  readonly intervalMs?: number;
  /** Each new deadline, as soon as it is known (for the fencer). */
  readonly onDeadline: (deadlineNs: bigint) => void;
  /** The deadline passed, or etcd said the lease is gone: this host may no longer act as alive. */
  readonly onExpired: (why: string) => void;
  /** A keepalive round failed everywhere (tolerated until the deadline). */
  readonly onKeepaliveError?: (err: unknown, tookMs: number) => void;
}

class LeaseGone extends Error {}

/** One keepalive on one member: the TTL etcd gave the lease (0: the lease is gone). */
async function keepaliveOn(client: Etcd3, id: string, deadlineMs: number): Promise<number> {
  const stream = await client.leaseClient.leaseKeepAlive({ deadline: deadlineMs });
  try {
    const res = await new Promise<{ TTL: string }>((resolve, reject) => {
      stream.on('data', resolve);
      stream.on('error', reject);
      stream.write({ ID: id });
    });
    return Number(res.TTL);
  } finally {
    stream.end();
  }
}

export class Liveness {
  private leaseId = '';
  private deadline = 0n;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private expired = false;
  private readonly ttlS: number;
  private readonly intervalMs: number;

  constructor(private readonly o: LivenessOptions) {
    this.ttlS = o.ttlS ?? LEASE_TTL_S;
    this.intervalMs = o.intervalMs ?? (this.ttlS * 1000) / 5;
  }

  /** The lease (decimal id) that binds this host's keys. */
  get id(): string {
    return this.leaseId;
  }

  get deadlineNs(): bigint {
    return this.deadline;
  }

  get alive(): boolean {
    return !this.expired && !this.stopped && monotonicNs() < this.deadline;
  }

  get ttl(): number {
    return this.ttlS;
  }

  /**
   * Keeps `previous` (the lease this host had before its daemon restarted) if
   * etcd still renews it — then the keys bound to it (liveness key, run locks,
   * a master term) are intact — else grants a new lease; puts the liveness key
   * on it. Returns whether the lease was kept. Throws if etcd cannot be reached.
   */
  async start(previous?: string): Promise<boolean> {
    const kept = previous !== undefined && (await this.renew(previous));
    if (!kept) {
      const sent = monotonicNs();
      const granted = await this.o.etcd.call((c) => c.leaseClient.leaseGrant({ TTL: this.ttlS }));
      this.leaseId = granted.ID;
      this.advance(sent, Number(granted.TTL));
    }
    this.tick(); // keepalives from now: a slow put must not let the lease run out
    await this.o.etcd.call((c) => c.put(this.o.key).value(this.o.value).lease(this.leaseId).exec());
    return kept;
  }

  /** One keepalive of a lease this host held: true (and the deadline moved) if etcd answered a TTL > 0. */
  private async renew(id: string): Promise<boolean> {
    // a member slow to answer is no proof the lease is gone: a few rounds, within one TTL
    for (let round = 0; round < this.ttlS; round++) {
      const sent = monotonicNs();
      const deadlineMs = Date.now() + this.intervalMs;
      try {
        const ttl = await Promise.any(this.o.etcd.clients.map((c) => keepaliveOn(c, id, deadlineMs).then((t) => (t > 0 ? t : Promise.reject(new LeaseGone())))));
        this.leaseId = id;
        this.advance(sent, ttl);
        return true;
      } catch (err) {
        if (err instanceof AggregateError && err.errors.some((e) => e instanceof LeaseGone)) return false;
      }
    }
    return false;
  }

  private advance(sentNs: bigint, ttlS: number): void {
    const next = sentNs + BigInt(ttlS) * 1_000_000_000n - MARGIN_NS;
    if (next <= this.deadline) return;
    this.deadline = next;
    this.o.onDeadline(next);
    // noticed at the deadline itself, not at the next keepalive round
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => this.checkDeadline(), Number((next - monotonicNs()) / 1_000_000n) + 1);
  }

  private checkDeadline(): void {
    if (monotonicNs() >= this.deadline) this.expire('the fencing deadline passed without an acknowledged keepalive');
    else if (!this.expired && !this.stopped) this.deadlineTimer = setTimeout(() => this.checkDeadline(), Number((this.deadline - monotonicNs()) / 1_000_000n) + 1);
  }

  private expire(why: string): void {
    if (this.expired || this.stopped) return;
    this.expired = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    this.o.onExpired(why);
  }

  /** One round: a keepalive to every member at once; the first acknowledgement moves the deadline. */
  private async round(): Promise<void> {
    const sent = monotonicNs();
    // at most one interval: a member that hangs must not hold up the next round
    const waitMs = Math.max(1, Math.min(this.intervalMs, Number((this.deadline - sent) / 1_000_000n)));
    const deadlineMs = Date.now() + waitMs;
    try {
      const ttl = await Promise.any(
        this.o.etcd.clients.map((c) => keepaliveOn(c, this.leaseId, deadlineMs).then((t) => (t > 0 ? t : Promise.reject(new LeaseGone())))),
      );
      this.advance(sent, ttl);
    } catch (err) {
      const errors = err instanceof AggregateError ? err.errors : [err];
      if (errors.some((e) => e instanceof LeaseGone)) this.expire('etcd says the lease is gone');
      else this.o.onKeepaliveError?.(errors[0], Number(monotonicNs() - sent) / 1e6);
    }
  }

  private tick(): void {
    if (this.stopped || this.expired) return;
    if (monotonicNs() >= this.deadline) return this.expire('the fencing deadline passed without an acknowledged keepalive');
    const started = monotonicNs();
    void this.round().finally(() => {
      if (this.stopped || this.expired) return;
      const untilDeadline = Number((this.deadline - monotonicNs()) / 1_000_000n);
      const untilNext = this.intervalMs - Number((monotonicNs() - started) / 1_000_000n);
      this.timer = setTimeout(() => this.tick(), Math.max(0, Math.min(untilNext, untilDeadline)));
    });
  }

  /** Stops the keepalives; `revoke` gives the lease up at once (its keys vanish now, not at expiry). */
  async stop(revoke: boolean): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    if (revoke && this.leaseId) await this.o.etcd.call((c) => c.leaseClient.leaseRevoke({ ID: this.leaseId })).catch(() => undefined);
  }
}
