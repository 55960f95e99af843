/**
 * The real Python XenAPI binding (Debian's python3-os-xenapi, used unchanged)
 * against Xenon over XML-RPC: login and its API-version probe, records and
 * their wire types, maps, tasks, Async, events, failures, re-login on
 * SESSION_INVALID and logout. The driving script is xenapi_client.py.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

// Debian's interpreter: a pyenv python3 earlier on PATH cannot see Debian's packages
const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./xenapi_client.py', import.meta.url));
const BINDING = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const skip = !existsSync(PYTHON) || !existsSync(BINDING) ? 'python3-os-xenapi is not installed' : false;

let t: TestServer;
let out: Record<string, any>;

before(async () => {
  if (skip) return;
  t = await startTestServer();
  // asynchronously: the server runs in this process
  const { stdout } = await promisify(execFile)(PYTHON, [SCRIPT, t.url, 'root', ROOT_PASSWORD], { encoding: 'utf8', timeout: 60_000 });
  out = JSON.parse(stdout) as Record<string, any>;
});

after(async () => {
  await t?.close();
});

test('it logs in with two parameters and reads the API version of the master', { skip }, () => {
  assert.match(out.handle, /^OpaqueRef:[0-9a-f-]{36}$/);
  assert.equal(out.api_version, '2.21');
});

test('VM.get_all_records: VMs and templates, with xapi wire types', { skip }, () => {
  assert.ok(out.vm_refs_ok);
  assert.ok(out.vm_get_all_matches);
  assert.equal(out.dom0_count, 1);
  assert.ok(out.templates.length > 0);
  assert.ok(out.vm_count > out.templates.length);
  assert.deepEqual(out.vm_kinds, {
    name_label: 'str',
    is_a_template: 'bool',
    memory_static_max: 'str', // ints arrive as strings over XML-RPC
    VCPUs_max: 'str',
    other_config: 'dict',
    VBDs: 'list',
    power_state: 'str',
    resident_on: 'str',
    user_version: 'str',
  });
});

test('host and host_cpu records', { skip }, () => {
  assert.deepEqual(out.host, { is_master: true, API_version_major: '2', enabled: true, cpu_count: out.host.cpu_count, resident_dom0: true });
  assert.ok(out.host.cpu_count > 0);
  assert.deepEqual(out.host_kinds, {
    API_version_major: 'str',
    enabled: 'bool',
    memory_overhead: 'str',
    cpu_info: 'dict',
    host_CPUs: 'list',
    software_version: 'dict',
    name_label: 'str',
  });
  assert.deepEqual(out.host_cpu_kinds, { number: 'str', speed: 'str', utilisation: 'float', host: 'str' });
});

test('network.create and its other_config map', { skip }, () => {
  const n = out.network;
  assert.match(n.ref, /^OpaqueRef:/);
  assert.equal(n.name_label, 'py net');
  assert.equal(n.MTU, '1500');
  assert.deepEqual(n.after_add, { a: '1', b: '2' });
  assert.deepEqual(n.other_config, { b: '2' }, 'removing a missing key is no error');
  assert.deepEqual(n.duplicate, ['MAP_DUPLICATE_KEY', 'network', 'other_config', n.ref, 'b']);
  assert.ok(n.by_name);
});

test('a task: datetimes as XML-RPC dateTime, progress as a double', { skip }, () => {
  assert.equal(out.task.created_type, 'DateTime');
  assert.match(out.task.created, /^\d{8}T\d{2}:\d{2}:\d{2}Z$/);
  assert.equal(out.task.finished, '19700101T00:00:00Z', 'not finished yet: the epoch');
  assert.equal(out.task.progress_type, 'float');
  assert.equal(out.task.status, 'pending');
  assert.equal(out.task.name_label, 'py task');
});

test('Async: a task ref at once, the XML-RPC value of the result in the task', { skip }, () => {
  assert.match(out.async.task, /^OpaqueRef:/);
  assert.equal(out.async.status, 'success');
  assert.match(out.async.result, /^<value>OpaqueRef:[0-9a-f-]{36}<\/value>$/);
  assert.deepEqual(out.async.error_info, []);
  assert.deepEqual(out.async_void, { status: 'success', result: '' });
});

test('event.from with a float timeout and real-case class names', { skip }, () => {
  assert.deepEqual(out.events, { classes: ['network', 'vm'], token_type: 'str', id_type: 'str', task_count_type: 'int' });
});

test('failures come as XenAPI.Failure with the error description', { skip }, () => {
  assert.deepEqual(out.error, ['HANDLE_INVALID', 'VM', 'OpaqueRef:bogus']);
  assert.deepEqual(out.unknown, ['MESSAGE_METHOD_UNKNOWN', 'VM.frobnicate']);
});

test('on SESSION_INVALID it logs in again and retries; logout ends the session', { skip }, () => {
  assert.deepEqual(out.after_relogin, { vm_count: out.vm_count, new_handle: true });
  assert.equal(out.logged_out, true);
  assert.deepEqual(out.stale_session, { Status: 'Failure', ErrorDescription: ['SESSION_INVALID', out.handle] });
});

test('after hostile strings were sent, and with a control character already stored, every reply parses in Python', { skip }, async () => {
  const h = await startTestServer();
  try {
    // a record written before the edge checked strings (or by a buggy handler): still well-formed on the wire
    const { store } = h.server.services;
    const ref = store.transact((tx) => tx.create('network', { name_label: 'stored\u0001bad', other_config: { 'k\u0002': 'v\uffff' } }));
    const { stdout } = await promisify(execFile)(PYTHON, [fileURLToPath(new URL('./xenapi_hostile.py', import.meta.url)), h.url, 'root', ROOT_PASSWORD], { encoding: 'utf8', timeout: 120_000 });
    const hostile = JSON.parse(stdout) as { refused: Array<Record<string, string[] | null>>; kept: boolean[]; records: Record<string, number | string>; errors: string[]; labels: string[] };
    assert.deepEqual(hostile.errors, []);
    for (const attempt of hostile.refused) {
      for (const [what, details] of Object.entries(attempt)) assert.equal(details?.[0], 'INVALID_VALUE', `${what}: ${JSON.stringify(details)}`);
    }
    assert.deepEqual(hostile.kept, hostile.kept.map(() => true));
    assert.ok(Object.keys(hostile.records).length > 20, 'every class with records was read');
    assert.ok(hostile.labels.includes('stored\ufffdbad'), 'the stored control character travels as U+FFFD');
    assert.ok(!hostile.labels.some((l) => /[\u0000-\u0008]/.test(l)), 'no refused string was stored');
    assert.ok(store.get('network', ref));
  } finally {
    await h.close();
  }
});
