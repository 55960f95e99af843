/**
 * Real guests under QEMU (TCG here), driven only through the XenAPI and
 * /console: boot, marker, reboot, suspend/resume, guest poweroff, panic.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
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
