/**
 * GET /console with `Upgrade: websocket` (as xapi serves its console
 * websocket): the console named by `ref=` or `uuid=` as binary frames — the
 * VM's VNC (RFB, for noVNC) or its serial console (for xterm, which first
 * gets the tail of what the guest printed), wherever in the pool the VM
 * runs (messages/console-upstream.ts; a serial one follows a live migration). The session and role check is
 * the declared HTTP action's (`connect_console_ws`, vm-operator), as for
 * CONNECT /console; a page of another origin is refused, since a browser
 * would send it our cookies.
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from '../messages/context.ts';
import { openConsole, readAll, refuseSocket, serialLogOf, type ConsoleProtocol } from '../messages/console-upstream.ts';
import { authorize } from '../messages/http-handlers.ts';
import type { Xenops } from '../messages/vm-domains/index.ts';

/** How much of the serial log a new serial viewer gets first. */
const SERIAL_TAIL_BYTES = 64 * 1024;
/** Frames from the browser (keys, pointer, pasted text) are small; anything bigger is refused. */
const MAX_FRAME_BYTES = 1024 * 1024;
/** Stop reading the VM's side while this much waits for a slow browser. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** A browser sends Origin: it must be this server's own (the Host it asked for). */
function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true; // not a browser: it holds the session itself
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

interface Target {
  readonly vm: string;
  readonly protocol: ConsoleProtocol;
}

function targetOf(services: Services, url: URL): Target {
  const ref = url.searchParams.get('ref') ?? services.store.byUuid('console', url.searchParams.get('uuid') ?? '') ?? '';
  const con = services.store.get('console', ref);
  const vm = con ? services.store.get('VM', String(con.VM)) : undefined;
  if (!con || !vm || vm.is_control_domain) throw new XenApiError('HANDLE_INVALID', 'console', ref);
  if (vm.power_state !== 'Running' && vm.power_state !== 'Paused') throw new XenApiError('VM_BAD_POWER_STATE', String(con.VM), 'Running', String(vm.power_state));
  return { vm: String(con.VM), protocol: con.protocol === 'rfb' ? 'rfb' : 'vt100' };
}

/** Joins a browser's WebSocket and the console's stream until either side ends. */
function bridge(ws: WebSocket, upstream: Duplex, first: Buffer): void {
  if (first.length) ws.send(first);
  upstream.on('data', (chunk: Buffer) => {
    ws.send(chunk, () => {
      if (upstream.isPaused() && ws.bufferedAmount < HIGH_WATER_BYTES / 2) upstream.resume();
    });
    if (ws.bufferedAmount > HIGH_WATER_BYTES) upstream.pause();
  });
  ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (!upstream.write(buf)) {
      ws.pause();
      upstream.once('drain', () => ws.resume());
    }
  });
  const end = (): void => {
    upstream.destroy();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000, 'the console closed');
  };
  upstream.on('close', end);
  upstream.on('error', end);
  ws.on('close', () => upstream.destroy());
  ws.on('error', () => upstream.destroy());
}

export interface ConsoleSockets {
  readonly handler: (req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL) => Promise<void>;
  /** Closes every open console (the daemon stops). */
  close(): void;
}

export function consoleSockets(services: Services, xenops: Xenops): ConsoleSockets {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: true });
  const handler = async (req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL): Promise<void> => {
    if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return refuseSocket(socket, '400 Bad Request', 'only WebSocket upgrades are served here');
    if (!sameOrigin(req)) return refuseSocket(socket, '403 Forbidden', 'a page of another origin may not open this console');
    let target: Target;
    try {
      authorize(services, req, url);
      target = targetOf(services, url);
    } catch (e) {
      if (!(e instanceof XenApiError)) throw e;
      const status = e.code === 'RBAC_PERMISSION_DENIED' ? '403 Forbidden' : e.code === 'SESSION_INVALID' ? '401 Unauthorized' : e.code === 'HANDLE_INVALID' ? '404 Not Found' : '409 Conflict';
      return refuseSocket(socket, status, e.description.join(' '));
    }
    // a serial viewer first gets the tail of what the guest printed, from the host it runs on
    const first = target.protocol === 'vt100' ? await readAll(await serialLogOf(services, xenops.backend, target.vm, SERIAL_TAIL_BYTES).catch(() => null)) : Buffer.alloc(0);
    let upstream: Duplex;
    try {
      upstream = await openConsole(services, xenops.backend, target.vm, target.protocol);
    } catch {
      return refuseSocket(socket, '503 Service Unavailable', 'the console is not reachable');
    }
    upstream.on('error', () => upstream.destroy());
    if (socket.destroyed) return void upstream.destroy();
    // a handshake that ws refuses (bad key, version) closes the socket without calling back
    let bridged = false;
    socket.once('close', () => bridged || upstream.destroy());
    wss.handleUpgrade(req, socket, head, (ws) => {
      bridged = true;
      bridge(ws, upstream, first);
    });
  };
  return {
    handler,
    close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
