/**
 * Where VM records meet the hypervisor backend: turning a VM into a domain
 * configuration, keeping power_state/resident_on/consoles/metrics in step
 * with what the backend reports, acting on guest-initiated events
 * (actions_after_*), and reconciling both ways when the daemon starts.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { DbRecord, Store, Tx } from '../db/store.ts';
import type { DiskConfig, DomainConfig, DomainEvent, DomainInfo, GuestInfo, HypervisorBackend, NicConfig } from '../xenops/backend.ts';
import type { Services } from './context.ts';
import { refreshAllowed } from './vm-operations.ts';

import type { DiskProvider, NicProvider } from './context.ts';

export type { DiskProvider, NicProvider };

/** Memory kept back for the host itself when deciding whether a VM fits. */
const HOST_RESERVE = 512 * 1024 * 1024;
const CLEAN_TIMEOUT_MS = 60_000;
/** How long one guest agent may take to answer. */
const GUEST_AGENT_TIMEOUT_MS = 3000;
/** Guest agent queries run in parallel, this many at a time. */
const GUEST_AGENT_PARALLEL = 16;
/** A guest whose agent never answered is asked at every metrics tick for this long after it started... */
const GUEST_AGENT_GRACE_MS = 120_000;
/** ...and then only this often (most guests run no agent). */
const GUEST_AGENT_BACKOFF_MS = 30_000;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** A locally administered, unicast MAC (as xapi generates for VIFs). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * VM_guest_metrics fields from a guest agent's answer, keyed as xapi's guest
 * agent keys them: os_version {name, distro, major, minor, uname}, networks
 * "<vif device>/ip" (first IPv4), "<dev>/ipv4/<n>", "<dev>/ipv6/<n>" for each
 * guest interface whose MAC is one of the VM's VIFs (loopback and interfaces
 * without a VIF are not reported).
 */
export function guestMetricsFields(info: GuestInfo, vifDevices: Map<string, string>): Record<string, unknown> {
  const os: Record<string, string> = {};
  if (info.osName) os.name = info.osName;
  if (info.distro) os.distro = info.distro;
  const [major, minor] = info.osVersion.split('.');
  if (major) os.major = major;
  if (minor) os.minor = minor;
  if (info.kernel) os.uname = info.kernel;
  const networks: Record<string, string> = {};
  for (const nic of info.interfaces) {
    const dev = vifDevices.get(nic.mac.toLowerCase());
    if (dev === undefined) continue;
    if (nic.ipv4[0]) networks[`${dev}/ip`] = nic.ipv4[0];
    nic.ipv4.forEach((a, i) => (networks[`${dev}/ipv4/${i}`] = a));
    nic.ipv6.forEach((a, i) => (networks[`${dev}/ipv6/${i}`] = a));
  }
  const version: Record<string, string> = {};
  const v = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(info.agentVersion);
  if (v) { version.major = v[1]!; version.minor = v[2]!; if (v[3]) version.micro = v[3]; }
  const other: Record<string, string> = {};
  if (info.hostname) other.hostname = info.hostname;
  if (info.agentVersion) other['agent-version'] = info.agentVersion;
  return { os_version: os, networks, PV_drivers_version: version, other, PV_drivers_detected: true, PV_drivers_up_to_date: true, live: true };
}

export class Xenops {
  private unsubscribe?: () => void;
  /** Operations Xenon itself started: guest events for these VMs are expected, not acted on. */
  private readonly busy = new Set<string>();

  constructor(
    readonly backend: HypervisorBackend,
    private readonly services: Services,
  ) {}

  private get store(): Store {
    return this.services.store;
  }

  /** Storage and networking plug in through services.storage and services.nics when they run. */
  private get disks(): DiskProvider | undefined {
    return this.services.storage;
  }

  private get nics(): NicProvider | undefined {
    return this.services.nics;
  }

  vmByUuid(uuid: string): string | undefined {
    return this.store.byUuid('VM', uuid);
  }

  // ------------------------------------------------------------ config

