// Test fixtures: private network namespaces with veth-connected "hosts".
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';

export function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    c.stdin?.on('error', () => {});
    c.stdin?.end(opts.input ?? '');
  });
}

export async function must(cmd: string, args: string[]): Promise<string> {
  const r = await sh(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

const PING = existsSync('/usr/bin/ping') || existsSync('/bin/ping') ? ['ping'] : ['busybox', 'ping'];

/** Ping from a namespace; returns the number of replies. */
export async function ping(ns: string, ip: string, count = 3, intervalSec = 0.2, waitSec = 1): Promise<number> {
  const args = ['netns', 'exec', ns, ...PING, '-c', String(count), '-W', String(waitSec)];
  if (PING[0] === 'ping') args.push('-i', String(intervalSec), '-q');
  args.push(ip);
  const r = await sh('ip', args, { timeoutMs: (count * (intervalSec + waitSec) + 10) * 1000 });
  const m = /(\d+) (?:packets )?received/.exec(r.stdout);
  return m ? Number(m[1]) : 0;
}

/**
 * A switch namespace (where the OVS daemons / Linux bridges live) plus "host"
 * namespaces, each joined to the switch namespace by a veth pair:
 * `eth0` inside the host, `<name>` in the switch namespace.
 */
export class TestNet {
  readonly id = randomBytes(3).toString('hex');
  readonly ns = `xenon-test-${this.id}`;
  readonly hosts: string[] = [];
  dir = '';

  async setup(): Promise<this> {
    await must('ip', ['netns', 'add', this.ns]);
    await must('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
    this.dir = await mkdtemp(join(tmpdir(), 'xenon-net-'));
    return this;
  }

  hostNs(name: string): string {
    return `${this.ns}-${name}`;
  }

  /** Create host namespace `<ns>-<name>` with eth0 = ip/cidr, peer `<name>` in the switch ns (up, no address). */
  async addHost(name: string, cidr: string, opts: { mac?: string } = {}): Promise<string> {
    const hns = this.hostNs(name);
    await must('ip', ['netns', 'add', hns]);
    this.hosts.push(hns);
    await must('ip', ['link', 'add', name, 'netns', this.ns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', hns]);
    if (opts.mac) await must('ip', ['-n', hns, 'link', 'set', 'eth0', 'address', opts.mac]);
    await must('ip', ['-n', hns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', hns, 'link', 'set', 'eth0', 'up']);
    await must('ip', ['-n', hns, 'addr', 'add', cidr, 'dev', 'eth0']);
    await must('ip', ['-n', this.ns, 'link', 'set', name, 'up']);
    return hns;
  }

  async teardown(): Promise<void> {
    for (const h of this.hosts) await sh('ip', ['netns', 'del', h]);
    await sh('ip', ['netns', 'del', this.ns]);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
