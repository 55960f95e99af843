/** Tasks (progress, result, cancel, collection) and sessions (logout, expiry). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { XenApiClient } from '../../src/client/client.ts';
import { failsWith, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer({ config: { sessionIdleMs: 60_000 } });
});
after(() => t.close());

test('a client-made task can be cancelled and reports TASK_CANCELLED', async () => {
  const task = await t.client.api.task.create('mine', 'desc');
  const rec = await t.client.api.task.get_record(task);
  assert.equal(rec.status, 'pending');
  assert.deepEqual(rec.allowed_operations, ['cancel']);
  assert.notEqual(rec.created, '19700101T00:00:00Z');
  await t.client.api.task.cancel(task);
  const after = await t.client.api.task.get_record(task);
  assert.equal(after.status, 'cancelled');
  assert.deepEqual(after.error_info, ['TASK_CANCELLED', task]);
  await failsWith(t.client.api.task.cancel(task), 'OPERATION_NOT_ALLOWED');
});

test('task progress and status can be set by the client that owns it, then destroyed', async () => {
  const task = await t.client.api.task.create('p', '');
  await t.client.api.task.set_progress(task, 0.5);
  assert.equal(await t.client.api.task.get_progress(task), 0.5);
  await t.client.api.task.destroy(task);
  await failsWith(t.client.api.task.get_record(task), 'HANDLE_INVALID');
});

test('old finished tasks are collected; pending ones are not', async () => {
  const done = await t.client.api.task.create('done', '');
  await t.client.api.task.cancel(done);
  const pending = await t.client.api.task.create('pending', '');
  const removed = t.server.services.tasks.collect(0, Date.now() + 10_000);
  assert.ok(removed >= 1);
  await failsWith(t.client.api.task.get_record(done), 'HANDLE_INVALID');
  assert.equal(await t.client.api.task.get_status(pending), 'pending');
});

test('session records: logout invalidates the ref', async () => {
  const c = new XenApiClient(t.url);
  const ref = await c.login('root', ROOT_PASSWORD);
  const rec = await c.api.session.get_record(ref);
  assert.equal(rec.is_local_superuser, true);
  assert.equal(rec.auth_user_name, 'root');
  // a session is seen by itself alone, even by another of root's
  await failsWith(t.client.api.session.get_record(ref), 'HANDLE_INVALID');
  await c.logout();
  await failsWith(c.call('VM.get_all', [ref]), 'SESSION_INVALID');
  c.close();
});

test('sessions expire only after the idle timeout', async () => {
  const idle = new XenApiClient(t.url);
  const ref = await idle.login('root', ROOT_PASSWORD);
  await t.client.api.VM.get_all();
  const expired = t.server.services.sessions.expireIdle(Date.now() + 59_000);
  assert.equal(expired, 0);
  await t.client.api.VM.get_all(); // keep the test's own session fresh
  const n = t.server.services.sessions.expireIdle(Date.now() + 61_000);
  assert.ok(n >= 1);
  await failsWith(idle.call('VM.get_all', [ref]), 'SESSION_INVALID');
  idle.close();
});
