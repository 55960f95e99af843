/**
 * No client starves the others, and no flood takes the daemon's memory: a real
 * `xenon server` (sim backend, default limits) under thousands of idle and
 * slow-header sockets and a few hundred concurrent 16 MB bodies.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenApiClient } from '../../src/client/client.ts';
import { spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { portOf, rawRequest } from '../helpers/raw-http.ts';

let d: Daemon;
let dataDir: string;
before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'xenon-limits-'));
  d = await spawnDaemon(dataDir, { args: ['--backend', 'sim', '--network', 'none'] });
});
after(async () => {
  d?.proc.kill('SIGTERM');
  await d?.exited;
  rmSync(dataDir, { recursive: true, force: true });
});

/** The daemon's resident memory, now and at its peak (MiB). */
function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

async function timedLogin(url: string): Promise<number> {
  const started = Date.now();
  const c = new XenApiClient(url);
  await c.login('root', 'xenon-test-root');
  await c.api.host.get_all();
  c.close();
  return Date.now() - started;
}

interface Opened {
  socket: net.Socket;
  opened: number;
  closed?: number;
}

function open(port: number, localAddress: string): Promise<Opened> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const o: Opened = { socket, opened: Date.now() };
    socket.on('error', () => undefined);
    socket.on('close', () => (o.closed ??= Date.now()));
    socket.once('connect', () => resolve(o));
    socket.once('close', () => resolve(o));
  });
}

test('thousands of idle and slow-header sockets do not stop a fresh client; slow headers are closed within 30 s', { timeout: 120_000 }, async () => {
  const port = portOf(d.url);
  const sockets: Opened[] = [];
  try {
    // 2000 sockets from 20 addresses: half send nothing, half trickle a header that never ends
    for (let i = 0; i < 2000; i += 100) {
      const from = `127.0.0.${10 + i / 100}`;
      sockets.push(...(await Promise.all(Array.from({ length: 100 }, () => open(port, from)))));
    }
    const slow = sockets.filter((_, i) => i % 2 === 1);
    for (const s of slow) s.socket.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const trickle = setInterval(() => {
      for (const s of slow) if (!s.closed) s.socket.write('a');
    }, 2000);
    try {
      for (let i = 0; i < 3; i++) {
        const ms = await timedLogin(d.url);
        assert.ok(ms < 2000, `a fresh client took ${ms} ms to log in beside 2000 idle and slow sockets`);
      }
      // and from the same address as a flood far past the per-client cap
      const crowd = await Promise.all(Array.from({ length: 600 }, () => open(port, '127.0.0.1')));
      sockets.push(...crowd);
      const ms = await timedLogin(d.url);
      assert.ok(ms < 2000, `a fresh client took ${ms} ms to log in beside 600 idle sockets of its own address`);

      const deadline = Date.now() + 45_000;
      while (slow.some((s) => !s.closed) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
    } finally {
      clearInterval(trickle);
    }
    const late = slow.filter((s) => s.closed === undefined || s.closed - s.opened > 30_000);
    assert.equal(late.length, 0, `${late.length} slow-header sockets still open after 30 s`);
    assert.ok(sockets.filter((s) => s.closed !== undefined).length >= 1000, 'idle sockets are closed too');
    assert.ok((await timedLogin(d.url)) < 2000);
  } finally {
    for (const s of sockets) s.socket.destroy();
  }
});

/** `count` concurrent JSON-RPC logins of `size` bytes (a huge password), from 50 addresses; the statuses seen. */
async function flood(port: number, count: number, size: number): Promise<Map<number, number>> {
  // one body shared by every request: the test itself must not hold gigabytes
  const payload = Buffer.alloc(size, 'a');
  Buffer.from('{"method":"session.login_with_password","params":["root","').copy(payload, 0);
  Buffer.from('"],"id":1}').copy(payload, size - 10);
  const head = Buffer.from(`POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`);
  const replies = await Promise.all(Array.from({ length: count }, (_, i) => rawRequest(port, [head, payload], 150_000, `127.0.1.${1 + (i % 50)}`)));
  const statuses = new Map<number, number>();
  for (const r of replies) {
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    const reply = JSON.parse(r.body) as { error?: unknown };
    assert.ok(reply.error, 'every reply is an error: no session, or refused');
  }
  return statuses;
}

test('a few hundred concurrent large bodies without a session: clear refusals, memory well under 1 GB', { timeout: 180_000 }, async () => {
  const port = portOf(d.url);
  const before = memoryOf(d.proc.pid!);
  let sampled = before.rss;
  const sampler = setInterval(() => (sampled = Math.max(sampled, memoryOf(d.proc.pid!).rss)), 100);
  let huge: Map<number, number>;
  let large: Map<number, number>;
  try {
    // over the body cap: 413 before anything is buffered
    huge = await flood(port, 200, 16 * 1024 * 1024);
    // under the cap, but together far over the bytes allowed in flight: some served, the rest TOO_BUSY
    large = await flood(port, 300, 2 * 1024 * 1024 - 1024);
  } finally {
    clearInterval(sampler);
  }
  const peak = Math.max(sampled, memoryOf(d.proc.pid!).peak);
  process.stdout.write(`# RSS before ${before.rss.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB; 16 MB bodies ${JSON.stringify([...huge])}, 2 MB bodies ${JSON.stringify([...large])}\n`);
  assert.deepEqual([...huge], [[413, 200]]);
  assert.deepEqual([...large.keys()].sort(), [200, 503], 'served while within the budget, TOO_BUSY beyond');
  assert.ok(peak < 640, `daemon RSS peaked at ${peak.toFixed(0)} MiB`);
  assert.ok((await timedLogin(d.url)) < 2000);
});