  /** The domain configuration of a VM, attaching its disks and NICs. */
  async domainConfig(ref: string): Promise<DomainConfig> {
    const vm = this.store.must('VM', ref);
    const boot = vm.HVM_boot_params as Record<string, string>;
    const disks: DiskConfig[] = [];
    for (const vbdRef of vm.VBDs as string[]) {
      const disk = await this.diskFor(vbdRef, disks.length);
      if (disk) disks.push(disk);
    }
    const nics: NicConfig[] = [];
    for (const vifRef of vm.VIFs as string[]) {
      const vif = this.store.get('VIF', vifRef);
      if (!vif || !this.nics) continue;
      const where = await this.nics.plug(vifRef);
      nics.push({ id: String(vif.uuid), device: str(vif.device) || String(nics.length), mac: str(vif.MAC), ...where, model: 'virtio-net-pci' });
    }
    const kernel = str(vm.PV_kernel);
    return {
      uuid: String(vm.uuid),
      name: String(vm.name_label),
      vcpusMax: Number(vm.VCPUs_max) || 1,
      vcpusAtStartup: Number(vm.VCPUs_at_startup) || 1,
      memoryBytes: Number(vm.memory_static_max) || 256 * 1024 * 1024,
      firmware: boot.firmware === 'uefi' ? 'uefi' : 'bios',
      bootOrder: boot.order || 'cd',
      kernel: kernel || undefined,
      initrd: kernel ? str(vm.PV_ramdisk) || undefined : undefined,
      cmdline: kernel ? str(vm.PV_args) : undefined,
      platform: { ...(vm.platform as Record<string, string>) },
      disks,
      nics,
    };
  }

  /** The disk a VBD gives the guest (its VDI attached through storage). */
  async diskFor(vbdRef: string, index = 0): Promise<DiskConfig | undefined> {
    const vbd = this.store.get('VBD', vbdRef);
    if (!vbd) return undefined;
    const cd = vbd.type === 'CD';
    const readOnly = vbd.mode === 'RO' || cd;
    let path: string | undefined;
    let format: DiskConfig['format'] = 'raw';
    if (!vbd.empty && vbd.VDI !== NULL_REF) {
      if (!this.disks) throw new XenApiError('SR_BACKEND_FAILURE', 'no storage', '', 'storage is not available on this host');
      ({ path, format } = await this.disks.attach(String(vbd.VDI), readOnly));
    }
    return { id: String(vbd.uuid), device: str(vbd.userdevice) || String(index), path, format, readOnly, kind: cd ? 'cdrom' : 'disk', bootable: vbd.bootable === true };
  }

  // ------------------------------------------------------------ memory

  freeMemory(): number {
    const host = this.store.must('host', this.services.hostRef());
    const metrics = this.store.get('host_metrics', String(host.metrics));
    const total = Number(metrics?.memory_total ?? 0);
    let used = HOST_RESERVE;
    for (const [, vm] of this.store.where('VM', (v) => !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused') && v.resident_on === this.services.hostRef())) {
      used += Number(vm.memory_static_max);
    }
    return Math.max(0, total - used);
  }

  assertMemory(vm: DbRecord): void {
    const needed = Number(vm.memory_static_max);
    const available = this.freeMemory();
    if (needed > available) throw new XenApiError('HOST_NOT_ENOUGH_FREE_MEMORY', needed, available);
  }

  private updateHostFree(tx: Tx): void {
    const host = this.store.must('host', this.services.hostRef());
    if (this.store.get('host_metrics', String(host.metrics))) {
      tx.update('host_metrics', String(host.metrics), { memory_free: this.freeMemory(), last_updated: formatDateTime(new Date()) });
    }
  }

  // ------------------------------------------------------------ records

  /** Records a domain as running (or paused) here: state, consoles, devices, metrics. */
  markRunning(ref: string, info: DomainInfo, opts: { fresh: boolean }): void {
    const vm = this.store.must('VM', ref);
    const now = formatDateTime(new Date(info.startedAt));
    this.store.transact((tx) => {
      tx.update('VM', ref, {
        power_state: info.state === 'paused' ? 'Paused' : 'Running',
        resident_on: this.services.hostRef(),
        scheduled_to_be_resident_on: NULL_REF,
        domid: info.pid,
        ...(opts.fresh ? { last_boot_CPU_flags: {}, last_booted_record: '' } : {}),
      });
      this.ensureMetrics(tx, ref, vm, { start_time: now, state: [], VCPUs_number: Number(vm.VCPUs_at_startup), memory_actual: Number(vm.memory_static_max) });
      if ((vm.consoles as string[]).length === 0) {
        for (const protocol of ['rfb', 'vt100'] as const) {
          const c = tx.create('console', { protocol, VM: ref });
          const uuid = String(tx.get('console', c)!.uuid);
          tx.update('console', c, { location: `/console?uuid=${uuid}` });
        }
      }
      for (const vbd of vm.VBDs as string[]) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { currently_attached: true });
      for (const vif of vm.VIFs as string[]) if (tx.get('VIF', vif)) tx.update('VIF', vif, { currently_attached: true });
      this.updateHostFree(tx);
    });
    refreshAllowed(this.store, ref);
  }

