/**
 * GET /export and PUT /import: a VM as an XVA, as xapi streams it — an
 * uncompressed tar whose first member `ova.xml` is an XML-RPC struct
 * {version, objects} of the VM, its VBDs, VIFs, networks, VDIs and SRs under
 * archive-local ids (`Ref:0`, `Ref:1`…), followed by each disk's 1 MiB
 * chunks with checksums. Authenticated by session_id, tracked by a task
 * (the import's result is the new VMs' refs, as XML-RPC), streamed with
 * backpressure; a failed import leaves nothing behind.
 */
import type http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import { getClass, MESSAGES } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF, parseType, type XType } from '../datamodel/types.ts';
import type { SessionInfo } from '../auth/sessions.ts';
import { unmarshal, toXml } from '../wire/marshal.ts';
import { decodeValue, escapeXml, XmlRpcParseError } from '../wire/xmlrpc.ts';
import type { DbRecord } from '../db/store.ts';
import { isVhdError, Vhd } from '../storage/vhd/index.ts';
import {
  ByteReader,
  diskMembers,
  OVA_XML,
  openDiskSource,
  receiveDisks,
  tarEnd,
  TarError,
  tarMember,
  TarReader,
  XvaError,
  type DiskSource,
  type DiskTarget,
} from '../storage/xva/index.ts';
import type { CallContext, Services } from './context.ts';
import { storageError, type Storage } from './sr-drivers.ts';
import { createVdi, destroyVdi } from './vdi.ts';
import { refreshAllowed, withOperation } from './vm-operations.ts';
import { authorize, finishTask, taskOf, type HttpTask } from './http-handlers.ts';
import { announcedLength, discardBody, fail, uploadOf } from './http-transfer.ts';

/** xapi's role for get_export / put_import is vm-admin, so the whole ladder from there up. */
/** Inline checksums, no end-of-tar checksum table (xapi's Miami format). */
const EXPORT_VSN = 2;

type Task = HttpTask;

// ------------------------------------------------------------------ HTTP plumbing

/** A CallContext for the VDI helpers shared with the XenAPI handlers. */
function callContext(services: Services, session: SessionInfo): CallContext {
  return { services, session, message: MESSAGES.get('VM.import')!, task: null };
}

function xvaError(e: unknown): XenApiError {
  if (e instanceof XvaError) {
    switch (e.code) {
      case 'PREMATURE_EOF': return new XenApiError('IMPORT_ERROR_PREMATURE_EOF');
      case 'CHECKSUM': return new XenApiError('IMPORT_ERROR_SOME_CHECKSUMS_FAILED');
      case 'UNEXPECTED_FILE': return new XenApiError('IMPORT_ERROR_UNEXPECTED_FILE', ...(e.params.length === 2 ? e.params : ['', e.message]));
      default: return new XenApiError('IMPORT_ERROR', e.message);
    }
  }
  if (e instanceof TarError) return e.code === 'TRUNCATED' ? new XenApiError('IMPORT_ERROR_PREMATURE_EOF') : new XenApiError('IMPORT_ERROR', e.message);
  if (e instanceof XmlRpcParseError) return new XenApiError('IMPORT_ERROR', `ova.xml: ${e.message}`);
  if (isVhdError(e)) return new XenApiError('VDI_IO_ERROR', `${e.code}: ${e.message}`);
  return toApiError(storageError(e));
}

// ------------------------------------------------------------------ records <-> ova.xml

const refy = (t: XType): boolean => t.kind === 'ref' || (t.kind === 'set' && refy(t.of)) || (t.kind === 'map' && (refy(t.key) || refy(t.value)));

/** A value with references turned into archive ids (or NULL / dropped when not exported). */
function mapRefs(t: XType, v: unknown, id: (ref: string) => string): unknown {
  if (t.kind === 'ref') return id(String(v));
  if (t.kind === 'set' && refy(t.of)) return (v as unknown[]).map((x) => mapRefs(t.of, x, id)).filter((x) => x !== NULL_REF);
  if (t.kind === 'map' && refy(t) && v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const key = String(mapRefs(t.key, k, id));
      if (key !== NULL_REF) out[key] = mapRefs(t.value, x, id);
    }
    return out;
  }
  return v;
}

