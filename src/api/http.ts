/**
 * The HTTP front door: XML-RPC on /, /RPC2 and /xmlrpc, JSON-RPC on /jsonrpc,
 * and whatever other handlers subsystems register (import, export, console…).
 */
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { XenApiError } from '../datamodel/api-error.ts';
import type { CallOutcome, Dispatcher } from './dispatch.ts';
import { decodeJsonRequest, JSON_INVALID_REQUEST, jsonErrorReply, JsonRpcDecodeError, jsonReply } from '../wire/jsonrpc.ts';
import { toXml } from '../wire/marshal.ts';
import { decodeMethodCall, failureXml, successXml, XmlRpcParseError } from '../wire/xmlrpc.ts';

/** RPC bodies larger than this are refused (disks travel through /import, not RPC). */
export const MAX_RPC_BODY = 16 * 1024 * 1024;

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;
export type ConnectHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL) => void | Promise<void>;

export interface HttpRoutes {
  readonly routes: Map<string, RouteHandler>;
  readonly connect: Map<string, ConnectHandler>;
}

const XML_PATHS = new Set(['/', '/RPC2', '/xmlrpc']);

class BodyTooLarge extends Error {}

function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      reject(new BodyTooLarge());
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        chunks.length = 0;
        req.destroy();
        reject(new BodyTooLarge());
      } else chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const tooLarge = (): XenApiError => new XenApiError('INTERNAL_ERROR', `request body larger than ${MAX_RPC_BODY} bytes`);

async function serveXml(dispatcher: Dispatcher, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let body: string;
  try {
    body = await readBody(req, MAX_RPC_BODY);
  } catch (e) {
    if (e instanceof BodyTooLarge) send(res, 413, 'text/xml', failureXml(tooLarge().description));
    return;
  }
  let call;
  try {
    call = decodeMethodCall(body);
  } catch (e) {
    const reason = e instanceof XmlRpcParseError ? e.message : String(e);
    send(res, 200, 'text/xml', failureXml(['XMLRPC_UNMARSHAL_FAILURE', 'methodCall', reason]));
    return;
  }
  const out = await dispatcher.call(call.method, call.params);
  send(res, 200, 'text/xml', out.ok ? successXml(toXml(out.type, out.value)) : failureXml(out.error.description));
}

async function serveJson(dispatcher: Dispatcher, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let body: string;
  try {
    body = await readBody(req, MAX_RPC_BODY);
  } catch (e) {
    if (e instanceof BodyTooLarge) send(res, 413, 'application/json', jsonErrorReply(tooLarge(), JSON_INVALID_REQUEST));
    return;
  }
  let request;
  try {
    request = decodeJsonRequest(body);
  } catch (e) {
    if (!(e instanceof JsonRpcDecodeError)) throw e;
    send(res, 200, 'application/json', jsonErrorReply(e.error, e.rpcCode));
    return;
  }
  const { method, params, id, version } = request;
  let out: CallOutcome;
  if (typeof method !== 'string') out = { ok: false, error: new XenApiError('MESSAGE_METHOD_UNKNOWN', String(method)) };
  else if (!Array.isArray(params)) out = { ok: false, error: new XenApiError('XMLRPC_UNMARSHAL_FAILURE', 'params array', typeof params) };
  else out = await dispatcher.call(method, params);
  send(res, 200, 'application/json', jsonReply(version, id, out));
}

export interface ServeOptions {
  dispatcher: Dispatcher;
  routes: HttpRoutes;
  log: Logger;
}

export function requestListener(o: ServeOptions): http.RequestListener {
  return (req, res) => {
    // the RPC paths are matched as they come; anything else is parsed as a URL
    const raw = req.url ?? '/';
    const rpc = raw === '/jsonrpc' || XML_PATHS.has(raw);
    const url = rpc ? null : new URL(raw, 'http://localhost');
    const path = url ? url.pathname : raw;
    const done = (p: Promise<void> | void): void => {
      Promise.resolve(p).catch((err: unknown) => {
        o.log.error({ err, path }, 'request failed');
        if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n');
        else res.destroy();
      });
    };
    if (req.method === 'POST' && path === '/jsonrpc') return done(serveJson(o.dispatcher, req, res));
    if (req.method === 'POST' && XML_PATHS.has(path)) {
      const json = String(req.headers['content-type'] ?? '').startsWith('application/json');
      return done(json ? serveJson(o.dispatcher, req, res) : serveXml(o.dispatcher, req, res));
    }
    const route = o.routes.routes.get(path);
    if (route) return done(route(req, res, url ?? new URL(raw, 'http://localhost')));
    send(res, 404, 'text/plain', 'not found\n');
  };
}

export function attachConnect(server: http.Server | https.Server, o: ServeOptions): void {
  server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const h = o.routes.connect.get(url.pathname);
    socket.on('error', () => socket.destroy());
    if (!h) {
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    Promise.resolve(h(req, socket, head, url)).catch((err: unknown) => {
      o.log.error({ err }, 'CONNECT handler failed');
      socket.destroy();
    });
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    else socket.destroy();
  });
}