  private ensureMetrics(tx: Tx, ref: string, vm: DbRecord, patch: Record<string, unknown>): void {
    const m = String(vm.metrics);
    const fields = { ...patch, last_updated: formatDateTime(new Date()), hvm: !vm.PV_kernel, current_domain_type: 'hvm' as const };
    if (m !== NULL_REF && tx.get('VM_metrics', m)) tx.update('VM_metrics', m, fields);
    else tx.update('VM', ref, { metrics: tx.create('VM_metrics', { ...fields, install_time: formatDateTime(new Date()) }) });
  }

  /** Records a VM as halted (or suspended) and releases what it held. */
  async markStopped(ref: string, state: 'Halted' | 'Suspended' = 'Halted'): Promise<void> {
    const vm = this.store.get('VM', ref);
    if (!vm) return;
    for (const vbd of vm.VBDs as string[]) {
      const rec = this.store.get('VBD', vbd);
      if (rec && !rec.empty && rec.VDI !== NULL_REF && state === 'Halted') await this.disks?.detach(String(rec.VDI)).catch(() => undefined);
    }
    for (const vif of vm.VIFs as string[]) await this.nics?.unplug(vif).catch(() => undefined);
    this.store.transact((tx) => {
      tx.update('VM', ref, { power_state: state, resident_on: NULL_REF, domid: -1 });
      for (const c of vm.consoles as string[]) if (tx.get('console', c)) tx.delete('console', c);
      for (const vbd of vm.VBDs as string[]) if (tx.get('VBD', vbd)) tx.update('VBD', vbd, { currently_attached: false });
      for (const vif of vm.VIFs as string[]) if (tx.get('VIF', vif)) tx.update('VIF', vif, { currently_attached: false });
      const m = String(vm.metrics);
      if (tx.get('VM_metrics', m)) tx.update('VM_metrics', m, { VCPUs_utilisation: {}, memory_actual: 0, last_updated: formatDateTime(new Date()) });
      this.updateHostFree(tx);
    });
    refreshAllowed(this.store, ref);
  }

  // ------------------------------------------------------------ operations

  /** Runs a backend operation on a VM, telling the event handler to expect its effects. */
  async quietly<T>(ref: string, fn: () => Promise<T>): Promise<T> {
    this.busy.add(ref);
    try {
      return await fn();
    } finally {
      this.busy.delete(ref);
    }
  }

  async start(ref: string, paused: boolean): Promise<void> {
    const vm = this.store.must('VM', ref);
    this.assertMemory(vm);
    const cfg = await this.domainConfig(ref);
    const info = await this.quietly(ref, () => this.backend.start(cfg, { paused }));
    this.markRunning(ref, info, { fresh: true });
  }

  async hardShutdown(ref: string): Promise<void> {
    const vm = this.store.must('VM', ref);
    if (vm.power_state === 'Suspended') {
      this.removeSuspendImage(String(vm.uuid));
      await this.markStopped(ref);
      return;
    }
    await this.quietly(ref, () => this.backend.shutdown(String(vm.uuid), 'hard'));
    await this.markStopped(ref);
  }

  async cleanShutdown(ref: string): Promise<void> {
    const vm = this.store.must('VM', ref);
    try {
      await this.quietly(ref, () => this.backend.shutdown(String(vm.uuid), 'clean', CLEAN_TIMEOUT_MS));
    } catch (e) {
      if ((e as Error).name === 'OperationTimeout') throw new XenApiError('VM_SHUTDOWN_TIMEOUT', ref, CLEAN_TIMEOUT_MS / 1000);
      throw e;
    }
    await this.markStopped(ref);
  }

