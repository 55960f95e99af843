/** Roles: each role may do what its rung of the ladder allows, and no more. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { XenApiClient } from '../../src/client/client.ts';
import { ROLE_LADDER } from '../../src/datamodel/dsl.ts';
import { failsWith, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
const clients = new Map<string, XenApiClient>();

before(async () => {
  t = await startTestServer();
  const roles = await t.client.api.role.get_all_records();
  for (const role of ROLE_LADDER) {
    const roleRef = Object.entries(roles).find(([, r]) => r.name_label === role)![0];
    const subject = await t.client.api.subject.create({ subject_identifier: `local:${role}-user`, other_config: { 'subject-name': `${role}-user` }, roles: [roleRef] } as never);
    await t.client.call('subject.set_password', [t.client.session, subject, `pw-${role}`]);
    const c = new XenApiClient(t.url);
    await c.login(`${role}-user`, `pw-${role}`);
    clients.set(role, c);
  }
});
after(async () => {
  for (const c of clients.values()) c.close();
  await t.close();
});

/** Which roles a message of this weakest role admits. */
const admitted = (weakest: string): Set<string> => new Set(ROLE_LADDER.slice(0, ROLE_LADDER.indexOf(weakest as never) + 1));

test('every role can read', async () => {
  for (const c of clients.values()) assert.ok((await c.api.VM.get_all_records()) !== null);
});

test('role boundaries: vm-admin (network.create), pool-operator (host.set_name_label), pool-admin (subject.create)', async () => {
  const [host] = await t.client.api.host.get_all();
  const cases: [string, (c: XenApiClient) => Promise<unknown>][] = [
    ['vm-admin', (c) => c.api.network.create({ name_label: 'rbac' } as never)],
    ['vm-operator', async (c) => { const [vm] = await c.api.VM.get_by_name_label('Generic Linux BIOS'); return c.api.VM.add_tags(vm, 'x'); }],
    ['vm-admin', async (c) => { const [vm] = await c.api.VM.get_by_name_label('Generic Linux BIOS'); return c.api.VM.set_name_description(vm, 'x'); }],
    ['pool-operator', (c) => c.api.host.set_name_description(host, 'rbac')],
    ['pool-admin', (c) => c.api.subject.create({ subject_identifier: `local:x${Math.random()}` } as never)],
  ];
  for (const [weakest, act] of cases) {
    const ok = admitted(weakest);
    for (const [role, c] of clients) {
      if (ok.has(role)) await act(c);
      else {
        const params = await failsWith(act(c), 'RBAC_PERMISSION_DENIED');
        assert.equal(params.length, 2, `${role} on a ${weakest} call`);
      }
    }
  }
});

test('VM.set_name_description needs vm-admin, as xapi says', async () => {
  const m = (await import('../../src/datamodel/model.ts')).MESSAGES.get('VM.set_name_description')!;
  assert.deepEqual([...m.roles].filter((r) => r !== 'client-cert'), ROLE_LADDER.slice(0, 4));
});

test('a denied call changes nothing', async () => {
  const before = (await t.client.api.network.get_all()).length;
  await failsWith(clients.get('read-only')!.api.network.create({ name_label: 'nope' } as never), 'RBAC_PERMISSION_DENIED');
  assert.equal((await t.client.api.network.get_all()).length, before);
});

test('roles can be taken away; the next call is checked against the new roles', async () => {
  const c = clients.get('vm-admin')!;
  const [subject] = Object.entries(await t.client.api.subject.get_all_records()).find(([, s]) => s.subject_identifier === 'local:vm-admin-user')!;
  const roles = await t.client.api.subject.get_roles(subject as never);
  await t.client.api.subject.remove_from_roles(subject as never, roles[0]);
  await failsWith(c.api.network.create({ name_label: 'no more' } as never), 'RBAC_PERMISSION_DENIED');
  await t.client.api.subject.add_to_roles(subject as never, roles[0]);
  await c.api.network.create({ name_label: 'again' } as never);
});

test('wrong password for a local user fails; passwords are stored hashed', async () => {
  const c = new XenApiClient(t.url);
  await failsWith(c.login('read-only-user', 'nope'), 'SESSION_AUTHENTICATION_FAILED');
  c.close();
  const rows = t.server.services.store.sqlite.prepare('SELECT name, hash FROM xenon_accounts').all() as { name: string; hash: string }[];
  assert.ok(rows.length >= 7);
  for (const r of rows) {
    assert.match(r.hash, /^scrypt\$/);
    assert.ok(!r.hash.includes('pw-'));
  }
});

test('session.change_password is for the local superuser; a wrong old password is rejected', async () => {
  await failsWith(clients.get('pool-admin')!.api.session.change_password('pw-pool-admin', 'x'), 'RBAC_PERMISSION_DENIED');
  const c = new XenApiClient(t.url);
  await c.login('root', ROOT_PASSWORD);
  await failsWith(c.api.session.change_password('bad', 'new'), 'CHANGE_PASSWORD_REJECTED');
  await c.api.session.change_password(ROOT_PASSWORD, 'new-root-pw');
  await c.logout();
  await failsWith(c.login('root', ROOT_PASSWORD), 'SESSION_AUTHENTICATION_FAILED');
  await c.login('root', 'new-root-pw');
  await c.api.session.change_password('new-root-pw', ROOT_PASSWORD);
  await c.logout();
  c.close();
});

test('role permissions are derived from the datamodel', async () => {
  const roles = await t.client.api.role.get_all_records();
  const ref = (name: string) => Object.entries(roles).find(([, r]) => r.name_label === name)![0] as never;
  const ro = await t.client.api.role.get_permissions_name_label(ref('read-only'));
  assert.ok(ro.includes('vm.get_record'));
  assert.ok(!ro.includes('vm.start'));
  assert.ok((await t.client.api.role.get_permissions_name_label(ref('vm-operator'))).includes('vm.start'));
  const who = await t.client.api.role.get_by_permission_name_label('vm.start');
  assert.deepEqual([...who].sort(), ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin', 'vm-operator'].map(ref).sort());
});
