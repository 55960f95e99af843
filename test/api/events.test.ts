/** event.from tokens, valid_ref_counts, wake-ups, legacy register/next, inject. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

interface Ev { id: number; class: string; operation: string; ref: string; snapshot: Record<string, unknown> }
interface Batch { events: Ev[]; valid_ref_counts: Record<string, number>; token: string }

let t: TestServer;
before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const from = (classes: string[], token: string, timeout = 0.05): Promise<Batch> =>
  t.client.call('event.from', [t.client.session, classes, token, timeout]) as Promise<Batch>;

test('an empty token returns every live object as an add, with counts including task', async () => {
  const b = await from(['VM', 'host'], '');
  const vms = await t.client.api.VM.get_all();
  const got = b.events.filter((e) => e.class === 'vm');
  assert.equal(got.length, vms.length);
  assert.ok(got.every((e) => e.operation === 'add' && vms.includes(e.ref as never)));
  assert.ok(b.events.some((e) => e.class === 'host'));
  assert.equal(b.valid_ref_counts.vm, vms.length);
  assert.ok('task' in b.valid_ref_counts);
  assert.ok(b.token.length > 0);
});

test('an empty token also returns the objects loaded from the database at start (the log only holds changes since)', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xenon-ev-restart-'));
  try {
    const first = await startTestServer({ dataDir });
    const net = await first.client.api.network.create({ name_label: 'before the restart' } as never);
    await first.close();
    const second = await startTestServer({ dataDir });
    try {
      const b = (await second.client.call('event.from', [second.client.session, ['network', 'pool'], '', 0.05])) as Batch;
      assert.ok(b.events.some((e) => e.ref === net && e.operation === 'add' && e.snapshot.name_label === 'before the restart'));
      assert.ok(b.events.some((e) => e.class === 'pool'));
      const next = (await second.client.call('event.from', [second.client.session, ['network'], b.token, 0.05])) as Batch;
      assert.equal(next.events.length, 0, 'the token it gave follows on from there');
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('after a token, each change comes once, in order, with its snapshot', async () => {
  const { token } = await from(['network'], '');
  const net = await t.client.api.network.create({ name_label: 'ev1' } as never);
  await t.client.api.network.set_name_label(net, 'ev2');
  const other = await t.client.api.network.create({ name_label: 'ev3' } as never);
  const b = await from(['network'], token);
  assert.deepEqual(b.events.map((e) => [e.ref, e.operation]), [[net, 'add'], [other, 'add']]);
  assert.equal(b.events[0].snapshot.name_label, 'ev2', 'latest state');
  const again = await from(['network'], b.token);
  assert.equal(again.events.length, 0, 'nothing seen twice');
  await t.client.api.network.set_name_label(net, 'ev4');
  await t.client.api.network.destroy(other);
  const c = await from(['network'], b.token);
  assert.deepEqual(c.events.map((e) => [e.ref, e.operation]), [[net, 'mod'], [other, 'del']]);
  assert.equal(c.events[0].snapshot.name_label, 'ev4');
});

test('class names match case-insensitively; unknown names are ignored; * is everything', async () => {
  const { token } = await from(['*'], '');
  const net = await t.client.api.network.create({ name_label: 'case' } as never);
  assert.equal((await from(['NETWORK', 'no_such_class'], token)).events.filter((e) => e.ref === net).length, 1);
  assert.equal((await from(['vm'], token)).events.filter((e) => e.ref === net).length, 0);
  assert.ok((await from(['*'], token)).events.some((e) => e.ref === net));
});

test('event.from waits for a change and wakes at once', async () => {
  const { token } = await from(['network'], '');
  const started = Date.now();
  const waiting = from(['network'], token, 30);
  setTimeout(() => void t.client.api.network.create({ name_label: 'wake' } as never), 50);
  const b = await waiting;
  assert.equal(b.events.length, 1);
  assert.ok(Date.now() - started < 5000);
});

test('event.from times out with no events and the same position', async () => {
  const { token } = await from(['network'], '');
  const started = Date.now();
  const b = await from(['network'], token, 0.3);
  assert.equal(b.events.length, 0);
  assert.ok(Date.now() - started >= 250);
  const net = await t.client.api.network.create({ name_label: 'after-timeout' } as never);
  assert.deepEqual((await from(['network'], b.token)).events.map((e) => e.ref), [net]);
});

test('a bad token is EVENT_FROM_TOKEN_PARSE_FAILURE', async () => {
  await failsWith(from(['vm'], 'garbage'), 'EVENT_FROM_TOKEN_PARSE_FAILURE');
});

test('event.inject makes a mod event and returns a token', async () => {
  const [pool] = await t.client.api.pool.get_all();
  const { token } = await from(['pool'], '');
  const injected = (await t.client.call('event.inject', [t.client.session, 'pool', pool])) as string;
  assert.ok(injected.length > 0);
  const b = await from(['pool'], token);
  assert.deepEqual(b.events.map((e) => [e.ref, e.operation]), [[pool, 'mod']]);
  await failsWith(t.client.call('event.inject', [t.client.session, 'pool', 'OpaqueRef:none']), 'HANDLE_INVALID');
});

test('legacy register/next delivers changes; next without register fails', async () => {
  await failsWith(t.client.call('event.next', [t.client.session]), 'SESSION_NOT_REGISTERED');
  await t.client.call('event.register', [t.client.session, ['network']]);
  const net = await t.client.api.network.create({ name_label: 'legacy' } as never);
  const evs = (await t.client.call('event.next', [t.client.session])) as Ev[];
  assert.ok(evs.some((e) => e.ref === net && e.operation === 'add'));
  await t.client.call('event.unregister', [t.client.session, ['network']]);
});

test('a failed transaction emits nothing', async () => {
  const { token } = await from(['network'], '');
  await failsWith(t.client.api.network.create({ name_label: 'x', MTU: 'no' } as never), 'FIELD_TYPE_ERROR');
  assert.equal((await from(['network'], token, 0.05)).events.length, 0);
});
