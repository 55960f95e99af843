import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { SimBackend } from '../../src/xenops/sim/index.ts';
import { BadPowerState, DomainExists, DomainNotFound, type DomainConfig, type DomainEvent } from '../../src/xenops/backend.ts';

function cfg(over: Partial<DomainConfig> = {}): DomainConfig {
  return {
    uuid: randomUUID(), name: 'vm', vcpusMax: 2, vcpusAtStartup: 2, memoryBytes: 512 * 1024 * 1024,
    firmware: 'bios', bootOrder: 'cd', platform: {}, disks: [], nics: [], ...over,
  };
}

test('sim: lifecycle start / pause / unpause / reboot / shutdown', async () => {
  const b = new SimBackend();
  const c = cfg();
  const i = await b.start(c, { paused: true });
  assert.equal(i.state, 'paused');
  await assert.rejects(b.start(c, { paused: false }), DomainExists);
  await b.unpause(c.uuid);
  assert.equal((await b.get(c.uuid))!.state, 'running');
  await b.pause(c.uuid);
  await assert.rejects(b.reboot(c.uuid, 'hard'), BadPowerState);
  await b.unpause(c.uuid);
  const pid0 = (await b.get(c.uuid))!.pid;
  await b.reboot(c.uuid, 'clean');
  const after = (await b.get(c.uuid))!;
  assert.equal(after.state, 'running');
  assert.notEqual(after.pid, pid0);
  await b.shutdown(c.uuid, 'clean');
  assert.equal(await b.get(c.uuid), undefined);
  await assert.rejects(b.pause(c.uuid), DomainNotFound);
  await b.close();
});

test('sim: synthetic stats grow only while running', async () => {
  let now = 1_000_000;
  const b = new SimBackend({ now: () => now, cpuLoad: 0.5 });
  const c = cfg();
  await b.start(c, { paused: false });
  now += 10_000;
  const s1 = await b.stats(c.uuid);
  assert.equal(s1.cpuSeconds, 10); // 10 s * 2 vCPUs * 0.5
  assert.equal(s1.vcpus, 2);
  assert.equal(s1.memoryActual, c.memoryBytes);
  await b.pause(c.uuid);
  now += 10_000;
  assert.equal((await b.stats(c.uuid)).cpuSeconds, 10);
  await b.close();
});

test('sim: suspend / resume through a state file', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'xsim-'));
  try {
    const b = new SimBackend();
    const c = cfg();
    await b.start(c, { paused: false });
    const f = path.join(dir, 'state');
    await b.suspend(c.uuid, f);
    assert.equal((await b.list()).length, 0);
    await assert.rejects(b.resume({ ...c, memoryBytes: 1 << 30 }, f, { paused: false }), /memory/);
    const r = await b.resume(c, f, { paused: false });
    assert.equal(r.state, 'running');
    assert.equal(b.counters.resume, 1);
    await b.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sim: guest-initiated events are reported and leave the domain for the caller', async () => {
  const b = new SimBackend();
  const events: DomainEvent[] = [];
  b.onEvent((e) => events.push(e));
  const c = cfg();
  await b.start(c, { paused: false });
  b.injectGuestEvent(c.uuid, 'reboot');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(events, [{ uuid: c.uuid, kind: 'reboot', reason: undefined }]);
  assert.equal((await b.get(c.uuid))!.state, 'shutdown');
  await b.reboot(c.uuid, 'hard');
  b.injectGuestEvent(c.uuid, 'crash');
  await new Promise((r) => setImmediate(r));
  assert.equal(events[1]!.kind, 'crash');
  assert.equal((await b.get(c.uuid))!.state, 'crashed');
  await b.shutdown(c.uuid, 'hard');
  await b.close();
});

test('sim: hot plug of disks and NICs, CD insert/eject', async () => {
  const b = new SimBackend();
  const cd = { id: randomUUID(), device: '3', format: 'raw' as const, readOnly: true, kind: 'cdrom' as const, bootable: true };
  const c = cfg({ disks: [cd] });
  await b.start(c, { paused: false });
  const disk = { id: randomUUID(), device: '1', path: '/x.raw', format: 'raw' as const, readOnly: false, kind: 'disk' as const, bootable: false };
  await b.plugDisk(c.uuid, disk);
  await assert.rejects(b.plugDisk(c.uuid, disk), /already/);
  await b.plugNic(c.uuid, { id: randomUUID(), device: '0', mac: '02:00:00:00:00:01', bridge: 'xenbr0' });
  await b.insertCd(c.uuid, cd.id, '/iso/a.iso');
  let info = (await b.get(c.uuid))!;
  assert.equal(info.config.disks.length, 2);
  assert.equal(info.config.nics.length, 1);
  assert.equal(info.config.disks[0]!.path, '/iso/a.iso');
  await b.insertCd(c.uuid, cd.id, null);
  await b.unplugDisk(c.uuid, disk.id);
  info = (await b.get(c.uuid))!;
  assert.equal(info.config.disks.length, 1);
  assert.equal(info.config.disks[0]!.path, undefined);
  await b.close();
});

test('sim: a second instance on the same persist file re-adopts domains', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'xsim-'));
  try {
    const persistPath = path.join(dir, 'sim.json');
    const b1 = new SimBackend({ persistPath });
    const c = cfg();
    await b1.start(c, { paused: false });
    await b1.close();
    const b2 = new SimBackend({ persistPath });
    const l = await b2.list();
    assert.equal(l.length, 1);
    assert.equal(l[0]!.uuid, c.uuid);
    await b2.shutdown(c.uuid, 'hard');
    await b2.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sim: 10,000 domains start, list and stop quickly', async () => {
  const b = new SimBackend();
  const t0 = performance.now();
  const cfgs = Array.from({ length: 10_000 }, () => cfg());
  await Promise.all(cfgs.map((c) => b.start(c, { paused: false })));
  assert.equal((await b.list()).length, 10_000);
  await Promise.all(cfgs.map((c) => b.shutdown(c.uuid, 'hard')));
  const ms = performance.now() - t0;
  assert.equal((await b.list()).length, 0);
  // linear work takes ~1 s here; the bound catches a quadratic path, not a loaded machine
  assert.ok(ms < 15_000, `took ${ms} ms`);
  await b.close();
});
