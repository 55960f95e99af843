/** Chains keep their data: snapshot, clone, revert, destroy, resize and writes in any order, folded by the collector. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import type { StorageService } from '../../src/messages/context.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { checkChainFile } from './chain-helpers.ts';

let t: TestServer;
let local: Ref<'SR'>;
const MiB = 1024 * 1024;

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });
  const [pool] = await t.client.api.pool.get_all();
  local = await t.client.api.pool.get_default_SR(pool);
});
after(() => t.close());

const storage = (): StorageService => t.server.services.storage!;

async function put(vdi: string, body: Buffer): Promise<void> {
  const res = await fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}`, { method: 'PUT', body: new Uint8Array(body), headers: { 'Content-Length': String(body.length) } });
  assert.equal(res.status, 200, await res.text());
}
async function get(vdi: string): Promise<Buffer> {
  const res = await fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}`);
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

test('three rounds of VDI.snapshot + destroy, then one collector pass: the chain stays whole and the data intact', async () => {
  const vdi = await t.client.api.VDI.create({ SR: local, virtual_size: 4 * MiB, name_label: 'rounds', type: 'user', sharable: false, read_only: false, other_config: {} } as never);
  const data = randomBytes(4 * MiB);
  await put(vdi, data);
  for (let i = 0; i < 3; i++) await t.client.api.VDI.destroy(await t.client.api.VDI.snapshot(vdi, {}));
  assert.ok((await storage().collect()) >= 3, 'three hidden bases folded');
  assert.ok((await get(vdi)).equals(data));
  const rec = await t.client.api.VDI.get_record(vdi);
  assert.equal(rec.sm_config['vhd-parent'], undefined, 'no base left under the VDI');
  const [pbd] = await t.client.api.SR.get_PBDs(local);
  await checkChainFile(join((await t.client.api.PBD.get_device_config(pbd)).path, `${rec.uuid}.vhd`));
});
