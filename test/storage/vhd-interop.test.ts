// Interoperability of the VHD library with two independent implementations:
// qemu-img (qemu's vpc driver) and libvhdi (vhdiinfo, vhdimount).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, readFile, writeFile, mkdir, readdir, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDifferencing, createDynamic, createFixed, openVhd, type Vhd } from '../../src/storage/vhd/index.ts';
import { MiB, seededBytes, writeBoth } from './helpers.ts';

const run = promisify(execFile);

const pseudoRandom = seededBytes;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenon-vhd-interop-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function qemuToRaw(src: string, fmt = 'vpc'): Promise<Buffer> {
  const out = join(dir, `conv-${Math.random().toString(36).slice(2)}.raw`);
  await run('qemu-img', ['convert', '-f', fmt, '-O', 'raw', src, out]);
  const b = await readFile(out);
  await rm(out);
  return b;
}

describe('images written by us, read by qemu-img', () => {
  for (const kind of ['fixed', 'dynamic'] as const) {
    test(`${kind}: qemu-img convert/compare match our raw shadow`, async () => {
      const size = 9 * MiB + 3 * 512; // not a multiple of the block size
      const p = join(dir, `ours-${kind}.vhd`);
      if (kind === 'fixed') await createFixed(p, size);
      else await createDynamic(p, size);
      const shadow = Buffer.alloc(size);
      const v = await openVhd(p, { writable: true });
      await writeBoth(v, shadow, 0, pseudoRandom(4096, 1));
      await writeBoth(v, shadow, 3 * MiB - 7, pseudoRandom(2 * MiB + 13, 2)); // crosses blocks, odd
      await writeBoth(v, shadow, size - 700, pseudoRandom(700, 3)); // tail of a partial last block
      await writeBoth(v, shadow, 123457, Buffer.from('xenon'));
      await v.close();
      const raw = await qemuToRaw(p);
      assert.equal(raw.length, size);
      assert.ok(raw.equals(shadow), 'qemu-img sees the same bytes');
      const shadowPath = join(dir, `shadow-${kind}.raw`);
      await writeFile(shadowPath, shadow);
      const { stdout } = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p, shadowPath]);
      assert.match(stdout, /identical/i);
      const info = JSON.parse((await run('qemu-img', ['info', '-f', 'vpc', '--output=json', p])).stdout);
      assert.equal(info['virtual-size'], size);
    });
  }
});

