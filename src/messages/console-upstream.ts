/**
 * The VM side of a console a client opened on this host (/console, CONNECT
 * or WebSocket): the console socket of the VM's domain here, or — for a VM
 * resident on a pool member — the member's, over the pool channel
 * (pool/console-relay.ts). A serial (vt100) console follows its VM when it
 * live-migrates: the destination's console is opened as soon as its domain
 * waits for the state, and when the source's closes the stream goes on from
 * there; the client sees no close. An RFB console closes (VNC clients
 * reconnect, and a VNC session's state is the server's).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import { Duplex, type Readable } from 'node:stream';
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { HypervisorBackend } from '../xenops/backend.ts';
import type { Services } from './context.ts';

export type ConsoleProtocol = 'rfb' | 'vt100';

/** How long a serial console waits, after its upstream closed mid-migration, for the VM to be recorded at its destination. */
const FOLLOW_WAIT_MS = 60_000;
/** Tries at opening a destination's console, 100 ms apart. */
const OPEN_ATTEMPTS = 20;
/** Keys typed while the stream switches hosts are kept up to this much, then dropped. */
const MAX_QUEUED_BYTES = 64 * 1024;

/** Connects to a local socket; resolves once connected. */
function connectLocal(target: net.NetConnectOpts): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(target);
    s.once('error', reject);
    s.once('connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
  });
}

/** The console of domain `uuid` on `host` (this one or a member). */
export function openOn(services: Services, local: HypervisorBackend, host: string, uuid: string, protocol: ConsoleProtocol): Promise<Duplex> {
  if (host !== services.hostRef()) {
    if (!services.pool) return Promise.reject(new XenApiError('HOST_OFFLINE', host));
    return services.pool.consoleOn(host, uuid, protocol);
  }
  return openLocal(local, uuid, protocol);
}

/** Where this host's backend keeps a domain's console socket (derived from the uuid alone); undefined for a serial console without one. */
export function localConsoleTarget(local: HypervisorBackend, uuid: string, protocol: ConsoleProtocol): net.NetConnectOpts | undefined {
  if (protocol === 'rfb') {
    const a = local.vncAddress(uuid);
    return 'unixSocket' in a ? { path: a.unixSocket } : { host: a.host, port: a.port };
  }
  const s = local.serialLog(uuid).socket;
  return s ? { path: s } : undefined;
}

/** The console of domain `uuid` on this host. */
export function openLocal(local: HypervisorBackend, uuid: string, protocol: ConsoleProtocol): Promise<Duplex> {
  const target = localConsoleTarget(local, uuid, protocol);
  return target ? connectLocal(target) : Promise.reject(new XenApiError('HANDLE_INVALID', 'console', uuid));
}

