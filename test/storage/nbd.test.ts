// NBD export (src/storage/nbd/): against the real qemu tools (qemu-img, qemu-io,
// qemu-nbd --list) and a minimal hand-written client for protocol corner cases.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { mkdtemp, rm, readFile, writeFile, lstat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDifferencing, createDynamic, openVhd } from '../../src/storage/vhd/index.ts';
import {
  serveNbd,
  vhdBlockDevice,
  rawFileBlockDevice,
  memoryBlockDevice,
  type BlockDevice,
  type NbdExport,
} from '../../src/storage/nbd/index.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, n);
}

const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');

let dir: string;
let sockN = 0;
const sock = (): string => join(dir, `nbd-${++sockN}.sock`);
const uri = (ex: NbdExport): string => ex.uri;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xenon-nbd-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function qemuRead(ex: NbdExport): Promise<Buffer> {
  const out = join(dir, `conv-${Math.random().toString(36).slice(2)}.raw`);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(ex), out]);
  const b = await readFile(out);
  await rm(out);
  return b;
}

async function qemuIo(target: string, cmds: string[], extra: string[] = []): Promise<{ ok: boolean; out: string }> {
  const args = [...extra, '-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), target];
  try {
    const r = await run('qemu-io', args);
    const out = r.stdout + r.stderr;
    // qemu-io reports per-command failures on stdout/stderr but still exits 0
    return { ok: !/error|failed|denied|not permitted|read-only/i.test(out) && !/Pattern verification failed/.test(out), out };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string };
    return { ok: false, out: `${x.stdout ?? ''}${x.stderr ?? ''}` };
  }
}

/** Wraps a device and records whether close() was called. */
function tracked(dev: BlockDevice): BlockDevice & { closedCalls: number } {
  const t = Object.create(dev) as BlockDevice & { closedCalls: number };
  t.closedCalls = 0;
  t.close = async () => {
    t.closedCalls++;
    await dev.close();
  };
  return t;
}

// ---------------------------------------------------------------------------
// Minimal NBD client for the protocol tests

