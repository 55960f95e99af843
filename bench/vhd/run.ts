// VHD import/export/coalesce throughput, beside qemu-img on the same data.
//
//   npx tsx bench/vhd/run.ts [--size-mib 1024] [--runs 2] [--no-write-docs]
//
// Data: a disk of SIZE bytes alternating 2 MiB of random data and 2 MiB of
// zeros (half allocated). Every timed step ends with an fdatasync of its output
// (for qemu-img too), so both sides pay for durability alike. Best of RUNS.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createReadStream, createWriteStream } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { mkdtemp, rm, open, copyFile, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { coalesce, createDifferencing, exportRaw, exportVhd, importRaw, openVhd } from '../../src/storage/vhd/index.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const SIZE = arg('--size-mib', 1024) * MiB;
const RUNS = arg('--runs', 3);
const writeDocs = !args.includes('--no-write-docs');

async function datasync(p: string): Promise<void> {
  const fh = await open(p, 'r+');
  await fh.datasync();
  await fh.close();
}

interface Variant {
  label: string;
  fn: () => Promise<void>;
  cleanup: () => Promise<void>;
}

/** Run the variants in turn, RUNS rounds (interleaved, so machine noise hits all alike); best time of each. */
async function timedAll(variants: Variant[]): Promise<number[]> {
  const best = variants.map(() => Infinity);
  for (let r = 0; r < RUNS; r++) {
    for (const [k, v] of variants.entries()) {
      await v.cleanup();
      const t0 = process.hrtime.bigint();
      await v.fn();
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      best[k] = Math.min(best[k]!, s);
      process.stderr.write(`  ${v.label} run ${r + 1}: ${s.toFixed(3)} s\n`);
    }
  }
  return best;
}

/**
 * A raw-file sink that, like qemu-img's raw output, leaves all-zero chunks as
 * holes (seek instead of write) and sets the final length with ftruncate.
 */
