/**
 * A small NBD server (fixed newstyle handshake, simple replies) serving one
 * `BlockDevice` over a unix socket, written from the NBD protocol
 * specification (doc/proto.md of the NBD project). QEMU, qemu-img, qemu-io
 * and qemu-nbd --list can all talk to it:
 *
 *   -blockdev driver=nbd,node-name=x,server.type=unix,server.path=<sock>,export=<name>
 *   qemu-img convert -f raw 'nbd+unix:///<name>?socket=<sock>' out.raw
 *
 * Handshake: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES; options
 * EXPORT_NAME, GO, INFO (NBD_INFO_EXPORT / NAME / DESCRIPTION / BLOCK_SIZE),
 * LIST, ABORT; everything else (STRUCTURED_REPLY, STARTTLS, META_CONTEXT,
 * EXTENDED_HEADERS, ...) gets NBD_REP_ERR_UNSUP. Malformed handshakes (bad
 * magic, unknown client flags, oversized option, unknown export for
 * EXPORT_NAME) close the connection.
 *
 * Transmission: READ, WRITE, FLUSH, DISC, TRIM (if the device has trim),
 * WRITE_ZEROES; the FUA flag. Requests of one connection are executed in
 * order, except that consecutive reads run concurrently; a write, flush, trim
 * or write-zeroes waits for every earlier request of its connection and then
 * for the export-wide write mutex (so writes of all connections are
 * serialized). Replies can therefore be sent out of order (the client matches
 * them by cookie). Bad requests get an NBD error reply, never a crash:
 * out-of-range read → EINVAL, out-of-range write / write-zeroes → ENOSPC,
 * write / trim on a read-only export → EPERM, unknown command or flag →
 * EINVAL, request larger than `maxPayload` → EINVAL (write payloads are
 * skipped). A bad request magic closes the connection.
 */
import net from 'node:net';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { Mutex } from './lock.ts';

/** A byte-addressed device an NBD export serves. All offsets/lengths are validated by the server first. */
export interface BlockDevice {
  /** Size in bytes. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Exactly `length` bytes at `offset` (the server guarantees `offset + length <= size`). */
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Make completed writes durable. */
  flush(): Promise<void>;
  /** Discard a range (contents afterwards unspecified). If absent, NBD_CMD_TRIM is not offered. */
  trim?(offset: number, length: number): Promise<void>;
  /** Make a range read as zeros. If absent the server writes zero buffers. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}

export interface NbdServeOptions {
  /** Export name clients ask for; the empty (default) name is accepted too. Default ''. */
  exportName?: string;
  /** Free text returned for NBD_INFO_DESCRIPTION. */
  description?: string;
  /** Largest READ / WRITE / WRITE_ZEROES chunk accepted (bytes). Default 32 MiB. */
  maxPayload?: number;
  /** Preferred block size advertised with NBD_INFO_BLOCK_SIZE. Default 4096. */
  preferredBlockSize?: number;
  /** Connections still negotiating after this long are dropped. Default 30 s. */
  handshakeTimeoutMs?: number;
  /** Requests executing concurrently per connection before the server stops reading. Default 16. */
  maxInflight?: number;
  /** Permission bits of the socket file. Default 0o600. */
  socketMode?: number;
  /** Diagnostic messages (connection errors, protocol violations). */
  log?: (msg: string) => void;
}

