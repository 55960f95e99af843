/**
 * Calls as xapi accepts them: trailing parameters with declared defaults may
 * be left out, and `Class_message` names the same message as `Class.message`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { storagePlugin } from '../../src/plugins.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
let vdi: string;
let sr: string;
before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 })] });
  const [pool] = await t.client.api.pool.get_all();
  sr = await t.client.api.pool.get_default_SR(pool);
  vdi = await t.client.api.VDI.create({ name_label: 'defaults', SR: sr, virtual_size: 4 << 20, type: 'user', sharable: false, read_only: false, other_config: {} } as never);
});
after(() => t.close());

const call = (method: string, ...params: unknown[]): Promise<unknown> => t.client.call(method, [t.client.session, ...params]);

test('trailing parameters with defaults may be left out', async () => {
  const [host] = await t.client.api.host.get_all();
  assert.equal(await call('host.evacuate', host), '');
  const snap = await call('VDI.snapshot', vdi);
  assert.equal(await t.client.api.VDI.get_snapshot_of(snap as string), vdi);
  const clone = await call('VDI.clone', vdi);
  assert.equal(await t.client.api.VDI.get_is_a_snapshot(clone as string), false);
  const copy = await call('VDI.copy', vdi, sr);
  assert.equal(await t.client.api.VDI.get_virtual_size(copy as string), await t.client.api.VDI.get_virtual_size(vdi));
  // the arity is accepted; the message itself has no behaviour yet
  const [vm] = await t.client.api.VM.get_all();
  await failsWith(call('VM.create_new_blob', vm, 'b', 'text/plain'), 'NOT_IMPLEMENTED');
});

test('parameters without defaults are still required, and no more than declared may come', async () => {
  const [host] = await t.client.api.host.get_all();
  await failsWith(call('VDI.copy'), 'MESSAGE_PARAMETER_COUNT_MISMATCH');
  await failsWith(call('host.evacuate', host, 'OpaqueRef:NULL', 0, 'extra'), 'MESSAGE_PARAMETER_COUNT_MISMATCH');
});

test('Class_message is Class.message, also after Async.; Async_Class_message is not', async () => {
  const reply = (await call('event_from', ['VM'], '', 0)) as { token: string };
  assert.equal(typeof reply.token, 'string');
  assert.deepEqual(new Set((await call('VM_get_all')) as string[]), new Set(await t.client.api.VM.get_all()));
  const task = (await call('Async.VDI_snapshot', vdi)) as string;
  assert.match(task, /^OpaqueRef:/);
  while ((await t.client.api.task.get_status(task)) === 'pending') await new Promise((r) => setTimeout(r, 20));
  assert.equal(await t.client.api.task.get_status(task), 'success');
  await failsWith(call('Async_VDI_snapshot', vdi), 'MESSAGE_METHOD_UNKNOWN');
});
