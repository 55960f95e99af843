/**
 * The HTTP front door: XML-RPC on /, /RPC2 and /xmlrpc, JSON-RPC on /jsonrpc,
 * and whatever other handlers subsystems register (import, export, console…).
 * Every request is answered with a status and a body, whatever it holds: the
 * target is parsed safely, RPC bodies are bounded (rpc-body.ts), connections
 * are capped and timed (connections.ts), and a handler that fails before its
 * headers still answers.
 */
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import type { CallOrigin } from '../messages/context.ts';
import type { Dispatcher } from './dispatch.ts';
import { decodeJsonRequest, JSON_INVALID_REQUEST, jsonErrorReply, JsonRpcDecodeError, jsonReply, type WireOutcome } from '../wire/jsonrpc.ts';
import { toXml } from '../wire/marshal.ts';
import { decodeMethodCall, failureXml, successXml } from '../wire/xmlrpc.ts';
import { ConnectionGuard } from './connections.ts';
import { resolveLimits, type HttpLimits } from './limits.ts';
import { RpcBodies, type BodyRefusal } from './rpc-body.ts';
import { parseTarget } from './target.ts';

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;
export type ConnectHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL) => void | Promise<void>;
/** A WebSocket (or other `Upgrade:`) request on a path: same shape as CONNECT. */
export type UpgradeHandler = ConnectHandler;

export interface HttpRoutes {
  readonly routes: Map<string, RouteHandler>;
  readonly connect: Map<string, ConnectHandler>;
  readonly upgrade?: Map<string, UpgradeHandler>;
}

export interface ServeOptions {
  dispatcher: Dispatcher;
  routes: HttpRoutes;
  log: Logger;
  limits?: Partial<HttpLimits>;
  /** The local root socket: a login there is the local superuser's. */
  localRoot?: boolean;
}

const XML_PATHS = new Set(['/', '/RPC2', '/xmlrpc']);

type Codec = 'xml' | 'json';

/** Node's parser errors, as statuses. */
const CLIENT_ERRORS: Record<string, [string, string]> = {
  HPE_HEADER_OVERFLOW: ['431 Request Header Fields Too Large', 'request header too large\n'],
  ERR_HTTP_REQUEST_TIMEOUT: ['408 Request Timeout', 'request header not received in time\n'],
};
const CONTENT_TYPE: Record<Codec, string> = { xml: 'text/xml', json: 'application/json' };

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** A failure in the codec's own envelope: a XenAPI Failure for XML-RPC, an error object for JSON-RPC. */
function sendFailure(res: http.ServerResponse, codec: Codec, status: number, error: XenApiError, extra: http.OutgoingHttpHeaders = {}): void {
  const body = codec === 'xml' ? failureXml(error.description) : jsonErrorReply(error, JSON_INVALID_REQUEST);
  send(res, status, CONTENT_TYPE[codec], body, extra);
}

function refuseBody(res: http.ServerResponse, codec: Codec, r: BodyRefusal, limits: HttpLimits): void {
  switch (r.kind) {
    case 'too-large':
      return sendFailure(res, codec, 413, new XenApiError('INTERNAL_ERROR', `request body larger than ${r.limit} bytes`));
    case 'busy':
      return sendFailure(res, codec, 503, new XenApiError('TOO_BUSY'), { 'Retry-After': '1' });
    case 'timeout':
      return sendFailure(res, codec, 408, new XenApiError('INTERNAL_ERROR', `request body not received within ${limits.rpcBodyTimeoutMs / 1000} s`), { Connection: 'close' });
    case 'aborted':
      return void res.destroy();
  }
}

/** Failures of a plain HTTP handler before its headers: the status says who is to blame. */
function statusOf(e: unknown): number {
  if (e instanceof URIError) return 400;
  if (!(e instanceof XenApiError)) return 500;
  switch (e.code) {
    case 'SESSION_INVALID': case 'SESSION_AUTHENTICATION_FAILED': return 401;
    case 'RBAC_PERMISSION_DENIED': case 'PERMISSION_DENIED': return 403;
    case 'HANDLE_INVALID': case 'UUID_INVALID': return 404;
    case 'NOT_IMPLEMENTED': return 501;
    case 'INTERNAL_ERROR': return 500;
    default: return 400;
  }
}

/** The HTTP server, RPC and routes, with its limits; one per listener, sharing the RPC body budget. */
export class ApiFront {
  readonly limits: HttpLimits;
  private readonly bodies: RpcBodies;

  constructor(private readonly o: ServeOptions) {
    this.limits = resolveLimits(o.limits);
    this.bodies = new RpcBodies(this.limits);
  }

  /** RPC body bytes held right now. */
  get rpcBytesInFlight(): number {
    return this.bodies.bytesInFlight;
  }

