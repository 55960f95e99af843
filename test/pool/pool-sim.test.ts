/**
 * A pool of three daemons in three network namespaces (simulated guests):
 * join with xapi's checks, the master's database replicated to members,
 * HOST_IS_SLAVE from members, a joining host's halted VM carried into the
 * pool, a shared SR plugged everywhere, placement and VMs run on members
 * through the host interface, eject.
 */
import { after, before, test } from 'node:test';
import http from 'node:http';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { allLive, failsWith, hostRefOf, PoolLab, ROOT_PASSWORD, type LabHost } from './helpers.ts';

const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;
/** The VM h3 brought along when it joined. */
let carriedUuid = '';

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
  // its disk on h3's local storage anchors it there
  const [local] = Object.keys(await c3.api.SR.get_all_records_where('field "type" = "ext"'));
  const disk = await c3.api.VDI.create({ SR: local, virtual_size: 4 * 1024 * 1024, name_label: 'anchored', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  await c3.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  const vmUuid = await c3.api.VM.get_uuid(vm);
  carriedUuid = vmUuid;
  const h3HostUuid = await c3.api.host.get_uuid((await c3.api.host.get_all())[0]);

  await c2.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h2);
  await c3.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h3);

  const hosts = await master.api.host.get_all();
  assert.equal(hosts.length, 3);
  await allLive(master);
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
  // imports and exports, too, belong to the master
  const upload = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({ socketPath: h2.socket, path: `/import_raw_vdi?session_id=${c2.session}&vdi=OpaqueRef:none`, method: 'PUT', headers: { 'Content-Length': 0 } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
  assert.match(upload.body, /^HOST_IS_SLAVE/, `${upload.status} ${upload.body}`);

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

/** Whether the simulator of a host runs a domain (its state file, in the host's data directory, written shortly after a change). */
function runsOn(host: LabHost, vmUuid: string): boolean {
  const file = join(host.dataDir, 'sim-domains.json');
  return existsSync(file) && readFileSync(file, 'utf8').includes(vmUuid);
}

test('Xen Orchestra\'s xen-api, pointed at a member, follows HOST_IS_SLAVE to the master', async () => {
  // xen-api retries a login that answers HOST_IS_SLAVE at the address it names (over the hosts' network: run in the switch namespace)
  const script = `
    import { createClient } from 'xen-api';
    const xapi = createClient({ url: 'https://${h2.ip}', allowUnauthorized: true, auth: { user: 'root', password: '${ROOT_PASSWORD}' } });
    await xapi.connect();
    const hosts = await xapi.call('host.get_all_records');
    console.log(JSON.stringify({ url: xapi._url.hostname, hosts: Object.values(hosts).map((h) => h.address).sort() }));
    await xapi.disconnect();
    process.exit(0);
  `;
  const r = await lab.runInSwitch(process.execPath, ['--input-type=module', '-e', script]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { url: string; hosts: string[] };
  assert.equal(out.url, h1.ip, 'the client moved to the master');
  assert.deepEqual(out.hosts, [h1.ip, h2.ip, h3.ip].sort());
});

test('a shared SR is plugged on every host; placement and VMs on members', async () => {
  const master = await h1.client();
  const [r1, r2, r3] = [await hostRefOf(master, h1), await hostRefOf(master, h2), await hostRefOf(master, h3)];
  const sr = await master.api.SR.create(r1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  const pbds = await master.api.SR.get_PBDs(sr);
  assert.equal(pbds.length, 3);
  for (const p of pbds) assert.equal(await master.api.PBD.get_currently_attached(p), true);

  // an agile VM (its disk on the shared SR) may run anywhere
  const template = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  const agile = await master.api.VM.clone(template, 'agile');
  await master.api.VM.set_is_a_template(agile, false);
  const disk = await master.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'agile', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  await master.api.VBD.create({ VM: agile, VDI: disk, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  assert.deepEqual((await master.api.VM.get_possible_hosts(agile)).sort(), [r1, r2, r3].sort());
  await master.api.VM.start_on(agile, r2, false, false);
  assert.equal(await master.api.VM.get_resident_on(agile), r2);
  assert.equal(await master.api.VM.get_power_state(agile), 'Running');
  const agileUuid = await master.api.VM.get_uuid(agile);
  await until('the domain to run on h2', () => runsOn(h2, agileUuid));
  assert.ok(!runsOn(h1, agileUuid) && !runsOn(h3, agileUuid));
  await master.api.VM.hard_shutdown(agile);
  await until('the domain to be gone from h2', () => !runsOn(h2, agileUuid));

  // the carried VM's disk is on h3's local SR: only h3 will do
  const anchored = await master.api.VM.get_by_uuid(carriedUuid);
  const [vbd] = await master.api.VM.get_VBDs(anchored);
  const localSr = await master.api.VDI.get_SR(await master.api.VBD.get_VDI(vbd));
  assert.deepEqual(await master.api.VM.get_possible_hosts(anchored), [r3]);
  assert.deepEqual(await failsWith(master.api.VM.assert_can_boot_here(anchored, r1), 'VM_REQUIRES_SR'), [anchored, localSr]);
  await master.api.VM.start(anchored, false, false);
  assert.equal(await master.api.VM.get_resident_on(anchored), r3);
  await until('the anchored domain to run on h3', () => runsOn(h3, carriedUuid));
  await master.api.VM.hard_shutdown(anchored);

  // a disabled host takes no VMs; memory decides too
  await master.api.host.disable(r2);
  await failsWith(master.api.VM.start_on(agile, r2, false, false), 'HOST_DISABLED');
  assert.deepEqual((await master.api.VM.get_possible_hosts(agile)).sort(), [r1, r3].sort());
  await master.api.host.enable(r2);
  await master.api.VM.set_memory_limits(agile, 2 ** 40, 2 ** 40, 2 ** 40, 2 ** 40);
  assert.deepEqual(await master.api.VM.get_possible_hosts(agile), []);
  await failsWith(master.api.VM.start(agile, false, false), 'HOST_NOT_ENOUGH_FREE_MEMORY');
});

test('pool_migrate moves an agile VM between members; an anchored one refuses; evacuation', async () => {
  const master = await h1.client();
  const [r1, r2, r3] = [await hostRefOf(master, h1), await hostRefOf(master, h2), await hostRefOf(master, h3)];
  const [sr] = await master.api.SR.get_by_name_label('shared');
  const template = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  /** An agile VM: its disk on the shared SR, qcow2 or (VDI.create's default there) VHD, or a given VDI. */
  const makeAgile = async (name: string, disk?: string, format: 'qcow2' | 'vhd' = 'qcow2'): Promise<string> => {
    const vm = await master.api.VM.clone(template, name);
    await master.api.VM.set_is_a_template(vm, false);
    const vdi = disk ?? (await master.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: format === 'qcow2' ? { type: 'qcow2' } : {} } as never));
    await master.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
    return vm;
  };
  const a = await makeAgile('mover');
  const aUuid = await master.api.VM.get_uuid(a);
  await master.api.VM.start_on(a, r2, false, false);
  assert.ok((await master.api.VM.get_allowed_operations(a)).includes('pool_migrate'));
  await master.api.VM.pool_migrate(a, r3, { live: 'true' });
  assert.equal(await master.api.VM.get_resident_on(a), r3);
  assert.equal(await master.api.VM.get_power_state(a), 'Running');
  await until('the domain to move to h3', () => runsOn(h3, aUuid) && !runsOn(h2, aUuid));
  await master.api.VM.pool_migrate(a, r1, { live: 'true' });
  assert.equal(await master.api.VM.get_resident_on(a), r1);
  await until('the domain to move to h1', () => runsOn(h1, aUuid) && !runsOn(h3, aUuid));

  // the carried VM's disk is on h3's local SR: it cannot leave h3
  const anchored = await master.api.VM.get_by_uuid(carriedUuid);
  await master.api.VM.start(anchored, false, false);
  const [vbd] = await master.api.VM.get_VBDs(anchored);
  const localSr = await master.api.VDI.get_SR(await master.api.VBD.get_VDI(vbd));
  assert.deepEqual(await failsWith(master.api.VM.pool_migrate(anchored, r2, {}), 'VM_REQUIRES_SR'), [anchored, localSr]);
  assert.equal(await master.api.VM.get_resident_on(anchored), r3);

  // a VHD disk served by the members' NBD exports moves (standby on the destination, opened once the source let go) ...
  const v = await makeAgile('vhd-mover', undefined, 'vhd');
  await master.api.VM.start_on(v, r2, false, false);
  await master.api.VM.pool_migrate(v, r3, { live: 'true' });
  assert.equal(await master.api.VM.get_resident_on(v), r3);
  await master.api.VM.hard_shutdown(v);
  // ... but not one another running VM uses too: letting go of it on the source would close that VM's export
  const shared = await master.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'shared', type: 'user', sharable: true, read_only: false, other_config: {}, sm_config: {} } as never);
  const [s1, s2] = [await makeAgile('sharer-1', shared), await makeAgile('sharer-2', shared)];
  for (const vm of [s1, s2]) await master.api.VM.start_on(vm, r2, false, false);
  const why = await failsWith(master.api.VM.pool_migrate(s1, r3, { live: 'true' }), 'VM_MIGRATE_FAILED');
  assert.match(String(why[3]), /another running VM/);
  assert.equal(await master.api.VM.get_resident_on(s1), r2);
  for (const vm of [s1, s2]) await master.api.VM.hard_shutdown(vm);

  // evacuating h3: the agile VM goes, the anchored one says why it cannot
  const b = await makeAgile('evacuee', undefined, 'vhd');
  await master.api.VM.start_on(b, r3, false, false);
  assert.deepEqual(await master.api.host.get_vms_which_prevent_evacuation(r3), { [anchored]: ['VM_REQUIRES_SR', anchored, localSr] });
  await failsWith(master.api.host.evacuate(r3), 'VM_REQUIRES_SR');
  await master.api.VM.hard_shutdown(anchored);
  await master.api.host.disable(r3);
  await master.api.host.evacuate(r3);
  assert.notEqual(await master.api.VM.get_resident_on(b), r3);
  assert.equal(await master.api.VM.get_power_state(b), 'Running');
  await master.api.host.enable(r3);
  for (const vm of [a, b]) await master.api.VM.hard_shutdown(vm);
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

test('a member that stops answering is not live: placement leaves it out', async () => {
  const master = await h1.client();
  const [r2] = Object.keys(await master.api.host.get_all_records_where(`field "address" = "${h2.ip}"`));
  const vm = await master.api.VM.get_by_name_label('agile').then((r) => r[0]);
  await master.api.VM.set_memory_limits(vm, 256 * 2 ** 20, 256 * 2 ** 20, 256 * 2 ** 20, 256 * 2 ** 20);
  assert.ok((await master.api.VM.get_possible_hosts(vm)).includes(r2));
  h2.daemon.proc.kill('SIGTERM');
  await h2.daemon.exited;
  const metrics = await master.api.host.get_metrics(r2);
  await until('the member to be seen dead', async () => !(await master.api.host_metrics.get_live(metrics)));
  assert.ok(!(await master.api.VM.get_possible_hosts(vm)).includes(r2));
  await failsWith(master.api.VM.start_on(vm, r2, false, false), 'HOST_NOT_LIVE');
});
