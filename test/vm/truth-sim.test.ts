/**
 * What Xenon tells clients about VMs and the host is true, as xapi would tell
 * it (simulator backend, local storage): provisioning from templates,
 * snapshots being templates, allowed_operations derived from what is
 * implemented and what the guest can do, guest metrics that outlive a halt,
 * versions, memory overheads, and NOT_IMPLEMENTED instead of placeholders.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Ref } from '../../src/client/client.ts';
import type { Xenops } from '../../src/messages/vm-domains/index.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { SimBackend } from '../../src/xenops/sim/index.ts';
import { failsWith, jsonRpc, startTestServer, type TestServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
let t: TestServer;
let bare: TestServer;
const sim = (s: TestServer): SimBackend => (s.server.services.xenops as Xenops).backend as SimBackend;

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim', metricsIntervalMs: 100 })] });
  // no storage: the disk operations have no behaviour here, so no VM may list them
  bare = await startTestServer({ plugins: [xenopsPlugin({ backend: 'sim', metricsIntervalMs: 100 })] });
});
after(async () => {
  await t.close();
  await bare.close();
});

async function until(ok: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function template(name: string): Promise<Ref<'VM'>> {
  const [tpl] = await t.client.api.VM.get_by_name_label(name);
  assert.ok(tpl, name);
  return tpl;
}

/** A halted, non-template VM with one disk, provisioned from the test guest's template. */
async function newVm(name: string): Promise<Ref<'VM'>> {
  const vm = await t.client.api.VM.clone(await template('Xenon test guest'), name);
  await t.client.api.VM.provision(vm);
  return vm;
}

test('VM.provision on a fresh clone of a template clears is_a_template and makes the planned disks, once', async () => {
  const tpl = await template('Generic Linux BIOS');
  const vm = await t.client.api.VM.clone(tpl, 'installed');
  assert.equal(await t.client.api.VM.get_is_a_template(vm), true, 'a clone of a template is a template');
  assert.equal(await t.client.api.VM.get_is_default_template(vm), false);
  const other = await t.client.api.VM.get_other_config(vm);
  assert.equal(other.default_template, undefined, 'the clone is not a built-in template');
  assert.equal(other.base_template_name, 'Generic Linux BIOS');
  await failsWith(t.client.api.VM.start(vm, false, false), 'VM_IS_TEMPLATE');
  await t.client.api.VM.provision(vm);
  const rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.is_a_template, false);
  assert.equal(rec.other_config.disks, undefined, 'the plan is used up');
  assert.ok(rec.allowed_operations.includes('start'));
  assert.equal(rec.VBDs.length, 1);
  const vbd = await t.client.api.VBD.get_record(rec.VBDs[0]);
  assert.equal(vbd.userdevice, '0');
  assert.equal(vbd.bootable, true);
  assert.equal(vbd.unpluggable, false, 'a system disk');
  const vdi = await t.client.api.VDI.get_record(vbd.VDI);
  assert.equal(vdi.virtual_size, 10 * 1024 * MiB);
  assert.equal(vdi.type, 'system');
  assert.equal(vdi.name_label, '0');
  await t.client.api.VM.provision(vm);
  assert.equal((await t.client.api.VM.get_VBDs(vm)).length, 1, 'a second provision makes no disks');
  await t.client.api.VM.start(vm, false, false);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  await t.client.api.VM.hard_shutdown(vm);
});

test('VM.provision: a plan naming an unknown SR fails as xapi (UUID_INVALID) and leaves no disks behind', async () => {
  const vm = await t.client.api.VM.clone(await template('Generic Linux BIOS'), 'bad-plan');
  const sr = await t.client.api.pool.get_default_SR((await t.client.api.pool.get_all())[0]);
  const srUuid = await t.client.api.SR.get_uuid(sr);
  const vdisBefore = (await t.client.api.VDI.get_all()).length;
  await t.client.api.VM.remove_from_other_config(vm, 'disks');
  await t.client.api.VM.add_to_other_config(vm, 'disks',
    `<provision><disk device="0" size="${8 * MiB}" sr="${srUuid}" bootable="true" type="system"/><disk device="1" size="${8 * MiB}" sr="00000000-0000-0000-0000-00000000dead" bootable="false" type="user"/></provision>`);
  assert.deepEqual(await failsWith(t.client.api.VM.provision(vm), 'UUID_INVALID'), ['sr', '00000000-0000-0000-0000-00000000dead']);
  assert.equal((await t.client.api.VM.get_VBDs(vm)).length, 0);
  assert.equal((await t.client.api.VDI.get_all()).length, vdisBefore);
});

