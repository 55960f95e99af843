/**
 * QEMU backend: one qemu-system-x86_64 process per running domain, driven
 * over QMP. Processes outlive the daemon (setsid, stdio to files); a new
 * backend on the same run directory re-adopts them in list().
 *
 * Layout: <runDir>/<uuid>/{qmp.sock,serial.sock,serial.log,vnc.sock,qga.sock,config.json,qemu.log,OVMF_VARS.fd}
 */
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, openSync, closeSync, statSync, copyFileSync, truncateSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile, copyFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import {
  BadPowerState, DomainExists, DomainNotFound, OperationTimeout,
  type ConsoleAddress, type DiskConfig, type DomainConfig, type DomainEvent, type DomainInfo, type DomainStats,
  type GuestInfo, type HypervisorBackend, type NicConfig, type PowerState,
} from '../backend.ts';
import { QmpClient, type QmpEvent } from './qmp.ts';
import { queryGuestAgent } from './qga.ts';
import {
  buildQemuArgs, blockdevFileArgs, blockdevFormatArgs, diskDeviceArgs, diskIds, nicDeviceArgs, nicIds,
  DOMAIN_FILES, OVMF_VARS, type Accel,
} from './args.ts';
import { pidAlive, pidArgv, pidCpuSeconds, sleep, waitPidExit, ip } from './proc.ts';

const run = promisify(execFile);

export interface QemuBackendOptions {
  /** Directory holding one sub-directory per domain. */
  runDir: string;
  accel?: 'auto' | 'kvm' | 'tcg';
  qemuBinary?: string;
  /** Serial log is rotated (serial.log -> serial.log.old) past this size. Default 1 MiB. */
  serialLogLimit?: number;
  log?: (msg: string) => void;
}

/** What is persisted in config.json next to a running domain. */
interface Persisted {
  config: DomainConfig;
  pid: number;
  startedAt: number;
  accel: Accel;
  /** Taps this backend created (bridge NICs), by NIC id. */
  createdTaps: Record<string, string>;
}

interface Dom {
  uuid: string;
  dir: string;
  p: Persisted;
  qmp?: QmpClient;
  state: PowerState;
  status: string;
  reason?: string;
  /** >0 while a backend operation runs: guest events are not reported. */
  busy: number;
  /** Set when we asked the process to go away. */
  exiting: boolean;
  /** A guest agent query in flight (the agent socket takes one client at a time). */
  qga?: Promise<GuestInfo | undefined>;
}

const UNIX_PATH_MAX = 107;

export class QemuBackend implements HypervisorBackend {
  readonly name = 'qemu';
  private readonly runDir: string;
  private readonly qemu: string;
  private readonly serialLimit: number;
  private readonly log: (m: string) => void;
  private readonly doms = new Map<string, Dom>();
  private readonly listeners = new Set<(e: DomainEvent) => void>();
  private accel?: Promise<Accel>;
  private readonly accelOpt: 'auto' | 'kvm' | 'tcg';
  private rotateTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(opts: QemuBackendOptions) {
    this.runDir = path.resolve(opts.runDir);
    this.qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
    this.serialLimit = opts.serialLogLimit ?? 1024 * 1024;
    this.log = opts.log ?? (() => {});
    this.accelOpt = opts.accel ?? 'auto';
    const longest = path.join(this.runDir, '00000000-0000-0000-0000-000000000000', DOMAIN_FILES.serialSock);
    if (longest.length > UNIX_PATH_MAX) throw new Error(`runDir too long for unix sockets (${longest.length} > ${UNIX_PATH_MAX}): ${this.runDir}`);
    this.rotateTimer = setInterval(() => { for (const d of this.doms.values()) this.rotateSerial(d); }, 2000);
    this.rotateTimer.unref();
  }

  // ---------------------------------------------------------------- accel

  /** The accelerator used for new domains (probed once). */
  accelerator(): Promise<Accel> {
    this.accel ??= this.accelOpt === 'auto' ? detectAccel(this.qemu, this.log) : Promise.resolve(this.accelOpt);
    return this.accel;
  }

  // ---------------------------------------------------------------- events

