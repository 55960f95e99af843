// Streaming import/export of the VHD library, checked against qemu-img and libvhdi.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, readFile, writeFile, stat } from 'node:fs/promises';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createDifferencing,
  createDynamic,
  createFixed,
  exportRaw,
  exportVhd,
  importRaw,
  importVhd,
  openVhd,
  VhdError,
  type Vhd,
} from '../../src/storage/vhd/index.ts';
import { MiB, writeBoth, xorshift } from './helpers.ts';

const run = promisify(execFile);

const pseudoRandom = xorshift(987654321).bytes;

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function toFile(r: Readable, p: string): Promise<void> {
  await pipeline(r, createWriteStream(p));
}

async function qemuRaw(p: string, fmt = 'vpc'): Promise<Buffer> {
  const out = `${p}.qemu.raw`;
  await run('qemu-img', ['convert', '-f', fmt, '-O', 'raw', p, out]);
  const b = await readFile(out);
  await rm(out);
  return b;
}

async function expectRefused(p: Promise<unknown>, code: string, out: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof VhdError, `expected VhdError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
  assert.equal(existsSync(out), false, 'partial output removed');
}

let dir: string;
const size = 10 * MiB + 512;
let shadow: Buffer; // contents of the chain base <- mid <- top
let baseShadow: Buffer;
let base: string, mid: string, top: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenon-vhd-stream-'));
  base = join(dir, 'base.vhd');
  mid = join(dir, 'mid.vhd');
  top = join(dir, 'top.vhd');
  shadow = Buffer.alloc(size);
  await createDynamic(base, size);
  let v = await openVhd(base, { writable: true });
  await writeBoth(v, shadow, 0, pseudoRandom(MiB));
  await writeBoth(v, shadow, 6 * MiB + 3, pseudoRandom(MiB));
  await v.close();
  baseShadow = Buffer.from(shadow);
  await createDifferencing(mid, base);
  v = await openVhd(mid, { writable: true });
  await writeBoth(v, shadow, 100, pseudoRandom(5000));
  await writeBoth(v, shadow, 4 * MiB, pseudoRandom(300));
  await v.close();
  await createDifferencing(top, mid);
  v = await openVhd(top, { writable: true });
  await writeBoth(v, shadow, size - 2000, pseudoRandom(2000));
  await v.close();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('export', () => {
  test('exportRaw of a dynamic disk equals qemu-img convert -O raw byte for byte', async () => {
    const got = await collect(exportRaw(base));
    assert.ok(got.equals(await qemuRaw(base)));
    assert.ok(got.equals(baseShadow));
  });

  test('exportRaw of a fixed disk equals qemu-img convert', async () => {
    const p = join(dir, 'fx.vhd');
    await createFixed(p, 3 * MiB);
    const v = await openVhd(p, { writable: true });
    await v.write(MiB - 3, pseudoRandom(MiB));
    await v.close();
    assert.ok((await collect(exportRaw(p, { chunkSize: 1000 * 512 }))).equals(await qemuRaw(p)));
  });

  test('exportRaw of a chain resolves all layers', async () => {
    assert.ok((await collect(exportRaw(top))).equals(shadow));
  });

  test('exportVhd of a chain is a sparse dynamic VHD valid for qemu-img and vhdiinfo', async () => {
    const out = join(dir, 'exported.vhd');
    await toFile(exportVhd(top), out);
    assert.ok((await qemuRaw(out)).equals(shadow));
    const { stdout } = await run('vhdiinfo', [out]);
    assert.match(stdout, /Disk type\s*:\s*Dynamic/);
    const v = await openVhd(out);
    assert.equal(v.type, 'dynamic');
    // blocks allocated somewhere in the chain: 0 (base+mid), 2 (mid), 3 (base), 4 and 5 (top); not 1
    assert.deepEqual(v.allocatedBlocks(), [0, 2, 3, 4, 5]);
    await v.close();
  });

  test('delta export with base holds only the blocks above it; applying it over base gives the top', async () => {
    const out = join(dir, 'delta.vhd');
    await toFile(exportVhd(top, { base }), out);
    const d = await openVhd(out);
    assert.deepEqual(d.allocatedBlocks(), [0, 2, 4, 5]);
    // apply the delta onto a copy of the base and compare with the chain
    const copy = join(dir, 'applied.vhd');
    await importVhd(exportVhd(base), copy);
    const target = await openVhd(copy, { writable: true });
    for (const i of d.allocatedBlocks()) {
      const off = i * d.blockSize;
      const n = Math.min(d.blockSize, d.virtualSize - off);
      await target.write(off, await d.read(off, n));
    }
    assert.ok((await target.read(0, size)).equals(shadow));
    await target.close();
    await d.close();
    const mOnly = join(dir, 'delta-mid.vhd');
    await toFile(exportVhd(top, { base: mid }), mOnly);
    const m = await openVhd(mOnly);
    assert.deepEqual(m.allocatedBlocks(), [4, 5]);
    await m.close();
    await assert.rejects(collect(exportVhd(base, { base: top })), /VHD_INVALID_ARG/);
  });
});

describe('import', () => {
  test('importRaw writes a sparse dynamic VHD that qemu-img reads identically', async () => {
    const rawPath = join(dir, 'in.raw');
    const raw = Buffer.alloc(9 * MiB + 1024);
    pseudoRandom(MiB).copy(raw, 2 * MiB + 5);
    pseudoRandom(700).copy(raw, raw.length - 700);
    await writeFile(rawPath, raw);
    const out = join(dir, 'in.vhd');
    await importRaw(createReadStream(rawPath), out, raw.length);
    const v = await openVhd(out);
    assert.deepEqual(v.allocatedBlocks(), [1, 4], 'all-zero blocks skipped');
    await v.close();
    assert.ok((await qemuRaw(out)).equals(raw));
    await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', out, rawPath]);
    await run('vhdiinfo', [out]);
    assert.ok((await stat(out)).size < 5 * MiB);
    // the same from a file path (pooled positional reads)
    const out2 = join(dir, 'in-path.vhd');
    await importRaw(rawPath, out2, raw.length);
    assert.ok((await collect(exportRaw(out2))).equals(raw));
    await expectRefused(importRaw(rawPath, join(dir, 'in-long.vhd'), raw.length + 512), 'VHD_TRUNCATED', join(dir, 'in-long.vhd'));
    await expectRefused(importRaw(rawPath, join(dir, 'in-short.vhd'), raw.length - 512), 'VHD_INVALID_ARG', join(dir, 'in-short.vhd'));
  });

  test('importRaw refuses short and long streams, removing the output', async () => {
    const out = join(dir, 'short.vhd');
    await expectRefused(importRaw(Readable.from([pseudoRandom(MiB)]), out, 2 * MiB), 'VHD_TRUNCATED', out);
    await expectRefused(importRaw(Readable.from([pseudoRandom(MiB + 512)]), out, MiB), 'VHD_INVALID_ARG', out);
  });

  for (const sub of ['fixed', 'dynamic'] as const) {
    test(`importVhd of a qemu-img ${sub} VHD stream`, async () => {
      const rawPath = join(dir, `q-${sub}.raw`);
      const raw = Buffer.alloc(6 * MiB + 512);
      pseudoRandom(MiB + 7).copy(raw, 3 * MiB - 5);
      raw.fill(0xee, raw.length - 512);
      await writeFile(rawPath, raw);
      const src = join(dir, `q-${sub}.vhd`);
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${sub},force_size=on`, rawPath, src]);
      const out = join(dir, `q-${sub}-imported.vhd`);
      await importVhd(createReadStream(src), out);
      const v = await openVhd(out);
      assert.equal(v.type, 'dynamic');
      assert.equal(v.virtualSize, raw.length);
      assert.ok((await v.read(0, raw.length)).equals(raw));
      await v.close();
      assert.ok((await qemuRaw(out)).equals(raw));
      await run('vhdiinfo', [out]);
    });
  }

  test('importVhd round-trips our own export stream', async () => {
    const out = join(dir, 'rt.vhd');
    await importVhd(exportVhd(top), out);
    assert.ok((await collect(exportRaw(out))).equals(shadow));
  });

  test('importVhd refuses truncated and corrupted streams and leaves no file', async () => {
    const good = join(dir, 'good.vhd');
    await toFile(exportVhd(top), good);
    const bytes = await readFile(good);
    const fixed = join(dir, 'good-fixed.vhd');
    await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', good, fixed]);
    const fixedBytes = await readFile(fixed);
    const mutate = (b: Buffer, pos: number, v: number[]) => {
      const c = Buffer.from(b);
      Buffer.from(v).copy(c, pos);
      return c;
    };
    const batOff = 1536;
    const cases: [string, Buffer, string][] = [
      ['empty', Buffer.alloc(0), 'VHD_TRUNCATED'],
      ['cut in header', bytes.subarray(0, 1000), 'VHD_TRUNCATED'],
      ['cut in BAT', bytes.subarray(0, batOff + 10), 'VHD_TRUNCATED'],
      ['cut in a block', bytes.subarray(0, bytes.length - MiB), 'VHD_TRUNCATED'],
      ['missing trailing footer', bytes.subarray(0, bytes.length - 512), 'VHD_TRUNCATED'],
      // byte 70 is in the footer's random uuid: flipped, never written over with a value it may already hold
      ['footer copy checksum', mutate(bytes, 70, [bytes[70] ^ 0xff]), 'VHD_CORRUPT'],
      ['header cookie', mutate(bytes, 512, [0x41]), 'VHD_CORRUPT'],
      ['header checksum', mutate(bytes, 512 + 30, [0x7f]), 'VHD_CORRUPT'],
      ['BAT entry into header', mutate(bytes, batOff, [0, 0, 0, 1]), 'VHD_CORRUPT'],
      ['BAT entries overlapping', mutate(bytes, batOff + 8, [...bytes.subarray(batOff, batOff + 4)]), 'VHD_CORRUPT'],
      ['BAT entry past the end', mutate(bytes, batOff + 8, [0x00, 0x7f, 0xff, 0x00]), 'VHD_TRUNCATED'],
      ['trailing footer differs', mutate(bytes, bytes.length - 512 + 70, [bytes[bytes.length - 512 + 70] ^ 0x12]), 'VHD_CORRUPT'],
      ['fixed: cut', fixedBytes.subarray(0, fixedBytes.length - 4096), 'VHD_TRUNCATED'],
      ['fixed: footer checksum', mutate(fixedBytes, fixedBytes.length - 512 + 64, [0, 0, 0, 0]), 'VHD_CORRUPT'],
      ['fixed: size mismatch', Buffer.concat([Buffer.alloc(512), fixedBytes]), 'VHD_CORRUPT'],
      ['raw data, not a VHD', Buffer.alloc(3 * MiB, 7), 'VHD_TRUNCATED'],
    ];
    for (const [name, data, code] of cases) {
      const out = join(dir, `bad-${name.replace(/\W/g, '_')}.vhd`);
      // feed in awkward 100 KiB chunks
      const chunks: Buffer[] = [];
      for (let o = 0; o < data.length; o += 100 * 1024) chunks.push(data.subarray(o, o + 100 * 1024));
      await expectRefused(importVhd(Readable.from(chunks), out), code, out).catch((e) => {
        throw new Error(`${name}: ${String(e)}`);
      });
    }
    // control: the unmodified streams import fine
    await importVhd(Readable.from([bytes]), join(dir, 'ok1.vhd'));
    await importVhd(Readable.from([fixedBytes]), join(dir, 'ok2.vhd'));
  });

  test('a stream error propagates and leaves no file', async () => {
    const out = join(dir, 'err.vhd');
    async function* failing() {
      yield Buffer.alloc(512);
      throw new Error('boom');
    }
    await assert.rejects(importRaw(Readable.from(failing()), out, MiB), /boom/);
    assert.equal(existsSync(out), false);
  });
});