function snapshotXml(cls: string, rec: DbRecord, id: (ref: string) => string, patch: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const f of getClass(cls)!.fields) out[f.name] = mapRefs(f.type, rec[f.name], id);
  Object.assign(out, patch);
  return toXml(parseType(`${cls} record`), out);
}

const member = (name: string, valueXml: string): string => `<member><name>${escapeXml(name)}</name>${valueXml}</member>`;
const str = (s: string): string => `<value>${escapeXml(s)}</value>`;
const int = (n: number): string => `<value><int>${Math.trunc(n)}</int></value>`;

function versionXml(services: Services): string {
  const host = services.store.must('host', services.hostRef());
  const sv = host.software_version as Record<string, string>;
  return `<value><struct>${[
    member('hostname', str(String(host.hostname))),
    member('date', str(sv.date ?? formatDateTime(new Date()).slice(0, 8))),
    member('product_version', str(sv.product_version ?? '0.1.0')),
    member('product_brand', str(sv.product_brand ?? 'Xenon')),
    member('build_number', str(sv.build_number ?? '')),
    member('xapi_major', int(Number(host.API_version_major) || 2)),
    member('xapi_minor', int(Number(host.API_version_minor) || 0)),
    member('export_vsn', int(EXPORT_VSN)),
  ].join('')}</struct></value>`;
}

interface ExportDisk {
  prefix: string;
  vdi: string;
  src: DiskSource;
  size: number;
}

/**
 * ova.xml for one VM, and the disks to stream after it. Ids are given in
 * xapi's walk order: the VM, each VIF and its network, each VBD with its
 * VDI and that VDI's SR.
 */
async function exportPlan(services: Services, storage: Storage, vmRef: string): Promise<{ xml: string; disks: ExportDisk[] }> {
  const { store } = services;
  const vm = store.must('VM', vmRef);
  const table = new Map<string, string>();
  const add = (r: unknown): void => {
    const ref = String(r);
    if (ref !== NULL_REF && !table.has(ref)) table.set(ref, `Ref:${table.size}`);
  };
  add(vmRef);
  const vifs = (vm.VIFs as string[]).filter((r) => store.get('VIF', r));
  for (const r of vifs) {
    add(r);
    if (store.get('network', String(store.must('VIF', r).network))) add(store.must('VIF', r).network);
  }
  const vbds = (vm.VBDs as string[]).filter((r) => store.get('VBD', r));
  for (const r of vbds) {
    add(r);
    const vbd = store.must('VBD', r);
    const vdi = store.get('VDI', String(vbd.VDI));
    if (vbd.empty !== true && vdi) {
      add(vbd.VDI);
      add(vdi.SR);
    }
  }
  const id = (ref: string): string => table.get(ref) ?? NULL_REF;
  const ofClass = (cls: string): string[] => [...table.keys()].filter((r) => store.getAny(cls, r));

  // the disks to stream: not CDs, not on ISO SRs (as xapi); opened now so that ova.xml states their true sizes
  const disks: ExportDisk[] = [];
  try {
    for (const r of vbds) {
      const vbd = store.must('VBD', r);
      const vdi = store.get('VDI', String(vbd.VDI));
      if (vbd.type === 'CD' || vbd.empty === true || !vdi || disks.some((d) => d.vdi === vbd.VDI)) continue;
      if (store.get('SR', String(vdi.SR))?.content_type === 'iso') continue;
      const driver = storage.attachedDriver(String(vdi.SR));
      const info = await driver.info(String(vdi.uuid));
      const src = await openDiskSource(driver.path(String(vdi.uuid)), info.format);
      disks.push({ prefix: id(String(vbd.VDI)), vdi: String(vbd.VDI), src, size: src.size });
    }
  } catch (e) {
    for (const d of disks) await d.src.close().catch(() => undefined);
    throw e;
  }
  const sizeOf = new Map(disks.map((d) => [d.vdi, d.size]));

  const never = { current_operations: {}, allowed_operations: [] };
  const objects: string[] = [];
  const obj = (cls: string, ref: string, patch: Record<string, unknown>): void => {
    objects.push(`<value><struct>${member('class', str(cls))}${member('id', str(id(ref)))}${member('snapshot', snapshotXml(cls, store.mustAny(cls, ref), id, patch))}</struct></value>`);
  };
  for (const r of ofClass('VM')) {
    obj('VM', r, {
      ...never, power_state: 'Halted', suspend_VDI: NULL_REF, is_a_snapshot: false, snapshot_of: NULL_REF, snapshots: [], snapshot_time: '19700101T00:00:00Z',
      transportable_snapshot_id: '', parent: NULL_REF, children: [], crash_dumps: [], consoles: [], metrics: NULL_REF, guest_metrics: NULL_REF, blobs: [], resident_on: NULL_REF,
      scheduled_to_be_resident_on: NULL_REF, protection_policy: NULL_REF, domid: -1,
    });
  }
  for (const r of ofClass('VBD')) obj('VBD', r, { ...never, currently_attached: false, metrics: NULL_REF });
  for (const r of ofClass('VIF')) obj('VIF', r, { ...never, currently_attached: false, metrics: NULL_REF });
  for (const r of ofClass('network')) obj('network', r, { ...never, PIFs: [] });
  for (const r of ofClass('VDI')) obj('VDI', r, { ...never, crash_dumps: [], ...(sizeOf.has(r) ? { virtual_size: sizeOf.get(r) } : {}) });
  for (const r of ofClass('SR')) obj('SR', r, { ...never, PBDs: [] });
  const xml = `<value><struct>${member('version', versionXml(services))}${member('objects', `<value><array><data>${objects.join('')}</data></array></value>`)}</struct></value>`;
  return { xml, disks };
}

