/**
 * The edge: request targets, malformed bodies and values that must not cross.
 * Everything travels over real sockets; each refusal is a status with a body,
 * and the daemon goes on serving.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMethodResponse, encodeMethodCall } from '../../src/wire/xmlrpc.ts';
import type { Plugin } from '../../src/server.ts';
import { XenApiError } from '../../src/datamodel/api-error.ts';
import { post, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { portOf, rawRequest } from '../helpers/raw-http.ts';

// routes that fail in every way a handler can, before its headers
const failing: Plugin = {
  name: 'failing-routes',
  start(_services, routes) {
    routes.routes.set('/test-throws', () => {
      throw new Error('synchronous failure');
    });
    routes.routes.set('/test-rejects', async () => {
      throw new XenApiError('SESSION_INVALID', 'OpaqueRef:x');
    });
    routes.routes.set('/test-uri', async (req) => {
      decodeURIComponent(String(req.headers.cookie));
    });
  },
};

let t: TestServer;
let port: number;
before(async () => {
  t = await startTestServer({ plugins: [failing] });
  port = portOf(t.url);
});
after(() => t.close());

/** A fresh login still works: the daemon is serving. */
async function stillServing(): Promise<void> {
  const r = await post(t.url, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method: 'session.login_with_password', params: ['root', ROOT_PASSWORD], id: 1 }), 'application/json');
  assert.match(String(JSON.parse(r.text).result), /^OpaqueRef:/);
}

test('hostile request targets get a 4xx with a body, and the daemon goes on serving', async () => {
  const targets = [
    '//', '//a:99999/', '//host/path', '/\\evil.example/', 'http://[', '/x?u=http://[', 'http://localhost/jsonrpc', 'localhost:80',
    '*', '/%', '/%zz', '/%e0%80', '/a%2', '/import?session_id=%', '/..%2f..%2fetc/passwd', '/\x7f',
  ];
  for (const target of targets) {
    for (const method of ['GET', 'POST', 'PUT', 'OPTIONS']) {
      const r = await rawRequest(port, `${method} ${target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`);
      assert.ok(r.status >= 400 && r.status < 500, `${method} ${target}: status ${r.status}`);
      assert.ok(r.body.length > 0, `${method} ${target}: a body`);
    }
  }
  await stillServing();
});

test('CONNECT with a hostile or unknown target gets a status and a body', async () => {
  for (const target of ['//', '//a:99999/', 'http://[', 'localhost:443', '/%zz', '/nowhere']) {
    const r = await rawRequest(port, `CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.ok(r.status >= 400 && r.status < 500, `CONNECT ${target}: status ${r.status}`);
    assert.ok(r.body.length > 0, `CONNECT ${target}: a body`);
  }
  await stillServing();
});

test('a handler that throws or rejects before its headers still answers with a status and a body', async () => {
  const cases: Array<[string, number]> = [['/test-throws', 500], ['/test-rejects', 401], ['/test-uri', 400]];
  for (const [path, status] of cases) {
    const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nCookie: %zz\r\n\r\n`);
    assert.equal(r.status, status, path);
    assert.ok(r.body.length > 0);
  }
  await stillServing();
});

