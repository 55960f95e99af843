/**
 * event.from with any timeout — huge, zero, negative, a string — waits without
 * spinning or logging in a loop, and returns as soon as an event arrives.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import { jsonRpc, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
let logWrites = 0;
const warnings: string[] = [];
const onWarning = (w: Error): void => void warnings.push(w.name);

before(async () => {
  const sink = new Writable({ write: (_c, _e, cb) => { logWrites++; cb(); } });
  t = await startTestServer({ config: { logger: pino({ level: 'debug' }, sink) } });
  process.on('warning', onWarning);
});
after(async () => {
  process.off('warning', onWarning);
  await t.close();
});

const token = async (): Promise<string> => ((await t.client.call('event.from', [t.client.session, ['pool'], '', 0])) as { token: string }).token;
const poke = async (): Promise<void> => {
  const [pool] = await t.client.api.pool.get_all();
  await t.client.call('pool.add_to_other_config', [t.client.session, pool, `k${Math.random()}`, 'v']);
};

test('a huge timeout waits quietly and returns as soon as an event arrives', async () => {
  for (const timeout of [1e12, 1e300, 2 ** 31]) {
    const from = await token();
    const writesBefore = logWrites;
    const cpuBefore = process.cpuUsage();
    const started = Date.now();
    const pending = t.client.call('event.from', [t.client.session, ['pool'], from, timeout]);
    await new Promise((r) => setTimeout(r, 700));
    const cpu = process.cpuUsage(cpuBefore);
    assert.ok(cpu.user + cpu.system < 300_000, `waiting cost ${cpu.user + cpu.system} µs of CPU`);
    assert.ok(logWrites - writesBefore < 5, `${logWrites - writesBefore} log lines while waiting`);
    await poke();
    const reply = (await pending) as { events: unknown[] };
    assert.ok(reply.events.length > 0);
    assert.ok(Date.now() - started < 3000);
  }
  assert.deepEqual(warnings.filter((w) => w === 'TimeoutOverflowWarning'), []);
});

test('zero and negative timeouts return at once; a string or NaN is no wait either', async () => {
  const from = await token();
  for (const timeout of [0, -5, -1e300]) {
    const started = Date.now();
    const reply = (await t.client.call('event.from', [t.client.session, ['pool'], from, timeout])) as { events: unknown[] };
    assert.equal(reply.events.length, 0);
    assert.ok(Date.now() - started < 500);
  }
  for (const timeout of ['soon', 'NaN', '']) {
    const started = Date.now();
    const reply = await jsonRpc(t.url, 'event.from', [t.client.session, ['pool'], from, timeout]);
    assert.ok(Date.now() - started < 500, `timeout ${JSON.stringify(timeout)} waited`);
    assert.ok(reply.result !== undefined || reply.error !== undefined);
  }
});
