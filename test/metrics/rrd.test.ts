/** The RRD engine, its export formats and its files: cheap, no daemon. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAlarmConfig } from '../../src/metrics/alarms.ts';
import { deserialize, serialize } from '../../src/metrics/persist.ts';
import { Rrd, standardRras, type DsSpec } from '../../src/metrics/rrd.ts';
import { parseMeminfo, parseProcStat } from '../../src/metrics/host-collector.ts';
import { diskName } from '../../src/metrics/sources.ts';
import { exportRows, formatFloat, rowsOf, xportJson, xportXml } from '../../src/metrics/xport.ts';
import { rrdXml } from '../../src/metrics/rrd-xml.ts';

const CPU: DsSpec = { name: 'cpu0', type: 'derive', min: 0, max: 1 };
const MEM: DsSpec = { name: 'memory', type: 'gauge', min: 0, max: Infinity };
const T0 = 1_700_000_040; // a multiple of 60

/** An RRD whose counters start at 0 at T0 (a derive source's first value has no rate). */
function fresh(specs: DsSpec[]): Rrd {
  const rrd = Rrd.create(specs, standardRras(), T0 - 5);
  rrd.update(T0, new Map(specs.map((s) => [s.name, 0])));
  return rrd;
}

function feedSeconds(rrd: Rrd, from: number, steps: number, cpuRate: (i: number) => number, start = 0): number {
  let cpu = start;
  for (let i = 1; i <= steps; i++) {
    cpu += cpuRate(i) * 5;
    rrd.update(from + i * 5, new Map([['cpu0', cpu], ['memory', 1024 * i]]));
  }
  return cpu;
}

test('derive sources become rates; gauges are kept; rows align to the step, newest first', () => {
  const rrd = fresh([CPU, MEM]);
  feedSeconds(rrd, T0, 24, (i) => (i <= 12 ? 1 : 0.25));
  const e = exportRows([['vm:x:', rrd]], T0 + 120 - 30, 5, 'AVERAGE');
  assert.equal(e.step, 5);
  assert.equal(e.end, T0 + 120);
  assert.deepEqual(e.legend, ['AVERAGE:vm:x:cpu0', 'AVERAGE:vm:x:memory']);
  assert.equal(rowsOf(e)[0]!.t, T0 + 120);
  assert.ok(rowsOf(e).every((r, i) => i === 0 || r.t === rowsOf(e)[i - 1]!.t - 5), 'rows newest first, 5 s apart');
  assert.equal(rowsOf(e)[0]!.values[0], 0.25);
  assert.equal(rowsOf(e)[0]!.values[1], 1024 * 24);
  // the one-minute archive averages twelve 5-second PDPs
  const minute = exportRows([['vm:x:', rrd]], T0 - 3600, 60, 'AVERAGE');
  assert.equal(minute.step, 60);
  const byTime = new Map(rowsOf(minute).map((r) => [r.t, r.values[0]]));
  assert.equal(byTime.get(T0 + 60), 1);
  assert.equal(byTime.get(T0 + 120), 0.25);
});

test('MIN and MAX archives; without cf every CF of the chosen timescale is exported', () => {
  const rrd = fresh([CPU]);
  feedSeconds(rrd, T0, 12, (i) => (i % 2 ? 0.2 : 0.8));
  const e = exportRows([['host:h:', rrd]], T0 - 600, 60, undefined);
  assert.deepEqual(e.legend, ['AVERAGE:host:h:cpu0', 'MIN:host:h:cpu0', 'MAX:host:h:cpu0']);
  const row = rowsOf(e).find((r) => r.t === T0 + 60)!;
  assert.ok(Math.abs(row.values[0]! - 0.5) < 1e-9);
  assert.ok(Math.abs(row.values[1]! - 0.2) < 1e-9);
  assert.ok(Math.abs(row.values[2]! - 0.8) < 1e-9);
});

test('a gap longer than the heartbeat is unknown; a counter going back is unknown, not negative', () => {
  const rrd = fresh([CPU]);
  const cpu = feedSeconds(rrd, T0, 4, () => 0.5);
  rrd.update(T0 + 340, new Map([['cpu0', cpu + 300]]));
  rrd.update(T0 + 345, new Map([['cpu0', cpu + 301]]));
  rrd.update(T0 + 350, new Map([['cpu0', 0]]));
  const e = exportRows([['vm:x:', rrd]], -350, 5, 'AVERAGE');
  assert.equal(e.step, 5);
  const at = (t: number): number | undefined => rowsOf(e).find((r) => r.t === t)?.values[0];
  assert.equal(at(T0 + 20), 0.5);
  assert.ok(Number.isNaN(at(T0 + 200)!), 'inside the gap');
  assert.ok(Math.abs(at(T0 + 345)! - 0.2) < 1e-9);
  assert.ok(Number.isNaN(at(T0 + 350)!), 'after the counter reset');
});

test('a CPU rate a little over 1 is capped, far over is unknown', () => {
  const rrd = fresh([CPU]);
  rrd.update(T0 + 5, new Map([['cpu0', 0]]));
  rrd.update(T0 + 10, new Map([['cpu0', 5.1]]));
  assert.equal(rrd.latest('cpu0'), 1);
  rrd.update(T0 + 15, new Map([['cpu0', 12]]));
  assert.ok(Number.isNaN(rrd.latest('cpu0')!));
});

