/**
 * Keeps every client's share of connections bounded and closes connections
 * that do not deliver a request in time. A connection is "waiting" from its
 * accept (or the end of its last reply) until a complete request header has
 * arrived: waiting connections are the ones swept on a deadline and, when a
 * cap is reached, the oldest waiting one makes room for the newcomer — so
 * thousands of idle or slow-header sockets cannot lock a fresh client out,
 * and a connection that is serving a request is never dropped for them.
 */
import type http from 'node:http';
import type { Socket } from 'node:net';
import type { HttpLimits } from './limits.ts';

type State = 'waiting' | 'busy' | 'tunnel';

interface Connection {
  readonly socket: Socket;
  readonly client: string;
  readonly peer: string;
  state: State;
  since: number;
  served: number;
}

const SWEEP_MS = 1000;

const REFUSAL = 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n';

export class ConnectionGuard {
  // insertion order is age: the first waiting entry is the oldest
  private readonly all = new Map<Socket, Connection>();
  private readonly byClient = new Map<string, Set<Connection>>();
  /** TLS requests arrive on a TLSSocket: found through the peer address of the TCP socket beneath. */
  private readonly byPeer = new Map<string, Connection>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly server: http.Server,
    private readonly limits: HttpLimits,
    private readonly plaintext: boolean,
  ) {
    server.on('connection', (socket: Socket) => this.accept(socket));
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.serving(req, res));
    // CONNECT and WebSocket upgrades hold their connection for as long as the console is open
    for (const event of ['connect', 'upgrade']) {
      server.on(event, (req: http.IncomingMessage) => {
        const c = this.find(req.socket);
        if (c) c.state = 'tunnel';
      });
    }
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
    server.on('close', () => clearInterval(this.sweeper));
  }

  get size(): number {
    return this.all.size;
  }

  private accept(socket: Socket): void {
    const client = socket.remoteAddress ?? '';
    const peers = this.byClient.get(client);
    if (peers && peers.size >= this.limits.maxConnectionsPerClient && !this.evictOldestWaiting(peers.values())) return this.refuse(socket);
    if (this.all.size >= this.limits.maxConnections && !this.evictOldestWaiting(this.all.values())) return this.refuse(socket);
    const c: Connection = { socket, client, peer: `${client}|${socket.remotePort ?? ''}`, state: 'waiting', since: Date.now(), served: 0 };
    this.all.set(socket, c);
    this.byPeer.set(c.peer, c);
    if (peers) peers.add(c);
    else this.byClient.set(client, new Set([c]));
    socket.once('close', () => this.forget(c));
  }

  private forget(c: Connection): void {
    this.all.delete(c.socket);
    if (this.byPeer.get(c.peer) === c) this.byPeer.delete(c.peer);
    const peers = this.byClient.get(c.client);
    peers?.delete(c);
    if (peers?.size === 0) this.byClient.delete(c.client);
  }

  private refuse(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    if (this.plaintext) socket.end(REFUSAL);
    else socket.destroy();
    // a client that never reads must not keep the refused socket open
    setTimeout(() => socket.destroy(), 2000).unref();
  }

  private evictOldestWaiting(candidates: Iterable<Connection>): boolean {
    for (const c of candidates) {
      if (c.state !== 'waiting') continue;
      c.socket.destroy();
      this.forget(c);
      return true;
    }
    return false;
  }

  private find(socket: Socket): Connection | undefined {
    return this.all.get(socket) ?? this.byPeer.get(`${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`);
  }

  private serving(req: http.IncomingMessage, res: http.ServerResponse): void {
    const c = this.find(req.socket);
    if (!c) return;
    c.state = 'busy';
    res.once('close', () => {
      if (c.state !== 'busy') return;
      c.state = 'waiting';
      c.since = Date.now();
      c.served++;
    });
  }

  /** Closes connections that waited too long for a request header (or, idle, past keep-alive). */
  private sweep(): void {
    const now = Date.now();
    const first = this.limits.headersTimeoutMs;
    const next = this.limits.keepAliveTimeoutMs + this.limits.headersTimeoutMs;
    for (const c of this.all.values()) {
      if (c.state === 'waiting' && now - c.since > (c.served === 0 ? first : next)) {
        c.socket.destroy();
        this.forget(c);
      }
    }
  }
}
