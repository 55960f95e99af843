/**
 * The rest of xe's everyday commands, each run as the real executable
 * against an in-process daemon (storage, network records, the simulator),
 * checking both what xe prints and the resulting state through the API.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Plugin } from '../../src/server.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { bondHandlers, networkHandlers, pifHandlers, vifHandlers, vlanHandlers } from '../../src/messages/network.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { connArgs, runXe, type XeResult } from './xe-helpers.ts';

let t: TestServer;
let conn: string[];
let work: string;
const xe = (...args: string[]): Promise<XeResult> => runXe([...conn, ...args]);
const ok = (r: XeResult): string => {
  assert.equal(r.code, 0, `xe failed: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};
const fails = (r: XeResult, re: RegExp): void => {
  assert.notEqual(r.code, 0, `xe should have failed: ${r.stdout}`);
  assert.match(r.stderr + r.stdout, re);
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const uuidOut = (r: XeResult): string => {
  const u = ok(r);
  assert.match(u, UUID);
  return u;
};

/** The network handler tables alone: records only, no network backend. */
const netRecords: Plugin = { name: 'net-records' };

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), netRecords, xenopsPlugin({ backend: 'sim' })] });
  conn = connArgs(t.url);
  work = mkdtempSync(join(tmpdir(), 'xe-cmds-'));
});
after(() => t.close());

const api = () => t.client.api;
const vdiRef = async (uuid: string) => api().VDI.get_by_uuid(uuid);
const vdiExists = async (uuid: string): Promise<boolean> => api().VDI.get_by_uuid(uuid).then(() => true, () => false);
const vmExists = async (uuid: string): Promise<boolean> => api().VM.get_by_uuid(uuid).then(() => true, () => false);
const srExists = async (uuid: string): Promise<boolean> => api().SR.get_by_uuid(uuid).then(() => true, () => false);
async function defaultSrUuid(): Promise<string> {
  const [pool] = await api().pool.get_all();
  return api().SR.get_uuid(await api().pool.get_default_SR(pool));
}
async function install(name: string): Promise<string> {
  return uuidOut(await xe('vm-install', 'template=Xenon test guest', `new-name-label=${name}`));
}
async function pbdOf(srUuid: string): Promise<string> {
  const [pbd] = await api().SR.get_PBDs(await api().SR.get_by_uuid(srUuid));
  return api().PBD.get_uuid(pbd);
}
async function makeIsoSr(name: string, isos: Record<string, Buffer>): Promise<{ uuid: string; dir: string }> {
  const dir = join(work, name);
  mkdirSync(dir);
  for (const [f, b] of Object.entries(isos)) writeFileSync(join(dir, f), b);
  const uuid = uuidOut(await xe('sr-create', 'type=iso', 'content-type=iso', `name-label=${name}`, `device-config:location=${dir}`, 'shared=true'));
  ok(await xe('sr-scan', `uuid=${uuid}`));
  return { uuid, dir };
}
async function addEmptyCd(vmUuid: string): Promise<string> {
  return api().VBD.create({
    VM: await api().VM.get_by_uuid(vmUuid), VDI: 'OpaqueRef:NULL', userdevice: '3', bootable: false, mode: 'RO', type: 'CD', unpluggable: true, empty: true,
    other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, device: '',
  } as never);
}

