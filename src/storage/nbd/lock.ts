/** Small async locks used by the NBD server and its block devices. */

/** FIFO mutual exclusion: `run(fn)` calls are executed one at a time, in call order. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

interface Waiter {
  exclusive: boolean;
  grant: () => void;
}

/**
 * Readers-writer lock, FIFO-fair: any number of `shared` holders at once, or
 * one `exclusive` holder. A waiting exclusive request blocks later shared ones
 * (no writer starvation).
 */
export class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: Waiter[] = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.readers--;
      this.pump();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.pump();
    }
  }

  private canGrant(exclusive: boolean): boolean {
    return exclusive ? !this.writer && this.readers === 0 : !this.writer;
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.queue.length === 0 && this.canGrant(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push({ exclusive, grant: resolve }));
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.writer = true;
    else this.readers++;
  }

  private pump(): void {
    while (this.queue.length > 0 && this.canGrant(this.queue[0]!.exclusive)) {
      const w = this.queue.shift()!;
      this.take(w.exclusive);
      w.grant();
    }
  }
}
