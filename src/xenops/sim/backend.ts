/**
 * Simulator backend: domains move through power states in memory, nothing
 * runs. Cheap enough for 10,000+ domains. Stats are synthetic (CPU time grows
 * while running). Tests inject guest-initiated events with injectGuestEvent().
 *
 * Optional persistence (persistPath) keeps the domain table in a JSON file so
 * that a second SimBackend on the same file "re-adopts" the domains, like a
 * restarted daemon re-adopting QEMU processes.
 */
import { readFileSync, writeFileSync, renameSync, mkdirSync, existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  BadPowerState, DomainExists, DomainNotFound, OperationTimeout,
  type ConsoleAddress, type DiskConfig, type DomainConfig, type DomainCounters, type DomainEvent, type DomainInfo, type DomainStats,
  type GuestInfo, type HypervisorBackend, type MigrationStats, type NicConfig, type PowerState,
} from '../backend.ts';
import { SimConsoles } from './consoles.ts';

export interface SimBackendOptions {
  /** Artificial latency of each operation in ms (default 0: resolves on the next tick). */
  latencyMs?: number;
  /** Keep the domain table in this JSON file (written shortly after each change and on close). */
  persistPath?: string;
  /** Where serialLog()/vncAddress() point (nothing is written there unless `consoles`). Default /tmp/xenon-sim. */
  runDir?: string;
  /** Fraction of each vCPU a running simulated guest uses (default 0.05). */
  cpuLoad?: number;
  now?: () => number;
  /** Simulated guests run a guest agent (guestInfo answers for running domains). Default true. */
  guestAgent?: boolean;
  /** Serve consoles (consoles.ts) printed as coming from this label; default none. */
  consoles?: { label: string };
}

interface SimDom {
  config: DomainConfig;
  state: PowerState;
  reason?: string;
  startedAt: number;
  /** CPU seconds accumulated before `runningSince`. */
  cpuBase: number;
  /** When the domain last entered 'running' (ms), or 0. */
  runningSince: number;
  pid: number;
}

interface SuspendImage { magic: 'xenon-sim-suspend'; uuid: string; cpuBase: number; memoryBytes: number }

export class SimBackend implements HypervisorBackend {
  readonly name = 'sim';
  private readonly doms = new Map<string, SimDom>();
  private readonly listeners = new Set<(e: DomainEvent) => void>();
  private readonly latency: number;
  private readonly runDir: string;
  private readonly load: number;
  private readonly now: () => number;
  private readonly persistPath?: string;
  /** Whether simulated guests run a guest agent now (tests switch it). */
  guestAgent: boolean;
  private persistTimer?: NodeJS.Timeout;
  private readonly consoles?: SimConsoles;
  private nextPid = 100000;
  private closed = false;
  /** Operation counters (for tests and benchmarks). */
  readonly counters = { start: 0, shutdown: 0, reboot: 0, pause: 0, unpause: 0, suspend: 0, resume: 0, hotplug: 0 };

  constructor(opts: SimBackendOptions = {}) {
    this.latency = opts.latencyMs ?? 0;
    this.runDir = opts.runDir ?? '/tmp/xenon-sim';
    this.load = opts.cpuLoad ?? 0.05;
    this.now = opts.now ?? Date.now;
    this.persistPath = opts.persistPath;
    this.guestAgent = opts.guestAgent ?? true;
    if (opts.consoles) this.consoles = new SimConsoles(this.runDir, opts.consoles.label, (uuid) => this.doms.get(uuid)?.state === 'running');
    if (this.persistPath && existsSync(this.persistPath)) {
      const saved = JSON.parse(readFileSync(this.persistPath, 'utf8')) as SimDom[];
      for (const d of saved) { this.doms.set(d.config.uuid, d); this.nextPid = Math.max(this.nextPid, d.pid + 1); }
    }
  }

  private async tick(): Promise<void> {
    if (this.latency > 0) await new Promise((r) => setTimeout(r, this.latency));
    else await Promise.resolve();
    if (this.closed) throw new Error('backend closed');
  }

  private changed(): void {
    this.consoles?.sync([...this.doms.keys(), ...this.incoming.keys()]);
    if (!this.persistPath || this.persistTimer) return;
    this.persistTimer = setTimeout(() => { this.persistTimer = undefined; this.flush(); }, 20);
    this.persistTimer.unref();
  }

  private flush(): void {
    if (!this.persistPath) return;
    mkdirSync(path.dirname(this.persistPath), { recursive: true });
    writeFileSync(this.persistPath + '.tmp', JSON.stringify([...this.doms.values()]));
    renameSync(this.persistPath + '.tmp', this.persistPath);
  }

