/**
 * Consoles across the pool: a member serves the console sockets of its own
 * domains to its master over the channel, and the master reaches them there.
 *   CONNECT /pool/console?vm=<uuid>&protocol=rfb|vt100  the raw stream (after "200 OK")
 *   GET     /pool/console?vm=<uuid>[&tail=<bytes>]      the serial log text
 * Both need the pool secret; the master pins the member's certificate as for
 * every channel call. The request is still checked as input: a well-formed
 * uuid and a known protocol, and only the sockets and log the hypervisor
 * backend keeps for that domain are ever opened.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConnectHandler, RouteHandler } from '../api/http.ts';
import { joinStreams, openLocal, refuseSocket, type ConsoleProtocol } from '../messages/console-upstream.ts';
import type { Services } from '../messages/context.ts';
import { agentFor, hasSecret, parseAddress, pinnedTls, SECRET_HEADER, type Peer } from './channel.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The largest tail a master may ask for (the web console's first screen needs 64 KiB). */
const MAX_TAIL_BYTES = 16 * 1024 * 1024;

/** The domain and protocol a master asks for, or why not. */
function parseAsk(url: URL): { uuid: string; protocol: ConsoleProtocol } | string {
  const uuid = url.searchParams.get('vm') ?? '';
  const protocol = url.searchParams.get('protocol') ?? 'vt100';
  if (!UUID.test(uuid)) return 'vm: not a uuid';
  if (protocol !== 'rfb' && protocol !== 'vt100') return 'protocol: rfb or vt100';
  return { uuid: uuid.toLowerCase(), protocol };
}

/** A host's routes: its domains' consoles for the master. */
export function memberConsoleRoutes(services: Services, secret: () => string): { connect: ConnectHandler; log: RouteHandler } {
  const connect: ConnectHandler = (req, socket, head, url) => {
    if (!hasSecret(req, secret())) return refuseSocket(socket, '403 Forbidden', 'the pool secret is required');
    const ask = parseAsk(url);
    if (typeof ask === 'string') return refuseSocket(socket, '400 Bad Request', ask);
    const backend = services.xenops?.backend;
    if (!backend) return refuseSocket(socket, '404 Not Found', 'no such console here');
    openLocal(backend, ask.uuid, ask.protocol).then(
      (upstream) => joinStreams(socket, upstream, head),
      () => refuseSocket(socket, '404 Not Found', 'no such console here'),
    );
  };
  const log: RouteHandler = async (req, res, url) => {
    const fail = (status: number, text: string): void => {
      res.writeHead(status, { 'Content-Type': 'text/plain' });
      res.end(`${text}\n`);
    };
    if (req.method !== 'GET') return fail(405, 'GET only');
    if (!hasSecret(req, secret())) return fail(403, 'the pool secret is required');
    const ask = parseAsk(url);
    if (typeof ask === 'string') return fail(400, ask);
    const tail = url.searchParams.has('tail') ? Number(url.searchParams.get('tail')) : undefined;
    if (tail !== undefined && (!Number.isSafeInteger(tail) || tail < 0 || tail > MAX_TAIL_BYTES)) return fail(400, 'tail: a byte count');
    const file = services.xenops?.backend.serialLog(ask.uuid).path;
    const size = file ? await stat(file).then((s) => s.size, () => -1) : -1;
    if (!file || size < 0) return fail(404, 'no serial output yet');
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    const start = tail === undefined ? 0 : Math.max(0, size - tail);
    createReadStream(file, { start }).on('error', () => res.end()).pipe(res);
  };
  return { connect, log };
}

const query = (uuid: string, protocol: ConsoleProtocol, tail?: number): string =>
  `/pool/console?vm=${encodeURIComponent(uuid)}&protocol=${protocol}${tail === undefined ? '' : `&tail=${tail}`}`;

/** The master's side: a console stream of a domain on a member, or a rejection saying why not. */
export function openRemoteConsole(peer: Peer, uuid: string, protocol: ConsoleProtocol, timeoutMs = 10_000): Promise<Duplex> {
  const { host, port } = parseAddress(peer.address);
  return new Promise((resolve, reject) => {
    const req = https.request({
      host, port, method: 'CONNECT', path: query(uuid, protocol), agent: false, ...pinnedTls(peer.cert),
      headers: { [SECRET_HEADER]: peer.secret }, timeout: timeoutMs,
    });
    req.on('connect', (res: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return reject(new Error(`the member answered ${res.statusCode} for the console of ${uuid}`));
      }
      // the stream lives as long as the console: no idle timeout of the request's
      (socket as net.Socket).setTimeout(0);
      if (head.length) socket.unshift(head);
      resolve(socket);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${peer.address} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The serial log (or its last `tail` bytes) of a domain on a member; null when it has none. */
export function remoteConsoleLog(peer: Peer, uuid: string, tail?: number, timeoutMs = 10_000): Promise<http.IncomingMessage | null> {
  const { host, port } = parseAddress(peer.address);
  return new Promise((resolve, reject) => {
    const req = https.get({ host, port, path: query(uuid, 'vt100', tail), agent: agentFor(peer.cert), headers: { [SECRET_HEADER]: peer.secret }, timeout: timeoutMs }, (res) => {
      if (res.statusCode === 200) return resolve(res);
      res.resume();
      if (res.statusCode === 404) return resolve(null);
      reject(new Error(`the member answered ${res.statusCode} for the serial log of ${uuid}`));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${peer.address} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
