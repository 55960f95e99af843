/**
 * A member's local SR in a pool of two daemons (simulated guests, real file
 * SRs in separate data directories): the master keeps the records, the
 * member's driver makes, resizes, branches, copies and deletes the images in
 * the member's own directory; nothing lands in the master's. A VM with such a
 * disk starts on the member and cannot leave it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { SECRET_HEADER } from '../../src/pool/channel.ts';
import { readRole } from '../../src/pool/role.ts';
import { allLive, failsWith, hostRefOf, PoolLab, until, type LabHost } from './helpers.ts';

const lab = new PoolLab();
let h1: LabHost;
let h2: LabHost;

before(async () => {
  await lab.setup();
  [h1, h2] = await Promise.all([lab.addHost('h1'), lab.addHost('h2')]);
  await lab.formPool(h1, [h2]);
  await allLive(await h1.client());
});
after(() => lab.teardown());

/** Every file under a directory (recursively). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f)).filter((f) => statSync(f).isFile());
}

/** The image file of a VDI uuid under a host's SRs, if any. */
function imageOn(host: LabHost, uuid: string): string | undefined {
  return filesUnder(join(host.dataDir, 'sr')).find((f) => f.includes(uuid) && /\.(vhd|qcow2)$/.test(f));
}

function runsOn(host: LabHost, vmUuid: string): boolean {
  const file = join(host.dataDir, 'sim-domains.json');
  return existsSync(file) && readFileSync(file, 'utf8').includes(vmUuid);
}

