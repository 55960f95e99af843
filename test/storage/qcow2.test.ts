/** qcow2 VDIs on file SRs: past VHD's 2 TiB, thin, chained, exported, collected. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin } from '../../src/plugins.ts';
import type { Storage } from '../../src/messages/sr-drivers.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
let local: Ref<'SR'>;
let dir: string;
const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 })] });
  const [pool] = await t.client.api.pool.get_all();
  local = await t.client.api.pool.get_default_SR(pool);
  const [pbd] = await t.client.api.SR.get_PBDs(local);
  dir = (await t.client.api.PBD.get_device_config(pbd)).path;
});
after(() => t.close());

const newVdi = (size: number, sm_config: Record<string, string> = {}): Promise<Ref<'VDI'>> =>
  t.client.api.VDI.create({ SR: local, virtual_size: size, name_label: 'q', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config } as never);
const file = async (vdi: Ref<'VDI'>): Promise<string> => join(dir, `${await t.client.api.VDI.get_uuid(vdi)}.qcow2`);
const qinfo = (path: string): Record<string, unknown> => JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' }));
async function put(vdi: string, body: Buffer, format = 'raw'): Promise<Response> {
  return fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=${format}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Length': String(body.length) } });
}
async function get(vdi: string, format = 'raw'): Promise<Response> {
  return fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=${format}`);
}

test('a 3 TiB VDI is a thin qcow2; 64 TiB is the limit; resize grows it', async () => {
  const vdi = await newVdi(3 * TiB);
  const rec = await t.client.api.VDI.get_record(vdi);
  assert.equal(rec.virtual_size, 3 * TiB);
  assert.equal(rec.sm_config.vdi_type, 'qcow2');
  assert.ok(rec.physical_utilisation < 2 * MiB, `thin: ${rec.physical_utilisation}`);
  assert.ok(existsSync(await file(vdi)));
  assert.equal(qinfo(await file(vdi))['virtual-size'], 3 * TiB);
  await t.client.api.VDI.resize(vdi, 4 * TiB);
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), 4 * TiB);
  await failsWith(newVdi(65 * TiB), 'INVALID_VALUE');
  // small disks stay VHD
  const small = await newVdi(MiB);
  assert.equal((await t.client.api.VDI.get_sm_config(small)).vdi_type, 'vhd');
  const f = await file(vdi);
  await t.client.api.VDI.destroy(vdi);
  assert.ok(!existsSync(f));
});

test('snapshot and clone of a 3 TiB qcow2 are O(1) children backed by a hidden base', async () => {
  const vdi = await newVdi(3 * TiB);
  const t0 = Date.now();
  const snap = await t.client.api.VDI.snapshot(vdi, {});
  const clone = await t.client.api.VDI.clone(vdi, {});
  assert.ok(Date.now() - t0 < 3000, `${Date.now() - t0} ms`);
  for (const v of [vdi, snap, clone]) {
    const rec = await t.client.api.VDI.get_record(v);
    assert.equal(rec.virtual_size, 3 * TiB);
    assert.equal(rec.sm_config.vdi_type, 'qcow2');
    const parent = rec.sm_config['vhd-parent'];
    assert.ok(parent);
    assert.equal(qinfo(await file(v))['backing-filename'], `${parent}.qcow2`);
    assert.ok(existsSync(join(dir, `${parent}.qcow2`)));
    assert.ok(rec.physical_utilisation < 2 * MiB);
  }
  assert.equal(await t.client.api.VDI.get_is_a_snapshot(snap), true);
  const uuids = await Promise.all([vdi, snap, clone].map((v) => t.client.api.VDI.get_uuid(v)));
  const bases = await Promise.all([vdi, snap, clone].map(async (v) => (await t.client.api.VDI.get_sm_config(v))['vhd-parent']));
  for (const v of [snap, clone, vdi]) await t.client.api.VDI.destroy(v);
  const storage = t.server.services.storage!;
  while ((await storage.collect()) > 0);
  for (const u of [...uuids, ...bases]) assert.ok(!existsSync(join(dir, `${u}.qcow2`)), `${u}.qcow2 removed`);
});

test('raw import and export of a qcow2 VDI, through its chain; VHD format is refused clearly', async () => {
  const vdi = await newVdi(8 * MiB, { type: 'qcow2' });
  assert.equal((await t.client.api.VDI.get_sm_config(vdi)).vdi_type, 'qcow2');
  const data = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(3 * MiB)]);
  const r = await put(vdi, data);
  assert.equal(r.status, 200, await r.text());
  assert.equal((await t.client.api.VDI.get_sm_config(vdi)).vdi_type, 'qcow2');
  const out = await get(vdi);
  assert.equal(out.status, 200);
  assert.ok(Buffer.from(await out.arrayBuffer()).equals(data));
  const snap = await t.client.api.VDI.snapshot(vdi, {});
  const second = randomBytes(8 * MiB);
  assert.equal((await put(vdi, second)).status, 200);
  assert.ok(Buffer.from(await (await get(snap)).arrayBuffer()).equals(data), 'the snapshot reads through its base');
  assert.ok(Buffer.from(await (await get(vdi)).arrayBuffer()).equals(second));
  const vhd = await get(vdi, 'vhd');
  assert.equal(vhd.status, 400);
  assert.match(await vhd.text(), /VDI_INCOMPATIBLE_TYPE/);
  const copy = await t.client.api.VDI.copy(snap, local, 'OpaqueRef:NULL' as never, 'OpaqueRef:NULL' as never);
  assert.equal((await t.client.api.VDI.get_sm_config(copy)).vdi_type, 'qcow2');
  assert.equal((await t.client.api.VDI.get_sm_config(copy))['vhd-parent'], undefined, 'a copy stands alone');
  assert.ok(Buffer.from(await (await get(copy)).arrayBuffer()).equals(data));
});

test('the collector coalesces a qcow2 base into its last child', async () => {
  const vdi = await newVdi(4 * MiB, { type: 'qcow2' });
  const data = randomBytes(4 * MiB);
  await put(vdi, data);
  const snap = await t.client.api.VDI.snapshot(vdi, {});
  // a write into the leaf only, as a guest would make it
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', await file(vdi)]);
  const both = Buffer.concat([Buffer.alloc(MiB, 0x5a), data.subarray(MiB)]);
  const base = (await t.client.api.VDI.get_sm_config(vdi))['vhd-parent'];
  assert.ok(base, 'on a base');
  await t.client.api.VDI.destroy(snap);
  const storage = t.server.services.storage!;
  assert.ok((await storage.collect()) >= 1, 'collected');
  assert.equal((await t.client.api.VDI.get_sm_config(vdi))['vhd-parent'], undefined, 'coalesced');
  assert.ok(!existsSync(join(dir, `${base}.qcow2`)), 'base file gone');
  assert.equal(qinfo(await file(vdi))['backing-filename'], undefined);
  assert.ok(Buffer.from(await (await get(vdi)).arrayBuffer()).equals(both), 'merged data');
  const f = await file(vdi);
  await t.client.api.VDI.destroy(vdi);
  assert.ok(!existsSync(f));
});
