// Supervision of a private Open vSwitch instance: one ovsdb-server and one
// ovs-vswitchd whose sockets, pidfiles, logs and database all live in a run
// directory given by the caller. Nothing here ever talks to a system OVS.
//
// The daemons are started detached (`--detach`), so they outlive the Node
// process: guests keep their network across a toolstack crash or restart,
// and the next OvsDaemons on the same run directory adopts them (pidfile +
// a liveness probe over the control socket). Only daemons whose pidfile lives
// in our run directory and whose command line names that directory are ever
// signalled.
import { mkdir, readFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Runner } from '../exec.ts';
import { NetworkError } from '../backend.ts';

export const DEFAULT_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export class OvsPaths {
  constructor(readonly runDir: string) {}
  get db() { return join(this.runDir, 'conf.db'); }
  get dbSock() { return join(this.runDir, 'db.sock'); }
  get dbCtl() { return join(this.runDir, 'ovsdb-server.ctl'); }
  get dbPid() { return join(this.runDir, 'ovsdb-server.pid'); }
  get dbLog() { return join(this.runDir, 'ovsdb-server.log'); }
  get vsCtl() { return join(this.runDir, 'ovs-vswitchd.ctl'); }
  get vsPid() { return join(this.runDir, 'ovs-vswitchd.pid'); }
  get vsLog() { return join(this.runDir, 'ovs-vswitchd.log'); }
  mgmt(bridge: string) { return join(this.runDir, `${bridge}.mgmt`); }
  env(): NodeJS.ProcessEnv {
    return { OVS_RUNDIR: this.runDir, OVS_LOGDIR: this.runDir, OVS_DBDIR: this.runDir, OVS_SYSCONFDIR: this.runDir };
  }
}

export type Daemon = 'ovsdb-server' | 'ovs-vswitchd';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** True if pid is a live (non-zombie) process whose command line mentions `needle`. */
async function pidAlive(pid: number, needle: string): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
    return cmdline.includes(needle);
  } catch {
    return false;
  }
}

export class OvsDaemons {
  readonly paths: OvsPaths;
  constructor(
    private readonly r: Runner,
    runDir: string,
    private readonly schema = DEFAULT_SCHEMA,
    /** other_config keys set before ovs-vswitchd starts (it reads some only at start-up). */
    private readonly bootConfig: Record<string, string> = {},
  ) {
    this.paths = new OvsPaths(runDir);
  }

  private pidFile(d: Daemon) { return d === 'ovsdb-server' ? this.paths.dbPid : this.paths.vsPid; }
  private ctl(d: Daemon) { return d === 'ovsdb-server' ? this.paths.dbCtl : this.paths.vsCtl; }

  async pid(d: Daemon): Promise<number | null> {
    try {
      const pid = Number.parseInt((await readFile(this.pidFile(d), 'utf8')).trim(), 10);
      if (!Number.isInteger(pid) || pid <= 1) return null;
      return (await pidAlive(pid, this.paths.runDir)) ? pid : null;
    } catch {
      return null;
    }
  }

  /** Running and answering on its control socket. */
  async healthy(d: Daemon): Promise<boolean> {
    if ((await this.pid(d)) === null) return false;
    const res = await this.r.tryRun('ovs-appctl', ['-t', this.ctl(d), '--timeout=5', 'version'], { noNetns: true, timeoutMs: 7000 });
    return res !== null;
  }

  async ensureDb(): Promise<void> {
    await mkdir(this.paths.runDir, { recursive: true, mode: 0o700 });
    if (!(await exists(this.paths.db))) {
      await this.r.run('ovsdb-tool', ['create', this.paths.db, this.schema], { noNetns: true });
      return;
    }
    const res = await this.r.tryRun('ovsdb-tool', ['needs-conversion', this.paths.db, this.schema], { noNetns: true });
    if (res && res.stdout.trim() === 'yes' && (await this.pid('ovsdb-server')) === null) {
      await this.r.run('ovsdb-tool', ['convert', this.paths.db, this.schema], { noNetns: true });
    }
  }

  async startOvsdb(): Promise<void> {
    const p = this.paths;
    await this.r.run('ovsdb-server', [
      p.db, `--remote=punix:${p.dbSock}`, `--pidfile=${p.dbPid}`, `--unixctl=${p.dbCtl}`,
      `--log-file=${p.dbLog}`, '--detach', '--no-chdir', '-vconsole:off',
    ]);
    await this.waitHealthy('ovsdb-server');
  }

  async startVswitchd(): Promise<void> {
    const p = this.paths;
    await this.r.run('ovs-vswitchd', [
      `unix:${p.dbSock}`, `--pidfile=${p.vsPid}`, `--unixctl=${p.vsCtl}`,
      `--log-file=${p.vsLog}`, '--detach', '--no-chdir', '-vconsole:off',
    ]);
    await this.waitHealthy('ovs-vswitchd');
  }

  private async waitHealthy(d: Daemon, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await this.healthy(d)) return;
      await sleep(50);
    }
    throw new NetworkError(`${d} in ${this.paths.runDir} did not come up`);
  }

  /** Adopt running daemons or start the missing ones. Returns which were started. */
  async ensureRunning(): Promise<{ startedOvsdb: boolean; startedVswitchd: boolean }> {
    await this.ensureDb();
    let startedOvsdb = false;
    let startedVswitchd = false;
    if (!(await this.healthy('ovsdb-server'))) {
      await this.kill('ovsdb-server');
      await this.startOvsdb();
      startedOvsdb = true;
      await this.r.run('ovs-vsctl', [`--db=unix:${this.paths.dbSock}`, '--no-wait', 'init'], { noNetns: true });
    }
    if (!(await this.healthy('ovs-vswitchd'))) {
      await this.kill('ovs-vswitchd');
      const kv = Object.entries(this.bootConfig).map(([k, v]) => `other_config:${k}=${JSON.stringify(v)}`);
      if (kv.length) {
        await this.r.run('ovs-vsctl', [`--db=unix:${this.paths.dbSock}`, '--no-wait', 'set', 'Open_vSwitch', '.', ...kv], { noNetns: true });
      }
      await this.startVswitchd();
      startedVswitchd = true;
      // A (no-op) transaction without --no-wait returns once ovs-vswitchd has
      // applied the whole configuration: bridges, ports, ofports, mgmt sockets.
      await this.r.run('ovs-vsctl', [`--db=unix:${this.paths.dbSock}`, '--timeout=30', 'init'], { noNetns: true, timeoutMs: 35_000 });
    }
    return { startedOvsdb, startedVswitchd };
  }

  /** Stop one daemon: graceful `exit` over its control socket, then SIGTERM, then SIGKILL. */
  async kill(d: Daemon): Promise<void> {
    const pid = await this.pid(d);
    if (pid === null) return;
    await this.r.tryRun('ovs-appctl', ['-t', this.ctl(d), '--timeout=5', 'exit'], { noNetns: true, timeoutMs: 7000 });
    for (const [sig, wait] of [[null, 3000], ['SIGTERM', 3000], ['SIGKILL', 3000]] as const) {
      if (sig) {
        try { process.kill(pid, sig); } catch { /* gone */ }
      }
      const end = Date.now() + wait;
      while (Date.now() < end) {
        if (!(await pidAlive(pid, this.paths.runDir))) return;
        await sleep(25);
      }
    }
    throw new NetworkError(`could not stop ${d} (pid ${pid})`);
  }

  async stopAll(): Promise<void> {
    await this.kill('ovs-vswitchd');
    await this.kill('ovsdb-server');
  }
}