const jsonBody = async (body: string): Promise<{ status: number; reply: Record<string, unknown> }> => {
  const r = await rawRequest(port, `POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  return { status: r.status, reply: JSON.parse(r.body) as Record<string, unknown> };
};

test('malformed JSON-RPC gets a JSON-RPC error, never a 5xx or a dropped connection', async () => {
  const deepId = `{"jsonrpc":"2.0","method":"session.get_all","params":[],"id":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
  const bodies = [
    '', '{', '[]', '[1,2]', 'null', '"x"', '42', '{"method":1}', '{"method":"VM.get_all","params":{}}',
    `${'['.repeat(1_000_000)}`, `{"a":${'{"a":'.repeat(200_000)}1${'}'.repeat(200_000)}}`, deepId,
    '{"jsonrpc":"2.0","method":"session.get_all","params":[],"id":[1,[2]]}',
    '{"jsonrpc":"2.0","method":"session.get_all","params":[],"id":{"a":1}}',
    '{"method":"session.login_with_password","params":["root","x"],"id":1', '\u0000\u0001', '{"method":"\ud800"}',
  ];
  for (const body of bodies) {
    const { status, reply } = await jsonBody(body);
    assert.ok(status < 500, `${body.slice(0, 40)}: status ${status}`);
    assert.ok(reply.error, `${body.slice(0, 40)}: an error`);
  }
  await stillServing();
});

const xmlBody = async (body: string): Promise<{ status: number; reply: Record<string, unknown> }> => {
  const r = await rawRequest(port, `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  return { status: r.status, reply: decodeMethodResponse(r.body) as Record<string, unknown> };
};

test('malformed XML-RPC gets a XenAPI failure, never a 5xx or a dropped connection', async () => {
  const call = encodeMethodCall('session.login_with_password', ['root', ROOT_PASSWORD]);
  const bodies = [
    '', '<', '<methodCall>', call.slice(0, call.length / 2), `${call}<x/>`,
    '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x "yyyy">]><methodCall><methodName>&x;</methodName></methodCall>',
    '<methodCall><methodName>&bogus;</methodName></methodCall>',
    `<methodCall><methodName>x</methodName><params><param>${'<value><array><data>'.repeat(10_000)}</param></params></methodCall>`,
    '<methodCall><methodName>x</methodName><params><param><value><int>1.5</int></value></param></params></methodCall>',
    '<methodCall><methodName>x</methodName><params><param><value><base64>!!</base64></value></param></params></methodCall>',
    '<methodCall><methodName>x</methodName><params><param><value><struct><member><value/></member></struct></value></param></params></methodCall>',
  ];
  for (const body of bodies) {
    const { status, reply } = await xmlBody(body);
    assert.equal(status, 200, body.slice(0, 40));
    assert.equal(reply.Status, 'Failure', body.slice(0, 40));
  }
  await stillServing();
});

/** A call over both codecs: the XenAPI error description, or undefined on success. */
async function both(method: string, params: unknown[]): Promise<Array<string[] | undefined>> {
  const x = decodeMethodResponse((await post(t.url, '/', encodeMethodCall(method, params), 'text/xml')).text) as { Status: string; ErrorDescription?: string[] };
  const j = JSON.parse((await post(t.url, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }), 'application/json')).text) as {
    error?: { message: string; data: string[] };
  };
  return [x.Status === 'Success' ? undefined : x.ErrorDescription, j.error ? [j.error.message, ...j.error.data] : undefined];
}

test('integers outside int64 or not integral are refused naming the parameter, and nothing is stored', async () => {
  const s = t.client.session;
  const vm = (await t.client.api.VM.get_all())[0];
  const before = await t.client.api.VM.get_record(vm);
  for (const bad of ['9223372036854775808', '-9223372036854775809', '1e300', '1.5', '12abc', '', ' ', '0x10', 2 ** 63, 1e300, 1.5, -(2 ** 64), true, [], {}]) {
    for (const error of await both('VM.set_VCPUs_at_startup', [s, vm, bad])) {
      assert.deepEqual(error, ['FIELD_TYPE_ERROR', 'value'], `VCPUs_at_startup ${JSON.stringify(bad)}`);
    }
    for (const error of await both('VM.set_user_version', [s, vm, bad])) assert.ok(error, `user_version ${JSON.stringify(bad)}`);
  }
  assert.deepEqual(await t.client.api.VM.get_record(vm), before);
  // int64's own bounds are accepted and kept
  assert.deepEqual(await both('VM.set_user_version', [s, vm, '9223372036854775807']), [undefined, undefined]);
  const x = await post(t.url, '/', encodeMethodCall('VM.get_user_version', [s, vm]), 'text/xml');
  assert.match(x.text, /<value>9223372036854775807<\/value>/);
  assert.deepEqual(await both('VM.set_user_version', [s, vm, '-9223372036854775808']), [undefined, undefined]);
  await t.client.api.VM.set_user_version(vm, before.user_version);
});

test('floats, enums, sets, maps and references of the wrong shape are refused', async () => {
  const s = t.client.session;
  const vm = (await t.client.api.VM.get_all())[0];
  const before = await t.client.api.VM.get_record(vm);
  const refusals: Array<[string, unknown, string]> = [
    ['VM.set_HVM_shadow_multiplier', 'NaN', 'FIELD_TYPE_ERROR'],
    ['VM.set_HVM_shadow_multiplier', 'Infinity', 'FIELD_TYPE_ERROR'],
    ['VM.set_HVM_shadow_multiplier', '1e999', 'FIELD_TYPE_ERROR'],
    ['VM.set_HVM_shadow_multiplier', '0x1', 'FIELD_TYPE_ERROR'],
    ['VM.set_actions_after_crash', 'explode', 'INVALID_VALUE'],
    ['VM.set_actions_after_crash', true, 'FIELD_TYPE_ERROR'],
    ['VM.set_tags', 'tag', 'FIELD_TYPE_ERROR'],
    ['VM.set_tags', [true, false], 'FIELD_TYPE_ERROR'],
    ['VM.set_tags', [['nested']], 'FIELD_TYPE_ERROR'],
    ['VM.set_other_config', ['k', 'v'], 'FIELD_TYPE_ERROR'],
    ['VM.set_other_config', { k: true }, 'FIELD_TYPE_ERROR'],
    ['VM.set_other_config', { k: { v: 'x' } }, 'FIELD_TYPE_ERROR'],
    ['VM.set_affinity', 'not a ref', 'HANDLE_INVALID'],
    ['VM.set_affinity', 'OpaqueRef:<x>', 'HANDLE_INVALID'],
    ['VM.set_suspend_SR', true, 'FIELD_TYPE_ERROR'],
  ];
  for (const [method, value, code] of refusals) {
    for (const error of await both(method, [s, vm, value])) assert.equal(error?.[0], code, `${method}(${JSON.stringify(value)}): ${JSON.stringify(error)}`);
  }
  for (const error of await both('VM.get_record', [s, 'garbage'])) assert.equal(error?.[0], 'HANDLE_INVALID');
  assert.deepEqual(await t.client.api.VM.get_record(vm), before);
});

test('strings XML 1.0 cannot carry are refused on both codecs, naming the parameter', async () => {
  const s = t.client.session;
  const vm = (await t.client.api.VM.get_all())[0];
  const before = await t.client.api.VM.get_record(vm);
  // XML can carry these only as character references (which its parser decodes): sent so
  const asReferences = (text: string): string => text.replace(/[^\x20-\x7e]/g, (c) => `&#${c.charCodeAt(0)};`);
  for (const bad of ['a\u0001b', '\u0000', 'x\u001f', '\ud800', 'a\udfffb', '\ufffe', '\uffff']) {
    const call = `<methodCall><methodName>VM.set_name_label</methodName><params><param><value>${s}</value></param><param><value>${vm}</value></param><param><value>${asReferences(bad)}</value></param></params></methodCall>`;
    const xml = decodeMethodResponse((await post(t.url, '/', call, 'text/xml')).text) as { ErrorDescription: string[] };
    const json = JSON.parse((await post(t.url, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method: 'VM.set_name_label', params: [s, vm, bad], id: 1 }), 'application/json')).text);
    assert.equal(xml.ErrorDescription[0], 'INVALID_VALUE', JSON.stringify(bad));
    assert.equal(xml.ErrorDescription[1], 'value');
    assert.deepEqual([json.error.message, json.error.data[0]], ['INVALID_VALUE', 'value'], JSON.stringify(bad));
    const json2 = JSON.parse((await post(t.url, '/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method: 'VM.set_tags', params: [s, vm, ['ok', bad]], id: 1 }), 'application/json')).text);
    assert.equal(json2.error.message, 'INVALID_VALUE');
  }
  // tabs, newlines, CR, markup, astral characters and U+FFFD are fine and come back intact
  const fine = 'a\tb\nc\rd <e> & "f" \u{1F600} \ufffd ]]>';
  await t.client.api.VM.set_name_description(vm, fine);
  const x = decodeMethodResponse((await post(t.url, '/', encodeMethodCall('VM.get_name_description', [s, vm]), 'text/xml')).text) as { Value: string };
  assert.equal(x.Value, fine);
  await t.client.api.VM.set_name_description(vm, before.name_description);
  assert.equal((await t.client.api.VM.get_record(vm)).name_label, before.name_label);
});

test('a control character already stored still makes a well-formed XML-RPC reply', async () => {
  const s = t.client.session;
  const vm = (await t.client.api.VM.get_all())[0];
  const { store } = t.server.services;
  const label = store.get('VM', vm)?.name_label;
  store.transact((tx) => void tx.update('VM', vm, { name_label: 'old\u0001data\ufffe\r', other_config: { 'k\u0002': 'v\u0003' } }));
  try {
    for (const method of ['VM.get_all_records', 'VM.get_record', 'VM.get_name_label']) {
      const r = await post(t.url, '/', encodeMethodCall(method, method === 'VM.get_all_records' ? [s] : [s, vm]), 'text/xml');
      assert.doesNotMatch(r.text, /[\u0001-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/, method);
      assert.equal((decodeMethodResponse(r.text) as { Status: string }).Status, 'Success');
    }
  } finally {
    store.transact((tx) => void tx.update('VM', vm, { name_label: label, other_config: {} }));
  }
});

test('an RPC body over the cap is refused with 413 before it is sent (Expect: 100-continue), a huge header with 431', async () => {
  const r = await rawRequest(port, `POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
  assert.equal(r.status, 413);
  assert.equal((JSON.parse(r.body) as { error: { message: string } }).error.message, 'INTERNAL_ERROR');
  const big = await rawRequest(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
  assert.equal(big.status, 431);
  await stillServing();
});

test('an RPC body that does not arrive in time gets a 408 with a XenAPI error', async () => {
  const slow = await startTestServer({ config: { httpLimits: { rpcBodyTimeoutMs: 1500 } } });
  try {
    const started = Date.now();
    const r = await rawRequest(portOf(slow.url), 'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 100\r\n\r\n<methodCall>', 10_000);
    assert.equal(r.status, 408);
    assert.equal((decodeMethodResponse(r.body) as { Status: string }).Status, 'Failure');
    assert.ok(Date.now() - started < 4000);
  } finally {
    await slow.close();
  }
});
