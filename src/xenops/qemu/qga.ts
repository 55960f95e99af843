/**
 * A minimal QEMU guest agent (qemu-ga) client over the host side of the
 * domain's virtio-serial port `org.qemu.guest_agent.0` (a unix socket QEMU
 * serves). Protocol: JSON commands, one per line; replies are JSON lines
 * `{"return": ...}` or `{"error": {...}}`. Each session starts with
 * `guest-sync-delimited` (a random id; the reply is preceded by a 0xFF byte so
 * that stale output of an earlier session can be skipped), falling back to
 * `guest-sync` for agents that lack it.
 */
import net from 'node:net';
import { randomInt } from 'node:crypto';
import type { GuestInfo } from '../backend.ts';

export class QgaError extends Error {
  constructor(public readonly command: string, public readonly errorClass: string, desc: string) {
    super(`QGA ${command}: ${errorClass}: ${desc}`);
    this.name = 'QgaError';
  }
}

/** One connection to a guest agent; every call shares the session's deadline. */
export class QgaSession {
  private buf = Buffer.alloc(0);
  private waiter?: () => void;
  private ended = false;
  private error?: Error;

  private constructor(private readonly sock: net.Socket, private readonly deadline: number) {
    sock.on('data', (d: Buffer) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    sock.on('error', (e) => { this.error = e; this.ended = true; this.wake(); });
    sock.on('close', () => { this.ended = true; this.wake(); });
  }

  static async open(path: string, timeoutMs: number): Promise<QgaSession> {
    const deadline = Date.now() + timeoutMs;
    const sock = net.createConnection({ path });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => { sock.destroy(); reject(new Error(`QGA ${path}: connect timeout`)); }, timeoutMs);
      sock.once('connect', () => { clearTimeout(t); resolve(); });
      sock.once('error', (e) => { clearTimeout(t); reject(e); });
    });
    return new QgaSession(sock, deadline);
  }

  private wake(): void { const w = this.waiter; this.waiter = undefined; w?.(); }

  /** Next complete line (without the newline); rejects at the deadline or on close. */
  private async line(): Promise<Buffer> {
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl >= 0) {
        const l = this.buf.subarray(0, nl);
        this.buf = this.buf.subarray(nl + 1);
        return l;
      }
      if (this.ended) throw this.error ?? new Error('QGA: connection closed');
      const left = this.deadline - Date.now();
      if (left <= 0) throw new Error('QGA: timeout');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  private send(command: string, args?: Record<string, unknown>, prefix = ''): void {
    this.sock.write(prefix + JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n', 'latin1');
  }

  /** Handshake: skip whatever an earlier session left behind. */
  async sync(): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    // 0xFF first: a real qemu-ga drops any partial command it was parsing.
    this.send('guest-sync-delimited', { id }, '\xff');
    let delimited = false;
    for (;;) {
      let l = await this.line();
      const ff = l.lastIndexOf(0xff);
      if (ff >= 0) { delimited = true; l = l.subarray(ff + 1); }
      else if (!delimited) {
        // an agent without guest-sync-delimited answers with an error: retry with guest-sync
        const m = parse(l);
        if (m?.error && /guest-sync-delimited|CommandNotFound/i.test(JSON.stringify(m.error))) { this.send('guest-sync', { id }); delimited = true; continue; }
        if (m && m.return === id) return;
        continue;
      }
      const m = parse(l);
      if (m && m.return === id) return;
    }
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.send(command, args);
    for (;;) {
      const m = parse(await this.line());
      if (!m) continue;
      if (m.error) {
        const e = m.error as { class?: string; desc?: string };
        throw new QgaError(command, String(e.class ?? 'GenericError'), String(e.desc ?? ''));
      }
      if ('return' in m) return m.return as T;
    }
  }

  close(): void { this.sock.destroy(); }
}

function parse(l: Buffer): Record<string, any> | undefined {
  const s = l.toString('utf8').trim();
  if (!s.startsWith('{')) return undefined;
  try { const v = JSON.parse(s) as unknown; return v && typeof v === 'object' ? (v as Record<string, any>) : undefined; } catch { return undefined; }
}

/** Ask an agent for what VM_guest_metrics needs; undefined when none answers within timeoutMs. */
export async function queryGuestAgent(socketPath: string, timeoutMs: number): Promise<GuestInfo | undefined> {
  let s: QgaSession | undefined;
  try {
    s = await QgaSession.open(socketPath, timeoutMs);
    await s.sync();
    const info = await s.execute<{ version?: string }>('guest-info');
    const optional = async <T>(cmd: string): Promise<T | undefined> => {
      try { return await s!.execute<T>(cmd); } catch (e) { if (e instanceof QgaError) return undefined; throw e; }
    };
    const os = (await optional<Record<string, string>>('guest-get-osinfo')) ?? {};
    const nics = (await optional<QgaInterface[]>('guest-network-get-interfaces')) ?? [];
    const host = await optional<{ 'host-name'?: string }>('guest-get-host-name');
    return {
      osName: String(os['pretty-name'] ?? os.name ?? ''),
      osVersion: String(os['version-id'] ?? os.version ?? ''),
      distro: os.id !== undefined ? String(os.id) : undefined,
      kernel: String(os['kernel-release'] ?? ''),
      hostname: String(host?.['host-name'] ?? ''),
      interfaces: (Array.isArray(nics) ? nics : []).map((n) => {
        const ips = Array.isArray(n['ip-addresses']) ? n['ip-addresses'] : [];
        return {
          name: String(n.name ?? ''),
          mac: String(n['hardware-address'] ?? '').toLowerCase(),
          ipv4: ips.filter((a) => a['ip-address-type'] === 'ipv4').map((a) => String(a['ip-address'])),
          ipv6: ips.filter((a) => a['ip-address-type'] === 'ipv6').map((a) => String(a['ip-address'])),
        };
      }),
      agentVersion: String(info?.version ?? ''),
    };
  } catch {
    return undefined;
  } finally {
    s?.close();
  }
}

interface QgaInterface {
  name?: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type'?: string; 'ip-address'?: string; prefix?: number }[];
}
