/**
 * The daemon's side of the fencer (fencer.ts): starts it — or adopts the one
 * an earlier daemon of this data directory left running, through its socket —
 * hands it each new deadline, hears when it fenced, and on a clean stop hands
 * it the lease to keep alive until a daemon is back. The fencer runs in a
 * session of its own (a Ctrl-C meant for the daemon must not kill it) and
 * outlives the daemon: it holds the last deadline and fences at it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { PRIVATE_FILE } from '../auth/private-files.ts';
import { processAlive } from '../host/processes.ts';
import type { Hold } from './fencer-hold.ts';

const FENCER = fileURLToPath(new URL('./fencer.ts', import.meta.url));
/** A nice value above every ordinary process (root may raise it). */
const FENCER_PRIORITY = -15;
/** How long a new fencer gets to open its socket. */
const SOCKET_WAIT_MS = 5000;

export interface FencerOptions {
  /** The QEMU backend's run directory: every QEMU naming it is one of this host's guests. */
  readonly runDir: string;
  /** Where its pid file and socket go (`<data-dir>/ha`). */
  readonly stateDir: string;
  /** Called when the fencer killed the guests (with how many). */
  readonly onFenced: (killed: number) => void;
  readonly log?: (msg: string) => void;
}

export class Fencer {
  private child: ChildProcess | undefined;
  private socket: Socket | undefined;
  private out: Writable | undefined;
  private fencerPid: number | undefined;
  /** A live fencer that could not be adopted: retired once the new one holds a deadline. */
  private stale: number | undefined;
  private readonly pidFile: string;
  private readonly socketPath: string;

  constructor(private readonly o: FencerOptions) {
    this.pidFile = join(o.stateDir, 'fencer.pid');
    this.socketPath = join(o.stateDir, 'fencer.sock');
  }

  /** Adopts this data directory's running fencer, or starts one. Returns whether it was adopted. */
  async start(): Promise<boolean> {
    const running = this.adoptable();
    if (running !== undefined) {
      try {
        await this.connect();
        this.fencerPid = running;
        this.o.log?.(`fencer ${running} adopted`);
        return true;
      } catch (err) {
        // alive but not answering: it still holds a deadline of its own, a new one fences on ours
        this.o.log?.(`fencer ${running} could not be adopted: ${String(err)}`);
        this.stale = running;
      }
    }
    this.spawnFencer();
    return false;
  }

  /** The fencer an earlier daemon left: its pid file names a live process running fencer.ts on this socket. */
  private adoptable(): number | undefined {
    if (!existsSync(this.pidFile) || !existsSync(this.socketPath)) return undefined;
    const pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return undefined;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a === FENCER) && argv.includes(this.socketPath) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private connect(): Promise<void> {
    return new Promise((ok, fail) => {
      const s = connect(this.socketPath);
      const timer = setTimeout(() => s.destroy(new Error('no answer')), 2000);
      s.once('error', (err) => {
        clearTimeout(timer);
        fail(err);
      });
      s.once('connect', () => {
        clearTimeout(timer);
        s.on('error', () => undefined); // a dead fencer is seen by its pid, not by a write error
        this.socket = s;
        this.out = s;
        this.listen(s);
        ok();
      });
    });
  }

  private listen(input: NodeJS.ReadableStream): void {
    createInterface({ input }).on('line', (line) => {
      try {
        const msg: unknown = JSON.parse(line);
        if (typeof msg === 'object' && msg !== null && 'fenced' in msg && typeof msg.fenced === 'number') this.o.onFenced(msg.fenced);
      } catch {
        this.o.log?.(`fencer: ${line}`);
      }
    });
  }

  private spawnFencer(): void {
    const marker = `${resolve(this.o.runDir)}/`;
    rmSync(this.socketPath, { force: true });
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), FENCER, marker, this.socketPath], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.child = child;
    this.out = child.stdin ?? undefined;
    this.fencerPid = child.pid;
    child.stdin?.on('error', () => undefined); // a dead fencer is seen by its exit, not by a write error
    this.listen(child.stdout!);
    createInterface({ input: child.stderr! }).on('line', (line) => this.o.log?.(line));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.o.log?.(`fencer exited (${code ?? signal})`);
    });
    if (child.pid !== undefined) {
      writeFileSync(this.pidFile, `${child.pid}\n`, { mode: PRIVATE_FILE });
      // a starved fencer reads its deadlines late and fences a healthy host: it runs before ordinary work
      try {
        setPriority(child.pid, FENCER_PRIORITY);
      } catch (err) {
        this.o.log?.(`fencer: cannot raise its priority: ${String(err)}`);
      }
    }
  }

  /** Resolves once the fencer listens on its socket (so that a daemon started right after this one can adopt it). */
  async listening(): Promise<void> {
    const until = Date.now() + SOCKET_WAIT_MS;
    while (!existsSync(this.socketPath) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }

  get pid(): number | undefined {
    return this.fencerPid;
  }

  /** The guests die when the monotonic clock passes `deadlineNs` unless a later deadline comes first. */
  arm(deadlineNs: bigint): void {
    this.send({ arm: deadlineNs.toString() });
    // the old fencer would fence this host's guests at the end of its grace period: the new one guards them now
    if (this.stale !== undefined) {
      if (this.stale !== this.fencerPid && this.isFencer(this.stale)) process.kill(this.stale, 'SIGKILL');
      this.stale = undefined;
    }
  }

  private isFencer(pid: number): boolean {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return processAlive(pid) && argv.includes(FENCER) && argv.includes(this.socketPath);
    } catch {
      return false;
    }
  }

  disarm(): void {
    this.send({ disarm: true });
  }

  private send(msg: object): void {
    this.out?.write(`${JSON.stringify(msg)}\n`);
  }

  /**
   * The daemon stops cleanly with HA on: the fencer keeps `hold.lease` alive for
   * `hold.graceMs` (a daemon adopting it takes over), else fences at its deadline.
   * This daemon lets go of it.
   */
  async handOver(hold: Hold): Promise<void> {
    await this.listening();
    const out = this.out;
    this.send({ hold });
    this.release();
    // written before the daemon exits: a lost hold would fence the guests of a clean restart
    if (out && out.writableLength > 0) {
      // a dead fencer never drains: the daemon must still be able to stop
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 2000);
        out.once('drain', () => (clearTimeout(timer), r()));
      });
    }
    out?.end();
  }

  /** Lets go of the fencer without a word: it keeps its deadline (a crash, as far as it can tell). */
  private release(): void {
    this.child?.stdout?.destroy();
    this.child?.stderr?.destroy();
    this.child?.unref();
    this.child = undefined;
    this.socket?.unref();
    this.socket = undefined;
    this.out = undefined;
  }

  /** Disarms and stops the fencer (clean shutdown, HA disabled). */
  async stop(): Promise<void> {
    const pid = this.fencerPid;
    this.fencerPid = undefined;
    const out = this.out;
    this.release();
    out?.end(`${JSON.stringify({ stop: true })}\n`);
    if (pid !== undefined) {
      const until = Date.now() + 3000;
      while (processAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    rmSync(this.pidFile, { force: true });
  }
}