  async reboot(ref: string, mode: 'clean' | 'hard'): Promise<void> {
    const vm = this.store.must('VM', ref);
    await this.quietly(ref, () => this.backend.reboot(String(vm.uuid), mode, CLEAN_TIMEOUT_MS));
    const info = await this.backend.get(String(vm.uuid));
    if (info) this.markRunning(ref, { ...info, startedAt: Date.now() }, { fresh: true });
  }

  async pause(ref: string): Promise<void> {
    await this.quietly(ref, () => this.backend.pause(String(this.store.must('VM', ref).uuid)));
    this.store.transact((tx) => tx.update('VM', ref, { power_state: 'Paused' }));
  }

  async unpause(ref: string): Promise<void> {
    await this.quietly(ref, () => this.backend.unpause(String(this.store.must('VM', ref).uuid)));
    this.store.transact((tx) => tx.update('VM', ref, { power_state: 'Running' }));
  }

  suspendImage(uuid: string): string {
    const dir = join(this.services.dataDir, 'suspend');
    mkdirSync(dir, { recursive: true });
    return join(dir, `${uuid}.state`);
  }

  private removeSuspendImage(uuid: string): void {
    rmSync(this.suspendImage(uuid), { force: true });
  }

  async suspend(ref: string): Promise<void> {
    const uuid = String(this.store.must('VM', ref).uuid);
    await this.quietly(ref, () => this.backend.suspend(uuid, this.suspendImage(uuid)));
    await this.markStopped(ref, 'Suspended');
  }

  async resume(ref: string, paused: boolean): Promise<void> {
    const vm = this.store.must('VM', ref);
    this.assertMemory(vm);
    const cfg = await this.domainConfig(ref);
    const info = await this.quietly(ref, () => this.backend.resume(cfg, this.suspendImage(String(vm.uuid)), { paused }));
    this.removeSuspendImage(String(vm.uuid));
    this.markRunning(ref, info, { fresh: false });
  }

  // ------------------------------------------------------------ guest events

  /** Follows the guest's own shutdown/reboot/crash per the VM's actions_after_*. */
  async onDomainEvent(e: DomainEvent): Promise<void> {
    const ref = this.vmByUuid(e.uuid);
    if (!ref || this.busy.has(ref)) return;
    const vm = this.store.get('VM', ref);
    if (!vm) return;
    const log = this.services.log.child({ vm: e.uuid, event: e.kind, reason: e.reason });
    if (e.kind === 'paused' || e.kind === 'resumed') {
      const state = e.kind === 'paused' ? 'Paused' : 'Running';
      if (vm.power_state !== state && (vm.power_state === 'Running' || vm.power_state === 'Paused')) this.store.transact((tx) => tx.update('VM', ref, { power_state: state }));
      return;
    }
    const action =
      e.kind === 'reboot' ? String(vm.actions_after_reboot)
        : e.kind === 'shutdown' ? String(vm.actions_after_shutdown)
          : String(vm.actions_after_crash);
    log.info({ action }, 'guest event');
    try {
      if (e.kind === 'exited') {
        await this.markStopped(ref); // the device model is gone: nothing to restart from
      } else if (action === 'restart' || action === 'coredump_and_restart' || action === 'rename_restart') {
        await this.quietly(ref, () => this.backend.reboot(e.uuid, 'hard'));
        const info = await this.backend.get(e.uuid);
        if (info) this.markRunning(ref, { ...info, startedAt: Date.now() }, { fresh: true });
      } else if (action === 'preserve') {
        this.store.transact((tx) => tx.update('VM', ref, { power_state: 'Paused' }));
      } else {
        await this.quietly(ref, () => this.backend.shutdown(e.uuid, 'hard')).catch(() => undefined);
        await this.markStopped(ref);
      }
    } catch (err) {
      log.error({ err }, 'acting on a guest event failed');
    }
  }

  // ------------------------------------------------------------ start-up

