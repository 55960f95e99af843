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
  // a live snapshot: the guest keeps running while its disk becomes a chain under it
  const snap = await c.api.VM.snapshot(vm, 'before-second', []);
  await command('write-disk vda second-data', 'XENON-WROTE vda', 2);
  let text = await command('read-disk vda', 'XENON-READ vda', 1);
  assert.match(text, /XENON-READ vda second-data/);
  const snapDisk = await c.api.VBD.get_VDI((await c.api.VM.get_VBDs(snap))[0]);
  const exported = Buffer.from(await (await fetch(`${t.url}/export_raw_vdi?session_id=${c.session}&vdi=${snapDisk}&format=raw`)).arrayBuffer());
  assert.equal(exported.subarray(0, 10).toString(), 'first-data', 'the snapshot holds the data of its moment');
  await c.api.VM.clean_shutdown(vm);

  await c.api.VM.revert(snap);
  await boot();
  text = await command('read-disk vda', 'XENON-READ vda', 1);
  const reads = [...text.matchAll(/XENON-READ vda (\S+)/g)].map((m) => m[1]);
  assert.equal(reads[reads.length - 1], 'first-data', `reads: ${reads.join(', ')}`);
  await c.api.VM.hard_shutdown(vm);
});

test('a disk hot-plugged into a running guest shows its data; a CD drive takes and gives back media', { timeout: 300_000 }, async () => {
  const c = t.client;
  const [pool] = await c.api.pool.get_all();
  const sr = await c.api.pool.get_default_SR(pool);
  const vm = await makeTestGuestVm(c, 'hotplug-guest');
  await c.api.VM.start(vm, false, false);
  await waitSerial(c, vm, MARKER);
  const vdi = await c.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'hot', type: 'user' } as never);
  const data = Buffer.alloc(4 * 1024 * 1024);
  data.write('hot-plugged-data\n');
  const put = await fetch(`${t.url}/import_raw_vdi?session_id=${c.session}&vdi=${vdi}&format=raw`, { method: 'PUT', body: new Uint8Array(data) });
  assert.equal(put.status, 200);
  const vbd = await c.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false } as never);
  assert.equal(await c.api.VBD.get_currently_attached(vbd), false);
  await c.api.VBD.plug(vbd);
  assert.equal(await c.api.VBD.get_currently_attached(vbd), true);
  let found = false;
  for (let i = 1; i <= 20 && !found; i++) {
    await typeOnConsole(c, vm, 'read-disk vda');
    const text = await waitSerial(c, vm, 'XENON-READ vda', i);
    found = text.includes('XENON-READ vda hot-plugged-data');
    if (!found) await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(found, 'the guest reads the hot-plugged disk');
  await c.api.VBD.unplug(vbd);
  assert.equal(await c.api.VBD.get_currently_attached(vbd), false);

  const cd = await c.api.VBD.create({ VM: vm, VDI: 'OpaqueRef:NULL', userdevice: '3', bootable: false, mode: 'RO', type: 'CD', empty: true } as never);
  assert.equal(await c.api.VBD.get_empty(cd), true);
  await assert.rejects(c.api.VBD.eject(cd), (e: { code?: string }) => e.code === 'VBD_IS_EMPTY');
  await c.api.VBD.insert(cd, vdi);
  assert.equal(await c.api.VBD.get_VDI(cd), vdi);
  await assert.rejects(c.api.VBD.insert(cd, vdi), (e: { code?: string }) => e.code === 'VBD_NOT_EMPTY');
  await c.api.VBD.eject(cd);
  assert.equal(await c.api.VBD.get_empty(cd), true);
  await c.api.VM.hard_shutdown(vm);
});
