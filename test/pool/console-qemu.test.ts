/**
 * A real guest's serial console, held open through the master while the
 * guest live-migrates from a member to the master and back: a loop in the
 * guest prints a tick every 100 ms; the one CONNECT /console stream keeps
 * delivering them — no number missing, no pause of a second, no close.
 * The guest boots on the member, so its serial log text (GET /console) and
 * typing on its console go through the pool channel too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { makeTestGuestVm, MARKER, typeOnConsole, waitSerial } from '../helpers/guest.ts';
import { allLive, hostRefOf, PoolLab, until, type LabHost } from './helpers.ts';
import { openConsoleStream } from './console-stream.ts';

const QEMU = ['--backend', 'qemu', '--accel', 'tcg', '--network', 'none'];
const lab = new PoolLab();
let hosts: LabHost[] = [];

before(async () => {
  await lab.setup();
  hosts = await Promise.all(['c1', 'c2'].map((n) => lab.addHost(n, QEMU)));
});
after(() => lab.teardown());

test('a serial console held through the master keeps counting across live migrations', { timeout: 300_000 }, async () => {
  const [h1, h2] = hosts;
  await lab.formPool(h1, [h2]);
  const c = await h1.client();
  await allLive(c);
  const [r1, r2] = [await hostRefOf(c, h1), await hostRefOf(c, h2)];
  const sr = await c.api.SR.create(r1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  await until('every host to plug the shared SR', async () => {
    for (const p of await c.api.SR.get_PBDs(sr)) if (!(await c.api.PBD.get_currently_attached(p))) return false;
    return true;
  });
  const vm = await makeTestGuestVm(c, 'console-counter');
  const disk = await c.api.VDI.create({ SR: sr, virtual_size: 8 * 1024 * 1024, name_label: 'counter', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  await until('both hosts to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 2);

  await c.api.VM.start_on(vm, r2, false, false);
  // the serial log text of a guest on the member, through the master
  await waitSerial(c, vm, MARKER, 1, 150_000);
  await typeOnConsole(c, vm, 'sh i=0; while true; do i=$((i+1)); echo TICK $i; sleep 0.1; done &');
  let vt100 = '';
  for (const con of await c.api.VM.get_consoles(vm)) if ((await c.api.console.get_protocol(con)) === 'vt100') vt100 = con;
  const stream = await openConsoleStream(c.connectTarget, `/console?ref=${encodeURIComponent(vt100)}&session_id=${encodeURIComponent(c.session)}`);
  const ticks = (): { n: number; at: number }[] => stream.lines.flatMap((l) => {
    const m = /TICK (\d+)/.exec(l.text);
    return m ? [{ n: Number(m[1]), at: l.at }] : [];
  });
  try {
    await until('ticks on the stream', () => ticks().length >= 10);
    for (const [to, name] of [[r1, 'the master'], [r2, 'the member']] as const) {
      const before = ticks().length;
      const t0 = Date.now();
      await c.api.VM.pool_migrate(vm, to, { live: 'true' });
      process.stdout.write(`# migrated to ${name} in ${Date.now() - t0} ms\n`);
      assert.equal(await c.api.VM.get_resident_on(vm), to);
      await until(`ticks after the move to ${name}`, () => ticks().length >= before + 20);
      assert.ok(!stream.closed(), 'the client saw no close');
    }
  } finally {
    stream.close();
  }
  const seen = ticks();
  const numbers = seen.map((t) => t.n);
  const missing = numbers.slice(1).flatMap((n, i) => (n === numbers[i] + 1 ? [] : [`${numbers[i]}→${n}`]));
  const gaps = seen.slice(1).map((t, i) => t.at - seen[i].at);
  const worst = Math.max(...gaps);
  process.stdout.write(`# ${seen.length} ticks on one stream across two moves, longest pause ${worst} ms, jumps ${JSON.stringify(missing)}\n`);
  assert.deepEqual(missing, [], 'no tick is lost or repeated on the stream');
  assert.ok(worst < 1000, `the stream paused for ${worst} ms`);
  await c.api.VM.hard_shutdown(vm);
});
