/**
 * qcow2 images for file SRs, through QEMU's own tools: qcow2 is QEMU's
 * format and qemu-img its reference implementation (Debian's qemu-utils).
 * Metadata operations run `qemu-img`; byte streams (raw export and import)
 * go through `qemu-nbd` on a private unix socket, spoken to by the small
 * NBD client below — qemu-img cannot read from or write to a pipe, and a
 * temporary raw copy of a multi-TiB disk is out of the question.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { SocketReader } from '../nbd/socket-reader.ts';

export interface Qcow2Info {
  virtualSize: number;
  actualSize: number;
  /** The backing file's name as written in the header. */
  backing?: string;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const e = new Error(`${cmd} ${args[0]}: ${String(stderr).trim() || err.message}`) as NodeJS.ErrnoException;
        if (/No space left/i.test(String(stderr))) e.code = 'ENOSPC';
        reject(e);
      } else resolve(String(stdout));
    });
  });
}

export const qemuImg = (...args: string[]): Promise<string> => run('qemu-img', args);

/** A thin image; with `backing`, an empty child of it (named by file name, so the SR directory can move). */
export async function qcow2Create(path: string, size: number, backing?: string): Promise<void> {
  if (backing) await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=off', '-b', basename(backing), '-F', 'qcow2', path);
  else await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=off', path, String(size));
}

export async function qcow2Info(path: string): Promise<Qcow2Info> {
  // -U: an image a running guest holds open is still readable for its metadata
  const j = JSON.parse(await qemuImg('info', '-U', '--output=json', '-f', 'qcow2', path)) as Record<string, unknown>;
  return { virtualSize: Number(j['virtual-size']), actualSize: Number(j['actual-size'] ?? 0), backing: j['backing-filename'] as string | undefined };
}

export const qcow2Resize = (path: string, size: number): Promise<string> => qemuImg('resize', '-q', '-f', 'qcow2', path, String(size));

/** Writes a child's clusters into its backing file. */
export const qcow2Commit = (path: string): Promise<string> => qemuImg('commit', '-q', '-f', 'qcow2', '-d', path);

/** A flattened copy of a whole chain into a new standalone image. */
export function qcow2Convert(src: string, dst: string, outFormat: 'qcow2' | 'vpc', progress?: (f: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const opts = outFormat === 'vpc' ? 'subformat=dynamic' : 'preallocation=off';
    const p = spawn('qemu-img', ['convert', '-p', '-f', 'qcow2', '-O', outFormat, '-o', opts, src, dst], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.on('data', (c: Buffer) => {
      const m = /([\d.]+)\/100%\)\s*$/.exec(c.toString());
      if (m) progress?.(Number(m[1]) / 100);
    });
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(Object.assign(new Error(`qemu-img convert: ${err.trim()}`), /No space left/i.test(err) ? { code: 'ENOSPC' } : {}))));
  });
}

// ------------------------------------------------------------------ NBD

const NBD_REQUEST = 0x25609513;
const NBD_REPLY = 0x67446698;
const CMD = { read: 0, write: 1, disc: 2, flush: 3 } as const;
/** qemu-nbd accepts requests up to 32 MiB. */
export const NBD_CHUNK = 4 * 1024 * 1024;

export interface NbdImage {
  size: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  close(): Promise<void>;
}

/** How long qemu-nbd may take to open its socket (a loaded host has needed more than 5 s). */
const QEMU_NBD_START_MS = 60_000;
/** How long qemu-nbd has to leave after SIGTERM before it is killed. */
const QEMU_NBD_TERM_GRACE_MS = 2_000;

/**
 * Connects to qemu-nbd's socket once it listens: the file appears at bind(),
 * a moment before listen(), so a refused connection is tried again.
 */
async function connectWhenListening(path: string, deadline: number, gone: () => string | undefined): Promise<Socket> {
  for (;;) {
    const why = gone();
    if (why !== undefined) throw new Error(`qemu-nbd: ${why}`);
    if (existsSync(path)) {
      const s = connect(path);
      const refused = await new Promise<boolean>((res, rej) =>
        s.once('connect', () => res(false)).once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? res(true) : rej(e))),
      );
      if (!refused) return s;
      s.destroy();
    }
    if (Date.now() > deadline) throw new Error('qemu-nbd: did not start');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Opens a qcow2 image (its whole backing chain) through a private qemu-nbd. */
