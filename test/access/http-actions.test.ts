/**
 * HTTP actions check the roles declared for them (datamodel/http-actions.ts,
 * xapi's http actions): the console (GET and CONNECT) needs vm-operator,
 * disk and VM transfer vm-admin, and a client's task_id must be its own.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { XenApiClient } from '../../src/client/client.ts';
import { HTTP_ACTIONS } from '../../src/datamodel/http-actions.ts';
import type { LadderRole } from '../../src/datamodel/dsl.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { loginAs } from './users.ts';

let t: TestServer;
let users: Map<LadderRole, XenApiClient>;
let vt100: string;
let rfb: string;
let vdi: string;

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin(), xenopsPlugin({ backend: 'sim' })] });
  users = await loginAs(t, ['read-only', 'vm-operator', 'vm-admin']);
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const vm = await t.client.api.VM.clone(tpl, 'http-actions');
  await t.client.api.VM.set_is_a_template(vm, false);
  await t.client.api.VM.start(vm, false, false);
  for (const con of await t.client.api.VM.get_consoles(vm)) {
    if ((await t.client.api.console.get_protocol(con)) === 'vt100') vt100 = con;
    else rfb = con;
  }
  const [pool] = await t.client.api.pool.get_all();
  const sr = await t.client.api.pool.get_default_SR(pool);
  vdi = await t.client.api.VDI.create({ SR: sr, virtual_size: '1048576', type: 'user', name_label: 'http-actions', sharable: false, read_only: false, other_config: {} } as never);
});
after(async () => {
  for (const c of users.values()) c.close();
  await t.close();
});

const get = async (path: string): Promise<number> => {
  const res = await fetch(`${t.url}${path}`);
  await res.arrayBuffer();
  return res.status;
};

function connect(path: string): Promise<string> {
  const { port } = new URL(t.url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), '127.0.0.1', () => s.write(`CONNECT ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.includes('\r\n')) {
        resolve(got.split('\r\n')[0]);
        s.destroy();
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got.split('\r\n')[0]));
  });
}

test('every action Xenon serves is declared with xapi’s role and permission name', () => {
  const byName = new Map(HTTP_ACTIONS.map((a) => [a.name, a]));
  assert.equal(byName.get('connect_console')?.method, 'CONNECT');
  assert.equal(byName.get('connect_console')?.roles.at(-1), 'vm-operator');
  assert.equal(byName.get('put_import_raw_vdi')?.roles.at(-1), 'vm-admin');
  assert.equal(byName.get('get_export')?.permission, 'http/get_export');
});

test('the console log (GET) and the console (CONNECT) need vm-operator', async () => {
  const ro = users.get('read-only')!;
  const op = users.get('vm-operator')!;
  assert.equal(await get(`/console?ref=${vt100}&session_id=${ro.session}`), 403);
  assert.equal(await get(`/console?ref=${vt100}`), 401);
  assert.notEqual(await get(`/console?ref=${vt100}&session_id=${op.session}`), 403);
  for (const con of [vt100, rfb]) {
    assert.match(await connect(`/console?ref=${con}&session_id=${ro.session}`), / 403 /);
    assert.match(await connect(`/console?ref=${con}`), / 401 /);
    assert.doesNotMatch(await connect(`/console?ref=${con}&session_id=${op.session}`), / 40[13] /);
  }
});

test('refused and allowed HTTP actions are in the audit trail, without session references', async () => {
  const ro = users.get('read-only')!;
  assert.equal(await get(`/console?ref=${vt100}&session_id=${ro.session}`), 403);
  const entries = readFileSync(join(t.dataDir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
  const refusal = entries.find((e) => e.message === 'http/connect_console_ws' && e.outcome === 'refused' && e.subject === 'read-only-user');
  assert.equal(refusal?.error, 'RBAC_PERMISSION_DENIED');
  assert.ok(entries.some((e) => e.message === 'http/connect_console_ws' && e.outcome === 'ok' && e.subject === 'vm-operator-user'));
  assert.ok(!JSON.stringify(entries).includes(ro.session));
});

test('disk and VM transfer need vm-admin', async () => {
  for (const role of ['read-only', 'vm-operator'] as const) {
    const c = users.get(role)!;
    assert.equal(await get(`/export_raw_vdi?vdi=${vdi}&format=raw&session_id=${c.session}`), 403, role);
    assert.equal(await get(`/export?uuid=x&session_id=${c.session}`), 403, role);
    const put = await fetch(`${t.url}/import_raw_vdi?vdi=${vdi}&session_id=${c.session}`, { method: 'PUT', body: 'x' });
    assert.equal(put.status, 403, role);
  }
});

test('a task_id= must be the caller’s own', async () => {
  const admin = users.get('vm-admin')!;
  const rootTask = (await t.client.call('task.create', [t.client.session, 'root-only', ''])) as string;
  assert.equal(await get(`/export_raw_vdi?vdi=${vdi}&format=raw&task_id=${rootTask}&session_id=${admin.session}`), 403);
  assert.equal(await t.client.call('task.get_status', [t.client.session, rootTask]), 'pending');
  assert.equal(await get(`/export_raw_vdi?vdi=${vdi}&format=raw&session_id=${admin.session}`), 200);
});