// ------------------------------------------------------------------ GET /export

export function exportVm(services: Services, storage: Storage) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    const q = url.searchParams;
    let session: SessionInfo;
    let task: Task;
    let vm: string;
    try {
      session = authorize(services, req, url);
      const given = q.get('ref') ?? q.get('uuid') ?? '';
      const found = services.store.get('VM', given) ? given : services.store.byUuid('VM', given);
      if (!found) throw new XenApiError('HANDLE_INVALID', 'VM', given);
      vm = found;
      task = taskOf(services, url, 'VM.export', session);
    } catch (e) {
      return fail(res, toApiError(e));
    }
    const compression = q.get('use_compression') ?? q.get('compress') ?? 'false';
    try {
      if (!['true', 'gzip', 'false', ''].includes(compression)) throw new XenApiError('INVALID_VALUE', 'use_compression', compression);
      // no coalesce or snapshot restructures the disks' chains while they stream
      await storage.usingImagesOf(storage.srsOfVm(vm), () => withOperation(services, vm, 'export', task.ref, async () => {
        const { xml, disks } = await exportPlan(services, storage, vm);
        const total = disks.reduce((a, d) => a + d.size, 0);
        let done = 0;
        const progress = (n: number): void => {
          done += n;
          if (total > 0) task.progress(Math.min(0.99, done / total));
        };
        async function* xva(): AsyncGenerator<Buffer> {
          try {
            yield* tarMember(OVA_XML, Buffer.from(xml, 'utf8'));
            for (const d of [...disks].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0))) yield* diskMembers(d.prefix, d.src, d.size, progress);
            yield tarEnd();
          } finally {
            for (const d of disks) await d.src.close().catch(() => undefined);
          }
        }
        res.writeHead(200, {
          'Content-Type': 'application/octet-stream',
          'Content-Disposition': 'attachment; filename="export.xva"',
          'task-id': task.ref,
        });
        const source = Readable.from(xva(), { objectMode: false, highWaterMark: 4 * 1024 * 1024 });
        if (compression === 'true' || compression === 'gzip') await pipeline(source, createGzip(), res);
        else await pipeline(source, res);
      }));
      finishTask(services, task, '');
    } catch (e) {
      const err = toApiError(storageError(e));
      finishTask(services, task, '', err);
      fail(res, err);
    }
  };
}

// ------------------------------------------------------------------ PUT /import

interface Obj {
  cls: string;
  id: string;
  snapshot: Record<string, unknown>;
}