export async function openQcow2(path: string, opts: { readOnly: boolean }): Promise<NbdImage> {
  const dir = mkdtempSync(join(tmpdir(), 'xenon-qnbd-'));
  const sock = join(dir, 's');
  const args = ['-f', 'qcow2', '-k', sock, '--cache=writeback', ...(opts.readOnly ? ['-r'] : ['--detect-zeroes=on']), path];
  // it dies with the daemon: a SIGKILLed daemon leaves no qemu-nbd holding an image open
  const proc: ChildProcess = spawn('setpriv', ['--pdeathsig', 'KILL', 'qemu-nbd', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  let exited = false;
  const gone = new Promise<void>((r) => proc.on('close', () => ((exited = true), r())));
  const cleanup = async (): Promise<void> => {
    // qemu-nbd drops a SIGTERM that arrives while it is still starting up,
    // so one that has not gone after a grace period is killed outright
    if (!exited) proc.kill('SIGTERM');
    const grace = setTimeout(() => exited || proc.kill('SIGKILL'), QEMU_NBD_TERM_GRACE_MS);
    await gone;
    clearTimeout(grace);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const s = await connectWhenListening(sock, Date.now() + QEMU_NBD_START_MS, () => (exited ? stderr.trim() || 'exited' : undefined));
    const rd = new SocketReader(s);
    // fixed newstyle handshake, NBD_OPT_EXPORT_NAME ""
    const hello = await rd.read(18);
    if (hello.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error('qemu-nbd: not an NBD newstyle server');
    const noZeroes = (hello.readUInt16BE(16) & 2) !== 0;
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(1 | (noZeroes ? 2 : 0));
    const opt = Buffer.alloc(16);
    opt.write('IHAVEOPT', 0, 'latin1');
    opt.writeUInt32BE(1, 8);
    opt.writeUInt32BE(0, 12);
    s.write(Buffer.concat([cflags, opt]));
    const exp = await rd.read(noZeroes ? 10 : 134);
    const size = Number(exp.readBigUInt64BE(0));
    let handle = 0n;
    let queue = Promise.resolve();
    const request = (type: number, offset: number, length: number, data?: Buffer): Promise<Buffer> => {
      const h = ++handle;
      const go = async (): Promise<Buffer> => {
        const req = Buffer.alloc(28);
        req.writeUInt32BE(NBD_REQUEST, 0);
        req.writeUInt16BE(type, 6);
        req.writeBigUInt64BE(h, 8);
        req.writeBigUInt64BE(BigInt(offset), 16);
        req.writeUInt32BE(length, 24);
        s.write(data ? Buffer.concat([req, data]) : req);
        const rep = await rd.read(16);
        if (rep.readUInt32BE(0) !== NBD_REPLY || rep.readBigUInt64BE(8) !== h) throw new Error('NBD: bad reply');
        const err = rep.readUInt32BE(4);
        if (err) throw Object.assign(new Error(`NBD error ${err}`), err === 28 ? { code: 'ENOSPC' } : {});
        return type === CMD.read ? Buffer.from(await rd.read(length)) : Buffer.alloc(0);
      };
      // one request in flight at a time: replies come back in order
      const p = queue.then(go);
      queue = p.then(() => undefined, () => undefined);
      return p;
    };
    return {
      size,
      read: (offset, length) => request(CMD.read, offset, length),
      write: async (offset, data) => void (await request(CMD.write, offset, data.length, data)),
      close: async () => {
        try {
          if (!opts.readOnly) await request(CMD.flush, 0, 0);
          const req = Buffer.alloc(28);
          req.writeUInt32BE(NBD_REQUEST, 0);
          req.writeUInt16BE(CMD.disc, 6);
          s.end(req);
        } finally {
          s.destroy();
          // qemu-nbd exits once its only client leaves
          await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
          await cleanup();
        }
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** The guest-visible bytes of a qcow2 chain, as a stream. */
export function exportQcow2Raw(path: string): Readable {
  let img: NbdImage | undefined;
  let pos = 0;
  return new Readable({
    highWaterMark: NBD_CHUNK,
    async read() {
      try {
        img ??= await openQcow2(path, { readOnly: true });
        if (pos >= img.size) {
          await img.close();
          img = undefined;
          this.push(null);
          return;
        }
        const n = Math.min(NBD_CHUNK, img.size - pos);
        const b = await img.read(pos, n);
        pos += n;
        this.push(b);
      } catch (e) {
        this.destroy(e as Error);
      }
    },
    destroy(err, cb) {
      const i = img;
      img = undefined;
      (i ? i.close() : Promise.resolve()).then(() => cb(err), () => cb(err));
    },
  });
}

/** Writes a raw stream into a new thin qcow2 image of `size` bytes; all-zero chunks are left unallocated. */
export async function importRawQcow2(input: AsyncIterable<Buffer>, path: string, size: number): Promise<void> {
  await qcow2Create(path, size);
  const img = await openQcow2(path, { readOnly: false });
  try {
    let pos = 0;
    let pending: Buffer[] = [];
    let pendingLen = 0;
    const flush = async (): Promise<void> => {
      if (pendingLen === 0) return;
      const b = pending.length === 1 ? pending[0] : Buffer.concat(pending);
      pending = [];
      pendingLen = 0;
      if (pos + b.length > size) throw Object.assign(new Error(`more data than the disk's ${size} bytes`), { code: 'EINVAL' });
      if (!isZero(b)) await img.write(pos, b);
      pos += b.length;
    };
    for await (const chunk of input) {
      pending.push(chunk);
      pendingLen += chunk.length;
      if (pendingLen >= NBD_CHUNK) await flush();
    }
    await flush();
  } finally {
    await img.close();
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i + 8 <= b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  for (let i = b.length - (b.length % 8); i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
