/** XVA export and import through HTTP and the XenAPI: structure, round trips, refusals that leave nothing behind. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import type { Ref } from '../../src/client/client.ts';
import { decodeValue } from '../../src/wire/xmlrpc.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { xxh64ReferenceHex } from '../helpers/xxh64-reference.ts';
import { tarArchive, xxh64Hex, type TarMember } from '../../src/storage/xva/index.ts';

const MiB = 1024 * 1024;
let t: TestServer;
let t2: TestServer;
let vm: Ref<'VM'>;
let net: Ref<'network'>;
let xva: Buffer;
const diskA = Buffer.concat([randomBytes(MiB), Buffer.alloc(2 * MiB), randomBytes(MiB), Buffer.alloc(2 * MiB)]); // chunks 0,3 and the (zero) last one
const diskB = randomBytes(2.5 * MiB); // a short last chunk

const start = (): Promise<TestServer> => startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });

async function defaultSr(s: TestServer): Promise<Ref<'SR'>> {
  const [pool] = await s.client.api.pool.get_all();
  return s.client.api.pool.get_default_SR(pool);
}

async function network(s: TestServer): Promise<Ref<'network'>> {
  const hit = await s.client.api.network.get_by_name_label('xva net');
  if (hit.length) return hit[0];
  return s.client.api.network.create({ name_label: 'xva net', name_description: '', MTU: 1500, other_config: {}, bridge: 'xvabr0', tags: [] } as never);
}

async function putRaw(s: TestServer, vdi: string, body: Buffer): Promise<void> {
  const r = await fetch(`${s.url}/import_raw_vdi?session_id=${s.client.session}&vdi=${vdi}&format=raw`, { method: 'PUT', body: new Uint8Array(body) });
  assert.equal(r.status, 200, await r.text());
}

async function getRaw(s: TestServer, vdi: string): Promise<Buffer> {
  const r = await fetch(`${s.url}/export_raw_vdi?session_id=${s.client.session}&vdi=${vdi}&format=raw`);
  assert.equal(r.status, 200);
  return Buffer.from(await r.arrayBuffer());
}

async function exportXva(s: TestServer, v: string, extra = ''): Promise<Response> {
  return fetch(`${s.url}/export?session_id=${s.client.session}&uuid=${await s.client.api.VM.get_uuid(v as Ref<'VM'>)}${extra}`);
}

/** PUT /import with a client task, as xe does; returns the task's record once it is done, and the HTTP reply. */
async function importXva(s: TestServer, body: Buffer, extra = ''): Promise<{ status: number; text: string; task: { status: string; result: string; error_info: string[] } }> {
  const task = await s.client.api.task.create('import', '');
  const r = await fetch(`${s.url}/import?session_id=${s.client.session}&task_id=${task}${extra}`, { method: 'PUT', body: new Uint8Array(body) });
  const text = await r.text();
  for (let i = 0; i < 100 && (await s.client.api.task.get_status(task)) === 'pending'; i++) await new Promise((res) => setTimeout(res, 50));
  const rec = await s.client.api.task.get_record(task);
  await s.client.api.task.destroy(task);
  return { status: r.status, text, task: rec as never };
}

