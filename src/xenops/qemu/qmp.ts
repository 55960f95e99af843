/** Minimal QMP (QEMU Machine Protocol) client over a unix socket. */
import net from 'node:net';

export interface QmpEvent { event: string; data?: Record<string, unknown>; timestamp?: { seconds: number; microseconds: number } }

export class QmpError extends Error {
  constructor(public readonly command: string, public readonly errorClass: string, desc: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

type Pending = { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void };

/** What one line from QEMU holds: a greeting, an event, or a reply to a command (by id). */
interface QmpMessage {
  QMP?: unknown;
  event?: string;
  id?: string | number;
  return?: unknown;
  error?: { class?: string; desc?: string };
}

function parseMessage(line: string): QmpMessage | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as QmpMessage) : undefined;
  } catch {
    return undefined;
  }
}

export class QmpClient {
  private buf = '';
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private eventListeners = new Set<(e: QmpEvent) => void>();
  private closeListeners = new Set<(err?: Error) => void>();
  private closedFlag = false;
  private greeted!: Promise<void>;

  private constructor(private readonly sock: net.Socket) {}

  get closed(): boolean { return this.closedFlag; }

  /** Connect, read the greeting and negotiate capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const sock = net.createConnection({ path });
    const c = new QmpClient(sock);
    let onGreeting!: () => void;
    let onFail!: (e: Error) => void;
    c.greeted = new Promise<void>((res, rej) => { onGreeting = res; onFail = rej; });
    let greetingSeen = false;
    const timer = setTimeout(() => { onFail(new Error(`QMP connect ${path}: timeout`)); sock.destroy(); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      c.buf += chunk;
      let nl: number;
      while ((nl = c.buf.indexOf('\n')) >= 0) {
        const line = c.buf.slice(0, nl).trim();
        c.buf = c.buf.slice(nl + 1);
        if (!line) continue;
        const msg = parseMessage(line);
        if (!msg) continue;
        if (!greetingSeen && msg.QMP) { greetingSeen = true; onGreeting(); continue; }
        c.dispatch(msg);
      }
    });
    sock.on('error', (e) => { onFail(e); c.finish(e); });
    sock.on('close', () => { onFail(new Error(`QMP ${path}: closed`)); c.finish(); });
    try {
      await c.greeted;
      await c.execute('qmp_capabilities');
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  private dispatch(msg: QmpMessage): void {
    if (msg.event) {
      for (const l of [...this.eventListeners]) {
        try { l(msg as QmpEvent); } catch { /* listener errors are theirs */ }
      }
      return;
    }
    const id = msg.id !== undefined ? String(msg.id) : undefined;
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (msg.error) p.reject(new QmpError(p.command, String(msg.error.class ?? 'GenericError'), String(msg.error.desc ?? '')));
    else p.resolve(msg.return);
  }

  private finish(err?: Error): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const p of this.pending.values()) p.reject(err ?? new Error(`QMP ${p.command}: connection closed`));
    this.pending.clear();
    for (const l of [...this.closeListeners]) {
      try { l(err); } catch { /* ignore */ }
    }
  }

  /**
   * Runs a command; resolves with its `return`. `T` is what QEMU's schema
   * says the command returns: QEMU is trusted for its own protocol's shapes,
   * and callers that need more check what they read.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedFlag) return Promise.reject(new Error(`QMP ${command}: connection closed`));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: (v) => resolve(v as T), reject });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  onEvent(l: (e: QmpEvent) => void): () => void { this.eventListeners.add(l); return () => { this.eventListeners.delete(l); }; }
  onClose(l: (err?: Error) => void): () => void { this.closeListeners.add(l); return () => { this.closeListeners.delete(l); }; }

  /** Resolves with the first event matching, or rejects after timeoutMs / on close. */
  waitEvent(match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const cleanup = (): void => { clearTimeout(t); offE(); offC(); };
      const t = setTimeout(() => { cleanup(); reject(new Error('timeout waiting for QMP event')); }, timeoutMs);
      const offE = this.onEvent((e) => { if (match(e)) { cleanup(); resolve(e); } });
      const offC = this.onClose(() => { cleanup(); reject(new Error('QMP connection closed')); });
      if (this.closedFlag) { cleanup(); reject(new Error('QMP connection closed')); }
    });
  }

  close(): void {
    this.sock.destroy();
    this.finish();
  }
}
