/**
 * Logins cannot starve the host. Password hashing (scrypt, ~100 ms of a core)
 * runs off the event loop, a few checks at a time, in four queues served in
 * order: callers with no recent failures; a clean account from an address
 * with failures (a shared address under attack); an account under attack from
 * an address without failures (its owner, maybe: two at a time per address);
 * and the flood, both with failures (one check at a time). Whoever is over
 * the limits of their queue is refused unchecked, and every failure is
 * answered only after a delay: a flood of wrong passwords costs the attacker
 * time and the host little, and a correct login by someone else goes first.
 */
import type { Logger } from 'pino';

export interface ThrottleLimits {
  /** Password checks that run at once (each holds a thread-pool thread for ~100 ms). */
  readonly concurrency: number;
  /** Failures are remembered for this long. */
  readonly windowMs: number;
  /** Failures after which an address or account is suspect. */
  readonly suspectAfter: number;
  /** Checks in flight for one clean address or account before further ones queue behind others'. */
  readonly cleanInFlight: number;
  /** How long a failed or refused login waits before it is answered. */
  readonly failureDelayMs: number;
}

export const DEFAULT_LIMITS: ThrottleLimits = {
  concurrency: 2,
  windowMs: 5 * 60_000,
  suspectAfter: 3,
  cleanInFlight: 16,
  failureDelayMs: 1000,
};

/** How many keys (addresses, accounts) are tracked at most; the oldest are forgotten first. */
const MAX_TRACKED = 20_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Failure times per key, within the window. */
class FailureCounts {
  private readonly times = new Map<string, number[]>();

  constructor(private readonly windowMs: number) {}

  count(key: string, now = Date.now()): number {
    const list = this.times.get(key);
    if (!list) return 0;
    const fresh = list.filter((t) => now - t < this.windowMs);
    if (fresh.length === 0) this.times.delete(key);
    else if (fresh.length !== list.length) this.times.set(key, fresh);
    return fresh.length;
  }

  add(key: string, now = Date.now()): void {
    const list = this.times.get(key) ?? [];
    list.push(now);
    if (list.length > 256) list.shift();
    this.times.delete(key); // re-insert: the map's order is by last failure
    this.times.set(key, list);
    if (this.times.size > MAX_TRACKED) this.times.delete(this.times.keys().next().value!);
  }
}

/** The queues, in the order they are served. */
const enum Lane {
  /** No recent failures. */
  Clean = 0,
  /** A clean account from an address with failures (a shared address under attack). */
  SuspectAddress = 1,
  /** An account with failures from an address without (its owner, maybe). */
  SuspectAccount = 2,
  /** Both with failures: the flood, one check at a time. */
  Flood = 3,
}

/**
 * A few slots for password checks. A freed slot goes to the waiter whose lane
 * is best *now* (failures recorded while it waited count), first come first
 * served among equals: the first burst of a flood, queued before its failures
 * were known, then waits behind everyone else.
 */
class CheckSlots {
  private running = 0;
  private readonly waiting: { readonly lane: () => Lane; readonly wake: () => void }[] = [];

  constructor(private readonly size: number) {}

  async run<T>(lane: () => Lane, work: () => Promise<T>): Promise<T> {
    if (this.running >= this.size) await new Promise<void>((wake) => this.waiting.push({ lane, wake }));
    else this.running++;
    try {
      return await work();
    } finally {
      const next = this.takeBest();
      if (next) next.wake(); // the slot passes straight to the next waiter
      else this.running--;
    }
  }

  private takeBest(): { readonly wake: () => void } | undefined {
    let best = -1;
    let bestLane = Infinity;
    for (let i = 0; i < this.waiting.length && bestLane > Lane.Clean; i++) {
      const lane = this.waiting[i].lane();
      if (lane < bestLane) {
        best = i;
        bestLane = lane;
      }
    }
    return best < 0 ? undefined : this.waiting.splice(best, 1)[0];
  }
}

/** Counts of checks in flight, by key. */
class InFlight {
  private readonly n = new Map<string, number>();
  get(key: string): number {
    return this.n.get(key) ?? 0;
  }
  enter(...keys: string[]): void {
    for (const k of keys) this.n.set(k, this.get(k) + 1);
  }
  leave(...keys: string[]): void {
    for (const k of keys) {
      const left = this.get(k) - 1;
      if (left > 0) this.n.set(k, left);
      else this.n.delete(k);
    }
  }
}

