/**
 * Pool membership with three daemons in three network namespaces (simulated
 * guests): join with xapi's checks, the master's database replicated to
 * members, HOST_IS_SLAVE from members, a joining host's halted VM carried
 * into the pool, eject.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { failsWith, PoolLab, ROOT_PASSWORD, type LabHost } from './helpers.ts';

const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;

before(async () => {
  await lab.setup();
  [h1, h2, h3] = await Promise.all([lab.addHost('h1'), lab.addHost('h2'), lab.addHost('h3')]);
});
after(() => lab.teardown());

/** The rows of a class in a daemon's database file (a member's replica is not served over the API). */
function replicaUuids(host: LabHost, table: string): string[] {
  const db = new Database(join(host.dataDir, 'xenon.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare(`SELECT uuid FROM "${table}"`).all() as { uuid: string }[]).map((r) => r.uuid).sort();
  } finally {
    db.close();
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('three hosts become one pool; members answer HOST_IS_SLAVE and follow the master', async () => {
  const master = await h1.client();
  const masterHost = (await master.api.host.get_all())[0];

  // xapi's checks, before anything changes
  const c2 = await h2.client();
  await failsWith(c2.api.pool.join(h1.ip, 'root', 'wrong'), 'SESSION_AUTHENTICATION_FAILED');
  await failsWith(c2.api.pool.join('10.1.1.1', 'root', ROOT_PASSWORD), 'JOINING_HOST_CONNECTION_FAILED');

  // h3 has a VM: running, it may not join; halted, it comes along
  const c3 = await h3.client();
  const template = (await c3.api.VM.get_all_records_where('field "is_a_template" = "true"'));
  const [tref] = Object.keys(template);
  const vm = await c3.api.VM.clone(tref, 'carried');
  await c3.api.VM.set_is_a_template(vm, false);
  await c3.api.VM.start(vm, false, false);
  await failsWith(c3.api.pool.join(h1.ip, 'root', ROOT_PASSWORD), 'JOINING_HOST_CANNOT_HAVE_RUNNING_VMS');
  await c3.api.VM.hard_shutdown(vm);
  const vmUuid = await c3.api.VM.get_uuid(vm);
  const h3HostUuid = await c3.api.host.get_uuid((await c3.api.host.get_all())[0]);

  await c2.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h2);
  await c3.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h3);

  const hosts = await master.api.host.get_all();
  assert.equal(hosts.length, 3);
  const pool = (await master.api.pool.get_all())[0];
  assert.equal(await master.api.pool.get_master(pool), masterHost);
  const byUuid = await master.api.host.get_by_uuid(h3HostUuid);
  assert.equal(await master.api.host.get_address(byUuid), h3.ip, 'the joining host keeps its record');
  const carried = await master.api.VM.get_by_uuid(vmUuid);
  assert.equal(await master.api.VM.get_power_state(carried), 'Halted');
  assert.equal((await master.api.VM.get_all_records_where('field "is_control_domain" = "true"') && Object.keys(await master.api.VM.get_all_records_where('field "is_control_domain" = "true"')).length), 3);

  // members: logins and calls go to the master
  const params = await failsWith(h2.anonymous().login('root', ROOT_PASSWORD), 'HOST_IS_SLAVE');
  assert.deepEqual(params, [h1.ip]);
  await failsWith(h3.anonymous().login('root', ROOT_PASSWORD), 'HOST_IS_SLAVE');
  await failsWith(c2.api.host.get_all(), 'HOST_IS_SLAVE');

  // members follow the master's database
  await master.api.pool.set_name_label(pool, 'lab pool');
  const poolUuid = await master.api.pool.get_uuid(pool);
  await until('the replicas to hold every host', () => replicaUuids(h2, 'host').length === 3 && replicaUuids(h3, 'host').length === 3);
  assert.deepEqual(replicaUuids(h2, 'pool'), [poolUuid]);
  const net = await master.api.network.create({ name_label: 'replicated', name_description: '', MTU: 1500, other_config: {} } as never);
  const netUuid = await master.api.network.get_uuid(net);
  await until('a new network on the members', () => replicaUuids(h2, 'network').includes(netUuid) && replicaUuids(h3, 'network').includes(netUuid));
  await master.api.network.destroy(net);
  await until('its removal on the members', () => !replicaUuids(h2, 'network').includes(netUuid));

  // a member cannot join elsewhere, the master cannot be ejected
  await failsWith(master.api.pool.eject(masterHost), 'OPERATION_NOT_ALLOWED');
});

test('eject: the member leaves, its records go, it comes back as a pool of one', async () => {
  const master = await h1.client();
  const h3Host = (await master.api.host.get_all_records_where(`field "address" = "${h3.ip}"`));
  const [h3Ref] = Object.keys(h3Host);
  await master.api.pool.eject(h3Ref);
  await lab.restarted(h3, 2);
  assert.equal((await master.api.host.get_all()).length, 2);
  await failsWith(master.api.host.get_record(h3Ref), 'HANDLE_INVALID');
  const alone = await h3.client();
  const hosts = await alone.api.host.get_all();
  assert.equal(hosts.length, 1);
  assert.notEqual(await alone.api.host.get_uuid(hosts[0]), h3Host[h3Ref].uuid, 'a fresh pool of one');
  await until('the member replicas to forget it', () => replicaUuids(h2, 'host').length === 2);
});
