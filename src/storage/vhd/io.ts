/** Small helpers around node:fs/promises FileHandle doing complete reads/writes. */
import type { FileHandle } from 'node:fs/promises';
import { VhdError } from './errors.ts';
import { ZERO_BUFFER } from './format.ts';

export async function readFull(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number, what = 'data'): Promise<void> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, off + done, len - done, pos + done);
    if (bytesRead === 0) throw new VhdError('VHD_TRUNCATED', `${what}: unexpected end of file at ${pos + done}`);
    done += bytesRead;
  }
}

export async function readAt(fh: FileHandle, len: number, pos: number, what?: string): Promise<Buffer> {
  const b = Buffer.allocUnsafe(len);
  await readFull(fh, b, 0, len, pos, what);
  return b;
}

export async function writeFull(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
    done += bytesWritten;
  }
}

/** Gather-write `bufs` at `pos`, handling short writes. */
export async function writevFull(fh: FileHandle, bufs: Buffer[], pos: number): Promise<void> {
  let list = bufs.filter((b) => b.length > 0);
  while (list.length > 0) {
    // keep well below IOV_MAX
    const batch = list.slice(0, 512);
    const total = batch.reduce((a, b) => a + b.length, 0);
    let { bytesWritten } = await fh.writev(batch, pos);
    pos += bytesWritten;
    if (bytesWritten === total) {
      list = list.slice(batch.length);
      continue;
    }
    // short write: drop what was written
    const rest: Buffer[] = [];
    for (const b of list) {
      if (bytesWritten >= b.length) {
        bytesWritten -= b.length;
        continue;
      }
      rest.push(bytesWritten > 0 ? b.subarray(bytesWritten) : b);
      bytesWritten = 0;
    }
    list = rest;
  }
}

/** Slices of a shared zero buffer totalling `n` bytes (for gather writes; never mutate them). */
export function zeros(n: number): Buffer[] {
  const out: Buffer[] = [];
  while (n > 0) {
    const k = Math.min(n, ZERO_BUFFER.length);
    out.push(ZERO_BUFFER.subarray(0, k));
    n -= k;
  }
  return out;
}

/**
 * Bounded queue of positional writes kept in flight while the producer reads
 * its next input, so input and output overlap.
 */
export class WriteQueue {
  private inflight = new Set<Promise<void>>();
  private error: unknown;
  constructor(private fh: FileHandle, private max = 4) {}

  /** Queue a gathered write; `done` runs once it has completed successfully. */
  async push(bufs: Buffer[], pos: number, done?: () => void): Promise<void> {
    if (this.error) throw this.error;
    while (this.inflight.size >= this.max) await Promise.race(this.inflight);
    if (this.error) throw this.error;
    const p: Promise<void> = writevFull(this.fh, bufs, pos).then(
      () => {
        this.inflight.delete(p);
        done?.();
      },
      (e) => {
        this.inflight.delete(p);
        this.error ??= e;
      },
    );
    this.inflight.add(p);
  }

  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.race(this.inflight);
    if (this.error) throw this.error;
  }
}
