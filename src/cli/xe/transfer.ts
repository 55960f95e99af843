/**
 * Bulk data over HTTP, as xe moves it: a task to follow the transfer, the
 * session and task in the query string (`?session_id=…&task_id=…&…`), a
 * progress bar on a terminal; and the vt100 console over HTTP CONNECT.
 */
import { closeSync, createReadStream, createWriteStream, openSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { CliError, ServerError } from './conn.ts';
import type { Ctx } from './context.ts';

class Progress extends Transform {
  private done = 0;
  private last = 0;
  constructor(private readonly total: number | undefined, private readonly label: string, private readonly enabled: boolean) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.done += chunk.length;
    this.draw(false);
    this.push(chunk);
    cb();
  }
  draw(final: boolean): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!final && now - this.last < 100) return;
    this.last = now;
    const mib = (n: number): string => (n / 2 ** 20).toFixed(1);
    let line: string;
    if (this.total) {
      const frac = Math.min(1, this.done / this.total);
      const width = 40;
      const fill = Math.round(frac * width);
      line = `${this.label} [${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(this.done)}/${mib(this.total)} MiB`;
    } else line = `${this.label} ${mib(this.done)} MiB`;
    process.stderr.write(`\r${line}${final ? '\n' : ''}`);
  }
}

function query(params: Record<string, string>): string {
  return Object.entries(params).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
}

async function withTask<T>(ctx: Ctx, label: string, body: (task: string) => Promise<T>): Promise<{ value: T; result: string }> {
  const task = (await ctx.client.api.task.create(label, '')) as string;
  try {
    const value = await body(task);
    const result = await waitTask(ctx, task, 60_000);
    return { value, result };
  } finally {
    await ctx.client.api.task.destroy(task).catch(() => undefined);
  }
}

/** Follows a task until it is no longer pending; throws its error. */
export async function waitTask(ctx: Ctx, task: string, timeoutMs = Infinity): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rec = (await ctx.client.api.task.get_record(task)) as { status: string; result: string; error_info: string[] };
    if (rec.status === 'success') return rec.result;
    if (rec.status === 'failure') throw new ServerError(rec.error_info[0] ?? 'INTERNAL_ERROR', rec.error_info.slice(1));
    if (rec.status === 'cancelled' || rec.status === 'cancelling') throw new ServerError('TASK_CANCELLED', [task]);
    if (Date.now() > deadline) throw new CliError(`the server did not finish the task ${task}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function httpFailure(path: string, res: IncomingMessage, body: string): Error {
  const code = /^([A-Z_]+)\b(.*)$/.exec(body.trim());
  if (code && res.statusCode !== 404) return new ServerError(code[1], code[2].trim() ? code[2].trim().split(/\s+/) : []);
  if (res.statusCode === 404) return new CliError(`the server has no handler for ${path} (HTTP 404)${body.trim() ? `: ${body.trim()}` : ''}`);
  return new CliError(`the server refused ${path}: HTTP ${res.statusCode}${body.trim() ? ` ${body.trim()}` : ''}`);
}

async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').slice(0, 2000);
}

/** PUT a file to `path?session_id&task_id&…`; returns the task's result. */
export async function upload(ctx: Ctx, path: string, extra: Record<string, string>, filename: string, label: string): Promise<string> {
  let size: number;
  try {
    const st = statSync(filename);
    size = st.isFile() ? st.size : -1;
  } catch {
    throw new CliError(`file '${filename}' does not exist`);
  }
  const { result } = await withTask(ctx, label, async (task) => {
    const url = `${path}?${query({ session_id: ctx.client.session, task_id: task, ...extra })}`;
    const req = ctx.transport.request('PUT', url, size >= 0 ? { 'Content-Length': size } : { 'Transfer-Encoding': 'chunked' });
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    const bar = new Progress(size >= 0 ? size : undefined, label, process.stderr.isTTY === true);
    const sent = pipeline(createReadStream(filename), bar, req).then(() => bar.draw(true));
    const res = await response;
    if (res.statusCode !== 200) {
      req.destroy();
      await sent.catch(() => undefined);
      throw httpFailure(path, res, await readBody(res));
    }
    await sent;
    await readBody(res);
  });
  return result;
}

/** GET `path?session_id&task_id&…` into a new file (or stdout when filename is empty). */
export async function download(ctx: Ctx, path: string, extra: Record<string, string>, filename: string, label: string): Promise<string> {
  let fd: number | undefined;
  if (filename) {
    try {
      fd = openSync(filename, 'wx', 0o600);
    } catch (e) {
      throw new CliError(`cannot create '${filename}': ${(e as Error).message}`);
    }
  }
  try {
    const { result } = await withTask(ctx, label, async (task) => {
      const url = `${path}?${query({ session_id: ctx.client.session, task_id: task, ...extra })}`;
      const req = ctx.transport.request('GET', url);
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
        req.end();
      });
      if (res.statusCode !== 200) throw httpFailure(path, res, await readBody(res));
      const total = Number(res.headers['content-length']) || undefined;
      const bar = new Progress(total, label, process.stderr.isTTY === true);
      const sink = fd !== undefined ? createWriteStream('', { fd, autoClose: false }) : process.stdout;
      await pipeline(res, bar, sink, { end: fd !== undefined });
      bar.draw(true);
    });
    return result;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Attaches the terminal to a console: HTTP CONNECT, then raw bytes both ways; Ctrl-] detaches. */
export async function attachConsole(ctx: Ctx, consoleRef: string): Promise<void> {
  const path = `/console?${query({ ref: consoleRef, session_id: ctx.client.session })}`;
  const req = ctx.transport.request('CONNECT', path, { 'Content-Length': 0 });
  const { res, socket, head } = await new Promise<{ res: IncomingMessage; socket: import('node:stream').Duplex; head: Buffer }>((resolve, reject) => {
    req.once('connect', (r: IncomingMessage, s: import('node:stream').Duplex, h: Buffer) => resolve({ res: r, socket: s, head: h }));
    req.once('response', (r: IncomingMessage) => {
      void readBody(r).then((b) => reject(httpFailure('/console', r, b)));
    });
    req.once('error', reject);
    req.end();
  });
  if (res.statusCode !== 200) {
    socket.destroy();
    throw res.statusCode === 404 ? new CliError('Server replied with HTTP 404: the console is not available') : new CliError(`Server said: HTTP ${res.statusCode}`);
  }
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) {
    stdin.setRawMode(true);
    process.stderr.write('Connected; press Ctrl-] to detach.\r\n');
  }
  if (head.length) process.stdout.write(head);
  await new Promise<void>((resolve) => {
    const finish = (): void => {
      stdin.off('data', onInput);
      stdin.pause();
      if (raw) {
        stdin.setRawMode(false);
        process.stdout.write('\r\n');
      }
      socket.destroy();
      resolve();
    };
    const onInput = (b: Buffer): void => {
      const i = b.indexOf(0x1d);
      if (i >= 0) {
        if (i > 0) socket.write(b.subarray(0, i));
        finish();
      } else socket.write(b);
    };
    stdin.on('data', onInput);
    stdin.once('end', () => {
      // input closed (not a terminal): keep printing what the guest says until it closes
      if (!raw) socket.end();
    });
    socket.on('data', (b: Buffer) => process.stdout.write(b));
    socket.once('close', finish);
    socket.once('error', finish);
  });
}
