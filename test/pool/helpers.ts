/**
 * A pool laboratory: each host a `xenon server` in a network namespace of its
 * own, the namespaces joined by veths to a Linux bridge in a switch namespace
 * (all names unique to this run), each daemon also reachable from the test
 * over a unix socket. Everything is removed on teardown, also after failures.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { XenApiClient } from '../../src/client/client.ts';
import { killProcessesNaming } from '../ha/helpers.ts';
import { OvsBackend } from '../../src/network/ovs/ovs-backend.ts';
import { spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { must, sh, TestNet } from '../network/helpers.ts';

export const ROOT_PASSWORD = 'xenon-test-root';

export interface LabHost {
  readonly name: string;
  readonly ip: string;
  /** The network namespace the daemon runs in. */
  readonly ns: string;
  readonly dataDir: string;
  readonly socket: string;
  /** The daemon's extra arguments (for a respawn). */
  readonly args: readonly string[];
  daemon: Daemon;
  /** A client logged in as root (re-made after a restart). */
  client(): Promise<XenApiClient>;
  /** A client that is not logged in. */
  anonymous(): XenApiClient;
}

export class PoolLab {
  private readonly net = new TestNet();
  readonly dir = mkdtempSync(join(tmpdir(), 'xpool-'));
  readonly hosts: LabHost[] = [];
  private readonly clients: XenApiClient[] = [];
  /** 10.<subnet>.0.0/24, random per run so a leftover of another run cannot answer. */
  private readonly subnet = 100 + Math.floor(Math.random() * 150);
  private nextIp = 1;