test("a member's local SR: the member's driver does the file work, the master keeps the records", async () => {
  const master = await h1.client();
  const [r1, r2] = [await hostRefOf(master, h1), await hostRefOf(master, h2)];
  const pbds = await master.api.PBD.get_all_records();
  const localOf = async (host: string): Promise<string> => {
    for (const p of Object.values(pbds)) if (p.host === host && (await master.api.SR.get_type(p.SR)) === 'ext') return p.SR;
    throw new Error('no local SR');
  };
  const [sr1, sr2] = [await localOf(r1), await localOf(r2)];
  assert.deepEqual((await master.api.SR.get_PBDs(sr2)).length, 1);
  const masterFilesBefore = filesUnder(join(h1.dataDir, 'sr')).sort();
  const MiB = 1024 * 1024;
  const uuids: string[] = [];

  // create (VHD, the default; and qcow2): the images are on h2's disk
  const vdiArgs = (name: string, size: number, smConfig: Record<string, string> = {}) =>
    ({ SR: sr2, virtual_size: size, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: smConfig }) as never;
  const vhd = await master.api.VDI.create(vdiArgs('vhd', 8 * MiB));
  const qcow = await master.api.VDI.create(vdiArgs('qcow', 8 * MiB, { type: 'qcow2' }));
  const [vhdUuid, qcowUuid] = [await master.api.VDI.get_uuid(vhd), await master.api.VDI.get_uuid(qcow)];
  uuids.push(vhdUuid, qcowUuid);
  assert.match(imageOn(h2, vhdUuid) ?? '', /\.vhd$/);
  assert.match(imageOn(h2, qcowUuid) ?? '', /\.qcow2$/);
  assert.ok(imageOn(h2, vhdUuid)!.startsWith(join(h2.dataDir, 'sr', await master.api.SR.get_uuid(sr2))));
  assert.equal(imageOn(h1, vhdUuid), undefined);
  assert.equal((await master.api.VDI.get_sm_config(qcow)).vdi_type, 'qcow2');

  // resize, there
  await master.api.VDI.resize(vhd, 16 * MiB);
  assert.equal(await master.api.VDI.get_virtual_size(vhd), 16 * MiB);
  await master.api.VDI.resize(qcow, 32 * MiB);
  assert.equal(await master.api.VDI.get_virtual_size(qcow), 32 * MiB);

  // snapshot and clone make chains on h2: hidden bases, the parents linked in the records
  for (const [vdi, uuid] of [[vhd, vhdUuid], [qcow, qcowUuid]] as const) {
    const snap = await master.api.VDI.snapshot(vdi, {});
    const clone = await master.api.VDI.clone(vdi, {});
    const parent = await master.api.VDI.get_parent(snap);
    const base = (await master.api.VDI.get_sm_config(snap))['vhd-parent'];
    assert.ok(base, 'the snapshot is built on a base');
    assert.equal(await master.api.VDI.get_is_a_snapshot(snap), true);
    assert.equal(await master.api.VDI.get_snapshot_of(snap), vdi);
    assert.equal(await master.api.VDI.get_managed(parent), false);
    for (const v of [snap, clone]) uuids.push(await master.api.VDI.get_uuid(v));
    uuids.push(...[await master.api.VDI.get_uuid(parent)]);
    for (const u of [uuid, base, await master.api.VDI.get_uuid(snap), await master.api.VDI.get_uuid(clone)]) {
      assert.ok(imageOn(h2, u), `image ${u} on h2`);
      assert.equal(imageOn(h1, u), undefined);
    }
  }

  // SR.scan and SR.update see h2's files and their sizes
  const before = Object.keys(await master.api.VDI.get_all_records_where(`field "SR" = "${sr2}"`)).length;
  await master.api.SR.scan(sr2);
  assert.equal(Object.keys(await master.api.VDI.get_all_records_where(`field "SR" = "${sr2}"`)).length, before);
  assert.equal(await master.api.VDI.get_physical_utilisation(qcow), statSync(imageOn(h2, qcowUuid)!).blocks * 512, 'what the file takes on h2');
  await master.api.SR.update(sr2);
  assert.ok((await master.api.SR.get_physical_utilisation(sr2)) > 0);
  assert.ok((await master.api.SR.get_virtual_allocation(sr2)) >= 16 * MiB + 32 * MiB);

  // a full copy within h2
  const copy = await master.api.VDI.copy(qcow, sr2, 'OpaqueRef:NULL', 'OpaqueRef:NULL');
  uuids.push(await master.api.VDI.get_uuid(copy));
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(copy)));
  assert.equal((await master.api.VDI.get_sm_config(copy))['vhd-parent'], undefined);

  // exports of h2's images go through the master, the bytes sent by h2 (a pattern written on h2, read back flattened)
  const qcowLeaf = imageOn(h2, qcowUuid)!;
  const io = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', qcowLeaf], { encoding: 'utf8' });
  assert.equal(io.status, 0, io.stderr);
  const raw = await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${qcow}&format=raw`);
  assert.equal(raw.status, 200, raw.body.toString().slice(0, 300));
  assert.equal(raw.body.length, 32 * MiB);
  assert.ok(raw.body.subarray(0, MiB).every((b) => b === 0x5a) && raw.body.subarray(MiB).every((b) => b === 0));
  const vhdStream = await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${vhdUuid}&format=vhd`);
  assert.equal(vhdStream.status, 200);
  assert.equal(vhdStream.body.subarray(0, 8).toString(), 'conectix', 'a VHD stream');
  // the member's errors come back as they are
  assert.match((await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${qcow}&format=vhd`)).body.toString(), /VDI_INCOMPATIBLE_TYPE/);
  // imports, relayed to h2: raw over the disk, and a VHD stream into a new disk, each read back through the master
  const pattern = Buffer.alloc(MiB, 0xa5);
  const put = await transfer(h1, 'PUT', `/import_raw_vdi?session_id=${master.session}&vdi=${vhd}&format=raw`, pattern);
  assert.equal(put.status, 200, put.body.toString());
  const back = await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${vhd}&format=raw`);
  assert.equal(back.body.length, 16 * MiB);
  assert.ok(back.body.subarray(0, MiB).equals(pattern) && back.body.subarray(MiB).every((b) => b === 0));
  const target = await master.api.VDI.create(vdiArgs('target', 16 * MiB));
  uuids.push(await master.api.VDI.get_uuid(target));
  const whole = await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${vhd}&format=vhd`);
  const putVhd = await transfer(h1, 'PUT', `/import_raw_vdi?session_id=${master.session}&vdi=${target}&format=vhd`, whole.body);
  assert.equal(putVhd.status, 200, putVhd.body.toString());
  assert.ok((await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${target}&format=raw`)).body.equals(back.body));
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(target)));

  // copies between hosts: h2's disk to the master's SR and back, the contents streamed across
  const rawOf = async (v: string): Promise<Buffer> => (await transfer(h1, 'GET', `/export_raw_vdi?session_id=${master.session}&vdi=${v}&format=raw`)).body;
  const toMaster = await master.api.VDI.copy(vhd, sr1, 'OpaqueRef:NULL', 'OpaqueRef:NULL');
  assert.ok(imageOn(h1, await master.api.VDI.get_uuid(toMaster)), "on the master's disk");
  assert.equal(await master.api.VDI.get_virtual_size(toMaster), 16 * MiB);
  assert.ok((await rawOf(toMaster)).equals(back.body));
  const toMember = await master.api.VDI.copy(toMaster, sr2, 'OpaqueRef:NULL', 'OpaqueRef:NULL');
  uuids.push(await master.api.VDI.get_uuid(toMember));
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(toMember)));
  assert.ok((await rawOf(toMember)).equals(back.body));
  await master.api.VDI.destroy(toMaster);

  // a VM with that disk starts on h2 (placement: it is anchored), is snapshotted and cloned there, cannot leave
  const template = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true" and field "is_default_template" = "true"'))[0];
  const vm = await master.api.VM.clone(template, 'anchored');
  await master.api.VM.set_is_a_template(vm, false);
  await master.api.VBD.create({ VM: vm, VDI: vhd, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  assert.deepEqual(await master.api.VM.get_possible_hosts(vm), [r2]);
  await master.api.VM.start(vm, false, false);
  assert.equal(await master.api.VM.get_resident_on(vm), r2);
  const vmUuid = await master.api.VM.get_uuid(vm);
  await until('the domain to run on h2', () => runsOn(h2, vmUuid));
  assert.deepEqual(await failsWith(master.api.VM.pool_migrate(vm, r1, { live: 'true' }), 'VM_REQUIRES_SR'), [vm, sr2]);
  // a snapshot of the running VM: its VHD, served to the guest by h2's NBD export, is branched under it
  const vmSnap = await master.api.VM.snapshot(vm, 'running snapshot');
  const snapDisk = await master.api.VBD.get_VDI((await master.api.VM.get_VBDs(vmSnap))[0]);
  uuids.push(await master.api.VDI.get_uuid(snapDisk), await master.api.VDI.get_uuid(await master.api.VDI.get_parent(snapDisk)));
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(snapDisk)));
  await master.api.VM.hard_shutdown(vm);
  const vmClone = await master.api.VM.clone(vm, 'anchored clone');
  const cloneDisk = await master.api.VBD.get_VDI((await master.api.VM.get_VBDs(vmClone))[0]);
  assert.equal(await master.api.VDI.get_SR(cloneDisk), sr2);
  uuids.push(await master.api.VDI.get_uuid(cloneDisk));
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(cloneDisk)));

  // destroy removes the images there; the collector (kicked by SR.scan) folds and deletes the bases there too
  for (const v of [vmSnap, vmClone]) {
    for (const vbd of await master.api.VM.get_VBDs(v)) {
      if ((await master.api.VBD.get_type(vbd)) === 'Disk') await master.api.VDI.destroy(await master.api.VBD.get_VDI(vbd));
    }
    await master.api.VM.destroy(v);
  }
  await master.api.VM.destroy(vm);
  for (const [ref, rec] of Object.entries(await master.api.VDI.get_all_records_where(`field "SR" = "${sr2}"`))) {
    if (uuids.includes(rec.uuid) && rec.managed) await master.api.VDI.destroy(ref);
  }
  assert.equal(imageOn(h2, qcowUuid), undefined, 'a leaf with nothing built on it goes at once');
  await until('the bases to be folded and deleted on h2', async () => {
    await master.api.SR.scan(sr2);
    return uuids.every((u) => imageOn(h2, u) === undefined);
  }, 60_000, 200);
  assert.equal(Object.values(await master.api.VDI.get_all_records_where(`field "SR" = "${sr2}"`)).filter((r) => uuids.includes(r.uuid)).length, 0);

  // and nothing of it ever was in the master's directory
  assert.deepEqual(filesUnder(join(h1.dataDir, 'sr')).sort(), masterFilesBefore);
});