test('snapshots are templates: they do not start, they revert; a clone of one is a template', async () => {
  const vm = await newVm('snapped');
  await t.client.api.VM.start(vm, false, false);
  const live = await t.client.api.VM.snapshot(vm, 'live snap', []);
  await t.client.api.VM.hard_shutdown(vm);
  const snap = await t.client.api.VM.snapshot(vm, 'halted snap', []);
  for (const s of [live, snap]) {
    const rec = await t.client.api.VM.get_record(s);
    assert.equal(rec.is_a_snapshot, true);
    assert.equal(rec.is_a_template, true);
    assert.equal(rec.power_state, 'Halted');
    assert.ok(rec.allowed_operations.includes('revert'));
    assert.ok(!rec.allowed_operations.includes('start'));
    assert.ok(!rec.allowed_operations.includes('provision'));
    await failsWith(t.client.api.VM.start(s, false, false), 'VM_IS_TEMPLATE');
    await failsWith(t.client.api.VM.assert_can_boot_here(s, (await t.client.api.host.get_all())[0]), 'VM_IS_TEMPLATE');
  }
  await t.client.api.VM.revert(snap);
  const rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.is_a_template, false);
  assert.equal(rec.is_a_snapshot, false);
  await t.client.api.VM.start(vm, false, false);
  await t.client.api.VM.hard_shutdown(vm);
  const fromSnap = await t.client.api.VM.clone(snap, 'from snapshot');
  assert.equal(await t.client.api.VM.get_is_a_template(fromSnap), true);
  assert.equal(await t.client.api.VM.get_is_a_snapshot(fromSnap), false);
});

const UNIMPLEMENTED = ['migrate_send', 'checkpoint', 'send_sysrq', 'send_trigger'] as const;

test('allowed_operations lists nothing that answers NOT_IMPLEMENTED', async () => {
  const vm = await newVm('ops');
  await t.client.api.VM.start(vm, false, false);
  await until(async () => (await t.client.api.VM.get_allowed_operations(vm)).includes('clean_shutdown'));
  const running = await t.client.api.VM.get_allowed_operations(vm);
  for (const op of UNIMPLEMENTED) assert.ok(!running.includes(op), op);
  assert.ok(running.includes('hard_shutdown') && running.includes('suspend') && running.includes('snapshot'));
  const host = (await t.client.api.host.get_all())[0];
  // pool_migrate has behaviour (test/pool/): to the host the VM is on already, nothing moves
  assert.ok(running.includes('pool_migrate'));
  await t.client.api.VM.pool_migrate(vm, host, {});
  assert.equal(await t.client.api.VM.get_resident_on(vm), host);
  await failsWith(t.client.api.VM.send_sysrq(vm, 'b'), 'NOT_IMPLEMENTED');
  await failsWith(t.client.api.VM.checkpoint(vm, 'cp'), 'NOT_IMPLEMENTED');
  await t.client.api.VM.pause(vm);
  for (const op of UNIMPLEMENTED) assert.ok(!(await t.client.api.VM.get_allowed_operations(vm)).includes(op), op);
  await t.client.api.VM.hard_shutdown(vm);
  const halted = await t.client.api.VM.get_allowed_operations(vm);
  assert.ok(!halted.includes('metadata_export') && !halted.includes('create_template'), 'no message behind them');
  // without storage the disk operations have no behaviour, and are not offered
  const [tpl] = await bare.client.api.VM.get_by_name_label('Xenon test guest');
  const bareVm = await bare.client.api.VM.create({ ...(await bare.client.api.VM.get_record(tpl)), name_label: 'bare', is_a_template: false } as never);
  const bareOps = await bare.client.api.VM.get_allowed_operations(bareVm);
  assert.ok(bareOps.includes('start'));
  for (const op of ['snapshot', 'clone', 'copy', 'provision']) assert.ok(!bareOps.includes(op as never), op);
});

test('clean_shutdown, clean_reboot and suspend are offered once the guest has shown it can do them; the call is tried either way', async () => {
  const agentless = bare.server.services.xenops as Xenops;
  const [tpl] = await bare.client.api.VM.get_by_name_label('Xenon test guest');
  const vm = await bare.client.api.VM.create({ ...(await bare.client.api.VM.get_record(tpl)), name_label: 'no agent', is_a_template: false } as never);
  const backend = sim(bare);
  backend.guestAgent = false;
  try {
    await bare.client.api.VM.start(vm, false, false);
    await agentless.sampleMetrics();
    const ops = await bare.client.api.VM.get_allowed_operations(vm);
    assert.ok(!ops.includes('clean_shutdown') && !ops.includes('clean_reboot') && !ops.includes('suspend'), ops.join());
    assert.ok(ops.includes('hard_shutdown') && ops.includes('hard_reboot') && ops.includes('pause'), ops.join());
    await bare.client.api.VM.clean_shutdown(vm); // xapi too tries it: allowed_operations is advisory
    assert.equal(await bare.client.api.VM.get_power_state(vm), 'Halted');
  } finally {
    backend.guestAgent = true;
  }
  await bare.client.api.VM.start(vm, false, false);
  await until(async () => {
    const ops = await bare.client.api.VM.get_allowed_operations(vm);
    return ops.includes('clean_shutdown') && ops.includes('clean_reboot') && ops.includes('suspend');
  });
  const gm = await bare.client.api.VM_guest_metrics.get_other(await bare.client.api.VM.get_guest_metrics(vm));
  assert.equal(gm['feature-shutdown'], '1');
  assert.equal(gm['feature-suspend'], '1');
  await bare.client.api.VM.hard_shutdown(vm);
});

