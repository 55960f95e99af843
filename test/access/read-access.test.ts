/**
 * Session references are credentials and secrets are secret: accounts below
 * root walk every read path (records, getters, lookups, events) looking for
 * root's session references and a secret's value.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { XenApiClient } from '../../src/client/client.ts';
import { MESSAGES } from '../../src/datamodel/model.ts';
import type { LadderRole } from '../../src/datamodel/dsl.ts';
import { failsWith, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { loginAs } from './users.ts';

const SECRET_VALUE = 'TOPSECRET-b7f1e0';
let t: TestServer;
let users: Map<LadderRole, XenApiClient>;
const rootSessions: string[] = [];
let secret: string;

before(async () => {
  t = await startTestServer();
  users = await loginAs(t, ['read-only', 'vm-operator', 'pool-operator', 'pool-admin']);
  rootSessions.push(t.client.session);
  for (let i = 0; i < 3; i++) {
    const c = new XenApiClient(t.url);
    rootSessions.push(await c.login('root', ROOT_PASSWORD));
  }
  secret = (await t.client.call('secret.create', [t.client.session, { value: SECRET_VALUE, other_config: {} }])) as string;
});
after(async () => {
  for (const c of users.values()) c.close();
  await t.close();
});

/** Everything a caller can list: every class's get_all_records, and every event. */
async function everythingVisibleTo(c: XenApiClient): Promise<string> {
  const seen: unknown[] = [];
  for (const m of MESSAGES.values()) {
    if (m.name !== 'get_all_records' && m.name !== 'get_all') continue;
    try {
      seen.push(await c.call(m.wireName, [c.session]));
    } catch (e) {
      const code = (e as { code?: string }).code;
      assert.ok(code === 'RBAC_PERMISSION_DENIED' || code === 'NOT_IMPLEMENTED', `${m.wireName}: ${String(e)}`);
    }
  }
  seen.push(await c.call('event.from', [c.session, ['*'], '', 0]));
  seen.push(await c.call('event.from', [c.session, ['session', 'secret', 'task'], '', 0]));
  await c.call('event.register', [c.session, ['*']]);
  // a change after registering, for event.next to report
  await t.client.api.pool.get_all().then(([p]) => t.client.call('pool.add_to_other_config', [t.client.session, p, `k${Math.random()}`, 'v']));
  seen.push(await c.call('event.next', [c.session]));
  return JSON.stringify(seen);
}

test('no account below root sees root’s session references, by records or events', async () => {
  for (const [role, c] of users) {
    const text = await everythingVisibleTo(c);
    for (const ref of rootSessions) assert.ok(!text.includes(ref), `${role} saw a root session ref`);
    assert.ok(!text.includes(SECRET_VALUE) || role === 'pool-admin', `${role} saw the secret's value`);
  }
});

test('a session is its own: its record by ref is HANDLE_INVALID to any other, pool-admin included', async () => {
  for (const c of users.values()) {
    await failsWith(c.call('session.get_record', [c.session, rootSessions[1]]), 'HANDLE_INVALID');
    await failsWith(c.call('session.get_auth_user_name', [c.session, rootSessions[1]]), 'HANDLE_INVALID');
    const own = (await c.call('session.get_record', [c.session, c.session])) as { uuid: string };
    assert.equal(await c.call('session.get_by_uuid', [c.session, own.uuid]), c.session);
  }
  await failsWith(t.client.call('session.get_record', [t.client.session, rootSessions[2]]), 'HANDLE_INVALID');
});

test('events on sessions: each caller sees its own session only', async () => {
  const c = users.get('read-only')!;
  const reply = (await c.call('event.from', [c.session, ['session'], '', 0])) as { events: { ref: string }[]; valid_ref_counts: Record<string, number> };
  assert.deepEqual([...new Set(reply.events.map((e) => e.ref))], [c.session]);
  assert.equal(reply.valid_ref_counts.session, 1);
});

test('a secret’s value is pool-admin’s alone: getter, record, where-query and events', async () => {
  const op = users.get('pool-operator')!;
  const admin = users.get('pool-admin')!;
  await failsWith(op.call('secret.get_value', [op.session, secret]), 'RBAC_PERMISSION_DENIED');
  assert.equal(((await op.call('secret.get_record', [op.session, secret])) as { value: string }).value, '');
  await failsWith(op.call('secret.get_all_records_where', [op.session, `field "value" = "${SECRET_VALUE}"`]), 'RBAC_PERMISSION_DENIED');
  const events = (await op.call('event.from', [op.session, ['secret'], '', 0])) as { events: { snapshot: { value: string } }[] };
  assert.ok(events.events.length > 0 && events.events.every((e) => e.snapshot.value === ''));
  assert.equal(await admin.call('secret.get_value', [admin.session, secret]), SECRET_VALUE);
  assert.equal(((await admin.call('secret.get_record', [admin.session, secret])) as { value: string }).value, SECRET_VALUE);
  for (const role of ['read-only', 'vm-operator'] as const) {
    const c = users.get(role)!;
    await failsWith(c.call('secret.get_record', [c.session, secret]), 'RBAC_PERMISSION_DENIED');
  }
});
