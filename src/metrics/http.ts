/**
 * xapi's statistics handlers: GET /rrd_updates (rows since a time, xport
 * XML or JSON), GET /host_rrd and GET /vm_rrd?uuid= (whole RRDs). Each
 * authorises through its declared HTTP action (read-only, as xapi).
 */
import type http from 'node:http';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from '../messages/context.ts';
import { authorize } from '../messages/http-handlers.ts';
import type { Cf, Rrd } from './rrd.ts';
import { rrdJson, rrdXml } from './rrd-xml.ts';
import type { Metrics } from './service.ts';
import { exportRows, xportJsonChunks, xportXmlChunks, type Export } from './xport.ts';

const CFS: readonly string[] = ['AVERAGE', 'MIN', 'MAX'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** As xapi: an Accept header that prefers JSON to XML, else a `json` parameter of any value. */
export function wantsJson(req: http.IncomingMessage, url: URL): boolean {
  const accept = req.headers.accept;
  if (accept) {
    const q = (mime: string): number => {
      for (const part of accept.split(',')) {
        const [type, ...params] = part.trim().split(';');
        if (type?.trim() !== mime && type?.trim() !== '*/*') continue;
        const qp = params.find((p) => p.trim().startsWith('q='));
        return qp ? Number(qp.trim().slice(2)) || 0 : 1;
      }
      return -1;
    };
    const json = q('application/json');
    const xml = q('text/xml');
    if (json !== xml && (json > 0 || xml > 0)) return json > xml;
  }
  return url.searchParams.has('json');
}

function intParam(url: URL, name: string, fallback?: number): number {
  const raw = url.searchParams.get(name);
  if (raw === null && fallback !== undefined) return fallback;
  if (raw === null || !/^-?\d{1,15}$/.test(raw.trim())) throw new XenApiError('INVALID_VALUE', name, (raw ?? '').slice(0, 40));
  return Number(raw.trim());
}

const headers = (json: boolean): http.OutgoingHttpHeaders => ({
  'Content-Type': json ? 'application/json' : 'text/xml',
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Headers': 'X-Requested-With',
});

function send(res: http.ServerResponse, json: boolean, body: string): void {
  res.writeHead(200, { ...headers(json), 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * A large reply written a piece at a time (chunked), giving the event loop
 * back between pieces and waiting while the client is slow to read; a
 * client that goes away stops it.
 */
async function stream(res: http.ServerResponse, json: boolean, chunks: Iterable<string>): Promise<void> {
  res.writeHead(200, headers(json));
  let since = 0;
  for (const chunk of chunks) {
    if (res.destroyed) return;
    since += chunk.length;
    if (!res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = (): void => { res.off('drain', done); res.off('close', done); resolve(); };
        res.on('drain', done);
        res.on('close', done);
      });
    } else if (since > 64 * 1024) {
      since = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  res.end();
}

/** Nothing to export (no host asked for, no VM running): no rows rather than an error. */
function empty(start: number, interval: number, now: number): Export {
  const step = Math.max(5, interval);
  const end = Math.floor(now / step) * step;
  return { start: start < 0 ? end + start : start, step, end, legend: [], times: [], values: () => [] };
}

/** GET /rrd_updates?start=&cf=&interval=&host=true&vm_uuid=…&json */
export function rrdUpdates(services: Services, metrics: Metrics) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    authorize(services, req, url);
    const start = intParam(url, 'start');
    const interval = Math.max(0, intParam(url, 'interval', 0));
    const cfParam = url.searchParams.get('cf');
    const cf = cfParam && CFS.includes(cfParam) ? (cfParam as Cf) : undefined;
    const vmUuids = url.searchParams.getAll('vm_uuid');
    const sources = metrics.exportable({ host: url.searchParams.get('host') === 'true', vmUuids: vmUuids.length ? vmUuids : undefined });
    const e = sources.length ? exportRows(sources, start, interval, cf) : empty(start, interval, Date.now() / 1000);
    const json = wantsJson(req, url);
    await stream(res, json, json ? xportJsonChunks(e) : xportXmlChunks(e));
  };
}

function sendRrd(req: http.IncomingMessage, res: http.ServerResponse, url: URL, rrd: Rrd): void {
  const json = wantsJson(req, url);
  send(res, json, json ? rrdJson(rrd) : rrdXml(rrd));
}

/** GET /host_rrd: this host's whole RRD. */
export function hostRrd(services: Services, metrics: Metrics) {
  return (req: http.IncomingMessage, res: http.ServerResponse, url: URL): void => {
    authorize(services, req, url);
    const rrd = metrics.rrdOf({ kind: 'host', uuid: metrics.hostUuid() });
    if (!rrd) throw new XenApiError('HANDLE_INVALID', 'host', metrics.hostUuid());
    sendRrd(req, res, url, rrd);
  };
}

/** GET /vm_rrd?uuid=: a running VM's RRD, or a stopped one's archive. */
export function vmRrd(services: Services, metrics: Metrics) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    authorize(services, req, url);
    const uuid = url.searchParams.get('uuid') ?? '';
    if (!UUID.test(uuid) || !services.store.byUuid('VM', uuid)) throw new XenApiError('UUID_INVALID', 'VM', uuid.slice(0, 64));
    const rrd = metrics.rrdOf({ kind: 'vm', uuid }) ?? (await metrics.archived(uuid));
    if (!rrd) throw new XenApiError('HANDLE_INVALID', 'VM', uuid);
    sendRrd(req, res, url, rrd);
  };
}