/** The members of an uncompressed tar, parsed independently of the server's code. */
function members(tar: Buffer): { name: string; data: Buffer }[] {
  const out: { name: string; data: Buffer }[] = [];
  let pos = 0;
  while (pos + 512 <= tar.length) {
    const h = tar.subarray(pos, pos + 512);
    if (h.every((b) => b === 0)) break;
    const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const size = parseInt(h.toString('latin1', 124, 136).replace(/\0.*$/s, '').trim(), 8);
    out.push({ name, data: tar.subarray(pos + 512, pos + 512 + size) });
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

const counts = async (s: TestServer): Promise<{ vms: number; vdis: number; vbds: number; vifs: number }> => ({
  vms: (await s.client.api.VM.get_all()).length,
  vdis: (await s.client.api.VDI.get_all()).length,
  vbds: (await s.client.api.VBD.get_all()).length,
  vifs: (await s.client.api.VIF.get_all()).length,
});

/** The VM's disks by userdevice. */
async function disks(s: TestServer, v: Ref<'VM'>): Promise<Map<string, Ref<'VDI'>>> {
  const out = new Map<string, Ref<'VDI'>>();
  for (const vbd of await s.client.api.VM.get_VBDs(v)) {
    const r = await s.client.api.VBD.get_record(vbd);
    if (r.type === 'Disk') out.set(r.userdevice, r.VDI);
  }
  return out;
}

before(async () => {
  t = await start();
  const sr = await defaultSr(t);
  net = await network(t);
  vm = await t.client.api.VM.create({
    name_label: 'xva-vm', name_description: 'exported and back', memory_static_max: 64 * MiB, memory_dynamic_max: 64 * MiB, memory_dynamic_min: 64 * MiB,
    memory_static_min: 64 * MiB, VCPUs_max: 2, VCPUs_at_startup: 1, other_config: { 'xva-test': 'yes', owner: 'ops' }, HVM_boot_policy: 'BIOS order', HVM_boot_params: { order: 'cd' },
  } as never);
  const sizes = [diskA.length, diskB.length];
  for (const [i, data] of [diskA, diskB].entries()) {
    const vdi = await t.client.api.VDI.create({ SR: sr, virtual_size: sizes[i], name_label: `disk ${i}`, name_description: `the ${i}th`, type: 'user', sharable: false, read_only: false, other_config: { n: String(i) } } as never);
    await putRaw(t, vdi, data);
    await t.client.api.VBD.create({ VM: vm, VDI: vdi, userdevice: String(i), bootable: i === 0, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
  }
  await t.client.api.VBD.create({ VM: vm, VDI: 'OpaqueRef:NULL', userdevice: '3', bootable: false, mode: 'RO', type: 'CD', empty: true, other_config: {} } as never);
  await t.client.api.VIF.create({ VM: vm, network: net, device: '0', MAC: '00:16:3e:12:34:56', MTU: 1500, other_config: { vif: 'one' } } as never);
});
after(async () => {
  await t?.close();
  await t2?.close();
});

test('GET /export: ova.xml first, then 1 MiB chunks each followed by its SHA-1 .checksum; zero chunks left out but the first and last', async () => {
  const task = await t.client.api.task.create('export', '');
  const r = await fetch(`${t.url}/export?session_id=${t.client.session}&ref=${vm}&task_id=${task}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/octet-stream');
  xva = Buffer.from(await r.arrayBuffer());
  assert.equal(await t.client.api.task.get_status(task), 'success');
  assert.equal(await t.client.api.task.get_progress(task), 1);
  assert.deepEqual(await t.client.api.VM.get_current_operations(vm), {});

  const m = members(xva);
  assert.equal(m[0].name, 'ova.xml');
  const header = decodeValue(m[0].data.toString('utf8')) as { version: Record<string, unknown>; objects: { class: string; id: string; snapshot: Record<string, unknown> }[] };
  assert.equal(header.version.export_vsn, 2);
  const classes = header.objects.map((o) => o.class).sort();
  assert.deepEqual(classes, ['SR', 'VBD', 'VBD', 'VBD', 'VDI', 'VDI', 'VIF', 'VM', 'network']);
  const vmObj = header.objects.find((o) => o.class === 'VM')!;
  assert.equal(vmObj.id, 'Ref:0');
  assert.equal(vmObj.snapshot.name_label, 'xva-vm');
  assert.deepEqual(vmObj.snapshot.other_config, { 'xva-test': 'yes', owner: 'ops' });
  assert.equal(vmObj.snapshot.power_state, 'Halted');
  for (const o of header.objects) for (const v of Object.values(o.snapshot)) if (typeof v === 'string') assert.ok(!/^OpaqueRef:(?!NULL)/.test(v), `${o.class} leaks a local ref`);

  const vdis = header.objects.filter((o) => o.class === 'VDI').map((o) => ({ id: o.id, size: Number(o.snapshot.virtual_size), label: o.snapshot.name_label }));
  const chunks = m.slice(1);
  assert.equal(chunks.length % 2, 0);
  const seen = new Map<string, number[]>();
  for (let i = 0; i < chunks.length; i += 2) {
    const [data, sum] = [chunks[i], chunks[i + 1]];
    const hit = /^(Ref:\d+)\/(\d{8})$/.exec(data.name);
    assert.ok(hit, data.name);
    assert.equal(sum.name, `${data.name}.checksum`);
    assert.equal(sum.data.toString(), createHash('sha1').update(data.data).digest('hex'));
    seen.set(hit[1], [...(seen.get(hit[1]) ?? []), Number(hit[2])]);
  }
  const a = vdis.find((v) => v.label === 'disk 0')!;
  const b = vdis.find((v) => v.label === 'disk 1')!;
  assert.deepEqual(seen.get(a.id), [0, 3, 5]);
  assert.deepEqual(seen.get(b.id), [0, 1, 2]);
  assert.equal(chunks.find((c) => c.name === `${b.id}/00000002`)!.data.length, MiB / 2);
  assert.deepEqual([...seen.keys()], [...seen.keys()].sort(), 'disks in the order of their ids');
});

test('PUT /import into the same server: a new halted VM with the same config, disks with the same bytes, the VIF on its network', async () => {
  const before = await counts(t);
  const r = await importXva(t, xva);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.task.status, 'success', String(r.task.error_info));
  assert.match(r.task.result, /^<value><array><data><value>OpaqueRef:[0-9a-f-]+<\/value><\/data><\/array><\/value>$/);
  const ref = /OpaqueRef:[0-9a-f-]+/.exec(r.task.result)![0] as Ref<'VM'>;
  assert.notEqual(ref, vm);
  const [orig, copy] = [await t.client.api.VM.get_record(vm), await t.client.api.VM.get_record(ref)];
  assert.notEqual(copy.uuid, orig.uuid);
  assert.equal(copy.power_state, 'Halted');
  for (const f of ['name_label', 'name_description', 'memory_static_max', 'VCPUs_max', 'VCPUs_at_startup', 'HVM_boot_policy'] as const) assert.deepEqual(copy[f], orig[f], f);
  assert.deepEqual(copy.other_config, orig.other_config);
  assert.deepEqual(copy.HVM_boot_params, orig.HVM_boot_params);
  assert.deepEqual(copy.current_operations, {});
  assert.ok(copy.allowed_operations.includes('start'));
  const d = await disks(t, ref);
  assert.deepEqual([...d.keys()].sort(), ['0', '1']);
  assert.ok((await getRaw(t, d.get('0')!)).equals(diskA));
  assert.ok((await getRaw(t, d.get('1')!)).equals(diskB));
  assert.deepEqual(await t.client.api.VDI.get_other_config(d.get('1')!), { n: '1' });
  assert.equal(await t.client.api.VDI.get_SR(d.get('0')!), await defaultSr(t));
  const cds = (await Promise.all((await t.client.api.VM.get_VBDs(ref)).map((v) => t.client.api.VBD.get_record(v)))).filter((v) => v.type === 'CD');
  assert.equal(cds.length, 1);
  assert.equal(cds[0].empty, true);
  const [vif] = await t.client.api.VM.get_VIFs(ref);
  const vifRec = await t.client.api.VIF.get_record(vif);
  assert.equal(vifRec.network, net);
  assert.equal(vifRec.MAC, '00:16:3e:12:34:56');
  assert.deepEqual(vifRec.other_config, { vif: 'one' });
  const now = await counts(t);
  assert.deepEqual(now, { vms: before.vms + 1, vdis: before.vdis + 2, vbds: before.vbds + 3, vifs: before.vifs + 1 });
  // and the copy exports to the same disk bytes again
  const again = members(Buffer.from(await (await exportXva(t, ref)).arrayBuffer()));
  assert.equal(again.length, members(xva).length);
});

test('PUT /import into a fresh server, gzip-compressed (use_compression=true), restore=true keeps the uuid', async () => {
  t2 = await start();
  const net2 = await network(t2);
  const gz = Buffer.from(await (await exportXva(t, vm, '&use_compression=true')).arrayBuffer());
  assert.deepEqual([gz[0], gz[1]], [0x1f, 0x8b]);
  assert.ok(gunzipSync(gz).subarray(0, 512).toString('latin1').startsWith('ova.xml'));
  const r = await importXva(t2, gz, '&restore=true');
  assert.equal(r.task.status, 'success', String(r.task.error_info));
  const ref = /OpaqueRef:[0-9a-f-]+/.exec(r.task.result)![0] as Ref<'VM'>;
  assert.equal(await t2.client.api.VM.get_uuid(ref), await t.client.api.VM.get_uuid(vm));
  assert.deepEqual(await t2.client.api.VM.get_other_config(ref), { 'xva-test': 'yes', owner: 'ops' });
  const d = await disks(t2, ref);
  assert.ok((await getRaw(t2, d.get('0')!)).equals(diskA));
  assert.ok((await getRaw(t2, d.get('1')!)).equals(diskB));
  const [vif] = await t2.client.api.VM.get_VIFs(ref);
  assert.equal(await t2.client.api.VIF.get_network(vif), net2);
  // a second restore of the same VM would duplicate its uuid
  const dup = await importXva(t2, xva, '&restore=true');
  assert.equal(dup.task.error_info[0], 'DUPLICATE_VM');
});

test('XXH64 as the daemon computes it agrees with a reference written from the specification', () => {
  for (const n of [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 1000, MiB + 5]) {
    const b = randomBytes(n);
    assert.equal(xxh64Hex(b), xxh64ReferenceHex(b), `length ${n}`);
  }
  assert.equal(xxh64Hex(Buffer.from('abc')), '44BC2CF5AD770999');
});

test('an archive whose reader stops early stops its producer, which cleans up (an export cut by its client closes its disks)', async () => {
  let produced = 0;
  let cleanedUp = false;
  async function* endless(): AsyncGenerator<TarMember> {
    try {
      for (;;) {
        produced++;
        yield { name: `Ref:1/${String(produced).padStart(8, '0')}`, data: randomBytes(MiB) };
      }
    } finally {
      cleanedUp = true;
    }
  }
  const archive = tarArchive(endless());
  let bytes = 0;
  for await (const b of archive) if ((bytes += b.length) > 3 * MiB) break;
  assert.ok(cleanedUp, 'the producer ran its finally');
  assert.ok(produced < 10, `backpressure held the producer (${produced} members made for ~3 MiB read)`);
});

test('an archive with .xxhash members, as newer xapi writes them, imports with the same bytes; a wrong XXH64 is refused', async () => {
  const asXxhash = async (corruptFirst: boolean): Promise<Buffer> => {
    const parts: TarMember[] = [];
    let previous: Buffer = Buffer.alloc(0);
    let corrupted = false;
    for (const m of members(xva)) {
      if (m.name.endsWith('.checksum')) {
        let sum = xxh64ReferenceHex(previous);
        if (corruptFirst && !corrupted) [sum, corrupted] = [sum.replace(/^./, (c) => (c === '0' ? '1' : '0')), true];
        parts.push({ name: m.name.replace(/\.checksum$/, '.xxhash'), data: Buffer.from(sum) });
      } else parts.push({ name: m.name, data: m.data });
      previous = m.data;
    }
    const out: Buffer[] = [];
    for await (const b of tarArchive(parts)) out.push(b);
    return Buffer.concat(out);
  };
  const good = await asXxhash(false);
  assert.ok(members(good).some((m) => m.name.endsWith('.xxhash')) && !members(good).some((m) => m.name.endsWith('.checksum')));
  const before = await counts(t);
  const bad = await importXva(t, await asXxhash(true));
  assert.equal(bad.task.error_info[0], 'IMPORT_ERROR_SOME_CHECKSUMS_FAILED');
  assert.deepEqual(await counts(t), before);
  const r = await importXva(t, good);
  assert.equal(r.task.status, 'success', String(r.task.error_info));
  const ref = /OpaqueRef:[0-9a-f-]+/.exec(r.task.result)![0] as Ref<'VM'>;
  const d = await disks(t, ref);
  assert.ok((await getRaw(t, d.get('0')!)).equals(diskA));
  assert.ok((await getRaw(t, d.get('1')!)).equals(diskB));
});

test('a corrupt chunk or a truncated stream is refused, and leaves no VM, VDI, VBD or VIF behind', async () => {
  const m = members(xva);
  const before = await counts(t);
  // flip a byte inside the first disk chunk's data
  const corrupt = Buffer.from(xva);
  const firstChunk = 512 + Math.ceil(m[0].data.length / 512) * 512 + 512;
  corrupt[firstChunk + 100] ^= 0xff;
  const bad = await importXva(t, corrupt);
  assert.equal(bad.status, 400);
  assert.equal(bad.task.status, 'failure');
  assert.equal(bad.task.error_info[0], 'IMPORT_ERROR_SOME_CHECKSUMS_FAILED');
  assert.match(bad.text, /^IMPORT_ERROR_SOME_CHECKSUMS_FAILED/);
  assert.deepEqual(await counts(t), before);

  const cut = await importXva(t, xva.subarray(0, Math.floor(xva.length * 0.6)));
  assert.equal(cut.task.status, 'failure');
  assert.equal(cut.task.error_info[0], 'IMPORT_ERROR_PREMATURE_EOF');
  assert.deepEqual(await counts(t), before);

  const notXva = await importXva(t, randomBytes(4096));
  assert.equal(notXva.task.status, 'failure');
  assert.match(notXva.task.error_info[0], /^IMPORT_ERROR/);
  assert.deepEqual(await counts(t), before);

  // force=true ignores checksum failures, as xapi's does
  const forced = await importXva(t, corrupt, '&force=true');
  assert.equal(forced.task.status, 'success');
  const ref = /OpaqueRef:[0-9a-f-]+/.exec(forced.task.result)![0] as Ref<'VM'>;
  for (const vbd of await t.client.api.VM.get_VBDs(ref)) {
    const vdi = await t.client.api.VBD.get_VDI(vbd);
    await t.client.api.VBD.destroy(vbd);
    if (vdi !== 'OpaqueRef:NULL') await t.client.api.VDI.destroy(vdi);
  }
  for (const vif of await t.client.api.VM.get_VIFs(ref)) await t.client.api.VIF.destroy(vif);
  await t.client.api.VM.destroy(ref);
});

test('an empty PUT /import is a probe: 200 and nothing made; a bad session is refused', async () => {
  const before = await counts(t);
  const r = await fetch(`${t.url}/import?session_id=${t.client.session}`, { method: 'PUT', body: new Uint8Array(0) });
  assert.equal(r.status, 200);
  assert.deepEqual(await counts(t), before);
  const denied = await fetch(`${t.url}/import?session_id=OpaqueRef:nope`, { method: 'PUT', body: new Uint8Array(xva.subarray(0, 4096)) });
  assert.equal(denied.status, 403);
  assert.match(await denied.text(), /^SESSION_INVALID/);
  assert.deepEqual(await counts(t), before);
});

test('a running VM cannot be exported: VM_BAD_POWER_STATE, and the task says so', async () => {
  await t.client.api.VM.start(vm, false, false);
  try {
    const task = await t.client.api.task.create('export', '');
    const r = await fetch(`${t.url}/export?session_id=${t.client.session}&uuid=${await t.client.api.VM.get_uuid(vm)}&task_id=${task}`);
    assert.notEqual(r.status, 200);
    assert.equal((await r.text()).trim(), `VM_BAD_POWER_STATE ${vm} halted running`);
    assert.deepEqual(await t.client.api.task.get_error_info(task), ['VM_BAD_POWER_STATE', vm, 'halted', 'running']);
    const missing = await fetch(`${t.url}/export?session_id=${t.client.session}&uuid=00000000-0000-0000-0000-000000000000`);
    assert.match(await missing.text(), /^HANDLE_INVALID VM/);
  } finally {
    await t.client.api.VM.hard_shutdown(vm);
  }
});
