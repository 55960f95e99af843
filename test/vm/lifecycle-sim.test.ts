/** The VM power-state machine through the XenAPI, on the simulator backend. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Ref } from '../../src/client/client.ts';
import { xenopsPlugin } from '../../src/plugins.ts';
import type { Xenops } from '../../src/messages/vm-domains/index.ts';
import type { SimBackend } from '../../src/xenops/sim/index.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
const sim = (): SimBackend => t.server.services.xenops!.backend as SimBackend;

before(async () => {
  t = await startTestServer({ plugins: [xenopsPlugin({ backend: 'sim', metricsIntervalMs: 100 })] });
});
after(() => t.close());

async function until(ok: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function newVm(name: string): Promise<Ref<'VM'>> {
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  // the test guest template has no disks, so cloning it needs no storage; the clone is a template until told otherwise
  const vm = await t.client.api.VM.clone(tpl, name);
  await t.client.api.VM.set_is_a_template(vm, false);
  return vm;
}

test('start, pause, unpause, suspend, resume, reboot, shutdown — with allowed_operations along the way', async () => {
  const vm = await newVm('sim-1');
  const ops = await t.client.api.VM.get_allowed_operations(vm);
  assert.ok(ops.includes('start') && !ops.includes('clean_shutdown'));
  await t.client.api.VM.start(vm, false, false);
  let rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.power_state, 'Running');
  assert.equal(rec.resident_on, (await t.client.api.host.get_all())[0]);
  await until(async () => (await t.client.api.VM.get_allowed_operations(vm)).includes('clean_shutdown')); // once the guest agent answered
  assert.deepEqual(rec.current_operations, {});
  assert.equal(rec.consoles.length, 2);
  assert.notEqual((await t.client.api.VM_metrics.get_start_time(rec.metrics)), '19700101T00:00:00Z');
  await t.client.api.VM.pause(vm);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Paused');
  await t.client.api.VM.unpause(vm);
  await t.client.api.VM.suspend(vm);
  rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.power_state, 'Suspended');
  assert.equal(rec.consoles.length, 0);
  await t.client.api.VM.resume(vm, false, false);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  await t.client.api.VM.clean_reboot(vm);
  await t.client.api.VM.hard_reboot(vm);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  await t.client.api.VM.clean_shutdown(vm);
  rec = await t.client.api.VM.get_record(vm);
  assert.equal(rec.power_state, 'Halted');
  assert.equal(rec.resident_on, 'OpaqueRef:NULL');
});

test('VM_BAD_POWER_STATE names the VM and the expected and actual states', async () => {
  const vm = await newVm('sim-2');
  assert.deepEqual(await failsWith(t.client.api.VM.clean_shutdown(vm), 'VM_BAD_POWER_STATE'), [vm, 'running', 'halted']);
  await t.client.api.VM.start(vm, true, false);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Paused');
  assert.deepEqual(await failsWith(t.client.api.VM.start(vm, false, false), 'VM_BAD_POWER_STATE'), [vm, 'halted', 'paused']);
  await t.client.api.VM.hard_shutdown(vm);
});

test('templates cannot start; the control domain cannot be shut down', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Debian Bookworm 12');
  await failsWith(t.client.api.VM.start(tpl, false, false), 'VM_IS_TEMPLATE');
  const [host] = await t.client.api.host.get_all();
  const dom0 = await t.client.api.host.get_control_domain(host);
  await failsWith(t.client.api.VM.hard_shutdown(dom0), 'OPERATION_NOT_ALLOWED');
});

test('OTHER_OPERATION_IN_PROGRESS while another operation runs on the VM', async () => {
  const vm = await newVm('sim-3');
  const slow = sim() as unknown as { latency: number };
  slow.latency = 300;
  try {
    const task = await t.client.async.VM.start(vm, false, false);
    await new Promise((r) => setTimeout(r, 50));
    const params = await failsWith(t.client.api.VM.start(vm, false, false), 'OTHER_OPERATION_IN_PROGRESS');
    assert.deepEqual(params.slice(0, 3), ['VM', vm, 'start']);
    await t.client.waitTask(task);
  } finally {
    slow.latency = 0;
  }
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  await t.client.api.VM.hard_shutdown(vm);
});

test('HOST_NOT_ENOUGH_FREE_MEMORY when the VM does not fit', async () => {
  const vm = await newVm('sim-huge');
  const huge = 1024 * 1024 * 1024 * 1024;
  await t.client.api.VM.set_memory_limits(vm, huge, huge, huge, huge);
  const [needed, available] = await failsWith(t.client.api.VM.start(vm, false, false), 'HOST_NOT_ENOUGH_FREE_MEMORY');
  assert.equal(Number(needed), huge + (await t.client.api.VM.compute_memory_overhead(vm)));
  assert.ok(Number(available) < huge);
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted');
});

test('guest-initiated events follow actions_after_*', async () => {
  const vm = await newVm('sim-guest');
  const uuid = await t.client.api.VM.get_uuid(vm);
  await t.client.api.VM.start(vm, false, false);
  const settle = () => new Promise((r) => setTimeout(r, 100));
  sim().injectGuestEvent(uuid, 'reboot');
  await settle();
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running', 'restart after reboot');
  await t.client.api.VM.set_actions_after_crash(vm, 'preserve');
  sim().injectGuestEvent(uuid, 'crash');
  await settle();
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Paused', 'preserved after crash');
  await t.client.api.VM.hard_shutdown(vm);
  await t.client.api.VM.set_actions_after_crash(vm, 'destroy');
  await t.client.api.VM.start(vm, false, false);
  sim().injectGuestEvent(uuid, 'crash');
  await settle();
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted');
  await t.client.api.VM.start(vm, false, false);
  sim().injectGuestEvent(uuid, 'shutdown');
  await settle();
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted', 'actions_after_shutdown=destroy');
});

test('memory settings keep their order', async () => {
  const vm = await newVm('sim-mem');
  const mib = 1024 * 1024;
  await failsWith(t.client.api.VM.set_memory_limits(vm, 512 * mib, 256 * mib, 256 * mib, 256 * mib), 'MEMORY_CONSTRAINT_VIOLATION');
  await t.client.api.VM.set_memory_limits(vm, 128 * mib, 512 * mib, 256 * mib, 512 * mib);
  assert.equal(await t.client.api.VM.get_memory_static_max(vm), 512 * mib);
  await failsWith(t.client.api.VM.set_VCPUs_at_startup(vm, 64), 'INVALID_VALUE');
});

test('VM.destroy takes its VBDs, VIFs and metrics with it, only when halted', async () => {
  const vm = await newVm('sim-destroy');
  const metrics = await t.client.api.VM.get_metrics(vm);
  await t.client.api.VM.start(vm, false, false);
  await failsWith(t.client.api.VM.destroy(vm), 'VM_BAD_POWER_STATE');
  await t.client.api.VM.hard_shutdown(vm);
  await t.client.api.VM.destroy(vm);
  await failsWith(t.client.api.VM.get_record(vm), 'HANDLE_INVALID');
  await failsWith(t.client.api.VM_metrics.get_record(metrics), 'HANDLE_INVALID');
});

test('turning a template into a VM makes it startable; a running VM cannot become a template', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const vm = await t.client.api.VM.clone(tpl, 'from-template').catch(async () => t.client.api.VM.create({ ...(await t.client.api.VM.get_record(tpl)), name_label: 'from-template' } as never));
  assert.equal(await t.client.api.VM.get_is_a_template(vm), true);
  assert.ok(!(await t.client.api.VM.get_allowed_operations(vm)).includes('start'));
  await t.client.api.VM.set_is_a_template(vm, false);
  assert.ok((await t.client.api.VM.get_allowed_operations(vm)).includes('start'));
  await t.client.api.VM.start(vm, false, false);
  await failsWith(t.client.api.VM.set_is_a_template(vm, true), 'VM_BAD_POWER_STATE');
  await t.client.api.VM.hard_shutdown(vm);
});

test('as xapi: VM.start of a VM HA restarts sets ha_always_run, a shutdown or suspend asked for clears it', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const vm = await t.client.api.VM.clone(tpl, 'ha-always-run');
  const plain = await t.client.api.VM.clone(tpl, 'not-protected');
  for (const v of [vm, plain]) await t.client.api.VM.set_is_a_template(v, false);
  await t.client.api.VM.set_ha_restart_priority(vm, 'restart');
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), false);
  for (const v of [vm, plain]) await t.client.api.VM.start(v, false, false);
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), true);
  assert.equal(await t.client.api.VM.get_ha_always_run(plain), false, 'only VMs HA restarts');
  await t.client.api.VM.hard_shutdown(vm);
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), false);
  await t.client.api.VM.start(vm, false, false);
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), true);
  await t.client.api.VM.clean_shutdown(vm);
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), false);
  assert.equal(await t.client.api.VM.get_ha_restart_priority(vm), 'restart', 'the priority stays');
  await t.client.api.VM.hard_shutdown(plain);
});
