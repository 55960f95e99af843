/**
 * HA with real guests (QEMU under TCG) in a pool of three daemons in network
 * namespaces, the protected VM's disk a qcow2 image on the shared SR, so
 * QEMU's image lock refuses a second copy of the guest:
 *  1. the master's network is cut: its fencer kills its guest before a
 *     survivor, elected master, starts the VM again (the new QEMU gets the
 *     image lock); the old master, back on the network, becomes a member;
 *  2. the master host is killed (daemon, etcd member, fencer, guests) with the
 *     protected VM on it: a new master, and the guest up on a survivor within 15 s.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeTestGuestVm, MARKER } from '../helpers/guest.ts';
import { allLive, hostRefOf, masterNamedBy, PoolLab, qemuPids, until, type LabHost } from '../pool/helpers.ts';

const QEMU = ['--backend', 'qemu', '--accel', 'tcg', '--network', 'none'];
const lab = new PoolLab();
let hosts: LabHost[] = [];

before(async () => {
  hosts = await lab.startPool(['q1', 'q2', 'q3'], QEMU);
});
after(() => lab.teardown());

/** A host dies: its daemon, and every process of its own — etcd member, fencer, guests (they run in its run directory). */
function killHost(h: LabHost): void {
  h.daemon.proc.kill('SIGKILL');
  const mine = `${h.dataDir}/`;
  for (const n of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const cwd = `${readlinkSync(`/proc/${n}/cwd`)}/`;
      if (cwd.startsWith(mine) || readFileSync(`/proc/${n}/cmdline`, 'utf8').includes(mine)) process.kill(Number(n), 'SIGKILL');
    } catch {
      // gone, or not ours to read
    }
  }
}

/** Whether some process holds QEMU's write lock on an image (qemu-img refuses to open it then). */
function locked(image: string): boolean {
  try {
    execFileSync('qemu-img', ['info', image], { stdio: 'pipe' });
    return false;
  } catch (e) {
    return /lock/i.test(String((e as { stderr?: Buffer }).stderr ?? ''));
  }
}

async function currentMaster(): Promise<LabHost> {
  return until('a master', async () => {
    for (const h of hosts) if ((await masterNamedBy(h)) === 'master') return h;
    return undefined;
  }, 60_000);
}

test('HA with real guests: a cut-off master fences its guest before a survivor restarts it; a killed master is replaced and its guest runs again within 15 s', { timeout: 420_000 }, async (t) => {
  try {
    await scenario(t);
  } catch (e) {
    // what the daemons said, for the failure's report
    for (const h of hosts) process.stderr.write(`--- ${h.name}\n${h.daemon.output().split('\n').filter((l) => /"subsystem":"(ha|pool|replica)"|xenon:|"level":[45]0/.test(l)).slice(-40).join('\n')}\n`);
    throw e;
  }
});

async function scenario(t: { diagnostic(msg: string): void }): Promise<void> {
  const [q1] = hosts;
  let c = await q1.client();
  await allLive(c);
  const refs = new Map<LabHost, string>();
  for (const h of hosts) refs.set(h, await hostRefOf(c, h));
  const pool = (await c.api.pool.get_all())[0];
  const sr = await c.api.SR.create(refs.get(q1)!, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  const vm = await makeTestGuestVm(c, 'protected');
  const disk = await c.api.VDI.create({ SR: sr, virtual_size: 8 * 1024 * 1024, name_label: 'protected', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  const image = join(lab.dir, 'shared', await c.api.SR.get_uuid(sr), `${await c.api.VDI.get_uuid(disk)}.qcow2`);
  const uuid = await c.api.VM.get_uuid(vm);
  await c.api.VM.set_ha_restart_priority(vm, 'restart');
  await until('every host to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 3, 60_000);
  await c.api.pool.enable_ha([], {});
  await c.api.VM.start_on(vm, refs.get(q1)!, false, false);
  await until('the guest to boot', () => readFileSync(join(q1.dataDir, 'run', 'qemu', uuid, 'serial.log'), 'utf8').includes(MARKER), 120_000);
  assert.ok(locked(image), 'the running guest holds the image lock');
  assert.equal(qemuPids(q1, uuid).length, 1, 'the guest runs on q1');
  await new Promise((r) => setTimeout(r, 2000)); // q1 takes the run lock

  // 1. the master's link is cut
  const cut = Date.now();
  await lab.setLink(q1, false);
  let fencedAt = 0;
  let restartedAt = 0;
  const survivors = hosts.filter((h) => h !== q1);
  await until('the guest to run on a survivor', () => {
    const now = Date.now();
    if (!fencedAt && qemuPids(q1, uuid).length === 0) fencedAt = now;
    if (!restartedAt && survivors.some((h) => qemuPids(h, uuid).length > 0)) restartedAt = now;
    return fencedAt > 0 && restartedAt > 0;
  }, 60_000, 20);
  t.diagnostic(`master cut off → its guest fenced after ${fencedAt - cut} ms, started on a survivor after ${restartedAt - cut} ms`);
  assert.ok(fencedAt <= restartedAt, 'the cut-off master killed its guest before a survivor started it');
  const master1 = await currentMaster();
  assert.notEqual(master1, q1);
  c = await master1.client();
  await until('the VM recorded running on a survivor', async () => {
    const rec = await c.api.VM.get_record(vm);
    return rec.power_state === 'Running' && rec.resident_on !== refs.get(q1);
  }, 30_000);
  assert.ok(locked(image), 'the restarted guest holds the image lock (so no other copy could run)');
  // back on the network, the old master is fenced and follows the new one
  await lab.setLink(q1, true);
  await until('q1 to follow the new master', async () => (await masterNamedBy(q1)) === master1.ip, 60_000);
  assert.equal(qemuPids(q1, uuid).length, 0);

  // 2. the protected VM moves to the master, and the master host dies with it
  if ((await c.api.VM.get_resident_on(vm)) !== refs.get(master1)) await c.api.VM.pool_migrate(vm, refs.get(master1)!, { live: 'true' });
  await new Promise((r) => setTimeout(r, 2000)); // the run lock follows the VM
  const killed = Date.now();
  killHost(master1);
  const rest = hosts.filter((h) => h !== master1);
  const up = await until('the guest to run on a survivor', () => rest.find((h) => qemuPids(h, uuid).length > 0), 30_000, 20);
  const tookGuest = Date.now() - killed;
  const master2 = await until('a new master', async () => {
    for (const h of rest) if ((await masterNamedBy(h)) === 'master') return h;
    return undefined;
  }, 30_000);
  t.diagnostic(`master host killed → the guest running on ${up.name} after ${tookGuest} ms, ${master2.name} master`);
  assert.ok(tookGuest <= 15_000, `the guest ran again after ${tookGuest} ms`);
  c = await master2.client();
  assert.equal(await c.api.pool.get_master(pool), refs.get(master2));
  assert.equal(await c.api.VM.get_resident_on(vm), refs.get(up));
  await until('the guest to boot again', () => readFileSync(join(up.dataDir, 'run', 'qemu', uuid, 'serial.log'), 'utf8').includes(MARKER), 120_000);
  await c.api.VM.hard_shutdown(vm);
  await c.api.pool.disable_ha();
}
