/**
 * The fencer on its own (src/ha/fencer.ts), driven through its socket as a
 * daemon adopting it would, with a stand-in etcd (its JSON gateway's
 * `/v3/lease/keepalive`) and a stand-in guest (a `qemu-system-…` process
 * running in the run directory):
 * - a hold keeps the guest alive past the deadline while etcd renews the lease,
 *   and fences once the grace period is over;
 * - etcd saying the held lease is gone fences at once;
 * - input on the socket is untrusted: an overlong line drops the connection,
 *   a malformed hold is ignored (the deadline stands).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { alive, killProcessesNaming } from './helpers.ts';

const FENCER = new URL('../../src/ha/fencer.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'xfencer-'));
after(() => {
  killProcessesNaming(dir);
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowNs = (): bigint => process.hrtime.bigint();

/** A stand-in etcd answering keepalives with `ttl()` (0: the lease is gone, as the gateway says it: no TTL). */
async function fakeEtcd(ttl: () => number): Promise<{ server: Server; url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      hits++;
      const id = (JSON.parse(body) as { ID: string }).ID;
      const t = ttl();
      res.end(`${JSON.stringify({ result: { header: {}, ID: id, ...(t > 0 ? { TTL: String(t) } : {}) } })}\n`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, url: `http://127.0.0.1:${port}`, hits: () => hits };
}

interface Lab {
  fencer: ChildProcess;
  guest: ChildProcess;
  socket: Socket;
  said: string[];
  stop(): void;
}

let n = 0;
async function startLab(): Promise<Lab> {
  const base = join(dir, String(n++));
  const runDir = join(base, 'run');
  mkdirSync(join(runDir, 'vm'), { recursive: true });
  const qemu = join(base, 'qemu-system-fake');
  symlinkSync('/bin/sleep', qemu);
  const guest = spawn(qemu, ['600'], { cwd: join(runDir, 'vm'), stdio: 'ignore' });
  const sock = join(base, 'fencer.sock');
  const fencer = spawn(process.execPath, ['--import', 'tsx', FENCER, `${runDir}/`, sock], { stdio: ['pipe', 'ignore', 'pipe'] });
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(50);
  assert.equal(statSync(sock).mode & 0o777, 0o600, 'only root reaches the socket');
  const socket = connect(sock);
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  const said: string[] = [];
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => said.push(d));
  fencer.stdin?.end(); // the daemon that started it is gone: only the socket is left
  return {
    fencer, guest, socket, said,
    stop: () => {
      for (const p of [fencer, guest]) if (p.exitCode === null) p.kill('SIGKILL');
    },
  };
}

const send = (s: Socket, msg: unknown): void => void s.write(`${JSON.stringify(msg)}\n`);

test('a hold keeps the lease alive past the deadline, then fences when the grace period ends', { timeout: 60_000 }, async () => {
  const etcd = await fakeEtcd(() => 5);
  const lab = await startLab();
  try {
    send(lab.socket, { arm: (nowNs() + 1_500_000_000n).toString() });
    const held = Date.now();
    send(lab.socket, { hold: { lease: '7587', endpoints: [etcd.url], ttlS: 5, graceMs: 3000 } });
    await sleep(4500);
    assert.ok(alive(lab.guest.pid), 'the guest outlived the deadline the daemon left');
    assert.ok(etcd.hits() >= 2, `keepalives sent (${etcd.hits()})`);
    while (alive(lab.guest.pid) && Date.now() - held < 15_000) await sleep(50);
    const fencedMs = Date.now() - held;
    assert.ok(!alive(lab.guest.pid), 'fenced once the grace period was over');
    // the last keepalive went out before the grace ended (3 s): its deadline is at most 4 s later
    assert.ok(fencedMs >= 3000 && fencedMs <= 8000, `fenced ${fencedMs} ms after the hold`);
    await sleep(200);
    assert.match(lab.said.join(''), /"fenced":1/);
  } finally {
    lab.stop();
    etcd.server.close();
  }
});

test('etcd saying the held lease is gone fences at once', { timeout: 60_000 }, async () => {
  const etcd = await fakeEtcd(() => 0);
  const lab = await startLab();
  try {
    send(lab.socket, { arm: (nowNs() + 4_000_000_000n).toString() });
    const held = Date.now();
    send(lab.socket, { hold: { lease: '7587', endpoints: [etcd.url], ttlS: 5, graceMs: 60_000 } });
    while (alive(lab.guest.pid) && Date.now() - held < 10_000) await sleep(20);
    assert.ok(Date.now() - held < 2000, `fenced ${Date.now() - held} ms after the hold, before its deadline`);
  } finally {
    lab.stop();
    etcd.server.close();
  }
});

test('input on the socket is untrusted: an overlong line drops the connection, a malformed hold is ignored', { timeout: 60_000 }, async () => {
  const etcd = await fakeEtcd(() => 5);
  const lab = await startLab();
  try {
    const other = connect(join(dir, String(n - 1), 'fencer.sock'));
    await new Promise<void>((r, j) => other.once('connect', r).once('error', j));
    const closed = new Promise<void>((r) => other.once('close', () => r()));
    other.on('error', () => undefined);
    other.write('x'.repeat(10_000));
    await closed;
    send(lab.socket, { arm: (nowNs() + 2_000_000_000n).toString() });
    const armed = Date.now();
    // a hold naming something that is not a member's client URL, then one with a grace past the limit
    send(lab.socket, { hold: { lease: '7587', endpoints: ['http://evil.example/'], ttlS: 5, graceMs: 60_000 } });
    send(lab.socket, { hold: { lease: '7587', endpoints: [etcd.url], ttlS: 5, graceMs: 10 ** 9 } });
    while (alive(lab.guest.pid) && Date.now() - armed < 10_000) await sleep(20);
    assert.ok(!alive(lab.guest.pid));
    assert.ok(Date.now() - armed < 3500, 'fenced at the deadline it had');
    assert.equal(etcd.hits(), 0, 'no keepalive on a malformed hold');
  } finally {
    lab.stop();
    etcd.server.close();
  }
});