test('vdi-create, vdi-resize, vdi-snapshot, vdi-clone, vdi-copy, vdi-import/-export, vdi-destroy', async () => {
  const sr = await defaultSrUuid();
  const uuid = uuidOut(await xe('vdi-create', `sr-uuid=${sr}`, 'name-label=xe-disk', 'virtual-size=4MiB', 'type=user'));
  const rec = await api().VDI.get_record(await vdiRef(uuid));
  assert.equal(rec.name_label, 'xe-disk');
  assert.equal(rec.virtual_size, 4 * 2 ** 20);
  assert.equal(rec.type, 'user');
  assert.equal(await api().SR.get_uuid(rec.SR), sr);

  assert.equal(ok(await xe('vdi-resize', `uuid=${uuid}`, 'disk-size=8MiB')), '');
  assert.equal(await api().VDI.get_virtual_size(await vdiRef(uuid)), 8 * 2 ** 20);

  // import known bytes, export them again (raw, and as a VHD that is larger than the data)
  const data = Buffer.alloc(8 * 2 ** 20);
  for (let i = 0; i < data.length; i += 4096) data.write(`block ${i / 4096} of the xe test`, i);
  const src = join(work, 'disk.raw');
  writeFileSync(src, data);
  assert.equal(ok(await xe('vdi-import', `uuid=${uuid}`, `filename=${src}`, 'format=raw')), '');
  const raw = join(work, 'out.raw');
  ok(await xe('vdi-export', `uuid=${uuid}`, `filename=${raw}`, 'format=raw'));
  assert.ok(readFileSync(raw).equals(data), 'raw round trip');
  const vhd = join(work, 'out.vhd');
  ok(await xe('vdi-export', `uuid=${uuid}`, `filename=${vhd}`, 'format=vhd'));
  const vhdBytes = readFileSync(vhd);
  assert.equal(vhdBytes.subarray(vhdBytes.length - 512, vhdBytes.length - 504).toString('latin1'), 'conectix', 'a VHD footer');
  // the VHD imports back into a fresh VDI with the same contents
  const back = uuidOut(await xe('vdi-create', `sr-uuid=${sr}`, 'name-label=xe-back', 'virtual-size=8MiB'));
  ok(await xe('vdi-import', `uuid=${back}`, `filename=${vhd}`, 'format=vhd'));
  const raw2 = join(work, 'back.raw');
  ok(await xe('vdi-export', `uuid=${back}`, `filename=${raw2}`, 'format=raw'));
  assert.ok(readFileSync(raw2).equals(data), 'vhd round trip');

  const snap = uuidOut(await xe('vdi-snapshot', `uuid=${uuid}`));
  const snapRec = await api().VDI.get_record(await vdiRef(snap));
  assert.equal(snapRec.is_a_snapshot, true);
  assert.equal(await api().VDI.get_uuid(snapRec.snapshot_of), uuid);

  const clone = uuidOut(await xe('vdi-clone', `uuid=${uuid}`, 'new-name-label=xe-clone'));
  assert.equal(await api().VDI.get_name_label(await vdiRef(clone)), 'xe-clone');
  assert.equal(await api().VDI.get_virtual_size(await vdiRef(clone)), 8 * 2 ** 20);

  const copy = uuidOut(await xe('vdi-copy', `uuid=${uuid}`, `sr-uuid=${sr}`));
  assert.notEqual(copy, uuid);
  const raw3 = join(work, 'copy.raw');
  ok(await xe('vdi-export', `uuid=${copy}`, `filename=${raw3}`, 'format=raw'));
  assert.ok(readFileSync(raw3).equals(data), 'the copy has the same contents');

  for (const u of [copy, clone, snap, back, uuid]) {
    assert.equal(ok(await xe('vdi-destroy', `uuid=${u}`)), '');
    assert.equal(await vdiExists(u), false, `VDI ${u} is gone`);
  }
});

test('sr-create (file, shared), pbd-unplug/pbd-plug, sr-forget, sr-destroy', async () => {
  const dir = join(work, 'file-sr');
  mkdirSync(dir);
  const sr = uuidOut(await xe('sr-create', 'type=file', `device-config:location=${dir}`, 'name-label=xe-file-sr', 'shared=true'));
  const rec = await api().SR.get_record(await api().SR.get_by_uuid(sr));
  assert.equal(rec.name_label, 'xe-file-sr');
  assert.equal(rec.type, 'file');
  assert.equal(rec.shared, true);
  assert.equal(rec.PBDs.length, 1);
  const pbd = await pbdOf(sr);
  const pbdRef = await api().PBD.get_by_uuid(pbd);
  assert.equal(await api().PBD.get_currently_attached(pbdRef), true);
  assert.deepEqual(await api().PBD.get_device_config(pbdRef), { location: dir });
  // a VDI in it, to show the data stays after forget
  const vdi = uuidOut(await xe('vdi-create', `sr-uuid=${sr}`, 'name-label=kept', 'virtual-size=1MiB'));

  assert.equal(ok(await xe('pbd-unplug', `uuid=${pbd}`)), '');
  assert.equal(await api().PBD.get_currently_attached(pbdRef), false);
  assert.equal(ok(await xe('pbd-plug', `uuid=${pbd}`)), '');
  assert.equal(await api().PBD.get_currently_attached(pbdRef), true);

  ok(await xe('pbd-unplug', `uuid=${pbd}`));
  assert.equal(ok(await xe('sr-forget', `uuid=${sr}`)), '');
  assert.equal(await srExists(sr), false);
  assert.equal(await vdiExists(vdi), false, 'the VDI record is forgotten with the SR');

  // re-create one and destroy it after unplugging
  mkdirSync(join(work, 'file-sr2'));
  const sr2 = uuidOut(await xe('sr-create', 'type=file', `device-config:location=${join(work, 'file-sr2')}`, 'name-label=xe-file-sr2', 'shared=true'));
  ok(await xe('pbd-unplug', `uuid=${await pbdOf(sr2)}`));
  assert.equal(ok(await xe('sr-destroy', `uuid=${sr2}`)), '');
  assert.equal(await srExists(sr2), false);
  assert.equal((await api().SR.get_by_name_label('xe-file-sr2')).length, 0);
});