export interface NbdExport {
  readonly socketPath: string;
  readonly exportName: string;
  /** `nbd+unix:///<name>?socket=<path>` for qemu-img / qemu-io / -drive file=. */
  readonly uri: string;
  readonly size: number;
  readonly readOnly: boolean;
  /** Open client connections. */
  readonly connectionCount: number;
  /** Stop listening, let in-flight requests finish, end the connections, close the device. Idempotent. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Protocol constants (doc/proto.md)

const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;

const FLAG_FIXED_NEWSTYLE = 1 << 0;
const FLAG_NO_ZEROES = 1 << 1;
const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
const FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

const OPT_EXPORT_NAME = 1;
const OPT_ABORT = 2;
const OPT_LIST = 3;
const OPT_INFO = 6;
const OPT_GO = 7;

const REP_ACK = 1;
const REP_SERVER = 2;
const REP_INFO = 3;
const REP_ERR_UNSUP = 0x80000001;
const REP_ERR_INVALID = 0x80000003;
const REP_ERR_UNKNOWN = 0x80000006;

const INFO_EXPORT = 0;
const INFO_NAME = 1;
const INFO_DESCRIPTION = 2;
const INFO_BLOCK_SIZE = 3;

const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;
const CMD_TRIM = 4;
const CMD_WRITE_ZEROES = 6;

const CMD_FLAG_FUA = 1 << 0;
const CMD_FLAG_NO_HOLE = 1 << 1;

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_ESHUTDOWN = 108;

/** Options larger than this are a protocol violation here (names are <= 4096 bytes). */
const MAX_OPTION_LENGTH = 64 * 1024;
const MAX_NAME_LENGTH = 4096;
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);
/** Stop reading requests while this much reply data is queued on the socket. */
const MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024;

/**
 * An error a BlockDevice may throw to choose the NBD error code sent back
 * (otherwise the server maps errno-style `code`s: EPERM/EROFS/EACCES → EPERM,
 * ENOSPC/EDQUOT/EFBIG → ENOSPC, EINVAL → EINVAL, anything else → EIO).
 */
export class NbdDeviceError extends Error {
  readonly nbdErrno: number;
  constructor(nbdErrno: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NbdDeviceError';
    this.nbdErrno = nbdErrno;
  }
}

function toNbdErrno(e: unknown): number {
  const x = e as { nbdErrno?: unknown; code?: unknown } | null;
  if (x && typeof x.nbdErrno === 'number' && x.nbdErrno > 0) return x.nbdErrno;
  switch (x?.code) {
    case 'EPERM':
    case 'EROFS':
    case 'EACCES':
      return NBD_EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    default:
      return NBD_EIO;
  }
}

class ProtocolError extends Error {}
class EndOfStream extends Error {}

// ---------------------------------------------------------------------------
// Buffered reading of exact byte counts from a socket, with flow control.

