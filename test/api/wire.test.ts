/** The wire protocol as xapi speaks it: envelopes, types, endpoints, and bad input. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMethodResponse, encodeMethodCall } from '../../src/wire/xmlrpc.ts';
import { jsonRpc, post, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const xml = async (method: string, params: unknown[], path = '/'): Promise<Record<string, unknown>> => {
  const r = await post(t.url, path, encodeMethodCall(method, params), 'text/xml');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/xml/);
  return decodeMethodResponse(r.text) as Record<string, unknown>;
};

test('XML-RPC login on /, /RPC2 and /xmlrpc returns a Success envelope with an OpaqueRef', async () => {
  for (const path of ['/', '/RPC2', '/xmlrpc']) {
    const v = await xml('session.login_with_password', ['root', ROOT_PASSWORD, '2.21', 'test'], path);
    assert.equal(v.Status, 'Success');
    assert.match(String(v.Value), /^OpaqueRef:[0-9a-f-]{36}$/);
  }
});

test('login takes only user and password, as Xen Orchestra sends it', async () => {
  const v = await xml('session.login_with_password', ['root', ROOT_PASSWORD]);
  assert.equal(v.Status, 'Success');
});

test('XML-RPC replies are compact, ints travel as strings, floats as doubles, datetimes in xapi form', async () => {
  const session = t.client.session;
  const hosts = await t.client.api.host.get_all();
  const r = await post(t.url, '/', encodeMethodCall('host.get_record', [session, hosts[0]]), 'text/xml');
  assert.doesNotMatch(r.text, />\s+</, 'no whitespace between elements');
  assert.match(r.text, /<name>API_version_major<\/name><value>2<\/value>/);
  assert.doesNotMatch(r.text, /<int>|<i4>/);
  const cpus = await t.client.api.host_cpu.get_all();
  const c = await post(t.url, '/', encodeMethodCall('host_cpu.get_utilisation', [session, cpus[0]]), 'text/xml');
  assert.match(c.text, /<double>0<\/double>/);
  const task = await t.client.api.task.create('x', 'y');
  const d = await post(t.url, '/', encodeMethodCall('task.get_created', [session, task]), 'text/xml');
  assert.match(d.text, /<dateTime\.iso8601>\d{8}T\d{2}:\d{2}:\d{2}Z<\/dateTime\.iso8601>/);
});

test('an untyped XML-RPC value is a string', async () => {
  const body = `<?xml version="1.0"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>root</value></param><param><value>${ROOT_PASSWORD}</value></param></params></methodCall>`;
  const v = decodeMethodResponse((await post(t.url, '/', body, 'text/xml')).text) as Record<string, unknown>;
  assert.equal(v.Status, 'Success');
});

test('JSON-RPC 2.0: result and id, Content-Type exactly application/json', async () => {
  const r = await post(t.url, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', ROOT_PASSWORD], id: 0 }), 'application/json');
  assert.equal(r.headers.get('content-type'), 'application/json');
  const body = JSON.parse(r.text);
  assert.equal(body.jsonrpc, '2.0');
  assert.equal(body.id, 0);
  assert.match(body.result, /^OpaqueRef:/);
});

test('JSON-RPC 2.0 failures carry code, message and data', async () => {
  const body = await jsonRpc(t.url, 'session.login_with_password', ['root', 'wrong']);
  const err = body.error as { code: number; message: string; data: string[] };
  assert.notEqual(err.code, 0);
  assert.equal(err.message, 'SESSION_AUTHENTICATION_FAILED');
  assert.ok(Array.isArray(err.data));
  assert.equal(body.result, undefined);
});

test('JSON-RPC 1.0 replies always have result, error and id', async () => {
  const ok = await jsonRpc(t.url, 'session.login_with_password', ['root', ROOT_PASSWORD], {});
  assert.deepEqual(Object.keys(ok).sort(), ['error', 'id', 'result']);
  assert.equal(ok.error, null);
  const bad = await jsonRpc(t.url, 'VM.get_all', ['OpaqueRef:nope'], {});
  assert.equal(bad.result, null);
  assert.deepEqual(bad.error, ['SESSION_INVALID', 'OpaqueRef:nope']);
});

test('JSON-RPC ints are numbers and records keep every field', async () => {
  const [host] = await t.client.api.host.get_all();
  const rec = await t.client.api.host.get_record(host);
  assert.equal(typeof rec.API_version_major, 'number');
  assert.equal(rec.API_version_major, 2);
  assert.ok(rec.host_CPUs.length > 0, 'host_CPUs kept from host_cpu.host');
});

test('system.listMethods needs no session and lists Async variants', async () => {
  const v = await xml('system.listMethods', []);
  const list = v as unknown as string[] | { Value: string[] };
  const methods = Array.isArray(list) ? list : (list as { Value: string[] }).Value;
  assert.ok(methods.includes('VM.get_all_records'));
  assert.ok(methods.includes('Async.VM.start'));
  assert.ok(!methods.includes('session.get_all_records'), 'only classes whose get_all_records works');
});

test('errors: unknown method, parameter count, field type, invalid handle, uuid, session', async () => {
  const s = t.client.session;
  const call = (m: string, p: unknown[]) => jsonRpc(t.url, m, p).then((b) => b.error as { message: string; data: string[] });
  assert.deepEqual(await call('VM.frobnicate', [s]), { code: 1, message: 'MESSAGE_METHOD_UNKNOWN', data: ['VM.frobnicate'] });
  assert.deepEqual((await call('VM.get_record', [s])).data, ['VM.get_record', '1', '0']);
  assert.equal((await call('VM.get_record', [s])).message, 'MESSAGE_PARAMETER_COUNT_MISMATCH');
  assert.deepEqual(await call('VM.set_VCPUs_at_startup', [s, 'OpaqueRef:NULL', 'lots']), { code: 1, message: 'FIELD_TYPE_ERROR', data: ['value'] });
  assert.deepEqual(await call('VM.get_record', [s, 'OpaqueRef:0000']), { code: 1, message: 'HANDLE_INVALID', data: ['VM', 'OpaqueRef:0000'] });
  assert.deepEqual(await call('VM.get_by_uuid', [s, 'no-such-uuid']), { code: 1, message: 'UUID_INVALID', data: ['VM', 'no-such-uuid'] });
  assert.deepEqual(await call('VM.get_all', ['OpaqueRef:stale']), { code: 1, message: 'SESSION_INVALID', data: ['OpaqueRef:stale'] });
  assert.deepEqual(await call('session.login_with_password', ['root', 'bad']).then((e) => e.message), 'SESSION_AUTHENTICATION_FAILED');
  assert.equal((await call('auth.get_subject_identifier', [s, 'x'])).message, 'NOT_IMPLEMENTED');
});

test('malformed XML gets a Failure envelope, and the daemon carries on', async () => {
  for (const body of ['<methodCall><methodName>VM.get_all', 'not xml at all', '<methodCall><methodName>x</methodName><params><param><value><int>12x</int></value></param></params></methodCall>', '']) {
    const r = await post(t.url, '/', body, 'text/xml');
    const v = decodeMethodResponse(r.text) as { Status: string; ErrorDescription: string[] };
    assert.equal(v.Status, 'Failure');
    assert.equal(v.ErrorDescription[0], 'XMLRPC_UNMARSHAL_FAILURE');
  }
  assert.ok((await t.client.api.VM.get_all()).length > 0);
});

test('malformed JSON and non-object bodies get JSON-RPC errors', async () => {
  for (const body of ['{"method":', '[1,2]', '"str"', 'null']) {
    const r = await post(t.url, '/jsonrpc', body, 'application/json');
    const v = JSON.parse(r.text);
    assert.ok(v.error, `error for ${body}`);
    assert.equal(typeof v.error.code, 'number');
  }
  const p = await jsonRpc(t.url, 'VM.get_all', { not: 'an array' } as unknown as unknown[]);
  assert.ok(p.error);
});

test('an oversized body is refused with an error, not a crash', async () => {
  const huge = 'x'.repeat(17 * 1024 * 1024);
  const r = await post(t.url, '/jsonrpc', JSON.stringify({ method: 'VM.get_all', params: [huge] }), 'application/json');
  assert.equal(r.status, 413);
  assert.match(r.text, /INTERNAL_ERROR/);
  assert.ok((await t.client.api.pool.get_all()).length === 1);
});

test('deeply nested XML is refused', async () => {
  const deep = '<value><array><data>'.repeat(200) + '</data></array></value>'.repeat(200);
  const r = await post(t.url, '/', `<methodCall><methodName>VM.get_all</methodName><params><param>${deep}</param></params></methodCall>`, 'text/xml');
  assert.match(r.text, /XMLRPC_UNMARSHAL_FAILURE/);
});

test('Async calls return a task whose result holds the XML-RPC value', async () => {
  const task = await t.client.async.network.create({ name_label: 'async-net', name_description: '', MTU: 1500, other_config: {}, bridge: '', managed: true, tags: [] } as never);
  assert.match(task, /^OpaqueRef:/);
  const result = await t.client.waitTask(task);
  const ref = /^<value>(OpaqueRef:[0-9a-f-]{36})<\/value>$/.exec(result)?.[1];
  assert.ok(ref, result);
  assert.equal((await t.client.api.network.get_record(ref)).name_label, 'async-net');
  const rec = await t.client.api.task.get_record(task);
  assert.equal(rec.status, 'success');
  assert.equal(rec.progress, 1);
  assert.notEqual(rec.finished, '19700101T00:00:00Z');
  const failing = await t.client.async.VM.destroy('OpaqueRef:NULL');
  await assert.rejects(t.client.waitTask(failing), (e: { code?: string }) => e.code === 'VM_BAD_POWER_STATE' || e.code === 'HANDLE_INVALID' || e.code === 'OPERATION_NOT_ALLOWED');
});

test('Async of a message xapi does not offer async is unknown', async () => {
  const r = await jsonRpc(t.url, 'Async.session.logout', [t.client.session]);
  assert.equal((r.error as { message: string }).message, 'MESSAGE_METHOD_UNKNOWN');
});
