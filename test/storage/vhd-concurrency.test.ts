// Concurrent read()/write()/flush() calls on one Vhd object: interleaved and
// overlapping random writes and reads on a differencing child, compared with an
// expected buffer, then checked again after reopening and through libvhdi.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, mkdir, readdir, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDifferencing, createDynamic, openVhd, type Vhd } from '../../src/storage/vhd/index.ts';
import { xorshift } from './helpers.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;

const random = xorshift(0x9e3779b9);
const rnd = random.next;
const randInt = random.int;
const pseudoRandom = random.bytes;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenon-vhd-conc-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A parent with random data in some blocks and a fresh differencing child; returns the expected contents. */
async function makeChain(name: string, size: number, blockSize: number): Promise<{ child: string; shadow: Buffer }> {
  const base = join(dir, `${name}-base.vhd`);
  const child = join(dir, `${name}-child.vhd`);
  await createDynamic(base, size, { blockSize });
  const shadow = Buffer.alloc(size);
  const v = await openVhd(base, { writable: true });
  for (let off = 0; off < size; off += 2 * blockSize) {
    // every other block, partially, so the child's widened writes must read the parent
    const len = Math.min(blockSize - 3 * 512, size - off);
    const data = pseudoRandom(len);
    await v.write(off + 512, data.subarray(0, Math.min(len, size - off - 512)));
    data.copy(shadow, off + 512, 0, Math.min(len, size - off - 512));
  }
  await v.close();
  await createDifferencing(child, base);
  return { child, shadow };
}

/** Random write range: mostly small and unaligned, clustered around `hot`, sometimes spanning blocks. */
function randomRange(size: number, blockSize: number, hot: number): [number, number] {
  const r = randInt(10);
  let len: number;
  if (r < 5) len = 1 + randInt(3000);
  else if (r < 8) len = 512 * (1 + randInt(8));
  else len = 1 + randInt(2 * blockSize + 5000);
  len = Math.min(len, size);
  let off = r >= 5 && r < 8 ? hot + 512 * randInt(64) - 512 * 32 : hot + randInt(16 * KiB) - 8 * KiB;
  off = Math.max(0, Math.min(size - len, off));
  return [off, len];
}

/** A read concurrent with a round's writes: every byte is either the old value or the round's new one. */
function checkConcurrentRead(got: Buffer, off: number, before: Buffer, pattern: Buffer, covered: Uint8Array, what: string): void {
  if (got.equals(before.subarray(off, off + got.length))) return;
  for (let k = 0; k < got.length; k++) {
    const p = off + k;
    if (got[k] !== before[p] && !(covered[p] && got[k] === pattern[p])) {
      assert.fail(`${what}: byte ${p} is ${got[k]}, expected ${before[p]}${covered[p] ? ` or ${pattern[p]}` : ''}`);
    }
  }
}

/**
 * `rounds` rounds of concurrent operations. In a round all writes take their
 * bytes from one random pattern (so overlapping writes have one defined result)
 * and reads must see, byte by byte, either the pre-round or the new contents.
 * With `overlap` several writes are in flight at once, otherwise one write runs
 * at a time with reads around it. The disk is reopened every few rounds so the
 * bitmap cache starts cold.
 */
async function hammer(path: string, shadow: Buffer, blockSize: number, rounds: number, overlap: boolean): Promise<void> {
  const size = shadow.length;
  const patterns = Array.from({ length: 16 }, () => pseudoRandom(size));
  let v: Vhd = await openVhd(path, { writable: true });
  try {
    let hot = 0;
    for (let r = 0; r < rounds; r++) {
      if (r % (overlap ? 4 : 2) === 0 && r > 0) {
        await v.close();
        v = await openVhd(path, { writable: true });
      }
      const before = Buffer.from(shadow);
      const pattern = patterns[r % patterns.length]!;
      const covered = new Uint8Array(size);
      // stay on one block for a few rounds so cached bitmaps get reused by later writes
      if (r % 3 === 0) hot = randInt(Math.ceil(size / blockSize)) * blockSize + randInt(blockSize);
      const writes: Array<[number, number]> = [];
      for (let k = 0, n = 2 + randInt(overlap ? 9 : 4); k < n; k++) writes.push(randomRange(size, blockSize, hot));
      for (const [off, len] of writes) {
        pattern.copy(shadow, off, off, off + len);
        covered.fill(1, off, off + len);
      }
      const ops: Promise<void>[] = [];
      const readOne = async (off: number, len: number) => {
        for (let d = randInt(4); d > 0; d--) await new Promise(setImmediate);
        const got = await v.read(off, len);
        checkConcurrentRead(got, off, before, pattern, covered, `round ${r}, read ${off}+${len}`);
      };
      for (let k = 0, n = 2 + randInt(6); k < n; k++) {
        const [off, len] = randomRange(size, blockSize, hot);
        ops.push(readOne(off, len));
      }
      // reads first and interleaved, writes in between: the reads load bitmaps while writes update them
      const w = writes.map(([off, len]) => () => v.write(off, pattern.subarray(off, off + len)));
      if (overlap) {
        for (const f of w) {
          ops.push(f());
          const [off, len] = randomRange(size, blockSize, hot);
          ops.push(readOne(off, len));
        }
      } else {
        // one write at a time, reads started around each of them
        ops.push(
          (async () => {
            for (const f of w) {
              const [off, len] = randomRange(size, blockSize, hot);
              ops.push(readOne(off, len));
              await f();
            }
          })(),
        );
      }
      await settleAll(ops);
      const [off, len] = randomRange(size, blockSize, hot);
      assert.ok((await v.read(off, len)).equals(shadow.subarray(off, off + len)), `round ${r}: read-back ${off}+${len}`);
    }
    assert.ok((await v.read(0, size)).equals(shadow), 'contents after hammering');
  } finally {
    await v.close();
  }
  const r = await openVhd(path);
  try {
    assert.ok((await r.read(0, size)).equals(shadow), 'contents after reopening');
  } finally {
    await r.close();
  }
}

