/** A full disk: SR_FULL, and nothing half-made or corrupted. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storagePlugin } from '../../src/plugins.ts';
import { failsWith, startTestServer, type TestServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
let t: TestServer;
let mnt: string;

before(async () => {
  mnt = mkdtempSync(join(tmpdir(), 'xenon-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', mnt]);
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 })] });
});
after(async () => {
  await t.close();
  // a helper process of the closed server (qemu-img, qemu-nbd) may still be leaving: wait for it, then detach lazily
  for (let i = 0; ; i++) {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' });
      break;
    } catch (e) {
      if (i >= 50) {
        execFileSync('umount', ['-l', mnt]);
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  rmSync(mnt, { recursive: true, force: true });
});

test('an import that does not fit gives SR_FULL, leaves the VDI sound and no partial file', async () => {
  const [host] = await t.client.api.host.get_all();
  const sr = await t.client.api.SR.create(host, { location: mnt }, 0, 'tiny', '', 'file', 'user', true, {});
  const vdi = await t.client.api.VDI.create({ SR: sr, virtual_size: 64 * MiB, name_label: 'big', type: 'user' } as never);
  const small = randomBytes(2 * MiB);
  const put = (body: Buffer) => fetch(`${t.url}/import_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=raw`, { method: 'PUT', body: new Uint8Array(body) });
  assert.equal((await put(small)).status, 200);
  const res = await put(randomBytes(32 * MiB));
  assert.equal(res.status, 507);
  assert.match(await res.text(), /SR_FULL/);
  // a raw upload is written onto the disk as it comes, as xapi does: what was written stays, the image stays sound and keeps its size
  const back = Buffer.from(await (await fetch(`${t.url}/export_raw_vdi?session_id=${t.client.session}&vdi=${vdi}&format=raw`)).arrayBuffer());
  assert.equal(back.length, 64 * MiB, 'the VDI keeps its size and reads back whole');
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), 64 * MiB);
  assert.deepEqual(readdirSync(mnt).filter((f) => f.endsWith('.import')), []);
  // a VDI that cannot be created at all is SR_FULL too, and leaves no record
  const before = (await t.client.api.SR.get_VDIs(sr)).length;
  for (let i = 0; i < 3; i++) await put(randomBytes(3 * MiB)).catch(() => undefined);
  const copies: unknown[] = [];
  for (let i = 0; i < 8; i++) copies.push(await t.client.api.VDI.copy(vdi, sr, 'OpaqueRef:NULL', 'OpaqueRef:NULL').catch((e: { code: string }) => e.code));
  assert.ok(copies.includes('SR_FULL'), `copies: ${copies.join(', ')}`);
  const vdis = await t.client.api.SR.get_VDIs(sr);
  assert.equal(vdis.length, before + copies.filter((x) => typeof x === 'string' && x.startsWith('OpaqueRef:')).length, 'no record for a failed copy');
  await failsWith(t.client.api.VDI.copy(vdi, sr, 'OpaqueRef:NULL', 'OpaqueRef:NULL'), 'SR_FULL');
});
