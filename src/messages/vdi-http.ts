/**
 * PUT /import_raw_vdi and GET /export_raw_vdi (format=raw|vhd, base= for a
 * delta), as xapi offers them: authenticated by session_id, tracked by a
 * task whose progress moves, streamed without holding a disk in memory.
 * A raw upload is written over the disk from offset 0 and the disk keeps its
 * size; uploads to one VDI run one after the other.
 */
import { randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import type http from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import { importVhd, isVhdError } from '../storage/vhd/index.ts';
import { overwriteRaw, VolumeOverflowError } from '../storage/sr/file.ts';
import type { SrDriver, VolumeInfo } from '../storage/sr/driver.ts';
import type { Services } from './context.ts';
import { authorize, finishTask, taskOf, type HttpTask } from './http-handlers.ts';
import { announcedLength, discardBody, fail, KeyedQueue, UploadCutError, uploadOf } from './http-transfer.ts';
import { storageError, type Storage } from './sr-drivers.ts';
import { exportSource } from './vdi-export-source.ts';
import { transferError, writeImage } from './vdi-import-sink.ts';

interface Ctx {
  vdi: string;
  task: HttpTask;
}

/** The VDI named by `vdi=` (a reference or a uuid). */
function vdiOf(services: Services, url: URL, param = 'vdi'): string {
  const given = url.searchParams.get(param) ?? '';
  if (!given) throw new XenApiError('HANDLE_INVALID', 'VDI', `no ${param}= in the query`);
  const vdi = services.store.get('VDI', given) ? given : services.store.byUuid('VDI', given);
  if (!vdi) throw new XenApiError('HANDLE_INVALID', 'VDI', given);
  return vdi;
}

/** Session, role, VDI and task from the query string. */
function open(services: Services, req: http.IncomingMessage, url: URL, label: string): Ctx {
  const session = authorize(services, req, url);
  const vdi = vdiOf(services, url);
  return { vdi, task: taskOf(services, url, label, session) };
}

/** Counts bytes through a stream, moving the task's progress. */
function progressCounter(total: number, task: HttpTask): Transform {
  let seen = 0;
  let last = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      const f = total > 0 ? Math.min(1, seen / total) : 0;
      if (f - last >= 0.01) {
        last = f;
        task.progress(f);
      }
      cb(null, chunk);
    },
  });
}

/** What a failed transfer tells the client. */
function formatOf(url: URL): 'raw' | 'vhd' {
  const format = url.searchParams.get('format') ?? 'raw';
  if (format !== 'raw' && format !== 'vhd') throw new XenApiError('INVALID_VALUE', 'format', `${format} (raw or vhd)`);
  return format;
}

async function volumeOf(driver: SrDriver, uuid: string, vdi: string): Promise<VolumeInfo> {
  try {
    return await driver.info(uuid);
  } catch (e) {
    throw storageError(e, vdi);
  }
}

/** Uploads in progress, by VDI, across every server of this process. */
const uploads = new KeyedQueue();

