/**
 * Changing the pool master (three daemons in network namespaces, simulated
 * guests): pool.designate_new_master moves the master role to a member while
 * a VM keeps running on the third host, and the old master becomes a member;
 * then the new master dies, a member takes over with a slave-local session
 * and pool.emergency_transition_to_master, pool.recover_slaves brings the
 * other hosts (the old master too, once it is back) under it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { XenApiClient } from '../../src/client/client.ts';
import { XE_BIN, tempHome } from '../cli/xe-helpers.ts';
import { allLive, failsWith, hostRefOf, masterNamedBy, PoolLab, ROOT_PASSWORD, until, type LabHost } from './helpers.ts';

const home = tempHome();

const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;

before(async () => {
  [h1, h2, h3] = await lab.startPool(['h1', 'h2', 'h3']);
});
after(() => lab.teardown());




test('designate_new_master: a member becomes master, the others follow it, the old master becomes a member; a running VM is untouched', { timeout: 240_000 }, async () => {
  const c1 = await h1.client();
  await allLive(c1);
  const [r1, r2, r3] = [await hostRefOf(c1, h1), await hostRefOf(c1, h2), await hostRefOf(c1, h3)];
  const pool = (await c1.api.pool.get_all())[0];
  const template = Object.keys(await c1.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  const vm = await c1.api.VM.clone(template, 'stays-running');
  await c1.api.VM.set_is_a_template(vm, false);
  await c1.api.VM.start_on(vm, r3, false, false);
  const vmCount = (await c1.api.VM.get_all()).length;

  await c1.api.pool.designate_new_master(r2);
  await lab.restarted(h2, 2); // once at join, once to become master
  await lab.restarted(h1, 1);
  assert.equal(await until('h2 to take logins', async () => ((await masterNamedBy(h2)) === 'master' ? true : undefined)), true);
  await until('h1 and h3 to name h2 as master', async () => (await masterNamedBy(h1)) === h2.ip && (await masterNamedBy(h3)) === h2.ip);

  const c2 = await h2.client();
  assert.equal(await c2.api.pool.get_master(pool), r2);
  assert.equal((await c2.api.VM.get_all()).length, vmCount, 'the new master has the whole database');
  assert.equal(await c2.api.VM.get_resident_on(vm), r3);
  assert.equal(await c2.api.VM.get_power_state(vm), 'Running');
  await allLive(c2);
  // the new master reaches both members, the old master among them, with the pinned certificates of the pool's bundle
  await c2.api.VM.hard_shutdown(vm);
  await c2.api.VM.start_on(vm, r1, false, false);
  assert.equal(await c2.api.VM.get_resident_on(vm), r1);
  await c2.api.VM.hard_shutdown(vm);
  // designating the master itself does nothing
  await c2.api.pool.designate_new_master(r2);
  assert.equal(await c2.api.pool.get_master(pool), r2);
});

test('the master dies: a member takes over in an emergency and recovers the others, the old master too when it is back', { timeout: 240_000 }, async () => {
  const c2 = await h2.client();
  const [r1, r2, r3] = [await hostRefOf(c2, h1), await hostRefOf(c2, h2), await hostRefOf(c2, h3)];
  const pool = (await c2.api.pool.get_all())[0];
  const marker = await c2.api.VM.clone(Object.keys(await c2.api.VM.get_all_records_where('field "is_default_template" = "true"'))[0], 'made-before-the-crash');
  await until('h3 to hold the last write', async () => {
    // a member answers nothing from its replica over the API: its slave-local session cannot read records either
    return (await masterNamedBy(h3)) === h2.ip;
  });
  await new Promise((r) => setTimeout(r, 1000)); // replication is a long poll: the write reaches h3 at once, this is slack

  h2.daemon.proc.kill('SIGKILL');
  await h2.daemon.exited;

  // on a member, only the emergency calls answer; a normal login is refused
  const local = h3.anonymous();
  await failsWith(local.login('root', ROOT_PASSWORD), 'HOST_IS_SLAVE');
  await failsWith(local.call('session.slave_local_login_with_password', ['root', 'wrong']), 'SESSION_AUTHENTICATION_FAILED');
  const session = String(await local.call('session.slave_local_login_with_password', ['root', ROOT_PASSWORD]));
  await failsWith(local.call('VM.get_all', [session]), 'HOST_IS_SLAVE');
  await failsWith(local.call('pool.emergency_reset_master', [session, '10.1.1.1']), 'CANNOT_CONTACT_HOST');
  await local.call('session.local_logout', [session]);
  await failsWith(local.call('pool.emergency_transition_to_master', [session]), 'SESSION_INVALID');
  local.close();
  // as an admin does it: xe on the member, which logs in there alone
  const xe = (h: LabHost, ...args: string[]) =>
    lab.runInSwitch('env', [`HOME=${home}`, process.execPath, XE_BIN, '-s', h.ip, '--trust-on-first-use', '-u', 'root', '-pw', ROOT_PASSWORD, ...args]);
  const transition = await xe(h3, 'pool-emergency-transition-to-master');
  assert.equal(transition.code, 0, transition.stderr);
  await lab.restarted(h3, 2);

  const c3 = await h3.client();
  assert.equal(await c3.api.pool.get_master(pool), r3);
  assert.equal(await c3.api.VM.get_name_label(marker), 'made-before-the-crash', 'the replica held the last write');
  // h2 is dead: only h1 is recovered
  const recovered = await until('h3 to serve xe', async () => {
    const r = await xe(h3, 'pool-recover-slaves');
    return r.code === 0 ? r : undefined;
  });
  assert.deepEqual(recovered.stdout.trim().split('\n'), [await c3.api.host.get_uuid(r1)]);
  await until('h1 to name h3 as master', async () => (await masterNamedBy(h1)) === h3.ip);

  // the old master comes back believing it is master; recover_slaves makes it a member of h3
  await lab.respawn(h2);
  assert.equal(await masterNamedBy(h2), 'master');
  assert.deepEqual((await c3.api.pool.recover_slaves()).sort(), [r1, r2].sort());
  await until('h2 to name h3 as master', async () => (await masterNamedBy(h2)) === h3.ip);
  await allLive(c3);
  assert.equal(await c3.api.host.get_enabled(r2), true);
});