  async setup(): Promise<this> {
    await this.net.setup();
    await must('ip', ['-n', this.net.ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', this.net.ns, 'link', 'set', 'br0', 'up']);
    // the switch namespace has an address too: clients run there reach every host by its address
    await must('ip', ['-n', this.net.ns, 'addr', 'add', `${this.clientIp}/24`, 'dev', 'br0']);
    return this;
  }

  /** The address of the switch namespace, where runInSwitch's commands run. */
  get clientIp(): string {
    return `10.${this.subnet}.0.254`;
  }

  /** Runs a command in the switch namespace (a client of the pool over its network). */
  runInSwitch(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return sh('ip', ['netns', 'exec', this.net.ns, cmd, ...args], { timeoutMs: 120_000 });
  }

  /** The second (transport) network's /24 prefix, e.g. `10.123.1` (hosts' `eth1`, on br1 in the switch namespace). */
  get transportPrefix(): string {
    return `10.${this.subnet}.1`;
  }

  /**
   * Starts host `name` (h1, h2, …) with the given extra daemon arguments (default: the simulator, no networking).
   * `transportNic`: the host also gets `eth1` (no address) on a second switch bridge, before its daemon first starts;
   * `spareNic`: and `eth2` on the same switch bridge (for a bond of eth1 and eth2).
   */
  async addHost(name: string, args: string[] = ['--backend', 'sim', '--network', 'none'], opts: { transportNic?: boolean; spareNic?: boolean } = {}): Promise<LabHost> {
    const ip = `10.${this.subnet}.0.${this.nextIp++}`;
    const ns = await this.net.addHost(name, `${ip}/24`);
    await must('ip', ['-n', this.net.ns, 'link', 'set', name, 'master', 'br0']);
    if (opts.transportNic || opts.spareNic) await this.addTransportNic(name, ns);
    if (opts.spareNic) await this.addTransportNic(name, ns, 'eth2', `${name}u`);
    const dataDir = join(this.dir, name);
    const socket = join(this.dir, `${name}.sock`);
    const daemon = await spawnDaemon(dataDir, { netns: ns, socketPath: socket, args: ['--https', `${ip}:443`, ...args], startTimeoutMs: 120_000 });
    const host: LabHost = {
      name, ip, ns, dataDir, socket, daemon, args,
      client: async () => {
        const c = this.track(new XenApiClient('http://localhost/', { socketPath: socket, timeoutMs: 120_000 }));
        await c.login('root', ROOT_PASSWORD);
        return c;
      },
      anonymous: () => this.track(new XenApiClient('http://localhost/', { socketPath: socket, timeoutMs: 120_000 })),
    };
    this.hosts.push(host);
    return host;
  }

  private br1 = false;

  private async addTransportNic(name: string, ns: string, device = 'eth1', peer = `${name}t`): Promise<void> {
    if (!this.br1) {
      this.br1 = true;
      await must('ip', ['-n', this.net.ns, 'link', 'add', 'br1', 'type', 'bridge']);
      await must('ip', ['-n', this.net.ns, 'link', 'set', 'br1', 'up']);
    }
    await must('ip', ['link', 'add', peer, 'netns', this.net.ns, 'type', 'veth', 'peer', 'name', device, 'netns', ns]);
    await must('ip', ['-n', ns, 'link', 'set', device, 'up']);
    await must('ip', ['-n', this.net.ns, 'link', 'set', peer, 'master', 'br1']);
    await must('ip', ['-n', this.net.ns, 'link', 'set', peer, 'up']);
  }

  private track(c: XenApiClient): XenApiClient {
    this.clients.push(c);
    return c;
  }

  /** Cuts (or restores) a host's only link to the pool's network, from the switch's side. */
  async setLink(host: LabHost, up: boolean): Promise<void> {
    await must('ip', ['-n', this.net.ns, 'link', 'set', host.name, up ? 'up' : 'down']);
  }

  /** Sets the lab up with hosts `names` (started together) and joins the others into the first one's pool. */
  async startPool(names: readonly string[], args?: string[]): Promise<LabHost[]> {
    await this.setup();
    const hosts = await Promise.all(names.map((n) => this.addHost(n, args)));
    await this.formPool(hosts[0], hosts.slice(1));
    return hosts;
  }

  /** Makes `members` join the pool of `master` (each restarts as a member). */
  async formPool(master: LabHost, members: readonly LabHost[]): Promise<void> {
    for (const h of members) {
      await (await h.client()).api.pool.join(master.ip, 'root', ROOT_PASSWORD);
      await this.restarted(h);
    }
  }

  /** Starts a host's daemon again after it died (same namespace, data and arguments). */
  async respawn(host: LabHost): Promise<void> {
    host.daemon = await spawnDaemon(host.dataDir, { netns: host.ns, socketPath: host.socket, args: ['--https', `${host.ip}:443`, ...host.args], startTimeoutMs: 120_000 });
  }

  /** Waits until the daemon of `host` has restarted `times` times in all (pool membership changed). */
  async restarted(host: LabHost, times = 1, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((host.daemon.output().match(/xenon: restarted/g) ?? []).length < times) {
      if (host.daemon.proc.exitCode !== null || Date.now() > deadline) throw new Error(`${host.name} did not restart:\n${host.daemon.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async teardown(): Promise<void> {
    for (const c of this.clients) c.close();
    for (const h of this.hosts) {
      const p = h.daemon.proc;
      if (p.exitCode === null && p.pid) {
        p.kill('SIGTERM');
        const gone = await Promise.race([h.daemon.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
        if (!gone) p.kill('SIGKILL');
      }
    }
    // a daemon's Open vSwitch outlives it (detached, as on a host): stopped here
    for (const h of this.hosts) {
      const runDir = join(h.dataDir, 'run', 'ovs');
      if (existsSync(runDir)) await new OvsBackend({ runDir, netns: h.ns }).stop().catch(() => undefined);
    }
    // etcd members, fencers and device models outlive their daemons by design: whatever names the lab's directory goes
    killProcessesNaming(this.dir);
    await this.net.teardown();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until the master sees every host live (a member that just joined is, once the master has heard from it). */
export async function allLive(master: XenApiClient, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const metrics = await Promise.all((await master.api.host.get_all()).map((h) => master.api.host.get_metrics(h)));
    if ((await Promise.all(metrics.map((m) => master.api.host_metrics.get_live(m)))).every(Boolean)) return;
    if (Date.now() > deadline) throw new Error('not every host became live');
    await new Promise((r) => setTimeout(r, 100));
  }
}

export { failsWith } from '../helpers/server.ts';

/** Polls `check` until it gives a value (not undefined or false), which is returned; throws after `ms`. */
export async function until<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** 'master' when a host takes a root login, else the master address its HOST_IS_SLAVE names (or the error). */
export async function masterNamedBy(h: LabHost): Promise<string> {
  const c = h.anonymous();
  try {
    await c.login('root', ROOT_PASSWORD);
    return 'master';
  } catch (e) {
    const err = e as { code?: string; params?: readonly string[] };
    return err.code === 'HOST_IS_SLAVE' ? String(err.params?.[0]) : `error ${String(e)}`;
  } finally {
    c.close();
  }
}

/** The QEMU processes of a VM on a host (each runs in its domain's directory). */
export function qemuPids(h: LabHost, uuid: string): number[] {
  const dir = join(h.dataDir, 'run', 'qemu', uuid);
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).filter((n) => {
    try {
      return readFileSync(`/proc/${n}/cmdline`, 'utf8').includes('qemu-system') && readlinkSync(`/proc/${n}/cwd`) === dir;
    } catch {
      return false;
    }
  }).map(Number);
}

/** A lab host's record, as a client of the pool sees it (by the host's address). */
export async function hostRefOf(c: XenApiClient, h: LabHost): Promise<string> {
  const found = Object.keys(await c.api.host.get_all_records_where(`field "address" = "${h.ip}"`))[0];
  assert.ok(found, `no host ${h.name}`);
  return found;
}

/** A lab host's PIF of a device. */
export async function pifOf(c: XenApiClient, h: LabHost, device: string): Promise<string> {
  const host = await hostRefOf(c, h);
  const found = Object.entries(await c.api.PIF.get_all_records()).find(([, r]) => r.host === host && r.device === device);
  assert.ok(found, `no ${device} on ${h.name}`);
  return found[0];
}
