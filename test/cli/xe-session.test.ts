/**
 * A scripted admin session with the real xe against an in-process daemon on
 * the simulator: install a VM from a template, add a disk, start it, shut
 * it down, snapshot it, export it and import it again; and a snapshot of a
 * running VM (live: the disk becomes a chain under the running guest).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { connArgs, runXe, type XeResult } from './xe-helpers.ts';

let t: TestServer;
let conn: string[];
const xe = (...args: string[]): Promise<XeResult> => runXe([...conn, ...args]);
const ok = (r: XeResult): string => {
  assert.equal(r.code, 0, `xe failed: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });
  conn = connArgs(t.url);
});
after(() => t.close());

test('vm-install, vm-disk-add, vm-start, vm-snapshot, vm-shutdown, vm-export, vm-import', async () => {
  const uuid = ok(await xe('vm-install', 'template=Xenon test guest', 'new-name-label=session-vm'));
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  ok(await xe('vm-disk-add', `uuid=${uuid}`, 'disk-size=8MiB', 'device=1'));
  ok(await xe('vm-param-set', `uuid=${uuid}`, 'other-config:role=session'));
  ok(await xe('vm-start', `uuid=${uuid}`));
  assert.equal(ok(await xe('vm-param-get', `uuid=${uuid}`, 'param-name=power-state')), 'running');
  // a running VM cannot be exported
  const dir = mkdtempSync(join(tmpdir(), 'xe-xva-'));
  const refused = await xe('vm-export', `vm=${uuid}`, `filename=${join(dir, 'running.xva')}`);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr + refused.stdout, /VM_BAD_POWER_STATE|halted/i);

  ok(await xe('vm-shutdown', `uuid=${uuid}`));
  // snapshotted once halted: a live snapshot is the todo test below
  const snap = ok(await xe('vm-snapshot', `uuid=${uuid}`, 'new-name-label=session-snap'));
  assert.match(snap, /^[0-9a-f-]{36}$/);
  const file = join(dir, 'session.xva');
  ok(await xe('vm-export', `vm=${uuid}`, `filename=${file}`));
  assert.ok(statSync(file).size > 1024);
  assert.equal(readFileSync(file).subarray(0, 7).toString('latin1'), 'ova.xml');

  const imported = ok(await xe('vm-import', `filename=${file}`));
  assert.match(imported, /^[0-9a-f-]{36}$/);
  assert.notEqual(imported, uuid);
  const orig = await t.client.api.VM.get_record(await t.client.api.VM.get_by_uuid(uuid));
  const copy = await t.client.api.VM.get_record(await t.client.api.VM.get_by_uuid(imported));
  assert.equal(copy.name_label, 'session-vm');
  assert.equal(copy.power_state, 'Halted');
  assert.equal(copy.other_config.role, 'session');
  const diskSizes = async (vbds: readonly string[]): Promise<number[]> => {
    const out: number[] = [];
    for (const v of vbds) {
      const r = await t.client.api.VBD.get_record(v as never);
      if (r.type === 'Disk') out.push(await t.client.api.VDI.get_virtual_size(r.VDI));
    }
    return out.sort((a, b) => a - b);
  };
  assert.deepEqual(await diskSizes(copy.VBDs), await diskSizes(orig.VBDs));
  assert.equal(copy.VIFs.length, orig.VIFs.length);
  // the copy boots
  ok(await xe('vm-start', `uuid=${imported}`));
  ok(await xe('vm-shutdown', `uuid=${imported}`, '--force'));
  // and the snapshot exports too (a snapshot is always halted)
  ok(await xe('vm-export', `vm=${snap}`, `filename=${join(dir, 'snap.xva')}`));
  assert.equal(readFileSync(join(dir, 'snap.xva')).subarray(0, 7).toString('latin1'), 'ova.xml');
});

test('vm-snapshot of a running VM', async () => {
  const uuid = ok(await xe('vm-install', 'template=Xenon test guest', 'new-name-label=live-snap'));
  ok(await xe('vm-disk-add', `uuid=${uuid}`, 'disk-size=8MiB', 'device=1'));
  ok(await xe('vm-start', `uuid=${uuid}`));
  try {
    assert.match(ok(await xe('vm-snapshot', `uuid=${uuid}`, 'new-name-label=live')), /^[0-9a-f-]{36}$/);
  } finally {
    await xe('vm-shutdown', `uuid=${uuid}`, '--force');
  }
});