function parseHeader(xml: string): Obj[] {
  let v: unknown;
  try {
    v = decodeValue(xml.replace(/^\s*<\?xml[^>]*\?>/, ''));
  } catch (e) {
    throw new XenApiError('IMPORT_ERROR', `ova.xml is not XML-RPC: ${(e as Error).message}`);
  }
  const h = v as { version?: unknown; objects?: unknown };
  if (!h || typeof h !== 'object' || !Array.isArray(h.objects) || typeof h.version !== 'object') {
    throw new XenApiError('IMPORT_ERROR', 'ova.xml is not an XVA header (a struct with version and objects): old-style XVAs are not supported');
  }
  return h.objects.map((o) => {
    const x = o as { class?: unknown; id?: unknown; snapshot?: unknown };
    if (typeof x?.class !== 'string' || typeof x.id !== 'string' || !x.snapshot || typeof x.snapshot !== 'object') throw new XenApiError('IMPORT_ERROR', 'ova.xml: malformed object');
    return { cls: x.class, id: x.id, snapshot: x.snapshot as Record<string, unknown> };
  });
}

/** The fields a new record takes over from an exported one: everything set by clients, no references. */
function configFields(cls: string, snap: Record<string, unknown>, skip: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of getClass(cls)!.fields) {
    if (f.qualifier === 'RO/runtime' || f.name === 'uuid' || refy(f.type) || skip.includes(f.name) || !(f.name in snap)) continue;
    try {
      out[f.name] = unmarshal(f.type, snap[f.name], f.name);
    } catch {
      // a value this toolstack cannot hold (an enum of a newer xapi…): the default will do
    }
  }
  return out;
}

interface Created {
  vms: string[];
  vdis: string[];
  /** The request body being read, to drain after a failure. */
  body?: ByteReader;
}

/**
 * Reads the rest of a failed upload, so the reply reaches the client and the
 * connection stays usable. The body's async iterator holds the stream in
 * paused mode, where resume() alone would not drain it.
 */
async function drainBody(req: http.IncomingMessage, made: Created): Promise<void> {
  if (made.body) await made.body.drain().catch(() => undefined);
  if (!req.readableEnded) {
    req.removeAllListeners('readable');
    req.resume();
  }
}

async function cleanup(services: Services, session: SessionInfo, made: Created): Promise<void> {
  const { store } = services;
  for (const vm of made.vms) {
    const rec = store.get('VM', vm);
    if (!rec) continue;
    store.transact((tx) => {
      for (const r of rec.VBDs as string[]) if (tx.get('VBD', r)) tx.delete('VBD', r);
      for (const r of rec.VIFs as string[]) if (tx.get('VIF', r)) tx.delete('VIF', r);
      if (tx.get('VM_metrics', String(rec.metrics))) tx.delete('VM_metrics', String(rec.metrics));
      tx.delete('VM', vm);
    });
  }
  const ctx = callContext(services, session);
  for (const vdi of made.vdis) {
    if (store.get('VDI', vdi)) await destroyVdi(ctx, vdi).catch((err: unknown) => services.log.warn({ err, vdi }, 'import cleanup: could not destroy a VDI'));
  }
}

/** A source that reads the request body, gunzipping it if it starts like gzip. */
async function* bodyOf(req: http.IncomingMessage): AsyncGenerator<Buffer> {
  const it = uploadOf(req).body[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const head = first.value as Buffer;
  const rest = (async function* () {
    yield head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value as Buffer;
    }
  })();
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = createGunzip();
    const feeding = pipeline(Readable.from(rest), gunzip).catch((e: unknown) => gunzip.destroy(e as Error));
    yield* gunzip as AsyncIterable<Buffer>;
    await feeding;
  } else yield* rest;
}

