/**
 * VDI exports and imports of a member's local SR through the master: the
 * master serves GET /export_raw_vdi and PUT /import_raw_vdi (session, task,
 * progress, records) and has the member send or write the bytes over the
 * pool channel (GET and PUT /pool/vdi-transfer, pool secret, pinned
 * certificate); the member checks the SR and image against its own records,
 * as for `sr.volume.*`, and uses its own driver.
 */
import type http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RouteHandler } from '../api/http.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import type { ExportAsk, Services } from '../messages/context.ts';
import { exportSource } from '../messages/vdi-export-source.ts';
import { transferError, writeImage } from '../messages/vdi-import-sink.ts';
import { agentFor, answer, hasSecret, parseAddress, readBody, SECRET_HEADER, unwrap, type Peer } from './channel.ts';
import { knownVolume, ownSr } from './member-storage.ts';

export const TRANSFER_ROUTE = '/pool/vdi-transfer';
const LENGTH_HEADER = 'x-xenon-length';

/** The member's side: an image of its own SR sent (GET) or written (PUT), while nothing restructures the SR's chains here. */
export function memberTransferRoute(services: Services, secret: () => string): RouteHandler {
  return async (req, res, url) => {
    try {
      if (req.method !== 'GET' && req.method !== 'PUT') throw new XenApiError('INVALID_VALUE', 'method', 'GET or PUT');
      if (!hasSecret(req, secret())) throw new XenApiError('PERMISSION_DENIED', 'the pool secret is required');
      const storage = services.storage;
      if (!storage) throw new XenApiError('NOT_IMPLEMENTED', 'no storage on this host');
      const q = url.searchParams;
      const sr = ownSr(services, q.get('sr'));
      const uuid = knownVolume(services, sr, q.get('uuid'));
      const format = q.get('format');
      if (format !== 'raw' && format !== 'vhd') throw new XenApiError('INVALID_VALUE', 'format', String(format));
      const base = q.get('base') ? knownVolume(services, sr, q.get('base')) : undefined;
      const vdi = services.store.byUuid('VDI', uuid) ?? uuid;
      if (req.method === 'PUT') {
        if (base) throw new XenApiError('INVALID_VALUE', 'base', 'not for an import');
        await storage.usingImages(sr, () => writeImage(storage.driverFor(sr), uuid, format, req)).catch((e: unknown) => {
          throw transferError(e, vdi);
        });
        return answer(res, { result: null });
      }
      await storage.usingImages(sr, async () => {
        const { stream, length } = await exportSource(storage.driverFor(sr), uuid, vdi, format, base);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', ...(length !== undefined ? { [LENGTH_HEADER]: String(length) } : {}) });
        await pipeline(stream, res);
      });
    } catch (e) {
      if (req.method === 'PUT' && !req.complete) req.resume();
      answer(res, { error: e });
    }
  };
}

/** The master's side of an import: the upload relayed to the member; its answer, or the upload's own failure. */
export function remoteImport(peer: Peer, ask: Omit<ExportAsk, 'base'>, input: AsyncIterable<Buffer>): Promise<void> {
  const { host, port } = parseAddress(peer.address);
  const q = new URLSearchParams({ sr: ask.sr, uuid: ask.uuid, format: ask.format });
  return new Promise((resolve, reject) => {
    let failed: unknown;
    const req = https.request({ host, port, method: 'PUT', path: `${TRANSFER_ROUTE}?${q}`, agent: agentFor(peer.cert), headers: { [SECRET_HEADER]: peer.secret, 'Content-Type': 'application/octet-stream' } }, (res) => {
      unwrapResponse(res).then(resolve, reject);
    });
    req.on('error', (e) => reject(failed ?? (e instanceof XenApiError ? e : new XenApiError('CANNOT_CONTACT_HOST', peer.address))));
    // the upload failing (a client that cut it) is what the caller hears, not the member's broken request
    pipeline(Readable.from(input), req).catch((e: unknown) => {
      failed = e;
      req.destroy();
      reject(e);
    });
  });
}

/** A member's answer other than a stream: nothing on success, else the XenAPI error it carries. */
async function unwrapResponse(res: http.IncomingMessage): Promise<void> {
  const text = await readBody(res, 64 * 1024);
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // kept as text: unwrap says what came
  }
  unwrap({ status: res.statusCode ?? 0, body });
}

/** The master's side: the member's stream, or the XenAPI error it answered. */
export function remoteExport(peer: Peer, ask: ExportAsk, timeoutMs = 30_000): Promise<{ stream: Readable; length?: number }> {
  const { host, port } = parseAddress(peer.address);
  const q = new URLSearchParams({ sr: ask.sr, uuid: ask.uuid, format: ask.format, ...(ask.base ? { base: ask.base } : {}) });
  return new Promise((resolve, reject) => {
    const req = https.get({ host, port, path: `${TRANSFER_ROUTE}?${q}`, agent: agentFor(peer.cert), headers: { [SECRET_HEADER]: peer.secret }, timeout: timeoutMs }, (res: http.IncomingMessage) => {
      // once the bytes flow, a stall is the member's to end (a long export has pauses of its own)
      req.setTimeout(0);
      if (res.statusCode === 200) {
        const length = Number(res.headers[LENGTH_HEADER]);
        return resolve({ stream: res, ...(Number.isSafeInteger(length) && length >= 0 ? { length } : {}) });
      }
      unwrapResponse(res).then(() => reject(new XenApiError('INTERNAL_ERROR', `the member answered ${res.statusCode ?? 0} without an error`)), reject);
    });
    req.on('timeout', () => req.destroy(new XenApiError('CANNOT_CONTACT_HOST', peer.address)));
    req.on('error', (e) => reject(e instanceof XenApiError ? e : new XenApiError('CANNOT_CONTACT_HOST', peer.address)));
  });
}