  onEvent(listener: (e: DomainEvent) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  private emit(e: DomainEvent): void {
    this.log(`event ${e.uuid} ${e.kind}${e.reason ? ' ' + e.reason : ''}`);
    for (const l of [...this.listeners]) {
      try { l(e); } catch { /* listener's problem */ }
    }
  }

  private onQmpEvent(d: Dom, e: QmpEvent): void {
    const data = (e.data ?? {}) as Record<string, any>;
    switch (e.event) {
      case 'SHUTDOWN': {
        if (!data.guest) return; // host-initiated (quit, our own reset) is not news
        if (data.reason === 'guest-reset') { d.state = 'shutdown'; d.reason = 'reboot'; d.status = 'shutdown'; if (!d.busy) this.emit({ uuid: d.uuid, kind: 'reboot' }); }
        else if (data.reason === 'guest-panic') { d.state = 'crashed'; d.reason = 'panic'; if (!d.busy) this.emit({ uuid: d.uuid, kind: 'crash', reason: 'panic' }); }
        else { d.state = 'shutdown'; d.reason = 'poweroff'; d.status = 'shutdown'; if (!d.busy) this.emit({ uuid: d.uuid, kind: 'shutdown', reason: 'poweroff' }); }
        return;
      }
      case 'GUEST_PANICKED': {
        if (d.state === 'crashed') return;
        d.state = 'crashed'; d.reason = 'panic'; d.status = 'guest-panicked';
        if (!d.busy) this.emit({ uuid: d.uuid, kind: 'crash', reason: 'panic' });
        return;
      }
      case 'STOP': {
        if (d.busy) return;
        void this.refreshStatus(d).then((st) => {
          if (d.busy) return;
          if (st === 'paused' || st === 'io-error') {
            if (d.state !== 'paused') { d.state = 'paused'; this.emit({ uuid: d.uuid, kind: 'paused', reason: st === 'io-error' ? 'io-error' : undefined }); }
          } else if (st === 'internal-error') {
            if (d.state !== 'crashed') { d.state = 'crashed'; d.reason = 'internal-error'; this.emit({ uuid: d.uuid, kind: 'crash', reason: 'internal-error' }); }
          }
        }).catch(() => {});
        return;
      }
      case 'RESUME': {
        if (d.busy) return;
        const was = d.state;
        d.state = 'running'; d.status = 'running'; d.reason = undefined;
        if (was === 'paused') this.emit({ uuid: d.uuid, kind: 'resumed' });
        return;
      }
      default:
        return;
    }
  }

  private async refreshStatus(d: Dom): Promise<string> {
    const st = await d.qmp!.execute<{ status: string; running: boolean }>('query-status');
    d.status = st.status;
    return st.status;
  }

  /** Map a QMP run state to a PowerState. */
  private static stateOf(status: string): { state: PowerState; reason?: string } {
    switch (status) {
      case 'running': return { state: 'running' };
      case 'shutdown': return { state: 'shutdown' };
      case 'guest-panicked': return { state: 'crashed', reason: 'panic' };
      case 'internal-error': return { state: 'crashed', reason: 'internal-error' };
      case 'inmigrate': return { state: 'resuming' };
      case 'finish-migrate': case 'postmigrate': return { state: 'suspending' };
      default: return { state: 'paused' }; // paused, prelaunch, io-error, debug, suspended, ...
    }
  }

  // ---------------------------------------------------------------- attach

  private async attach(d: Dom, connectTimeoutMs: number, child?: { exited: boolean; code?: number | null }): Promise<void> {
    const sock = path.join(d.dir, DOMAIN_FILES.qmp);
    const deadline = Date.now() + connectTimeoutMs;
    let lastErr: unknown;
    while (Date.now() < deadline) {
      if (child?.exited || !pidAlive(d.p.pid)) break;
      if (existsSync(sock)) {
        try {
          d.qmp = await QmpClient.connect(sock, Math.max(500, deadline - Date.now()));
          break;
        } catch (e) { lastErr = e; }
      }
      await sleep(5);
    }
    if (!d.qmp) {
      const log = await readFile(path.join(d.dir, DOMAIN_FILES.qemuLog), 'utf8').catch(() => '');
      throw new Error(`qemu for ${d.uuid} ${child?.exited || !pidAlive(d.p.pid) ? `exited${child?.code != null ? ' with code ' + child.code : ''}` : 'did not answer on QMP'}: ${log.trim().slice(-2000) || String(lastErr ?? '')}`);
    }
    const qmp = d.qmp;
    qmp.onEvent((e) => this.onQmpEvent(d, e));
    qmp.onClose(() => { void this.onQmpClosed(d, qmp); });
  }

  private async onQmpClosed(d: Dom, qmp: QmpClient): Promise<void> {
    if (this.closed || d.qmp !== qmp) return;
    if (d.exiting) return;
    // Either the process died or went away; give it a moment to be reaped.
    const gone = await waitPidExit(d.p.pid, 2000);
    if (d.exiting || this.doms.get(d.uuid) !== d) return;
    if (gone) {
      this.doms.delete(d.uuid);
      await this.cleanupDomain(d).catch(() => {});
      const log = await readFile(path.join(d.dir, DOMAIN_FILES.qemuLog), 'utf8').catch(() => '');
      this.emit({ uuid: d.uuid, kind: 'crash', reason: `device model exited unexpectedly${log.trim() ? ': ' + log.trim().split('\n').slice(-1)[0] : ''}` });
    } else {
      // Still alive: reconnect.
      d.qmp = undefined;
      try { await this.attach(d, 5000); } catch (e) { this.log(`reconnect ${d.uuid}: ${String(e)}`); }
    }
  }

  private dom(uuid: string): Dom {
    const d = this.doms.get(uuid);
    if (!d || !d.qmp) throw new DomainNotFound(uuid);
    return d;
  }

  private async persist(d: Dom): Promise<void> {
    const f = path.join(d.dir, DOMAIN_FILES.config);
    await writeFile(f + '.tmp', JSON.stringify(d.p, null, 2));
    await rm(f, { force: true });
    await writeFile(f, JSON.stringify(d.p, null, 2));
    await rm(f + '.tmp', { force: true });
  }

  private info(d: Dom): DomainInfo {
    return {
      uuid: d.uuid, name: d.p.config.name, state: d.state, pid: d.p.pid, status: d.status,
      reason: d.reason, config: structuredClone(d.p.config), startedAt: d.p.startedAt,
    };
  }

  // ---------------------------------------------------------------- taps

  private static tapName(uuid: string, device: string): string {
    return `xn${uuid.replace(/-/g, '').slice(0, 8)}.${device}`.slice(0, 15);
  }

  private async createTap(uuid: string, nic: NicConfig): Promise<string> {
    const name = QemuBackend.tapName(uuid, nic.device);
    await ip(['link', 'del', name]).catch(() => {});
    await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap']);
    if (nic.mtu) await ip(['link', 'set', name, 'mtu', String(nic.mtu)]);
    await ip(['link', 'set', name, 'master', nic.bridge!]);
    await ip(['link', 'set', name, 'up']);
    return name;
  }

  // ---------------------------------------------------------------- lifecycle

  async start(cfg: DomainConfig, opts: { paused: boolean }): Promise<DomainInfo> {
    return this.launch(cfg, opts.paused);
  }

  async resume(cfg: DomainConfig, statePath: string, opts: { paused: boolean }): Promise<DomainInfo> {
    const abs = path.resolve(statePath);
    if (!existsSync(abs)) throw new Error(`no suspend image at ${abs}`);
    return this.launch(cfg, opts.paused, `exec:cat ${shellQuote(abs)}`, true);
  }

  private async launch(cfgIn: DomainConfig, paused: boolean, incoming?: string, keepSerial = false): Promise<DomainInfo> {
    if (this.closed) throw new Error('backend closed');
    const cfg = structuredClone(cfgIn);
    if (!/^[0-9a-fA-F-]{36}$/.test(cfg.uuid)) throw new Error(`bad uuid ${cfg.uuid}`);
    const existing = this.doms.get(cfg.uuid);
    if (existing) throw new DomainExists(cfg.uuid);
    const dir = path.join(this.runDir, cfg.uuid);
    const prev = await readPersisted(dir);
    if (prev && pidAlive(prev.pid) && ownsPid(prev.pid, cfg.uuid)) throw new DomainExists(cfg.uuid);

    const accel = await this.accelerator();
    await mkdir(dir, { recursive: true });
    for (const f of await readdir(dir)) {
      if (keepSerial && f.startsWith(DOMAIN_FILES.serialLog)) continue;
      await rm(path.join(dir, f), { recursive: true, force: true });
    }
    if (cfg.firmware === 'uefi') await copyFile(OVMF_VARS, path.join(dir, DOMAIN_FILES.ovmfVars));

    const createdTaps: Record<string, string> = {};
    const taps = new Map<string, string>();
    for (const n of cfg.nics) {
      if (n.tap) taps.set(n.id, n.tap);
      else if (n.bridge) { const t = await this.createTap(cfg.uuid, n); createdTaps[n.id] = t; taps.set(n.id, t); }
    }
    const args = buildQemuArgs(cfg, { accel, paused, incoming, taps });
    const logFd = openSync(path.join(dir, DOMAIN_FILES.qemuLog), 'a');
    const startedAt = Date.now();
    let child;
    try {
      child = spawn(this.qemu, args, { cwd: dir, detached: true, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const childState: { exited: boolean; code?: number | null } = { exited: false };
    child.on('exit', (code) => { childState.exited = true; childState.code = code; });
    child.on('error', () => { childState.exited = true; });
    child.unref();
    const pid = child.pid ?? 0;
    const d: Dom = {
      uuid: cfg.uuid, dir, p: { config: cfg, pid, startedAt, accel, createdTaps },
      state: incoming ? 'resuming' : paused ? 'paused' : 'running', status: 'unknown', busy: 0, exiting: false,
    };
    this.doms.set(cfg.uuid, d);
    try {
      if (!pid) throw new Error(`cannot spawn ${this.qemu}`);
      await this.persist(d);
      await this.attach(d, 30000, childState);
      if (incoming) {
        d.busy++;
        try {
          await this.waitIncoming(d);
          // The saved run state was 'paused' (we stop the guest before saving): start it unless asked not to.
          if (!paused && (await this.refreshStatus(d)) !== 'running') await d.qmp!.execute('cont');
        } finally { d.busy--; }
      }
      const st = await this.refreshStatus(d);
      const m = QemuBackend.stateOf(st);
      d.state = m.state; d.reason = m.reason;
      this.log(`started ${cfg.uuid} pid ${pid} (${accel}) status ${st}`);
      return this.info(d);
    } catch (e) {
      this.doms.delete(cfg.uuid);
      d.exiting = true;
      d.qmp?.close();
      if (pid && pidAlive(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } await waitPidExit(pid, 2000); }
      await this.cleanupDomain(d).catch(() => {});
      throw e;
    }
  }

  private async waitIncoming(d: Dom): Promise<void> {
    const deadline = Date.now() + 120000;
    while (Date.now() < deadline) {
      const st = await this.refreshStatus(d);
      if (st !== 'inmigrate') {
        const mig = await d.qmp!.execute<{ status?: string; 'error-desc'?: string }>('query-migrate').catch(() => ({} as { status?: string }));
        if (mig.status === 'failed') throw new Error(`resume of ${d.uuid} failed: ${(mig as any)['error-desc'] ?? 'incoming migration failed'}`);
        return;
      }
      await sleep(20);
    }
    throw new OperationTimeout(d.uuid, 'resume', 120000);
  }

  /** Remove the process's leftovers (sockets, pid, taps we created); keep serial.log and qemu.log. */
  private async cleanupDomain(d: Dom): Promise<void> {
    for (const t of Object.values(d.p.createdTaps)) await ip(['link', 'del', t]).catch(() => {});
    for (const f of [DOMAIN_FILES.qmp, DOMAIN_FILES.serialSock, DOMAIN_FILES.vnc, DOMAIN_FILES.qga, DOMAIN_FILES.config, DOMAIN_FILES.ovmfVars]) {
      await unlink(path.join(d.dir, f)).catch(() => {});
    }
  }

  /** Kill the device model and forget the domain. */
  private async destroy(d: Dom): Promise<void> {
    d.exiting = true;
    d.busy++;
    try {
      if (d.qmp && !d.qmp.closed) await Promise.race([d.qmp.execute('quit').catch(() => {}), sleep(1000)]);
      if (!(await waitPidExit(d.p.pid, 3000))) {
        try { process.kill(d.p.pid, 'SIGKILL'); } catch { /* gone */ }
        await waitPidExit(d.p.pid, 3000);
      }
    } finally {
      d.busy--;
      d.qmp?.close();
      this.doms.delete(d.uuid);
      await this.cleanupDomain(d).catch(() => {});
    }
  }

  private async waitState(d: Dom, pred: (status: string) => boolean, timeoutMs: number, op: string): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.refreshStatus(d);
      if (pred(st)) return st;
      if (Date.now() > deadline) throw new OperationTimeout(d.uuid, op, timeoutMs);
      await Promise.race([
        d.qmp!.waitEvent((e) => e.event === 'SHUTDOWN' || e.event === 'STOP' || e.event === 'RESUME' || e.event === 'RESET' || e.event === 'GUEST_PANICKED', Math.min(200, Math.max(1, deadline - Date.now()))).catch(() => {}),
      ]);
    }
  }

  async shutdown(uuid: string, mode: 'clean' | 'hard', timeoutMs = 60000): Promise<void> {
    const d = this.dom(uuid);
    if (mode === 'clean' && (d.state === 'running')) {
      d.busy++;
      try {
        await d.qmp!.execute('system_powerdown');
        await this.waitState(d, (s) => s === 'shutdown', timeoutMs, 'clean shutdown');
      } finally { d.busy--; }
    } else if (mode === 'clean' && d.state !== 'shutdown' && d.state !== 'crashed') {
      throw new BadPowerState(uuid, d.state, 'clean shutdown');
    }
    await this.destroy(d);
  }

  async reboot(uuid: string, mode: 'clean' | 'hard', timeoutMs = 60000): Promise<void> {
    const d = this.dom(uuid);
    if (d.state === 'paused' || d.state === 'suspending' || d.state === 'resuming') throw new BadPowerState(uuid, d.state, 'reboot');
    if (d.state === 'running' && mode === 'clean') {
      // No reboot button on a PC: power the guest down cleanly first.
      d.busy++;
      try {
        await d.qmp!.execute('system_powerdown');
        await this.waitState(d, (s) => s === 'shutdown', timeoutMs, 'clean reboot');
      } finally { d.busy--; }
    }
    // The domain is rebuilt: a fresh device model with the current configuration
    // (including hot-plugged devices). Resetting in place does not work with
    // SeaBIOS, which answers a host reset with a reset of its own.
    const cfg = d.p.config;
    await this.destroy(d);
    await this.launch(cfg, false, undefined, true);
  }

  async pause(uuid: string): Promise<void> {
    const d = this.dom(uuid);
    if (d.state === 'paused') return;
    if (d.state !== 'running') throw new BadPowerState(uuid, d.state, 'pause');
    d.busy++;
    try { await d.qmp!.execute('stop'); await this.refreshStatus(d); d.state = 'paused'; } finally { d.busy--; }
  }

  async unpause(uuid: string): Promise<void> {
    const d = this.dom(uuid);
    if (d.state === 'running') return;
    if (d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'unpause');
    d.busy++;
    try { await d.qmp!.execute('cont'); await this.refreshStatus(d); d.state = 'running'; } finally { d.busy--; }
  }

  async suspend(uuid: string, statePath: string): Promise<void> {
    const d = this.dom(uuid);
    if (d.state !== 'running' && d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'suspend');
    const abs = path.resolve(statePath);
    await mkdir(path.dirname(abs), { recursive: true });
    const wasRunning = d.state === 'running';
    d.busy++;
    d.state = 'suspending';
    try {
      if (wasRunning) await d.qmp!.execute('stop');
      await d.qmp!.execute('migrate', { uri: `exec:cat > ${shellQuote(abs)}` });
      const deadline = Date.now() + 300000;
      for (;;) {
        const m = await d.qmp!.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
        if (m.status === 'completed') break;
        if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`suspend of ${uuid} failed: ${m['error-desc'] ?? m.status}`);
        if (Date.now() > deadline) throw new OperationTimeout(uuid, 'suspend', 300000);
        await sleep(20);
      }
    } catch (e) {
      d.state = wasRunning ? 'running' : 'paused';
      if (wasRunning) await d.qmp?.execute('cont').catch(() => {});
      d.busy--;
      throw e;
    }
    d.busy--;
    await this.destroy(d);
  }

  // ---------------------------------------------------------------- devices

  async plugDisk(uuid: string, disk: DiskConfig): Promise<void> {
    const d = this.dom(uuid);
    if (disk.kind === 'cdrom') throw new Error('CD drives cannot be hot-plugged (IDE); use insertCd on an existing drive');
    if (d.p.config.disks.some((x) => x.id === disk.id || x.device === disk.device)) throw new Error(`disk ${disk.id}/${disk.device} already plugged`);
    if (!disk.path) throw new Error('hot-plugged disk needs a path');
    const q = d.qmp!;
    await q.execute('blockdev-add', blockdevFileArgs(disk));
    try {
      await q.execute('blockdev-add', blockdevFormatArgs(disk));
    } catch (e) { await q.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {}); throw e; }
    try {
      await q.execute('device_add', diskDeviceArgs(disk, undefined));
    } catch (e) {
      await q.execute('blockdev-del', { 'node-name': diskIds(disk).fmt }).catch(() => {});
      await q.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {});
      throw e;
    }
    d.p.config.disks.push(structuredClone(disk));
    await this.persist(d);
  }

  private async deviceDel(d: Dom, id: string, timeoutMs: number): Promise<void> {
    const q = d.qmp!;
    const deleted = q.waitEvent((e) => e.event === 'DEVICE_DELETED' && (e.data as any)?.device === id, timeoutMs);
    deleted.catch(() => {});
    await q.execute('device_del', { id });
    try { await deleted; } catch { throw new OperationTimeout(d.uuid, `unplug ${id} (guest did not release it)`, timeoutMs); }
  }

  async unplugDisk(uuid: string, diskId: string): Promise<void> {
    const d = this.dom(uuid);
    const disk = d.p.config.disks.find((x) => x.id === diskId);
    if (!disk) throw new Error(`disk ${diskId} not plugged in ${uuid}`);
    if (disk.kind === 'cdrom') throw new Error('CD drives cannot be unplugged (IDE)');
    await this.deviceDel(d, diskIds(disk).dev, 20000);
    await d.qmp!.execute('blockdev-del', { 'node-name': diskIds(disk).fmt }).catch(() => {});
    await d.qmp!.execute('blockdev-del', { 'node-name': diskIds(disk).file }).catch(() => {});
    d.p.config.disks = d.p.config.disks.filter((x) => x.id !== diskId);
    await this.persist(d);
  }

  async plugNic(uuid: string, nic: NicConfig): Promise<void> {
    const d = this.dom(uuid);
    if (d.p.config.nics.some((x) => x.id === nic.id || x.device === nic.device)) throw new Error(`nic ${nic.id}/${nic.device} already plugged`);
    let tap = nic.tap;
    if (!tap && nic.bridge) { tap = await this.createTap(uuid, nic); d.p.createdTaps[nic.id] = tap; }
    const q = d.qmp!;
    try {
      if (tap) await q.execute('netdev_add', { type: 'tap', id: nicIds(nic).netdev, ifname: tap, script: 'no', downscript: 'no' });
      await q.execute('device_add', nicDeviceArgs(nic, tap));
    } catch (e) {
      if (tap) await q.execute('netdev_del', { id: nicIds(nic).netdev }).catch(() => {});
      if (d.p.createdTaps[nic.id]) { await ip(['link', 'del', d.p.createdTaps[nic.id]!]).catch(() => {}); delete d.p.createdTaps[nic.id]; }
      throw e;
    }
    d.p.config.nics.push(structuredClone(nic));
    await this.persist(d);
  }

  async unplugNic(uuid: string, nicId: string): Promise<void> {
    const d = this.dom(uuid);
    const nic = d.p.config.nics.find((x) => x.id === nicId);
    if (!nic) throw new Error(`nic ${nicId} not plugged in ${uuid}`);
    await this.deviceDel(d, nicIds(nic).dev, 20000);
    await d.qmp!.execute('netdev_del', { id: nicIds(nic).netdev }).catch(() => {});
    const t = d.p.createdTaps[nicId];
    if (t) { await ip(['link', 'del', t]).catch(() => {}); delete d.p.createdTaps[nicId]; }
    d.p.config.nics = d.p.config.nics.filter((x) => x.id !== nicId);
    await this.persist(d);
  }

  async insertCd(uuid: string, diskId: string, p: string | null, format: DiskConfig['format'] = 'raw'): Promise<void> {
    const d = this.dom(uuid);
    const disk = d.p.config.disks.find((x) => x.id === diskId);
    if (!disk || disk.kind !== 'cdrom') throw new Error(`no CD drive ${diskId} in ${uuid}`);
    const id = diskIds(disk).dev;
    if (p === null) {
      await d.qmp!.execute('eject', { id, force: true });
      delete disk.path;
    } else {
      const abs = path.resolve(p);
      await d.qmp!.execute('blockdev-change-medium', { id, filename: abs, format, 'read-only-mode': 'read-only' });
      disk.path = abs; disk.format = format;
    }
    await this.persist(d);
  }

  // ---------------------------------------------------------------- queries

  async list(): Promise<DomainInfo[]> {
    await mkdir(this.runDir, { recursive: true });
    for (const ent of await readdir(this.runDir, { withFileTypes: true })) {
      if (!ent.isDirectory() || this.doms.has(ent.name)) continue;
      await this.adopt(ent.name).catch((e) => this.log(`adopt ${ent.name}: ${String(e)}`));
    }
    const out: DomainInfo[] = [];
    for (const d of [...this.doms.values()]) {
      if (!d.qmp) continue;
      if (!d.busy) {
        try {
          const st = await this.refreshStatus(d);
          const m = QemuBackend.stateOf(st);
          d.state = m.state;
          if (m.reason || m.state === 'running' || m.state === 'paused') d.reason = m.reason ?? (m.state === 'shutdown' ? d.reason : undefined);
        } catch { continue; }
      }
      out.push(this.info(d));
    }
    return out;
  }

  async get(uuid: string): Promise<DomainInfo | undefined> {
    if (!this.doms.has(uuid)) await this.adopt(uuid).catch(() => {});
    const d = this.doms.get(uuid);
    if (!d || !d.qmp) return undefined;
    if (!d.busy) {
      const st = await this.refreshStatus(d).catch(() => undefined);
      if (st) { const m = QemuBackend.stateOf(st); d.state = m.state; if (m.reason) d.reason = m.reason; }
    }
    return this.info(d);
  }

  /** Re-attach to a domain started by a previous backend instance. */
  private async adopt(uuid: string): Promise<void> {
    if (this.closed) return;
    const dir = path.join(this.runDir, uuid);
    const p = await readPersisted(dir);
    if (!p) return;
    if (!pidAlive(p.pid) || !ownsPid(p.pid, uuid)) {
      // Died while nobody watched: clean up what it left.
      const dead: Dom = { uuid, dir, p, state: 'shutdown', status: 'dead', busy: 0, exiting: true };
      await this.cleanupDomain(dead);
      return;
    }
    const d: Dom = { uuid, dir, p, state: 'running', status: 'unknown', busy: 0, exiting: false };
    this.doms.set(uuid, d);
    try {
      await this.attach(d, 5000);
      const st = await this.refreshStatus(d);
      const m = QemuBackend.stateOf(st);
      d.state = m.state; d.reason = m.reason;
      if (st === 'shutdown') {
        // What stopped it is not recorded by QEMU; look at the last RESET/SHUTDOWN hint we can get.
        d.reason = 'poweroff';
      }
      this.log(`adopted ${uuid} pid ${p.pid} status ${st}`);
    } catch (e) {
      this.doms.delete(uuid);
      throw e;
    }
  }

  async stats(uuid: string): Promise<DomainStats> {
    const d = this.dom(uuid);
    let vcpus = d.p.config.vcpusAtStartup;
    try { vcpus = (await d.qmp!.execute<unknown[]>('query-cpus-fast')).length; } catch { /* keep config */ }
    let memoryActual = d.p.config.memoryBytes;
    try { memoryActual = (await d.qmp!.execute<{ actual: number }>('query-balloon')).actual; } catch { /* no balloon */ }
    return { cpuSeconds: pidCpuSeconds(d.p.pid), memoryActual, vcpus };
  }

  serialLog(uuid: string): { path: string; socket: string } {
    const dir = path.join(this.runDir, uuid);
    const d = this.doms.get(uuid);
    if (d) this.rotateSerial(d);
    return { path: path.join(dir, DOMAIN_FILES.serialLog), socket: path.join(dir, DOMAIN_FILES.serialSock) };
  }

  vncAddress(uuid: string): ConsoleAddress {
    return { unixSocket: path.join(this.runDir, uuid, DOMAIN_FILES.vnc) };
  }

  /**
   * The guest agent's answers (QEMU guest agent protocol on the domain's
   * qga.sock); undefined when the domain is not running or no agent answers
   * within timeoutMs (most guests run none). Concurrent calls share one query.
   */
  async guestInfo(uuid: string, timeoutMs = 3000): Promise<GuestInfo | undefined> {
    const d = this.doms.get(uuid);
    if (!d || !d.qmp || d.state !== 'running') return undefined;
    const sock = path.join(d.dir, DOMAIN_FILES.qga);
    if (!existsSync(sock)) return undefined; // started before the agent channel existed
    d.qga ??= queryGuestAgent(sock, timeoutMs).finally(() => { d.qga = undefined; });
    return d.qga;
  }

  /** Keep serial.log bounded: past the limit it becomes serial.log.old (QEMU appends with O_APPEND). */
  private rotateSerial(d: Dom): void {
    const f = path.join(d.dir, DOMAIN_FILES.serialLog);
    try {
      if (statSync(f).size <= this.serialLimit) return;
      copyFileSync(f, f + '.old');
      truncateSync(f, 0);
    } catch { /* not there yet */ }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.rotateTimer) clearInterval(this.rotateTimer);
    for (const d of this.doms.values()) d.qmp?.close();
    this.doms.clear();
  }
}

