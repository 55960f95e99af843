/** Storage through the XenAPI and HTTP: SRs, VDIs, chains, import/export, the collector. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { Storage } from '../../src/messages/sr-drivers.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
let local: Ref<'SR'>;
const MiB = 1024 * 1024;

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });
  const [pool] = await t.client.api.pool.get_all();
  local = await t.client.api.pool.get_default_SR(pool);
});
after(() => t.close());

const srDir = async (sr: Ref<'SR'>): Promise<string> => {
  const [pbd] = await t.client.api.SR.get_PBDs(sr);
  return (await t.client.api.PBD.get_device_config(pbd)).path;
};
const vdiFile = async (vdi: Ref<'VDI'>): Promise<string> => join(await srDir(await t.client.api.VDI.get_SR(vdi)), `${await t.client.api.VDI.get_uuid(vdi)}.vhd`);
const newVdi = (size: number, name = 'disk'): Promise<Ref<'VDI'>> =>
  t.client.api.VDI.create({ SR: local, virtual_size: size, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {} } as never);

async function put(vdi: string, body: Buffer, format = 'raw'): Promise<Response> {
  return fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=${format}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Length': String(body.length) } });
}
/** The first `n` bytes of a VDI's raw export (the rest is not read). */
async function head(vdi: string, n: number): Promise<Buffer> {
  const res = await fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=raw`);
  const parts: Buffer[] = [];
  let got = 0;
  const reader = res.body!.getReader();
  while (got < n) {
    const r = await reader.read();
    if (r.done) break;
    parts.push(Buffer.from(r.value));
    got += r.value.length;
  }
  await reader.cancel();
  return Buffer.concat(parts).subarray(0, n);
}
async function get(vdi: string, format = 'raw', base?: string): Promise<Buffer> {
  const res = await fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=${format}${base ? `&base=${base}` : ''}`);
  assert.equal(res.status, 200, await res.clone().text().catch(() => ''));
  return Buffer.from(await res.arrayBuffer());
}

test('first start makes "Local storage": default SR, a plugged PBD, SM records for each driver', async () => {
  const sr = await t.client.api.SR.get_record(local);
  assert.equal(sr.name_label, 'Local storage');
  assert.equal(sr.type, 'ext');
  assert.equal(sr.shared, false);
  assert.ok(sr.physical_size > 0);
  const [pbd] = sr.PBDs;
  assert.equal(await t.client.api.PBD.get_currently_attached(pbd), true);
  const sms = Object.values(await t.client.api.SM.get_all_records()).map((s) => s.type).sort();
  assert.deepEqual(sms, ['ext', 'file', 'iso']);
});

test('VDI.create is thin; virtual_allocation and physical_utilisation stay true; resize grows; destroy removes', async () => {
  const before = await t.client.api.SR.get_record(local);
  const vdi = await newVdi(10 * 1024 * MiB);
  const rec = await t.client.api.VDI.get_record(vdi);
  assert.equal(rec.virtual_size, 10 * 1024 * MiB);
  assert.ok(rec.physical_utilisation < 2 * MiB, 'thin');
  assert.ok(existsSync(await vdiFile(vdi)));
  const after = await t.client.api.SR.get_record(local);
  assert.equal(after.virtual_allocation - before.virtual_allocation, 10 * 1024 * MiB);
  await t.client.api.VDI.resize(vdi, 12 * 1024 * MiB);
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), 12 * 1024 * MiB);
  await failsWith(t.client.api.VDI.resize(vdi, MiB), 'VDI_TOO_SMALL');
  const file = await vdiFile(vdi);
  await t.client.api.VDI.destroy(vdi);
  assert.ok(!existsSync(file));
  assert.equal((await t.client.api.SR.get_record(local)).virtual_allocation, before.virtual_allocation);
});

test('import raw, export raw and VHD: the same bytes, and qemu-img and libvhdi agree', async () => {
  const vdi = await newVdi(8 * MiB);
  const data = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(3 * MiB)]);
  const r = await put(vdi, data);
  assert.equal(r.status, 200, await r.text());
  assert.ok((await get(vdi)).equals(data));
  const dir = mkdtempSync(join(tmpdir(), 'xenon-exp-'));
  writeFileSync(join(dir, 'e.vhd'), await get(vdi, 'vhd'));
  assert.match(execFileSync('vhdiinfo', [join(dir, 'e.vhd')], { encoding: 'utf8' }), /Dynamic/i);
  execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', join(dir, 'e.vhd'), join(dir, 'e.raw')]);
  assert.ok(readFileSync(join(dir, 'e.raw')).subarray(0, data.length).equals(data));
  execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', await vdiFile(vdi), join(dir, 'direct.raw')]);
  assert.ok(readFileSync(join(dir, 'direct.raw')).subarray(0, data.length).equals(await get(vdi)), 'raw export = qemu-img convert -O raw');
});

