/** Shared by the storage tests: deterministic pseudo-random data, and writes mirrored into a raw shadow. */
import type { Vhd } from '../../src/storage/vhd/index.ts';

export const MiB = 1024 * 1024;

/** A xorshift32 generator: the same seed gives the same data on every run. */
export function xorshift(seed: number): { next(): number; int(n: number): number; bytes(n: number): Buffer } {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  return {
    next,
    int: (n) => next() % n,
    bytes(n) {
      const words = new Uint32Array(Math.ceil(n / 4));
      for (let i = 0; i < words.length; i++) words[i] = next();
      return Buffer.from(words.buffer, 0, n);
    },
  };
}

/** `n` bytes from a generator seeded with `seed`. */
export const seededBytes = (n: number, seed: number): Buffer => xorshift(seed).bytes(n);

/** Applies the same write to a VHD and to a raw shadow buffer. */
export async function writeBoth(v: Vhd, shadow: Buffer, offset: number, data: Buffer): Promise<void> {
  await v.write(offset, data);
  data.copy(shadow, offset);
}