test('sr-create type=iso and sr-scan finds a new ISO', async () => {
  const { uuid, dir } = await makeIsoSr('iso-scan', { 'a.iso': Buffer.alloc(4096, 1) });
  const srRef = await api().SR.get_by_uuid(uuid);
  assert.equal(await api().SR.get_content_type(srRef), 'iso');
  const names = async (): Promise<string[]> => (await Promise.all((await api().SR.get_VDIs(srRef)).map((v) => api().VDI.get_name_label(v)))).sort();
  assert.deepEqual(await names(), ['a.iso']);
  writeFileSync(join(dir, 'b.iso'), Buffer.alloc(8192, 2));
  assert.equal(ok(await xe('sr-scan', `uuid=${uuid}`)), '');
  assert.deepEqual(await names(), ['a.iso', 'b.iso']);
  assert.equal(ok(await xe('vdi-list', `sr-uuid=${uuid}`, 'name-label=b.iso', 'params=virtual-size', '--minimal')), '8192');
});

test('vm-cd-insert and vm-cd-eject on a halted and on a running VM', async () => {
  await makeIsoSr('iso-cd', { 'xe-cd.iso': Buffer.alloc(4096, 7) });
  const [isoVdi] = await api().VDI.get_by_name_label('xe-cd.iso');
  const vm = await install('cd-vm');
  const vbd = await addEmptyCd(vm);
  const state = async () => ({ empty: await api().VBD.get_empty(vbd), vdi: await api().VBD.get_VDI(vbd) });

  fails(await xe('vm-cd-eject', `uuid=${vm}`), /No CDs found/);
  assert.equal(ok(await xe('vm-cd-insert', `uuid=${vm}`, 'cd-name=xe-cd.iso')), '');
  assert.deepEqual(await state(), { empty: false, vdi: isoVdi });
  fails(await xe('vm-cd-insert', `uuid=${vm}`, 'cd-name=xe-cd.iso'), /No empty CD devices found/);
  assert.equal(ok(await xe('vm-cd-eject', `uuid=${vm}`)), '');
  assert.equal((await state()).empty, true);

  ok(await xe('vm-start', `uuid=${vm}`));
  try {
    assert.equal(ok(await xe('vm-cd-insert', `vm=cd-vm`, 'cd-name=xe-cd.iso')), '');
    assert.deepEqual(await state(), { empty: false, vdi: isoVdi });
    assert.equal(ok(await xe('vm-cd-eject', `vm=cd-vm`)), '');
    assert.equal((await state()).empty, true);
    assert.equal(await api().VBD.get_VDI(vbd), 'OpaqueRef:NULL');
  } finally {
    ok(await xe('vm-shutdown', `uuid=${vm}`, '--force'));
  }
});

