/**
 * No input becomes a path outside its place: traversal strings in every
 * parameter that becomes a file name (as a vm-admin, and as root where only
 * root may pass them), file SRs in a subdirectory of their own, and
 * SR.destroy that leaves the rest of the admin's directory alone.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { XenApiClient, type Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

const TRAVERSALS = ['../../..', '../victim', '/tmp/victim', 'a/../../b', '..', '.', 'x\u0000y', 'x\u0001y', '%2e%2e%2fvictim', '..%2fvictim', `${randomUUID()}/../..`, ''];

let t: TestServer;
let vmAdmin: XenApiClient;
let local: Ref<'SR'>;
let host: Ref<'host'>;
const scratch = mkdtempSync(join(tmpdir(), 'xenon-paths-'));

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });
  const roles = await t.client.api.role.get_all_records();
  const role = Object.entries(roles).find(([, r]) => r.name_label === 'vm-admin')![0];
  const subject = await t.client.api.subject.create({ subject_identifier: 'local:paths-admin', other_config: { 'subject-name': 'paths-admin' }, roles: [role] } as never);
  await t.client.call('subject.set_password', [t.client.session, subject, 'pw-paths']);
  vmAdmin = new XenApiClient(t.url);
  await vmAdmin.login('paths-admin', 'pw-paths');
  const [pool] = await t.client.api.pool.get_all();
  local = await t.client.api.pool.get_default_SR(pool);
  [host] = await t.client.api.host.get_all();
});
/** Refused with one of `codes` (the edge already refuses control characters with INVALID_VALUE). */
async function refused(p: Promise<unknown>, ...codes: string[]): Promise<void> {
  const err = await p.then(() => undefined, (e: { code?: string }) => e);
  assert.ok(err && codes.includes(String(err.code)), `expected ${codes.join(' or ')}, got ${String(err?.code ?? 'success')}`);
}

after(async () => {
  vmAdmin.close();
  await t.close();
  rmSync(scratch, { recursive: true, force: true });
});

test('VDI.introduce refuses every uuid that is not a UUID, as a vm-admin, and touches no file', async () => {
  const victim = join(scratch, 'victim.vhd');
  writeFileSync(victim, 'precious');
  for (const uuid of [...TRAVERSALS, join(scratch, 'victim')]) {
    await refused(
      vmAdmin.call('VDI.introduce', [vmAdmin.session, uuid, 'x', '', local, 'user', false, false, {}, '', {}, {}, true, 0, 0, 'OpaqueRef:NULL', false, '19700101T00:00:00Z', 'OpaqueRef:NULL']),
      'UUID_INVALID', 'INVALID_VALUE',
    );
  }
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
  const names = (await t.client.api.VDI.get_all_records()) as Record<string, { uuid: string }>;
  assert.ok(Object.values(names).every((v) => /^[0-9a-f-]{36}$/.test(v.uuid)), 'no record with such a uuid');
});

test('SR directories: relative, traversing or control-character paths are refused and nothing is created', async () => {
  const before = (await t.client.api.SR.get_all()).length;
  const bad = ['relative/dir', `${scratch}/../etc`, `${scratch}/a/./b`, `${scratch}/x\u0000y`, `${scratch}/x\u0001y`, ''];
  for (const [type, key] of [['file', 'location'], ['ext', 'path'], ['iso', 'location']] as const) {
    for (const dir of bad) {
      if (type === 'ext' && dir === '') continue; // an empty path means the default under the data directory
      await refused(t.client.api.SR.create(host, { [key]: dir }, 0, 'bad', '', type, type === 'iso' ? 'iso' : 'user', true, {}), 'SR_BACKEND_FAILURE', 'INVALID_VALUE');
    }
  }
  assert.equal((await t.client.api.SR.get_all()).length, before, 'no SR record left behind');
  // an SR introduced with a uuid that is not one cannot be plugged into a path
  const sr = await t.client.api.SR.introduce('../../escape', 'odd', '', 'file', 'user', true, {});
  const pbd = await t.client.api.PBD.create({ host, SR: sr, device_config: { location: scratch }, other_config: {} } as never);
  await failsWith(t.client.api.PBD.plug(pbd), 'SR_BACKEND_FAILURE');
  assert.deepEqual(readdirSync(scratch).sort(), ['victim.vhd']);
  await t.client.api.PBD.destroy(pbd);
  await t.client.api.SR.forget(sr);
});

