/**
 * What a local unprivileged user and a network client can get from the host:
 * the data directory's files are private (also those of an install made before
 * this), HTTPS refuses suites without forward secrecy, and the audit trail
 * records changes and refusals — never a password or a session reference —
 * in a private file that logrotate can move away (SIGHUP reopens it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { XenApiClient } from '../../src/client/client.ts';
import { freePort, spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { failsWith } from '../helpers/server.ts';

const PASSWORD = 'xenon-test-root';
let parent: string;
let dataDir: string;
let d: Daemon;
let httpsPort: number;

before(async () => {
  // a parent others may traverse, and an install from before: world-readable files
  parent = mkdtempSync(join(tmpdir(), 'xenon-files-'));
  chmodSync(parent, 0o755);
  dataDir = join(parent, 'data');
  mkdirSync(join(dataDir, 'old-sr'), { recursive: true, mode: 0o755 });
  chmodSync(dataDir, 0o755);
  writeFileSync(join(dataDir, 'old-sr', 'disk.vhd'), 'old disk', { mode: 0o644 });
  httpsPort = await freePort();
  d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none', '--https', `127.0.0.1:${httpsPort}`] });
});
after(async () => {
  d.proc.kill('SIGTERM');
  await d.exited;
  rmSync(parent, { recursive: true, force: true });
});

function walk(dir: string): string[] {
  return [dir, ...readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))];
}

test('every file of the data directory is private after start, the old ones too', () => {
  const entries = walk(dataDir);
  for (const f of ['xenon.db', 'xenon.db-wal', 'xenon-key.pem', 'xenon-cert.pem', 'audit.log', 'old-sr/disk.vhd']) {
    assert.ok(entries.includes(join(dataDir, f)), `${f} exists`);
  }
  const open = entries.filter((p) => !lstatSync(p).isSymbolicLink() && (lstatSync(p).mode & 0o077) !== 0);
  assert.deepEqual(open.map((p) => `${p} ${(lstatSync(p).mode & 0o777).toString(8)}`), []);
});

test('an unprivileged local user cannot read the database', { skip: process.getuid?.() !== 0 && 'needs root to switch users' }, () => {
  const r = spawnSync('runuser', ['-u', 'nobody', '--', 'cat', join(dataDir, 'xenon.db')], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Permission denied/);
  const key = spawnSync('runuser', ['-u', 'nobody', '--', 'cat', join(dataDir, 'xenon-key.pem')], { encoding: 'utf8' });
  assert.notEqual(key.status, 0);
});

function handshake(opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: httpsPort, rejectUnauthorized: false, ...opts }, () => {
      const name = s.getCipher().name;
      s.end();
      resolve(name);
    });
    s.on('error', reject);
  });
}

test('HTTPS: TLS 1.3 and ECDHE suites only; RSA key exchange and TLS 1.1 are refused', async () => {
  assert.match(await handshake({}), /^TLS_/);
  assert.match(await handshake({ maxVersion: 'TLSv1.2' }), /^ECDHE-/);
  for (const ciphers of ['AES128-SHA', 'AES128-GCM-SHA256', 'AES256-SHA256', 'DHE-RSA-AES128-GCM-SHA256']) {
    await assert.rejects(handshake({ maxVersion: 'TLSv1.2', ciphers }), `${ciphers} must be refused`);
  }
  const old = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${httpsPort}`, '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'], { input: '', encoding: 'utf8', timeout: 10_000 });
  if (!old.error) assert.doesNotMatch(old.stdout, /Cipher is (?!\(NONE\))/, 'a TLS 1.1 handshake completed');
});

test('the audit trail: changes and refusals with who and from where, no secrets; reopened on SIGHUP', async () => {
  const c = new XenApiClient(d.url);
  const session = await c.login('root', PASSWORD, 'audit-test');
  const [pool] = (await c.call('pool.get_all', [session])) as string[];
  await c.call('pool.set_name_description', [session, pool, 'audited']);
  await c.call('VM.get_all_records', [session]); // a read: not logged
  const intruder = new XenApiClient(d.url);
  await failsWith(intruder.login('root', 'wrong-password-1234'), 'SESSION_AUTHENTICATION_FAILED');
  await failsWith(intruder.call('pool.set_name_label', ['OpaqueRef:forged', pool, 'x']), 'SESSION_INVALID');
  const path = join(dataDir, 'audit.log');
  const text = readFileSync(path, 'utf8');
  assert.equal(lstatSync(path).mode & 0o777, 0o600);
  assert.ok(!text.includes(PASSWORD) && !text.includes('wrong-password-1234'), 'a password in the audit log');
  assert.ok(!text.includes(session), 'a session reference in the audit log');
  const entries = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
  const find = (message: string, outcome: string): Record<string, string> | undefined => entries.find((e) => e.message === message && e.outcome === outcome);
  const change = find('pool.set_name_description', 'ok');
  assert.ok(change, 'the change is logged');
  assert.equal(change.subject, 'root');
  assert.equal(change.originator, 'audit-test');
  assert.match(change.address, /127\.0\.0\.1/);
  assert.ok(!Number.isNaN(Date.parse(change.time)));
  assert.equal(find('session.login_with_password', 'refused')?.error, 'SESSION_AUTHENTICATION_FAILED');
  assert.equal(find('pool.set_name_label', 'refused')?.error, 'SESSION_INVALID');
  assert.equal(find('VM.get_all_records', 'ok'), undefined);

  renameSync(path, `${path}.1`);
  d.proc.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  await c.call('pool.set_name_description', [session, pool, 'after rotation']);
  assert.equal(lstatSync(path).mode & 0o777, 0o600);
  assert.match(readFileSync(path, 'utf8'), /pool\.set_name_description/);
  assert.equal(d.proc.exitCode, null, 'SIGHUP does not stop the daemon');
  c.close();
  intruder.close();
});