test('vm-clone, vm-copy, vm-snapshot + vm-revert / snapshot-revert, vm-uninstall --force', async () => {
  const vm = await install('base-vm');
  ok(await xe('vm-disk-add', `uuid=${vm}`, 'disk-size=4MiB', 'device=1'));
  const disks = async (uuid: string): Promise<string[]> => {
    const out: string[] = [];
    for (const b of await api().VM.get_VBDs(await api().VM.get_by_uuid(uuid))) {
      const r = await api().VBD.get_record(b);
      if (r.type === 'Disk') out.push(await api().VDI.get_uuid(r.VDI));
    }
    return out;
  };
  const [origDisk] = await disks(vm);

  const clone = uuidOut(await xe('vm-clone', `uuid=${vm}`, 'new-name-label=clone-vm'));
  const cloneRec = await api().VM.get_record(await api().VM.get_by_uuid(clone));
  assert.equal(cloneRec.name_label, 'clone-vm');
  assert.equal(cloneRec.is_a_template, false);
  const [cloneDisk] = await disks(clone);
  assert.ok(cloneDisk && cloneDisk !== origDisk, 'the clone has its own disk');

  const other = join(work, 'copy-sr');
  mkdirSync(other);
  const sr = uuidOut(await xe('sr-create', 'type=file', `device-config:location=${other}`, 'name-label=copy-target'));
  const copy = uuidOut(await xe('vm-copy', `vm=base-vm`, 'new-name-label=copy-vm', `sr-uuid=${sr}`));
  assert.equal(await api().VM.get_name_label(await api().VM.get_by_uuid(copy)), 'copy-vm');
  const [copyDisk] = await disks(copy);
  assert.equal(await api().SR.get_uuid(await api().VDI.get_SR(await vdiRef(copyDisk))), sr, 'the copy\'s disk is in sr-uuid=');

  // revert: change the VM after a snapshot, then revert both ways (the name and description are kept, as in xapi)
  const vmRef = await api().VM.get_by_uuid(vm);
  ok(await xe('vm-param-set', `uuid=${vm}`, 'other-config:phase=before', 'VCPUs-at-startup=1'));
  const snap = uuidOut(await xe('vm-snapshot', `uuid=${vm}`, 'new-name-label=rev-snap'));
  const snapRef = await api().VM.get_by_uuid(snap);
  ok(await xe('vm-param-set', `uuid=${vm}`, 'other-config:phase=after'));
  assert.equal((await api().VM.get_other_config(vmRef)).phase, 'after');
  assert.equal(ok(await xe('vm-revert', `snapshot-uuid=${snap}`)), '');
  assert.equal((await api().VM.get_other_config(vmRef)).phase, 'before');
  assert.equal(await api().VM.get_parent(vmRef), snapRef);
  const [revDisk] = await disks(vm);
  assert.ok(revDisk && revDisk !== origDisk, 'the disk is a new clone of the snapshot\'s');
  assert.equal(await vdiExists(origDisk), false, 'the disk it had is gone');
  ok(await xe('vm-param-set', `uuid=${vm}`, 'other-config:phase=again'));
  assert.equal(ok(await xe('snapshot-revert', `uuid=${snap}`)), '');
  assert.equal((await api().VM.get_other_config(vmRef)).phase, 'before');
  const [currentDisk] = await disks(vm);

  // uninstall the clone: its own disk goes with it
  assert.equal(ok(await xe('vm-uninstall', `uuid=${clone}`, '--force')), 'All objects destroyed');
  assert.equal(await vmExists(clone), false);
  assert.equal(await vdiExists(cloneDisk), false);
  assert.equal(await vdiExists(currentDisk), true, 'the original VM\'s disk stays');

  // without --force it lists what goes and asks
  const asked = ok(await runXe([...conn, 'vm-uninstall', `uuid=${copy}`], { input: 'yes\n' }));
  assert.match(asked, new RegExp(`VM : ${copy} \\(copy-vm\\)`));
  assert.match(asked, new RegExp(`VDI: ${copyDisk}`));
  assert.match(asked, /Type 'yes' to continue\nAll objects destroyed$/);
  assert.equal(await vmExists(copy), false);
  assert.equal(await vdiExists(copyDisk), false);
});

