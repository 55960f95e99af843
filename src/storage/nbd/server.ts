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
import type { BlockDevice, NbdExport, NbdServeOptions } from './types.ts';
import { MAX_NAME_LENGTH, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES } from './protocol.ts';
import { Connection, type ExportState } from './connection.ts';

export type { BlockDevice, NbdExport, NbdServeOptions } from './types.ts';
export { NbdDeviceError, NBD_EPERM, NBD_EIO, NBD_EINVAL, NBD_ENOSPC, NBD_ESHUTDOWN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES, NBD_FLAG_CAN_MULTI_CONN } from './protocol.ts';

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
      device.abort?.();
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
