/**
 * HA master failover between daemons (three hosts in network namespaces,
 * simulated guests): with HA on, the pool master host dies — its daemon, its
 * etcd member, its fencer and its guests — and a survivor, elected by etcd,
 * rebuilds the database from the redo log, restarts in place as pool master,
 * and restarts the protected VM that ran on the dead master; the other
 * survivor follows the new master.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { failsWith, hostRefOf, masterNamedBy, PoolLab, ROOT_PASSWORD, until, type LabHost } from '../pool/helpers.ts';
import { alive } from './helpers.ts';

const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;

before(async () => {
  [h1, h2, h3] = await lab.startPool(['h1', 'h2', 'h3']);
});
after(() => lab.teardown());

const pidIn = (file: string): number | undefined => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : undefined);



test('the master host dies with HA on: a survivor becomes master and restarts the protected VM within 15 s', { timeout: 240_000 }, async (t) => {
  const master = await h1.client();
  const [r1, r2, r3] = [await hostRefOf(master, h1), await hostRefOf(master, h2), await hostRefOf(master, h3)];
  const pool = (await master.api.pool.get_all())[0];
  const sr = await master.api.SR.create(r1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  const template = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  const vm = await master.api.VM.clone(template, 'protected');
  await master.api.VM.set_is_a_template(vm, false);
  const disk = await master.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'protected', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: {} } as never);
  await master.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  await master.api.VM.set_ha_restart_priority(vm, 'restart');
  await master.api.pool.enable_ha([], {});
  await master.api.VM.start_on(vm, r1, false, false);
  // the last write before the crash: confirmed, so it is in the redo log even if no member has replicated it yet
  await master.api.VM.set_name_description(vm, 'written just before the crash');
  await new Promise((r) => setTimeout(r, 2000)); // h1 takes the VM's run lock (once a second)

  const killed = Date.now();
  h1.daemon.proc.kill('SIGKILL');
  for (const file of ['etcd.pid', 'fencer.pid']) {
    const pid = pidIn(join(h1.dataDir, 'ha', file));
    if (alive(pid)) process.kill(pid!, 'SIGKILL');
  }
  const [winner, other] = await until('a survivor to become master', async () => {
    for (const [a, b] of [[h2, h3], [h3, h2]] as const) if ((await masterNamedBy(a)) === 'master') return [a, b] as const;
    return undefined;
  }, 30_000);
  const tookMaster = Date.now() - killed;
  const c = await winner.client();
  const resident = await until('the protected VM to run on a survivor', async () => {
    const rec = await c.api.VM.get_record(vm);
    return rec.power_state === 'Running' && rec.resident_on !== r1 ? rec.resident_on : undefined;
  }, 30_000);
  const tookVm = Date.now() - killed;
  t.diagnostic(`master host killed → ${winner.name} is pool master after ${tookMaster} ms, the protected VM running on a survivor after ${tookVm} ms`);
  assert.ok([r2, r3].includes(resident));
  assert.ok(tookVm <= 15_000, `the VM ran again after ${tookVm} ms`);
  assert.equal(await c.api.pool.get_master(pool), winner === h2 ? r2 : r3);
  assert.equal(await c.api.pool.get_ha_enabled(pool), true);
  assert.equal(await c.api.VM.get_name_description(vm), 'written just before the crash', 'the new master has every confirmed write');
  await until(`${other.name} to follow the new master`, async () => (await masterNamedBy(other)) === winner.ip, 20_000);
  // the new master writes through the redo log under its own term
  await c.api.VM.set_name_description(vm, 'after the failover');
  assert.equal(await c.api.VM.get_name_description(vm), 'after the failover');

  // no host joins a pool with HA on (xapi's pre-join check)
  const h4 = await lab.addHost('h4');
  await failsWith((await h4.client()).api.pool.join(winner.ip, 'root', ROOT_PASSWORD), 'HA_IS_ENABLED');

  await c.api.VM.hard_shutdown(vm);
  await c.api.pool.disable_ha();
  assert.equal(await c.api.pool.get_ha_enabled(pool), false);
});
