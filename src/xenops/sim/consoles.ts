/**
 * Consoles for simulated domains (opt-in: a pair of unix sockets and a timer
 * per domain, which 10,000 simulated guests need not pay for). Where QEMU has
 * them, in the domain's run directory: serial.sock, whose guest prints
 * `<label> tick <n>` every 100 ms while it runs — n counts 100 ms of wall
 * clock, so a console that follows a domain between hosts can tell a gap —
 * and echoes what it is sent, both also appended to serial.log; and vnc.sock,
 * which greets as an RFB 3.8 server and echoes. The sockets exist from the
 * domain's creation (an incoming migration's too, as QEMU's) to its end.
 */
import { appendFile, mkdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export const SIM_TICK_MS = 100;

interface Open {
  readonly servers: net.Server[];
  readonly clients: Set<net.Socket>;
  readonly timer: NodeJS.Timeout;
}

export class SimConsoles {
  private readonly open = new Map<string, Open>();

  constructor(
    private readonly runDir: string,
    /** Printed in each tick: which host's simulator it came from. */
    private readonly label: string,
    private readonly running: (uuid: string) => boolean,
  ) {}

  /** Opens the consoles of the domains in `live` that have none, closes those of domains gone. */
  sync(live: Iterable<string>): void {
    const want = new Set(live);
    for (const uuid of want) if (!this.open.has(uuid)) this.start(uuid);
    for (const uuid of [...this.open.keys()]) if (!want.has(uuid)) this.stop(uuid);
  }

  private start(uuid: string): void {
    const dir = path.join(this.runDir, uuid);
    const clients = new Set<net.Socket>();
    const serialClients = new Set<net.Socket>();
    const log = path.join(dir, 'serial.log');
    const print = (text: string): void => {
      for (const c of serialClients) c.write(text);
      void appendFile(log, text).catch(() => undefined);
    };
    const serve = (name: string, greet: (c: net.Socket) => void): net.Server => {
      const server = net.createServer((c) => {
        clients.add(c);
        c.on('close', () => {
          clients.delete(c);
          serialClients.delete(c);
        });
        c.on('error', () => c.destroy());
        greet(c);
      });
      void mkdir(dir, { recursive: true })
        .then(() => unlink(path.join(dir, name)).catch(() => undefined))
        .then(() => server.listen(path.join(dir, name)));
      server.on('error', () => undefined);
      return server;
    };
    const serial = serve('serial.sock', (c) => {
      serialClients.add(c);
      c.on('data', (b: Buffer) => print(b.toString('utf8')));
    });
    const vnc = serve('vnc.sock', (c) => {
      c.write('RFB 003.008\n');
      c.on('data', (b: Buffer) => c.write(b));
    });
    const timer = setInterval(() => {
      if (this.running(uuid)) print(`${this.label} tick ${Math.floor(Date.now() / SIM_TICK_MS)}\r\n`);
    }, SIM_TICK_MS);
    timer.unref();
    this.open.set(uuid, { servers: [serial, vnc], clients, timer });
  }

  private stop(uuid: string): void {
    const o = this.open.get(uuid);
    if (!o) return;
    this.open.delete(uuid);
    clearInterval(o.timer);
    for (const s of o.servers) s.close();
    for (const c of o.clients) c.destroy();
  }

  close(): void {
    for (const uuid of [...this.open.keys()]) this.stop(uuid);
  }
}