  private dom(uuid0: string): SimDom {
    const d = this.doms.get(uuid0);
    if (!d) throw new DomainNotFound(uuid0);
    return d;
  }

  private setState(d: SimDom, s: PowerState, reason?: string): void {
    const t = this.now();
    if (d.state === 'running' && s !== 'running') { d.cpuBase += this.cpuSince(d, t); d.runningSince = 0; }
    if (s === 'running' && d.state !== 'running') d.runningSince = t;
    d.state = s;
    d.reason = reason;
    this.changed();
  }

  private cpuSince(d: SimDom, t: number): number {
    return d.runningSince ? ((t - d.runningSince) / 1000) * d.config.vcpusAtStartup * this.load : 0;
  }

  private info(d: SimDom): DomainInfo {
    return {
      uuid: d.config.uuid, name: d.config.name, state: d.state, pid: d.pid, status: d.state, reason: d.reason,
      config: structuredClone(d.config), startedAt: d.startedAt,
    };
  }

  private emit(e: DomainEvent): void {
    for (const l of [...this.listeners]) {
      try { l(e); } catch { /* listener's problem */ }
    }
  }

  onEvent(listener: (e: DomainEvent) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  private validate(cfg: DomainConfig): void {
    if (!cfg.uuid) throw new Error('uuid required');
    if (cfg.vcpusAtStartup < 1 || cfg.vcpusAtStartup > cfg.vcpusMax) throw new Error(`bad vCPU count ${cfg.vcpusAtStartup}/${cfg.vcpusMax}`);
    if (cfg.memoryBytes < 16 * 1024 * 1024) throw new Error(`memory too small: ${cfg.memoryBytes}`);
  }

  async start(cfg: DomainConfig, opts: { paused: boolean }): Promise<DomainInfo> {
    await this.tick();
    if (this.doms.has(cfg.uuid)) throw new DomainExists(cfg.uuid);
    this.validate(cfg);
    const t = this.now();
    const d: SimDom = { config: structuredClone(cfg), state: opts.paused ? 'paused' : 'running', startedAt: t, cpuBase: 0, runningSince: opts.paused ? 0 : t, pid: this.nextPid++ };
    this.doms.set(cfg.uuid, d);
    this.counters.start++;
    this.changed();
    return this.info(d);
  }

  /** Migration between simulators is bookkeeping: the receiving side starts the domain when told it has arrived. */
  private readonly incoming = new Map<string, DomainConfig>();

  async prepareIncoming(cfg: DomainConfig): Promise<{ uri: string }> {
    if (this.doms.has(cfg.uuid)) throw new DomainExists(cfg.uuid);
    this.validate(cfg);
    this.incoming.set(cfg.uuid, structuredClone(cfg));
    this.changed();
    return { uri: `sim:${cfg.uuid}` };
  }

  async finishIncoming(uuid: string): Promise<DomainInfo> {
    const cfg = this.incoming.get(uuid);
    if (!cfg) throw new DomainNotFound(uuid);
    this.incoming.delete(uuid);
    return this.start(cfg, { paused: false });
  }

  async migrateOut(uuid: string, uri: string): Promise<MigrationStats> {
    const d = this.dom(uuid);
    if (d.state !== 'running' && d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'migrate');
    if (uri !== `sim:${uuid}`) throw new Error(`cannot migrate to ${uri}`);
    this.doms.delete(uuid);
    this.changed();
    return { totalMs: 0, downtimeMs: 0, transferredBytes: d.config.memoryBytes };
  }

  /** Simulated guests ignore the power button: a clean shutdown or reboot of a running one times out at once (as if its whole timeout had passed). */
  ignorePowerButton = false;

  async shutdown(uuid: string, mode: 'clean' | 'hard', timeoutMs = 60_000): Promise<void> {
    await this.tick();
    if (this.incoming.delete(uuid)) return this.changed(); // a migration that did not arrive
    const d = this.dom(uuid);
    if (mode === 'clean' && d.state !== 'running' && d.state !== 'shutdown' && d.state !== 'crashed') throw new BadPowerState(uuid, d.state, 'clean shutdown');
    if (mode === 'clean' && d.state === 'running' && this.ignorePowerButton) throw new OperationTimeout(uuid, 'clean shutdown', timeoutMs);
    this.doms.delete(uuid);
    this.counters.shutdown++;
    this.changed();
  }

  async reboot(uuid: string, mode: 'clean' | 'hard', timeoutMs = 60_000): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (d.state === 'paused' || d.state === 'suspending' || d.state === 'resuming') throw new BadPowerState(uuid, d.state, 'reboot');
    if (mode === 'clean' && d.state === 'running' && this.ignorePowerButton) throw new OperationTimeout(uuid, 'clean reboot', timeoutMs);
    this.setState(d, 'shutdown');
    d.startedAt = this.now();
    d.pid = this.nextPid++;
    this.setState(d, 'running');
    this.counters.reboot++;
  }

