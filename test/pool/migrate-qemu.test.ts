/**
 * Live migration of a real guest (QEMU under TCG) across a pool of three
 * daemons in three network namespaces: an agile VM (two disks on the shared
 * SR: a qcow2 image, and a VHD, the default format, which reaches QEMU
 * through the NBD export of whichever host runs the guest) started by
 * placement's start_on moves twice while a loop in the guest prints a tick
 * every 100 ms on its serial console and another writes numbered records
 * over the VHD disk (allocating its blocks as it goes), each flushed. The
 * ticks go on without a number missing and without a pause of a second;
 * afterwards every record the guest saw written reads back, in the guest
 * (caches dropped), through Xenon's VHD library and through QEMU's own VHD
 * reader, and libvhdi finds the file sound.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openVhd } from '../../src/storage/vhd/index.ts';
import { checkChainFile } from '../storage/chain-helpers.ts';
import { makeTestGuestVm, typeOnConsole } from '../helpers/guest.ts';
import { allLive, hostRefOf, PoolLab, ROOT_PASSWORD, type LabHost } from './helpers.ts';

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

/** A line typed on the guest's serial console, through the socket of the host running it. */
function typeOn(h: LabHost, uuid: string, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(join(h.dataDir, 'run', 'qemu', uuid, 'serial.sock'), () => sock.end(`${line}\n`, () => resolve()));
    sock.on('error', reject);
  });
}

/** The VHD disk's records: one 512-byte sector every 2 MiB (a VHD block each: the first round allocates a block per record, across both migrations), record j at slot j % SLOTS. */
const SLOTS = 96;
const SLOT_SECTORS = 4096;
const VHD_SIZE = SLOTS * SLOT_SECTORS * 512;
const DISK_LOOP = [
  `sh D=; for d in vda vdb vdc; do [ "$(cat /sys/block/$d/size 2>/dev/null)" = ${VHD_SIZE / 512} ] && D=$d; done; echo "DISKDEV $D";`,
  `( j=0; while [ ! -e /tmp/stop ]; do j=$((j+1)); printf 'REC %d\\n' $j | dd of=/dev/$D bs=512 seek=$(( (j % ${SLOTS}) * ${SLOT_SECTORS} )) conv=sync,notrunc,fsync 2>/dev/null && echo "DISK $j"; sleep 0.2; done; echo DISK-STOPPED ) &`,
].join(' ');
const READ_BACK = `sh echo 3 > /proc/sys/vm/drop_caches; p=0; while [ $p -lt ${SLOTS} ]; do echo "GOT $p $(dd if=/dev/$D bs=512 count=1 skip=$((p * ${SLOT_SECTORS})) 2>/dev/null | tr -d '\\000' | head -n 1)"; p=$((p+1)); done; echo GOT-END`;

/** What each slot must hold once records 1..last were written: the latest record of that slot. */
function expectedSlots(last: number): Map<number, number> {
  const want = new Map<number, number>();
  for (let j = 1; j <= last; j++) want.set(j % SLOTS, j);
  return want;
}

