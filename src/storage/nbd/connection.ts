/** One client of an export: the handshake (options), then transmission (requests executed in order, reads concurrently, writes under the export's lock). */
import net from 'node:net';
import { Mutex } from './lock.ts';
import type { BlockDevice } from './types.ts';
import { CMD_DISC, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, EndOfStream, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO_BLOCK_SIZE, INFO_DESCRIPTION, INFO_EXPORT, INFO_NAME, MAX_NAME_LENGTH, MAX_OPTION_LENGTH, MAX_QUEUED_REPLY_BYTES, NBDMAGIC, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_REPLY_MAGIC, ProtocolError, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, ZERO_CHUNK, toNbdErrno } from './protocol.ts';
import { SocketReader } from './socket-reader.ts';

export interface ExportState {
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

export class Connection {
  private readonly reader: SocketReader;
  private readonly inflight = new Set<Promise<void>>();
  /** Settles when every write-class request issued so far has completed. */
  private writeBarrier: Promise<void> = Promise.resolve();
  private stopping = false;
  private inTransmission = false;
  /** Whether this client changed the device: its leaving then flushes, so that whoever opens the image next reads it whole. */
  private wrote = false;
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
      await this.flushOnLeaving();
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

  /**
   * A client that wrote and leaves (NBD_CMD_DISC, or its socket closed: a
   * device model that quit or was killed) gets its writes made durable, as
   * an explicit flush would: live migration opens the image on another host
   * right after the sending side let go of it.
   */
  private async flushOnLeaving(): Promise<void> {
    if (!this.wrote || this.ex.device.readOnly) return;
    await this.ex.writeLock.run(() => this.ex.device.flush()).catch((e: unknown) => this.ex.log(`nbd: flush at disconnect failed: ${(e as Error).message}`));
  }

  /** Run a write-class request after everything issued before it on this connection, under the export write lock. */
  private ordered(cookie: Buffer, op: () => Promise<void>, changes = true): void {
    if (changes) this.wrote = true;
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
          this.ordered(cookie, () => dev.flush(), false);
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

