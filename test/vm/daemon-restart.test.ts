/** Guests outlive the daemon: SIGKILL it with two VMs running, restart, they are re-adopted. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenApiClient } from '../../src/client/client.ts';
import { spawnDaemon } from '../helpers/daemon.ts';
import { makeTestGuestVm, MARKER, typeOnConsole, waitSerial } from '../helpers/guest.ts';

test('SIGKILL the daemon while two VMs run; after restart both are Running and one shuts down cleanly', { timeout: 300_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-adopt-'));
  const args = ['--backend', 'qemu', '--network', 'none'];
  let c: XenApiClient | undefined;
  let d = await spawnDaemon(dataDir, { args });
  try {
    c = new XenApiClient(d.url);
    await c.login('root', 'xenon-test-root');
    const vms = [await makeTestGuestVm(c, 'adopt-1'), await makeTestGuestVm(c, 'adopt-2')];
    for (const vm of vms) await c.api.VM.start(vm, false, false);
    for (const vm of vms) await waitSerial(c, vm, MARKER);
    const domids = await Promise.all(vms.map((vm) => c!.api.VM.get_domid(vm)));
    d.proc.kill('SIGKILL');
    await d.exited;
    c.close();

    d = await spawnDaemon(dataDir, { args });
    c = new XenApiClient(d.url);
    await c.login('root', 'xenon-test-root');
    for (const [i, vm] of vms.entries()) {
      assert.equal(await c.api.VM.get_power_state(vm), 'Running');
      assert.equal(await c.api.VM.get_domid(vm), domids[i], 'the same QEMU process, not a new one');
    }
    // the re-adopted guest still answers on its console, and was not rebooted
    await typeOnConsole(c, vms[0], 'echo still-here');
    const text = await waitSerial(c, vms[0], 'XENON-ECHO still-here');
    assert.equal(text.split(MARKER).length - 1, 1);
    await c.api.VM.clean_shutdown(vms[0]);
    assert.equal(await c.api.VM.get_power_state(vms[0]), 'Halted');
    assert.equal(await c.api.VM.get_power_state(vms[1]), 'Running');
    await c.api.VM.hard_shutdown(vms[1]);
  } finally {
    c?.close();
    d.proc.kill('SIGTERM');
    await d.exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('a guest that died while the daemon was down is Halted after the restart', { timeout: 300_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-died-'));
  const args = ['--backend', 'qemu', '--network', 'none'];
  let d = await spawnDaemon(dataDir, { args });
  let c = new XenApiClient(d.url);
  try {
    await c.login('root', 'xenon-test-root');
    const vm = await makeTestGuestVm(c, 'dies');
    await c.api.VM.start(vm, false, false);
    await waitSerial(c, vm, MARKER);
    const pid = await c.api.VM.get_domid(vm);
    d.proc.kill('SIGKILL');
    await d.exited;
    process.kill(pid, 'SIGKILL'); // the QEMU process Xenon started for this VM
    await new Promise((r) => setTimeout(r, 300));
    d = await spawnDaemon(dataDir, { args });
    c.close();
    c = new XenApiClient(d.url);
    await c.login('root', 'xenon-test-root');
    assert.equal(await c.api.VM.get_power_state(vm), 'Halted');
    await c.api.VM.start(vm, false, false);
    await waitSerial(c, vm, MARKER);
    await c.api.VM.hard_shutdown(vm);
  } finally {
    c.close();
    d.proc.kill('SIGTERM');
    await d.exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
});
