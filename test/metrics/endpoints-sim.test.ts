/**
 * /rrd_updates, /host_rrd, /vm_rrd and the data-source messages on the
 * simulator backend, read as Xen Orchestra's stats code reads them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import JSON5 from 'json5';
import type { Ref } from '../../src/client/client.ts';
import { metricsPlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { Metrics } from '../../src/metrics/service.ts';
import { failsWith, ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { connArgs, runXe, type XeResult } from '../cli/xe-helpers.ts';

let t: TestServer;
let vm: Ref<'VM'>;
let vmUuid: string;
let hostUuid: string;
const metrics = (): Metrics => t.server.services.metrics as Metrics;

/** The collector's clock, driven by hand: `n` more steps of 5 s (the RRDs' time runs ahead of the wall clock). */
let clock = Math.floor(Date.now() / 1000);
async function steps(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await metrics().collect((clock += 5));
}

before(async () => {
  t = await startTestServer({ plugins: [xenopsPlugin({ backend: 'sim', metricsIntervalMs: 3_600_000 }), metricsPlugin({ intervalMs: 3_600_000 })] });
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  vm = await t.client.api.VM.clone(tpl, 'metrics-sim');
  await t.client.api.VM.set_is_a_template(vm, false);
  await t.client.api.VM.start(vm, false, false);
  vmUuid = await t.client.api.VM.get_uuid(vm);
  hostUuid = await t.client.api.host.get_uuid((await t.client.api.host.get_all())[0]!);
  await steps(30);
});
after(() => t.close());

const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; type: string; text: string }> => {
  const res = await fetch(t.url + path, { headers });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
};
const session = (): string => `session_id=${encodeURIComponent(t.client.session)}`;

/** What Xen Orchestra's xo-server does with /rrd_updates: its query, JSON5, its checks, its legend pattern, rows oldest first. */
function readAsXenOrchestra(text: string, step: number, uuid: string): Record<string, (number | null)[]> {
  const json = JSON5.parse<{ meta: { step: number; end: number; legend: string[] }; data: { t: number; values: unknown[] }[] }>(text);
  assert.strictEqual(json.meta.step, step, 'xo-server refuses another granularity');
  assert.equal(typeof json.meta.end, 'number');
  const rows = [...json.data].reverse();
  const out: Record<string, (number | null)[]> = {};
  json.meta.legend.forEach((entry, i) => {
    const m = /^AVERAGE:([^:]+):(.+):(.+)$/.exec(entry);
    assert.ok(m, `legend entry ${entry}`);
    if (m[2] !== uuid) return;
    out[m[3]!] = rows.map((r) => {
      const v = r.values[i];
      return Number.isNaN(Number(v)) ? null : Number(v);
    });
  });
  return out;
}

test('/rrd_updates as Xen Orchestra asks for it: host and VM series, 5-second rows', async () => {
  // xo-server starts from the host's time less 120 steps plus one (here the collector's clock is the host's time)
  const start = clock - 120 * 5 + 5;
  const r = await get(`/rrd_updates?cf=AVERAGE&host=true&interval=5&json=true&start=${start}&${session()}`);
  assert.equal(r.status, 200, r.text);
  assert.match(r.type, /application\/json/);
  JSON.parse(r.text); // plain JSON too, not only JSON5
  const host = readAsXenOrchestra(r.text, 5, hostUuid);
  for (const name of ['cpu0', 'cpu_avg', 'memory_total_kib', 'memory_free_kib', 'loadavg']) assert.ok(host[name], `host ${name}`);
  const total = host.memory_total_kib!.at(-1)!;
  assert.ok(total > 1024 && total < 2 ** 40, `memory_total_kib ${total}`);
  assert.ok(host.cpu0!.filter((v) => v !== null).every((v) => v >= 0 && v <= 1), 'CPU as a fraction');
  const guest = readAsXenOrchestra(r.text, 5, vmUuid);
  assert.ok(guest.cpu0 && guest.memory, JSON.stringify(Object.keys(guest)));
  assert.equal(guest.memory!.at(-1), Number(await t.client.api.VM.get_memory_static_max(vm)));
  assert.ok(guest.memory_internal_free!.at(-1)! > 0, 'KiB free as the guest tells');
});