class RawClient {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  ended = false;
  readonly closed: Promise<void>;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake?.();
    });
    this.closed = new Promise((resolve) =>
      sock.on('close', () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
    sock.on('error', () => {});
  }
  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed (wanted ${n} bytes, have ${this.buf.length})`);
      await new Promise<void>((r) => (this.wake = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  write(b: Buffer): void {
    this.sock.write(b);
  }
  destroy(): void {
    this.sock.destroy();
  }
}

const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
const OPT_REPLY_MAGIC = 0x3e889045565a9n;

function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(16);
  IHAVEOPT.copy(h);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

async function optionReply(c: RawClient): Promise<{ opt: number; type: number; data: Buffer }> {
  const h = await c.read(20);
  assert.equal(h.readBigUInt64BE(0), OPT_REPLY_MAGIC);
  const len = h.readUInt32BE(16);
  return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: Buffer.from(await c.read(len)) };
}

async function greet(c: RawClient, clientFlags = 3): Promise<number> {
  const hello = await c.read(18);
  assert.equal(hello.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
  assert.equal(hello.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
  const b = Buffer.alloc(4);
  b.writeUInt32BE(clientFlags);
  c.write(b);
  return hello.readUInt16BE(16);
}

function goData(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  const d = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  d.writeUInt32BE(n.length, 0);
  n.copy(d, 4);
  d.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => d.writeUInt16BE(t, 4 + n.length + 2 + 2 * i));
  return d;
}

/** Connect and enter transmission with NBD_OPT_GO; returns size and transmission flags. */
async function connectGo(path: string, name = ''): Promise<{ c: RawClient; size: number; flags: number }> {
  const c = await RawClient.connect(path);
  await greet(c);
  c.write(option(7, goData(name)));
  let size = -1;
  let flags = -1;
  for (;;) {
    const r = await optionReply(c);
    if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    } else if (r.type === 1) break;
    else assert.fail(`unexpected option reply type ${r.type}`);
  }
  return { c, size, flags };
}

let cookieN = 0n;
function request(type: number, offset: number, length: number, opts: { flags?: number; payload?: Buffer; cookie?: bigint } = {}): { buf: Buffer; cookie: bigint } {
  const cookie = opts.cookie ?? ++cookieN;
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(opts.flags ?? 0, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(cookie, 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return { buf: opts.payload ? Buffer.concat([h, opts.payload]) : h, cookie };
}

async function simpleReply(c: RawClient, readLengths?: Map<bigint, number>): Promise<{ error: number; cookie: bigint; data?: Buffer }> {
  const h = await c.read(16);
  assert.equal(h.readUInt32BE(0), 0x67446698, 'simple reply magic');
  const error = h.readUInt32BE(4);
  const cookie = h.readBigUInt64BE(8);
  const n = readLengths?.get(cookie);
  if (error === 0 && n !== undefined) return { error, cookie, data: Buffer.from(await c.read(n)) };
  return { error, cookie };
}

async function cmd(c: RawClient, type: number, offset: number, length: number, opts: { flags?: number; payload?: Buffer } = {}): Promise<{ error: number; data?: Buffer }> {
  const r = request(type, offset, length, opts);
  c.write(r.buf);
  const rep = await simpleReply(c, type === 0 ? new Map([[r.cookie, length]]) : undefined);
  assert.equal(rep.cookie, r.cookie);
  return rep;
}

const EPERM = 1;
const EINVAL = 22;
const ENOSPC = 28;

// ---------------------------------------------------------------------------

describe('raw / memory devices through qemu tools', () => {
  test('qemu-img info / convert see the device content; --image-opts (blockdev syntax) works', async () => {
    const content = pattern(4 * MiB + 512, 1);
    const ex = await serveNbd(memoryBlockDevice(content), sock(), { exportName: 'disk0' });
    try {
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', uri(ex)])).stdout) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], content.length);
      assert.ok((await qemuRead(ex)).equals(content));
      // same options as -blockdev driver=nbd,server.type=unix,server.path=...,export=...
      const opts = `driver=nbd,server.type=unix,server.path=${ex.socketPath},export=disk0`;
      const info2 = JSON.parse((await run('qemu-img', ['info', '--output=json', '--image-opts', opts])).stdout) as { 'virtual-size': number };
      assert.equal(info2['virtual-size'], content.length);
      // qemu-nbd --list sees the export and its flags
      const list = (await run('qemu-nbd', ['--list', '-k', ex.socketPath])).stdout;
      assert.match(list, /export: 'disk0'/);
      assert.match(list, /flush fua/);
    } finally {
      await ex.close();
    }
  });

  test('qemu-io write + read back lands in a raw file', async () => {
    const p = join(dir, 'plain.raw');
    const content = pattern(4 * MiB, 2);
    await writeFile(p, content);
    const ex = await serveNbd(await rawFileBlockDevice(p), sock());
    try {
      const r = await qemuIo(uri(ex), ['write -P 0xab 1M 64k', 'read -P 0xab 1M 64k', 'flush']);
      assert.ok(r.ok, r.out);
    } finally {
      await ex.close();
    }
    const after = await readFile(p);
    assert.ok(after.subarray(MiB, MiB + 64 * KiB).equals(Buffer.alloc(64 * KiB, 0xab)));
    assert.ok(after.subarray(0, MiB).equals(content.subarray(0, MiB)));
    assert.ok(after.subarray(MiB + 64 * KiB).equals(content.subarray(MiB + 64 * KiB)));
  });

  test('several concurrent qemu-io connections writing different regions', async () => {
    const content = Buffer.alloc(8 * MiB);
    const ex = await serveNbd(memoryBlockDevice(content), sock());
    try {
      const results = await Promise.all(
        [0, 1, 2, 3].map((i) =>
          qemuIo(uri(ex), [
            `write -P 0x${(0x10 + i).toString(16)} ${i * 2}M 512k`,
            `read -P 0x${(0x10 + i).toString(16)} ${i * 2}M 512k`,
            `read -P 0 ${i * 2 + 1}M 64k`,
            'flush',
          ]),
        ),
      );
      for (const r of results) assert.ok(r.ok, r.out);
      // and several raw clients open at once
      const clients = await Promise.all([1, 2, 3].map(() => connectGo(ex.socketPath)));
      assert.equal(ex.connectionCount, 3);
      const reads = await Promise.all(clients.map(({ c }, i) => cmd(c, 0, i * 2 * MiB, 4096)));
      reads.forEach((r, i) => assert.ok(r.data!.equals(Buffer.alloc(4096, 0x10 + i))));
      for (const { c } of clients) c.destroy();
    } finally {
      await ex.close();
    }
    for (let i = 0; i < 4; i++) {
      assert.ok(content.subarray(i * 2 * MiB, i * 2 * MiB + 512 * KiB).equals(Buffer.alloc(512 * KiB, 0x10 + i)));
    }
  });
});

describe('VHD chain export', () => {
  const size = 8 * MiB;
  let parentPath: string;
  let childPath: string;
  let expected: Buffer;

  before(async () => {
    parentPath = join(dir, 'parent.vhd');
    childPath = join(dir, 'child.vhd');
    expected = Buffer.alloc(size);
    await createDynamic(parentPath, size);
    const parent = await openVhd(parentPath, { writable: true });
    const p1 = pattern(3 * MiB, 7); // covers the 1M..1M+64k region qemu-io writes below
    await parent.write(0, p1);
    p1.copy(expected, 0);
    const p2 = pattern(512 * KiB, 8);
    await parent.write(6 * MiB, p2);
    p2.copy(expected, 6 * MiB);
    await parent.close();
    await createDifferencing(childPath, parentPath);
    const child = await openVhd(childPath, { writable: true });
    const c1 = pattern(100 * KiB, 9);
    await child.write(2 * MiB + 4096, c1); // child overrides part of the parent's data
    c1.copy(expected, 2 * MiB + 4096);
    await child.close();
  });

  test('qemu-img convert of a differencing child shows parent data where the child has none', async () => {
    const dev = await vhdBlockDevice(childPath, { readOnly: true });
    assert.equal(dev.size, size);
    const ex = await serveNbd(dev, sock(), { exportName: 'vdi' });
    try {
      const got = await qemuRead(ex);
      assert.equal(got.length, size);
      assert.ok(got.subarray(0, 2 * MiB).equals(expected.subarray(0, 2 * MiB)), 'parent-only region');
      assert.ok(got.subarray(2 * MiB, 3 * MiB).equals(expected.subarray(2 * MiB, 3 * MiB)), 'child override');
      assert.ok(got.equals(expected));
    } finally {
      await ex.close();
    }
  });

  test('qemu-io writes land in the leaf; the parent file is unchanged', async () => {
    const parentHash = await sha(parentPath);
    const ex = await serveNbd(await vhdBlockDevice(childPath), sock(), { exportName: 'vdi' });
    try {
      const r = await qemuIo(uri(ex), ['write -P 0xab 1M 64k', 'read -P 0xab 1M 64k', 'write -P 0xcd 5M 3k', 'flush']);
      assert.ok(r.ok, r.out);
      // an unaligned write in a region where the parent has data
      const r2 = await qemuIo(uri(ex), ['write -P 0x5a 100000 1000', 'read -P 0x5a 100000 1000']);
      assert.ok(r2.ok, r2.out);
    } finally {
      await ex.close();
    }
    Buffer.alloc(64 * KiB, 0xab).copy(expected, MiB);
    Buffer.alloc(3 * KiB, 0xcd).copy(expected, 5 * MiB);
    Buffer.alloc(1000, 0x5a).copy(expected, 100000);
    assert.equal(await sha(parentPath), parentHash, 'parent untouched');
    const leaf = await openVhd(childPath);
    try {
      assert.ok((await leaf.read(MiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 0xab)));
      assert.ok((await leaf.read(0, size)).equals(expected));
    } finally {
      await leaf.close();
    }
    // the leaf alone (no parent) holds the new data
    const alone = await openVhd(childPath, { parents: false });
    try {
      assert.ok(alone.hasData(MiB, 64 * KiB));
      assert.ok((await alone.read(MiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 0xab)));
    } finally {
      await alone.close();
    }
  });

  test('read-only export refuses writes (qemu and raw protocol) and leaves the files alone', async () => {
    const before = [await sha(childPath), await sha(parentPath)];
    const ex = await serveNbd(await vhdBlockDevice(childPath, { readOnly: true }), sock(), { exportName: 'vdi' });
    try {
      const rw = await qemuIo(uri(ex), ['write -P 0x11 0 64k']);
      assert.ok(!rw.ok, `write through a read-only export should fail: ${rw.out}`);
      const ro = await qemuIo(uri(ex), ['write -P 0x11 0 64k'], ['-r']);
      assert.ok(!ro.ok, ro.out);
      const { c, flags } = await connectGo(ex.socketPath, 'vdi');
      assert.ok(flags & 2, 'NBD_FLAG_READ_ONLY');
      assert.equal(flags & (1 << 6), 0, 'no WRITE_ZEROES on a read-only export');
      assert.equal((await cmd(c, 1, 0, 512, { payload: Buffer.alloc(512, 1) })).error, EPERM);
      assert.equal((await cmd(c, 6, 0, 512)).error, EPERM);
      assert.equal((await cmd(c, 4, 0, 512)).error, EPERM);
      assert.equal((await cmd(c, 3, 0, 0)).error, 0, 'flush is fine');
      const r = await cmd(c, 0, 0, 4096);
      assert.equal(r.error, 0);
      assert.ok(r.data!.equals(expected.subarray(0, 4096)));
      c.destroy();
    } finally {
      await ex.close();
    }
    assert.deepEqual([await sha(childPath), await sha(parentPath)], before);
  });

  test('several connections writing into the same blocks of a fresh child concurrently', async () => {
    const leaf = join(dir, 'child2.vhd');
    await createDifferencing(leaf, parentPath);
    const parentHash = await sha(parentPath);
    const pv = await openVhd(parentPath);
    const want = await pv.read(0, size); // a fresh child shows the parent
    await pv.close();
    const ex = await serveNbd(await vhdBlockDevice(leaf), sock());
    try {
      // 4 writers interleave 4 KiB pieces of the same 2 MiB blocks, while 2 readers stream the disk
      const writers = [0, 1, 2, 3].map((i) => {
        const cmds: string[] = [];
        for (let k = 0; k < 16; k++) {
          const off = k * 128 * KiB + i * 4 * KiB + (k % 3) * 512;
          cmds.push(`write -P 0x${(0x40 + i).toString(16)} ${off} 4k`);
          Buffer.alloc(4 * KiB, 0x40 + i).copy(want, off);
        }
        cmds.push('flush');
        return qemuIo(uri(ex), cmds);
      });
      const readers = [0, 1].map(() => qemuIo(uri(ex), ['read 0 8M', 'read 512 1M']));
      for (const r of await Promise.all([...writers, ...readers])) assert.ok(r.ok, r.out);
      assert.ok((await qemuRead(ex)).equals(want), 'export content after concurrent writes');
    } finally {
      await ex.close();
    }
    assert.equal(await sha(parentPath), parentHash);
    const v = await openVhd(leaf);
    try {
      assert.ok((await v.read(0, size)).equals(want), 'leaf content read back through the library');
    } finally {
      await v.close();
    }
  });

  test('qemu-system-x86_64 attaches the export with -blockdev driver=nbd and writes through it', async (t) => {
    const qemu = 'qemu-system-x86_64';
    try {
      await run(qemu, ['--version']);
    } catch {
      t.skip(`${qemu} not installed`);
      return;
    }
    const leaf = join(dir, 'child3.vhd');
    await createDifferencing(leaf, parentPath);
    const ex = await serveNbd(await vhdBlockDevice(leaf), sock(), { exportName: 'vbd0' });
    let out = '';
    try {
      const child = execFile(qemu, [
        '-nodefaults', '-no-user-config', '-display', 'none', '-machine', 'pc,accel=tcg', '-S', '-monitor', 'stdio',
        '-blockdev', `driver=nbd,node-name=n0,server.type=unix,server.path=${ex.socketPath},export=vbd0`,
        '-blockdev', 'driver=raw,file=n0,node-name=d0',
        '-device', 'virtio-blk-pci,drive=d0,id=vd0',
      ]);
      child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
      const qdev = '/machine/peripheral/vd0/virtio-backend';
      child.stdin!.end(`info block\nqemu-io -d ${qdev} "write -P 0x66 3M 8k"\nqemu-io -d ${qdev} "read -P 0x66 3M 8k"\nquit\n`);
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await new Promise<void>((resolve) => child.on('exit', () => resolve()));
      clearTimeout(timer);
    } finally {
      await ex.close();
    }
    assert.match(out, /nbd\+unix:\/\/\/vbd0\?socket=/);
    assert.match(out, /wrote 8192\/8192 bytes at offset 3145728/);
    assert.match(out, /read 8192\/8192 bytes at offset 3145728/);
    assert.doesNotMatch(out, /Pattern verification failed/);
    const v = await openVhd(leaf);
    try {
      assert.ok((await v.read(3 * MiB, 8 * KiB)).equals(Buffer.alloc(8 * KiB, 0x66)));
    } finally {
      await v.close();
    }
  });

  test('WRITE_ZEROES over the chain zeroes parent data in the leaf only', async () => {
    const parentHash = await sha(parentPath);
    const ex = await serveNbd(await vhdBlockDevice(childPath), sock());
    try {
      const { c } = await connectGo(ex.socketPath);
      assert.equal((await cmd(c, 6, 6 * MiB, 8192)).error, 0);
      assert.equal((await cmd(c, 3, 0, 0)).error, 0);
      const r = await cmd(c, 0, 6 * MiB - 4096, 16384);
      assert.ok(r.data!.subarray(0, 4096).equals(expected.subarray(6 * MiB - 4096, 6 * MiB)));
      assert.ok(r.data!.subarray(4096, 4096 + 8192).equals(Buffer.alloc(8192)));
      assert.ok(r.data!.subarray(12288).equals(expected.subarray(6 * MiB + 8192, 6 * MiB + 12288)));
      c.destroy();
    } finally {
      await ex.close();
    }
    expected.fill(0, 6 * MiB, 6 * MiB + 8192);
    assert.equal(await sha(parentPath), parentHash);
    // on an empty disk, zeroing allocates nothing
    const fresh = join(dir, 'fresh.vhd');
    await createDynamic(fresh, 4 * MiB);
    const ex2 = await serveNbd(await vhdBlockDevice(fresh), sock());
    try {
      const { c } = await connectGo(ex2.socketPath);
      assert.equal((await cmd(c, 6, 0, 4 * MiB)).error, 0);
      c.destroy();
    } finally {
      await ex2.close();
    }
    const v = await openVhd(fresh);
    try {
      assert.deepEqual(v.allocatedBlocks(), []);
    } finally {
      await v.close();
    }
  });

  test('standby (live migration): the handshake gives the size; writes wait for activate, which reads the chain as the other writer left it', async () => {
    // the "source" export writes a fresh chain, allocating a block, while the "destination" export stands by
    const leafPath = join(dir, 'moving.vhd');
    await createDifferencing(leafPath, parentPath);
    const source = await serveNbd(await vhdBlockDevice(leafPath), sock());
    const standby = await vhdBlockDevice(leafPath, { standby: true });
    assert.equal(standby.active, false);
    const destination = await serveNbd(standby, sock());
    const events: string[] = [];
    try {
      const { c, size } = await connectGo(destination.socketPath);
      assert.equal(size, 8 * MiB);
      // a write the guest issues early, into the block the source is about to allocate: held back until the chain is opened
      const early = request(1, 4 * MiB + 64 * KiB, 4096, { payload: Buffer.alloc(4096, 0x5e) });
      c.write(early.buf);
      const answered = simpleReply(c).then((r) => {
        events.push('answered');
        return r;
      });
      const r = await qemuIo(source.uri, ['write -P 0x3c 4M 64k']);
      assert.ok(r.ok, r.out);
      await source.close();
      await new Promise((res) => setTimeout(res, 100));
      assert.equal(events.length, 0, 'no reply before activation');
      events.push('activate');
      await standby.activate();
      assert.equal(standby.active, true);
      assert.equal((await answered).error, 0);
      assert.deepEqual(events, ['activate', 'answered']);
      // both writers' data, in one block: the destination found the block the source allocated
      const back = await cmd(c, 0, 4 * MiB, 128 * KiB);
      assert.ok(back.data!.subarray(0, 64 * KiB).equals(Buffer.alloc(64 * KiB, 0x3c)), 'the source\'s write');
      assert.ok(back.data!.subarray(64 * KiB, 68 * KiB).equals(Buffer.alloc(4096, 0x5e)), 'the held-back write');
      c.destroy();
    } finally {
      await source.close();
      await destination.close();
    }
    const v = await openVhd(leafPath);
    const parent = await openVhd(parentPath);
    try {
      assert.deepEqual(v.allocatedBlocks(), [2]);
      assert.ok((await v.read(4 * MiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 0x3c)));
      assert.ok((await v.read(4 * MiB + 64 * KiB, 4096)).equals(Buffer.alloc(4096, 0x5e)));
      assert.ok((await v.read(0, MiB)).equals(await parent.read(0, MiB)), 'parent data falls through');
    } finally {
      await v.close();
      await parent.close();
    }
  });

  test('standby: reads see the chain as it is now; a flush is answered at once; closed before activation, it wrote nothing and the waiting write fails', async () => {
    const leafPath = join(dir, 'never.vhd');
    await createDifferencing(leafPath, parentPath);
    const ex = await serveNbd(await vhdBlockDevice(leafPath, { standby: true }), sock());
    const { c } = await connectGo(ex.socketPath);
    // QEMU reads the first sector as it opens the disk, before any migration is done: answered from the file as it is
    const parent = await openVhd(parentPath);
    const first = await parent.read(0, 4096);
    await parent.close();
    assert.ok((await cmd(c, 0, 0, 4096)).data!.equals(first));
    const other = await openVhd(leafPath, { writable: true });
    await other.write(0, Buffer.alloc(4096, 0x77));
    await other.close();
    assert.ok((await cmd(c, 0, 0, 4096)).data!.equals(Buffer.alloc(4096, 0x77)), 'a later read sees the other writer\'s new block');
    // a device model that never got its disk active may still flush it as it quits: nothing written, nothing to wait for
    assert.equal((await cmd(c, 3, 0, 0)).error, 0);
    const before = await sha(leafPath);
    const w = request(1, 8192, 512, { payload: Buffer.alloc(512, 1) });
    c.write(w.buf);
    const reply = simpleReply(c).catch(() => ({ error: -1 }));
    await new Promise((r) => setTimeout(r, 100));
    await ex.close();
    assert.notEqual((await reply).error, 0);
    assert.equal(await sha(leafPath), before);
  });
});

describe('protocol', () => {
  test('handshake: LIST, INFO, unsupported options, unknown export, ABORT', async () => {
    const ex = await serveNbd(memoryBlockDevice(Buffer.alloc(MiB)), sock(), { exportName: 'x', description: 'a test disk' });
    try {
      const c = await RawClient.connect(ex.socketPath);
      assert.equal(await greet(c), 3, 'FIXED_NEWSTYLE | NO_ZEROES');
      c.write(option(3));
      let r = await optionReply(c);
      assert.equal(r.type, 2);
      assert.equal(r.data.readUInt32BE(0), 1);
      assert.equal(r.data.subarray(4).toString(), 'x');
      assert.equal((await optionReply(c)).type, 1);
      c.write(option(3, Buffer.from('junk')));
      assert.equal((await optionReply(c)).type, 0x80000003, 'LIST with data → ERR_INVALID');
      c.write(option(8)); // STRUCTURED_REPLY
      assert.equal((await optionReply(c)).type, 0x80000001);
      c.write(option(5)); // STARTTLS
      assert.equal((await optionReply(c)).type, 0x80000001);
      c.write(option(0x1234));
      assert.equal((await optionReply(c)).type, 0x80000001);
      c.write(option(6, goData('nope')));
      assert.equal((await optionReply(c)).type, 0x80000006, 'unknown export → ERR_UNKNOWN');
      c.write(option(6, goData('x').subarray(0, 5)));
      assert.equal((await optionReply(c)).type, 0x80000003);
      c.write(option(6, goData('x', [1, 2, 3])));
      const infos = new Map<number, Buffer>();
      for (;;) {
        r = await optionReply(c);
        if (r.type === 1) break;
        assert.equal(r.type, 3);
        infos.set(r.data.readUInt16BE(0), r.data.subarray(2));
      }
      assert.equal(Number(infos.get(0)!.readBigUInt64BE(0)), MiB);
      assert.equal(infos.get(1)!.toString(), 'x');
      assert.equal(infos.get(2)!.toString(), 'a test disk');
      assert.deepEqual([infos.get(3)!.readUInt32BE(0), infos.get(3)!.readUInt32BE(4), infos.get(3)!.readUInt32BE(8)], [1, 4096, 32 * MiB]);
      c.write(option(2)); // ABORT
      assert.equal((await optionReply(c)).type, 1);
      await c.closed;
    } finally {
      await ex.close();
    }
  });

  test('EXPORT_NAME with and without NO_ZEROES; unknown name closes', async () => {
    const ex = await serveNbd(memoryBlockDevice(Buffer.alloc(MiB, 7)), sock(), { exportName: 'x' });
    try {
      for (const cf of [1, 3]) {
        const c = await RawClient.connect(ex.socketPath);
        await greet(c, cf);
        c.write(option(1, Buffer.from('x')));
        const h = await c.read(cf === 3 ? 10 : 134);
        assert.equal(Number(h.readBigUInt64BE(0)), MiB);
        assert.ok(h.readUInt16BE(8) & 1);
        if (cf === 1) assert.ok(h.subarray(10).equals(Buffer.alloc(124)));
        const r = await cmd(c, 0, 4096, 16);
        assert.ok(r.data!.equals(Buffer.alloc(16, 7)));
        c.write(request(2, 0, 0).buf); // DISC
        await c.closed;
      }
      const c = await RawClient.connect(ex.socketPath);
      await greet(c);
      c.write(option(1, Buffer.from('other')));
      await c.closed;
    } finally {
      await ex.close();
    }
  });

  test('malformed handshakes and bad request magic close the connection; the server keeps serving', async () => {
    const content = pattern(MiB, 3);
    const ex = await serveNbd(memoryBlockDevice(content), sock());
    try {
      let c = await RawClient.connect(ex.socketPath);
      await greet(c, 0x80); // unknown client flag
      await c.closed;
      c = await RawClient.connect(ex.socketPath);
      await greet(c);
      c.write(Buffer.concat([Buffer.from('IHAVEOPX', 'latin1'), Buffer.alloc(8)]));
      await c.closed;
      c = await RawClient.connect(ex.socketPath);
      await greet(c);
      const h = option(7);
      h.writeUInt32BE(0x7fffffff, 12); // absurd option length
      c.write(h);
      await c.closed;
      c = await RawClient.connect(ex.socketPath);
      c.write(Buffer.from('garbage garbage garbage'));
      await c.closed;
      const go = await connectGo(ex.socketPath);
      const bad = request(0, 0, 512).buf;
      bad.writeUInt32BE(0xdeadbeef, 0);
      go.c.write(bad);
      await go.c.closed;
      assert.ok((await qemuRead(ex)).equals(content));
    } finally {
      await ex.close();
    }
  });

  test('out-of-range and invalid requests get errors; the connection and server survive', async () => {
    const size = MiB;
    const content = pattern(size, 4);
    const ex = await serveNbd(memoryBlockDevice(content), sock(), { maxPayload: 64 * KiB });
    try {
      const { c, size: s, flags } = await connectGo(ex.socketPath);
      assert.equal(s, size);
      assert.ok(flags & (1 << 5), 'SEND_TRIM (memory device has trim)');
      assert.equal((await cmd(c, 0, size, 512)).error, EINVAL, 'read past the end');
      assert.equal((await cmd(c, 0, size - 256, 512)).error, EINVAL, 'read straddling the end');
      assert.equal((await cmd(c, 0, 2 ** 62, 512)).error, EINVAL, 'huge offset');
      assert.equal((await cmd(c, 1, size - 256, 512, { payload: Buffer.alloc(512, 9) })).error, ENOSPC, 'write straddling the end');
      assert.equal((await cmd(c, 6, size, 4096)).error, ENOSPC, 'write-zeroes past the end');
      assert.equal((await cmd(c, 4, size, 4096)).error, EINVAL, 'trim past the end');
      assert.equal((await cmd(c, 0, 0, 128 * KiB)).error, EINVAL, 'read larger than maxPayload');
      assert.equal((await cmd(c, 1, 0, 128 * KiB, { payload: Buffer.alloc(128 * KiB, 9) })).error, EINVAL, 'write larger than maxPayload (payload skipped)');
      assert.equal((await cmd(c, 0, 0, 512, { flags: 1 << 2 })).error, EINVAL, 'DF without structured replies');
      assert.equal((await cmd(c, 99, 0, 0)).error, EINVAL, 'unknown command');
      assert.equal((await cmd(c, 5, 0, 512)).error, EINVAL, 'CACHE not offered');
      assert.ok(content.subarray(size - 1024).equals(pattern(size, 4).subarray(size - 1024)), 'nothing written');
      // still fully functional
      assert.equal((await cmd(c, 1, 4096, 512, { payload: Buffer.alloc(512, 0xee), flags: 1 })).error, 0, 'FUA write');
      assert.ok((await cmd(c, 0, 4096, 512)).data!.equals(Buffer.alloc(512, 0xee)));
      assert.equal((await cmd(c, 4, 8192, 4096)).error, 0, 'trim');
      assert.ok(content.subarray(8192, 12288).equals(Buffer.alloc(4096)));
      assert.equal((await cmd(c, 0, size - 512, 512)).error, 0, 'last sector');
      assert.equal((await cmd(c, 0, size, 0)).error, 0, 'empty read at the end');
      c.write(request(2, 0, 0).buf);
      await c.closed;
      const q = await qemuIo(uri(ex), ['read -P 0xee 4096 512']);
      assert.ok(q.ok, q.out);
    } finally {
      await ex.close();
    }
  });

  test('pipelined requests: many reads in flight, a write is ordered after earlier reads and before later ones', async () => {
    const content = pattern(4 * MiB, 5);
    const original = Buffer.from(content);
    const ex = await serveNbd(memoryBlockDevice(content), sock(), { maxInflight: 4 });
    try {
      const { c } = await connectGo(ex.socketPath);
      const lengths = new Map<bigint, number>();
      const expect = new Map<bigint, Buffer>();
      const batch: Buffer[] = [];
      for (let i = 0; i < 32; i++) {
        const r = request(0, i * 64 * KiB, 64 * KiB);
        lengths.set(r.cookie, 64 * KiB);
        expect.set(r.cookie, original.subarray(i * 64 * KiB, (i + 1) * 64 * KiB));
        batch.push(r.buf);
      }
      const w = request(1, 0, 64 * KiB, { payload: Buffer.alloc(64 * KiB, 0x77) });
      batch.push(w.buf);
      expect.set(w.cookie, Buffer.alloc(0));
      const after = request(0, 0, 64 * KiB);
      lengths.set(after.cookie, 64 * KiB);
      expect.set(after.cookie, Buffer.alloc(64 * KiB, 0x77));
      batch.push(after.buf);
      c.write(Buffer.concat(batch)); // all at once, without waiting
      const seen = new Set<bigint>();
      for (let i = 0; i < batch.length; i++) {
        const rep = await simpleReply(c, lengths);
        assert.equal(rep.error, 0);
        assert.ok(!seen.has(rep.cookie));
        seen.add(rep.cookie);
        const e = expect.get(rep.cookie)!;
        if (e.length) assert.ok(rep.data!.equals(e), `data for cookie ${rep.cookie}`);
      }
      assert.equal(seen.size, batch.length);
      c.destroy();
    } finally {
      await ex.close();
    }
  });

  test('close() ends live connections, closes the device, removes the socket', async () => {
    const dev = tracked(memoryBlockDevice(Buffer.alloc(MiB)));
    const path = sock();
    const ex = await serveNbd(dev, path);
    const idle = await connectGo(path);
    const negotiating = await RawClient.connect(path);
    await greet(negotiating);
    await ex.close();
    await idle.c.closed;
    await negotiating.closed;
    assert.equal(dev.closedCalls, 1);
    assert.ok(!existsSync(path));
    await ex.close(); // idempotent
    assert.equal(dev.closedCalls, 1);
    await assert.rejects(RawClient.connect(path));
  });

  test('a client that wrote and goes away (no DISC, no flush) gets its writes flushed; one that only read does not', async () => {
    const dev = memoryBlockDevice(Buffer.alloc(MiB));
    let flushes = 0;
    const counting = Object.create(dev) as BlockDevice;
    counting.flush = async () => {
      flushes++;
      await dev.flush();
    };
    const ex = await serveNbd(counting, sock());
    try {
      const reader = await connectGo(ex.socketPath);
      assert.equal((await cmd(reader.c, 0, 0, 512)).error, 0);
      reader.c.destroy();
      await reader.c.closed;
      const writer = await connectGo(ex.socketPath);
      assert.equal((await cmd(writer.c, 1, 0, 512, { payload: Buffer.alloc(512, 1) })).error, 0);
      writer.c.destroy();
      await writer.c.closed;
      const deadline = Date.now() + 5000;
      while (flushes === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(flushes, 1);
    } finally {
      await ex.close();
    }
  });

  test('a stale socket file is replaced; a live one is refused', async () => {
    const path = sock();
    const a = await serveNbd(memoryBlockDevice(Buffer.alloc(4096)), path);
    await assert.rejects(serveNbd(memoryBlockDevice(Buffer.alloc(4096)), path), /listening/);
    await a.close();
    // a socket file nobody listens on: its server process died without cleaning up
    const script = `require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))`;
    await run(process.execPath, ['-e', script, path]).catch(() => {});
    assert.ok((await lstat(path)).isSocket());
    const b = await serveNbd(memoryBlockDevice(Buffer.alloc(4096)), path);
    await b.close();
    // a regular file in the way is not removed
    await writeFile(path, 'precious');
    await assert.rejects(serveNbd(memoryBlockDevice(Buffer.alloc(4096)), path), /not a socket/);
    assert.equal(await readFile(path, 'utf8'), 'precious');
  });
});
