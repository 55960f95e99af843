/**
 * The host-to-host channel: JSON over HTTPS between pool members, each side
 * pinning the other's certificate (exchanged at join) and every request
 * carrying the pool secret. It carries replication (member ← master), the
 * typed host interface (master → member) and join admission.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import https from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { XenApiError } from '../datamodel/api-error.ts';
import { ERRORS, type ErrorCode } from '../datamodel/errors.ts';

export const SECRET_HEADER = 'x-xenon-pool-secret';
/** Bodies on the channel are records and small calls; a whole database dump is the largest. */
const MAX_BODY_BYTES = 256 * 1024 * 1024;

export interface Peer {
  /** host, host:port or [v6]:port; the port defaults to 443 as xapi's. */
  readonly address: string;
  /** PEM of the certificate the peer must present. */
  readonly cert: string;
  readonly secret: string;
}

/** Splits an address as pool.join takes it; throws on anything else. */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(address);
  const port = m?.[3] === undefined ? 443 : Number(m[3]);
  if (!m || port < 1 || port > 65535) throw new XenApiError('INVALID_VALUE', 'master_address', address);
  return { host: m[1] ?? m[2], port };
}

/** The host part of an address (no port, no brackets), for comparing addresses given in different forms; never throws. */
export function addressHost(address: string): string {
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::\d+)?$/.exec(address);
  return v6 ? v6[1] : address.replace(/:\d+$/, '');
}

const fingerprintOf = (pem: string): string => {
  const der = Buffer.from(pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''), 'base64');
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
};

const agents = new Map<string, https.Agent>();

/** TLS options that accept only the peer's own certificate. */
export function pinnedTls(cert: string): { ca: string; checkServerIdentity: (host: string, peer: PeerCertificate) => Error | undefined } {
  const expected = fingerprintOf(cert);
  return {
    ca: cert,
    checkServerIdentity: (_host: string, peer: PeerCertificate) =>
      peer.fingerprint256 === expected ? undefined : new Error(`the peer presented certificate ${peer.fingerprint256}, not the pool's ${expected}`),
  };
}

/** A connection pool that accepts only the peer's own certificate. */
export function agentFor(cert: string): https.Agent {
  const expected = fingerprintOf(cert);
  let agent = agents.get(expected);
  if (!agent) {
    agent = new https.Agent({ keepAlive: true, ...pinnedTls(cert) });
    agents.set(expected, agent);
  }
  return agent;
}

export interface Reply {
  status: number;
  body: unknown;
}

/** One request on the channel; the body and the reply are JSON. */
export function request(target: { address: string; cert?: string; headers?: Record<string, string> }, method: string, path: string, body: unknown, timeoutMs: number): Promise<Reply> {
  const { host, port } = parseAddress(target.address);
  const text = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host, port, method, path,
        // the first contact of a join trusts whatever certificate it finds and pins it (xapi's first login is unverified too)
        ...(target.cert ? { agent: agentFor(target.cert) } : { rejectUnauthorized: false, agent: false }),
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...target.headers },
        timeout: timeoutMs,
      },
      (res) => {
        readBody(res, MAX_BODY_BYTES).then((raw) => {
          let parsed: unknown = raw;
          try {
            parsed = raw ? JSON.parse(raw) : null;
          } catch {
            // a non-JSON body (an error page) is kept as text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        }, reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${target.address} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(text);
  });
}

/** The certificate a server presents (for pinning at join). */
export function peerCertificate(address: string, timeoutMs: number): Promise<string> {
  const { host, port } = parseAddress(address);
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port, method: 'GET', path: '/', rejectUnauthorized: false, agent: false, timeout: timeoutMs }, (res) => {
      const cert = (res.socket as TLSSocket).getPeerCertificate();
      res.resume();
      if (!cert?.raw) return reject(new Error(`${address} presented no certificate`));
      resolve(`-----BEGIN CERTIFICATE-----\n${cert.raw.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${address} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** A call to a pool peer with the secret; a XenAPI error in the reply is thrown as one. */
export async function peerCall(peer: Peer, path: string, body: unknown, timeoutMs = 30_000): Promise<unknown> {
  const reply = await request({ address: peer.address, cert: peer.cert, headers: { [SECRET_HEADER]: peer.secret } }, 'POST', path, body, timeoutMs);
  return unwrap(reply);
}

/** The result of a reply, or the XenAPI error it carries. */
export function unwrap(reply: Reply): unknown {
  const b = reply.body as { result?: unknown; error?: unknown } | null;
  if (reply.status === 200 && b && typeof b === 'object' && 'result' in b) return b.result;
  const err = b && typeof b === 'object' && Array.isArray(b.error) ? b.error.map(String) : [];
  const code = err[0];
  if (code !== undefined && Object.hasOwn(ERRORS, code)) throw new XenApiError(code as ErrorCode, ...err.slice(1));
  throw new XenApiError('INTERNAL_ERROR', `pool peer answered ${reply.status}: ${JSON.stringify(reply.body).slice(0, 200)}`);
}

/** Reads a body up to a limit (the channel is authenticated, but a peer may still be broken). */
export function readBody(stream: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        stream.destroy();
        reject(new XenApiError('INVALID_VALUE', 'body', `over ${max} bytes`));
      } else chunks.push(c);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}

/** Whether a request carries the pool secret (compared in constant time). */
export function hasSecret(req: http.IncomingMessage, secret: string): boolean {
  const given = req.headers[SECRET_HEADER];
  if (typeof given !== 'string') return false;
  const h = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(given), h(secret));
}

/** Reads a JSON request body. */
export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const text = await readBody(req, MAX_BODY_BYTES);
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    throw new XenApiError('INVALID_VALUE', 'body', 'not JSON');
  }
}

/** Answers a channel request: the result, or the XenAPI error (anything else is INTERNAL_ERROR). */
export function answer(res: http.ServerResponse, outcome: { result: unknown } | { error: unknown }): void {
  if (res.headersSent) return void res.destroy();
  let body: object;
  if ('result' in outcome) body = { result: outcome.result ?? null };
  else {
    const e = outcome.error;
    body = { error: e instanceof XenApiError ? e.description : ['INTERNAL_ERROR', e instanceof Error ? e.message : String(e)] };
  }
  const text = JSON.stringify(body);
  res.writeHead('error' in body ? 500 : 200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