  createServer(tls?: https.ServerOptions): http.Server {
    const { limits } = this;
    const options: http.ServerOptions = {
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      // disk imports may take hours: RPC bodies have their own deadline
      requestTimeout: 0,
      connectionsCheckingInterval: Math.min(5000, limits.headersTimeoutMs),
    };
    const server = tls
      ? https.createServer({ ...tls, ...options, handshakeTimeout: limits.headersTimeoutMs }, this.listener)
      : http.createServer(options, this.listener);
    new ConnectionGuard(server, limits, !tls);
    server.on('connect', this.tunnel(this.o.routes.connect, 'CONNECT'));
    server.on('upgrade', this.tunnel(this.o.routes.upgrade ?? new Map(), 'upgrade'));
    server.on('checkContinue', this.checkContinue);
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
      const [status, text] = CLIENT_ERRORS[err.code ?? ''] ?? ['400 Bad Request', 'bad request\n'];
      socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\nConnection: close\r\n\r\n${text}`);
    });
    return server;
  }

  /** `Expect: 100-continue`: an RPC body over the cap is refused before the client sends it. */
  private readonly checkContinue = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const declared = Number(req.headers['content-length'] ?? 0);
    const rpc = req.method === 'POST' && (req.url === '/jsonrpc' || XML_PATHS.has(req.url ?? ''));
    if (rpc && declared > this.limits.maxRpcBodyBytes) {
      const codec: Codec = req.url === '/jsonrpc' || String(req.headers['content-type'] ?? '').startsWith('application/json') ? 'json' : 'xml';
      // the body never comes: the connection cannot be reused
      return sendFailure(res, codec, 413, new XenApiError('INTERNAL_ERROR', `request body larger than ${this.limits.maxRpcBodyBytes} bytes`), { Connection: 'close' });
    }
    res.writeContinue();
    this.listener(req, res);
  };

  readonly listener: http.RequestListener = (req, res) => {
    const raw = req.url ?? '';
    // the RPC paths, matched as they come, skip URL parsing (the hottest path)
    if (req.method === 'POST' && (raw === '/jsonrpc' || XML_PATHS.has(raw))) return this.run(req, res, raw, () => this.serveRpc(req, res, raw));
    const target = parseTarget(raw);
    if (!target.ok) return send(res, 400, 'text/plain', `${target.reason}\n`, { Connection: 'close' });
    const path = target.url.pathname;
    if (req.method === 'POST' && (path === '/jsonrpc' || XML_PATHS.has(path))) return this.run(req, res, path, () => this.serveRpc(req, res, path));
    const route = this.o.routes.routes.get(path);
    if (route) return this.run(req, res, path, () => route(req, res, target.url));
    req.resume();
    send(res, 404, 'text/plain', 'not found\n');
  };

  /** Runs a handler; one that throws or rejects before its headers still answers with a status and a body. */
  private run(req: http.IncomingMessage, res: http.ServerResponse, path: string, handler: () => void | Promise<void>): void {
    let pending: void | Promise<void>;
    try {
      pending = handler();
    } catch (e) {
      pending = Promise.reject(e);
    }
    Promise.resolve(pending).catch((err: unknown) => {
      const status = statusOf(err);
      if (status >= 500) this.o.log.error({ err, path }, 'request failed');
      if (res.headersSent) return void res.destroy();
      req.resume();
      send(res, status, 'text/plain', `${toApiError(err).description.join(' ')}\n`);
    });
  }

  private async serveRpc(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    const codec: Codec = path === '/jsonrpc' || String(req.headers['content-type'] ?? '').startsWith('application/json') ? 'json' : 'xml';
    const body = await this.bodies.read(req);
    if (!body.ok) return refuseBody(res, codec, body.refusal, this.limits);
    try {
      const origin: CallOrigin = { address: req.socket.remoteAddress ?? '', localRoot: this.o.localRoot === true };
      const reply = codec === 'xml' ? await this.xmlReply(body.text, origin) : await this.jsonReply(body.text, origin);
      send(res, 200, CONTENT_TYPE[codec], reply);
    } catch (err) {
      // an encoder failure is ours: still a well-formed envelope, never a dropped connection
      this.o.log.error({ err, path }, 'RPC reply failed');
      sendFailure(res, codec, 200, toApiError(err));
    } finally {
      body.release();
    }
  }

  private async xmlReply(text: string, origin: CallOrigin): Promise<string> {
    let call;
    try {
      call = decodeMethodCall(text);
    } catch (e) {
      return failureXml(['XMLRPC_UNMARSHAL_FAILURE', 'methodCall', e instanceof Error ? e.message : String(e)]);
    }
    const out = await this.o.dispatcher.call(call.method, call.params, origin);
    return out.ok ? successXml(toXml(out.type, out.value)) : failureXml(out.error.description);
  }

  private async jsonReply(text: string, origin: CallOrigin): Promise<string> {
    let request;
    try {
      request = decodeJsonRequest(text);
    } catch (e) {
      if (!(e instanceof JsonRpcDecodeError)) throw e;
      return jsonErrorReply(e.error, e.rpcCode);
    }
    const { method, params, id, version } = request;
    let out: WireOutcome;
    if (typeof method !== 'string') out = { ok: false, error: new XenApiError('MESSAGE_METHOD_UNKNOWN', String(method)) };
    else if (!Array.isArray(params)) out = { ok: false, error: new XenApiError('XMLRPC_UNMARSHAL_FAILURE', 'params array', typeof params) };
    else out = await this.o.dispatcher.call(method, params, origin);
    return jsonReply(version, id, out);
  }

  /** CONNECT and Upgrade requests: the path's handler takes the raw socket; anything else is answered and closed. */
  private tunnel(handlers: ReadonlyMap<string, ConnectHandler>, kind: string) {
    return (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
      socket.on('error', () => socket.destroy());
      const target = parseTarget(req.url);
      const handler = target.ok ? handlers.get(target.url.pathname) : undefined;
      if (!target.ok || !handler) {
        const [status, text] = target.ok ? ['404 Not Found', 'not found\n'] : ['400 Bad Request', `${target.reason}\n`];
        socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
        return;
      }
      const url = target.url;
      let pending: void | Promise<void>;
      try {
        pending = handler(req, socket, head, url);
      } catch (e) {
        pending = Promise.reject(e);
      }
      Promise.resolve(pending).catch((err: unknown) => {
        this.o.log.error({ err, kind }, 'tunnel handler failed');
        socket.destroy();
      });
    };
  }
}
