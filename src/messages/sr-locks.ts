/**
 * Who may touch an SR's chains at once. Changing which files make up a chain
 * (snapshot, clone, destroy, resize, reset, a coalesce step, opening a disk
 * for a guest) is exclusive; using images without restructuring them (raw
 * import and export, copies) is shared. Waiters are served in arrival order,
 * so a waiting coalesce is not starved by a stream of exports.
 */
import type { SrDriver } from '../storage/sr/driver.ts';

type Mode = 'shared' | 'exclusive';

interface Waiter {
  mode: Mode;
  wake: () => void;
}

/** A readers-writer lock, FIFO. */
class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: Waiter[] = [];

  get idle(): boolean {
    return this.readers === 0 && !this.writer && this.queue.length === 0;
  }

  async run<T>(mode: Mode, fn: () => Promise<T>): Promise<T> {
    await this.acquire(mode);
    try {
      return await fn();
    } finally {
      if (mode === 'exclusive') this.writer = false;
      else this.readers--;
      this.drain();
    }
  }

  private acquire(mode: Mode): Promise<void> {
    if (this.queue.length === 0 && this.admits(mode)) {
      this.take(mode);
      return Promise.resolve();
    }
    return new Promise((wake) => this.queue.push({ mode, wake }));
  }

  private admits(mode: Mode): boolean {
    return mode === 'shared' ? !this.writer : !this.writer && this.readers === 0;
  }

  private take(mode: Mode): void {
    if (mode === 'exclusive') this.writer = true;
    else this.readers++;
  }

  private drain(): void {
    while (this.queue.length > 0 && this.admits(this.queue[0].mode)) {
      const w = this.queue.shift()!;
      this.take(w.mode);
      w.wake();
    }
  }
}

/** One lock per SR (by SR ref). */
export class ChainLocks {
  private readonly locks = new Map<string, RwLock>();

  /** Runs `fn` while nothing else restructures or uses the SR's chains. */
  exclusive<T>(sr: string, fn: () => Promise<T>): Promise<T> {
    return this.run(sr, 'exclusive', fn);
  }

  /** Runs `fn` while nothing restructures the SR's chains. */
  shared<T>(sr: string, fn: () => Promise<T>): Promise<T> {
    return this.run(sr, 'shared', fn);
  }

  private async run<T>(sr: string, mode: Mode, fn: () => Promise<T>): Promise<T> {
    let lock = this.locks.get(sr);
    if (!lock) this.locks.set(sr, (lock = new RwLock()));
    try {
      return await lock.run(mode, fn);
    } finally {
      if (lock.idle) this.locks.delete(sr);
    }
  }
}

/** Driver methods that change which files make up a chain, and those that read chains at length. */
const EXCLUSIVE_METHODS: ReadonlySet<string> = new Set(['deleteVolume', 'resizeVolume', 'branch', 'resetLeaf', 'coalesce', 'recover'] satisfies (keyof SrDriver)[]);
const SHARED_METHODS: ReadonlySet<string> = new Set(['copyVolume'] satisfies (keyof SrDriver)[]);

/**
 * The same driver (same class, same extra methods) whose chain-changing
 * methods take the SR's lock: what message handlers get, so that none of
 * them can interleave with a coalesce. The collector uses the bare driver
 * inside its own exclusive section.
 */
export function lockedDriver<D extends SrDriver>(driver: D, sr: string, locks: ChainLocks): D {
  return new Proxy(driver, {
    get(target, name, receiver) {
      const value: unknown = Reflect.get(target, name, receiver);
      if (typeof name !== 'string' || typeof value !== 'function') return value;
      const mode: Mode | undefined = EXCLUSIVE_METHODS.has(name) ? 'exclusive' : SHARED_METHODS.has(name) ? 'shared' : undefined;
      const method = value as (...args: unknown[]) => unknown;
      if (!mode) return method.bind(target);
      return (...args: unknown[]) => locks[mode](sr, async () => method.apply(target, args));
    },
  });
}