test('xport XML and JSON as xapi lays them out', () => {
  const rrd = fresh([CPU, MEM]);
  feedSeconds(rrd, T0, 3, () => 0.5);
  const e = exportRows([['vm:u:', rrd]], T0 + 5, 5, 'AVERAGE');
  const xml = xportXml(e);
  assert.match(xml, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<xport><meta><start>\d+<\/start><step>5<\/step><end>\d+<\/end><rows>\d+<\/rows><columns>2<\/columns><legend><entry>AVERAGE:vm:u:cpu0<\/entry><entry>AVERAGE:vm:u:memory<\/entry><\/legend><\/meta><data><row><t>\d+<\/t><v>0.5<\/v><v>3072<\/v><\/row>/);
  const json = JSON.parse(xportJson(e)) as { meta: { step: number; rows: number; legend: string[] }; data: { t: number; values: number[] }[] };
  assert.equal(json.meta.step, 5);
  assert.equal(json.meta.rows, json.data.length);
  assert.deepEqual(json.data[0]!.values, [0.5, 3072]);
  assert.equal(formatFloat(NaN), 'NaN');
  assert.equal(formatFloat(0), '0.0');
  assert.equal(formatFloat(0.1 + 0.2), '0.3');
  assert.equal(formatFloat(1.5e-7), '1.5e-07');
  assert.match(rrdXml(rrd), /<rrd><version>0003<\/version><step>5<\/step><lastupdate>\d+<\/lastupdate><ds><name>cpu0<\/name><type>DERIVE<\/type>/);
});

test('an RRD survives its file; a damaged file is refused', () => {
  const rrd = fresh([CPU, MEM]);
  feedSeconds(rrd, T0, 30, (i) => i / 40);
  const back = deserialize(serialize(rrd))!;
  const same = (r: Rrd): unknown => { const e = exportRows([['a', r]], T0, 5, undefined); return [e.legend, rowsOf(e)]; };
  assert.deepEqual(same(back), same(rrd));
  back.update(T0 + 155, new Map([['cpu0', 100], ['memory', 1]]));
  assert.equal(deserialize('{"version":1,"step":5}'), undefined);
  assert.equal(deserialize('not json'), undefined);
  const text = JSON.parse(serialize(rrd)) as { rras: { head: number }[] };
  text.rras[0]!.head = 9999;
  assert.equal(deserialize(JSON.stringify(text)), undefined);
});

test('sources added later have no history; removed ones vanish from the export', () => {
  const rrd = fresh([CPU]);
  feedSeconds(rrd, T0, 2, () => 0.5);
  rrd.addDs(MEM);
  rrd.update(T0 + 15, new Map([['cpu0', 7.5], ['memory', 9]]));
  const e = exportRows([['x:', rrd]], T0, 5, 'AVERAGE');
  assert.equal(rowsOf(e)[0]!.values[1], 9);
  assert.ok(Number.isNaN(rowsOf(e)[1]!.values[1]!));
  rrd.removeDs('cpu0');
  assert.deepEqual(exportRows([['x:', rrd]], T0, 5, 'AVERAGE').legend, ['AVERAGE:x:memory']);
});

test('/proc parsing and disk names', () => {
  assert.deepEqual(parseProcStat('cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 100 500 50 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\nintr 1\n'), [2, 0]);
  assert.deepEqual(parseMeminfo('MemTotal:  2048 kB\nMemFree: 100 kB\nMemAvailable:   1024 kB\n'), { totalKib: 2048, availableKib: 1024 });
  assert.equal(diskName('0'), 'xvda');
  assert.equal(diskName('3'), 'xvdd');
  assert.equal(diskName('26'), 'xvdaa');
});

test('perfmon configurations: defaults by variable, senses, refusals', () => {
  const vm = parseAlarmConfig('vm', '<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.9"/></variable><variable><name value="memory_internal_free"/><alarm_trigger_level value="1024"/></variable><variable><name value="network_usage"/></variable></config>');
  assert.equal(vm.length, 2, 'network_usage has no default level');
  assert.equal(vm[0]!.consolidate, 'average');
  assert.ok(vm[0]!.regex.test('cpu3') && !vm[0]!.regex.test('cpu_avg'));
  assert.equal(vm[0]!.periodS, 60);
  assert.equal(vm[1]!.high, false);
  const host = parseAlarmConfig('host', "<config><variable><name value='network_usage'/><alarm_trigger_level value='1e6'/><alarm_trigger_sense value='low'/></variable></config>");
  assert.ok(host[0]!.regex.test('pif_eth0_rx') && host[0]!.high === false && host[0]!.consolidate === 'sum');
  assert.deepEqual(parseAlarmConfig('vm', '<config><variable><name value="x"/><rrd_regex value="(a+)+$"/><alarm_trigger_level value="1"/></variable></config>'), []);
  assert.deepEqual(parseAlarmConfig('vm', `<config>${'<variable><name value="x"/></variable>'.repeat(1000)}</config>`), []);
});
