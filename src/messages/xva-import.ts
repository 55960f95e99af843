/**
 * PUT /import: an XVA (gzipped or not) into new VMs, VBDs, VIFs and VDIs on
 * the chosen SR; checksums checked unless force=true; a failed import leaves
 * nothing behind. The task's result is the new VMs' refs, as XML-RPC.
 */
import type http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import { MESSAGES } from '../datamodel/model.ts';
import { NULL_REF, parseType } from '../datamodel/types.ts';
import type { SessionInfo } from '../auth/sessions.ts';
import { toXml } from '../wire/marshal.ts';
import { XmlRpcParseError } from '../wire/xmlrpc.ts';
import { isVhdError, Vhd } from '../storage/vhd/index.ts';
import { OVA_XML, receiveDisks, TarError, TarReader, XvaError, type DiskTarget } from '../storage/xva/index.ts';
import type { CallContext, Services } from './context.ts';
import { storageError, type Storage } from './sr-drivers.ts';
import { createVdi, destroyVdi } from './vdi.ts';
import { refreshAllowed } from './vm-operations.ts';
import { authorize, finishTask, taskOf, type HttpTask } from './http-handlers.ts';
import { announcedLength, discardBody, fail, uploadOf } from './http-transfer.ts';
import { configFields, parseHeader, type Obj } from './xva-records.ts';

type Task = HttpTask;

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

interface Created {
  vms: string[];
  vdis: string[];
  /** The request body being read as a tar, to drain after a failure. */
  body?: TarReader;
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
  storage.imageDriver(sr);

  const tar = new TarReader(bodyOf(req));
  made.body = tar;
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
    const path = storage.imageDriver(sr).path(String(rec.uuid));
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

