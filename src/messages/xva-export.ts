/** GET /export: a VM as an XVA stream (ova.xml, then each disk's chunks with checksums), gzipped on request. */
import type http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import type { SessionInfo } from '../auth/sessions.ts';
import { diskMembers, OVA_XML, tarArchive, type TarMember } from '../storage/xva/index.ts';
import type { Services } from './context.ts';
import { storageError, type Storage } from './sr-drivers.ts';
import { withOperation } from './vm-operations.ts';
import { authorize, finishTask, taskOf, type HttpTask } from './http-handlers.ts';
import { fail } from './http-transfer.ts';
import { exportPlan } from './xva-records.ts';

// ------------------------------------------------------------------ GET /export

export function exportVm(services: Services, storage: Storage) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    const q = url.searchParams;
    let session: SessionInfo;
    let task: HttpTask;
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
        async function* members(): AsyncGenerator<TarMember> {
          try {
            yield { name: OVA_XML, data: Buffer.from(xml, 'utf8') };
            for (const d of [...disks].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0))) yield* diskMembers(d.prefix, d.src, d.size, progress);
          } finally {
            for (const d of disks) await d.src.close().catch(() => undefined);
          }
        }
        res.writeHead(200, {
          'Content-Type': 'application/octet-stream',
          'Content-Disposition': 'attachment; filename="export.xva"',
          'task-id': task.ref,
        });
        const source = Readable.from(tarArchive(members()), { objectMode: false, highWaterMark: 4 * 1024 * 1024 });
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

