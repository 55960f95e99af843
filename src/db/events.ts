/**
 * The change log behind event.from / event.next. Every committed change gets
 * the next generation number; event.from(token) returns each object changed
 * since that generation once, with its latest state, in generation order.
 */
import type { DbRecord } from './record.ts';

export type EventOp = 'add' | 'mod' | 'del';

export interface Change {
  readonly gen: number;
  readonly cls: string;
  readonly ref: string;
  readonly op: EventOp;
  /** The record after the change; for 'del', the last record before it. */
  readonly snapshot: DbRecord;
  readonly time: number;
}

interface Waiter {
  readonly classes: ReadonlySet<string> | null; // null: every class
  readonly wake: () => void;
}

/** The longest a node timer may run (2^31-1 ms); above it node fires after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const clampTimer = (ms: number): number => (ms > 0 ? Math.min(ms, MAX_TIMER_MS) : 0);

/** How many deletions are remembered for clients that come back with an old token. */
const TOMBSTONE_LIMIT = 100_000;

export class EventLog {
  private generation = 0;
  /** Changes in generation order; compacted so each ref appears once (its latest change). */
  private log: Change[] = [];
  private latestIndex = new Map<string, number>();
  /** Generation at which each live or remembered object was created. */
  private createdAt = new Map<string, number>();
  /** Tokens older than this may have missed deletions that were forgotten. */
  private oldestReliable = 0;
  private waiters = new Set<Waiter>();
  private deletions = 0;

  get current(): number {
    return this.generation;
  }

  /** Records a committed batch and wakes those waiting on its classes. */
  append(batch: readonly Omit<Change, 'gen' | 'time'>[]): void {
    if (batch.length === 0) return;
    const time = Date.now();
    const touched = new Set<string>();
    for (const c of batch) {
      const gen = ++this.generation;
      if (c.op === 'add') this.createdAt.set(c.ref, gen);
      if (c.op === 'del') this.deletions++;
      this.log.push({ ...c, gen, time });
      this.latestIndex.set(c.ref, this.log.length - 1);
      touched.add(c.cls.toLowerCase());
    }
    if (this.log.length > 2 * this.latestIndex.size + 10_000) this.compact();
    for (const w of this.waiters) {
      if (w.classes === null || [...touched].some((t) => w.classes!.has(t))) w.wake();
    }
  }

  /** Drops superseded entries and, past the limit, the oldest deletions. */
  private compact(): void {
    const kept = this.log.filter((c, i) => this.latestIndex.get(c.ref) === i);
    let dropDeletes = Math.max(0, this.deletions - TOMBSTONE_LIMIT);
    const log: Change[] = [];
    for (const c of kept) {
      if (c.op === 'del' && dropDeletes > 0) {
        dropDeletes--;
        this.oldestReliable = c.gen;
        this.createdAt.delete(c.ref);
        continue;
      }
      log.push(c);
    }
    this.log = log;
    this.deletions = log.filter((c) => c.op === 'del').length;
    this.latestIndex = new Map(log.map((c, i) => [c.ref, i]));
  }

  /** True when a token is so old that deletions it should see were forgotten. */
  isStale(token: number): boolean {
    return token < this.oldestReliable;
  }

  /**
   * Objects of the given classes (lower-case names, null = all) changed after
   * `token`, each once with its latest state. An object both created and
   * deleted since the token is not reported at all; one created since is an 'add'.
   */
  since(token: number, classes: ReadonlySet<string> | null, limit = Infinity): Change[] {
    const out: Change[] = [];
    let lo = 0;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.log[mid].gen <= token) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.log.length && out.length < limit; i++) {
      const c = this.log[i];
      if (this.latestIndex.get(c.ref) !== i) continue; // superseded by a later change
      if (classes !== null && !classes.has(c.cls.toLowerCase())) continue;
      const created = this.createdAt.get(c.ref) ?? 0;
      if (c.op === 'del') {
        if (created > token) continue;
        out.push(c);
      } else out.push(created > token ? (c.op === 'add' ? c : { ...c, op: 'add' }) : c.op === 'add' ? { ...c, op: 'mod' } : c);
    }
    return out;
  }

  /**
   * Resolves when a change to one of the classes is appended, or after `ms`
   * (at most a timer's range, ~24.8 days: a caller wanting longer waits again;
   * NaN or a negative wait is no wait).
   */
  wait(classes: ReadonlySet<string> | null, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const waiter: Waiter = { classes, wake: done };
      const timer = setTimeout(done, clampTimer(ms));
      this.waiters.add(waiter);
      signal?.addEventListener('abort', done);
    });
  }
}