  async pause(uuid: string): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (d.state === 'paused') return;
    if (d.state !== 'running') throw new BadPowerState(uuid, d.state, 'pause');
    this.setState(d, 'paused');
    this.counters.pause++;
  }

  async unpause(uuid: string): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (d.state === 'running') return;
    if (d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'unpause');
    this.setState(d, 'running');
    this.counters.unpause++;
  }

  async suspend(uuid: string, statePath: string): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (d.state !== 'running' && d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'suspend');
    this.setState(d, 'paused');
    const img: SuspendImage = { magic: 'xenon-sim-suspend', uuid, cpuBase: d.cpuBase, memoryBytes: d.config.memoryBytes };
    await mkdir(path.dirname(path.resolve(statePath)), { recursive: true });
    await writeFile(statePath, JSON.stringify(img));
    this.doms.delete(uuid);
    this.counters.suspend++;
    this.changed();
  }

  async resume(cfg: DomainConfig, statePath: string, opts: { paused: boolean }): Promise<DomainInfo> {
    const img = JSON.parse(await readFile(statePath, 'utf8')) as SuspendImage;
    if (img.magic !== 'xenon-sim-suspend') throw new Error(`${statePath} is not a suspend image`);
    if (img.memoryBytes !== cfg.memoryBytes) throw new Error(`suspend image has ${img.memoryBytes} bytes of memory, config ${cfg.memoryBytes}`);
    const info = await this.start(cfg, opts);
    this.counters.start--;
    this.counters.resume++;
    this.doms.get(cfg.uuid)!.cpuBase = img.cpuBase;
    return info;
  }

  async plugDisk(uuid: string, disk: DiskConfig): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (disk.kind === 'cdrom') throw new Error('CD drives cannot be hot-plugged (IDE); use insertCd on an existing drive');
    if (d.config.disks.some((x) => x.id === disk.id || x.device === disk.device)) throw new Error(`disk ${disk.id}/${disk.device} already plugged`);
    d.config.disks.push(structuredClone(disk));
    this.counters.hotplug++;
    this.changed();
  }

  async unplugDisk(uuid: string, diskId: string): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    const disk = d.config.disks.find((x) => x.id === diskId);
    if (!disk) throw new Error(`disk ${diskId} not plugged in ${uuid}`);
    if (disk.kind === 'cdrom') throw new Error('CD drives cannot be unplugged (IDE)');
    d.config.disks = d.config.disks.filter((x) => x.id !== diskId);
    this.counters.hotplug++;
    this.changed();
  }

  async plugNic(uuid: string, nic: NicConfig): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (d.config.nics.some((x) => x.id === nic.id || x.device === nic.device)) throw new Error(`nic ${nic.id}/${nic.device} already plugged`);
    d.config.nics.push(structuredClone(nic));
    this.counters.hotplug++;
    this.changed();
  }

  async unplugNic(uuid: string, nicId: string): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    if (!d.config.nics.some((x) => x.id === nicId)) throw new Error(`nic ${nicId} not plugged in ${uuid}`);
    d.config.nics = d.config.nics.filter((x) => x.id !== nicId);
    this.counters.hotplug++;
    this.changed();
  }

  async insertCd(uuid: string, diskId: string, p: string | null, format: DiskConfig['format'] = 'raw'): Promise<void> {
    await this.tick();
    const d = this.dom(uuid);
    const disk = d.config.disks.find((x) => x.id === diskId);
    if (!disk || disk.kind !== 'cdrom') throw new Error(`no CD drive ${diskId} in ${uuid}`);
    if (p === null) delete disk.path;
    else { disk.path = p; disk.format = format; }
    this.changed();
  }

  async list(): Promise<DomainInfo[]> {
    await this.tick();
    return [...this.doms.values()].map((d) => this.info(d));
  }

  async get(uuid: string): Promise<DomainInfo | undefined> {
    const d = this.doms.get(uuid);
    return d ? this.info(d) : undefined;
  }

  async stats(uuid: string): Promise<DomainStats> {
    const d = this.dom(uuid);
    return { cpuSeconds: d.cpuBase + this.cpuSince(d, this.now()), memoryActual: d.config.memoryBytes, vcpus: d.config.vcpusAtStartup };
  }

  /**
   * Simulated counters: CPU time as stats() has it, shared evenly among the
   * vCPUs, and disk and network traffic in proportion to it (per CPU second:
   * 1 MiB read and 512 KiB written in 4 KiB requests per disk, 256 KiB
   * received and 128 KiB sent per NIC). The guest reports a quarter of its
   * memory free.
   */
  async readCounters(uuid: string): Promise<DomainCounters> {
    const d = this.dom(uuid);
    const cpu = d.cpuBase + this.cpuSince(d, this.now());
    const vcpus = d.config.vcpusAtStartup;
    return {
      vcpuSeconds: Array.from({ length: vcpus }, () => cpu / vcpus),
      memoryBytes: d.config.memoryBytes,
      memoryFreeBytes: Math.floor(d.config.memoryBytes / 4),
      disks: d.config.disks.filter((x) => x.kind === 'disk').map((x) => ({
        device: x.device, readBytes: Math.floor(cpu * 1048576), writeBytes: Math.floor(cpu * 524288),
        readOps: Math.floor(cpu * 256), writeOps: Math.floor(cpu * 128),
      })),
      nics: d.config.nics.map((n) => ({ device: n.device, rxBytes: Math.floor(cpu * 262144), txBytes: Math.floor(cpu * 131072), rxErrors: 0, txErrors: 0 })),
    };
  }

  serialLog(uuid: string): { path: string; socket?: string } {
    const dir = path.join(this.runDir, uuid);
    return { path: path.join(dir, 'serial.log'), ...(this.consoles ? { socket: path.join(dir, 'serial.sock') } : {}) };
  }

  vncAddress(uuid: string): ConsoleAddress {
    return { unixSocket: path.join(this.runDir, uuid, 'vnc.sock') };
  }

  /**
   * A fixed, plausible guest agent report for a running domain: a Debian
   * guest with lo plus one eth<n> per NIC (its MAC; IPv4 10.<uuid bytes>.<n+1>/24
   * and a link-local IPv6 derived from the MAC).
   */
  async guestInfo(uuid: string, _timeoutMs?: number): Promise<GuestInfo | undefined> {
    const d = this.doms.get(uuid);
    if (!this.guestAgent || !d || d.state !== 'running') return undefined;
    const h = uuid.replace(/-/g, '');
    const a = parseInt(h.slice(0, 2), 16), b = parseInt(h.slice(2, 4), 16);
    return {
      osName: 'Debian GNU/Linux 12 (bookworm)',
      osVersion: '12.7',
      distro: 'debian',
      kernel: '6.1.0-25-amd64',
      hostname: d.config.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63) || 'sim-guest',
      interfaces: [
        { name: 'lo', mac: '00:00:00:00:00:00', ipv4: ['127.0.0.1'], ipv6: ['::1'] },
        ...[...d.config.nics].sort((x, y) => Number(x.device) - Number(y.device)).map((n, i) => ({
          name: `eth${i}`, mac: n.mac.toLowerCase(), ipv4: [`10.${a}.${b}.${i + 1}`], ipv6: [linkLocal(n.mac)],
        })),
      ],
      agentVersion: '7.2.0',
    };
  }

  /**
   * Test hook: the guest did something on its own. 'shutdown' / 'reboot' leave
   * the domain in state 'shutdown', 'crash' in 'crashed', 'paused'/'resumed'
   * change the state; 'exited' removes the domain (device model vanished).
   */
  injectGuestEvent(uuid: string, kind: DomainEvent['kind'], reason?: string): void {
    const d = this.dom(uuid);
    switch (kind) {
      case 'shutdown': this.setState(d, 'shutdown', reason ?? 'poweroff'); break;
      case 'reboot': this.setState(d, 'shutdown', 'reboot'); break;
      case 'crash': this.setState(d, 'crashed', reason ?? 'panic'); break;
      case 'paused': this.setState(d, 'paused', reason); break;
      case 'resumed': this.setState(d, 'running'); break;
      case 'exited': this.doms.delete(uuid); this.changed(); break;
    }
    const e: DomainEvent = { uuid, kind, reason: kind === 'reboot' ? undefined : reason ?? (kind === 'shutdown' ? 'poweroff' : kind === 'crash' ? 'panic' : undefined) };
    queueMicrotask(() => this.emit(e));
  }

  async close(): Promise<void> {
    if (this.persistTimer) { clearTimeout(this.persistTimer); this.persistTimer = undefined; }
    this.flush();
    this.consoles?.close();
    this.closed = true;
  }
}

/** The EUI-64 link-local IPv6 address of a MAC. */
function linkLocal(mac: string): string {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  if (b.length !== 6 || b.some((x) => Number.isNaN(x))) return 'fe80::1';
  const w = [((b[0]! ^ 2) << 8) | b[1]!, (b[2]! << 8) | 0xff, 0xfe00 | b[3]!, (b[4]! << 8) | b[5]!];
  return `fe80::${w.map((x) => x.toString(16)).join(':')}`;
}
