/**
 * QEMU backend with real guests under TCG (the test guest from tools/testguest).
 * Run: node --import tsx --test test/xenops/qemu.test.ts
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, stat } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { QemuBackend } from '../../src/xenops/qemu/index.ts';
import type { DomainConfig, DomainEvent, HypervisorBackend } from '../../src/xenops/backend.ts';
import { testGuestPaths, testGuestCmdline, waitForText, typeOnSerial, READY_MARKER } from '../../tools/testguest/index.ts';

let tmp: string;
let runDir: string;
let backend: QemuBackend;
let guest: { kernel: string; initrd: string };
const events: DomainEvent[] = [];

function cfg(over: Partial<DomainConfig> & { mode?: 'poweroff' | 'reboot' | 'panic' | 'stay' }): DomainConfig {
  const { mode, ...rest } = over;
  return {
    uuid: randomUUID(), name: 'testguest', vcpusMax: 1, vcpusAtStartup: 1, memoryBytes: 256 * 1024 * 1024,
    firmware: 'bios', bootOrder: 'c', kernel: guest.kernel, initrd: guest.initrd,
    cmdline: testGuestCmdline({ mode: mode ?? 'stay' }), platform: {}, disks: [], nics: [],
    ...rest,
  };
}

function waitEvent(uuid: string, kind: DomainEvent['kind'], timeoutMs = 60000): Promise<DomainEvent> {
  return new Promise((resolve, reject) => {
    const found = events.find((e) => e.uuid === uuid && e.kind === kind);
    if (found) { resolve(found); return; }
    const t = setTimeout(() => { off(); reject(new Error(`no ${kind} event for ${uuid}; got ${JSON.stringify(events)}`)); }, timeoutMs);
    const off = backend.onEvent((e) => { if (e.uuid === uuid && e.kind === kind) { clearTimeout(t); off(); resolve(e); } });
  });
}

/** Send a command to the test guest and wait for its XENON-DONE line (count-th occurrence). */
async function guestCmd(b: HypervisorBackend, uuid: string, line: string, expect: string): Promise<string> {
  const { path: log, socket } = b.serialLog(uuid);
  const before = (await readFile(log, 'utf8').catch(() => '')).split(expect).length - 1;
  await typeOnSerial(socket!, line);
  return waitForText(log, expect, { count: before + 1, timeoutMs: 30000 });
}

before(async () => {
  guest = await testGuestPaths();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'xq-'));
  runDir = path.join(tmp, 'run');
  backend = new QemuBackend({ runDir, accel: 'auto' });
  backend.onEvent((e) => events.push(e));
});

after(async () => {
  // Kill whatever a failed test left running (only our own domains).
  await backend.close();
  const b = new QemuBackend({ runDir });
  for (const d of await b.list()) await b.shutdown(d.uuid, 'hard').catch(() => {});
  await b.close();
  await rm(tmp, { recursive: true, force: true });
});

test('accelerator is TCG on this host (kvm_pvm only)', async () => {
  const a = await backend.accelerator();
  if (!(await stat('/sys/module/kvm_intel').catch(() => null)) && !(await stat('/sys/module/kvm_amd').catch(() => null))) assert.equal(a, 'tcg');
});

