/**
 * A real guest writes to its disk; the VM is snapshotted, the guest writes
 * again, the VM is reverted: the guest then sees the snapshot's data. After
 * the snapshot the disk is a VHD chain, which QEMU reaches through Xenon's NBD export.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { makeTestGuestVm, MARKER, typeOnConsole, waitSerial } from '../helpers/guest.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'qemu', accel: 'tcg' })] });
});
after(() => t.close());

test('write, snapshot, write, revert: the guest reads the snapshot data', { timeout: 400_000 }, async () => {
  const c = t.client;
  const [pool] = await c.api.pool.get_all();
  const sr = await c.api.pool.get_default_SR(pool);
  const vm = await makeTestGuestVm(c, 'disk-guest');
  const vdi = await c.api.VDI.create({ SR: sr, virtual_size: 16 * 1024 * 1024, name_label: 'data', type: 'user' } as never);
  await c.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false } as never);

  // each start is a fresh domain with a fresh serial log
  const boot = async (): Promise<void> => {
    await c.api.VM.start(vm, false, false);
    await waitSerial(c, vm, MARKER, 1);
  };
  const command = async (line: string, expect: string, n: number): Promise<string> => {
    await typeOnConsole(c, vm, line);
    return waitSerial(c, vm, expect, n);
  };

  await boot();
  await command('write-disk vda first-data', 'XENON-WROTE vda', 1);
  await c.api.VM.clean_shutdown(vm);
  const snap = await c.api.VM.snapshot(vm, 'before-second', []);

  await boot();
  let text = await command('read-disk vda', 'XENON-READ vda', 1);
  assert.match(text, /XENON-READ vda first-data/, 'the disk, now a chain, still reads its data through NBD');
  await command('write-disk vda second-data', 'XENON-WROTE vda', 1);
  await command('read-disk vda', 'XENON-READ vda second-data', 1);
  await c.api.VM.clean_shutdown(vm);

  await c.api.VM.revert(snap);
  await boot();
  text = await command('read-disk vda', 'XENON-READ vda', 1);
  const reads = [...text.matchAll(/XENON-READ vda (\S+)/g)].map((m) => m[1]);
  assert.equal(reads[reads.length - 1], 'first-data', `reads: ${reads.join(', ')}`);
  await c.api.VM.hard_shutdown(vm);
});