async function readPersisted(dir: string): Promise<Persisted | undefined> {
  try { return JSON.parse(await readFile(path.join(dir, DOMAIN_FILES.config), 'utf8')) as Persisted; } catch { return undefined; }
}

/** Guard against pid reuse: the process must be a QEMU started for this uuid. */
function ownsPid(pid: number, uuid: string): boolean {
  const argv = pidArgv(pid);
  const i = argv.indexOf('-uuid');
  return i >= 0 && argv[i + 1] === uuid;
}

export function shellQuote(s: string): string { return `'${s.replace(/'/g, `'\\''`)}'`; }

/**
 * Pick the accelerator: KVM only when kvm_intel or kvm_amd is loaded, /dev/kvm
 * exists, and a probe guest (a tiny multiboot image run in 32-bit protected
 * mode that writes to isa-debug-exit) completes under it. Otherwise TCG.
 */
export async function detectAccel(qemu = 'qemu-system-x86_64', log: (m: string) => void = () => {}): Promise<Accel> {
  const hasModule = existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd');
  if (!hasModule || !existsSync('/dev/kvm')) { log('accel: tcg (no kvm_intel/kvm_amd)'); return 'tcg'; }
  const dir = await import('node:fs/promises').then((f) => f.mkdtemp(path.join(os.tmpdir(), 'xenon-kvm-probe-')));
  try {
    const img = path.join(dir, 'probe.bin');
    await writeFile(img, multibootProbe());
    const r = await run(qemu, ['-nodefaults', '-no-user-config', '-display', 'none', '-accel', 'kvm', '-m', '32',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-kernel', img], { timeout: 5000 }).then(() => 0, (e: any) => (typeof e.code === 'number' ? e.code : -1));
    const ok = r === ((0x4b << 1) | 1);
    log(`accel: ${ok ? 'kvm' : 'tcg'} (probe exit ${r})`);
    return ok ? 'kvm' : 'tcg';
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A 64-byte multiboot (a.out kludge) image: out 0xf4, 'K' ; hlt. */
export function multibootProbe(): Buffer {
  const b = Buffer.alloc(64);
  const magic = 0x1badb002, flags = 0x00010000, load = 0x100000;
  b.writeUInt32LE(magic, 0);
  b.writeUInt32LE(flags, 4);
  b.writeUInt32LE((-(magic + flags)) >>> 0, 8);
  b.writeUInt32LE(load, 12); // header_addr
  b.writeUInt32LE(load, 16); // load_addr
  b.writeUInt32LE(load + 64, 20); // load_end_addr
  b.writeUInt32LE(load + 64, 24); // bss_end_addr
  b.writeUInt32LE(load + 32, 28); // entry
  Buffer.from([0xb0, 0x4b, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(b, 32); // mov al,'K'; out 0xf4,al; hlt; jmp $-1
  return b;
}
