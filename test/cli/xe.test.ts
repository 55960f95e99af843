/** The xe command line, run as a child process against an in-process daemon on the simulator. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { xenopsPlugin } from '../../src/plugins.ts';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { connArgs, runXe, spawnXe, tempHome, type XeResult } from './xe-helpers.ts';

let t: TestServer;
let conn: string[];
const xe = (...args: string[]): Promise<XeResult> => runXe([...conn, ...args]);
const ok = (r: XeResult): string => {
  assert.equal(r.code, 0, `xe failed: ${r.stderr}`);
  return r.stdout;
};

before(async () => {
  t = await startTestServer({ plugins: [xenopsPlugin({ backend: 'sim' })] });
  conn = connArgs(t.url);
});
after(() => t.close());

async function install(name: string): Promise<string> {
  const uuid = ok(await xe('vm-install', 'template=Xenon test guest', `new-name-label=${name}`)).trim();
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  return uuid;
}

const vmByUuid = async (uuid: string) => t.client.api.VM.get_record(await t.client.api.VM.get_by_uuid(uuid));

test('vm-list prints xe-style aligned blocks; --minimal, params= and filters', async () => {
  const [list, minimal, names, dom0, all] = await Promise.all([
    xe('vm-list'),
    xe('template-list', '--minimal'),
    xe('template-list', 'params=name-label', '--minimal'),
    xe('vm-list', 'is-control-domain=true', 'params=uuid,power-state,memory-static-max,other-config,consoles'),
    xe('vm-list', 'params=all', 'is-control-domain=true'),
  ]);
  const [host] = await t.client.api.host.get_all();
  const dom0Ref = await t.client.api.host.get_control_domain(host);
  const dom0Uuid = await t.client.api.VM.get_uuid(dom0Ref);
  const lines = ok(list).split('\n');
  assert.equal(lines[0], `uuid ( RO)           : ${dom0Uuid}`);
  assert.match(lines[1], /^ {5}name-label \( RW\): Control domain on host: /);
  assert.equal(lines[2], '    power-state ( RO): running');
  assert.equal(lines.slice(3).join('\n'), '\n\n', 'each record is followed by two blank lines');

  const templates = Object.values(await t.client.api.VM.get_all_records()).filter((v) => v.is_a_template);
  assert.deepEqual(ok(minimal).trim().split(',').sort(), templates.map((v) => v.uuid).sort());
  assert.deepEqual(ok(names).trim().split(',').sort(), templates.map((v) => v.name_label).sort(), '--minimal prints the first param');

  const d = ok(dom0);
  assert.match(d, /^uuid \( RO\) +: /);
  assert.match(d, /\n +power-state \( RO\): running\n/);
  assert.match(d, /\n +memory-static-max \( RW\): \d+\n/);
  assert.match(d, /\n +other-config \(MRW\): /);
  const consoles = await t.client.api.VM.get_consoles(dom0Ref);
  const conUuids = await Promise.all(consoles.map((c) => t.client.api.console.get_uuid(c)));
  assert.match(d, new RegExp(`consoles \\(SRO\\): ${conUuids.join('; ')}\\n`), 'sets of refs as uuids separated by "; "');
  const a = ok(all);
  assert.match(a, /\n +resident-on \( RO\): [0-9a-f-]{36}\n/, 'refs are shown as uuids');
  assert.match(a, /\n +affinity \( RW\): <not in database>\n/, 'null refs as xe shows them');
  assert.match(a, /\n +allowed-operations \(SRO\): /);
});

test('generic list and param commands on several classes', async () => {
  const [host] = await t.client.api.host.get_all();
  const hostUuid = await t.client.api.host.get_uuid(host);
  const [pool] = await t.client.api.pool.get_all();
  const poolUuid = await t.client.api.pool.get_uuid(pool);
  const [hosts, pools, hostName, poolList, cpu, consoles, unknown] = await Promise.all([
    xe('host-list', '--minimal'),
    xe('pool-list'),
    xe('host-param-get', `uuid=${hostUuid}`, 'param-name=name-label'),
    xe('pool-param-list', `uuid=${poolUuid}`),
    xe('host-cpu-list', '--minimal'),
    xe('console-list', 'params=uuid,vm-uuid,protocol'),
    xe('vm-list', 'no-such-field=1'),
  ]);
  assert.equal(ok(hosts).trim(), hostUuid);
  assert.match(ok(pools), new RegExp(`^uuid \\( RO\\) +: ${poolUuid}\\n`));
  assert.match(ok(pools), /\n +master \( RO\): /);
  assert.equal(ok(hostName).trim(), await t.client.api.host.get_name_label(host));
  assert.match(ok(poolList), /\n +other-config \(MRW\): /);
  assert.equal(ok(cpu).trim().split(',').filter(Boolean).length, (await t.client.api.host_cpu.get_all()).length);
  assert.match(ok(consoles), /vm-uuid \( RO\): [0-9a-f-]{36}\n +protocol \( RO\): (vt100|rfb)\n/);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^Error: Unknown field 'no-such-field'/);

  // param-set / -add / -remove / -clear on a network
  const net = ok(await xe('network-create', 'name-label=params-net', 'name-description=first')).trim();
  ok(await xe('network-param-set', `uuid=${net}`, 'name-description=second', 'other-config:color=blue'));
  ok(await xe('network-param-add', `uuid=${net}`, 'param-name=other-config', 'size=big', 'shape=round'));
  ok(await xe('network-param-add', `uuid=${net}`, 'param-name=tags', 'param-key=fast'));
  const ref = await t.client.api.network.get_by_uuid(net);
  let rec = await t.client.api.network.get_record(ref);
  assert.equal(rec.name_description, 'second');
  assert.deepEqual(rec.other_config, { color: 'blue', size: 'big', shape: 'round' });
  assert.deepEqual(rec.tags, ['fast']);
  const [color, oc] = await Promise.all([
    xe('network-param-get', `uuid=${net}`, 'param-name=other-config', 'param-key=color'),
    xe('network-param-get', `uuid=${net}`, 'param-name=other-config'),
  ]);
  assert.equal(ok(color), 'blue\n');
  assert.equal(ok(oc), 'color: blue; size: big; shape: round\n');
  ok(await xe('network-param-remove', `uuid=${net}`, 'param-name=other-config', 'param-key=size'));
  ok(await xe('network-param-clear', `uuid=${net}`, 'param-name=tags'));
  rec = await t.client.api.network.get_record(ref);
  assert.deepEqual(rec.other_config, { color: 'blue', shape: 'round' });
  assert.deepEqual(rec.tags, []);
  const ro = await xe('network-param-set', `uuid=${net}`, 'bridge=xx');
  assert.equal(ro.code, 1);
  assert.match(ro.stderr, /read-only/);
  ok(await xe('network-destroy', `uuid=${net}`));
  assert.deepEqual(await t.client.api.network.get_by_name_label('params-net'), []);
});

test('vm-install from a template, then the power cycle on the simulator', async () => {
  const uuid = await install('xe-power');
  let rec = await vmByUuid(uuid);
  assert.equal(rec.name_label, 'xe-power');
  assert.equal(rec.is_a_template, false);
  assert.equal(rec.power_state, 'Halted');
  ok(await xe('vm-start', 'vm=xe-power'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Running');
  assert.equal(ok(await xe('vm-param-get', `uuid=${uuid}`, 'param-name=power-state')), 'running\n');
  ok(await xe('vm-pause', `uuid=${uuid}`));
  assert.equal((await vmByUuid(uuid)).power_state, 'Paused');
  ok(await xe('vm-unpause', `vm=${uuid}`));
  ok(await xe('vm-suspend', 'vm=xe-power'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Suspended');
  ok(await xe('vm-resume', 'vm=xe-power'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Running');
  ok(await xe('vm-reboot', 'vm=xe-power'));
  ok(await xe('vm-reboot', 'vm=xe-power', '--force'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Running');
  ok(await xe('vm-shutdown', 'vm=xe-power'));
  rec = await vmByUuid(uuid);
  assert.equal(rec.power_state, 'Halted');
  ok(await xe('vm-start', 'vm=xe-power', '--paused'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Paused');
  ok(await xe('vm-shutdown', 'vm=xe-power', '--force'));
  assert.equal((await vmByUuid(uuid)).power_state, 'Halted');

  // field settings through vm-param-set, including a field with an explicit setter
  ok(await xe('vm-param-set', `uuid=${uuid}`, 'name-description=from xe', 'VCPUs-max=3', 'actions-after-crash=preserve', 'platform:acpi=1'));
  rec = await vmByUuid(uuid);
  assert.equal(rec.name_description, 'from xe');
  assert.equal(Number(rec.VCPUs_max), 3);
  assert.equal(rec.actions_after_crash, 'preserve');
  assert.equal(rec.platform.acpi, '1');

  ok(await xe('vm-uninstall', 'vm=xe-power', '--force'));
  assert.deepEqual(await t.client.api.VM.get_by_name_label('xe-power'), []);
});

test('errors: xe prints the code and its named parameters, and exits non-zero', async () => {
  const uuid = await install('xe-errors');
  const [bad, state, unknown, missing, auth, notImpl, exported, console_] = await Promise.all([
    xe('vm-param-list', 'uuid=00000000-0000-0000-0000-000000000000'),
    xe('vm-shutdown', `uuid=${uuid}`),
    xe('no-such-command'),
    xe('vm-param-get', `uuid=${uuid}`),
    runXe([...conn.slice(0, 5), '-u', 'root', '-pw', 'wrong', 'vm-list']),
    xe('pool-join', 'master-address=192.0.2.1', 'master-username=root', 'master-password=x'),
    xe('vm-export', `uuid=${uuid}`, `filename=${join(tempHome(), 'out.xva')}`),
    xe('console', `uuid=${uuid}`),
  ]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'UUID_INVALID\ntype: VM\nuuid: 00000000-0000-0000-0000-000000000000\n');
  assert.equal(bad.stdout, '');
  assert.equal(state.code, 1);
  assert.equal(state.stderr, `VM_BAD_POWER_STATE\nvm: ${uuid} (xe-errors)\nexpected: running\nactual: halted\n`);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr, "Unknown command: no-such-command\nFor usage run: 'xe help'\n");
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^Required parameter not found: param-name\n/);
  assert.equal(auth.code, 1);
  assert.match(auth.stderr, /^Authentication failed\n/);
  // commands whose server side is missing surface the server's error
  assert.equal(notImpl.code, 1);
  assert.match(notImpl.stderr, /^NOT_IMPLEMENTED\n/);
  assert.equal(exported.code, 1);
  assert.match(exported.stderr, /\/export/);
  assert.equal(console_.code, 1);
  assert.match(console_.stderr, /console/);
  const unreachable = await runXe(['-s', '127.0.0.1', '-p', '1', '--nossl', '-u', 'root', '-pw', 'x', 'vm-list']);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /Unable to contact server/);
});

test('--multiple: several matches need it; failures are reported per VM', async () => {
  const a = await install('xe-multi-a');
  const b = await install('xe-multi-b');
  await Promise.all([a, b].map(async (u) => t.client.api.VM.set_name_description(await t.client.api.VM.get_by_uuid(u), 'multi-group')));
  const refused = await xe('vm-start', 'name-description=multi-group');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /Multiple matches VMs found. --multiple required/);
  assert.equal((await vmByUuid(a)).power_state, 'Halted');
  ok(await xe('vm-start', 'name-description=multi-group', '--multiple'));
  assert.equal((await vmByUuid(a)).power_state, 'Running');
  assert.equal((await vmByUuid(b)).power_state, 'Running');
  // one already halted: the other still shuts down, the failure is reported
  await t.client.api.VM.hard_shutdown(await t.client.api.VM.get_by_uuid(a));
  const partial = await xe('vm-shutdown', 'name-description=multi-group', '--multiple', '--force');
  assert.equal(partial.code, 1);
  assert.match(partial.stdout, new RegExp(`operation failed on ${a}: VM_BAD_POWER_STATE`));
  assert.equal((await vmByUuid(b)).power_state, 'Halted');
  const none = await xe('vm-start', 'name-label=nobody-has-this-name');
  assert.equal(none.code, 1);
  assert.match(none.stderr, /No matching VMs found/);
});

test('network, VIF and task commands', async () => {
  const vm = await install('xe-net');
  const net = ok(await xe('network-create', 'name-label=xe-net-1', 'MTU=9000')).trim();
  const nref = await t.client.api.network.get_by_uuid(net);
  assert.equal(await t.client.api.network.get_name_label(nref), 'xe-net-1');
  assert.equal(Number(await t.client.api.network.get_MTU(nref)), 9000);
  assert.match(ok(await xe('network-list', 'name-label=xe-net-1')), new RegExp(`^uuid \\( RO\\) +: ${net}\\n +name-label \\( RW\\): xe-net-1\\n`));
  const vif = ok(await xe('vif-create', `vm-uuid=${vm}`, `network-uuid=${net}`, 'device=0', 'mac=aa:bb:cc:dd:ee:01')).trim();
  const vifRec = await t.client.api.VIF.get_record(await t.client.api.VIF.get_by_uuid(vif));
  assert.equal(vifRec.MAC, 'aa:bb:cc:dd:ee:01');
  assert.equal(vifRec.network, nref);
  const [vifs, vifList] = await Promise.all([xe('vm-vif-list', `uuid=${vm}`), xe('vif-list', `vm-uuid=${vm}`, '--minimal')]);
  assert.match(ok(vifs), new RegExp(`network-uuid \\( RO\\): ${net}`));
  assert.equal(ok(vifList).trim(), vif);
  ok(await xe('vif-destroy', `uuid=${vif}`));
  ok(await xe('network-destroy', `uuid=${net}`));
  assert.deepEqual(await t.client.api.network.get_by_name_label('xe-net-1'), []);

  const task = await t.client.api.task.create('xe-visible-task', 'for task-list');
  const tuuid = await t.client.api.task.get_uuid(task);
  const [list, minimal] = await Promise.all([xe('task-list'), xe('task-list', 'name-label=xe-visible-task', '--minimal')]);
  assert.match(ok(list), new RegExp(`uuid \\( RO\\) +: ${tuuid}\\n +name-label \\( RO\\): xe-visible-task\\n`));
  assert.equal(ok(minimal).trim(), tuuid);
  const cancel = await xe('task-cancel', `uuid=${tuuid}`);
  if (cancel.code === 0) assert.match(await t.client.api.task.get_status(task), /cancel/);
  else assert.match(cancel.stderr, /^[A-Z_]+\n/);
});

test('event-wait returns once an object matches, through event.from', async () => {
  const vm = await install('xe-wait');
  const waiting = spawnXe([...conn, 'event-wait', 'class=vm', 'name-label=xe-wait', 'power-state=running']);
  await new Promise((r) => setTimeout(r, 1200));
  await t.client.api.VM.start(await t.client.api.VM.get_by_uuid(vm), false, false);
  const r = await waiting.done;
  assert.equal(r.code, 0, r.stderr);
  // already true: returns at once; never true: the timeout ends it
  const [now, never, notEqual] = await Promise.all([
    xe('event-wait', 'class=vm', `uuid=${vm}`, 'power-state=running'),
    xe('event-wait', 'class=vm', `uuid=${vm}`, 'power-state=suspended', 'timeout=1'),
    xe('event-wait', 'class=vm', `uuid=${vm}`, 'power-state=/=halted'),
  ]);
  ok(now);
  ok(notEqual);
  assert.equal(never.code, 1);
  assert.match(never.stderr, /Timed out/);
  await t.client.api.VM.hard_shutdown(await t.client.api.VM.get_by_uuid(vm));
});

test('settings from ~/.xe, XE_EXTRA_ARGS and -pwf', async () => {
  const u = new URL(t.url);
  const [host] = await t.client.api.host.get_all();
  const hostUuid = await t.client.api.host.get_uuid(host);
  const home = tempHome();
  writeFileSync(join(home, '.xe'), `# xe settings\nserver=${u.hostname}\nport=${u.port}\nusername=root\npassword=${ROOT_PASSWORD}\nnossl=true\n`);
  const pwf = join(home, 'pw');
  writeFileSync(pwf, `root\n${ROOT_PASSWORD}\n`);
  const [rc, extra, override, file] = await Promise.all([
    runXe(['host-list', '--minimal'], { home }),
    runXe(['host-list', '--minimal'], { env: { XE_EXTRA_ARGS: `server=${u.hostname},port=${u.port},username=root,password=${ROOT_PASSWORD},nossl=true` } }),
    // the command line wins over ~/.xe
    runXe(['host-list', '--minimal', '-pw', 'wrong'], { home }),
    runXe(['-s', u.hostname, '-p', u.port, '--nossl', '-pwf', pwf, 'host-list', '--minimal']),
  ]);
  assert.equal(ok(rc).trim(), hostUuid);
  assert.equal(ok(extra).trim(), hostUuid);
  assert.equal(override.code, 1);
  assert.match(override.stderr, /Authentication failed/);
  assert.equal(ok(file).trim(), hostUuid);
});

test('help: the common list, --all (--minimal for completion) and one command', async () => {
  const [common, all, one] = await Promise.all([runXe(['help']), runXe(['help', '--all', '--minimal']), runXe(['help', 'vm-install'])]);
  assert.match(ok(common), /Common command list/);
  assert.match(ok(common), /vm-start/);
  const names = ok(all).trim().split(',');
  for (const n of ['vm-list', 'vm-param-set', 'pif-param-list', 'host-cpu-list', 'template-list', 'network-create', 'event-wait', 'console']) assert.ok(names.includes(n), n);
  const text = ok(one);
  assert.match(text, /^command name +: vm-install\n/);
  assert.match(text, /\n +reqd params +: new-name-label\n/);
  assert.match(text, /\n +optional params : template, sr-name-label, sr-uuid/);
});