test('main guest: boot, disk, pause, guest reboot, suspend/resume, re-adopt, clean shutdown', async (t) => {
  const disk = path.join(tmp, 'disk0.raw');
  execFileSync('qemu-img', ['create', '-f', 'raw', disk, '16M'], { stdio: 'ignore' });
  const c = cfg({ disks: [{ id: randomUUID(), device: '0', path: disk, format: 'raw', readOnly: false, kind: 'disk', bootable: false }] });
  const uuid = c.uuid;
  const info = await backend.start(c, { paused: false });
  assert.equal(info.state, 'running');
  assert.ok(info.pid > 0);
  const log = backend.serialLog(uuid).path;

  await t.test('boots to the marker', async () => {
    const text = await waitForText(log, `${READY_MARKER} boot=1`, { timeoutMs: 60000 });
    assert.match(text, /XENON-TESTGUEST-READY boot=1/);
    const listed = await backend.list();
    assert.ok(listed.some((d) => d.uuid === uuid && d.state === 'running'));
    assert.deepEqual(backend.vncAddress(uuid), { unixSocket: path.join(runDir, uuid, 'vnc.sock') });
    const st = await backend.stats(uuid);
    assert.equal(st.vcpus, 1);
    assert.ok(st.cpuSeconds > 0);
    assert.equal(st.memoryActual, 256 * 1024 * 1024);
  });

  await t.test('serial console takes commands', async () => {
    const out = await guestCmd(backend, uuid, 'echo hello-serial', 'XENON-ECHO hello-serial');
    assert.match(out, /XENON-ECHO hello-serial/);
  });

  await t.test('a raw disk is visible: guest writes, host reads the file', async () => {
    await guestCmd(backend, uuid, 'write-disk vda written-by-guest-42', 'XENON-WROTE vda');
    const head = (await readFile(disk)).subarray(0, 64).toString();
    assert.match(head, /^written-by-guest-42\n/);
  });

  await t.test('hot plug and unplug a disk', async () => {
    const disk1 = path.join(tmp, 'disk1.raw');
    execFileSync('qemu-img', ['create', '-f', 'raw', disk1, '8M'], { stdio: 'ignore' });
    const id = randomUUID();
    await backend.plugDisk(uuid, { id, device: '1', path: disk1, format: 'raw', readOnly: false, kind: 'disk', bootable: false });
    assert.equal((await backend.get(uuid))!.config.disks.length, 2);
    // the guest sees /dev/vdb once its ACPI hotplug handler ran
    const deadline = Date.now() + 20000;
    for (;;) {
      const out = await guestCmd(backend, uuid, 'sh test -b /dev/vdb && echo XENON-HAVE-VDB', 'XENON-DONE sh');
      if (out.includes('XENON-HAVE-VDB')) break;
      assert.ok(Date.now() < deadline, 'vdb never appeared');
      await new Promise((r) => setTimeout(r, 300));
    }
    await guestCmd(backend, uuid, 'write-disk vdb hotplugged-disk', 'XENON-WROTE vdb');
    assert.match((await readFile(disk1)).subarray(0, 32).toString(), /^hotplugged-disk\n/);
    await backend.unplugDisk(uuid, id);
    assert.equal((await backend.get(uuid))!.config.disks.length, 1);
  });

  await t.test('hot plug and unplug a NIC on a tap', async () => {
    const tap = `xt${uuid.slice(0, 8)}`;
    execFileSync('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    try {
      const id = randomUUID();
      await backend.plugNic(uuid, { id, device: '0', mac: '02:00:00:aa:bb:01', tap });
      const deadline = Date.now() + 20000;
      for (;;) {
        const out = await guestCmd(backend, uuid, 'sh cat /sys/class/net/eth0/address', 'XENON-DONE sh');
        if (out.includes('02:00:00:aa:bb:01')) break;
        assert.ok(Date.now() < deadline, 'eth0 never appeared');
        await new Promise((r) => setTimeout(r, 300));
      }
      await backend.unplugNic(uuid, id);
      assert.equal((await backend.get(uuid))!.config.nics.length, 0);
    } finally {
      execFileSync('ip', ['link', 'del', tap]);
    }
  });

  await t.test('pause / unpause', async () => {
    await backend.pause(uuid);
    assert.equal((await backend.get(uuid))!.state, 'paused');
    const s1 = await backend.stats(uuid);
    await new Promise((r) => setTimeout(r, 300));
    const s2 = await backend.stats(uuid);
    assert.ok(s2.cpuSeconds - s1.cpuSeconds < 0.2, `paused guest used ${s2.cpuSeconds - s1.cpuSeconds}s of CPU`);
    await backend.unpause(uuid);
    assert.equal((await backend.get(uuid))!.state, 'running');
    await guestCmd(backend, uuid, 'echo after-unpause', 'XENON-ECHO after-unpause');
    assert.ok(!events.some((e) => e.uuid === uuid && (e.kind === 'paused' || e.kind === 'resumed')), 'requested pause emits no event');
  });

  await t.test('guest-initiated reboot is reported, not acted upon; reboot() restarts it', async () => {
    await typeOnSerial(backend.serialLog(uuid).socket!, 'reboot');
    const ev = await waitEvent(uuid, 'reboot');
    assert.equal(ev.kind, 'reboot');
    const d = await backend.get(uuid);
    assert.equal(d!.state, 'shutdown');
    assert.equal(d!.reason, 'reboot');
    await backend.reboot(uuid, 'hard');
    await waitForText(log, READY_MARKER, { count: 2, timeoutMs: 60000 });
    assert.equal((await backend.get(uuid))!.state, 'running');
  });

  const statePath = path.join(tmp, 'suspend.img');
  await t.test('suspend to a file and resume: guest still alive', async () => {
    await backend.suspend(uuid, statePath);
    assert.equal(await backend.get(uuid), undefined);
    assert.ok((await stat(statePath)).size > 1024 * 1024);
    const r = await backend.resume(c, statePath, { paused: false });
    assert.equal(r.state, 'running');
    const out = await guestCmd(backend, uuid, 'echo after-resume', 'XENON-ECHO after-resume');
    assert.match(out, /XENON-ECHO after-resume/);
    assert.equal((out.match(new RegExp(READY_MARKER, 'g')) ?? []).length, 2, 'resumed, not rebooted');
  });

  await t.test('a second backend on the same run dir re-adopts the guest', async () => {
    await backend.close();
    backend = new QemuBackend({ runDir });
    backend.onEvent((e) => events.push(e));
    const listed = await backend.list();
    const d = listed.find((x) => x.uuid === uuid);
    assert.ok(d, 'adopted');
    assert.equal(d.state, 'running');
    assert.equal(d.config.disks.length, 1);
    await guestCmd(backend, uuid, 'echo adopted', 'XENON-ECHO adopted');
    // clean shutdown = ACPI power button, the guest powers off
    await backend.shutdown(uuid, 'clean', 30000);
    assert.equal(await backend.get(uuid), undefined);
    assert.ok(!events.some((e) => e.uuid === uuid && e.kind === 'shutdown'), 'requested shutdown emits no event');
  });
});

