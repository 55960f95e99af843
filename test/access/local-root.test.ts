/**
 * Local root as xapi does it: a Unix socket in the data directory (and any
 * `--local-socket` path), 0600, where Python's XenAPI binding over its
 * UDSTransport (what `XenAPI.xapi_local()` uses: xen-api's XenAPI.py at
 * /var/lib/xcp/xapi, Debian's os-xenapi at /var/xapi/xapi) logs in with any
 * credentials as the local superuser; a local unprivileged user cannot connect.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const PYTHON = '/usr/bin/python3';
const BINDING = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const noPython = !existsSync(PYTHON) || !existsSync(BINDING) ? 'python3-os-xenapi is not installed' : false;

let t: TestServer;
let open: string;
let extra: string;

before(async () => {
  open = mkdtempSync(join(tmpdir(), 'xenon-local-'));
  chmodSync(open, 0o755); // a directory anyone may enter: only the socket's own mode protects it
  extra = join(open, 'xapi');
  t = await startTestServer({ config: { localSockets: [extra] } });
});
after(async () => {
  await t.close();
  rmSync(open, { recursive: true, force: true });
});

/** Logs in over a local socket with XenAPI.py's UDSTransport, as xapi_local() does, and reads the session back. */
const PY = `
import json, sys, xmlrpc.client
from os_xenapi.client import XenAPI

class Transport(XenAPI.UDSTransport):
    # os-xenapi 0.3.4's override predates Python 3's send_request(host, handler, body, debug); the rest is its own
    send_request = xmlrpc.client.Transport.send_request

path = sys.argv[1]
s = XenAPI.Session("http://" + path.replace("/", "_") + "/", transport=Transport())
s.xenapi.login_with_password(sys.argv[2], sys.argv[3], "2.21", "local-test")
me = s.xenapi.session.get_record(s._session)
pool = s.xenapi.pool.get_all()[0]
s.xenapi.pool.set_name_description(pool, "set over the local socket")
print(json.dumps({"superuser": me["is_local_superuser"], "name": me["auth_user_name"]}))
s.xenapi.session.logout()
`;

test('the local sockets are 0600', () => {
  for (const path of [join(t.dataDir, 'xapi'), extra]) {
    assert.ok(lstatSync(path).isSocket(), `${path} is a socket`);
    assert.equal(lstatSync(path).mode & 0o777, 0o600);
  }
});

test('XenAPI.py over the local socket: any credentials make a local superuser session', { skip: noPython }, async () => {
  for (const path of [join(t.dataDir, 'xapi'), extra]) {
    const { stdout } = await promisify(execFile)(PYTHON, ['-c', PY, path, 'whoever', 'not-a-password'], { encoding: 'utf8', timeout: 30_000 });
    assert.deepEqual(JSON.parse(stdout), { superuser: true, name: 'whoever' });
  }
  const [pool] = await t.client.api.pool.get_all();
  assert.equal(await t.client.call('pool.get_name_description', [t.client.session, pool]), 'set over the local socket');
});

test('the same credentials over TCP are refused', async () => {
  const { XenApiClient } = await import('../../src/client/client.ts');
  const c = new XenApiClient(t.url);
  await assert.rejects(c.login('whoever', 'not-a-password'), /SESSION_AUTHENTICATION_FAILED/);
  c.close();
});

test('a local unprivileged user cannot connect to the local socket', { skip: process.getuid?.() !== 0 && 'needs root to switch users' }, () => {
  const probe = `import socket; s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(extra)})`;
  const r = spawnSync('runuser', ['-u', 'nobody', '--', PYTHON, '-c', probe], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Permission denied/);
});