  /**
   * Both ways: domains that still run are re-adopted (never started twice);
   * VMs recorded as running whose domain is gone become Halted; domains no
   * VM owns are destroyed.
   */
  async reconcile(): Promise<{ adopted: number; halted: number; destroyed: number }> {
    const domains = new Map((await this.backend.list()).map((d) => [d.uuid, d]));
    let adopted = 0;
    let halted = 0;
    let destroyed = 0;
    const host = this.services.hostRef();
    for (const [ref, vm] of this.store.where('VM', (v) => !v.is_control_domain)) {
      const d = domains.get(String(vm.uuid));
      domains.delete(String(vm.uuid));
      if (d && (d.state === 'running' || d.state === 'paused')) {
        adopted++;
        await this.reattachDisks(ref);
        this.markRunning(ref, d, { fresh: false });
        this.store.transact((tx) => tx.update('VM', ref, { current_operations: {} }));
        refreshAllowed(this.store, ref);
      } else if (d) {
        await this.onDomainEventAfterRestart(ref, d);
        adopted++;
      } else if ((vm.power_state === 'Running' || vm.power_state === 'Paused') && (vm.resident_on === host || vm.resident_on === NULL_REF)) {
        await this.markStopped(ref);
        halted++;
      } else if (Object.keys(vm.current_operations as object).length) {
        this.store.transact((tx) => tx.update('VM', ref, { current_operations: {} }));
        refreshAllowed(this.store, ref);
      }
    }
    for (const d of domains.values()) {
      await this.backend.shutdown(d.uuid, 'hard').catch(() => undefined);
      destroyed++;
    }
    return { adopted, halted, destroyed };
  }

  /** Serves again what a re-adopted guest's disks need from us (NBD exports of VHD chains). */
  private async reattachDisks(ref: string): Promise<void> {
    for (const vbdRef of this.store.must('VM', ref).VBDs as string[]) {
      const vbd = this.store.get('VBD', vbdRef);
      if (!vbd || vbd.empty || vbd.VDI === NULL_REF) continue;
      await this.disks?.attach(String(vbd.VDI), vbd.mode === 'RO' || vbd.type === 'CD').catch((err: unknown) => this.services.log.error({ err, vbd: vbd.uuid }, 'could not re-attach a disk of a running VM'));
    }
  }

  /** A domain that stopped (guest shutdown/reboot/crash) while the daemon was away. */
  private async onDomainEventAfterRestart(ref: string, d: DomainInfo): Promise<void> {
    const kind = d.state === 'crashed' ? 'crash' : d.reason === 'reboot' ? 'reboot' : 'shutdown';
    this.markRunning(ref, d, { fresh: false });
    await this.onDomainEvent({ uuid: d.uuid, kind, reason: d.reason });
  }

  /** Samples backend stats into VM_metrics, and guest agents' reports into VM_guest_metrics. */
  async sampleMetrics(): Promise<void> {
    const running = [...this.store.where('VM', (v) => !v.is_control_domain && v.power_state === 'Running' && v.resident_on === this.services.hostRef())];
    for (const [ref, vm] of running) {
      try {
        const s = await this.backend.stats(String(vm.uuid));
        const prev = this.cpuSeen.get(ref);
        this.cpuSeen.set(ref, { at: Date.now(), cpu: s.cpuSeconds });
        const util: Record<string, number> = {};
        if (prev) {
          const share = Math.max(0, Math.min(1, (s.cpuSeconds - prev.cpu) / ((Date.now() - prev.at) / 1000) / Math.max(1, s.vcpus)));
          for (let i = 0; i < s.vcpus; i++) util[String(i)] = Number(share.toFixed(4));
        }
        const m = String(vm.metrics);
        if (this.store.get('VM_metrics', m)) {
          this.store.transact((tx) => tx.update('VM_metrics', m, { VCPUs_utilisation: util, memory_actual: s.memoryActual, VCPUs_number: s.vcpus, last_updated: formatDateTime(new Date()) }));
        }
      } catch {
        // the domain went away between the query and now: events will tell
      }
    }
    await this.sampleGuests(running);
  }

  private readonly cpuSeen = new Map<string, { at: number; cpu: number }>();

  /** Per VM: guest agent bookkeeping (boot identity = domid). */
  private readonly guestSeen = new Map<string, { domid: string; inFlight: boolean; failedSince?: number; nextAt: number }>();

