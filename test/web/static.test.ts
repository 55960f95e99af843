/** GET / serves the built web console: only the build's own files, with strict headers; a readable page when it is not built. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const dir = mkdtempSync(join(tmpdir(), 'xenon-webdist-'));
const outside = join(dir, '..', `${join(dir).split('/').pop()}-secret.txt`);
let t: TestServer;
let bare: TestServer;

before(async () => {
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>Xenon</title><script type="module" src="/assets/app-abc123.js"></script>');
  writeFileSync(join(dir, 'assets', 'app-abc123.js'), `console.log(${JSON.stringify('x'.repeat(4000))});`);
  writeFileSync(outside, 'not to be served');
  t = await startTestServer({ config: { webDir: dir } });
  bare = await startTestServer({ config: { webDir: join(dir, 'missing') } });
});
after(async () => {
  await t.close();
  await bare.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { force: true });
});

/** A request written by hand, so that no client normalises the path first. */
function raw(url: string, request: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ host: '127.0.0.1', port: Number(port) }, () => s.write(request));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    setTimeout(() => { s.destroy(); resolve(out); }, 2000);
  });
}

test('GET / is the console page, with a CSP that allows only its own origin, no framing and no sniffing', async () => {
  assert.equal(t.server.webConsole, true);
  const res = await fetch(`${t.url}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(await res.text(), /<title>Xenon<\/title>/);
  const csp = res.headers.get('content-security-policy') ?? '';
  for (const d of ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) assert.ok(csp.includes(d), d);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.equal(res.headers.get('cache-control'), 'no-cache', 'the page is revalidated: it names the current build');
});

test('hashed assets are immutable, gzipped when asked, and revalidate by ETag', async () => {
  const res = await fetch(`${t.url}/assets/app-abc123.js`, { headers: { 'Accept-Encoding': 'identity' } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/javascript/);
  assert.match(res.headers.get('cache-control') ?? '', /immutable/);
  const body = await res.text();
  const gz = await raw(t.url, 'GET /assets/app-abc123.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n');
  assert.match(gz, /content-encoding: gzip/i);
  const gzBody = Buffer.from(gz.slice(gz.indexOf('\r\n\r\n') + 4), 'latin1');
  assert.equal(gunzipSync(gzBody).toString(), body);
  const etag = res.headers.get('etag')!;
  const again = await fetch(`${t.url}/assets/app-abc123.js`, { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
});

test('nothing outside the build is reachable: traversal, encoded traversal, unknown files', async () => {
  const name = outside.split('/').pop()!;
  for (const path of [`/../${name}`, `/assets/../../${name}`, `/assets/%2e%2e/%2e%2e/${name}`, `/%2e%2e%2f${name}`, '/assets/..%2f..%2findex.html', '/xenon.db', '/assets/']) {
    const reply = await raw(t.url, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.ok(!reply.includes('not to be served'), path);
    assert.match(reply, /^HTTP\/1\.1 (400|404)/, path);
  }
});

test('HEAD answers headers only; other methods on a file are refused; POST / is still XML-RPC', async () => {
  const head = await raw(t.url, 'HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(head, /^HTTP\/1\.1 200/);
  assert.ok(!head.includes('<title>'));
  const put = await fetch(`${t.url}/index.html`, { method: 'PUT', body: 'x' });
  assert.equal(put.status, 405);
  const rpc = await fetch(`${t.url}/`, { method: 'POST', headers: { 'Content-Type': 'text/xml' }, body: '<?xml version="1.0"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>root</value></param><param><value>wrong</value></param></params></methodCall>' });
  assert.match(await rpc.text(), /SESSION_AUTHENTICATION_FAILED/);
});

test('without a build, GET / says how to build it (503, not a blank page)', async () => {
  assert.equal(bare.server.webConsole, false);
  const res = await fetch(`${bare.url}/`);
  assert.equal(res.status, 503);
  assert.match(await res.text(), /npm run build:web/);
});
