/** One test per family of generic messages derived from the datamodel. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';
import type { Ref } from '../../src/client/client.ts';

let t: TestServer;
let net: Ref<'network'>;
before(async () => {
  t = await startTestServer();
  net = await t.client.api.network.create({ name_label: 'generic-net', name_description: 'd', MTU: 1500, other_config: { a: '1' }, tags: [] } as never);
});
after(() => t.close());

test('get_all and get_all_records agree', async () => {
  const refs = await t.client.api.VM.get_all();
  const recs = await t.client.api.VM.get_all_records();
  assert.deepEqual(Object.keys(recs).sort(), [...refs].sort());
  assert.ok(Object.values(recs).some((v) => v.is_a_template && v.name_label === 'Debian Bookworm 12'));
  assert.ok(Object.values(recs).some((v) => v.is_control_domain));
});

test('every record of a class carries the same keys', async () => {
  const recs = Object.values(await t.client.api.VM.get_all_records());
  const keys = Object.keys(recs[0]).sort().join();
  for (const r of recs) assert.equal(Object.keys(r).sort().join(), keys);
});

test('get_record, get_by_uuid and get_<field>', async () => {
  const rec = await t.client.api.network.get_record(net);
  assert.equal(rec.name_label, 'generic-net');
  assert.equal(await t.client.api.network.get_by_uuid(rec.uuid), net);
  assert.equal(await t.client.api.network.get_MTU(net), 1500);
  assert.deepEqual(await t.client.api.network.get_other_config(net), { a: '1' });
});

test('get_by_name_label finds every object with that label', async () => {
  const other = await t.client.api.network.create({ name_label: 'generic-net', MTU: 1500 } as never);
  const found = await t.client.api.network.get_by_name_label('generic-net');
  assert.deepEqual([...found].sort(), [net, other].sort());
  assert.deepEqual(await t.client.api.network.get_by_name_label('nobody'), []);
  await t.client.api.network.destroy(other);
});

test('set_<field> changes RW fields; RO fields have no setter', async () => {
  await t.client.api.network.set_name_description(net, 'changed');
  assert.equal(await t.client.api.network.get_name_description(net), 'changed');
  await failsWith(t.client.call('network.set_uuid', [t.client.session, net, 'x']), 'MESSAGE_METHOD_UNKNOWN');
});

test('add_to_/remove_from_ maps: a duplicate key fails, removing a missing key succeeds', async () => {
  await t.client.api.network.add_to_other_config(net, 'k', 'v');
  assert.equal((await t.client.api.network.get_other_config(net)).k, 'v');
  const params = await failsWith(t.client.api.network.add_to_other_config(net, 'k', 'w'), 'MAP_DUPLICATE_KEY');
  assert.deepEqual(params, ['network', 'other_config', net, 'k']);
  await t.client.api.network.remove_from_other_config(net, 'k');
  await t.client.api.network.remove_from_other_config(net, 'k');
  assert.equal((await t.client.api.network.get_other_config(net)).k, undefined);
});

test('add_/remove_ sets, and add_tags/remove_tags', async () => {
  await t.client.api.network.add_tags(net, 'blue');
  await t.client.api.network.add_tags(net, 'blue');
  await t.client.api.network.add_tags(net, 'red');
  assert.deepEqual(await t.client.api.network.get_tags(net), ['blue', 'red']);
  await t.client.api.network.remove_tags(net, 'blue');
  assert.deepEqual(await t.client.api.network.get_tags(net), ['red']);
});

test('create fills defaults and ignores runtime fields; destroy removes; stale refs are HANDLE_INVALID', async () => {
  const ref = await t.client.api.network.create({ name_label: 'tmp', uuid: 'not-allowed', VIFs: ['OpaqueRef:x'] } as never);
  const rec = await t.client.api.network.get_record(ref);
  assert.notEqual(rec.uuid, 'not-allowed');
  assert.deepEqual(rec.VIFs, []);
  assert.equal(rec.MTU, 1500);
  await t.client.api.network.destroy(ref);
  await failsWith(t.client.api.network.get_record(ref), 'HANDLE_INVALID');
  await failsWith(t.client.api.network.destroy(ref), 'HANDLE_INVALID');
});

test('create with a wrongly typed field is FIELD_TYPE_ERROR and makes nothing', async () => {
  const before = (await t.client.api.network.get_all()).length;
  await failsWith(t.client.api.network.create({ name_label: 'bad', MTU: 'big' } as never), 'FIELD_TYPE_ERROR');
  assert.equal((await t.client.api.network.get_all()).length, before);
});

test('enum values are checked', async () => {
  const [vm] = await t.client.api.VM.get_by_name_label('Generic Linux BIOS');
  await failsWith(t.client.call('VM.set_actions_after_crash', [t.client.session, vm, 'explode']), 'INVALID_VALUE');
  await t.client.api.VM.set_actions_after_shutdown(vm, 'restart');
  assert.equal(await t.client.api.VM.get_actions_after_shutdown(vm), 'restart');
});

test('get_all_records_where filters with xapi expressions', async () => {
  const recs = await t.client.call('VM.get_all_records_where', [t.client.session, 'field "is_a_template" = "true" and not (field "name_label" = "Other install media")']) as Record<string, { name_label: string; is_a_template: boolean }>;
  const names = Object.values(recs).map((r) => r.name_label);
  assert.ok(names.includes('Debian Bookworm 12'));
  assert.ok(!names.includes('Other install media'));
  assert.ok(Object.values(recs).every((r) => r.is_a_template));
  await failsWith(t.client.call('VM.get_all_records_where', [t.client.session, 'field "x" ==']), 'INVALID_VALUE');
});

test('relations: owner sets follow the child ref fields', async () => {
  const [host] = await t.client.api.host.get_all();
  const cpus = await t.client.api.host.get_host_CPUs(host);
  for (const c of cpus) assert.equal(await t.client.api.host_cpu.get_host(c), host);
  const dom0 = await t.client.api.host.get_control_domain(host);
  assert.ok((await t.client.api.host.get_resident_VMs(host)).includes(dom0));
  assert.equal((await t.client.api.VM.get_consoles(dom0)).length, 1);
});

test('messages (alerts): create, query by object and time, destroy', async () => {
  const [host] = await t.client.api.host.get_all();
  const uuid = await t.client.api.host.get_uuid(host);
  const before = '19700101T00:00:00Z';
  const m = await t.client.api.message.create('HOST_NOTICE', 3, 'Host', uuid, 'hello');
  const rec = await t.client.api.message.get_record(m);
  assert.equal(rec.body, 'hello');
  assert.equal(rec.priority, 3);
  assert.ok(Object.keys(await t.client.api.message.get('Host', uuid, before)).includes(m));
  assert.ok(Object.keys(await t.client.api.message.get_since(before)).includes(m));
  assert.ok((await t.client.api.message.get_all()).includes(m));
  await t.client.api.message.destroy(m);
  assert.ok(!(await t.client.api.message.get_all()).includes(m));
});

test('host.disable/enable, server time, license state', async () => {
  const [host] = await t.client.api.host.get_all();
  await t.client.api.host.disable(host);
  assert.equal(await t.client.api.host.get_enabled(host), false);
  await t.client.api.host.enable(host);
  assert.equal(await t.client.api.host.get_enabled(host), true);
  const time = await t.client.api.host.get_servertime(host);
  assert.ok(Math.abs(Date.parse(time.replace(/^(\d{4})(\d{2})(\d{2})T/, '$1-$2-$3T')) - Date.now()) < 60_000);
  await failsWith(t.client.api.host.disable('OpaqueRef:nope' as never), 'HANDLE_INVALID');
  const [pool] = await t.client.api.pool.get_all();
  assert.equal((await t.client.api.pool.get_license_state(pool)).edition, 'xenon');
});
