/**
 * One voting etcd member (Debian's etcd-server 3.4), started and owned by the
 * daemon: its data under `<data-dir>/ha/etcd` (0700, as etcd wants), its log in
 * `<data-dir>/ha/etcd.log` (0600), listening only on the host's pool address.
 * A member left running by an earlier daemon on the same data directory is
 * adopted (its pid file names it and its argv names the data directory), as
 * running guests are.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRIVATE_DIR, PRIVATE_FILE } from '../auth/private-files.ts';
import { processAlive } from '../host/processes.ts';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

export interface MemberAddress {
  /** etcd's member name: the host's uuid. */
  readonly name: string;
  /** The host's address on the pool network (IPv4 or IPv6, no port). */
  readonly address: string;
}

export interface EtcdMemberOptions {
  /** The daemon's data directory. */
  readonly dataDir: string;
  /** This member, one of `cluster`. */
  readonly self: MemberAddress;
  /** Every voting member (three), this one included. */
  readonly cluster: readonly MemberAddress[];
  /** Distinguishes this pool's cluster from any other (the pool's uuid). */
  readonly token: string;
  /** Wraps the command line (tests run members in a network namespace). */
  readonly wrap?: (argv: string[]) => string[];
  readonly binary?: string;
}

const hostPart = (address: string): string => (address.includes(':') ? `[${address}]` : address);
export const clientUrl = (address: string): string => `http://${hostPart(address)}:${ETCD_CLIENT_PORT}`;
const peerUrl = (address: string): string => `http://${hostPart(address)}:${ETCD_PEER_PORT}`;

/** Where the member's files are. */
export const memberPaths = (dataDir: string): { dir: string; data: string; log: string; pid: string } => {
  const dir = join(dataDir, 'ha');
  return { dir, data: join(dir, 'etcd'), log: join(dir, 'etcd.log'), pid: join(dir, 'etcd.pid') };
};

/** etcd's command line: timing for a LAN (100 ms heartbeats, 1 s elections) and pre-vote, so a returning partitioned member does not disrupt the leader. */
export function etcdArgv(o: EtcdMemberOptions): string[] {
  const p = memberPaths(o.dataDir);
  if (!o.cluster.some((m) => m.name === o.self.name)) throw new Error(`member ${o.self.name} is not in its own cluster`);
  return [
    o.binary ?? 'etcd',
    '--name', o.self.name,
    '--data-dir', p.data,
    '--listen-client-urls', clientUrl(o.self.address),
    '--advertise-client-urls', clientUrl(o.self.address),
    '--listen-peer-urls', peerUrl(o.self.address),
    '--initial-advertise-peer-urls', peerUrl(o.self.address),
    '--initial-cluster', o.cluster.map((m) => `${m.name}=${peerUrl(m.address)}`).join(','),
    '--initial-cluster-state', 'new',
    '--initial-cluster-token', o.token,
    '--pre-vote=true',
    '--heartbeat-interval', '100',
    '--election-timeout', '1000',
    // the redo log's snapshot of the database travels as one value
    '--max-request-bytes', String(64 << 20),
    '--enable-v2=false',
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
}

export class EtcdMember {
  private pid: number | undefined;

  constructor(private readonly o: EtcdMemberOptions) {}

  get clientUrl(): string {
    return clientUrl(this.o.self.address);
  }

  get running(): boolean {
    return this.pid !== undefined && processAlive(this.pid);
  }

  /** Starts the member, or adopts the one this data directory already runs. Returns its pid. */
  start(): number {
    const p = memberPaths(this.o.dataDir);
    mkdirSync(p.dir, { recursive: true, mode: PRIVATE_DIR });
    mkdirSync(p.data, { recursive: true, mode: PRIVATE_DIR });
    const adopted = this.adoptable();
    if (adopted !== undefined) return (this.pid = adopted);
    const log = openSync(p.log, 'a', PRIVATE_FILE);
    try {
      const argv = (this.o.wrap ?? ((a) => a))(etcdArgv(this.o));
      // detached: the member outlives a daemon restart, like guests do
      const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', log, log], detached: true });
      child.unref();
      if (child.pid === undefined) throw new Error(`could not start ${argv[0]}`);
      this.pid = child.pid;
    } finally {
      closeSync(log);
    }
    writeFileSync(p.pid, `${this.pid}\n`, { mode: PRIVATE_FILE });
    return this.pid;
  }

  /** The live member an earlier daemon started on this data directory. */
  private adoptable(): number | undefined {
    const p = memberPaths(this.o.dataDir);
    if (!existsSync(p.pid)) return undefined;
    const pid = Number(readFileSync(p.pid, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return undefined;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      return undefined;
    }
    const i = argv.indexOf('--data-dir');
    return i >= 0 && argv[i + 1] === p.data ? pid : undefined;
  }

  /** Stops the member (SIGTERM, then SIGKILL after `timeoutMs`). */
  async stop(timeoutMs = 5000): Promise<void> {
    const pid = this.pid;
    this.pid = undefined;
    if (pid === undefined || !processAlive(pid)) return;
    process.kill(pid, 'SIGTERM');
    const until = Date.now() + timeoutMs;
    while (processAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(memberPaths(this.o.dataDir).pid, { force: true });
  }

  /** Removes the member's data (after stop: when HA is disabled, the cluster is formed anew next time). */
  wipe(): void {
    rmSync(memberPaths(this.o.dataDir).data, { recursive: true, force: true });
  }
}

/** Whether HA runs on this data directory (its configuration is there). */
export const haConfigured = (dataDir: string): boolean => existsSync(join(memberPaths(dataDir).dir, 'config.json'));

/**
 * For `xenon stop --guests`: stops what HA leaves running after its daemon —
 * the fencer and the etcd member — by their pid files, each only if its
 * command line is what this data directory started. Returns what was stopped.
 */
export async function stopHaProcesses(dataDir: string): Promise<string[]> {
  const p = memberPaths(dataDir);
  const stopped: string[] = [];
  const ours = (file: string, mark: string): number | undefined => {
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return undefined;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(mark) ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  const fencer = ours(join(p.dir, 'fencer.pid'), 'fencer.ts');
  if (fencer !== undefined) {
    process.kill(fencer, 'SIGKILL');
    stopped.push('fencer');
  }
  rmSync(join(p.dir, 'fencer.pid'), { force: true });
  rmSync(join(p.dir, 'fencer.sock'), { force: true });
  const etcd = ours(p.pid, p.data);
  if (etcd !== undefined) {
    process.kill(etcd, 'SIGTERM');
    for (let i = 0; i < 100 && processAlive(etcd); i++) await new Promise((r) => setTimeout(r, 50));
    if (processAlive(etcd)) process.kill(etcd, 'SIGKILL');
    stopped.push('etcd member');
  }
  rmSync(p.pid, { force: true });
  return stopped;
}
