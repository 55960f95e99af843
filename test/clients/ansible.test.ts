/**
 * Ansible from Debian (community.general's xenserver_guest, _info and
 * _powerstate, unchanged) against a daemon running real test guests under
 * QEMU: create a VM from a template with a disk and a NIC, read it, power it
 * on and off, reconfigure vCPUs and memory, remove it. Every task must
 * succeed, and the state is checked through the XenAPI after each playbook.
 *
 * The modules `import XenAPI`; Debian ships that binding as
 * os_xenapi.client.XenAPI (python3-os-xenapi), so the test puts it on
 * PYTHONPATH under its own name.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { Plugin } from '../../src/server.ts';
import { testGuestCmdline, testGuestPaths } from '../../tools/testguest/index.ts';
import { MARKER, waitSerial } from '../helpers/guest.ts';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

const PLAYBOOK = '/usr/bin/ansible-playbook';
const PYTHON = '/usr/bin/python3';
const BINDING = '/usr/lib/python3/dist-packages/os_xenapi/client/XenAPI.py';
const MODULES = '/usr/lib/python3/dist-packages/ansible_collections/community/general/plugins/modules/xenserver_guest.py';
const skip = [PLAYBOOK, PYTHON, BINDING, MODULES].find((f) => !existsSync(f));

const TEMPLATE = 'Ansible test guest';
const VM_NAME = 'ansible-vm';
const NETWORK = 'ansible-net';
const MiB = 1024 * 1024;

/** VIFs without the network subsystem: the guest gets a NIC with the VIF's MAC and no backend. */
const unwiredNics: Plugin = {
  name: 'unwired-nics',
  start(services) {
    services.nics = { plug: async () => ({}), unplug: async () => undefined };
  },
};

let t: TestServer;
let work: string;

before(async () => {
  if (skip) return;
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), unwiredNics, xenopsPlugin({ backend: 'qemu', accel: 'tcg', metricsIntervalMs: 1000 })] });
  work = mkdtempSync(join(tmpdir(), 'xenon-ansible-'));
  symlinkSync(BINDING, join(work, 'XenAPI.py'));
  const c = t.client.api;
  // an administrator's template: the test guest's kernel, no disks planned
  const { kernel, initrd } = await testGuestPaths();
  const [builtin] = await c.VM.get_by_name_label('Xenon test guest');
  const tpl = await c.VM.create({ ...(await c.VM.get_record(builtin)), name_label: TEMPLATE, is_a_template: true, is_default_template: false, other_config: {} } as never);
  await c.VM.set_PV_kernel(tpl, kernel);
  await c.VM.set_PV_ramdisk(tpl, initrd);
  await c.VM.set_PV_args(tpl, testGuestCmdline({ mode: 'stay', extra: '' }));
  await c.network.create({ name_label: NETWORK, name_description: '', MTU: 1500, other_config: {}, tags: [] } as never);
});

after(async () => {
  if (skip) return;
  for (const vm of await t.client.api.VM.get_all().catch(() => [])) {
    const rec = await t.client.api.VM.get_record(vm).catch(() => undefined);
    if (rec && !rec.is_control_domain && rec.power_state !== 'Halted') await t.client.api.VM.hard_shutdown(vm).catch(() => undefined);
  }
  await t.close();
  rmSync(work, { recursive: true, force: true });
});

interface TaskResult { changed?: boolean; failed?: boolean; msg?: string; instance?: Record<string, unknown> }

