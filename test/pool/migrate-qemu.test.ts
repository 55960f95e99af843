/**
 * Live migration of a real guest (QEMU under TCG) across a pool of three
 * daemons in three network namespaces: an agile VM (its disk a qcow2 image on
 * the shared SR) started by placement's start_on moves twice while a loop in
 * the guest prints a tick every 100 ms on its serial console; the ticks go on
 * without a number missing and without a pause of a second.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestGuestVm, typeOnConsole } from '../helpers/guest.ts';
import { allLive, PoolLab, ROOT_PASSWORD, type LabHost } from './helpers.ts';

const QEMU = ['--backend', 'qemu', '--accel', 'tcg', '--network', 'none'];
const lab = new PoolLab();
let hosts: LabHost[] = [];

before(async () => {
  await lab.setup();
  hosts = await Promise.all(['m1', 'm2', 'm3'].map((n) => lab.addHost(n, QEMU)));
});
after(() => lab.teardown());

const serialLog = (h: LabHost, uuid: string): string => {
  try {
    return readFileSync(join(h.dataDir, 'run', 'qemu', uuid, 'serial.log'), 'utf8');
  } catch {
    return '';
  }
};

/** Watches every host's serial log of the VM: when each tick number was first seen. */
function watchTicks(uuid: string): { seen: Map<number, number>; stop: () => void } {
  const seen = new Map<number, number>();
  const timer = setInterval(() => {
    const now = Date.now();
    for (const h of hosts) for (const m of serialLog(h, uuid).matchAll(/TICK (\d+)/g)) if (!seen.has(Number(m[1]))) seen.set(Number(m[1]), now);
  }, 25);
  return { seen, stop: () => clearInterval(timer) };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('an agile guest migrates live twice; its serial console keeps counting', { timeout: 300_000 }, async () => {
  const [h1, h2, h3] = hosts;
  for (const h of [h2, h3]) {
    await (await h.client()).api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
    await lab.restarted(h);
  }
  const c = await h1.client();
  await allLive(c);
  const hostOf = async (h: LabHost): Promise<string> => Object.keys(await c.api.host.get_all_records_where(`field "address" = "${h.ip}"`))[0];
  const [r1, r2, r3] = [await hostOf(h1), await hostOf(h2), await hostOf(h3)];
  const sr = await c.api.SR.create(r1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  await until('every host to plug the shared SR', async () => {
    for (const p of await c.api.SR.get_PBDs(sr)) if (!(await c.api.PBD.get_currently_attached(p))) return false;
    return true;
  });

  const vm = await makeTestGuestVm(c, 'counter');
  const disk = await c.api.VDI.create({ SR: sr, virtual_size: 8 * 1024 * 1024, name_label: 'counter', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  const uuid = await c.api.VM.get_uuid(vm);
  // a member's liveness is the master's poll of it: wait for the poll of every member to have answered since the SR work
  const whyNot = async (h: string): Promise<string> => c.api.VM.assert_can_boot_here(vm, h).then(() => 'ok', (e: unknown) => String(e));
  await until('every host to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 3, 60_000).catch(async (e: unknown) => {
    throw new Error(`${String(e)}: ${(await Promise.all([r1, r2, r3].map(whyNot))).join('; ')}`);
  });
  assert.deepEqual((await c.api.VM.get_possible_hosts(vm)).sort(), [r1, r2, r3].sort());

  await c.api.VM.start_on(vm, r1, false, false);
  await until('the guest to boot', () => serialLog(h1, uuid).includes('XENON-TESTGUEST-READY'), 120_000);
  await typeOnConsole(c, vm, 'sh i=0; while true; do i=$((i+1)); echo TICK $i; sleep 0.1; done &');
  const ticks = watchTicks(uuid);
  try {
    await until('ticks', () => ticks.seen.size >= 10);
    for (const [to, h] of [[r2, h2], [r3, h3]] as const) {
      const before = Math.max(...ticks.seen.keys());
      const t0 = Date.now();
      await c.api.VM.pool_migrate(vm, to, { live: 'true' });
      const took = Date.now() - t0;
      assert.equal(await c.api.VM.get_resident_on(vm), to);
      assert.equal(await c.api.VM.get_power_state(vm), 'Running');
      await until(`ticks from ${h.name}`, () => /TICK \d+/.test(serialLog(h, uuid)));
      await until('more ticks', () => Math.max(...ticks.seen.keys()) >= before + 10);
      process.stdout.write(`# migrated to ${h.name} in ${took} ms\n`);
    }
  } finally {
    ticks.stop();
  }
  const numbers = [...ticks.seen.keys()].sort((a, b) => a - b);
  const first = numbers[0];
  const missing = numbers.filter((n, i) => n !== first + i);
  assert.deepEqual(missing, [], 'no tick is lost');
  const times = numbers.map((n) => ticks.seen.get(n)!);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const worst = Math.max(...gaps);
  process.stdout.write(`# ${numbers.length} ticks, longest pause between new ticks ${worst} ms\n`);
  assert.ok(worst < 1000, `the console paused for ${worst} ms`);
  // the source hosts let go: nothing of the guest runs there
  assert.equal(await c.api.VM.get_resident_on(vm), r3);
  await c.api.VM.hard_shutdown(vm);
});
