/**
 * The disk data paths as Xen Orchestra drives them: its `xen-api` package's
 * putResource and getResource, unchanged, on /import_raw_vdi/ and
 * /export_raw_vdi/ (trailing slash, its empty probe first, its "length
 * unknown" 2^50), beside chunked and short uploads and every way a handler
 * can fail — each answered with a status and a text that says what is wrong.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
// @ts-expect-error the package ships no type declarations
import { createClient } from 'xen-api';
import type { Ref } from '../../src/client/client.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
let t: TestServer;
let sr: Ref<'SR'>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- xen-api is untyped JavaScript
let xapi: any;
const isoDir = mkdtempSync(join(tmpdir(), 'xenon-xo-iso-'));

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim' })] });
  const [pool] = await t.client.api.pool.get_all();
  sr = await t.client.api.pool.get_default_SR(pool);
  xapi = createClient({ url: t.url, auth: { user: 'root', password: ROOT_PASSWORD }, allowUnauthorized: true, debounce: 20, eventPollDelay: 100 });
  await xapi.connect();
  await xapi.objectsFetched;
});
after(async () => {
  await xapi.disconnect();
  await t.close();
  rmSync(isoDir, { recursive: true, force: true });
});

const newVdi = (size: number): Promise<Ref<'VDI'>> =>
  t.client.api.VDI.create({ SR: sr, virtual_size: size, name_label: 'xo', type: 'user', sharable: false, read_only: false, other_config: {} } as never);

/** A stream of `data` in 64 KiB pieces; with `length`, as XO passes a stream whose size it knows. */
function streamOf(data: Buffer, withLength: boolean): Readable {
  const pieces: Buffer[] = [];
  for (let o = 0; o < data.length; o += 64 * 1024) pieces.push(data.subarray(o, o + 64 * 1024));
  const s = Readable.from(pieces);
  if (withLength) Object.assign(s, { length: data.length });
  return s;
}

/** The VDI's bytes through xen-api's getResource on /export_raw_vdi/. */
async function download(vdi: string): Promise<Buffer> {
  const res = await xapi.getResource('/export_raw_vdi/', { query: { format: 'raw', vdi } });
  const parts: Buffer[] = [];
  for await (const c of res.body as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

const put = (path: string, body: BodyInit, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(`${t.url}${path}${path.includes('?') ? '&' : '?'}session_id=${t.client.session}`, { method: 'PUT', body, headers, duplex: 'half' } as RequestInit);

test('putResource with a known length on /import_raw_vdi/: a short upload writes from offset 0 and the disk keeps its size', async () => {
  const vdi = await newVdi(4 * MiB);
  const whole = randomBytes(4 * MiB);
  await xapi.putResource(streamOf(whole, true), '/import_raw_vdi/', { query: { format: 'raw', vdi } });
  assert.ok((await download(vdi)).equals(whole));
  const head = randomBytes(MiB);
  await xapi.putResource(streamOf(head, true), '/import_raw_vdi/', { query: { format: 'raw', vdi } });
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), 4 * MiB, 'the disk keeps its size');
  const back = await download(vdi);
  assert.equal(back.length, 4 * MiB);
  assert.ok(back.subarray(0, MiB).equals(head), 'the upload is at offset 0');
  assert.ok(back.subarray(MiB).equals(whole.subarray(MiB)), 'the rest is as it was');
});

test('putResource of a stream of unknown length (probe first, Content-Length 2^50, connection closed at the end) lands intact', async () => {
  const vdi = await newVdi(6 * MiB);
  const data = Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(MiB), randomBytes(2 * MiB + 12345)]);
  const warn = console.warn;
  console.warn = () => undefined; // xen-api warns that the length is missing
  try {
    await xapi.putResource(streamOf(data, false), '/import_raw_vdi/', { query: { format: 'raw', vdi } });
  } finally {
    console.warn = warn;
  }
  const back = await download(vdi);
  assert.ok(back.subarray(0, data.length).equals(data), 'every byte sent is there');
  assert.ok(back.subarray(data.length).equals(Buffer.alloc(6 * MiB - data.length)));
});

test('a chunked upload (no Content-Length) lands intact, on the path without the slash too', async () => {
  const vdi = await newVdi(4 * MiB);
  const data = randomBytes(3 * MiB);
  const res = await put(`/import_raw_vdi?vdi=${vdi}&format=raw`, Readable.toWeb(streamOf(data, false)) as ReadableStream);
  assert.equal(res.status, 200, await res.clone().text());
  assert.ok((await download(vdi)).subarray(0, data.length).equals(data));
});

