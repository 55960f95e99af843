// Test fixtures for HA: hosts in network namespaces on one bridge, HA agents in them, stand-in guests.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { must, sh, TestNet } from '../network/helpers.ts';

/** A switch namespace with a bridge, and host namespaces on it (`eth0` = 10.77.<n>.<i>/24). */
export class HaNet {
  readonly net = new TestNet();
  readonly subnet = 1 + Math.floor(Math.random() * 250);

  async setup(hosts: number): Promise<{ ns: string; address: string; link: string }[]> {
    await this.net.setup();
    await must('ip', ['-n', this.net.ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', this.net.ns, 'link', 'set', 'br0', 'up']);
    const out = [];
    for (let i = 1; i <= hosts; i++) {
      const address = `10.77.${this.subnet}.${i}`;
      const link = `h${i}`;
      const ns = await this.net.addHost(link, `${address}/24`);
      await must('ip', ['-n', this.net.ns, 'link', 'set', link, 'master', 'br0']);
      out.push({ ns, address, link });
    }
    return out;
  }

  get dir(): string {
    return this.net.dir;
  }

  /** Cuts (or restores) a host's only link, from the switch's side. */
  async setLink(link: string, up: boolean): Promise<void> {
    await must('ip', ['-n', this.net.ns, 'link', 'set', link, up ? 'up' : 'down']);
  }

  async teardown(): Promise<void> {
    if (this.net.dir) killProcessesNaming(this.net.dir);
    await this.net.teardown();
  }
}

export interface AgentEvent {
  readonly ev: string;
  /** CLOCK_MONOTONIC, ns: comparable with this process's process.hrtime.bigint(). */
  readonly at: string;
  readonly [field: string]: unknown;
}

/** An HA agent (test/ha/agent.ts) in a host namespace. */
export class Agent {
  readonly events: AgentEvent[] = [];
  readonly proc: ChildProcess;
  private listeners = new Set<() => void>();
  stderr = '';

  constructor(readonly ns: string, readonly config: { dataDir: string; hostUuid: string; runDir: string; [k: string]: unknown }) {
    mkdirSync(config.runDir, { recursive: true });
    const agent = new URL('./agent.ts', import.meta.url).pathname;
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', agent, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdin?.on('error', () => undefined);
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as AgentEvent);
      } catch {
        return;
      }
      for (const l of this.listeners) l();
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-20_000);
    });
  }

  send(cmd: object): void {
    this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`);
  }

  /** The first event (from index `from`) matching, waiting up to `timeoutMs`. */
  waitFor(pred: (e: AgentEvent) => boolean, timeoutMs: number, from = 0): Promise<AgentEvent> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const hit = this.events.slice(from).find(pred);
        if (!hit) return false;
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(hit);
        return true;
      };
      const listener = (): void => void check();
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`${this.config.hostUuid}: no matching event within ${timeoutMs} ms; events: ${JSON.stringify(this.events)}\nstderr: ${this.stderr.slice(-3000)}`));
      }, timeoutMs);
      this.listeners.add(listener);
      check();
    });
  }

  /** Kills the agent and everything it started (etcd member, fencer), by their pids. */
  kill(): void {
    for (const file of ['etcd.pid', 'fencer.pid']) killPidFile(join(this.config.dataDir, 'ha', file));
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

function killPidFile(file: string): void {
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (Number.isInteger(pid) && pid > 1) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/** Every process whose command line names `dir` (a test's own temporary directory): what the test started and left behind. */
export function killProcessesNaming(dir: string): void {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let argv = '';
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (argv.includes(`${dir}/`)) {
      try {
        process.kill(Number(name), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

export const alive = (pid: number | undefined): boolean => {
  if (pid === undefined) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
};

export { sh };
