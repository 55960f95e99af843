/**
 * What the data paths (/import_raw_vdi, /export_raw_vdi, /import, /export)
 * share beyond authentication: reading an upload whose length the client may
 * not know, serialising uploads to one object, streams that fail before the
 * reply starts, and the HTTP status for a XenAPI error.
 */
import type http from 'node:http';
import { Readable } from 'node:stream';
import { XenApiError } from '../datamodel/api-error.ts';
import { failHttp } from './http-handlers.ts';

/**
 * Xen Orchestra's "length unknown": when it streams a body it cannot measure
 * it announces 2^50 bytes (1 PiB) and closes the connection after the last one.
 */
export const UNKNOWN_LENGTH = 2 ** 50;

/** A known-length upload that stopped early. */
export class UploadCutError extends Error {
  constructor(
    readonly received: number,
    readonly expected: number,
  ) {
    super(`the upload ended after ${received} of the ${expected} bytes announced`);
  }
}

export interface Upload {
  /** The bytes announced, or undefined when the client does not know them (chunked, no length, 2^50). */
  readonly length: number | undefined;
  /** The body. With an unknown length, the client closing the connection is its end. */
  readonly body: AsyncIterable<Buffer>;
  /** Bytes read so far. */
  received(): number;
}

/** The announced length: undefined when absent, chunked, not a number, or XO's 2^50 and above. */
export function announcedLength(req: http.IncomingMessage): number | undefined {
  const header = req.headers['content-length'];
  if (header === undefined || req.headers['transfer-encoding'] !== undefined) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) && n >= 0 && n < UNKNOWN_LENGTH ? n : undefined;
}

export function uploadOf(req: http.IncomingMessage): Upload {
  const length = announcedLength(req);
  let got = 0;
  async function* body(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        got += chunk.length;
        yield chunk;
      }
    } catch (e) {
      // a client that does not know the length ends its upload by closing the connection
      if (length === undefined && isClientClose(e)) return;
      if (length !== undefined && isClientClose(e)) throw new UploadCutError(got, length);
      throw e;
    }
    if (length !== undefined && got < length) throw new UploadCutError(got, length);
  }
  return { length, body: body(), received: () => got };
}

const isClientClose = (e: unknown): boolean => {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (e instanceof Error && e.message === 'aborted');
};

/** Reads and drops what is left of a request, so a reply sent before its end reaches the client. */
export function discardBody(req: http.IncomingMessage): void {
  if (req.readableEnded) return;
  req.removeAllListeners('readable');
  req.on('error', () => undefined);
  req.resume();
}

/**
 * Runs jobs for one key one after another (uploads to the same VDI). Xen
 * Orchestra probes with an empty request and sends the data right after; the
 * second waits for the first instead of failing.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, job: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release = (): void => undefined;
    const mine = new Promise<void>((r) => (release = r));
    const tail = before.then(() => mine);
    this.tails.set(key, tail);
    await before;
    try {
      return await job();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/**
 * A stream whose first chunk (or failure) has already come: a source that
 * cannot be read fails here, while the reply can still carry a status.
 */
export async function primed(stream: Readable): Promise<Readable> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      if (first.done) return;
      yield first.value;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await it.return?.();
    }
  }
  return Readable.from(rest(), { objectMode: false, highWaterMark: 4 * 1024 * 1024 });
}

/** The HTTP status that says what kind of failure a XenAPI error is. */
export function statusOf(e: XenApiError): number {
  switch (e.code) {
    case 'SESSION_INVALID':
    case 'SESSION_AUTHENTICATION_FAILED':
    case 'RBAC_PERMISSION_DENIED':
      return 403;
    case 'HANDLE_INVALID':
    case 'UUID_INVALID':
    case 'VDI_MISSING':
      return 404;
    case 'OPERATION_NOT_ALLOWED':
      return 405;
    case 'VDI_IN_USE':
    case 'OTHER_OPERATION_IN_PROGRESS':
    case 'VM_BAD_POWER_STATE':
    case 'SR_NOT_ATTACHED':
      return 409;
    case 'SR_FULL':
      return 507;
    case 'INTERNAL_ERROR':
      return 500;
    default:
      return 400;
  }
}

/** Answers with the error's status and its XenAPI description; a reply already started is cut. */
export function fail(res: http.ServerResponse, e: XenApiError): void {
  failHttp(res, statusOf(e), e);
}
