/**
 * A daemon restarted with HA on keeps its guests (real QEMU guests, three
 * daemons in network namespaces):
 *  1. a member's daemon stopped cleanly (SIGTERM) and started again after more
 *     than a fencing deadline: the new daemon adopts the running fencer (which
 *     kept the lease alive meanwhile) and the lease — its QEMU guest is the same
 *     process, the VM was not restarted elsewhere, its liveness key and run lock
 *     are on the same lease;
 *     the master's daemon restarted cleanly stays master (same lease and term);
 *  2. that member's daemon SIGKILLed and not restarted (no clean hand-over): its fencer
 *     kills the guest at its deadline, before a survivor restarts the VM.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeTestGuestVm } from '../helpers/guest.ts';
import { allLive, hostRefOf, PoolLab, qemuPids, until, type LabHost } from '../pool/helpers.ts';
import { alive } from './helpers.ts';

const QEMU = ['--backend', 'qemu', '--accel', 'tcg', '--network', 'none'];
const lab = new PoolLab();
let hosts: LabHost[] = [];

before(async () => {
  hosts = await lab.startPool(['r1', 'r2', 'r3'], QEMU);
});
after(() => lab.teardown());

const haFile = (h: LabHost, name: string): string => readFileSync(join(h.dataDir, 'ha', name), 'utf8').trim();

/** The lease a key is bound to, read through etcd's JSON gateway from the pool's network (undefined: no such key). */
async function leaseOf(key: string): Promise<string | undefined> {
  const body = JSON.stringify({ key: Buffer.from(key).toString('base64') });
  const r = await lab.runInSwitch('curl', ['-sf', '-m', '3', '-X', 'POST', `http://${hosts[0].ip}:2379/v3/kv/range`, '-d', body]);
  if (r.code !== 0) throw new Error(`etcd range failed: ${r.stderr}`);
  const kvs = (JSON.parse(r.stdout) as { kvs?: { lease?: string }[] }).kvs;
  return kvs?.[0] ? (kvs[0].lease ?? '0') : undefined;
}

test('HA on: a daemon restarted cleanly keeps its guests, lease and run locks; a killed daemon is fenced', { timeout: 420_000 }, async (t) => {
  try {
    await scenario(t);
  } catch (e) {
    for (const h of hosts) process.stderr.write(`--- ${h.name}\n${h.daemon.output().split('\n').filter((l) => /"subsystem":"(ha|pool)"|fencer|xenon:|"level":[45]0/.test(l)).slice(-40).join('\n')}\n`);
    throw e;
  }
});