function sparseFileSink(p: string): Writable {
  let fh: FileHandle | undefined;
  let pos = 0;
  const zero = Buffer.alloc(4 * MiB);
  const allZero = (b: Buffer) => {
    for (let o = 0; o < b.length; o += zero.length) {
      const n = Math.min(zero.length, b.length - o);
      if (b.compare(zero, 0, n, o, o + n) !== 0) return false;
    }
    return true;
  };
  return new Writable({
    highWaterMark: 16 * MiB,
    async construct(cb) {
      try {
        fh = await open(p, 'w');
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    async write(chunk: Buffer, _enc, cb) {
      try {
        if (!allZero(chunk)) {
          let done = 0;
          while (done < chunk.length) done += (await fh!.write(chunk, done, chunk.length - done, pos + done)).bytesWritten;
        }
        pos += chunk.length;
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    async final(cb) {
      try {
        await fh!.truncate(pos);
        await fh!.close();
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
}

const mbps = (bytes: number, s: number) => bytes / 1e6 / s;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'xenon-vhd-bench-'));
  try {
    const raw = join(dir, 'disk.raw');
    process.stderr.write(`generating ${SIZE / MiB} MiB half-allocated raw disk in ${dir}\n`);
    {
      const fh = await open(raw, 'w');
      const buf = Buffer.allocUnsafe(2 * MiB);
      for (let off = 0; off < SIZE; off += 4 * MiB) {
        randomFillSync(buf);
        await fh.write(buf, 0, Math.min(2 * MiB, SIZE - off), off);
      }
      await fh.truncate(SIZE);
      await fh.close();
    }
    const ours = join(dir, 'ours.vhd');
    const theirs = join(dir, 'qemu.vhd');
    const outRaw = join(dir, 'out.raw');
    const outVhd = join(dir, 'out.vhd');

    // Import: raw -> dynamic VHD
    const [impQemu, impOurs, impOursStream] = await timedAll([
      {
        label: 'import qemu-img',
        fn: async () => {
          await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, theirs]);
          await datasync(theirs);
        },
        cleanup: () => rm(theirs, { force: true }),
      },
      { label: 'import ours (file path)', fn: () => importRaw(raw, ours, SIZE), cleanup: () => rm(ours, { force: true }) },
      {
        label: 'import ours (fs.createReadStream)',
        fn: () => importRaw(createReadStream(raw, { highWaterMark: 2 * MiB }), ours, SIZE),
        cleanup: () => rm(ours, { force: true }),
      },
    ]);
    // (ours.vhd and qemu.vhd from the last round stay for the export steps)

    // Export: dynamic VHD -> raw file, and -> dynamic VHD
    const [expQemu, expOurs, expOursPlain, vexpQemu, vexpOurs] = await timedAll([
      {
        label: 'export qemu-img',
        fn: async () => {
          await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', theirs, outRaw]);
          await datasync(outRaw);
        },
        cleanup: () => rm(outRaw, { force: true }),
      },
      {
        label: 'export ours (sparse sink)',
        fn: async () => {
          await pipeline(exportRaw(ours), sparseFileSink(outRaw));
          await datasync(outRaw);
        },
        cleanup: () => rm(outRaw, { force: true }),
      },
      {
        label: 'export ours (plain write stream)',
        fn: async () => {
          await pipeline(exportRaw(ours), createWriteStream(outRaw));
          await datasync(outRaw);
        },
        cleanup: () => rm(outRaw, { force: true }),
      },
      {
        label: 'export-vhd qemu-img',
        fn: async () => {
          await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', theirs, outVhd]);
          await datasync(outVhd);
        },
        cleanup: () => rm(outVhd, { force: true }),
      },
      {
        label: 'export-vhd ours',
        fn: async () => {
          await pipeline(exportVhd(ours), createWriteStream(outVhd));
          await datasync(outVhd);
        },
        cleanup: () => rm(outVhd, { force: true }),
      },
    ]);
    await rm(outRaw, { force: true });

    // Coalesce: child with 1/4 of the disk rewritten (alternate 2 MiB regions of the first half), into the dynamic parent.
    const parent = join(dir, 'parent.vhd');
    const child = join(dir, 'child.vhd');
    let coalesced = 0;
    const [coTime] = await timedAll([
      {
        label: 'coalesce ours',
        fn: async () => {
          const r = await coalesce(child);
          coalesced = r.bytes;
        },
        cleanup: async () => {
          await rm(parent, { force: true });
          await rm(child, { force: true });
          await copyFile(ours, parent);
          await createDifferencing(child, parent);
          const v = await openVhd(child, { writable: true });
          const buf = Buffer.allocUnsafe(2 * MiB);
          for (let off = MiB; off + 2 * MiB <= SIZE / 2; off += 4 * MiB) {
            randomFillSync(buf);
            await v.write(off, buf); // straddles a parent-allocated and a parent-empty block
          }
          await v.close();
          await datasync(parent);
          await datasync(child);
        },
      },
    ]);

    const rows = [
      ['import raw file → dynamic VHD (`importRaw(path, …)`)', mbps(SIZE, impOurs), mbps(SIZE, impQemu)],
      ['import raw → dynamic VHD (`importRaw(fs.createReadStream(path), …)`)', mbps(SIZE, impOursStream), mbps(SIZE, impQemu)],
      ['export dynamic VHD → raw file (`exportRaw` into a sparse sink)', mbps(SIZE, expOurs), mbps(SIZE, expQemu)],
      ['export dynamic VHD → raw file (`exportRaw` into fs.createWriteStream, zeros written)', mbps(SIZE, expOursPlain), mbps(SIZE, expQemu)],
      ['export dynamic VHD → dynamic VHD file (`exportVhd` into fs.createWriteStream; qemu-img vpc→vpc)', mbps(SIZE, vexpOurs), mbps(SIZE, vexpQemu)],
    ] as const;
    const lines: string[] = [];
    lines.push(`| operation (${SIZE / MiB} MiB virtual, half allocated) | ours MB/s | qemu-img MB/s | ours / qemu-img |`);
    lines.push('|---|---:|---:|---:|');
    for (const [name, o, q] of rows) lines.push(`| ${name} | ${o.toFixed(0)} | ${q.toFixed(0)} | ${(o / q).toFixed(2)} |`);
    lines.push(`| coalesce ${coalesced / MiB} MiB child into dynamic parent | ${mbps(coalesced, coTime).toFixed(0)} | n/a (qemu has no VHD differencing) | — |`);
    const table = lines.join('\n');
    console.log(table);

    if (writeDocs) {
      const here = dirname(fileURLToPath(import.meta.url));
      const { stdout: qv } = await run('qemu-img', ['--version']);
      const section = [
        '## VHD (bench/vhd)',
        '',
        'Reproduce: `npx tsx bench/vhd/run.ts` (options: `--size-mib N`, `--runs N`, `--no-write-docs`).',
        '',
        `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} vCPU), Node ${process.version}, ${qv.split('\n')[0]}; files in ${tmpdir()} (page cache warm); load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' / ')}.`,
        'Throughput is virtual bytes per second (coalesce: bytes copied per second); each step includes an fdatasync of its output, for qemu-img too; best of ' + RUNS + ' interleaved runs (the machine is shared, single runs vary by 2x). qemu-img reads the sparse raw source with SEEK_DATA and skips its holes; we read every byte.',
        'qemu-img writes its raw output sparsely (zero runs become holes). `exportRaw` always streams every byte of the virtual size; the "sparse sink" row feeds it to a small Writable in the bench that, like qemu-img, seeks over all-zero chunks; the "plain" row writes everything.',
        '',
        table,
        '',
      ].join('\n');
      process.stderr.write(`wrote ${writeBenchmarkSection('## VHD (bench/vhd)', section)}\n`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