async function importXva(services: Services, storage: Storage, session: SessionInfo, task: Task, req: http.IncomingMessage, url: URL, made: Created): Promise<string[]> {
  const { store } = services;
  const q = url.searchParams;
  const restore = q.get('restore') === 'true';
  const force = q.get('force') === 'true';

  // the target SR: sr_id, sr_uuid, or the pool's default
  const srGiven = q.get('sr_id') ?? '';
  let sr: string;
  if (srGiven && srGiven !== NULL_REF) {
    if (!store.get('SR', srGiven)) throw new XenApiError('HANDLE_INVALID', 'SR', srGiven);
    sr = srGiven;
  } else if (q.get('sr_uuid')) {
    sr = store.byUuid('SR', q.get('sr_uuid')!) ?? '';
    if (!sr) throw new XenApiError('UUID_INVALID', 'SR', q.get('sr_uuid')!);
  } else {
    sr = String(store.must('pool', services.poolRef()).default_SR);
    if (!store.get('SR', sr)) throw new XenApiError('DEFAULT_SR_NOT_FOUND', sr);
  }
  if (store.must('SR', sr).content_type === 'iso') throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
  storage.attachedDriver(sr);

  made.body = new ByteReader(bodyOf(req));
  const tar = new TarReader(made.body);
  const first = await tar.next();
  if (!first) throw new XenApiError('IMPORT_ERROR_PREMATURE_EOF');
  if (first.name !== OVA_XML) throw new XenApiError('IMPORT_ERROR_UNEXPECTED_FILE', OVA_XML, first.name);
  if (first.size > 64 * 1024 * 1024) throw new XenApiError('IMPORT_ERROR', 'ova.xml is too large');
  const objects = parseHeader((await tar.data()).toString('utf8'));
  const byId = new Map(objects.map((o) => [o.id, o]));
  const vms = objects.filter((o) => o.cls === 'VM');
  if (vms.length === 0) throw new XenApiError('IMPORT_ERROR', 'the archive holds no VM');
  if (restore) {
    for (const v of vms) {
      const existing = store.byUuid('VM', String(v.snapshot.uuid));
      if (existing) throw new XenApiError('DUPLICATE_VM', existing);
    }
  }

  // disks: those of non-CD VBDs, not on ISO SRs — exactly the ones the exporter streams
  const vmIds = new Set(vms.map((v) => v.id));
  const vbds = objects.filter((o) => o.cls === 'VBD' && vmIds.has(String(o.snapshot.VM)));
  const streamed = new Map<string, Obj>();
  for (const vbd of vbds) {
    const vdi = byId.get(String(vbd.snapshot.VDI));
    if (vbd.snapshot.type === 'CD' || !vdi || vdi.cls !== 'VDI') continue;
    const srObj = byId.get(String(vdi.snapshot.SR));
    if (srObj?.snapshot.content_type === 'iso') continue;
    streamed.set(vdi.id, vdi);
  }
  const ctx = callContext(services, session);
  const vdiOf = new Map<string, string>();
  for (const [id, v] of streamed) {
    const size = Math.ceil(Number(v.snapshot.virtual_size) / 512) * 512;
    if (!Number.isFinite(size) || size <= 0) throw new XenApiError('IMPORT_ERROR', `disk ${id} has no size`);
    const fields = configFields('VDI', v.snapshot, ['virtual_size', 'sm_config']);
    const ref = await createVdi(ctx, sr, size, fields);
    made.vdis.push(ref);
    vdiOf.set(id, ref);
  }

  // the VMs, their VBDs and VIFs, in one transaction; marked as being imported until the disks are in
  const networks = store.where('network', () => true);
  const networkFor = (id: string): string | undefined => {
    const n = byId.get(id)?.snapshot;
    const bridge = n && String(n.bridge ?? '');
    const label = n && String(n.name_label ?? '');
    return (bridge ? networks.find(([, r]) => r.bridge === bridge) : undefined)?.[0]
      ?? (label ? networks.find(([, r]) => r.name_label === label) : undefined)?.[0]
      ?? networks[0]?.[0];
  };
  const vmOf = new Map<string, string>();
  store.transact((tx) => {
    for (const v of vms) {
      const metrics = tx.create('VM_metrics', {});
      const fields: Record<string, unknown> = {
        ...configFields('VM', v.snapshot, ['power_state']),
        power_state: 'Halted', metrics, current_operations: { [task.ref]: 'import' }, allowed_operations: [],
      };
      if (restore && typeof v.snapshot.uuid === 'string') fields.uuid = v.snapshot.uuid;
      const ref = tx.create('VM', fields);
      made.vms.push(ref);
      vmOf.set(v.id, ref);
    }
    for (const vbd of vbds) {
      const s = vbd.snapshot;
      let vdi = vdiOf.get(String(s.VDI));
      if (!vdi && s.type === 'CD') {
        // a CD keeps its medium if this host has it (same VDI uuid), else the drive comes empty
        const uuid = byId.get(String(s.VDI))?.snapshot.uuid;
        vdi = typeof uuid === 'string' ? store.byUuid('VDI', uuid) : undefined;
      }
      tx.create('VBD', {
        ...configFields('VBD', s),
        VM: vmOf.get(String(s.VM)), VDI: vdi ?? NULL_REF, empty: vdi === undefined, currently_attached: false,
      });
    }
    for (const vif of objects.filter((o) => o.cls === 'VIF' && vmOf.has(String(o.snapshot.VM)))) {
      const network = networkFor(String(vif.snapshot.network));
      if (!network) {
        services.log.warn({ vif: vif.id }, 'import: no network on this host for a VIF; left out');
        continue;
      }
      tx.create('VIF', { ...configFields('VIF', vif.snapshot), VM: vmOf.get(String(vif.snapshot.VM)), network, currently_attached: false });
    }
  });

  // the disks' data, written into the new images
  const opened = new Map<string, Vhd>();
  const targets: DiskTarget[] = [...streamed.keys()].map((id) => {
    const vdi = vdiOf.get(id)!;
    const rec = store.must('VDI', vdi);
    const path = storage.attachedDriver(sr).path(String(rec.uuid));
    return {
      prefix: id,
      size: Number(rec.virtual_size),
      write: async (offset, data) => {
        let vhd = opened.get(id);
        if (!vhd) {
          vhd = await Vhd.open(path, { writable: true });
          opened.set(id, vhd);
        }
        await vhd.write(offset, data);
      },
    };
  });
  const total = targets.reduce((a, d) => a + d.size, 0);
  let done = 0;
  try {
    await receiveDisks(tar, targets, {
      force,
      progress: (n) => {
        done += n;
        if (total > 0) task.progress(Math.min(0.99, done / total));
      },
    });
  } finally {
    for (const vhd of opened.values()) await vhd.close().catch(() => undefined);
  }
  for (const vdi of vdiOf.values()) await storage.refreshVolume(vdi);
  await storage.update(sr);
  for (const vm of made.vms) {
    store.transact((tx) => tx.update('VM', vm, { current_operations: {} }));
    refreshAllowed(services, vm);
  }
  return made.vms.filter((r) => store.get('VM', r)?.is_a_snapshot !== true);
}