/** An HTTP transfer on a host's local socket: the status and the whole body. */
function transfer(host: LabHost, method: 'GET' | 'PUT', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: host.socket, path, method, headers: { ...headers, ...(body ? { 'Content-Length': body.length } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A host-interface call made straight to h2 (over its local socket, with the pool secret): what a forged request gets. */
function callMember(method: string, args: Record<string, unknown>): Promise<{ status: number; body: { result?: unknown; error?: string[] } }> {
  const text = JSON.stringify({ method, args, epoch: '', generation: 0 });
  return new Promise((resolve, reject) => {
    const req = http.request({
      socketPath: h2.socket, path: '/pool/host', method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), [SECRET_HEADER]: readRole(h2.dataDir).secret },
    }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) as { result?: unknown; error?: string[] } }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

test('the member checks what the master asks of its storage: its own SRs, uuids of its records, no paths', async () => {
  const master = await h1.client();
  const local = async (h: LabHost): Promise<string> => {
    const host = Object.keys(await master.api.host.get_all_records_where(`field "address" = "${h.ip}"`))[0];
    for (const p of Object.values(await master.api.PBD.get_all_records())) if (p.host === host && (await master.api.SR.get_type(p.SR)) === 'ext') return p.SR;
    throw new Error('no local SR');
  };
  const [sr1, sr2] = [await local(h1), await local(h2)];
  const vdi = await master.api.VDI.create({ SR: sr2, virtual_size: 1024 * 1024, name_label: 'probe', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  const uuid = await master.api.VDI.get_uuid(vdi);
  const codeOf = async (method: string, args: Record<string, unknown>): Promise<string | undefined> => (await callMember(method, args)).body.error?.[0];

  assert.equal(((await callMember('sr.volume.info', { sr: sr2, uuid })).body.result as { uuid: string }).uuid, uuid);
  assert.equal(await codeOf('sr.volume.delete', { sr: sr1, uuid }), 'HANDLE_INVALID', "not an SR of this host's");
  assert.equal(await codeOf('sr.volume.info', { sr: sr2, uuid: '../../../etc/passwd' }), 'UUID_INVALID');
  assert.equal(await codeOf('sr.volume.delete', { sr: sr2, uuid: randomUUID() }), 'UUID_INVALID', 'no VDI of this SR');
  assert.equal(await codeOf('sr.volume.create', { sr: sr2, uuid, size: 1024 * 1024 }), 'UUID_INVALID', 'an image that exists is not made again');
  assert.equal(await codeOf('sr.volume.create', { sr: sr2, uuid: randomUUID(), size: -1 }), 'INVALID_VALUE');
  assert.equal(await codeOf('sr.volume.branch', { sr: sr2, uuid, newLeaves: [uuid], base: randomUUID() }), 'UUID_INVALID');
  assert.equal(await codeOf('sr.destroy', { sr: sr2 }), 'SR_HAS_PBD', 'a plugged SR is not destroyed');
  // the export route of the member: the secret, its own SR, a uuid of its records
  const secret = { [SECRET_HEADER]: readRole(h2.dataDir).secret };
  assert.match((await transfer(h2, 'GET', `/pool/vdi-transfer?sr=${sr2}&uuid=${uuid}&format=raw`)).body.toString(), /PERMISSION_DENIED/);
  assert.match((await transfer(h2, 'GET', `/pool/vdi-transfer?sr=${sr1}&uuid=${uuid}&format=raw`, undefined, secret)).body.toString(), /HANDLE_INVALID/);
  assert.match((await transfer(h2, 'GET', `/pool/vdi-transfer?sr=${sr2}&uuid=..%2F..%2Fxenon.db&format=raw`, undefined, secret)).body.toString(), /UUID_INVALID/);
  const ok = await transfer(h2, 'GET', `/pool/vdi-transfer?sr=${sr2}&uuid=${uuid}&format=raw`, undefined, secret);
  assert.equal(ok.status, 200);
  assert.equal(ok.body.length, 1024 * 1024);
  assert.ok(imageOn(h2, uuid), 'the image is still there');
  await master.api.VDI.destroy(vdi);
  assert.equal(imageOn(h2, uuid), undefined);
});

test("SR.create on a member: the SR's storage made there from its PBD, destroyed there", async () => {
  const master = await h1.client();
  const [r2] = Object.keys(await master.api.host.get_all_records_where(`field "address" = "${h2.ip}"`));
  const sr = await master.api.SR.create(r2, {}, 0, 'extra', '', 'ext', 'user', false, {});
  const dir = join(h2.dataDir, 'sr', await master.api.SR.get_uuid(sr));
  assert.ok(existsSync(dir), "in the member's data directory");
  assert.ok(!existsSync(join(h1.dataDir, 'sr', await master.api.SR.get_uuid(sr))));
  const [pbd] = await master.api.SR.get_PBDs(sr);
  assert.equal(await master.api.PBD.get_host(pbd), r2);
  assert.equal(await master.api.PBD.get_currently_attached(pbd), true);
  const vdi = await master.api.VDI.create({ SR: sr, virtual_size: 1024 * 1024, name_label: 'x', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  assert.ok(imageOn(h2, await master.api.VDI.get_uuid(vdi))?.startsWith(dir));
  await master.api.VDI.destroy(vdi);
  await failsWith(master.api.SR.destroy(sr), 'SR_HAS_PBD');
  await master.api.PBD.unplug(pbd);
  await master.api.SR.destroy(sr);
  assert.ok(!existsSync(dir), 'gone from the member');
  assert.deepEqual(await master.api.SR.get_by_name_label('extra'), []);
  // storage the member cannot make leaves no records behind
  await assert.rejects(master.api.SR.create(r2, { path: join(h2.dataDir, 'xenon.db') }, 0, 'bad', '', 'ext', 'user', false, {}));
  assert.deepEqual(await master.api.SR.get_by_name_label('bad'), []);
});

test('a member that stops answering: its SR answers HOST_OFFLINE at once, the collector goes on with the others', async () => {
  const master = await h1.client();
  const [r1, r2] = [await hostRefOf(master, h1), await hostRefOf(master, h2)];
  const localOf = async (host: string): Promise<string> => {
    for (const p of Object.values(await master.api.PBD.get_all_records())) if (p.host === host && (await master.api.SR.get_type(p.SR)) === 'ext') return p.SR;
    throw new Error('no local SR');
  };
  const [sr1, sr2] = [await localOf(r1), await localOf(r2)];
  h2.daemon.proc.kill('SIGTERM');
  await h2.daemon.exited;
  const metrics = await master.api.host.get_metrics(r2);
  await until('the member to be seen dead', async () => !(await master.api.host_metrics.get_live(metrics)));
  const vdiArgs = (sr: string) => ({ SR: sr, virtual_size: 1024 * 1024, name_label: 'x', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: {} }) as never;
  const started = Date.now();
  assert.deepEqual(await failsWith(master.api.VDI.create(vdiArgs(sr2)), 'HOST_OFFLINE'), [r2]);
  assert.ok(Date.now() - started < 5000, 'no waiting for a call to time out');

  // a base on the master's own SR is folded all the same
  const vdi = await master.api.VDI.create(vdiArgs(sr1));
  const snap = await master.api.VDI.snapshot(vdi, {});
  await master.api.VDI.destroy(snap);
  assert.ok((await master.api.VDI.get_sm_config(vdi))['vhd-parent']);
  await until('the base to be folded', async () => {
    await master.api.SR.scan(sr1);
    return !(await master.api.VDI.get_sm_config(vdi))['vhd-parent'];
  }, 60_000, 300);
  await master.api.VDI.destroy(vdi);
});
