/** xe over HTTPS: the certificate is checked, or pinned on first use in ~/.xe-known-hosts. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { runXe, tempHome } from './xe-helpers.ts';

let t: TestServer;
let args: string[];

before(async () => {
  t = await startTestServer({ config: { https: { host: '127.0.0.1', port: 0 } } });
  const u = new URL(t.server.httpsUrl!);
  args = ['-s', u.hostname, '-p', u.port, '-u', 'root', '-pw', ROOT_PASSWORD];
});
after(() => t.close());

test('HTTPS by default: a self-signed certificate is refused', async () => {
  const r = await runXe([...args, 'host-list'], { home: tempHome() });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /certificate/);
});

test('trust on first use pins the fingerprint and refuses a changed one', async () => {
  const home = tempHome();
  const [host] = await t.client.api.host.get_all();
  const hostUuid = await t.client.api.host.get_uuid(host);
  const first = await runXe([...args, '--trust-on-first-use', 'host-list', '--minimal'], { home });
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trim(), hostUuid);
  assert.match(first.stderr, /first use/);
  const known = readFileSync(join(home, '.xe-known-hosts'), 'utf8');
  const u = new URL(t.server.httpsUrl!);
  assert.match(known, new RegExp(`^${u.hostname}:${u.port} [0-9A-F:]{95}\\n$`));
  // the second time: silent, same pin; tofu=true in ~/.xe does the same
  writeFileSync(join(home, '.xe'), 'tofu=true\n');
  const again = await runXe([...args, 'host-list', '--minimal'], { home });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stderr, '');
  // a different certificate behind the same address is refused
  writeFileSync(join(home, '.xe-known-hosts'), `${u.hostname}:${u.port} ${'AB:'.repeat(31)}AB\n`);
  const changed = await runXe([...args, 'host-list'], { home });
  assert.equal(changed.code, 1);
  assert.match(changed.stderr, /has changed/);
  assert.equal(changed.stdout, '');
});
