/** Runs `xenon server` as a real child process, for crash and restart tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const ROOT_DIR = fileURLToPath(new URL('../../', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Daemon {
  proc: ChildProcess;
  url: string;
  output: () => string;
  /** Waits for the process to exit. */
  exited: Promise<number | null>;
}

export async function spawnDaemon(dataDir: string, opts: { port?: number; args?: string[]; env?: Record<string, string>; netns?: string; socketPath?: string; startTimeoutMs?: number } = {}): Promise<Daemon> {
  const port = opts.port ?? (await freePort());
  const argv = [process.execPath, '--import', 'tsx', `${ROOT_DIR}src/cli/xenon.ts`, 'server', '--data-dir', dataDir, '--http', opts.socketPath ?? `127.0.0.1:${port}`, ...(opts.args ?? [])];
  // `ip netns exec` execs the command in place: the child's pid stays the daemon's
  const [cmd, ...args] = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...argv] : argv;
  const proc = spawn(cmd, args, {
    cwd: ROOT_DIR,
    env: { ...process.env, XENON_ROOT_PASSWORD: 'xenon-test-root', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  // a restart re-adopts its guests and networks first: on a loaded 2-core machine that has taken over 30 s
  const deadline = Date.now() + (opts.startTimeoutMs ?? 90_000);
  while (!out.includes('listening on')) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`daemon did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, url: `http://127.0.0.1:${port}`, output: () => out, exited };
}