/** Runs one task of a module against the daemon; fails the test unless the play succeeds. */
async function play(module: string, args: Record<string, unknown>): Promise<TaskResult> {
  const connection = { hostname: t.url, username: 'root', password: ROOT_PASSWORD, validate_certs: false };
  const book = [{ hosts: 'localhost', connection: 'local', gather_facts: false, tasks: [{ name: module, [`community.general.${module}`]: { ...connection, ...args } }] }];
  const file = join(work, 'playbook.json');
  writeFileSync(file, JSON.stringify(book)); // JSON is YAML
  const env = {
    ...process.env, PYTHONPATH: work, ANSIBLE_STDOUT_CALLBACK: 'json', ANSIBLE_NOCOLOR: '1', ANSIBLE_HOME: join(work, 'home'),
    ANSIBLE_LOCAL_TEMP: join(work, 'tmp'), ANSIBLE_LOCALHOST_WARNING: 'False', ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False',
  };
  const run = promisify(execFile)(PLAYBOOK, ['-i', 'localhost,', '-e', `ansible_python_interpreter=${PYTHON}`, file], { env, encoding: 'utf8', timeout: 600_000, maxBuffer: 16 << 20 });
  const { stdout } = await run.catch((e: { stdout?: string; stderr?: string }) => {
    throw new Error(`${module} failed:\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  });
  const out = JSON.parse(stdout) as { plays: { tasks: { hosts: Record<string, TaskResult> }[] }[] };
  const result = out.plays[0]!.tasks[0]!.hosts.localhost!;
  assert.notEqual(result.failed, true, result.msg);
  return result;
}

async function theVm(): Promise<Ref<'VM'>> {
  const vms = await t.client.api.VM.get_by_name_label(VM_NAME);
  assert.equal(vms.length, 1, `one VM named ${VM_NAME}`);
  return vms[0]!;
}

test('xenserver_guest creates a VM from a template with a disk and a NIC', { skip, timeout: 300_000 }, async () => {
  const r = await play('xenserver_guest', {
    name: VM_NAME, template: TEMPLATE, state: 'present',
    hardware: { num_cpus: 1, memory_mb: 256 },
    disks: [{ size_mb: 16, sr: 'Local storage', name: 'ansible-disk' }],
    networks: [{ name: NETWORK }],
  });
  assert.equal(r.changed, true);
  const vm = await theVm();
  const rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.is_a_template, false, 'VM.provision made it a VM');
  assert.equal(rec.power_state, 'Halted');
  assert.equal(rec.VCPUs_max, 1);
  assert.equal(rec.memory_static_max, 256 * MiB);
  const disks = [];
  for (const vbd of rec.VBDs) {
    const b = await t.client.api.VBD.get_record(vbd);
    if (b.type === 'Disk') disks.push(await t.client.api.VDI.get_record(b.VDI));
  }
  assert.equal(disks.length, 1);
  assert.equal(disks[0]!.virtual_size, 16 * MiB);
  assert.equal(disks[0]!.name_label, 'ansible-disk');
  assert.equal(rec.VIFs.length, 1);
  const vif = await t.client.api.VIF.get_record(rec.VIFs[0]!);
  assert.equal(await t.client.api.network.get_name_label(vif.network), NETWORK);
});

test('xenserver_guest_info reads it', { skip, timeout: 120_000 }, async () => {
  const r = await play('xenserver_guest_info', { name: VM_NAME });
  const facts = r.instance!;
  assert.equal(facts.name, VM_NAME);
  assert.equal(facts.uuid, await t.client.api.VM.get_uuid(await theVm()));
  assert.equal(facts.state, 'poweredoff');
  assert.deepEqual(facts.hardware, { num_cpus: 1, num_cpu_cores_per_socket: 1, memory_mb: 256 });
  assert.equal((facts.disks as unknown[]).length, 1);
  assert.equal((facts.networks as unknown[]).length, 1);
});

test('xenserver_guest_powerstate powers it on, and off through the guest', { skip, timeout: 300_000 }, async () => {
  const vm = await theVm();
  const on = await play('xenserver_guest_powerstate', { name: VM_NAME, state: 'powered-on' });
  assert.equal(on.changed, true);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  await waitSerial(t.client, vm, MARKER);
  const off = await play('xenserver_guest_powerstate', { name: VM_NAME, state: 'shutdown-guest', state_change_timeout: 240 });
  assert.equal(off.changed, true);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted');
});

test('xenserver_guest reconfigures vCPUs and memory', { skip, timeout: 120_000 }, async () => {
  const r = await play('xenserver_guest', { name: VM_NAME, state: 'present', hardware: { num_cpus: 2, memory_mb: 384 } });
  assert.equal(r.changed, true);
  const rec = await t.client.api.VM.get_record(await theVm());
  assert.equal(rec.VCPUs_max, 2);
  assert.equal(rec.VCPUs_at_startup, 2);
  assert.equal(rec.memory_static_max, 384 * MiB);
  assert.equal(rec.memory_dynamic_max, 384 * MiB);
});

test('xenserver_guest removes it, with its disk', { skip, timeout: 120_000 }, async () => {
  const vm = await theVm();
  const vdis = [];
  for (const vbd of await t.client.api.VM.get_VBDs(vm)) vdis.push(await t.client.api.VBD.get_VDI(vbd));
  const r = await play('xenserver_guest', { name: VM_NAME, state: 'absent' });
  assert.equal(r.changed, true);
  assert.deepEqual(await t.client.api.VM.get_by_name_label(VM_NAME), []);
  const left = await t.client.api.VDI.get_all();
  for (const vdi of vdis) assert.ok(!left.includes(vdi), 'the disk went with the VM');
});
