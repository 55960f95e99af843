// HA's messages over the XenAPI: the three-host minimum, xapi's errors, restart
// priorities, and the failover plan's arithmetic on a pool whose other hosts
// and resident VMs are records (the plan reads only records).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Ref } from '../../src/client/client.ts';
import { HOST_MEMORY_OVERHEAD } from '../../src/host/facts.ts';
import { vmFootprint } from '../../src/messages/vm-domains/memory.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
const GiB = 1024 ** 3;

before(async () => {
  t = await startTestServer();
});
after(() => t.close());

const pool = async (): Promise<Ref<'pool'>> => (await t.client.api.pool.get_all())[0];

test('a pool of one cannot enable HA: HA_TOO_FEW_HOSTS; disabling what is off is HA_NOT_ENABLED', async () => {
  await failsWith(t.client.api.pool.enable_ha([], {}), 'HA_TOO_FEW_HOSTS');
  await failsWith(t.client.api.pool.enable_ha(['OpaqueRef:00000000-0000-0000-0000-000000000001' as Ref<'SR'>], {}), 'HANDLE_INVALID');
  await failsWith(t.client.api.pool.disable_ha(), 'HA_NOT_ENABLED');
  assert.equal(await t.client.api.pool.get_ha_enabled(await pool()), false);
});

test('restart priorities: xapi\'s three values; a running VM is protected at once; ha_always_run maps onto them', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const vm = await t.client.api.VM.clone(tpl, 'ha-priority');
  const params = await failsWith(t.client.api.VM.set_ha_restart_priority(vm, 'always'), 'INVALID_VALUE');
  assert.deepEqual(params, ['ha_restart_priority', 'always']);
  await t.client.api.VM.set_ha_restart_priority(vm, 'best-effort');
  assert.equal(await t.client.api.VM.get_ha_restart_priority(vm), 'best-effort');
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), false, 'a halted VM is not protected yet');
  t.server.services.store.transact((tx) => tx.update('VM', vm, { power_state: 'Running', resident_on: t.server.services.hostRef() }));
  await t.client.api.VM.set_ha_always_run(vm, true);
  assert.equal(await t.client.api.VM.get_ha_restart_priority(vm), 'restart');
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), true);
  await t.client.api.VM.set_ha_restart_priority(vm, '');
  assert.equal(await t.client.api.VM.get_ha_always_run(vm), false);
  t.server.services.store.transact((tx) => tx.update('VM', vm, { power_state: 'Halted', resident_on: 'OpaqueRef:NULL' }));
});

test('the failover plan: how many host failures the protected VMs survive, and where they would go', async () => {
  const { store } = t.server.services;
  const local = t.server.services.hostRef();
  // three live hosts with 3 GiB free each before their VMs
  const total = HOST_MEMORY_OVERHEAD + 3 * GiB;
  const hosts: string[] = [local];
  store.transact((tx) => {
    tx.update('host_metrics', store.must('host', local).metrics, { memory_total: total, live: true });
    for (const name of ['ha-2', 'ha-3']) {
      const metrics = tx.create('host_metrics', { memory_total: total, live: true });
      hosts.push(tx.create('host', { name_label: name, metrics }));
    }
  });
  await failsWith(t.client.api.pool.enable_ha([], {}), 'NOT_IMPLEMENTED'); // three hosts: past the minimum, but this daemon has no HA service
  const [tpl] = await t.client.api.VM.get_by_name_label('Xenon test guest');
  const vms: Ref<'VM'>[] = [];
  for (const [i, host] of hosts.slice(0, 2).entries()) {
    const vm = await t.client.api.VM.clone(tpl, `ha-vm-${i}`);
    await t.client.api.VM.set_is_a_template(vm, false);
    await t.client.api.VM.set_memory_limits(vm, 2 * GiB, 2 * GiB, 2 * GiB, 2 * GiB);
    store.transact((tx) => tx.update('VM', vm, { power_state: 'Running', resident_on: host }));
    await t.client.api.VM.set_ha_restart_priority(vm, 'restart');
    vms.push(vm);
  }
  assert.ok(2 * vmFootprint(store.must('VM', vms[0])) > 3 * GiB, 'two such VMs do not fit one host');
  // one failure: the third host takes either VM; two: the one survivor cannot take both
  assert.equal(await t.client.api.pool.ha_compute_max_host_failures_to_tolerate(), 1);
  assert.equal(await t.client.api.pool.ha_failover_plan_exists(1), true);
  assert.equal(await t.client.api.pool.ha_failover_plan_exists(2), false);
  assert.equal(await t.client.api.pool.ha_compute_hypothetical_max_host_failures_to_tolerate({}), 2, 'nothing protected: any two may fail');
  assert.deepEqual(await t.client.api.pool.ha_compute_vm_failover_plan([hosts[0]] as Ref<'host'>[], [vms[0]]), { [vms[0]]: { host: hosts[2] } });
  const both = await t.client.api.pool.ha_compute_vm_failover_plan(hosts.slice(0, 2) as Ref<'host'>[], vms);
  assert.equal(Object.values(both).filter((p) => p.error_code === 'HOST_NOT_ENOUGH_FREE_MEMORY').length, 1, JSON.stringify(both));

  const p = await pool();
  await failsWith(t.client.api.pool.set_ha_host_failures_to_tolerate(p, -1), 'INVALID_VALUE');
  await t.client.api.pool.set_ha_host_failures_to_tolerate(p, 2);
  assert.equal(await t.client.api.pool.get_ha_plan_exists_for(p), 1);
  assert.equal(await t.client.api.pool.get_ha_overcommitted(p), true);
  await t.client.api.pool.set_ha_host_failures_to_tolerate(p, 1);
  assert.equal(await t.client.api.pool.get_ha_overcommitted(p), false);
});