class SocketReader {
  private chunks: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  private want = 0;
  private waiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.length;
      if (this.waiter && this.buffered >= this.want) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve();
      }
      this.flow();
    });
    socket.on('end', () => this.fail(new EndOfStream('connection closed by peer')));
    socket.on('close', () => this.fail(new EndOfStream('connection closed')));
    socket.on('error', (e) => this.fail(e));
  }

  /** Reject the pending and all future reads that cannot be satisfied from the buffer. */
  fail(e: Error): void {
    if (!this.failure) this.failure = e;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  private flow(): void {
    if (this.socket.destroyed) return;
    if (this.buffered >= Math.max(this.highWater, this.want)) this.socket.pause();
    else if (this.socket.isPaused()) this.socket.resume();
  }

  async read(n: number): Promise<Buffer> {
    if (this.buffered < n) {
      if (this.failure) throw this.failure;
      this.want = n;
      try {
        await new Promise<void>((resolve, reject) => {
          this.waiter = { resolve, reject };
          this.flow();
        });
      } finally {
        this.want = 0;
      }
    }
    const out = this.take(n);
    this.flow();
    return out;
  }

  /** Discard `n` bytes without holding them all in memory. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, 1024 * 1024);
      await this.read(k);
      n -= k;
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length - this.head, n - filled);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      this.head += k;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    return out;
  }
}

// ---------------------------------------------------------------------------

interface ExportState {
  device: BlockDevice;
  name: string;
  description: string | undefined;
  maxPayload: number;
  preferredBlockSize: number;
  handshakeTimeoutMs: number;
  maxInflight: number;
  transmissionFlags: number;
  writeLock: Mutex;
  log: (msg: string) => void;
}

class Connection {
  private readonly reader: SocketReader;
  private readonly inflight = new Set<Promise<void>>();
  /** Settles when every write-class request issued so far has completed. */
  private writeBarrier: Promise<void> = Promise.resolve();
  private stopping = false;
  private inTransmission = false;
  readonly done: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly ex: ExportState,
  ) {
    this.reader = new SocketReader(socket);
    this.done = this.run();
  }

  /** Ask the connection to finish: no new requests, in-flight ones complete, then the socket ends. */
  stop(): void {
    this.stopping = true;
    this.reader.fail(new EndOfStream('server shutting down'));
  }

  private async run(): Promise<void> {
    const timer = setTimeout(() => {
      if (!this.inTransmission) {
        this.ex.log('nbd: handshake timeout');
        this.socket.destroy();
      }
    }, this.ex.handshakeTimeoutMs);
    timer.unref?.();
    let graceful = false;
    try {
      const go = await this.handshake();
      clearTimeout(timer);
      if (go) {
        this.inTransmission = true;
        await this.transmission();
      }
      graceful = true;
    } catch (e) {
      if (!(e instanceof EndOfStream)) this.ex.log(`nbd: closing connection: ${(e as Error).message}`);
      else graceful = true;
    } finally {
      clearTimeout(timer);
      await Promise.allSettled([...this.inflight]);
      if (graceful && !this.socket.destroyed) {
        this.socket.end();
        // make sure the fd goes away even if the peer never closes its side
        const t = setTimeout(() => this.socket.destroy(), 5000);
        t.unref?.();
        this.socket.once('close', () => clearTimeout(t));
      } else {
        this.socket.destroy();
      }
    }
  }

  // ------------------------------------------------------------------ handshake

  private sendOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.allocUnsafe(20);
    h.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type >>> 0, 12);
    h.writeUInt32BE(data.length, 16);
    this.socket.write(data.length ? Buffer.concat([h, data]) : h);
  }

  private sendOptionError(option: number, type: number, message: string): void {
    this.sendOptionReply(option, type, Buffer.from(message, 'utf8'));
  }

  private nameMatches(name: string): boolean {
    return name === this.ex.name || name === '';
  }

  /** Returns true to enter transmission, false to close (ABORT). Throws on protocol violations. */
  private async handshake(): Promise<boolean> {
    const hello = Buffer.allocUnsafe(18);
    NBDMAGIC.copy(hello, 0);
    IHAVEOPT.copy(hello, 8);
    hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(hello);

    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
      throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      if (this.stopping) throw new EndOfStream('server shutting down');
      const h = await this.reader.read(16);
      if (!h.subarray(0, 8).equals(IHAVEOPT)) throw new ProtocolError('bad option magic');
      const option = h.readUInt32BE(8);
      const length = h.readUInt32BE(12);
      if (length > MAX_OPTION_LENGTH) throw new ProtocolError(`option ${option} too long (${length} bytes)`);
      const data = await this.reader.read(length);

      switch (option) {
        case OPT_EXPORT_NAME: {
          const name = data.toString('utf8');
          if (!this.nameMatches(name)) throw new ProtocolError(`unknown export ${JSON.stringify(name)}`);
          const reply = Buffer.alloc(noZeroes ? 10 : 10 + 124);
          reply.writeBigUInt64BE(BigInt(this.ex.device.size), 0);
          reply.writeUInt16BE(this.ex.transmissionFlags, 8);
          this.socket.write(reply);
          return true;
        }
        case OPT_ABORT:
          this.sendOptionReply(option, REP_ACK);
          return false;
        case OPT_LIST: {
          if (length !== 0) {
            this.sendOptionError(option, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          const name = Buffer.from(this.ex.name, 'utf8');
          const d = Buffer.allocUnsafe(4 + name.length);
          d.writeUInt32BE(name.length, 0);
          name.copy(d, 4);
          this.sendOptionReply(option, REP_SERVER, d);
          this.sendOptionReply(option, REP_ACK);
          break;
        }
        case OPT_INFO:
        case OPT_GO: {
          if (length < 6) {
            this.sendOptionError(option, REP_ERR_INVALID, 'option data too short');
            break;
          }
          const nameLen = data.readUInt32BE(0);
          if (nameLen > MAX_NAME_LENGTH || 4 + nameLen + 2 > length) {
            this.sendOptionError(option, REP_ERR_INVALID, 'bad export name length');
            break;
          }
          const name = data.toString('utf8', 4, 4 + nameLen);
          const nInfo = data.readUInt16BE(4 + nameLen);
          if (4 + nameLen + 2 + 2 * nInfo !== length) {
            this.sendOptionError(option, REP_ERR_INVALID, 'bad information request count');
            break;
          }
          const requested = new Set<number>();
          for (let i = 0; i < nInfo; i++) requested.add(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
          if (!this.nameMatches(name)) {
            this.sendOptionError(option, REP_ERR_UNKNOWN, `no export named ${JSON.stringify(name)}`);
            break;
          }
          this.sendInfo(option, requested);
          this.sendOptionReply(option, REP_ACK);
          if (option === OPT_GO) return true;
          break;
        }
        default:
          // STARTTLS, STRUCTURED_REPLY, META_CONTEXT, EXTENDED_HEADERS and anything unknown
          this.sendOptionError(option, REP_ERR_UNSUP, `option ${option} not supported`);
      }
    }
  }

  private sendInfo(option: number, requested: Set<number>): void {
    const exp = Buffer.allocUnsafe(12);
    exp.writeUInt16BE(INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(this.ex.device.size), 2);
    exp.writeUInt16BE(this.ex.transmissionFlags, 10);
    this.sendOptionReply(option, REP_INFO, exp);
    if (requested.has(INFO_NAME)) {
      const t = Buffer.allocUnsafe(2);
      t.writeUInt16BE(INFO_NAME, 0);
      this.sendOptionReply(option, REP_INFO, Buffer.concat([t, Buffer.from(this.ex.name, 'utf8')]));
    }
    if (requested.has(INFO_DESCRIPTION) && this.ex.description !== undefined) {
      const t = Buffer.allocUnsafe(2);
      t.writeUInt16BE(INFO_DESCRIPTION, 0);
      this.sendOptionReply(option, REP_INFO, Buffer.concat([t, Buffer.from(this.ex.description, 'utf8')]));
    }
    if (requested.has(INFO_BLOCK_SIZE)) {
      const b = Buffer.allocUnsafe(14);
      b.writeUInt16BE(INFO_BLOCK_SIZE, 0);
      b.writeUInt32BE(1, 2); // minimum: any alignment is fine
      b.writeUInt32BE(this.ex.preferredBlockSize, 6);
      b.writeUInt32BE(this.ex.maxPayload, 10);
      this.sendOptionReply(option, REP_INFO, b);
    }
  }

  // ------------------------------------------------------------------ transmission

  private reply(cookie: Buffer, error: number, data?: Buffer): void {
    if (this.socket.destroyed) return;
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    cookie.copy(h, 8);
    if (data && data.length > 0 && error === 0) {
      this.socket.cork();
      this.socket.write(h);
      this.socket.write(data);
      this.socket.uncork();
    } else {
      this.socket.write(h);
    }
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async waitForCapacity(): Promise<void> {
    while (this.inflight.size >= this.ex.maxInflight) await Promise.race(this.inflight);
    if (this.socket.writableLength > MAX_QUEUED_REPLY_BYTES && !this.socket.destroyed) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      });
    }
  }

  /** Run a write-class request after everything issued before it on this connection, under the export write lock. */
  private ordered(cookie: Buffer, op: () => Promise<void>): void {
    const before = Promise.allSettled([...this.inflight]);
    const p = before
      .then(() => this.ex.writeLock.run(op))
      .then(
        () => this.reply(cookie, 0),
        (e: unknown) => {
          this.ex.log(`nbd: request failed: ${(e as Error).message}`);
          this.reply(cookie, toNbdErrno(e));
        },
      );
    this.writeBarrier = p;
    this.track(p);
  }

  private async transmission(): Promise<void> {
    const ex = this.ex;
    const dev = ex.device;
    const size = dev.size;
    const fuaOk = (ex.transmissionFlags & NBD_FLAG_SEND_FUA) !== 0;
    const inRange = (off: number, len: number): boolean => off <= size && len <= size - off;

    while (!this.stopping) {
      await this.waitForCapacity();
      if (this.stopping) break;
      const h = await this.reader.read(28);
      if (h.readUInt32BE(0) !== REQUEST_MAGIC) throw new ProtocolError('bad request magic');
      const flags = h.readUInt16BE(4);
      const type = h.readUInt16BE(6);
      const cookie = Buffer.from(h.subarray(8, 16));
      const off64 = h.readBigUInt64BE(16);
      const offset = off64 > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(off64);
      const length = h.readUInt32BE(24);
      const fua = (flags & CMD_FLAG_FUA) !== 0;
      const badFlags = (allowed: number): boolean => (flags & ~allowed) !== 0 || (fua && !fuaOk);

      switch (type) {
        case CMD_READ: {
          let err = 0;
          if (badFlags(CMD_FLAG_FUA)) err = NBD_EINVAL;
          else if (length > ex.maxPayload) err = NBD_EINVAL;
          else if (!inRange(offset, length)) err = NBD_EINVAL;
          if (err) {
            this.reply(cookie, err);
            break;
          }
          const p = this.writeBarrier.then(async () => {
            try {
              const data = length === 0 ? Buffer.alloc(0) : await dev.read(offset, length);
              if (data.length !== length) throw new Error(`device returned ${data.length} bytes, expected ${length}`);
              this.reply(cookie, 0, data);
            } catch (e) {
              ex.log(`nbd: read [${offset}, +${length}) failed: ${(e as Error).message}`);
              this.reply(cookie, toNbdErrno(e));
            }
          });
          this.track(p);
          break;
        }
        case CMD_WRITE: {
          let data: Buffer | undefined;
          if (length > ex.maxPayload) await this.reader.skip(length);
          else data = await this.reader.read(length);
          let err = 0;
          if (badFlags(CMD_FLAG_FUA)) err = NBD_EINVAL;
          else if (dev.readOnly) err = NBD_EPERM;
          else if (!data) err = NBD_EINVAL;
          else if (!inRange(offset, length)) err = NBD_ENOSPC;
          if (err || !data) {
            this.reply(cookie, err || NBD_EINVAL);
            break;
          }
          const payload = data;
          this.ordered(cookie, async () => {
            if (payload.length > 0) await dev.write(offset, payload);
            if (fua) await dev.flush();
          });
          break;
        }
        case CMD_FLUSH: {
          if (badFlags(CMD_FLAG_FUA)) {
            this.reply(cookie, NBD_EINVAL);
            break;
          }
          this.ordered(cookie, () => dev.flush());
          break;
        }
        case CMD_TRIM: {
          let err = 0;
          if (!dev.trim || (ex.transmissionFlags & NBD_FLAG_SEND_TRIM) === 0) err = dev.readOnly ? NBD_EPERM : NBD_EINVAL;
          else if (badFlags(CMD_FLAG_FUA)) err = NBD_EINVAL;
          else if (!inRange(offset, length)) err = NBD_EINVAL;
          if (err) {
            this.reply(cookie, err);
            break;
          }
          this.ordered(cookie, async () => {
            if (length > 0) await dev.trim!(offset, length);
            if (fua) await dev.flush();
          });
          break;
        }
        case CMD_WRITE_ZEROES: {
          let err = 0;
          if (dev.readOnly) err = NBD_EPERM;
          else if (badFlags(CMD_FLAG_FUA | CMD_FLAG_NO_HOLE)) err = NBD_EINVAL;
          else if (!inRange(offset, length)) err = NBD_ENOSPC;
          if (err) {
            this.reply(cookie, err);
            break;
          }
          this.ordered(cookie, async () => {
            if (length > 0) {
              if (dev.writeZeroes) await dev.writeZeroes(offset, length);
              else {
                for (let pos = 0; pos < length; pos += ZERO_CHUNK.length) {
                  await dev.write(offset + pos, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - pos)));
                }
              }
            }
            if (fua) await dev.flush();
          });
          break;
        }
        case CMD_DISC:
          return;
        default:
          this.reply(cookie, NBD_EINVAL);
      }
    }
  }
}

