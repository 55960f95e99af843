/** Buffered reading of exact byte counts from a socket, with flow control (NBD requests and their payloads). */
import net from 'node:net';
import { EndOfStream } from './protocol.ts';


export class SocketReader {
  private chunks: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  private want = 0;
  private waiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.length;
      if (this.waiter && this.buffered >= this.want) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve();
      }
      this.flow();
    });
    socket.on('end', () => this.fail(new EndOfStream('connection closed by peer')));
    socket.on('close', () => this.fail(new EndOfStream('connection closed')));
    socket.on('error', (e) => this.fail(e));
  }

  /** Reject the pending and all future reads that cannot be satisfied from the buffer. */
  fail(e: Error): void {
    if (!this.failure) this.failure = e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  private flow(): void {
    if (this.socket.destroyed) return;
    if (this.buffered >= Math.max(this.highWater, this.want)) this.socket.pause();
    else if (this.socket.isPaused()) this.socket.resume();
  }

  async read(n: number): Promise<Buffer> {
    if (this.buffered < n) {
      if (this.failure) throw this.failure;
      this.want = n;
      try {
        await new Promise<void>((resolve, reject) => {
          this.waiter = { resolve, reject };
          this.flow();
        });
      } finally {
        this.want = 0;
      }
    }
    const out = this.take(n);
    this.flow();
    return out;
  }

  /** Discard `n` bytes without holding them all in memory. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, 1024 * 1024);
      await this.read(k);
      n -= k;
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length - this.head, n - filled);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      this.head += k;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    return out;
  }
}