/** The record numbers read from the slots of a raw image of the disk. */
function slotsOf(read: (offset: number) => Buffer): Map<number, number> {
  const got = new Map<number, number>();
  for (let p = 0; p < SLOTS; p++) {
    const m = /^REC (\d+)\n/.exec(read(p * SLOT_SECTORS * 512).toString('latin1'));
    if (m) got.set(p, Number(m[1]));
  }
  return got;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('an agile guest migrates live twice; its serial console keeps counting, its VHD disk keeps every write', { timeout: 400_000 }, async () => {
  const [h1, h2, h3] = hosts;
  for (const h of [h2, h3]) {
    await (await h.client()).api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
    await lab.restarted(h);
  }
  const c = await h1.client();
  await allLive(c);
  const [r1, r2, r3] = [await hostRefOf(c, h1), await hostRefOf(c, h2), await hostRefOf(c, h3)];
  const sharedDir = join(lab.dir, 'shared');
  const sr = await c.api.SR.create(r1, { location: sharedDir }, 0, 'shared', '', 'file', 'user', true, {});
  await until('every host to plug the shared SR', async () => {
    for (const p of await c.api.SR.get_PBDs(sr)) if (!(await c.api.PBD.get_currently_attached(p))) return false;
    return true;
  });

  const vm = await makeTestGuestVm(c, 'counter');
  const disk = await c.api.VDI.create({ SR: sr, virtual_size: 8 * 1024 * 1024, name_label: 'counter', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  // no sm_config: VDI.create's default on a file SR, a VHD
  const vhd = await c.api.VDI.create({ SR: sr, virtual_size: VHD_SIZE, name_label: 'records', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  await c.api.VBD.create({ VM: vm, VDI: vhd, userdevice: '1', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  const vhdName = `${await c.api.VDI.get_uuid(vhd)}.vhd`;
  // the SR keeps its images in the directory given, or in a sub-directory of its own uuid there
  const vhdFile = [join(sharedDir, vhdName), join(sharedDir, await c.api.SR.get_uuid(sr), vhdName)].find((f) => existsSync(f)) ?? '';
  assert.ok(vhdFile, `the VHD ${vhdName} is in ${sharedDir}`);
  const uuid = await c.api.VM.get_uuid(vm);
  const serialAll = (): string => hosts.map((h) => serialLog(h, uuid)).join('\n');
  const lastRecord = (): number => Math.max(0, ...[...serialAll().matchAll(/DISK (\d+)/g)].map((m) => Number(m[1])));
  // a member's liveness is the master's poll of it: wait for the poll of every member to have answered since the SR work
  const whyNot = async (h: string): Promise<string> => c.api.VM.assert_can_boot_here(vm, h).then(() => 'ok', (e: unknown) => String(e));
  await until('every host to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 3, 60_000).catch(async (e: unknown) => {
    throw new Error(`${String(e)}: ${(await Promise.all([r1, r2, r3].map(whyNot))).join('; ')}`);
  });
  assert.deepEqual((await c.api.VM.get_possible_hosts(vm)).sort(), [r1, r2, r3].sort());

  await c.api.VM.start_on(vm, r1, false, false);
  let want = new Map<number, number>();
  // a device model outlives its daemon: a failed run must not leave the guest running
  try {
    await until('the guest to boot', () => serialLog(h1, uuid).includes('XENON-TESTGUEST-READY'), 120_000);
    await typeOnConsole(c, vm, 'sh i=0; while true; do i=$((i+1)); echo TICK $i; sleep 0.1; done &');
    await typeOnConsole(c, vm, DISK_LOOP);
    await until('the guest to find its VHD disk', () => /DISKDEV vd[a-z]\b/.test(serialLog(h1, uuid)));
    const ticks = watchTicks(uuid);
    const recordsAt: number[] = [];
    try {
      await until('ticks', () => ticks.seen.size >= 10);
      await until('records on the VHD disk', () => lastRecord() >= 5, 120_000);
      for (const [to, h] of [[r2, h2], [r3, h3]] as const) {
        const before = Math.max(...ticks.seen.keys());
        recordsAt.push(lastRecord());
        const t0 = Date.now();
        await c.api.VM.pool_migrate(vm, to, { live: 'true' });
        const took = Date.now() - t0;
        assert.equal(await c.api.VM.get_resident_on(vm), to);
        assert.equal(await c.api.VM.get_power_state(vm), 'Running');
        await until(`ticks from ${h.name}`, () => /TICK \d+/.test(serialLog(h, uuid)));
        await until('more ticks', () => Math.max(...ticks.seen.keys()) >= before + 10);
        // the guest writes on at the destination, through that host's export of the chain
        const atArrival = lastRecord();
        await until(`records written from ${h.name}`, () => /DISK \d+/.test(serialLog(h, uuid)) && lastRecord() >= atArrival + 3, 120_000);
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

    // the disk: the writer stops, the guest reads every slot back from the device (not its page cache)
    await typeOn(h3, uuid, 'sh touch /tmp/stop');
    await until('the disk writer to stop', () => serialLog(h3, uuid).includes('DISK-STOPPED'), 60_000);
    const last = lastRecord();
    process.stdout.write(`# ${last} records written to the VHD disk (${recordsAt.join(', ')} before the migrations)\n`);
    want = expectedSlots(last);
    await typeOn(h3, uuid, READ_BACK);
    await until('the guest to read its disk back', () => serialLog(h3, uuid).includes('GOT-END'), 120_000);
    const inGuest = new Map([...serialLog(h3, uuid).matchAll(/GOT (\d+) REC (\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]));
    assert.deepEqual(inGuest, want, 'the guest reads back every record it wrote');
    await c.api.VM.hard_shutdown(vm);
  } catch (e) {
    await c.api.VM.hard_shutdown(vm).catch(() => undefined);
    throw e;
  }

  // the file: sound for libvhdi and QEMU, and both Xenon's VHD library and QEMU's reader find every record in it
  await checkChainFile(vhdFile);
  const image = await openVhd(vhdFile, { writable: false });
  const sectors: Buffer[] = [];
  try {
    for (let p = 0; p < SLOTS; p++) sectors.push(await image.read(p * SLOT_SECTORS * 512, 512));
  } finally {
    await image.close();
  }
  assert.deepEqual(slotsOf((off) => sectors[off / (SLOT_SECTORS * 512)]), want, "Xenon's VHD library reads every record");
  const raw = join(lab.dir, 'records.raw');
  await promisify(execFile)('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhdFile, raw]);
  const bytes = readFileSync(raw);
  assert.deepEqual(slotsOf((off) => bytes.subarray(off, off + 512)), want, "QEMU's VHD reader finds every record");
});