test('a file SR lives in <dir>/<uuid>; SR.destroy removes only that', async () => {
  const dir = mkdtempSync(join(scratch, 'nfs-'));
  writeFileSync(join(dir, 'keep.txt'), 'mine');
  writeFileSync(join(dir, 'notes.vhd'), 'also mine');
  const sr = await t.client.api.SR.create(host, { location: dir }, 0, 'shared', '', 'file', 'user', true, {});
  const uuid = await t.client.api.SR.get_uuid(sr);
  const vdi = await t.client.api.VDI.create({ SR: sr, virtual_size: 1024 * 1024, name_label: 'd', type: 'user' } as never);
  assert.ok(existsSync(join(dir, uuid, `${await t.client.api.VDI.get_uuid(vdi)}.vhd`)), 'images in the subdirectory');
  assert.match(await t.client.api.SR.probe(host, { location: dir }, 'file', {}), new RegExp(`<UUID>${uuid}</UUID>`));
  for (const pbd of await t.client.api.SR.get_PBDs(sr)) await t.client.api.PBD.unplug(pbd);
  await t.client.api.SR.destroy(sr);
  assert.deepEqual(readdirSync(dir).sort(), ['keep.txt', 'notes.vhd']);
});

test('an SR of the old layout (files straight in its directory) keeps working, and its destroy leaves the rest', async () => {
  const dir = mkdtempSync(join(scratch, 'old-'));
  const uuid = randomUUID();
  writeFileSync(join(dir, '.xenon-sr'), `${uuid}\n`);
  writeFileSync(join(dir, 'keep.iso'), 'mine');
  const sr = await t.client.api.SR.introduce(uuid, 'old', '', 'file', 'user', true, {});
  const pbd = await t.client.api.PBD.create({ host, SR: sr, device_config: { location: dir }, other_config: {} } as never);
  await t.client.api.PBD.plug(pbd);
  const vdi = await t.client.api.VDI.create({ SR: sr, virtual_size: 1024 * 1024, name_label: 'd', type: 'user' } as never);
  assert.ok(existsSync(join(dir, `${await t.client.api.VDI.get_uuid(vdi)}.vhd`)), 'its images stay where they were');
  await t.client.api.PBD.unplug(pbd);
  await t.client.api.SR.destroy(sr);
  assert.deepEqual(readdirSync(dir), ['keep.iso']);
});

test('HTTP data paths: traversal strings in vdi=, base=, uuid=, sr_uuid= find nothing', async () => {
  const vdi = await t.client.api.VDI.create({ SR: local, virtual_size: 1024 * 1024, name_label: 'd', type: 'user' } as never);
  for (const bad of TRAVERSALS.map(encodeURIComponent)) {
    const s = `session_id=${vmAdmin.session}`;
    const replies = await Promise.all([
      fetch(`${t.url}/export_raw_vdi/?${s}&vdi=${bad}`),
      fetch(`${t.url}/export_raw_vdi/?${s}&vdi=${vdi}&format=vhd&base=${bad || '%2e'}`),
      fetch(`${t.url}/import_raw_vdi/?${s}&vdi=${bad}`, { method: 'PUT', body: 'x' }),
      fetch(`${t.url}/export/?${s}&uuid=${bad}`),
      fetch(`${t.url}/import/?${s}&sr_uuid=${bad || 'x'}`, { method: 'PUT', body: 'x' }),
    ]);
    for (const r of replies) {
      assert.equal(r.status, 404, `${r.url}: ${await r.clone().text()}`);
      assert.match(await r.text(), /^(HANDLE_INVALID|UUID_INVALID) /);
    }
  }
});
