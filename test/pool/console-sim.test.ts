/**
 * Consoles across a pool of three daemons (simulated guests whose serial
 * console prints "<host> tick <n>" every 100 ms): the master serves the
 * consoles of a VM on a member — CONNECT (vt100 and rfb), the serial log
 * text, the web console's WebSocket — through the pool channel; the member's
 * channel route refuses requests without the secret or with a malformed
 * uuid; the location names the resident host, which serves it too; and a
 * serial stream held through the master follows the VM across live
 * migrations without closing. The master keeps the member VM's RRD, read
 * from the host that runs it, across a migration.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { XenApiClient } from '../../src/client/client.ts';
import { allLive, PoolLab, until, type LabHost } from './helpers.ts';
import { openConsoleStream, rawRequest, type ConsoleStream } from './console-stream.ts';

const SIM = ['--backend', 'sim', '--network', 'none', '--sim-consoles'];
const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;

before(async () => {
  await lab.setup();
  [h1, h2, h3] = await Promise.all([lab.addHost('h1', SIM), lab.addHost('h2', SIM), lab.addHost('h3', SIM)]);
});
after(() => lab.teardown());

const target = (h: LabHost) => ({ socketPath: h.socket });

/** GET /console (the serial log text) through a host. */
function serialLog(h: LabHost, con: string, session: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: h.socket, path: `/console?ref=${encodeURIComponent(con)}&session_id=${encodeURIComponent(session)}` }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The last tick's host label in a text. */
const lastLabel = (text: string): string | undefined => [...text.matchAll(/(h\d) tick \d+/g)].pop()?.[1];

let c: XenApiClient;
let vm = '';
let vt100 = '';
let rfb = '';
const refs: Record<string, string> = {};

