/**
 * PUT /import_raw_vdi and GET /export_raw_vdi (format=raw|vhd, base= for a
 * delta), as xapi offers them: authenticated by session_id, tracked by a
 * task whose progress moves, streamed without holding a disk in memory.
 */
import { rename, rm } from 'node:fs/promises';
import type http from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import { exportVhd, importVhd, isVhdError } from '../storage/vhd/index.ts';
import { exportVolumeRaw, importVolumeRaw } from '../storage/sr/file.ts';
import type { Services } from './context.ts';
import { authorize, failHttp, finishTask, sessionIdOf, taskOf, type HttpTask } from './http-handlers.ts';
import { storageError, type Storage } from './sr-drivers.ts';

interface Ctx {
  vdi: string;
  task: HttpTask;
}

/** Session, role, VDI (ref or uuid) and task from the query string. */
function open(services: Services, req: http.IncomingMessage, url: URL, label: string): Ctx {
  const session = authorize(services, req, url);
  const given = url.searchParams.get('vdi') ?? '';
  const vdi = services.store.get('VDI', given) ? given : services.store.byUuid('VDI', given);
  if (!vdi) throw new XenApiError('HANDLE_INVALID', 'VDI', given);
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

export function importRawVdi(services: Services, storage: Storage) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    if (req.method !== 'PUT' && req.method !== 'POST') return failHttp(res, 405, new XenApiError('OPERATION_NOT_ALLOWED', 'use PUT'));
    const length = Number(req.headers['content-length'] ?? -1);
    let ctx: Ctx;
    try {
      // an empty PUT is a probe (Xen Orchestra sends one first): answer, change nothing
      if (length === 0) {
        services.sessions.check(sessionIdOf(req, url));
        res.writeHead(200).end();
        return;
      }
      ctx = open(services, req, url, 'VDI import');
    } catch (e) {
      req.resume();
      return failHttp(res, 403, toApiError(e));
    }
    const { vdi, task } = ctx;
    const rec = services.store.must('VDI', vdi);
    const driver = storage.attachedDriver(String(rec.SR));
    const tmp = `${driver.path(String(rec.uuid))}.import`;
    try {
      // no coalesce or snapshot restructures the chain while it is written
      await storage.usingImages(String(rec.SR), async () => {
        if (storage.inUse(vdi)) throw new XenApiError('VDI_IN_USE', vdi, 'import');
        const format = url.searchParams.get('format') ?? 'raw';
        const qcow2 = (await driver.info(rec.uuid)).format === 'qcow2';
        if (qcow2 && format === 'vhd') throw new XenApiError('VDI_INCOMPATIBLE_TYPE', vdi, 'qcow2 (import it with format=raw)');
        const size = length > 0 ? length : Number(rec.virtual_size);
        const input = req.pipe(progressCounter(size, task));
        if (format === 'vhd') await importVhd(input, tmp);
        else if (format === 'raw') await importVolumeRaw(input, tmp, size);
        else throw new XenApiError('INVALID_VALUE', 'format', format);
        await rename(tmp, driver.path(String(rec.uuid)));
        await storage.refreshVolume(vdi);
      });
      const after = services.store.must('VDI', vdi);
      services.store.transact((tx) => tx.update('VDI', vdi, { virtual_size: Math.max(Number(after.virtual_size), 0) }));
      await storage.update(String(rec.SR));
      finishTask(services, task, '');
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('OK\n');
    } catch (e) {
      await rm(tmp, { force: true });
      const err = isVhdError(e) ? new XenApiError('VDI_IO_ERROR', `${e.code}: ${e.message}`) : toApiError(storageError(e));
      finishTask(services, task, '', err);
      req.resume();
      failHttp(res, err.code === 'SR_FULL' ? 507 : 400, err);
    }
  };
}

export function exportRawVdi(services: Services, storage: Storage) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    let ctx: Ctx;
    try {
      ctx = open(services, req, url, 'VDI export');
    } catch (e) {
      return failHttp(res, 403, toApiError(e));
    }
    const { vdi, task } = ctx;
    const rec = services.store.must('VDI', vdi);
    try {
      const driver = storage.attachedDriver(String(rec.SR));
      const path = driver.path(String(rec.uuid));
      const format = url.searchParams.get('format') ?? 'raw';
      const baseGiven = url.searchParams.get('base');
      let stream;
      if (format === 'raw') {
        stream = exportVolumeRaw(path);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(rec.virtual_size) });
      } else if (format === 'vhd') {
        if (path.endsWith('.qcow2')) throw new XenApiError('VDI_INCOMPATIBLE_TYPE', vdi, 'qcow2 (export it with format=raw)');
        const baseRef = baseGiven ? (services.store.get('VDI', baseGiven) ? baseGiven : services.store.byUuid('VDI', baseGiven)) : undefined;
        if (baseGiven && !baseRef) throw new XenApiError('HANDLE_INVALID', 'VDI', baseGiven);
        const base = baseRef ? driver.path(String(services.store.must('VDI', baseRef).uuid)) : undefined;
        stream = exportVhd(path, { base });
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      } else throw new XenApiError('INVALID_VALUE', 'format', format);
      await storage.usingImages(String(rec.SR), () => pipeline(stream, progressCounter(Number(rec.virtual_size), task), res));
      finishTask(services, task, '');
    } catch (e) {
      const err = toApiError(storageError(e));
      finishTask(services, task, '', err);
      failHttp(res, 400, err);
    }
  };
}
