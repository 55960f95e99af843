/**
 * The daemon's side of the fencer (fencer.ts): starts it, hands it each new
 * deadline, hears when it fenced. The fencer is not detached: it lives in the
 * daemon's process group, but outlives the daemon's death on its own (it
 * holds the last deadline and fences at it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { PRIVATE_FILE } from '../auth/private-files.ts';

const FENCER = fileURLToPath(new URL('./fencer.ts', import.meta.url));
/** A nice value above every ordinary process (root may raise it). */
const FENCER_PRIORITY = -15;

export interface FencerOptions {
  /** The QEMU backend's run directory: every QEMU naming it is one of this host's guests. */
  readonly runDir: string;
  /** Where its pid file goes (`<data-dir>/ha`). */
  readonly stateDir: string;
  /** Called when the fencer killed the guests (with how many). */
  readonly onFenced: (killed: number) => void;
  readonly log?: (msg: string) => void;
}

export class Fencer {
  private child: ChildProcess | undefined;
  private readonly pidFile: string;

  constructor(private readonly o: FencerOptions) {
    this.pidFile = join(o.stateDir, 'fencer.pid');
  }

  start(): void {
    const marker = `${resolve(this.o.runDir)}/`;
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), FENCER, marker], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stdin?.on('error', () => undefined); // a dead fencer is seen by its exit, not by a write error
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const msg: unknown = JSON.parse(line);
        if (typeof msg === 'object' && msg !== null && 'fenced' in msg && typeof msg.fenced === 'number') this.o.onFenced(msg.fenced);
      } catch {
        this.o.log?.(`fencer: ${line}`);
      }
    });
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

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The guests die when the monotonic clock passes `deadlineNs` unless a later deadline comes first. */
  arm(deadlineNs: bigint): void {
    this.send({ arm: deadlineNs.toString() });
  }

  disarm(): void {
    this.send({ disarm: true });
  }

  private send(msg: object): void {
    this.child?.stdin?.write(`${JSON.stringify(msg)}\n`);
  }

  /** Disarms and stops the fencer (clean shutdown, HA disabled). */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.stdin?.end(`${JSON.stringify({ disarm: true })}\n`);
    const timeout = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timeout);
    rmSync(this.pidFile, { force: true });
  }
}