export function importRawVdi(services: Services, storage: Storage) {
  /** Writes the upload into the VDI; `announced` runs once the upload is accepted, before it is read. */
  async function receive(vdi: string, req: http.IncomingMessage, url: URL, task: HttpTask, announced: () => void): Promise<void> {
    const rec = services.store.must('VDI', vdi);
    const uuid = String(rec.uuid);
    const sr = String(rec.SR);
    const host = storage.storageHost(sr);
    // an image of a member's local SR: the bytes are relayed to the member, which writes them
    const pool = host !== services.hostRef() ? services.pool : undefined;
    const driver = pool ? storage.attachedDriver(sr) : storage.imageDriver(sr);
    if (!driver.capabilities.includes('VDI_CREATE')) throw new XenApiError('SR_OPERATION_NOT_SUPPORTED', sr);
    if (rec.read_only === true) throw new XenApiError('VDI_READONLY', vdi);
    if (storage.inUse(vdi)) throw new XenApiError('VDI_IN_USE', vdi, 'import');
    const format = formatOf(url);
    const volume = await volumeOf(driver, uuid, vdi);
    if (volume.format === 'qcow2' && format === 'vhd') throw new XenApiError('VDI_INCOMPATIBLE_TYPE', vdi, 'qcow2 (import it with format=raw)');
    const upload = uploadOf(req);
    announced();
    const input = pipelineOf(upload.body, progressCounter(upload.length ?? volume.virtualSize, task));
    // no coalesce or snapshot restructures the chain while it is written
    await storage.usingImages(sr, async () => {
      if (pool) await pool.importOn(host, { sr, uuid, format }, input);
      else await writeImage(driver, uuid, format, input);
      await storage.refreshVolume(vdi);
    });
    await storage.update(String(rec.SR));
  }

  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    if (req.method !== 'PUT' && req.method !== 'POST') {
      discardBody(req);
      return fail(res, new XenApiError('OPERATION_NOT_ALLOWED', `${req.method ?? ''} /import_raw_vdi: send the disk with PUT`));
    }
    let ctx: Ctx;
    try {
      ctx = open(services, req, url, 'VDI import');
    } catch (e) {
      discardBody(req);
      return fail(res, toApiError(e));
    }
    const { vdi, task } = ctx;
    // an empty PUT is a probe (Xen Orchestra sends one first): answer, change nothing
    if (req.headers['content-length'] === '0') {
      finishTask(services, task, '');
      discardBody(req);
      res.writeHead(200, { 'Content-Type': 'text/plain', 'task-id': task.ref }).end('OK\n');
      return;
    }
    try {
      await uploads.run(vdi, () =>
        receive(vdi, req, url, task, () => {
          // a client that does not know the length waits for the reply before it sends: answer first, as xapi does
          if (announcedLength(req) === undefined) res.writeHead(200, { 'Content-Type': 'text/plain', 'task-id': task.ref }).flushHeaders();
        }),
      );
      finishTask(services, task, '');
      if (!res.headersSent) res.writeHead(200, { 'Content-Type': 'text/plain', 'task-id': task.ref });
      res.end('OK\n');
    } catch (e) {
      const err = transferError(e, vdi);
      if (err.code === 'INTERNAL_ERROR') services.log.error({ err: e, vdi }, 'VDI import failed');
      finishTask(services, task, '', err);
      discardBody(req);
      fail(res, err);
    }
  };
}

/** A stream through a transform, as an async iterable (errors of either side surface). */
function pipelineOf(source: AsyncIterable<Buffer>, through: Transform): AsyncIterable<Buffer> {
  const done = pipeline(source, through);
  done.catch(() => undefined);
  return (async function* () {
    for await (const chunk of through as AsyncIterable<Buffer>) yield chunk;
    await done;
  })();
}

export function exportRawVdi(services: Services, storage: Storage) {
  /** The bytes to send and their length, if known; fails before anything is sent. */
  async function source(vdi: string, url: URL): Promise<{ stream: Readable; length?: number }> {
    const rec = services.store.must('VDI', vdi);
    const uuid = String(rec.uuid);
    const sr = String(rec.SR);
    const format = formatOf(url);
    const base = url.searchParams.get('base') ? String(services.store.must('VDI', vdiOf(services, url, 'base')).uuid) : undefined;
    if (base && services.store.must('VDI', services.store.byUuid('VDI', base)!).SR !== rec.SR) throw new XenApiError('VDI_INCOMPATIBLE_TYPE', base, 'base= must be a VDI of the same SR');
    const host = storage.storageHost(sr);
    // an image of a member's local SR: the member sends it, through the master
    if (host !== services.hostRef() && services.pool) {
      storage.attachedDriver(sr);
      return services.pool.exportOn(host, { sr, uuid, format, ...(base ? { base } : {}) });
    }
    return exportSource(storage.imageDriver(sr), uuid, vdi, format, base);
  }

  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    let ctx: Ctx;
    try {
      ctx = open(services, req, url, 'VDI export');
    } catch (e) {
      return fail(res, toApiError(e));
    }
    const { vdi, task } = ctx;
    try {
      // the image is opened and read while no coalesce or snapshot restructures its chain
      await storage.usingImages(String(services.store.must('VDI', vdi).SR), async () => {
        const { stream, length } = await source(vdi, url);
        const total = length ?? Number(services.store.must('VDI', vdi).virtual_size);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'task-id': task.ref, ...(length !== undefined ? { 'Content-Length': String(length) } : {}) });
        await pipeline(stream, progressCounter(total, task), res);
      });
      finishTask(services, task, '');
    } catch (e) {
      const err = transferError(e, vdi);
      if (err.code === 'INTERNAL_ERROR') services.log.error({ err: e, vdi }, 'VDI export failed');
      finishTask(services, task, '', err);
      fail(res, err);
    }
  };
}
