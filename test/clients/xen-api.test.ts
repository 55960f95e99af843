/**
 * Xen Orchestra's `xen-api` package, unchanged, against Xenon: it logs in,
 * discovers the classes through system.listMethods, fills its object cache
 * from every <Class>.get_all_records, follows event.from, runs Async calls
 * and reads their results from the task — over JSON-RPC, and over XML-RPC
 * when forced.
 */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, before, describe, test } from 'node:test';
// @ts-expect-error the package ships no type declarations
import { createClient } from 'xen-api';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

type Xapi = any;
type XRecord = Record<string, any> & { $ref: string; $type: string; $id: string };

/** Every HTTP exchange xen-api makes (it uses undici; our own client does not). */
interface Exchange {
  readonly path: string;
  readonly method: string; // the XenAPI method called
  readonly status: number;
  readonly contentType: string | undefined;
}
const exchanges: Exchange[] = [];
const onHeaders = (msg: unknown): void => {
  const { request, response } = msg as { request: { path: string; body: unknown }; response: { statusCode: number; headers: (Buffer | string)[] } };
  const body = request.body instanceof Uint8Array || typeof request.body === 'string' ? Buffer.from(request.body).toString() : '';
  const method = body.startsWith('{') ? String((JSON.parse(body) as { method: unknown }).method) : (/<methodName>([^<]*)</.exec(body)?.[1] ?? '');
  let contentType: string | undefined;
  for (let i = 0; i + 1 < response.headers.length; i += 2) {
    if (String(response.headers[i]).toLowerCase() === 'content-type') contentType = String(response.headers[i + 1]);
  }
  exchanges.push({ path: request.path, method, status: response.statusCode, contentType });
};

/** xen-api reports a broken get_all_records or event loop only through console.warn. */
const warnings: unknown[][] = [];
const realWarn = console.warn;

function connect(url: string, transport: 'auto' | 'json-rpc' | 'xml-rpc'): Xapi {
  return createClient({
    url,
    auth: { user: 'root', password: ROOT_PASSWORD },
    allowUnauthorized: true,
    transport,
    debounce: 20,
    // after a failed event.from, it waits this long before retrying (keep the process from lingering)
    eventPollDelay: 100,
  });
}

function byType(xapi: Xapi, type: string): XRecord[] {
  return Object.values((xapi.objects.indexes.type[type] ?? {}) as Record<string, XRecord>);
}

