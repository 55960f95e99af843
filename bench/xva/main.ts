/**
 * XVA data paths, measured in-process: XXH64 (ms per MiB), the XVA disk
 * writer and reader with SHA-1 chunk checksums (MB/s of disk; tar through
 * tar-stream), bare tar-stream pack and extract over the same members as the
 * baseline, and a qcow2 raw export through qemu-nbd and the NBD client (MB/s).
 *   node --import tsx bench/xva/main.ts [MiB]
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as tarStream from 'tar-stream';
import { xxh64Reference } from '../../test/helpers/xxh64-reference.ts';
import { diskMembers, receiveDisks, tarArchive, TarReader, xxh64, type DiskSource } from '../../src/storage/xva/index.ts';
import { exportQcow2Raw, openQcow2, qcow2Create } from '../../src/storage/sr/qcow2.ts';

const MiB = 1024 * 1024;
const run = promisify(execFile);
const size = Number(process.argv[2] ?? 64) * MiB;
const disk = randomBytes(size);
const source: DiskSource = { size, hasData: () => true, readInto: async (t, o, l) => void disk.copy(t, 0, o, o + l), close: async () => undefined };
const rate = (bytes: number, ms: number): string => `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`;
const time = async (f: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
};

const oneMiB = disk.subarray(0, MiB);
const xx = await time(async () => {
  for (let i = 0; i < 256; i++) xxh64(oneMiB);
});
console.log(`XXH64 (@node-rs/xxhash): ${(xx / 256).toFixed(2)} ms per MiB`);
const xxRef = await time(async () => {
  for (let i = 0; i < 4; i++) xxh64Reference(oneMiB);
});
console.log(`XXH64 (BigInt, the tests' reference, formerly ours): ${(xxRef / 4).toFixed(1)} ms per MiB`);
const sha = await time(async () => {
  for (let i = 0; i < 64; i++) createHash('sha1').update(oneMiB).digest();
});
console.log(`SHA-1 (node:crypto): ${(sha / 64).toFixed(2)} ms per MiB`);

const parts: Buffer[] = [];
const write = await time(async () => {
  for await (const b of tarArchive(diskMembers('Ref:1', source, size, () => undefined))) parts.push(b);
});
const tar = Buffer.concat(parts);
console.log(`XVA disk write (diskMembers + tarArchive, with SHA-1): ${rate(size, write)}`);
const read = await time(() =>
  receiveDisks(new TarReader((async function* () {
    for (let o = 0; o < tar.length; o += 64 * 1024) yield tar.subarray(o, o + 64 * 1024);
  })()), [{ prefix: 'Ref:1', size, write: async () => undefined }], { force: false, progress: () => undefined }),
);
console.log(`XVA disk read (TarReader + receiveDisks, with SHA-1 check): ${rate(size, read)}`);

// baseline: tar-stream alone over the same members, checksums included
const packed: Buffer[] = [];
const tsWrite = await time(async () => {
  const pack = tarStream.pack();
  const done = (async () => {
    for await (const b of pack) packed.push(b as Buffer);
  })();
  for (let o = 0, n = 0; o < size; o += MiB, n++) {
    const data = disk.subarray(o, o + MiB);
    const sum = Buffer.from(createHash('sha1').update(data).digest('hex'));
    await new Promise<void>((r, j) => pack.entry({ name: `Ref:1/${String(n).padStart(8, '0')}`, size: data.length }, data, (e) => (e ? j(e) : r())));
    await new Promise<void>((r, j) => pack.entry({ name: `Ref:1/${String(n).padStart(8, '0')}.checksum`, size: sum.length }, sum, (e) => (e ? j(e) : r())));
  }
  pack.finalize();
  await done;
});
console.log(`baseline tar write (bare tar-stream, with SHA-1): ${rate(size, tsWrite)}`);
const tsRead = await time(
  () =>
    new Promise<void>((resolve, reject) => {
      const ex = tarStream.extract();
      ex.on('entry', (h, s, next) => {
        const hash = createHash('sha1');
        s.on('data', (c: unknown) => void (h.name.endsWith('.checksum') || !Buffer.isBuffer(c) ? undefined : hash.update(c)));
        s.on('end', () => next());
        s.resume();
      });
      ex.on('finish', () => resolve());
      ex.on('error', reject);
      const all = Buffer.concat(packed);
      for (let o = 0; o < all.length; o += 64 * 1024) ex.write(all.subarray(o, o + 64 * 1024));
      ex.end(undefined);
    }),
);
console.log(`baseline tar read (bare tar-stream, with SHA-1): ${rate(size, tsRead)}`);

// qcow2 raw export through qemu-nbd and our NBD client
const dir = mkdtempSync(join(tmpdir(), 'xenon-bench-xva-'));
try {
  const file = join(dir, 'd.qcow2');
  await qcow2Create(file, size);
  const img = await openQcow2(file, { readOnly: false });
  for (let o = 0; o < size; o += 4 * MiB) await img.write(o, disk.subarray(o, o + 4 * MiB));
  await img.close();
  const nbd = await time(async () => {
    for await (const _ of exportQcow2Raw(file)) void _;
  });
  console.log(`qcow2 raw export (qemu-nbd + our NBD client): ${rate(size, nbd)}`);
  // baseline: qemu-img itself reading the same image into a raw file
  const raw = join(dir, 'd.raw');
  const convert = await time(() => run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, raw]));
  console.log(`baseline qcow2 → raw (qemu-img convert to a file): ${rate(size, convert)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