test('a clean shutdown waits xapi\'s 1200 s; VM.shutdown then falls back to hard', async () => {
  const vm = await newVm('stubborn');
  await t.client.api.VM.start(vm, false, false);
  sim(t).ignorePowerButton = true;
  try {
    assert.deepEqual(await failsWith(t.client.api.VM.clean_shutdown(vm), 'VM_SHUTDOWN_TIMEOUT'), [vm, '1200']);
    assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
    await t.client.api.VM.shutdown(vm);
    assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted');
  } finally {
    sim(t).ignorePowerButton = false;
  }
});

test('guest metrics live on after the VM halts, until it next starts', async () => {
  const vm = await newVm('metrics');
  await t.client.api.VM.start(vm, false, false);
  await until(async () => (await t.client.api.VM.get_guest_metrics(vm)) !== 'OpaqueRef:NULL');
  const gm = await t.client.api.VM.get_guest_metrics(vm);
  assert.equal(await t.client.api.VM_guest_metrics.get_live(gm), true);
  await t.client.api.VM.clean_shutdown(vm);
  await new Promise((r) => setTimeout(r, 300)); // a few metrics ticks
  assert.equal(await t.client.api.VM.get_guest_metrics(vm), gm);
  const rec = await t.client.api.VM_guest_metrics.get_record(gm);
  assert.equal(rec.live, false);
  assert.equal(rec.os_version.distro, 'debian');
  await t.client.api.VM.start(vm, false, false);
  await failsWith(t.client.api.VM_guest_metrics.get_record(gm), 'HANDLE_INVALID');
  await until(async () => (await t.client.api.VM.get_guest_metrics(vm)) !== 'OpaqueRef:NULL');
  await t.client.api.VM.hard_shutdown(vm);
});

test('host.software_version names a XenServer 8 API level; API versions agree everywhere', async () => {
  const host = (await jsonRpc(t.url, 'session.get_this_host', [t.client.session, t.client.session])).result as Ref<'host'>;
  const rec = await t.client.api.host.get_record(host);
  const sv = rec.software_version;
  // Ansible's community.general xenserver module_utils: int() of each dotted part of product_version
  const [major, minor, micro] = sv.product_version!.split('.').map((x) => Number.parseInt(x, 10));
  assert.ok(major! >= 8 && Number.isInteger(minor) && Number.isInteger(micro), sv.product_version);
  assert.match(sv.platform_version ?? '', /^\d+\.\d+\.\d+$/);
  assert.match(sv.xapi ?? '', /^\d+\.\d+$/);
  assert.match(sv.xenon_version ?? '', /^\d+\.\d+\.\d+/);
  assert.equal(sv.xencenter_max, `${rec.API_version_major}.${rec.API_version_minor}`);
  assert.equal(`${rec.API_version_major}.${rec.API_version_minor}`, '2.21');
});

test('memory overheads are computed as xapi computes them, and a running VM carries its own', async () => {
  const host = (await t.client.api.host.get_all())[0];
  const hostOverhead = await t.client.api.host.compute_memory_overhead(host);
  assert.ok(hostOverhead > 0);
  assert.equal(hostOverhead, await t.client.api.host.get_memory_overhead(host));
  const vm = await newVm('overhead');
  await t.client.api.VM.set_memory_limits(vm, 256 * MiB, 256 * MiB, 256 * MiB, 256 * MiB);
  await t.client.api.VM.set_VCPUs_max(vm, 1);
  // HVM, 256 MiB, 1 vCPU: 1 + 1 extra, shadow ceil((256 + 2 * 256) / 256) = 3, ceil(38 / 256) = 1 → 6 MiB
  assert.equal(await t.client.api.VM.compute_memory_overhead(vm), 6 * MiB);
  await t.client.api.VM.set_VCPUs_max(vm, 4);
  // shadow ceil((1024 + 512) / 256) = 6, ceil(152 / 256) = 1 → 9 MiB
  assert.equal(await t.client.api.VM.compute_memory_overhead(vm), 9 * MiB);
  assert.equal(await t.client.api.VM.get_memory_overhead(vm), 9 * MiB);
  await t.client.api.VM.start(vm, false, false);
  assert.equal(await t.client.api.VM.get_memory_overhead(vm), 9 * MiB);
  const free = await t.client.api.host.compute_free_memory(host);
  await t.client.api.VM.hard_shutdown(vm);
  assert.equal(await t.client.api.host.compute_free_memory(host), free + 256 * MiB + 9 * MiB);
});

test('messages with nothing real behind them answer NOT_IMPLEMENTED', async () => {
  const host = (await t.client.api.host.get_all())[0];
  await failsWith(t.client.api.host.get_log(host), 'NOT_IMPLEMENTED');
  await failsWith(t.client.api.host.get_system_status_capabilities(host), 'NOT_IMPLEMENTED');
});