/** Wait for every operation (including ones added meanwhile) to finish, then throw the first failure. */
async function settleAll(ops: Promise<unknown>[]): Promise<void> {
  const failures: unknown[] = [];
  while (ops.length) {
    for (const r of await Promise.allSettled(ops.splice(0))) if (r.status === 'rejected') failures.push(r.reason);
  }
  if (failures.length) throw failures[0];
}

/** Read the chain through libvhdi (vhdimount), if FUSE is available. */
async function libvhdiContents(path: string, size: number): Promise<Buffer | undefined> {
  if (!existsSync('/dev/fuse')) return undefined;
  const mnt = join(dir, `mnt-${randInt(1e9)}`);
  await mkdir(mnt, { recursive: true });
  await run('vhdimount', [path, mnt]);
  try {
    const names = (await readdir(mnt)).filter((n) => /^vhdi\d+$/.test(n)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
    const fh = await open(join(mnt, names[names.length - 1]!), 'r');
    try {
      const got = Buffer.alloc(size);
      for (let done = 0; done < size; ) {
        const { bytesRead } = await fh.read(got, done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return got;
    } finally {
      await fh.close();
    }
  } finally {
    await run('umount', [mnt]).catch(() => run('fusermount', ['-u', mnt]));
  }
}

/**
 * Random latency (0-2 ms, or none) added to every FileHandle read/write/writev
 * while the tests run, so that I/O completes out of issue order as it can on a
 * loaded machine: this makes the interleavings that used to lose data frequent.
 */
function installIoJitter(): () => void {
  const proto = fhProto as Record<string, unknown>;
  const saved = new Map<string, unknown>();
  for (const name of ['read', 'write', 'writev']) {
    const orig = proto[name] as (...a: unknown[]) => Promise<unknown>;
    saved.set(name, orig);
    proto[name] = async function (this: unknown, ...args: unknown[]) {
      const d = randInt(4);
      if (d === 3) await new Promise(setImmediate);
      else if (d > 0) await new Promise((r) => setTimeout(r, d - 1));
      return orig.apply(this, args);
    };
  }
  return () => {
    for (const [name, f] of saved) proto[name] = f;
  };
}
let fhProto: object;

describe('concurrent access to one Vhd', () => {
  let restore: () => void = () => {};
  before(async () => {
    const fh = await open(join(dir, 'probe'), 'w');
    fhProto = Object.getPrototypeOf(fh) as object;
    await fh.close();
    restore = installIoJitter();
  });
  after(() => restore());

  for (const [name, blockSize] of [['2 MiB blocks', 2 * MiB], ['64 KiB blocks', 64 * KiB]] as const) {
    test(`differencing, ${name}: one write at a time with concurrent reads`, async () => {
      const size = 6 * MiB + 512 * 3;
      const { child, shadow } = await makeChain(`ser-${blockSize}`, size, blockSize);
      await hammer(child, shadow, blockSize, 160, false);
    });

    test(`differencing, ${name}: overlapping writes and reads (Promise.all)`, async (t) => {
      const size = 6 * MiB + 512 * 3;
      const { child, shadow } = await makeChain(`ovl-${blockSize}`, size, blockSize);
      await hammer(child, shadow, blockSize, 160, true);
      // libvhdi 20210425 misreads some 64 KiB-block chains even when written
      // sequentially (a block after a partially-set one reads as zeros), so
      // it is only consulted for the standard 2 MiB blocks.
      const lib = blockSize === 2 * MiB ? await libvhdiContents(child, size) : undefined;
      if (!lib) t.diagnostic('libvhdi check skipped');
      else assert.ok(lib.equals(shadow), 'libvhdi sees the same contents');
    });
  }

  test('deferred metadata: concurrent writes, reads and flushes', { timeout: 120_000 }, async () => {
    const size = 4 * MiB;
    const blockSize = 64 * KiB;
    const { child, shadow } = await makeChain('defer', size, blockSize);
    const v = await openVhd(child, { writable: true, deferMetadata: true });
    try {
      for (let r = 0; r < 40; r++) {
        const pattern = pseudoRandom(size);
        const hot = randInt(size);
        const ops: Promise<unknown>[] = [];
        for (let k = 0; k < 6; k++) {
          const [off, len] = randomRange(size, blockSize, hot);
          pattern.copy(shadow, off, off, off + len);
          ops.push(v.write(off, pattern.subarray(off, off + len)));
          if (k === 3) ops.push(v.flush());
          ops.push(v.read(off, len));
        }
        await settleAll(ops);
      }
      assert.ok((await v.read(0, size)).equals(shadow));
    } finally {
      await v.close();
    }
    const r = await openVhd(child);
    try {
      assert.ok((await r.read(0, size)).equals(shadow), 'contents after reopening');
    } finally {
      await r.close();
    }
  });
});
