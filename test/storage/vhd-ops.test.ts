// Random access, chains, coalesce, resize and on-open validation of the VHD library.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, readFile, writeFile, open, copyFile, truncate, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  coalesce,
  createDifferencing,
  createDynamic,
  createFixed,
  openChain,
  openVhd,
  resize,
  VhdError,
  isVhdError,
  type Vhd,
} from '../../src/storage/vhd/index.ts';
import { MiB, writeBoth, xorshift } from './helpers.ts';

const run = promisify(execFile);

const random = xorshift(12345);
const rnd = random.next;
const randInt = random.int;
const pseudoRandom = random.bytes;

/** A batch of random writes at odd offsets/lengths, some small, some spanning blocks. */
async function randomWrites(v: Vhd, shadow: Buffer, count: number): Promise<void> {
  for (let k = 0; k < count; k++) {
    const len = k % 5 === 0 ? 1 + randInt(3 * MiB) : 1 + randInt(5000);
    const off = randInt(shadow.length - len);
    await writeBoth(v, shadow, off, pseudoRandom(len));
  }
}

async function qemuRaw(p: string): Promise<Buffer> {
  const out = `${p}.qemu.raw`;
  await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', p, out]);
  const b = await readFile(out);
  await rm(out);
  return b;
}

async function expectVhdError(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof VhdError, `expected VhdError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenon-vhd-ops-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('random access', () => {
  for (const [name, blockSize] of [['2 MiB blocks', undefined], ['64 KiB blocks', 64 * 1024]] as const) {
    test(`dynamic, ${name}: random writes match a raw shadow (ours and qemu-img)`, async () => {
      const size = 12 * MiB + 512 * 5;
      const p = join(dir, `rw-${blockSize ?? 'def'}.vhd`);
      await createDynamic(p, size, { blockSize });
      const shadow = Buffer.alloc(size);
      let v = await openVhd(p, { writable: true });
      await randomWrites(v, shadow, 60);
      assert.ok((await v.read(0, size)).equals(shadow));
      await v.close();
      v = await openVhd(p);
      for (let k = 0; k < 50; k++) {
        const len = 1 + randInt(3 * MiB);
        const off = randInt(size - len);
        assert.ok((await v.read(off, len)).equals(shadow.subarray(off, off + len)), `read ${off}+${len}`);
      }
      await v.close();
      assert.ok((await qemuRaw(p)).equals(shadow));
    });
  }

  test('fixed: random writes, and range/read-only errors', async () => {
    const size = 5 * MiB;
    const p = join(dir, 'rw-fixed.vhd');
    await createFixed(p, size);
    const shadow = Buffer.alloc(size);
    const v = await openVhd(p, { writable: true });
    await randomWrites(v, shadow, 20);
    await expectVhdError(v.read(size - 10, 11), 'VHD_OUT_OF_RANGE');
    await expectVhdError(v.write(size, Buffer.alloc(1)), 'VHD_OUT_OF_RANGE');
    await v.close();
    await expectVhdError(v.read(0, 1), 'VHD_CLOSED');
    const r = await openVhd(p);
    await expectVhdError(r.write(0, Buffer.alloc(1)), 'VHD_READONLY');
    assert.ok((await r.read(0, size)).equals(shadow));
    await r.close();
    assert.ok((await qemuRaw(p)).equals(shadow));
  });

  test('creation rejects bad sizes and existing files', async () => {
    await expectVhdError(createDynamic(join(dir, 'bad1.vhd'), 1000), 'VHD_INVALID_ARG');
    await expectVhdError(createDynamic(join(dir, 'bad2.vhd'), MiB, { blockSize: 3000 }), 'VHD_INVALID_ARG');
    await expectVhdError(createFixed(join(dir, 'bad3.vhd'), 0), 'VHD_INVALID_ARG');
    await createFixed(join(dir, 'exists.vhd'), MiB);
    await assert.rejects(createFixed(join(dir, 'exists.vhd'), MiB), /EEXIST/);
  });
});

describe('chains', () => {
  test('three-level chain reads honour sector bitmaps; openChain lists it', async () => {
    const size = 10 * MiB;
    const base = join(dir, 'ch-base.vhd');
    const mid = join(dir, 'ch-mid.vhd');
    const top = join(dir, 'ch-top.vhd');
    await createDynamic(base, size);
    const shadow = Buffer.alloc(size);
    for (const [p, parent] of [[base, undefined], [mid, base], [top, mid]] as const) {
      if (parent) await createDifferencing(p, parent);
      const v = await openVhd(p, { writable: true });
      assert.equal(v.type, parent ? 'differencing' : 'dynamic');
      await randomWrites(v, shadow, 25);
      await v.close();
    }
    const chain = await openChain(top);
    assert.deepEqual(chain.map((c) => c.path), [top, mid, base]);
    assert.equal(chain[0]!.parent, chain[1]);
    assert.ok((await chain[0]!.read(0, size)).equals(shadow));
    await chain[0]!.close();
    // without parents, unallocated sectors read as zeros
    const lone = await openVhd(top, { parents: false });
    assert.equal(lone.parent, undefined);
    assert.equal(lone.parentPath(), mid);
    await lone.close();
  });

  test('missing or mismatching parent is reported', async () => {
    const a = join(dir, 'pm-a.vhd');
    const b = join(dir, 'pm-b.vhd');
    const c = join(dir, 'pm-c.vhd');
    await createDynamic(a, MiB);
    await createDifferencing(c, a);
    await rm(a);
    await expectVhdError(openVhd(c), 'VHD_PARENT_MISSING');
    await createDynamic(a, MiB); // same name, new UUID
    await expectVhdError(openVhd(c), 'VHD_PARENT_MISMATCH');
    await createDynamic(b, MiB);
    const v = await openVhd(c, { parents: false });
    assert.equal(v.parentPath(), a);
    await v.close();
  });

  for (const parentKind of ['dynamic', 'fixed', 'differencing'] as const) {
    test(`coalesce into a ${parentKind} parent`, async () => {
      const size = 9 * MiB;
      const pre = join(dir, `co-${parentKind}-grand.vhd`);
      const parent = join(dir, `co-${parentKind}-parent.vhd`);
      const child = join(dir, `co-${parentKind}-child.vhd`);
      const shadow = Buffer.alloc(size);
      if (parentKind === 'differencing') {
        await createDynamic(pre, size);
        const g = await openVhd(pre, { writable: true });
        await randomWrites(g, shadow, 10);
        await g.close();
        await createDifferencing(parent, pre);
      } else if (parentKind === 'fixed') await createFixed(parent, size);
      else await createDynamic(parent, size);
      let v = await openVhd(parent, { writable: true });
      await randomWrites(v, shadow, 15);
      await v.close();
      await createDifferencing(child, parent);
      v = await openVhd(child, { writable: true });
      await randomWrites(v, shadow, 30);
      await v.close();
      const before = await (await openVhd(child)).read(0, size);
      assert.ok(before.equals(shadow));
      const res = await coalesce(child);
      assert.equal(res.parentPath, parent);
      assert.ok(res.bytes > 0);
      const p = await openVhd(parent);
      assert.ok((await p.read(0, size)).equals(shadow), 'parent now holds the child view');
      await p.close();
      if (parentKind !== 'differencing') assert.ok((await qemuRaw(parent)).equals(shadow));
      // the child still reads the same on top of the coalesced parent
      const c = await openVhd(child);
      assert.ok((await c.read(0, size)).equals(shadow));
      await c.close();
    });
  }

  test('sector-granular bitmaps (as other writers make them) read and coalesce correctly', async () => {
    const size = 4 * MiB;
    const g = join(dir, 'sg-grand.vhd');
    const p = join(dir, 'sg-parent.vhd');
    const c = join(dir, 'sg-child.vhd');
    await createDynamic(g, size);
    let v = await openVhd(g, { writable: true });
    await v.write(0, pseudoRandom(size));
    await v.close();
    await createDifferencing(p, g);
    await createDifferencing(c, p);
    v = await openVhd(c, { writable: true });
    await v.write(0, pseudoRandom(64 * 1024));
    const bmOffset = v.blockFileOffset(0)!;
    await v.close();
    // keep only sectors 0, 2, 9, 10 and 17 of the child's first block
    const fh = await open(c, 'r+');
    await fh.write(Buffer.from([0b10100000, 0b01100000, 0b01000000, 0, 0, 0, 0, 0]), 0, 8, bmOffset);
    await fh.close();
    const view = await (await openVhd(c)).read(0, size);
    const grand = await (await openVhd(g)).read(0, size);
    for (let s = 0; s < 64; s++) {
      const fromChild = [0, 2, 9, 10, 17].includes(s);
      const same = view.subarray(s * 512, s * 512 + 512).equals(grand.subarray(s * 512, s * 512 + 512));
      assert.equal(same, !fromChild, `sector ${s}`);
    }
    await coalesce(c);
    const after = await openVhd(p);
    assert.ok((await after.read(0, size)).equals(view));
    await after.close();
  });

  test('coalesce of a child that outgrew its parent grows the parent', async () => {
    const parent = join(dir, 'cg-parent.vhd');
    const child = join(dir, 'cg-child.vhd');
    await createDynamic(parent, 4 * MiB);
    const shadow = Buffer.alloc(7 * MiB);
    let v = await openVhd(parent, { writable: true });
    await writeBoth(v, shadow, 3 * MiB, pseudoRandom(MiB));
    await v.close();
    await createDifferencing(child, parent);
    await resize(child, 7 * MiB);
    v = await openVhd(child, { writable: true });
    assert.equal(v.virtualSize, 7 * MiB);
    assert.ok((await v.read(0, 7 * MiB)).equals(shadow));
    await writeBoth(v, shadow, 4 * MiB - 100, pseudoRandom(2 * MiB));
    await v.close();
    await coalesce(child);
    const p = await openVhd(parent);
    assert.equal(p.virtualSize, 7 * MiB);
    assert.ok((await p.read(0, 7 * MiB)).equals(shadow));
    await p.close();
    assert.ok((await qemuRaw(parent)).equals(shadow));
  });
});

describe('resize', () => {
  test('dynamic: growing past the BAT capacity relocates data blocks', async () => {
    const bs = 64 * 1024;
    const p = join(dir, 'rs-dyn.vhd');
    const size = 128 * bs; // 128 entries: BAT exactly one sector, first block right behind it
    await createDynamic(p, size, { blockSize: bs });
    const shadow = Buffer.alloc(3 * size);
    let v = await openVhd(p, { writable: true });
    await writeBoth(v, shadow, 0, pseudoRandom(3 * bs)); // blocks 0..2 sit where the BAT must grow
    await writeBoth(v, shadow, size - 1000, pseudoRandom(1000));
    await v.close();
    await resize(p, 3 * size);
    v = await openVhd(p, { writable: true });
    assert.equal(v.virtualSize, 3 * size);
    assert.equal(v.header!.maxTableEntries, 3 * 128);
    assert.ok((await v.read(0, 3 * size)).equals(shadow));
    await writeBoth(v, shadow, 2 * size + 77, pseudoRandom(5 * bs));
    await v.close();
    assert.ok((await qemuRaw(p)).equals(shadow));
    await expectVhdError(resize(p, size), 'VHD_UNSUPPORTED');
    await expectVhdError(resize(p, 3 * size + 1), 'VHD_INVALID_ARG');
  });

  test('fixed and differencing grow', async () => {
    const f = join(dir, 'rs-fixed.vhd');
    await createFixed(f, MiB);
    const shadow = Buffer.alloc(3 * MiB);
    let v = await openVhd(f, { writable: true });
    await writeBoth(v, shadow, MiB - 512, pseudoRandom(512));
    await v.close();
    await resize(f, 3 * MiB);
    v = await openVhd(f, { writable: true });
    assert.ok((await v.read(0, 3 * MiB)).equals(shadow));
    await writeBoth(v, shadow, 2 * MiB, pseudoRandom(1000));
    await v.close();
    assert.ok((await qemuRaw(f)).equals(shadow));
    assert.equal((await stat(f)).size, 3 * MiB + 512);

    const d = join(dir, 'rs-diff.vhd');
    await createDifferencing(d, f);
    await resize(d, 300 * MiB); // BAT grows over the parent locators, which must move
    v = await openVhd(d, { writable: true });
    assert.equal(v.parentPath(), f);
    assert.ok((await v.read(0, 3 * MiB)).equals(shadow));
    assert.ok((await v.read(3 * MiB, MiB)).equals(Buffer.alloc(MiB)));
    await v.close();
    await run('vhdiinfo', [d]);
  });
});

describe('validation on open', () => {
  async function dynamicWithData(name: string): Promise<string> {
    const p = join(dir, name);
    await createDynamic(p, 4 * MiB);
    const v = await openVhd(p, { writable: true });
    await v.write(0, pseudoRandom(3 * MiB));
    await v.close();
    return p;
  }
  async function patch(p: string, pos: number, bytes: Buffer): Promise<void> {
    const fh = await open(p, 'r+');
    await fh.write(bytes, 0, bytes.length, pos);
    await fh.close();
  }

  test('bad footer checksum on a fixed disk', async () => {
    const p = join(dir, 'v-fixed.vhd');
    await createFixed(p, MiB);
    await patch(p, MiB + 40, Buffer.from([1])); // original size byte
    await expectVhdError(openVhd(p), 'VHD_CORRUPT');
  });

  test('torn trailing footer of a dynamic disk: recovered from the copy at offset 0', async () => {
    const p = await dynamicWithData('v-torn.vhd');
    const size = (await stat(p)).size;
    await patch(p, size - 512, Buffer.alloc(512, 0x42));
    const v = await openVhd(p);
    assert.equal(v.footerFromCopy, true);
    await v.close();
    const w = await openVhd(p, { writable: true }); // rewrites the footer
    await w.close();
    const again = await openVhd(p);
    assert.equal(again.footerFromCopy, false);
    await again.close();
    await run('vhdiinfo', [p]);
  });

  test('corrupt header, BAT entries, truncation, overlapping blocks', async () => {
    const base = await dynamicWithData('v-base.vhd');
    const cases: [string, (p: string) => Promise<void>, string][] = [
      ['header cookie', (p) => patch(p, 512, Buffer.from('cxsparsX')), 'VHD_CORRUPT'],
      ['header checksum', (p) => patch(p, 512 + 32, Buffer.from([0, 0, 0x10, 0])), 'VHD_CORRUPT'],
      ['BAT entry beyond EOF', (p) => patch(p, 1536, Buffer.from([0x00, 0x10, 0, 0])), 'VHD_CORRUPT'],
      ['BAT entry into header', (p) => patch(p, 1536, Buffer.from([0, 0, 0, 1])), 'VHD_CORRUPT'],
      ['overlapping blocks', (p) => patch(p, 1540, Buffer.from([0, 0, 0, 5])), 'VHD_CORRUPT'],
      ['truncated in data', (p) => truncate(p, 2 * MiB), 'VHD_CORRUPT'],
      ['truncated to a sector', (p) => truncate(p, 100), 'VHD_TRUNCATED'],
      ['not a vhd', (p) => writeFile(p, Buffer.alloc(4096, 1)), 'VHD_CORRUPT'],
    ];
    for (const [name, damage, code] of cases) {
      const p = join(dir, `v-${name.replace(/\W/g, '_')}.vhd`);
      await copyFile(base, p);
      await damage(p);
      await expectVhdError(openVhd(p), code).catch((e) => {
        throw new Error(`${name}: ${String(e)}`);
      });
    }
    assert.ok(isVhdError(new VhdError('VHD_CORRUPT', 'x'), 'VHD_CORRUPT'));
  });
});
