/** Simple BlockDevices: a raw image file, and an in-memory buffer (tests, scratch disks). */
import { open } from 'node:fs/promises';
import type { BlockDevice } from './server.ts';

/**
 * A raw image file as a BlockDevice; its size is the file size at open time.
 * Reads past the end of a file that shrank underneath return zeros.
 */
export async function rawFileBlockDevice(path: string, opts: { readOnly?: boolean } = {}): Promise<BlockDevice> {
  const readOnly = opts.readOnly ?? false;
  const fh = await open(path, readOnly ? 'r' : 'r+');
  let size: number;
  try {
    size = (await fh.stat()).size;
  } catch (e) {
    await fh.close();
    throw e;
  }
  let closed = false;
  return {
    size,
    readOnly,
    async read(offset, length) {
      const b = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(b, done, length - done, offset + done);
        if (bytesRead === 0) {
          b.fill(0, done);
          break;
        }
        done += bytesRead;
      }
      return b;
    },
    async write(offset, data) {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    },
    async flush() {
      if (!readOnly) await fh.datasync();
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

/** A BlockDevice over `buffer` (shared, not copied). Supports trim (zero-fills). */
export function memoryBlockDevice(buffer: Buffer, opts: { readOnly?: boolean } = {}): BlockDevice {
  const readOnly = opts.readOnly ?? false;
  return {
    size: buffer.length,
    readOnly,
    async read(offset, length) {
      return Buffer.from(buffer.subarray(offset, offset + length));
    },
    async write(offset, data) {
      data.copy(buffer, offset);
    },
    async flush() {},
    async trim(offset, length) {
      buffer.fill(0, offset, offset + length);
    },
    async writeZeroes(offset, length) {
      buffer.fill(0, offset, offset + length);
    },
    async close() {},
  };
}