export function importVm(services: Services, storage: Storage) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    if (req.method !== 'PUT' && req.method !== 'POST') {
      discardBody(req);
      return fail(res, new XenApiError('OPERATION_NOT_ALLOWED', `${req.method ?? ''} /import: send the XVA with PUT`));
    }
    let session: SessionInfo;
    let task: Task;
    try {
      session = authorize(services, req, url);
      // an empty PUT is a probe (Xen Orchestra sends one first): answer, change nothing
      if (req.headers['content-length'] === '0') {
        const given = url.searchParams.get('task_id');
        if (given && services.store.get('task', given)?.status === 'pending') services.tasks.succeed(given, '');
        res.writeHead(200).end();
        return;
      }
      task = taskOf(services, url, 'VM.import', session);
    } catch (e) {
      discardBody(req);
      return fail(res, toApiError(e));
    }
    const made: Created = { vms: [], vdis: [] };
    // a client that does not know the length waits for the reply before it sends: answer first, as xapi does
    if (announcedLength(req) === undefined) res.writeHead(200, { 'Content-Type': 'text/plain', 'task-id': task.ref }).flushHeaders();
    try {
      const vms = await importXva(services, storage, session, task, req, url, made);
      const result = toXml(parseType('VM ref set'), vms);
      finishTask(services, task, result);
      await drainBody(req, made);
      if (!res.headersSent) res.writeHead(200, { 'Content-Type': 'text/plain', 'task-id': task.ref });
      res.end(`${vms.join(',')}\n`);
    } catch (e) {
      const err = xvaError(e);
      if (err.code === 'INTERNAL_ERROR') services.log.error({ err: e }, 'VM import failed');
      await cleanup(services, session, made);
      finishTask(services, task, '', err);
      await drainBody(req, made);
      fail(res, err);
    }
  };
}

