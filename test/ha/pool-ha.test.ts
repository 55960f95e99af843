/**
 * HA in a pool of three daemons in three network namespaces (simulated
 * guests): pool.enable_ha starts an etcd member on each host, a protected
 * agile VM runs on a member and migrates to another (its run lock follows), that member host dies (daemon and etcd member
 * killed), and the master restarts the VM on a survivor; pool.disable_ha
 * stops it all.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { hostRefOf, PoolLab, until, type LabHost } from '../pool/helpers.ts';
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
const etcdPid = (h: LabHost): number | undefined => pidIn(join(h.dataDir, 'ha', 'etcd.pid'));


test('enable_ha runs etcd on the three hosts; a member host dies and the master restarts its protected VM on a survivor; disable_ha stops HA', { timeout: 240_000 }, async (t) => {
  const master = await h1.client();
  const [r1, r2, r3] = [await hostRefOf(master, h1), await hostRefOf(master, h2), await hostRefOf(master, h3)];
  const pool = (await master.api.pool.get_all())[0];

  const sr = await master.api.SR.create(r1, { location: join(lab.dir, 'shared') }, 0, 'shared', '', 'file', 'user', true, {});
  const template = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  const vm = await master.api.VM.clone(template, 'protected');
  await master.api.VM.set_is_a_template(vm, false);
  const disk = await master.api.VDI.create({ SR: sr, virtual_size: 4 * 1024 * 1024, name_label: 'protected', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: { type: 'qcow2' } } as never);
  await master.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  await master.api.VM.set_ha_restart_priority(vm, 'restart');

  await master.api.pool.enable_ha([], {});
  assert.equal(await master.api.pool.get_ha_enabled(pool), true);
  for (const h of [h1, h2, h3]) assert.ok(alive(etcdPid(h)), `${h.name} runs an etcd member`);

  await master.api.VM.start_on(vm, r3, false, false);
  await new Promise((r) => setTimeout(r, 2000)); // h3 takes the VM's run lock (once a second)
  // the run lock follows a migration: were it still h3's, the master would not restart the VM when h2 dies
  await master.api.VM.pool_migrate(vm, r2, { live: 'true' });
  assert.equal(await master.api.VM.get_resident_on(vm), r2);
  await new Promise((r) => setTimeout(r, 2000));

  const killed = Date.now();
  h2.daemon.proc.kill('SIGKILL');
  for (const file of ['etcd.pid', 'fencer.pid']) {
    const pid = pidIn(join(h2.dataDir, 'ha', file));
    if (alive(pid)) process.kill(pid!, 'SIGKILL');
  }
  const host = await until('the VM to run on a survivor', async () => {
    const rec = await master.api.VM.get_record(vm);
    return rec.power_state === 'Running' && rec.resident_on !== r2 ? rec.resident_on : undefined;
  }, 30_000);
  const took = Date.now() - killed;
  t.diagnostic(`member host killed → its protected VM running on a survivor after ${took} ms`);
  assert.ok([r1, r3].includes(host));
  assert.ok(took <= 15_000, `restarted after ${took} ms`);

  await master.api.VM.hard_shutdown(vm);
  await master.api.pool.disable_ha();
  assert.equal(await master.api.pool.get_ha_enabled(pool), false);
  await until('the etcd members to stop', () => (!alive(etcdPid(h1)) && !alive(etcdPid(h3)) ? true : undefined), 20_000);
});