async function scenario(t: { diagnostic(msg: string): void }): Promise<void> {
  const [r1, r2] = hosts;
  let c = await r1.client();
  await allLive(c);
  const ref2 = await hostRefOf(c, r2);
  const pool = (await c.api.pool.get_all())[0];
  const poolUuid = await c.api.pool.get_uuid(pool);
  const host2 = await c.api.host.get_uuid(ref2);
  const vm = await makeTestGuestVm(c, 'protected');
  const uuid = await c.api.VM.get_uuid(vm);
  await c.api.VM.set_ha_restart_priority(vm, 'restart');
  await until('every host to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 3, 60_000);
  await c.api.pool.enable_ha([], {});
  await c.api.VM.start_on(vm, ref2, false, false);
  const [guest] = await until('the guest on r2', () => (qemuPids(r2, uuid).length === 1 ? qemuPids(r2, uuid) : undefined), 30_000);
  const lease = haFile(r2, 'lease');
  const livenessKey = `/xenon/${poolUuid}/hosts/${host2}`;
  const lockKey = `/xenon/${poolUuid}/vms/${uuid}`;
  await until('r2 to hold the run lock', async () => (await leaseOf(lockKey)) === lease, 30_000);
  assert.equal(await leaseOf(livenessKey), lease);
  const fencer = Number(haFile(r2, 'fencer.pid'));
  assert.ok(alive(fencer));

  // 1. a clean stop, away longer than a fencing deadline (4 s), and a start
  const stopping = Date.now();
  r2.daemon.proc.kill('SIGTERM');
  await r2.daemon.exited;
  const stopMs = Date.now() - stopping;
  await new Promise((r) => setTimeout(r, 8000));
  assert.deepEqual(qemuPids(r2, uuid), [guest], 'the guest outlived the fencing deadline while no daemon ran');
  const starting = Date.now();
  await lab.respawn(r2);
  const startMs = Date.now() - starting;
  await until('r2 to resume HA', () => r2.daemon.output().includes('HA lease kept across the restart'), 60_000, 20);
  t.diagnostic(`SIGTERM → daemon gone after ${stopMs} ms; xenon server started again in ${startMs} ms, HA resumed on its old lease after ${Date.now() - starting} ms`);
  assert.equal(haFile(r2, 'lease'), lease, 'the same lease');
  assert.equal(Number(haFile(r2, 'fencer.pid')), fencer, 'the running fencer was adopted');
  assert.ok(r2.daemon.output().includes(`fencer ${fencer} adopted`));
  await new Promise((r) => setTimeout(r, 6000)); // past any deadline the old daemon left
  assert.deepEqual(qemuPids(r2, uuid), [guest], 'the same QEMU process still runs the guest');
  for (const h of hosts.filter((x) => x !== r2)) assert.deepEqual(qemuPids(h, uuid), [], `${h.name} did not start the VM`);
  assert.equal(await leaseOf(livenessKey), lease, 'the liveness key is on the same lease');
  assert.equal(await leaseOf(lockKey), lease, 'the run lock is on the same lease');
  const rec = await c.api.VM.get_record(vm);
  assert.equal(rec.power_state, 'Running');
  assert.equal(rec.resident_on, ref2);

  // the master restarted cleanly: the same term (its master key is on its kept lease), no failover, writes go on
  const masterLease = haFile(r1, 'lease');
  const masterKey = `/xenon/${poolUuid}/master`;
  assert.equal(await leaseOf(masterKey), masterLease);
  r1.daemon.proc.kill('SIGTERM');
  await r1.daemon.exited;
  await new Promise((r) => setTimeout(r, 6000));
  assert.equal(await leaseOf(masterKey), masterLease, 'no member took the master key while the master daemon was away');
  await lab.respawn(r1);
  await until('r1 to resume HA', () => r1.daemon.output().includes('HA lease kept across the restart'), 60_000);
  c = await r1.client();
  await c.api.VM.set_name_description(vm, 'written after the master restarted');
  assert.equal(await leaseOf(masterKey), masterLease);
  for (const h of hosts.slice(1)) assert.ok(!h.daemon.output().includes('elected HA master'), `${h.name} did not take over`);
  assert.deepEqual(qemuPids(r2, uuid), [guest]);

  // 2. a crash: the daemon SIGKILLed and not restarted — its fencer kills the guest at the deadline
  const killed = Date.now();
  r2.daemon.proc.kill('SIGKILL');
  let fencedAt = 0;
  let restartedAt = 0;
  const survivors = hosts.filter((h) => h !== r2);
  await until('the guest to run on a survivor', () => {
    const now = Date.now();
    if (!fencedAt && qemuPids(r2, uuid).length === 0) fencedAt = now;
    if (!restartedAt && survivors.some((h) => qemuPids(h, uuid).length > 0)) restartedAt = now;
    return fencedAt > 0 && restartedAt > 0;
  }, 60_000, 20);
  t.diagnostic(`daemon SIGKILLed → its guest fenced after ${fencedAt - killed} ms, started on a survivor after ${restartedAt - killed} ms`);
  assert.ok(fencedAt <= restartedAt, 'the guest was killed before a survivor started it');
  assert.ok(fencedAt - killed <= 6000, `fenced ${fencedAt - killed} ms after the kill`);
  await until('the VM recorded running on a survivor', async () => {
    const v = await c.api.VM.get_record(vm);
    return v.power_state === 'Running' && v.resident_on !== ref2;
  }, 30_000);
  await c.api.VM.hard_shutdown(vm);
}
