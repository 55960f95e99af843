/** Raw HTTP over a socket the test opens itself: for requests no well-behaved client would send. */
import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The port of an http://host:port URL. */
export const portOf = (url: string): number => Number(new URL(url).port);

/**
 * Sends `request` bytes as they are and reads one response (by Content-Length,
 * or to the end of the connection). Rejects if the connection closes with no status.
 */
export function rawRequest(port: number, request: string | Buffer | readonly Buffer[], timeoutMs = 10_000, localAddress?: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    const first = typeof request === 'string' || Buffer.isBuffer(request) ? request : request[0];
    const isHead = (typeof first === 'string' ? first : first.toString('latin1', 0, 5)).startsWith('HEAD ');
    let data = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete response within ${timeoutMs} ms; got ${JSON.stringify(data.toString('latin1').slice(0, 200))}`));
    }, timeoutMs);
    const tryParse = (ended: boolean): boolean => {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const head = data.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0])?.[1]);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      let body: Buffer = data.subarray(end + 4);
      const bodiless = isHead || status === 304 || status === 204 || (status >= 100 && status < 200);
      const chunked = /chunked/i.test(headers['transfer-encoding'] ?? '');
      if (chunked && !bodiless) {
        const last = body.indexOf('\r\n0\r\n\r\n');
        if (last < 0 && !body.subarray(0, 5).equals(Buffer.from('0\r\n\r\n'))) {
          if (!ended) return false;
        } else body = dechunk(body);
      }
      const length = bodiless ? 0 : chunked ? body.length : headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
      if (length === undefined ? !ended : body.length < length) return false;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status, headers, body: body.subarray(0, length ?? body.length).toString('utf8') });
      return true;
    };
    socket.on('data', (c: Buffer) => {
      data = Buffer.concat([data, c]);
      tryParse(false);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (tryParse(true)) return;
      clearTimeout(timer);
      reject(new Error(`connection closed without a complete response; got ${JSON.stringify(data.toString('latin1').slice(0, 200))}`));
    });
    // several buffers are written as they are: a large shared body is never copied
    for (const part of typeof request === 'string' || Buffer.isBuffer(request) ? [request] : request) socket.write(part);
  });
}

/** The data of a chunked body (extensions and trailers ignored). */
function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    if (eol < 0) break;
    const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(body.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}