test('guest poweroff gives a shutdown event', async () => {
  const c = cfg({ mode: 'poweroff' });
  await backend.start(c, { paused: false });
  const ev = await waitEvent(c.uuid, 'shutdown');
  assert.equal(ev.reason, 'poweroff');
  assert.equal((await backend.get(c.uuid))!.state, 'shutdown');
  await backend.shutdown(c.uuid, 'hard');
  assert.equal((await backend.list()).some((d) => d.uuid === c.uuid), false);
});

test('guest panic gives a crash event; hard shutdown destroys it', async () => {
  const c = cfg({ mode: 'panic' });
  await backend.start(c, { paused: false });
  const ev = await waitEvent(c.uuid, 'crash');
  assert.equal(ev.reason, 'panic');
  assert.equal((await backend.get(c.uuid))!.state, 'crashed');
  await backend.shutdown(c.uuid, 'hard');
});

test('device model killed from outside gives a crash event', async () => {
  const c = cfg({ mode: 'stay', kernel: guest.kernel });
  const info = await backend.start(c, { paused: true });
  assert.equal(info.state, 'paused');
  process.kill(info.pid, 'SIGKILL');
  const ev = await waitEvent(c.uuid, 'crash', 10000);
  assert.match(ev.reason ?? '', /exited/);
  assert.equal(await backend.get(c.uuid), undefined);
});

test('start errors are reported with QEMU\'s message', async () => {
  const c = cfg({ disks: [{ id: randomUUID(), device: '0', path: path.join(tmp, 'missing.raw'), format: 'raw', readOnly: false, kind: 'disk', bootable: true }] });
  await assert.rejects(backend.start(c, { paused: true }), /missing\.raw/);
  assert.equal(await backend.get(c.uuid), undefined);
});