test('two uploads to one VDI at once are serialised: both succeed and the disk holds one of them whole', async () => {
  const vdi = await newVdi(4 * MiB);
  const a = randomBytes(4 * MiB);
  const b = randomBytes(4 * MiB);
  const [ra, rb] = await Promise.all([put(`/import_raw_vdi/?vdi=${vdi}`, new Uint8Array(a)), put(`/import_raw_vdi/?vdi=${vdi}`, new Uint8Array(b))]);
  assert.equal(ra.status, 200, await ra.text());
  assert.equal(rb.status, 200, await rb.text());
  const back = await download(vdi);
  assert.ok(back.equals(a) || back.equals(b), 'not a mix of the two');
});

test('an upload longer than the disk, or cut short, fails with VDI_IO_ERROR saying so', async () => {
  const vdi = await newVdi(MiB);
  const long = await put(`/import_raw_vdi/?vdi=${vdi}`, new Uint8Array(randomBytes(2 * MiB)));
  assert.equal(long.status, 400);
  assert.match(await long.text(), /VDI_IO_ERROR .*longer than the disk \(1048576 bytes\)/);
  assert.equal(await t.client.api.VDI.get_virtual_size(vdi), MiB);

  // announces 1 MiB, sends 1000 bytes, closes: the task says what happened
  const task = await t.client.api.task.create('cut', '');
  const sock = netConnect(Number(new URL(t.url).port), '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.write(`PUT /import_raw_vdi/?session_id=${t.client.session}&vdi=${vdi}&task_id=${task} HTTP/1.1\r\nHost: x\r\nContent-Length: ${MiB}\r\n\r\n`);
  sock.end(Buffer.alloc(1000, 7));
  sock.resume();
  for (let i = 0; i < 100 && (await t.client.api.task.get_status(task)) === 'pending'; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await t.client.api.task.get_status(task), 'failure');
  const [code, text] = await t.client.api.task.get_error_info(task);
  assert.equal(code, 'VDI_IO_ERROR');
  assert.match(text, new RegExp(`^the upload ended after \\d+ of the ${MiB} bytes announced$`));
});

test('exporting an ISO VDI serves its bytes; what cannot be served gets a status and a reason, never a dropped connection', async () => {
  const iso = randomBytes(256 * 1024);
  writeFileSync(join(isoDir, 'disc.iso'), iso);
  const [host] = await t.client.api.host.get_all();
  const isoSr = await t.client.api.SR.create(host, { location: isoDir }, 0, 'ISOs', '', 'iso', 'iso', true, {});
  const [isoVdi] = await t.client.api.SR.get_VDIs(isoSr);
  assert.ok((await download(isoVdi)).equals(iso));

  const get = (q: string): Promise<Response> => fetch(`${t.url}/export_raw_vdi/?session_id=${t.client.session}&${q}`);
  const cases: [Promise<Response>, number, RegExp][] = [
    [get(`vdi=${isoVdi}&format=vhd`), 400, /^VDI_INCOMPATIBLE_TYPE .*export it with format=raw/],
    [get(`vdi=${await newVdi(MiB)}&format=qcow3`), 400, /^INVALID_VALUE format qcow3 \(raw or vhd\)/],
    [get('vdi=OpaqueRef:nothing'), 404, /^HANDLE_INVALID VDI OpaqueRef:nothing/],
    [get(''), 404, /^HANDLE_INVALID VDI no vdi= in the query/],
    [fetch(`${t.url}/export_raw_vdi/?session_id=OpaqueRef:nope&vdi=${isoVdi}`), 403, /^SESSION_INVALID/],
    [put(`/import_raw_vdi/?vdi=${isoVdi}`, new Uint8Array(10)), 400, /^SR_OPERATION_NOT_SUPPORTED/],
    [fetch(`${t.url}/import_raw_vdi/?session_id=${t.client.session}&vdi=${isoVdi}`), 405, /^OPERATION_NOT_ALLOWED GET \/import_raw_vdi: send the disk with PUT/],
  ];
  for (const [reply, status, text] of cases) {
    const r = await reply;
    assert.equal(r.status, status, `${r.url}`);
    assert.match(await r.text(), text, r.url);
  }
});