/** Polls `get` until it yields something (not undefined or false). */
async function waitFor<T>(what: string, get: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(() => {
  diagnostics.subscribe('undici:request:headers', onHeaders);
  console.warn = (...args: unknown[]) => {
    warnings.push(args);
  };
});

after(() => {
  diagnostics.unsubscribe('undici:request:headers', onHeaders);
  console.warn = realWarn;
});

for (const transport of ['auto', 'xml-rpc'] as const) {
  describe(`xen-api over ${transport === 'auto' ? 'JSON-RPC (auto-detected)' : 'XML-RPC (forced)'}`, () => {
    // a server of its own: closing it also ends the client's pending event.from
    let t: TestServer;
    let xapi: Xapi;
    let types: string[];
    let firstExchange = 0;

    before(async () => {
      t = await startTestServer();
      warnings.length = 0;
      firstExchange = exchanges.length;
      xapi = connect(t.url, transport);
      await xapi.connect();
      await xapi.objectsFetched;
      types = xapi._types as string[]; // what it learnt from system.listMethods
    });

    after(async () => {
      await xapi.disconnect();
      await t.close();
    });

    test('it connects the way the notes describe', () => {
      const calls = exchanges.slice(firstExchange).map((x) => x.method);
      assert.deepEqual(calls.slice(0, 4), ['session.login_with_password', 'pool.get_all_records', 'system.listMethods', 'event.inject']);
      const reads = calls.slice(4, 4 + types.length);
      assert.deepEqual(reads.sort(), types.map((c) => `${c}.get_all_records`).sort(), 'one get_all_records per class listed');
    });

    test('it logs in and knows the pool', () => {
      assert.equal(xapi.status, 'connected');
      assert.match(xapi.sessionId, /^OpaqueRef:[0-9a-f-]{36}$/);
      assert.equal(xapi.pool.$type, 'pool');
      assert.match(xapi.pool.master, /^OpaqueRef:/);
    });

    test('the object cache is filled from every class it discovered', async () => {
      assert.ok(types.includes('VM') && types.includes('host_cpu') && types.includes('VBD_metrics'), 'real-case class names');
      for (const type of ['pool', 'host', 'host_cpu', 'host_metrics', 'role', 'VM']) {
        assert.ok(types.includes(type), `${type} discovered`);
        assert.ok(byType(xapi, type).length > 0, `${type} records in the cache`);
      }
      // it holds exactly what each <Class>.get_all_records answers
      for (const type of types) {
        if (type === 'task') continue; // its own tasks come and go
        const refs = Object.keys((await t.client.call(`${type}.get_all_records`, [t.client.session])) as object).sort();
        assert.deepEqual(byType(xapi, type).map((o) => o.$ref).sort(), refs, type);
      }
      assert.equal(byType(xapi, 'pool').length, 1);
      const host = xapi.getObjectByRef(xapi.pool.master) as XRecord;
      assert.equal(host.$type, 'host');
      assert.equal(host.API_version_major, transport === 'xml-rpc' ? '2' : 2);
      assert.equal(byType(xapi, 'role').filter((r) => r.name_label === 'pool-admin').length, 1);
      const templates = byType(xapi, 'VM').filter((vm) => vm.is_a_template);
      assert.ok(templates.length > 0, 'VM templates');
      const dom0 = byType(xapi, 'VM').find((vm) => vm.is_control_domain);
      assert.ok(dom0, 'the control domain');
      assert.equal(xapi.getObjectByRef(dom0.resident_on), host, 'refs resolve through the cache');
      assert.ok(byType(xapi, 'host_cpu').every((c) => c.host === host.$ref));
      // its failures to read a class (or to follow events) only show up as warnings
      assert.deepEqual(warnings, []);
    });

    test('every record of a class carries the same keys', () => {
      for (const type of types) {
        const recs = byType(xapi, type);
        if (recs.length < 2) continue;
        const keys = Object.keys(recs[0]).sort().join();
        for (const r of recs) assert.equal(Object.keys(r).sort().join(), keys, `${type} ${r.$ref}`);
      }
    });

    test('a change made by another client arrives through its event watching', async () => {
      const vm = byType(xapi, 'VM').find((v) => v.is_a_template) as XRecord;
      const label = `renamed over ${transport}`;
      await t.client.call('VM.set_name_label', [t.client.session, vm.$ref, label]);
      const seen = await waitFor('the new name', () => {
        const o = xapi.getObjectByRef(vm.$ref) as XRecord;
        return o.name_label === label ? o : undefined;
      });
      assert.equal(seen.uuid, vm.uuid);
    });

    test('its own calls: records in, sets and maps, barrier', async () => {
      const net: string = await xapi.call('network.create', {
        name_label: `xo net ${transport}`,
        name_description: 'made by xen-api',
        MTU: 1500, // an int: the XML-RPC transport turns it into a string
        other_config: { 'xo:test': '1' },
        tags: [],
      });
      assert.match(net, /^OpaqueRef:/);
      const cached = (await xapi.barrier(net)) as XRecord;
      assert.equal(cached.name_label, `xo net ${transport}`);
      // xapi's ints: numbers over JSON-RPC, strings over XML-RPC (xen-api leaves them so)
      assert.equal(cached.MTU, transport === 'xml-rpc' ? '1500' : 1500);
      assert.deepEqual(cached.other_config, { 'xo:test': '1' });

      // record helpers: set_<field>, add_<set>, update_<map> (remove_from of a missing key must succeed)
      await cached.set_name_description('changed');
      await cached.add_tags('blue');
      await cached.update_other_config({ 'xo:test': null, 'xo:new': 'yes', 'xo:absent': null });
      const after = (await xapi.barrier(net)) as XRecord;
      assert.equal(after.name_description, 'changed');
      assert.deepEqual(after.tags, ['blue']);
      assert.deepEqual(after.other_config, { 'xo:new': 'yes' });

      const vm = byType(xapi, 'VM').find((v) => v.is_a_template) as XRecord;
      await xapi.call('VM.add_tags', vm.$ref, 'xo-tag');
      assert.ok(((await xapi.barrier(vm.$ref)) as XRecord).tags.includes('xo-tag'));
      assert.deepEqual(await xapi.call('VM.get_tags', vm.$ref), ['xo-tag']);

      // it removes its barrier entries from the pool's other_config afterwards (without waiting)
      await waitFor('the barrier keys to go', () => !Object.keys(xapi.pool.other_config).some((k) => k.startsWith('xo:barrier:')));

      await xapi.call('network.destroy', net);
      await waitFor('the network to leave the cache', () => xapi.getObjectByRef(net, null) === null || undefined);
    });

    test('errors arrive as XapiError with code and params', async () => {
      await assert.rejects(xapi.call('VM.get_record', 'OpaqueRef:bogus'), (e: any) => {
        assert.equal(e.code, 'HANDLE_INVALID');
        assert.deepEqual(e.params, ['VM', 'OpaqueRef:bogus']);
        return true;
      });
      await assert.rejects(xapi.call('VM.no_such_message'), (e: any) => e.code === 'MESSAGE_METHOD_UNKNOWN');
    });

    test('Async calls: the result is read from the task through events', async () => {
      const tasksBefore = byType(xapi, 'task').length;
      const net: string = await xapi.callAsync('network.create', { name_label: 'async net', name_description: '', other_config: {}, tags: [] });
      assert.match(net, /^OpaqueRef:[0-9a-f-]{36}$/, 'the ref parsed from the task result');
      assert.equal(((await xapi.barrier(net)) as XRecord).name_label, 'async net');
      assert.equal(await xapi.callAsync('network.destroy', net), '', 'a void result is empty');

      // a failure inside the task becomes the promise's rejection
      await assert.rejects(xapi.callAsync('network.create', { name_label: 'bad', MTU: 'lots' }), (e: any) => {
        assert.equal(e.code, 'FIELD_TYPE_ERROR');
        return true;
      });
      // and it destroys the tasks it made
      await waitFor('its tasks to be destroyed', () => byType(xapi, 'task').length === tasksBefore);

      // a task it creates itself, finished by someone else
      const task: string = await xapi.createTask('xo task');
      await waitFor('the task in the cache', () => xapi.getObjectByRef(task, undefined));
      const done = xapi.watchTask(task);
      await t.client.call('task.set_result', [t.client.session, task, '<value>42</value>']);
      await t.client.call('task.set_status', [t.client.session, task, 'success']);
      assert.equal(await done, '42');
    });

    test('it stayed on the transport it started with', () => {
      const mine = exchanges.slice(firstExchange);
      // valid_ref_counts.task always matched its own count: it never had to re-read the tasks
      const fetched = mine.findIndex((x) => x.method === 'event.from');
      assert.ok(fetched > 0);
      assert.ok(!mine.slice(fetched).some((x) => x.method === 'task.get_all_records'), 'no task re-read after the first event.from');
      assert.ok(mine.length > 5);
      const want = transport === 'auto' ? { path: '/jsonrpc', type: 'application/json' } : { path: '/xmlrpc', type: 'text/xml' };
      for (const x of mine) {
        assert.equal(x.status, 200);
        assert.equal(x.path, want.path);
        assert.equal(x.contentType, want.type);
      }
      assert.deepEqual(warnings, []);
    });
  });
}