test('the XML form, the VM filter, other CFs and the one-minute archive', async () => {
  const r = await get(`/rrd_updates?start=${Math.floor(Date.now() / 1000) - 60}&vm_uuid=${vmUuid}&${session()}`);
  assert.equal(r.status, 200, r.text);
  assert.match(r.type, /text\/xml/);
  assert.match(r.text, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<xport><meta><start>\d+<\/start><step>5<\/step>/);
  const legend = [...r.text.matchAll(/<entry>([^<]+)<\/entry>/g)].map((m) => m[1]!);
  assert.ok(legend.length > 0 && legend.every((l) => l.startsWith(`AVERAGE:vm:${vmUuid}:`)), legend.join());
  const rows = [...r.text.matchAll(/<row><t>(\d+)<\/t>/g)].map((m) => Number(m[1]));
  assert.ok(rows.length >= 10 && rows.every((x, i) => i === 0 || x === rows[i - 1]! - 5), 'newest first, 5 s apart');
  const minute = await get(`/rrd_updates?start=${Math.floor(Date.now() / 1000) - 3600}&interval=60&host=true&vm_uuid=${vmUuid}&json&${session()}`);
  const m = JSON.parse(minute.text) as { meta: { step: number; legend: string[] } };
  assert.equal(m.meta.step, 60);
  assert.ok(m.meta.legend.includes(`MAX:host:${hostUuid}:cpu_avg`) && m.meta.legend.includes(`MIN:vm:${vmUuid}:cpu0`));
});

test('/host_rrd and /vm_rrd give whole RRDs; refusals', async () => {
  const host = await get(`/host_rrd?${session()}`);
  assert.equal(host.status, 200);
  assert.match(host.text, /<rrd><version>0003<\/version><step>5<\/step><lastupdate>\d+<\/lastupdate><ds><name>/);
  assert.equal((host.text.match(/<rra>/g) ?? []).length, 10);
  const one = await get(`/vm_rrd?uuid=${vmUuid}&json=true&${session()}`);
  const rrd = JSON.parse(one.text) as { ds: { name: string }[]; rra: { cf: string; database: string[][] }[] };
  assert.ok(rrd.ds.some((d) => d.name === 'cpu0'));
  assert.equal(rrd.rra[0]!.database.length, 120);
  assert.equal((await get(`/rrd_updates?start=0`)).status, 401);
  assert.equal((await get(`/rrd_updates?start=soon&${session()}`)).status, 400);
  assert.equal((await get(`/vm_rrd?uuid=nope&${session()}`)).status, 404);
});

test('a stopped VM\'s RRD is archived, served from disk, and taken up again when it restarts', async () => {
  await t.client.api.VM.hard_shutdown(vm);
  await steps(1);
  const archived = await get(`/vm_rrd?uuid=${vmUuid}&${session()}`);
  assert.equal(archived.status, 200);
  const updates = await get(`/rrd_updates?start=-60&json&${session()}`);
  assert.ok(!updates.text.includes(vmUuid), 'a halted VM has no live series');
  await t.client.api.VM.start(vm, false, false);
  await steps(1);
  const back = await get(`/vm_rrd?uuid=${vmUuid}&json&${session()}`);
  const rrd = JSON.parse(back.text) as { rra: { database: string[][] }[] };
  const known = rrd.rra[0]!.database.filter((row) => row.some((v) => v !== 'NaN')).length;
  assert.ok(known >= 10, `history kept across the stop (${known} rows)`);
});

test('data-source messages: list, query, forget (a standard source comes back afresh), record', async () => {
  const host = (await t.client.api.host.get_all())[0]!;
  const list = await t.client.api.host.get_data_sources(host);
  const cpu = list.find((d) => d.name_label === 'cpu0');
  assert.ok(cpu && cpu.enabled && cpu.standard && cpu.units === '(fraction)' && cpu.max === 1, JSON.stringify(cpu));
  const mem = await t.client.api.host.query_data_source(host, 'memory_total_kib');
  assert.ok(mem > 1024, String(mem));
  await steps(2);
  const vmSources = await t.client.api.VM.get_data_sources(vm);
  assert.ok(vmSources.some((d) => d.name_label === 'memory' && d.enabled && d.units === 'B'));
  await t.client.api.VM.forget_data_source_archives(vm, 'memory');
  assert.ok(!(await t.client.api.VM.get_data_sources(vm)).find((d) => d.name_label === 'memory')!.enabled);
  await failsWith(t.client.api.VM.query_data_source(vm, 'memory'), 'INTERNAL_ERROR');
  await t.client.api.VM.record_data_source(vm, 'memory');
  assert.ok((await t.client.api.VM.get_data_sources(vm)).find((d) => d.name_label === 'memory')!.enabled);
  await failsWith(t.client.api.VM.record_data_source(vm, 'no_such_source'), 'INTERNAL_ERROR');
});