describe('images written by qemu-img, read by us', () => {
  for (const sub of ['fixed', 'dynamic'] as const) {
    test(`qemu-img ${sub} (created, then converted from raw)`, async () => {
      const size = 7 * MiB + 512;
      const empty = join(dir, `qemu-empty-${sub}.vhd`);
      await run('qemu-img', ['create', '-f', 'vpc', '-o', `subformat=${sub},force_size=on`, empty, String(size)]);
      const e = await openVhd(empty);
      assert.equal(e.type, sub);
      assert.equal(e.virtualSize, size);
      assert.ok((await e.read(0, size)).equals(Buffer.alloc(size)));
      await e.close();

      const raw = Buffer.alloc(size);
      pseudoRandom(MiB, 7).copy(raw, 100);
      pseudoRandom(MiB + 300, 8).copy(raw, 4 * MiB - 1000);
      raw.fill(0x5a, size - 512);
      const rawPath = join(dir, `qemu-src-${sub}.raw`);
      await writeFile(rawPath, raw);
      const p = join(dir, `qemu-${sub}.vhd`);
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${sub},force_size=on`, rawPath, p]);
      const v = await openVhd(p);
      assert.equal(v.type, sub);
      assert.equal(v.virtualSize, size);
      assert.ok((await v.read(0, size)).equals(raw));
      // odd-sized random reads
      for (const [o, n] of [[99, 5], [4 * MiB - 1001, 2 * MiB + 17], [size - 513, 513]] as const) {
        assert.ok((await v.read(o, n)).equals(raw.subarray(o, o + n)), `read ${o}+${n}`);
      }
      await v.close();
    });
  }

  test('writes into a qemu-img dynamic image stay readable by qemu-img', async () => {
    const size = 6 * MiB;
    const p = join(dir, 'qemu-then-ours.vhd');
    await run('qemu-img', ['create', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', p, String(size)]);
    const shadow = Buffer.alloc(size);
    const v = await openVhd(p, { writable: true });
    await writeBoth(v, shadow, 2 * MiB + 3, pseudoRandom(3 * MiB, 11));
    await v.close();
    await run('qemu-img', ['check', '-f', 'vpc', p]).catch(() => undefined); // vpc has no check; just must not crash
    assert.ok((await qemuToRaw(p)).equals(shadow));
  });
});

describe('libvhdi', () => {
  test('vhdiinfo accepts fixed, dynamic and differencing images', async () => {
    const base = join(dir, 'li-base.vhd');
    const fixed = join(dir, 'li-fixed.vhd');
    await createDynamic(base, 5 * MiB);
    await createFixed(fixed, 5 * MiB);
    await mkdir(join(dir, 'sub'), { recursive: true });
    const child = join(dir, 'sub', 'li-child.vhd');
    await createDifferencing(child, base);
    const types: Record<string, RegExp> = { [base]: /Disk type\s*:\s*Dynamic/, [fixed]: /Disk type\s*:\s*Fixed/, [child]: /Disk type\s*:\s*Diff/ };
    for (const [p, re] of Object.entries(types)) {
      const { stdout } = await run('vhdiinfo', [p]);
      assert.match(stdout, re, stdout);
      assert.match(stdout, /Media size\s*:.*\(5242880 bytes\)/, stdout);
    }
    const { stdout } = await run('vhdiinfo', [child]);
    const b = await openVhd(base);
    assert.match(stdout, new RegExp(`Parent identifier\\s*:\\s*${b.uuid}`));
    await b.close();
    const c = await openVhd(child);
    assert.equal(c.parentPath(), base);
    await c.close();
  });

  test('vhdimount shows parent data through a differencing child', async (t) => {
    if (!existsSync('/dev/fuse')) return t.skip('no /dev/fuse');
    const size = 8 * MiB;
    const base = join(dir, 'vm-base.vhd');
    const mid = join(dir, 'vm-mid.vhd');
    const top = join(dir, 'vm-top.vhd');
    await createDynamic(base, size);
    const shadow = Buffer.alloc(size);
    let v = await openVhd(base, { writable: true });
    await writeBoth(v, shadow, 0, pseudoRandom(3 * MiB, 21));
    await writeBoth(v, shadow, 6 * MiB, pseudoRandom(MiB, 22));
    await v.close();
    await createDifferencing(mid, base);
    v = await openVhd(mid, { writable: true });
    await writeBoth(v, shadow, MiB + 511, pseudoRandom(1000, 23)); // partial sectors over parent data
    await writeBoth(v, shadow, 4 * MiB, pseudoRandom(4096, 24)); // block the parent lacks
    await v.close();
    await createDifferencing(top, mid);
    v = await openVhd(top, { writable: true });
    await writeBoth(v, shadow, 2 * MiB - 100, pseudoRandom(200, 25));
    await v.close();

    const mnt = join(dir, 'mnt');
    await mkdir(mnt, { recursive: true });
    await run('vhdimount', [top, mnt]);
    try {
      const names = (await readdir(mnt)).filter((n) => /^vhdi\d+$/.test(n)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
      assert.ok(names.length >= 1);
      // vhdimount exposes every layer; the highest-numbered one is the image given (the top).
      const fh = await open(join(mnt, names[names.length - 1]!), 'r');
      const got = Buffer.alloc(size);
      await fh.read(got, 0, size, 0);
      await fh.close();
      assert.ok(got.equals(shadow), 'libvhdi sees the chain contents');
    } finally {
      await run('umount', [mnt]).catch(() => run('fusermount', ['-u', mnt]));
    }
    const t2 = await openVhd(top);
    assert.ok((await t2.read(0, size)).equals(shadow), 'we see the same chain contents');
    await t2.close();
  });
});