  /**
   * Asks the guest agents of running VMs (in parallel, each bounded by a
   * timeout; a VM whose previous query still runs is skipped) and keeps
   * VM_guest_metrics in step. A guest without an agent is retried at every
   * tick for a while after boot, then every GUEST_AGENT_BACKOFF_MS. Guest
   * metrics of VMs that halted are destroyed, as xapi does.
   */
  private async sampleGuests(running: [string, DbRecord][]): Promise<void> {
    const backend = this.backend;
    if (!backend.guestInfo) return;
    const now = Date.now();
    const live = new Set(running.map(([ref]) => ref));
    for (const ref of [...this.guestSeen.keys()]) {
      if (live.has(ref)) continue;
      const vm = this.store.get('VM', ref);
      if (!vm || vm.power_state === 'Halted') {
        this.guestSeen.delete(ref);
        const gm = vm ? String(vm.guest_metrics) : NULL_REF;
        if (vm && gm !== NULL_REF) {
          this.store.transact((tx) => {
            if (tx.get('VM_guest_metrics', gm)) tx.delete('VM_guest_metrics', gm);
            tx.update('VM', ref, { guest_metrics: NULL_REF });
          });
        }
      }
    }
    const due: [string, DbRecord][] = [];
    for (const [ref, vm] of running) {
      let st = this.guestSeen.get(ref);
      if (!st || st.domid !== String(vm.domid)) {
        st = { domid: String(vm.domid), inFlight: st?.inFlight ?? false, nextAt: 0 };
        this.guestSeen.set(ref, st);
      }
      if (!st.inFlight && st.nextAt <= now) due.push([ref, vm]);
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length) {
        const [ref, vm] = due[next++]!;
        const st = this.guestSeen.get(ref)!;
        st.inFlight = true;
        try {
          const info = await backend.guestInfo!(String(vm.uuid), GUEST_AGENT_TIMEOUT_MS).catch(() => undefined);
          const t = Date.now();
          if (info) {
            st.failedSince = undefined;
            st.nextAt = 0;
          } else {
            st.failedSince ??= t;
            st.nextAt = t - st.failedSince < GUEST_AGENT_GRACE_MS ? 0 : t + GUEST_AGENT_BACKOFF_MS;
          }
          this.recordGuest(ref, info);
        } catch (err) {
          this.services.log.warn({ err, vm: vm.uuid }, 'recording guest metrics failed');
        } finally {
          st.inFlight = false;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(GUEST_AGENT_PARALLEL, due.length) }, worker));
  }

  /** Creates/updates the VM's VM_guest_metrics from an agent's answer (none: live = false if it had answered). */
  private recordGuest(ref: string, info: GuestInfo | undefined): void {
    const vm = this.store.get('VM', ref);
    if (!vm || vm.power_state !== 'Running') return;
    const gmRef = String(vm.guest_metrics);
    const gm = gmRef !== NULL_REF ? this.store.get('VM_guest_metrics', gmRef) : undefined;
    if (!info) {
      if (gm && gm.live === true) this.store.transact((tx) => tx.update('VM_guest_metrics', gmRef, { live: false, last_updated: formatDateTime(new Date()) }));
      return;
    }
    const fields = guestMetricsFields(info, this.vifDevicesByMac(vm));
    if (gm) {
      const changed = Object.entries(fields).some(([k, v]) => JSON.stringify(Object.entries(gm).find(([g]) => g === k)?.[1]) !== JSON.stringify(v));
      if (changed) this.store.transact((tx) => tx.update('VM_guest_metrics', gmRef, { ...fields, last_updated: formatDateTime(new Date()) }));
      return;
    }
    this.store.transact((tx) => {
      const created = tx.create('VM_guest_metrics', { ...fields, last_updated: formatDateTime(new Date()), other_config: {} });
      tx.update('VM', ref, { guest_metrics: created });
    });
  }

  /** VIF device number per MAC (lower case) of a VM's VIFs. */
  private vifDevicesByMac(vm: DbRecord): Map<string, string> {
    const m = new Map<string, string>();
    for (const vifRef of vm.VIFs as string[]) {
      const vif = this.store.get('VIF', vifRef);
      if (vif && str(vif.MAC)) m.set(str(vif.MAC).toLowerCase(), str(vif.device));
    }
    return m;
  }

  listen(): void {
    this.unsubscribe = this.backend.onEvent((e) => void this.onDomainEvent(e));
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    await this.backend.close();
  }
}