/** Refuses a CONNECT or Upgrade request on its raw socket: a status line and a text body. */
export function refuseSocket(socket: Duplex, status: string, text: string): void {
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text) + 1}\r\nConnection: close\r\n\r\n${text}\n`);
}

/** Answers a CONNECT with "200 OK" and joins the client and the console both ways; each end closes the other. */
export function joinStreams(socket: Duplex, upstream: Duplex, head: Buffer): void {
  if (socket.destroyed) return void upstream.destroy();
  socket.write('HTTP/1.1 200 OK\r\n\r\n');
  if (head.length) upstream.write(head);
  socket.pipe(upstream).pipe(socket);
  upstream.on('error', () => upstream.destroy());
  socket.on('close', () => upstream.destroy());
  upstream.on('close', () => socket.end());
}

/** A VM's console where it runs now; a serial one follows the VM across live migrations. */
export async function openConsole(services: Services, local: HypervisorBackend, vm: string, protocol: ConsoleProtocol): Promise<Duplex> {
  const rec = services.store.must('VM', vm);
  const host = String(rec.resident_on);
  const first = await openOn(services, local, host, String(rec.uuid), protocol);
  if (protocol === 'rfb' || !services.pool) return first;
  return new FollowingConsole(services, local, vm, String(rec.uuid), { host, socket: first });
}

/** The serial log text of a VM's domain where it runs (its last `tail` bytes); null when there is none. */
export async function serialLogOf(services: Services, local: HypervisorBackend, vm: string, tail?: number): Promise<Readable | null> {
  const rec = services.store.must('VM', vm);
  const host = String(rec.resident_on);
  const uuid = String(rec.uuid);
  if (host !== services.hostRef() && host !== NULL_REF) {
    if (!services.pool) return null;
    return services.pool.consoleLogOn(host, uuid, tail);
  }
  const file = local.serialLog(uuid).path;
  const size = await stat(file).then((s) => s.size, () => -1);
  if (size < 0) return null;
  return createReadStream(file, { start: tail === undefined ? 0 : Math.max(0, size - tail) });
}

/** Reads a whole (small) stream. */
export async function readAll(stream: Readable | null): Promise<Buffer> {
  if (!stream) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
  return Buffer.concat(chunks);
}

interface Leg {
  readonly host: string;
  readonly socket: Duplex;
}

/**
 * A serial console that outlives the domain's move: output of the source and
 * (once the migration prepared it) the destination both flow to the client —
 * the guest runs in one place at a time — and input goes to the one the VM
 * is on. When the source's closes, the destination's takes over; when the VM
 * stopped instead, or no migration was under way, the stream ends.
 */
class FollowingConsole extends Duplex {
  private current?: Leg;
  private next?: Leg;
  private opening?: Promise<Leg | undefined>;
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly services: Services,
    private readonly local: HypervisorBackend,
    private readonly vm: string,
    private readonly uuid: string,
    first: Leg,
  ) {
    super();
    this.current = first;
    this.attach(first);
    this.unsubscribe = services.pool?.onMigrationPrepared((vm, destination) => {
      if (vm === this.vm && destination !== this.current?.host) void this.openNext(destination);
    }) ?? (() => undefined);
  }

  /**
   * Opens the destination's console (its domain waits for the state: nothing
   * is printed there before the switch), trying again for a moment while its
   * socket may not be there yet.
   */
  private openNext(host: string): Promise<Leg | undefined> {
    if (this.next && this.next.host !== host) this.next.socket.destroy();
    const attempt = async (): Promise<Duplex> => {
      for (let i = 1; ; i++) {
        try {
          return await openOn(this.services, this.local, host, this.uuid, 'vt100');
        } catch (e) {
          if (i >= OPEN_ATTEMPTS || this.destroyed) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const opening = attempt().then(
      (socket): Leg | undefined => {
        if (this.destroyed) return void socket.destroy();
        const leg = { host, socket };
        this.attach(leg);
        if (this.current) this.next = leg;
        else this.promote(leg);
        return leg;
      },
      () => undefined,
    );
    this.opening = opening;
    void opening.finally(() => {
      if (this.opening === opening) this.opening = undefined;
    });
    return opening;
  }

  private attach(leg: Leg): void {
    leg.socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) leg.socket.pause();
    });
    leg.socket.on('error', () => leg.socket.destroy());
    // the far end half-closing (the relay on a member ends its side) is the end of this leg
    leg.socket.on('end', () => leg.socket.destroy());
    leg.socket.on('close', () => this.lost(leg));
  }

  private promote(leg: Leg): void {
    this.current = leg;
    if (this.next === leg) this.next = undefined;
    for (const b of this.queued) leg.socket.write(b);
    this.queued = [];
    this.queuedBytes = 0;
  }

  private lost(leg: Leg): void {
    if (this.destroyed) return;
    if (leg === this.next) this.next = undefined;
    if (leg !== this.current) return;
    this.current = undefined;
    if (this.next) return this.promote(this.next);
    void this.follow(leg.host);
  }

  /** The upstream closed with no destination open: wait for a migration to record where the VM went, or end. */
  private async follow(from: string): Promise<void> {
    const deadline = Date.now() + FOLLOW_WAIT_MS;
    while (!this.destroyed && !this.current) {
      const opened = this.opening ? await this.opening : undefined;
      if (opened || this.current || this.destroyed) return;
      const vm = this.services.store.get('VM', this.vm);
      if (!vm || (vm.power_state !== 'Running' && vm.power_state !== 'Paused')) break;
      const at = String(vm.resident_on);
      if (at !== from && at !== NULL_REF) {
        if (await this.openNext(at)) return;
        break;
      }
      const migrating = Object.values(vm.current_operations as Record<string, string>).includes('pool_migrate');
      if (!migrating || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    if (!this.current) this.destroy();
  }

  override _read(): void {
    this.current?.socket.resume();
    this.next?.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    // keys and pastes are small: written on at once, not held back by the VM's side
    if (this.current) {
      this.current.socket.write(chunk);
      return done();
    }
    if (this.queuedBytes + chunk.length <= MAX_QUEUED_BYTES) {
      this.queued.push(chunk);
      this.queuedBytes += chunk.length;
    }
    done();
  }

  override _final(done: (e?: Error | null) => void): void {
    this.current?.socket.end();
    done();
  }

  override _destroy(err: Error | null, done: (e?: Error | null) => void): void {
    this.unsubscribe();
    this.current?.socket.destroy();
    this.next?.socket.destroy();
    done(err);
  }
}
