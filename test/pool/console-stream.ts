/** A console held open through HTTP CONNECT /console, as `xe console` and Xen Orchestra hold one: every line and when it came. */
import net from 'node:net';

export type Target = { socketPath: string } | { host: string; port: number };

export interface ConsoleStream {
  /** Complete lines, with the time each arrived. */
  readonly lines: { text: string; at: number }[];
  /** Everything received after the HTTP header. */
  text(): string;
  readonly closed: () => boolean;
  write(text: string): void;
  close(): void;
}

/** Sends a request line and headers on a fresh connection; resolves with the status line and the connection once the header is in. */
export function rawRequest(target: Target, requestLine: string, headers: Record<string, string> = {}): Promise<{ status: number; head: string; socket: net.Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection('socketPath' in target ? { path: target.socketPath } : target, () => {
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      s.write(`${requestLine} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`);
    });
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      s.pause();
      const head = got.subarray(0, end).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), head, socket: s, rest: got.subarray(end + 4) });
    };
    s.on('data', onData);
    s.on('error', reject);
    s.on('close', () => reject(new Error(`closed before a header: ${got.toString('latin1')}`)));
  });
}

export async function openConsoleStream(target: Target, path: string): Promise<ConsoleStream> {
  const r = await rawRequest(target, `CONNECT ${path}`);
  if (r.status !== 200) {
    r.socket.destroy();
    throw new Error(`CONNECT ${path}: ${r.head}`);
  }
  const s = r.socket;
  s.removeAllListeners('close');
  const lines: { text: string; at: number }[] = [];
  let all = '';
  let partial = '';
  let closed = false;
  const take = (d: Buffer): void => {
    const at = Date.now();
    const t = d.toString('utf8');
    all += t;
    partial += t;
    const parts = partial.split(/\r?\n/);
    partial = parts.pop() ?? '';
    for (const p of parts) lines.push({ text: p, at });
  };
  take(r.rest);
  s.on('data', take);
  s.on('close', () => (closed = true));
  s.on('error', () => s.destroy());
  s.resume();
  return { lines, text: () => all, closed: () => closed, write: (x) => void s.write(x), close: () => s.destroy() };
}
