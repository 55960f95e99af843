/**
 * Real guests under QEMU (TCG here), driven only through the XenAPI and
 * /console: boot, marker, reboot, suspend/resume, guest poweroff, panic.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { makeTestGuestVm, MARKER, typeOnConsole, waitPowerState, waitSerial } from '../helpers/guest.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer({ plugins: [xenopsPlugin({ backend: 'qemu', accel: 'tcg' })] });
});
after(async () => {
  for (const vm of await t.client.api.VM.get_all()) {
    const rec = await t.client.api.VM.get_record(vm);
    if (!rec.is_control_domain && rec.power_state !== 'Halted') await t.client.api.VM.hard_shutdown(vm).catch(() => undefined);
  }
  await t.close();
});

test('boot to the marker, clean reboot shows it again, clean shutdown halts', { timeout: 120_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-reboot');
  await c.api.VM.start(vm, false, false);
  assert.equal(await c.api.VM.get_power_state(vm), 'Running');
  await waitSerial(c, vm, MARKER);
  await c.api.VM.hard_reboot(vm);
  await waitSerial(c, vm, MARKER, 2);
  await c.api.VM.clean_shutdown(vm);
  assert.equal(await c.api.VM.get_power_state(vm), 'Halted');
});

test('suspend to an image and resume: the guest carries on where it was', { timeout: 120_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-suspend');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  await c.api.VM.suspend(vm);
  assert.equal(await c.api.VM.get_power_state(vm), 'Suspended');
  await c.api.VM.resume(vm, false, false);
  assert.equal(await c.api.VM.get_power_state(vm), 'Running');
  await typeOnConsole(c, vm, 'echo after-resume');
  const text = await waitSerial(c, vm, 'XENON-ECHO after-resume');
  assert.equal(text.split(MARKER).length - 1, 1, 'not rebooted');
  await c.api.VM.hard_shutdown(vm);
});

test('a guest that powers itself off becomes Halted', { timeout: 120_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-poweroff');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  await typeOnConsole(c, vm, 'poweroff');
  await waitPowerState(c, vm, 'Halted');
});

test('a guest panic follows actions_after_crash (restart, then destroy)', { timeout: 180_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-panic');
  await c.api.VM.set_actions_after_crash(vm, 'restart');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  await typeOnConsole(c, vm, 'panic');
  await waitSerial(c, vm, MARKER, 2);
  assert.equal(await c.api.VM.get_power_state(vm), 'Running');
  await c.api.VM.set_actions_after_crash(vm, 'destroy');
  await typeOnConsole(c, vm, 'panic');
  await waitPowerState(c, vm, 'Halted');
});

test('a guest reboot restarts it (actions_after_reboot = restart)', { timeout: 120_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-self-reboot');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  await typeOnConsole(c, vm, 'reboot');
  await waitSerial(c, vm, MARKER, 2);
  assert.equal(await c.api.VM.get_power_state(vm), 'Running');
  await c.api.VM.hard_shutdown(vm);
});

test('the RFB console answers over HTTP CONNECT with the VNC greeting', { timeout: 120_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-rfb');
  await c.api.VM.start(vm, false, false);
  let rfb = '';
  for (const con of await c.api.VM.get_consoles(vm)) if ((await c.api.console.get_protocol(con)) === 'rfb') rfb = con;
  assert.ok(rfb, 'an rfb console record');
  const greeting = await new Promise<string>((resolve, reject) => {
    const s = net.createConnection({ host: '127.0.0.1', port: Number(new URL(t.url).port) }, () => {
      s.write(`CONNECT /console?ref=${encodeURIComponent(rfb)}&session_id=${encodeURIComponent(c.session)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    });
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const m = /RFB \d{3}\.\d{3}\n/.exec(buf);
      if (m) {
        s.destroy();
        resolve(buf);
      }
    });
    s.on('error', reject);
    setTimeout(() => reject(new Error(`no greeting: ${JSON.stringify(buf)}`)), 20_000);
  });
  assert.match(greeting, /^HTTP\/1\.1 200/);
  assert.match(greeting, /RFB 003\.00\d\n/);
  const denied = await fetch(`${t.url}/console?ref=${encodeURIComponent(rfb)}&session_id=OpaqueRef:bad`);
  assert.equal(denied.status, 401);
  await c.api.VM.hard_shutdown(vm);
});

test('UEFI firmware (OVMF) boots the guest too', { timeout: 180_000 }, async () => {
  const c = t.client;
  const vm = await makeTestGuestVm(c, 'guest-uefi');
  await c.api.VM.add_to_HVM_boot_params(vm, 'firmware', 'uefi');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  await c.api.VM.hard_shutdown(vm);
});