// ---------------------------------------------------------------------------

async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) {
    throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw Object.assign(new Error(`${path}: another server is listening there`), { code: 'EADDRINUSE' });
  await unlink(path).catch(() => {});
}

/**
 * Serve `device` as an NBD export on the unix socket `socketPath` (created;
 * a stale socket file nobody listens on is replaced). The device is closed
 * by `NbdExport.close()`; if listening fails the device is left open.
 */
export async function serveNbd(device: BlockDevice, socketPath: string, opts: NbdServeOptions = {}): Promise<NbdExport> {
  if (!Number.isSafeInteger(device.size) || device.size < 0) throw new RangeError(`bad device size ${device.size}`);
  const name = opts.exportName ?? '';
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_LENGTH) throw new RangeError('export name longer than 4096 bytes');
  const maxPayload = opts.maxPayload ?? 32 * 1024 * 1024;
  if (!Number.isSafeInteger(maxPayload) || maxPayload < 512 || maxPayload > 0xffffffff) throw new RangeError(`bad maxPayload ${maxPayload}`);
  const preferred = opts.preferredBlockSize ?? 4096;

  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;
  if (device.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else {
    flags |= NBD_FLAG_SEND_WRITE_ZEROES;
    if (typeof device.trim === 'function') flags |= NBD_FLAG_SEND_TRIM;
  }

  const state: ExportState = {
    device,
    name,
    description: opts.description,
    maxPayload,
    preferredBlockSize: Math.min(preferred, maxPayload),
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 30_000,
    maxInflight: Math.max(1, opts.maxInflight ?? 16),
    transmissionFlags: flags,
    writeLock: new Mutex(),
    log: opts.log ?? (() => {}),
  };

  const connections = new Set<Connection>();
  let closing = false;
  let closed: Promise<void> | undefined;
  const server = net.createServer({ allowHalfOpen: false, pauseOnConnect: false }, (socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay?.(true);
    const c = new Connection(socket, state);
    connections.add(c);
    void c.done.finally(() => connections.delete(c));
  });
  server.on('error', (e) => state.log(`nbd: server error: ${e.message}`));

  await clearStaleSocket(socketPath);
  await new Promise<void>((resolve, reject) => {
    const onErr = (e: Error): void => reject(e);
    server.once('error', onErr);
    server.listen(socketPath, () => {
      server.off('error', onErr);
      resolve();
    });
  });
  try {
    await chmod(socketPath, opts.socketMode ?? 0o600);
  } catch (e) {
    server.close();
    throw e;
  }

  const close = (): Promise<void> => {
    if (closed) return closed;
    closing = true;
    closed = (async () => {
      const listening = new Promise<void>((resolve) => server.close(() => resolve()));
      const conns = [...connections];
      for (const c of conns) c.stop();
      await Promise.allSettled(conns.map((c) => c.done));
      await listening;
      await unlink(socketPath).catch(() => {});
      await device.close();
    })();
    return closed;
  };

  const uriName = encodeURIComponent(name).replace(/%2F/gi, '/');
  return {
    socketPath,
    exportName: name,
    uri: `nbd+unix:///${uriName}?socket=${socketPath}`,
    size: device.size,
    readOnly: device.readOnly,
    get connectionCount() {
      return connections.size;
    },
    close,
  };
}