test('vlan-create and vlan-destroy on a physical PIF record', async () => {
  const [host] = await api().host.get_all();
  const phys = await api().network.create({ name_label: 'phys-net', name_description: '', other_config: {}, tags: [] } as never);
  const pif = t.server.services.store.transact((tx) => {
    const metrics = tx.create('PIF_metrics', { carrier: true });
    return tx.create('PIF', { device: 'eth9', network: phys, host, MAC: '02:00:00:00:00:09', MTU: 1500, VLAN: -1, physical: true, currently_attached: true, metrics, managed: true, ip_configuration_mode: 'None' });
  });
  const pifUuid = await api().PIF.get_uuid(pif as never);
  const vnet = await api().network.create({ name_label: 'vlan-net', name_description: '', other_config: {}, tags: [] } as never);
  const vnetUuid = await api().network.get_uuid(vnet);

  fails(await xe('vlan-create', `pif-uuid=${pifUuid}`, 'vlan=5000', `network-uuid=${vnetUuid}`), /Invalid VLAN tag/);
  const untagged = uuidOut(await xe('vlan-create', `pif-uuid=${pifUuid}`, 'vlan=42', `network-uuid=${vnetUuid}`));
  const u = await api().PIF.get_record(await api().PIF.get_by_uuid(untagged));
  assert.equal(u.VLAN, 42);
  assert.equal(u.device, 'eth9');
  assert.equal(u.physical, false);
  assert.equal(u.network, vnet);
  const vlan = u.VLAN_master_of;
  const v = await api().VLAN.get_record(vlan);
  assert.equal(v.tag, 42);
  assert.equal(v.tagged_PIF, pif);
  assert.equal(await api().PIF.get_uuid(v.untagged_PIF), untagged);
  fails(await xe('vlan-create', `pif-uuid=${pifUuid}`, 'vlan=42', `network-uuid=${vnetUuid}`), /NETWORK_ALREADY_CONNECTED|PIF_VLAN_EXISTS/);

  assert.equal(ok(await xe('vlan-destroy', `uuid=${v.uuid}`)), '');
  assert.deepEqual(await api().VLAN.get_all(), []);
  assert.equal(await api().PIF.get_by_uuid(untagged).then(() => true, () => false), false, 'the VLAN PIF is gone');
});

test('host-disable, host-enable, host-evacuate', async () => {
  const [host] = await api().host.get_all();
  const hostUuid = await api().host.get_uuid(host);
  assert.equal(ok(await xe('host-disable', `uuid=${hostUuid}`)), '');
  assert.equal(await api().host.get_enabled(host), false);
  assert.equal(ok(await xe('host-enable')), '', 'a single host is selected without arguments');
  assert.equal(await api().host.get_enabled(host), true);

  assert.equal(ok(await xe('host-evacuate', `uuid=${hostUuid}`)), '', 'nothing to move');
  const vm = await install('evac-vm');
  ok(await xe('vm-start', `uuid=${vm}`));
  try {
    const r = await xe('host-evacuate', `uuid=${hostUuid}`);
    fails(r, /^NO_HOSTS_AVAILABLE$/m);
    assert.equal(await api().VM.get_power_state(await api().VM.get_by_uuid(vm)), 'Running', 'the VM stays');
  } finally {
    ok(await xe('vm-shutdown', `uuid=${vm}`, '--force'));
  }
});

test('pool-list, pool-param-get; pool-join and pool-eject NOT_IMPLEMENTED without the pool subsystem; vm-migrate to its own host', async () => {
  const [pool] = await api().pool.get_all();
  const poolUuid = await api().pool.get_uuid(pool);
  assert.equal(ok(await xe('pool-list', '--minimal')), poolUuid);
  const [host] = await api().host.get_all();
  const hostUuid = await api().host.get_uuid(host);
  assert.equal(ok(await xe('pool-param-get', `uuid=${poolUuid}`, 'param-name=master')), hostUuid);

  const join_ = await xe('pool-join', 'master-address=192.0.2.1', 'master-username=root', 'master-password=x');
  fails(join_, /^NOT_IMPLEMENTED$/m);
  assert.equal(join_.code, 1);
  const eject = await xe('pool-eject', `host-uuid=${hostUuid}`, '--force');
  fails(eject, /^NOT_IMPLEMENTED$/m);
  assert.equal(eject.code, 1);
  assert.equal(await api().pool.get_master(pool), host);

  const vm = await install('mig-vm');
  ok(await xe('vm-start', `uuid=${vm}`));
  try {
    // the VM is there already: nothing moves
    ok(await xe('vm-migrate', `uuid=${vm}`, `host-uuid=${hostUuid}`, 'live=true'));
    assert.equal(await api().VM.get_resident_on(await api().VM.get_by_uuid(vm)), host);
    assert.equal(await api().VM.get_power_state(await api().VM.get_by_uuid(vm)), 'Running');
  } finally {
    ok(await xe('vm-shutdown', `uuid=${vm}`, '--force'));
  }
});

test('console: the simulator has no interactive console', async () => {
  const vm = await install('con-vm');
  ok(await xe('vm-start', `uuid=${vm}`));
  try {
    const r = await xe('console', `uuid=${vm}`);
    assert.equal(r.code, 1, r.stderr + r.stdout);
    assert.equal(r.stderr, 'Error: Server replied with HTTP 404: the console is not available\n');
    assert.equal(r.stdout, '');
  } finally {
    ok(await xe('vm-shutdown', `uuid=${vm}`, '--force'));
  }
});