test('an empty PUT is a probe and changes nothing; truncated or corrupt VHDs are refused and leave the VDI as it was', async () => {
  const vdi = await newVdi(4 * MiB);
  const data = randomBytes(4 * MiB);
  await put(vdi, data);
  const probe = await fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}`, { method: 'PUT', body: '' });
  assert.equal(probe.status, 200);
  const vhd = await get(vdi, 'vhd');
  const truncated = await put(vdi, vhd.subarray(0, vhd.length - 700_000), 'vhd');
  assert.ok(truncated.status >= 400);
  assert.match(await truncated.text(), /VDI_IO_ERROR/);
  const corrupt = Buffer.from(vhd);
  corrupt.write('garbage!', vhd.length - 512);
  corrupt.write('garbage!', 0);
  const c = await put(vdi, corrupt, 'vhd');
  assert.ok(c.status >= 400);
  assert.ok((await get(vdi)).equals(data), 'the VDI is unchanged');
  assert.deepEqual(readdirSync(await srDir(local)).filter((f) => f.endsWith('.import')), [], 'no half-made files');
  const bad = await fetch(`${t.url}/export_raw_vdi?session_id=OpaqueRef:nope&vdi=${vdi}`);
  assert.equal(bad.status, 403);
});

test('snapshot keeps the data of its moment; the chain reads right through libvhdi too', async () => {
  const vdi = await newVdi(4 * MiB);
  const first = randomBytes(4 * MiB);
  await put(vdi, first);
  const snap = await t.client.api.VDI.snapshot(vdi, {});
  const s = await t.client.api.VDI.get_record(snap);
  assert.equal(s.is_a_snapshot, true);
  assert.equal(s.snapshot_of, vdi);
  assert.ok((await t.client.api.VDI.get_snapshots(vdi)).includes(snap));
  assert.ok((await get(snap)).equals(first));
  const second = randomBytes(4 * MiB);
  await put(vdi, second);
  assert.ok((await get(vdi)).equals(second));
  assert.ok((await get(snap)).equals(first), 'the snapshot still holds the first data');
  // the snapshot's chain, mounted by an independent implementation
  const mnt = mkdtempSync(join(tmpdir(), 'xenon-vhdimount-'));
  execFileSync('vhdimount', [await vdiFile(snap), mnt]);
  try {
    const layers = readdirSync(mnt).filter((f) => f.startsWith('vhdi')).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
    const top = readFileSync(join(mnt, layers[layers.length - 1]));
    assert.ok(top.subarray(0, first.length).equals(first));
  } finally {
    execFileSync('umount', [mnt]);
  }
});

test('clone is O(1): a 10 GiB VDI clones as fast as a 10 MiB one', async () => {
  const big = await newVdi(10 * 1024 * MiB);
  const small = await newVdi(10 * MiB);
  await put(small, randomBytes(10 * MiB));
  const time = async (v: Ref<'VDI'>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    await t.client.api.VDI.clone(v, {});
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const best = async (v: Ref<'VDI'>): Promise<number> => {
    let m = Infinity;
    for (let i = 0; i < 5; i++) m = Math.min(m, await time(v));
    return m;
  };
  const tSmall = await best(small);
  const tBig = await best(big);
  // a copy of 10 GiB would take seconds; a chain is a rename and two small headers
  assert.ok(tBig < Math.max(150, tSmall * 3), `10 GiB clone ${tBig.toFixed(1)} ms vs 10 MiB ${tSmall.toFixed(1)} ms`);
  const clone = await t.client.api.VDI.clone(big, {});
  assert.ok((await t.client.api.VDI.get_physical_utilisation(clone)) < 1024 * 1024, 'the clone holds no data of its own');
});

test('the collector folds a base copy into its last child, and deletes orphaned bases', async () => {
  const vdi = await newVdi(4 * MiB);
  const data = randomBytes(4 * MiB);
  await put(vdi, data);
  const snap = await t.client.api.VDI.snapshot(vdi, {});
  const sm = await t.client.api.VDI.get_sm_config(vdi);
  assert.ok(sm['vhd-parent'], 'the VDI now sits on a base copy');
  await t.client.api.VDI.destroy(snap);
  const storage = t.server.services.storage!;
  assert.ok((await storage.collect()) >= 1);
  assert.equal((await t.client.api.VDI.get_sm_config(vdi))['vhd-parent'], undefined, 'coalesced');
  assert.ok((await get(vdi)).equals(data));
  const bases = Object.values(await t.client.api.VDI.get_all_records()).filter((v) => !v.managed && v.SR === local);
  assert.deepEqual(bases.map((b) => b.uuid).filter((u) => u === sm['vhd-parent']), []);
});

test('VDI_IN_USE: an attached disk cannot be destroyed; SR_HAS_PBD: a plugged SR cannot be destroyed', async () => {
  const vm = await t.client.api.VM.create({ name_label: 'storage-vm', memory_static_max: 64 * MiB, memory_dynamic_max: 64 * MiB, memory_dynamic_min: 64 * MiB, memory_static_min: 64 * MiB, VCPUs_max: 1, VCPUs_at_startup: 1 } as never);
  const vdi = await newVdi(4 * MiB);
  await t.client.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  await t.client.api.VM.start(vm, false, false);
  assert.deepEqual(await failsWith(t.client.api.VDI.destroy(vdi), 'VDI_IN_USE'), [vdi, 'destroy']);
  await t.client.api.VM.hard_shutdown(vm);
  const dir = mkdtempSync(join(tmpdir(), 'xenon-filesr-'));
  const [host] = await t.client.api.host.get_all();
  const sr = await t.client.api.SR.create(host, { location: dir }, 0, 'shared files', '', 'file', 'user', true, {});
  assert.equal(await t.client.api.SR.get_shared(sr), true);
  await failsWith(t.client.api.SR.destroy(sr), 'SR_HAS_PBD');
  const [pbd] = await t.client.api.SR.get_PBDs(sr);
  await t.client.api.PBD.unplug(pbd);
  await t.client.api.SR.destroy(sr);
  await failsWith(t.client.api.SR.get_record(sr), 'HANDLE_INVALID');
  await failsWith(t.client.api.SR.create(host, {}, 0, 'x', '', 'nfs-of-dreams', '', false, {}), 'SR_UNKNOWN_DRIVER');
});

test('an ISO library is scanned; SR.scan picks up new images', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'xenon-iso-'));
  writeFileSync(join(dir, 'one.iso'), Buffer.alloc(64 * 1024));
  const [host] = await t.client.api.host.get_all();
  const sr = await t.client.api.SR.create(host, { location: dir }, 0, 'ISOs', '', 'iso', 'iso', true, {});
  let vdis = await t.client.api.SR.get_VDIs(sr);
  assert.equal(vdis.length, 1);
  assert.equal(await t.client.api.VDI.get_name_label(vdis[0]), 'one.iso');
  writeFileSync(join(dir, 'two.iso'), Buffer.alloc(64 * 1024));
  await t.client.api.SR.scan(sr);
  vdis = await t.client.api.SR.get_VDIs(sr);
  assert.equal(vdis.length, 2);
  await failsWith(t.client.api.VDI.create({ SR: sr, virtual_size: MiB, name_label: 'x', type: 'user' } as never), 'SR_OPERATION_NOT_SUPPORTED');
});

test('VM.provision follows the template plan; VM.snapshot, clone, copy and revert', async () => {
  const [tpl] = await t.client.api.VM.get_by_name_label('Generic Linux BIOS');
  const vm = await t.client.api.VM.clone(tpl, 'provisioned');
  await t.client.api.VM.set_is_a_template(vm, false);
  await t.client.api.VM.provision(vm);
  const vbds = await t.client.api.VM.get_VBDs(vm);
  assert.equal(vbds.length, 1);
  const vdi = await t.client.api.VBD.get_VDI(vbds[0]);
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), 10 * 1024 * MiB);
  assert.equal((await t.client.api.VM.get_other_config(vm)).disks, undefined);
  const first = randomBytes(2 * MiB);
  await put(vdi, Buffer.concat([first, Buffer.alloc(0)]));
  const snap = await t.client.api.VM.snapshot(vm, 'snap-1', []);
  assert.equal(await t.client.api.VM.get_is_a_snapshot(snap), true);
  assert.equal(await t.client.api.VM.get_snapshot_of(snap), vm);
  const clone = await t.client.api.VM.clone(vm, 'clone-1');
  const copy = await t.client.api.VM.copy(vm, 'copy-1', local);
  for (const v of [clone, copy]) {
    const d = await t.client.api.VBD.get_VDI((await t.client.api.VM.get_VBDs(v))[0]);
    assert.ok((await head(d, first.length)).equals(first));
  }
  const copyDisk = await t.client.api.VBD.get_VDI((await t.client.api.VM.get_VBDs(copy))[0]);
  assert.equal((await t.client.api.VDI.get_sm_config(copyDisk))['vhd-parent'], undefined, 'a copy stands alone');
  await put(vdi, randomBytes(2 * MiB));
  await t.client.api.VM.revert(snap);
  const reverted = await t.client.api.VBD.get_VDI((await t.client.api.VM.get_VBDs(vm))[0]);
  assert.ok((await head(reverted, first.length)).equals(first), 'revert brings back the snapshot data');
});

test('explicit setters write their field, whatever their object parameter is called', async () => {
  await t.client.api.SR.set_name_description(local, 'described');
  assert.equal(await t.client.api.SR.get_name_description(local), 'described');
  const vdi = await newVdi(MiB, 'to-rename');
  await t.client.api.VDI.set_name_label(vdi, 'renamed');
  assert.equal(await t.client.api.VDI.get_name_label(vdi), 'renamed');
  await failsWith(t.client.api.VDI.set_name_label('OpaqueRef:nope' as never, 'x'), 'HANDLE_INVALID');
});