export class LoginThrottle {
  private readonly failures: FailureCounts;
  private readonly slots: CheckSlots;
  private readonly inFlight = new InFlight();
  /** Checks running (holding a slot), by account. */
  private readonly checking = new InFlight();
  /** Keys whose refusals were already logged, so a flood writes a line per source, not thousands. */
  private readonly refusalLogged = new Set<string>();

  constructor(
    private readonly log: Logger,
    private readonly limits: ThrottleLimits = DEFAULT_LIMITS,
  ) {
    this.failures = new FailureCounts(limits.windowMs);
    this.slots = new CheckSlots(limits.concurrency);
  }

  /** A queued check's lane by the failures known now (in-flight crowding aside). */
  private laneNow(addrKey: string, userKey: string): Lane {
    const { suspectAfter } = this.limits;
    const account = this.failures.count(userKey) >= suspectAfter;
    const address = this.failures.count(addrKey) >= suspectAfter;
    if (account) return address ? Lane.Flood : Lane.SuspectAccount;
    return address ? Lane.SuspectAddress : Lane.Clean;
  }

  /** Which queue a check goes to, or null when it is refused unchecked. */
  private laneOf(addrKey: string, userKey: string): Lane | null {
    const { suspectAfter, cleanInFlight } = this.limits;
    if (this.failures.count(userKey) >= suspectAfter) {
      // an account under attack: from an address without failures (its owner, likely) a check or two, ahead of the flood
      if (this.failures.count(addrKey) < suspectAfter) return this.inFlight.get(addrKey) >= 2 ? null : Lane.SuspectAccount;
      return this.inFlight.get(userKey) >= 1 ? null : Lane.Flood;
    }
    if (this.inFlight.get(userKey) >= cleanInFlight) return Lane.SuspectAccount;
    if (this.failures.count(addrKey) >= suspectAfter || this.inFlight.get(addrKey) >= cleanInFlight) return Lane.SuspectAddress;
    return Lane.Clean;
  }

  /**
   * Runs `check` (the password check) under the limits: true when it passed.
   * A refusal or a failure resolves false only after the failure delay.
   * `known` is false for a name that cannot log in: its check costs no CPU
   * (it only waits as long as a real one), so it takes no slot.
   */
  async attempt(account: string, address: string, known: boolean, check: () => Promise<boolean>): Promise<boolean> {
    const addrKey = `address:${address}`;
    const userKey = `account:${account}`;
    const lane = known ? this.laneOf(addrKey, userKey) : Lane.Clean;
    let outcome: 'ok' | 'failed' | 'refused' = 'refused';
    if (lane !== null) {
      this.inFlight.enter(addrKey, userKey);
      try {
        const current = (): Lane => Math.max(lane, this.laneNow(addrKey, userKey));
        outcome = known ? await this.slots.run(current, () => this.checkOnce(addrKey, userKey, current(), check)) : (await check()) ? 'ok' : 'failed';
      } finally {
        this.inFlight.leave(addrKey, userKey);
      }
    }
    // a success does not forgive the account's failures: the flood at it would come back in ahead
    if (outcome === 'ok') return true;
    if (outcome === 'refused') {
      if (this.refusalLogged.size > 10_000) this.refusalLogged.clear();
      if (!this.refusalLogged.has(userKey)) {
        this.refusalLogged.add(userKey);
        this.log.warn({ address, account }, 'logins refused unchecked while this account has recent failures; answered after a delay');
      }
    } else {
      this.failures.add(addrKey);
      this.failures.add(userKey);
      this.log.warn({ address, account }, 'login failed');
    }
    await sleep(this.limits.failureDelayMs);
    return false;
  }

  /** Runs a queued check, unless both its address and its account failed meanwhile and another check of the account runs. */
  private async checkOnce(addrKey: string, userKey: string, lane: Lane, check: () => Promise<boolean>): Promise<'ok' | 'failed' | 'refused'> {
    const { suspectAfter } = this.limits;
    const suspect = this.failures.count(userKey) >= suspectAfter && this.failures.count(addrKey) >= suspectAfter;
    if (lane === Lane.Flood && suspect && this.checking.get(userKey) >= 1) return 'refused';
    this.checking.enter(userKey);
    try {
      return (await check()) ? 'ok' : 'failed';
    } finally {
      this.checking.leave(userKey);
    }
  }

  /** Hashing outside a login (setting a password) shares the slots, as a clean caller. */
  hashing<T>(work: () => Promise<T>): Promise<T> {
    return this.slots.run(() => Lane.Clean, work);
  }
}
