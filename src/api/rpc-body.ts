/**
 * Reading RPC bodies with bounds set before anything is buffered: a size cap
 * (the declared Content-Length is checked first, then bytes are counted as
 * they stream), a budget of bytes held by all RPC requests together, and a
 * deadline for the whole body. A refused body is drained, not buffered, so
 * the client reads its refusal instead of a reset connection.
 */
import type http from 'node:http';
import type { HttpLimits } from './limits.ts';

export type BodyRefusal =
  | { readonly kind: 'too-large'; readonly limit: number }
  | { readonly kind: 'busy' }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'aborted' };

export type BodyOutcome = { readonly ok: true; readonly text: string; release(): void } | { readonly ok: false; readonly refusal: BodyRefusal };

/** Refused bodies are read and thrown away up to this much, then the connection is cut. */
const DRAIN_LIMIT = 64 * 1024 * 1024;

export class RpcBodies {
  private inFlight = 0;
  /** Bodies being read, with their deadlines: one sweep a second instead of a timer per request. */
  private readonly reading = new Map<() => void, number>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly limits: HttpLimits) {}

  private watch(expire: () => void): void {
    this.reading.set(expire, Date.now() + this.limits.rpcBodyTimeoutMs);
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [expire, deadline] of this.reading) if (now > deadline) expire();
      if (this.reading.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, 1000);
    this.sweeper.unref();
  }

  /** Bytes currently held by RPC bodies (for tests and logs). */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  read(req: http.IncomingMessage): Promise<BodyOutcome> {
    const { maxRpcBodyBytes, maxRpcBytesInFlight } = this.limits;
    const declared = contentLength(req);
    if (declared !== undefined && declared > maxRpcBodyBytes) return Promise.resolve(this.refuse(req, { kind: 'too-large', limit: maxRpcBodyBytes }));
    // a declared length is reserved whole at once; a chunked body chunk by chunk
    let reserved = declared ?? 0;
    if (this.inFlight + reserved > maxRpcBytesInFlight) return Promise.resolve(this.refuse(req, { kind: 'busy' }));
    this.inFlight += reserved;
    return new Promise((resolve) => {
      // a declared length is filled in place (no second copy); a chunked body is joined at its end
      const whole = declared !== undefined ? Buffer.allocUnsafe(declared) : undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const release = (): void => {
        this.inFlight -= reserved;
        reserved = 0;
      };
      const finish = (outcome: BodyOutcome): void => {
        if (settled) return;
        settled = true;
        this.reading.delete(expire);
        req.off('data', onData);
        if (!outcome.ok) {
          chunks.length = 0;
          release();
          if (outcome.refusal.kind !== 'aborted') drain(req);
        }
        resolve(outcome);
      };
      const expire = (): void => finish({ ok: false, refusal: { kind: 'timeout' } });
      this.watch(expire);
      const onData = (c: Buffer): void => {
        size += c.length;
        if (size > maxRpcBodyBytes) return finish({ ok: false, refusal: { kind: 'too-large', limit: maxRpcBodyBytes } });
        if (size > reserved) {
          if (this.inFlight + (size - reserved) > maxRpcBytesInFlight) return finish({ ok: false, refusal: { kind: 'busy' } });
          this.inFlight += size - reserved;
          reserved = size;
        }
        if (whole && size <= whole.length) c.copy(whole, size - c.length);
        else chunks.push(c);
      };
      req.on('data', onData);
      req.once('end', () => {
        if (settled) return;
        const text = whole ? whole.toString('utf8', 0, size) : chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8');
        chunks.length = 0;
        finish({ ok: true, text, release });
      });
      req.once('error', () => finish({ ok: false, refusal: { kind: 'aborted' } }));
      req.once('aborted', () => finish({ ok: false, refusal: { kind: 'aborted' } }));
    });
  }

  private refuse(req: http.IncomingMessage, refusal: BodyRefusal): BodyOutcome {
    drain(req);
    return { ok: false, refusal };
  }
}

function contentLength(req: http.IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v); // Node's parser has already refused a malformed Content-Length
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Reads and discards the rest of a refused body, so the refusal reaches the client; cuts a body that goes on too long. */
function drain(req: http.IncomingMessage): void {
  let discarded = 0;
  req.on('error', () => undefined);
  req.on('data', (c: Buffer) => {
    discarded += c.length;
    if (discarded > DRAIN_LIMIT) req.socket.destroy();
  });
  req.resume();
}