test('/metrics: the same figures for Prometheus, with a session or basic credentials', async () => {
  await steps(2);
  assert.equal((await get('/metrics')).status, 401);
  const bad = await fetch(`${t.url}/metrics`, { headers: { Authorization: `Basic ${Buffer.from('root:wrong').toString('base64')}` } });
  assert.equal(bad.status, 401);
  assert.match(bad.headers.get('www-authenticate') ?? '', /Basic/);
  const ok = await get('/metrics', { Authorization: `Basic ${Buffer.from(`root:${ROOT_PASSWORD}`).toString('base64')}` });
  assert.equal(ok.status, 200, ok.text);
  assert.match(ok.type, /text\/plain/);
  assert.match(ok.text, new RegExp(`^xenon_host_memory_total_bytes\\{host="${hostUuid}"\\} \\d+`, 'm'));
  assert.match(ok.text, new RegExp(`^xenon_vm_memory_bytes\\{vm="${vmUuid}",name="metrics-sim"\\} \\d+`, 'm'));
  assert.match(ok.text, new RegExp(`^xenon_vm_vcpu_usage_ratio\\{vm="${vmUuid}",name="metrics-sim",vcpu="0"\\} `, 'm'));
  const viaSession = await get(`/metrics?${session()}`);
  assert.equal(viaSession.status, 200);
});

test('perfmon alarms: a variable past its level for its trigger period raises one ALARM message, then is inhibited', async () => {
  const config = '<config><variable><name value="mem_high"/><rrd_regex value="memory"/><alarm_trigger_level value="1024"/><alarm_trigger_period value="10"/></variable>'
    + '<variable><name value="evil"/><rrd_regex value="(a+)+b"/><alarm_trigger_level value="0"/></variable></config>';
  await t.client.api.VM.add_to_other_config(vm, 'perfmon', config);
  const alarms = async (): Promise<{ name: string; cls: string; obj_uuid: string; body: string; priority: number }[]> =>
    Object.values(await t.client.api.message.get_all_records()).filter((m) => m.name === 'ALARM' && m.obj_uuid === vmUuid);
  await steps(1);
  assert.equal((await alarms()).length, 0, 'not before the trigger period');
  await steps(2);
  const raised = await alarms();
  assert.equal(raised.length, 1);
  assert.equal(raised[0]!.cls, 'VM');
  assert.equal(raised[0]!.priority, 3);
  assert.match(raised[0]!.body, /^value: \d+\.\d{6}\nconfig:\n<variable><name value="mem_high"\/>/);
  await steps(4);
  assert.equal((await alarms()).length, 1, 'inhibited for an hour');
  await t.client.api.VM.remove_from_other_config(vm, 'perfmon');
});

test('xe vm-/host-data-source-list, -query, -record, -forget', async () => {
  const xe = (...args: string[]): Promise<XeResult> => runXe([...connArgs(t.url), ...args]);
  const ok = (r: XeResult): string => {
    assert.equal(r.code, 0, `xe failed: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  await steps(2);
  const list = ok(await xe('vm-data-source-list', `uuid=${vmUuid}`));
  assert.match(list, /^name_label *: cpu0\n *name_description: Use of virtual CPU 0\n *enabled: true\n *standard: true\n *min: 0\.\n *max: 1\.\n *units: \(fraction\)\n/m);
  assert.match(list, /name_label *: memory\n(.*\n){3} *min: 0\.\n *max: inf\n/);
    const value = ok(await xe('vm-data-source-query', `uuid=${vmUuid}`, 'data-source=memory')).trim();
  assert.match(value, /^\d+\.\d{6}$/);
  assert.equal(Number(value), Number(await t.client.api.VM.get_memory_static_max(vm)));
  const hostList = ok(await xe('host-data-source-list', `uuid=${hostUuid}`));
  assert.match(hostList, /name_label *: memory_total_kib\n.*\n *enabled: true/);
  assert.match(ok(await xe('host-data-source-query', `uuid=${hostUuid}`, 'data-source=memory_total_kib')), /^\d+\.\d{6}\n$/);
  ok(await xe('vm-data-source-forget', `uuid=${vmUuid}`, 'data-source=memory_target'));
  assert.match(ok(await xe('vm-data-source-list', `uuid=${vmUuid}`)), /name_label *: memory_target\n.*\n *enabled: false/);
  ok(await xe('vm-data-source-record', `uuid=${vmUuid}`, 'data-source=memory_target'));
  const missing = await xe('host-data-source-query', `uuid=${hostUuid}`, 'data-source=nothing_like_it');
  assert.notEqual(missing.code, 0);
});

test('archives are private files, and go when their VM is destroyed', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const other = await t.client.api.VM.clone(tpl!, 'metrics-gone');
  await t.client.api.VM.set_is_a_template(other, false);
  await t.client.api.VM.start(other, false, false);
  const uuid = await t.client.api.VM.get_uuid(other);
  await steps(2);
  await t.client.api.VM.hard_shutdown(other);
  await steps(1);
  const file = join(t.dataDir, 'rrd', `${uuid}.json`);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  await t.client.api.VM.destroy(other);
  await metrics().saveAll();
  assert.equal(existsSync(file), false);
  assert.ok(existsSync(join(t.dataDir, 'rrd', `${vmUuid}.json`)), 'the others stay');
});
