/** Tasks belong to their owner: another account may not touch them unless pool-operator or above, as in xapi. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { XenApiClient } from '../../src/client/client.ts';
import type { LadderRole } from '../../src/datamodel/dsl.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';
import { loginAs } from './users.ts';

let t: TestServer;
let users: Map<LadderRole, XenApiClient>;

before(async () => {
  t = await startTestServer();
  users = await loginAs(t, ['read-only', 'vm-admin', 'pool-operator']);
});
after(async () => {
  for (const c of users.values()) c.close();
  await t.close();
});

const newTask = (c: XenApiClient, label = 'mine'): Promise<string> => c.call('task.create', [c.session, label, '']) as Promise<string>;

test('read-only and vm-admin cannot change, cancel or destroy root’s task', async () => {
  const task = await newTask(t.client, 'root-task');
  for (const role of ['read-only', 'vm-admin'] as const) {
    const c = users.get(role)!;
    const attempts: [string, unknown[]][] = [
      ['task.cancel', [task]],
      ['task.destroy', [task]],
      ['task.set_status', [task, 'success']],
      ['task.set_progress', [task, 0.5]],
      ['task.set_result', [task, '<value>owned</value>']],
      ['task.set_error_info', [task, ['X']]],
    ];
    for (const [method, args] of attempts) await failsWith(c.call(method, [c.session, ...args]), 'RBAC_PERMISSION_DENIED');
  }
  const rec = (await t.client.call('task.get_record', [t.client.session, task])) as { status: string; progress: number; result: string };
  assert.equal(rec.status, 'pending');
  assert.equal(Number(rec.progress), 0);
  assert.equal(rec.result, '');
});

test('an owner changes its own tasks, also from another of its sessions', async () => {
  const c = users.get('read-only')!;
  const task = await newTask(c);
  const again = new XenApiClient(t.url);
  await again.login('read-only-user', 'pw-read-only');
  await again.call('task.set_progress', [again.session, task, 0.25]);
  await c.call('task.cancel', [c.session, task]);
  assert.equal(await c.call('task.get_status', [c.session, task]), 'cancelled');
  await again.call('task.destroy', [again.session, task]);
  again.close();
});

test('pool-operator may change and destroy any task (task.destroy/any)', async () => {
  const task = await newTask(users.get('vm-admin')!);
  const op = users.get('pool-operator')!;
  await op.call('task.set_status', [op.session, task, 'failure']);
  await op.call('task.destroy', [op.session, task]);
  await failsWith(t.client.call('task.get_record', [t.client.session, task]), 'HANDLE_INVALID');
});
