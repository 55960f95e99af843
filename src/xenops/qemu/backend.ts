/**
 * QEMU backend: one qemu-system-x86_64 process per running domain, driven
 * over QMP. Processes outlive the daemon (setsid, stdio to files); a new
 * backend on the same run directory re-adopts them in list().
 *
 * Layout: <runDir>/<uuid>/{qmp.sock,serial.sock,serial.log,vnc.sock,qga.sock,config.json,qemu.log,OVMF_VARS.fd}
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, statSync, copyFileSync, truncateSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile, copyFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import {
  BadPowerState, DomainExists, DomainNotFound, OperationTimeout,
  type ConsoleAddress, type DiskConfig, type DomainConfig, type DomainCounters, type DomainEvent, type DomainInfo, type DomainStats,
  type GuestInfo, type HypervisorBackend, type MigrationStats, type NicConfig,
} from '../backend.ts';
import { freePortOn, sendState, tcpUri } from './migration.ts';
import { detectAccel } from './accel.ts';
import { followQmpEvent } from './events.ts';
import { QmpClient, type QmpEvent } from './qmp.ts';
import { queryGuestAgent } from './qga.ts';
import { buildQemuArgs, DOMAIN_FILES, OVMF_VARS, type Accel } from './args.ts';
import * as devices from './devices.ts';
import { domainCounters } from './counters.ts';
import { createTap, ownsPid, powerStateOf, readPersisted, shellQuote, type Dom } from './domain.ts';
import { pidAlive, pidCpuSeconds, sleep, waitPidExit, ip } from './proc.ts';

export { detectAccel, multibootProbe } from './accel.ts';
export { shellQuote } from './domain.ts';

export interface QemuBackendOptions {
  /** Directory holding one sub-directory per domain. */
  runDir: string;
  accel?: 'auto' | 'kvm' | 'tcg';
  qemuBinary?: string;
  /** Serial log is rotated (serial.log -> serial.log.old) past this size. Default 1 MiB. */
  serialLogLimit?: number;
  log?: (msg: string) => void;
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
    followQmpEvent(d, e, (ev) => this.emit(ev), (dom) => this.refreshStatus(dom));
  }


  private async refreshStatus(d: Dom): Promise<string> {
    const st = await d.qmp!.execute<{ status: string; running: boolean }>('query-status');
    d.status = st.status;
    return st.status;
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
      else if (n.bridge) { const t = await createTap(cfg.uuid, n); createdTaps[n.id] = t; taps.set(n.id, t); }
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
      const m = powerStateOf(st);
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

  // ---------------------------------------------------------------- live migration (migration.ts)

  /** Receiving domains whose state is on its way: the launch resolves when it has arrived and runs. */
  private readonly arriving = new Map<string, Promise<DomainInfo>>();

  async prepareIncoming(cfg: DomainConfig, listen: string): Promise<{ uri: string }> {
    const uri = tcpUri(listen, await freePortOn(listen));
    const launched = this.launch(cfg, false, uri, false);
    launched.catch(() => undefined); // observed by finishIncoming
    this.arriving.set(cfg.uuid, launched);
    // QEMU listens for the state before it answers QMP: once the domain is attached, the sender may start
    for (;;) {
      const d = this.doms.get(cfg.uuid);
      if (d?.qmp) return { uri };
      const failed = await Promise.race([launched.then(() => false, () => true), sleep(20).then(() => false)]);
      if (failed) {
        this.arriving.delete(cfg.uuid);
        await launched; // throws why
      }
    }
  }

  async finishIncoming(uuid: string): Promise<DomainInfo> {
    const launched = this.arriving.get(uuid);
    if (!launched) throw new DomainNotFound(uuid);
    try {
      return await launched;
    } finally {
      this.arriving.delete(uuid);
    }
  }

  async migrateOut(uuid: string, uri: string): Promise<MigrationStats> {
    const d = this.dom(uuid);
    if (d.state !== 'running' && d.state !== 'paused') throw new BadPowerState(uuid, d.state, 'migrate');
    d.busy++;
    let stats: MigrationStats;
    try {
      stats = await sendState(uuid, d.qmp!, uri);
    } finally {
      d.busy--;
    }
    // the guest runs on at the destination: this device model only has to go
    await this.destroy(d);
    return stats;
  }

  // ---------------------------------------------------------------- devices (devices.ts)

  plugDisk(uuid: string, disk: DiskConfig): Promise<void> {
    return devices.plugDisk(this.dom(uuid), disk, (d) => this.persist(d));
  }

  unplugDisk(uuid: string, diskId: string): Promise<void> {
    return devices.unplugDisk(this.dom(uuid), diskId, (d) => this.persist(d));
  }

  plugNic(uuid: string, nic: NicConfig): Promise<void> {
    return devices.plugNic(this.dom(uuid), nic, (d) => this.persist(d));
  }

  unplugNic(uuid: string, nicId: string): Promise<void> {
    return devices.unplugNic(this.dom(uuid), nicId, (d) => this.persist(d));
  }

  insertCd(uuid: string, diskId: string, p: string | null, format: DiskConfig['format'] = 'raw'): Promise<void> {
    return devices.insertCd(this.dom(uuid), diskId, p, format, (d) => this.persist(d));
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
          const m = powerStateOf(st);
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
      if (st) { const m = powerStateOf(st); d.state = m.state; if (m.reason) d.reason = m.reason; }
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
      const m = powerStateOf(st);
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

  readCounters(uuid: string): Promise<DomainCounters> {
    return domainCounters(this.dom(uuid));
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