test('the master serves the consoles of a VM on a member', async () => {
  await lab.formPool(h1, [h2, h3]);
  c = await h1.client();
  await allLive(c);
  for (const h of [h1, h2, h3]) refs[h.name] = Object.keys(await c.api.host.get_all_records_where(`field "address" = "${h.ip}"`))[0];
  const sr = await c.api.SR.create(refs.h1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  const template = Object.keys(await c.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  vm = await c.api.VM.clone(template, 'console-mover');
  await c.api.VM.set_is_a_template(vm, false);
  const disk = await c.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'mover', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  await until('every host to be possible', async () => (await c.api.VM.get_possible_hosts(vm)).length === 3);
  await c.api.VM.start_on(vm, refs.h2, false, false);
  for (const con of await c.api.VM.get_consoles(vm)) {
    if ((await c.api.console.get_protocol(con)) === 'vt100') vt100 = con;
    else rfb = con;
  }
  // xapi's location: the resident host's address
  assert.equal(await c.api.console.get_location(vt100), `https://${h2.ip}/console?uuid=${await c.api.console.get_uuid(vt100)}`);

  const q = (con: string): string => `/console?ref=${encodeURIComponent(con)}&session_id=${encodeURIComponent(c.session)}`;
  const serial = await openConsoleStream(target(h1), q(vt100));
  try {
    await until('ticks from h2 through the master', () => serial.lines.some((l) => /^h2 tick \d+$/.test(l.text)), 20_000);
    // what is typed goes to the guest (the simulated one echoes it into its log and console)
    serial.write('hello from the master\n');
    await until('the echo', () => serial.text().includes('hello from the master'));
  } finally {
    serial.close();
  }
  const log = await serialLog(h1, vt100, c.session);
  assert.equal(log.status, 200);
  assert.match(log.body, /h2 tick \d+/);
  assert.match(log.body, /hello from the master/);

  const vnc = await rawRequest(target(h1), `CONNECT ${q(rfb)}`);
  vnc.socket.resume();
  const greeting = await new Promise<string>((resolve) => {
    if (vnc.rest.length) return resolve(vnc.rest.toString('latin1'));
    vnc.socket.once('data', (d: Buffer) => resolve(d.toString('latin1')));
  });
  vnc.socket.destroy();
  assert.equal(vnc.status, 200);
  assert.equal(greeting, 'RFB 003.008\n');

  // the web console's WebSocket (no Origin: not a browser), first the log's tail then the live ticks
  const ws = new WebSocket(`ws+unix://${h1.socket}:${q(vt100)}`);
  const frames: string[] = [];
  ws.on('message', (d: Buffer) => frames.push(d.toString('utf8')));
  try {
    await until('frames from h2 over the WebSocket', () => frames.length >= 2 && frames.join('').includes('hello from the master') && /h2 tick/.test(frames.slice(1).join('')));
  } finally {
    ws.terminate();
  }

  // the location's host serves it as well, for the same session (xapi's clients may follow the location)
  const direct = await openConsoleStream(target(h2), q(vt100));
  try {
    await until('ticks straight from h2', () => direct.lines.some((l) => /^h2 tick/.test(l.text)));
  } finally {
    direct.close();
  }
});

test('the member\'s console route wants the pool secret and a well-formed uuid', async () => {
  const uuid = await c.api.VM.get_uuid(vm);
  const secret = (JSON.parse(readFileSync(join(h2.dataDir, 'pool.json'), 'utf8')) as { secret: string }).secret;
  const status = async (path: string, headers: Record<string, string> = {}): Promise<number> => {
    const r = await rawRequest(target(h2), `CONNECT ${path}`, headers);
    r.socket.destroy();
    return r.status;
  };
  const withSecret = { 'X-Xenon-Pool-Secret': secret };
  assert.equal(await status(`/pool/console?vm=${uuid}&protocol=vt100`), 403);
  assert.equal(await status(`/pool/console?vm=${uuid}&protocol=vt100`, { 'X-Xenon-Pool-Secret': 'guess' }), 403);
  assert.equal(await status(`/pool/console?vm=../../../etc&protocol=vt100`, withSecret), 400);
  assert.equal(await status(`/pool/console?vm=${uuid}&protocol=ssh`, withSecret), 400);
  assert.equal(await status(`/pool/console?vm=00000000-0000-0000-0000-000000000000&protocol=vt100`, withSecret), 404);
  assert.equal(await status(`/pool/console?vm=${uuid}&protocol=vt100`, withSecret), 200);
});

/** GET a path through a host's socket. */
function get(h: LabHost, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: h.socket, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** The VM's cpu0 rows of a host's (the master's) /rrd_updates since `start`, as [time, value or null]. */
async function cpuRows(uuid: string, start: number, h: LabHost = h1): Promise<[number, number | null][]> {
  const r = await get(h, `/rrd_updates?start=${start}&interval=5&json=true&vm_uuid=${uuid}&session_id=${encodeURIComponent(c.session)}`);
  assert.equal(r.status, 200, r.body);
  const x = JSON.parse(r.body) as { meta: { legend: string[] }; data: { t: number; values: (number | string | null)[] }[] };
  const i = x.meta.legend.indexOf(`AVERAGE:vm:${uuid}:cpu0`);
  assert.ok(i >= 0, `legend ${JSON.stringify(x.meta.legend)}`);
  return x.data.map((row) => {
    const v = Number(row.values[i]);
    return [row.t, row.values[i] === null || Number.isNaN(v) ? null : v];
  });
}

test('a member VM\'s metrics come from its host; its RRD on the master goes on across a migration', { timeout: 120_000 }, async () => {
  const uuid = await c.api.VM.get_uuid(vm);
  const started = Math.floor(Date.now() / 1000) - 30;
  assert.equal(await c.api.VM.get_resident_on(vm), refs.h2);
  // two steps of counters from h2 make a rate
  await until('cpu0 of the VM on h2', async () => c.api.VM.query_data_source(vm, 'cpu0').then((v) => v > 0, () => false), 30_000);
  // VM_metrics: the master writes it from the step (the boot wrote it last at the start)
  const metrics = await c.api.VM.get_metrics(vm);
  const bootedAt = await c.api.VM_metrics.get_start_time(metrics);
  const stamp = (s: string): number => Date.parse(s.replace(/^(\d{4})(\d\d)(\d\d)T/, '$1-$2-$3T'));
  await until('VM_metrics written by the master', async () => stamp(await c.api.VM_metrics.get_last_updated(metrics)) - stamp(bootedAt) >= 4000, 15_000);
  assert.ok((await c.api.VM.get_data_sources(vm)).some((d) => d.name_label === 'cpu0'));
  // a member host's own data sources, asked of the master (which asks the member, as xapi's forwards)
  assert.ok((await c.api.host.get_data_sources(refs.h2)).some((d) => d.name_label === 'memory_total_kib'));
  assert.ok(await c.api.host.query_data_source(refs.h2, 'memory_total_kib') > 1024);

  const moved = Math.floor(Date.now() / 1000);
  await c.api.VM.pool_migrate(vm, refs.h3, { live: 'true' });
  // the next steps read h3; the same RRD takes them
  await until('rows from h3 after the move', async () => (await cpuRows(uuid, started)).filter(([t, v]) => t > moved + 5 && v !== null).length >= 2, 40_000);
  const rows = await cpuRows(uuid, started);
  const before = rows.filter(([t, v]) => t < moved && v !== null).length;
  const after = rows.filter(([t, v]) => t > moved + 5 && v !== null).length;
  const unknown = rows.filter(([t, v]) => t >= moved && t <= moved + 10 && v === null).length;
  process.stdout.write(`# cpu0 rows of one RRD: ${before} before the move, ${after} after, ${unknown} unknown at it\n`);
  assert.ok(before >= 1 && after >= 2, JSON.stringify(rows));
  assert.ok(await c.api.VM.query_data_source(vm, 'cpu0') > 0);
  assert.equal(await c.api.VM_metrics.get_start_time(metrics), bootedAt, 'the boot time stays across the move');
  // the VM's new host has its history too (clients such as Xen Orchestra ask the resident host): the master handed it over
  await until('h3 to have the history from before the move', async () => {
    const there = await cpuRows(uuid, started, h3).catch(() => []);
    return there.some(([t, v]) => t < moved && v !== null) && there.some(([t, v]) => t > moved + 5 && v !== null);
  }, 20_000);
  await c.api.VM.pool_migrate(vm, refs.h2, { live: 'true' });
});

let lastMove = 0;
let halted = 0;

test('a serial stream held through the master follows the VM across live migrations', async () => {
  const q = `/console?ref=${encodeURIComponent(vt100)}&session_id=${encodeURIComponent(c.session)}`;
  const serial: ConsoleStream = await openConsoleStream(target(h1), q);
  try {
    await until('ticks from h2', () => lastLabel(serial.text()) === 'h2');
    for (const to of ['h3', 'h1', 'h2'] as const) {
      const t0 = Date.now();
      lastMove = Math.floor(t0 / 1000);
      await c.api.VM.pool_migrate(vm, refs[to], { live: 'true' });
      process.stdout.write(`# migrated to ${to} in ${Date.now() - t0} ms\n`);
      assert.equal(await c.api.VM.get_resident_on(vm), refs[to]);
      await until(`ticks from ${to} on the same stream`, () => serial.lines.filter((l) => l.text.startsWith(`${to} tick`)).length >= 5 && lastLabel(serial.text()) === to, 10_000);
      assert.ok(!serial.closed(), 'the client saw no close');
      const log = await serialLog(h1, vt100, c.session);
      assert.match(log.body, new RegExp(`${to} tick \\d+`), `the serial log text is ${to}'s`);
      const host = to === 'h1' ? h1 : to === 'h2' ? h2 : h3;
      assert.equal(await c.api.console.get_location(vt100), `https://${host.ip}/console?uuid=${await c.api.console.get_uuid(vt100)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    const ticks = serial.lines.filter((l) => / tick \d+$/.test(l.text));
    const gaps = ticks.slice(1).map((l, i) => l.at - ticks[i].at);
    const worst = Math.max(...gaps);
    process.stdout.write(`# ${ticks.length} ticks on one stream across three moves, longest pause ${worst} ms\n`);
    assert.ok(worst < 1000, `the stream paused for ${worst} ms`);
    // halting the VM ends the stream
    await new Promise((r) => setTimeout(r, 11_000)); // (two metrics steps on h2, for the next test)
    halted = Math.floor(Date.now() / 1000);
    await c.api.VM.hard_shutdown(vm);
    await until('the stream to close', () => serial.closed(), 10_000);
  } finally {
    serial.close();
  }
});

test('a VM booted on a member gets its RRD from the master', { timeout: 60_000 }, async () => {
  const uuid = await c.api.VM.get_uuid(vm);
  // h3 ran it before (and archived its own RRD when the VM left); the rows of the VM's last run on h2 are only the master's
  await c.api.VM.start_on(vm, refs.h3, false, false);
  await until('h3 to have the rows of the run on h2', async () => {
    const there = await cpuRows(uuid, lastMove - 60, h3).catch(() => []);
    return there.some(([t, v]) => t > lastMove + 5 && t < halted && v !== null);
  }, 30_000);
  await c.api.VM.hard_shutdown(vm);
});
