/**
 * Reading RPC bodies with bounds set before anything is buffered: a size cap
 * (the declared Content-Length is checked first, then bytes are counted as
 * they stream), a budget of bytes held by all RPC requests together, and a
 * deadline for the whole body. A refused body is drained, not buffered, so
 * the client reads its refusal instead of a reset connection.
 *
 * This runs for every call, so it allocates no closures per request: one
 * object holds a body's state and module-level listeners find it through the
 * request (closures cost ~10 µs a call here, mostly tsx's function naming).
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

/** A body that was read whole: its bytes stay counted in flight until the call is done with them. */
class HeldBody {
  readonly ok = true;
  constructor(
    readonly text: string,
    private readonly read: BodyRead,
  ) {}
  release(): void {
    this.read.release();
  }
}

/** One body being read. */
class BodyRead {
  size = 0;
  settled = false;
  readonly chunks: Buffer[] = [];
  constructor(
    readonly bodies: RpcBodies,
    readonly req: http.IncomingMessage,
    /** A declared length is filled in place (no second copy); a chunked body is joined at its end. */
    readonly whole: Buffer | undefined,
    public reserved: number,
    readonly deadline: number,
    readonly resolve: (outcome: BodyOutcome) => void,
  ) {}

  release(): void {
    this.bodies.unreserve(this.reserved);
    this.reserved = 0;
  }

  finish(outcome: BodyOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.bodies.forget(this);
    reads.delete(this.req);
    this.req.off('data', onData);
    this.req.off('end', onEnd);
    this.req.off('error', onAbort);
    this.req.off('aborted', onAbort);
    if (!outcome.ok) {
      this.chunks.length = 0;
      this.release();
      if (outcome.refusal.kind !== 'aborted') drain(this.req);
    }
    this.resolve(outcome);
  }
}

const reads = new WeakMap<http.IncomingMessage, BodyRead>();

function onData(this: http.IncomingMessage, c: Buffer): void {
  const r = reads.get(this);
  if (!r) return;
  const { maxRpcBodyBytes } = r.bodies.limits;
  r.size += c.length;
  if (r.size > maxRpcBodyBytes) return r.finish({ ok: false, refusal: { kind: 'too-large', limit: maxRpcBodyBytes } });
  if (r.size > r.reserved) {
    if (!r.bodies.reserve(r.size - r.reserved)) return r.finish({ ok: false, refusal: { kind: 'busy' } });
    r.reserved = r.size;
  }
  if (r.whole && r.size <= r.whole.length) c.copy(r.whole, r.size - c.length);
  else r.chunks.push(c);
}

function onEnd(this: http.IncomingMessage): void {
  const r = reads.get(this);
  if (!r || r.settled) return;
  const text = r.whole ? r.whole.toString('utf8', 0, r.size) : r.chunks.length === 1 ? r.chunks[0].toString('utf8') : Buffer.concat(r.chunks).toString('utf8');
  r.chunks.length = 0;
  r.finish(new HeldBody(text, r));
}

function onAbort(this: http.IncomingMessage): void {
  reads.get(this)?.finish({ ok: false, refusal: { kind: 'aborted' } });
}

export class RpcBodies {
  private inFlight = 0;
  /** Bodies being read: one sweep a second checks their deadlines instead of a timer per request. */
  private readonly reading = new Set<BodyRead>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(readonly limits: HttpLimits) {}

  /** Bytes currently held by RPC bodies (for tests and logs). */
  get bytesInFlight(): number {
    return this.inFlight;
  }

  /** Counts `bytes` more in flight, unless that would pass the budget. */
  reserve(bytes: number): boolean {
    if (this.inFlight + bytes > this.limits.maxRpcBytesInFlight) return false;
    this.inFlight += bytes;
    return true;
  }

  unreserve(bytes: number): void {
    this.inFlight -= bytes;
  }

  forget(read: BodyRead): void {
    this.reading.delete(read);
  }

  read(req: http.IncomingMessage): Promise<BodyOutcome> {
    const { maxRpcBodyBytes, rpcBodyTimeoutMs } = this.limits;
    const declared = contentLength(req);
    if (declared !== undefined && declared > maxRpcBodyBytes) return Promise.resolve(refuse(req, { kind: 'too-large', limit: maxRpcBodyBytes }));
    // a declared length is reserved whole at once; a chunked body chunk by chunk
    const reserved = declared ?? 0;
    if (!this.reserve(reserved)) return Promise.resolve(refuse(req, { kind: 'busy' }));
    return new Promise((resolve) => {
      const whole = declared !== undefined ? Buffer.allocUnsafe(declared) : undefined;
      const r = new BodyRead(this, req, whole, reserved, Date.now() + rpcBodyTimeoutMs, resolve);
      reads.set(req, r);
      this.watch(r);
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onAbort);
      req.on('aborted', onAbort);
    });
  }

  private watch(read: BodyRead): void {
    this.reading.add(read);
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (const r of this.reading) if (now > r.deadline) r.finish({ ok: false, refusal: { kind: 'timeout' } });
    if (this.reading.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

function refuse(req: http.IncomingMessage, refusal: BodyRefusal): BodyOutcome {
  drain(req);
  return { ok: false, refusal };
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
