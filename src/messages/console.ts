/**
 * /console: a client asks, with HTTP CONNECT (as xapi's consoles do), for a
 * console by ref or uuid; after "200 OK" the connection carries the raw RFB
 * stream (protocol rfb) or the serial console's text (vt100), of the VM's
 * domain wherever in the pool it runs (console-upstream.ts).
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from './context.ts';
import { joinStreams, openConsole, refuseSocket, serialLogOf } from './console-upstream.ts';
import { authorize } from './http-handlers.ts';
import type { Xenops } from './vm-domains/index.ts';



/** The HTTP status and text of a failed session or role check, or null when it passed. */
function refused(check: () => unknown): { status: string; text: string } | null {
  try {
    check();
    return null;
  } catch (e) {
    if (!(e instanceof XenApiError)) throw e;
    const status = e.code === 'RBAC_PERMISSION_DENIED' ? '403 Forbidden' : '401 Unauthorized';
    return { status, text: e.description.join(' ') };
  }
}

/** The console named by `ref=` or `uuid=`. */
const consoleRef = (services: Services, url: URL): string =>
  url.searchParams.get('ref') ?? services.store.byUuid('console', url.searchParams.get('uuid') ?? '') ?? '';

export function consoleConnect(services: Services, xenops: Xenops) {
  return async (req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL): Promise<void> => {
    const { store } = services;
    const refusal = refused(() => authorize(services, req, url));
    if (refusal) return refuseSocket(socket, refusal.status, refusal.text);
    const ref = consoleRef(services, url);
    const con = store.get('console', ref);
    if (!con) return refuseSocket(socket, '404 Not Found', `HANDLE_INVALID console ${ref}`);
    const vm = store.get('VM', String(con.VM));
    if (!vm || vm.is_control_domain) return refuseSocket(socket, '404 Not Found', 'no console for this VM here');
    const protocol = con.protocol === 'rfb' ? 'rfb' : 'vt100';
    let upstream: Duplex;
    try {
      upstream = await openConsole(services, xenops.backend, String(con.VM), protocol);
    } catch {
      return refuseSocket(socket, protocol === 'vt100' ? '404 Not Found' : '503 Service Unavailable', 'the console is not reachable');
    }
    joinStreams(socket, upstream, head);
  };
}

/**
 * GET /console?ref=…&session_id=…: the bounded serial log of a vt100 console
 * as plain text (what the guest printed so far; rotated past its limit), from
 * the host the VM runs on.
 */
export function consoleLog(services: Services, xenops: Xenops) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    const fail = (status: number, text: string): void => {
      res.writeHead(status, { 'Content-Type': 'text/plain' });
      res.end(`${text}\n`);
    };
    const refusal = refused(() => authorize(services, req, url));
    if (refusal) return fail(Number.parseInt(refusal.status, 10), refusal.text);
    const ref = consoleRef(services, url);
    const con = services.store.get('console', ref);
    const vm = con ? services.store.get('VM', String(con.VM)) : undefined;
    if (!con || !vm || con.protocol !== 'vt100' || vm.is_control_domain) return fail(404, `HANDLE_INVALID console ${ref}`);
    const text = await serialLogOf(services, xenops.backend, String(con.VM)).catch(() => undefined);
    if (text === undefined) return fail(503, 'the host of this VM does not answer');
    if (!text) return fail(404, 'no serial output yet');
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    text.on('error', () => res.end()).pipe(res);
  };
}
