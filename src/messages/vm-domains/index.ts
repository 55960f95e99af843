/**
 * Where VM records meet the hypervisor backend: power operations, guest-
 * initiated events (actions_after_*), metrics, and reconciling both ways
 * when the daemon starts. The pieces: config.ts (record → domain
 * configuration), records.ts (what a domain's life writes), memory.ts
 * (footprints and overheads), guest-metrics.ts (guest agents).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiError } from '../../datamodel/api-error.ts';
import { NULL_REF } from '../../datamodel/types.ts';
import type { DbRecord } from '../../db/store.ts';
import type { DiskConfig, DomainConfig, DomainEvent, DomainInfo, HypervisorBackend } from '../../xenops/backend.ts';
import type { Services } from '../context.ts';
import { attachNetworksFor } from '../tunnel.ts';
import { refreshAllowed } from '../vm-operations.ts';
import { diskFor, domainConfig, type Attachers } from './config.ts';
import { GuestMetrics } from './guest-metrics.ts';
import { assertMemory, freeMemory } from './memory.ts';
import type { DiskProvider, NicProvider } from './providers.ts';
import { markRunning, markStoppedRecords } from './records.ts';

export { guestMetricsFields } from './guest-metrics.ts';
export type { DiskProvider, NicProvider } from './providers.ts';
export { randomMac } from './providers.ts';

/** How long a clean shutdown or reboot may take: xapi's domain_shutdown_total_timeout. */
export const CLEAN_SHUTDOWN_TIMEOUT_S = 1200;

export class Xenops {
  private unsubscribe?: () => void;
  /** Operations Xenon itself started: guest events for these VMs are expected, not acted on. */
  private readonly busy = new Set<string>();
  private readonly guests: GuestMetrics;

  constructor(
    readonly backend: HypervisorBackend,
    private readonly services: Services,
    /** Another host's disks and NICs (a pool member's, reached through the pool): this host's storage and networking otherwise. */
    private readonly providers?: { readonly disks?: DiskProvider; readonly nics?: NicProvider },
  ) {
    this.guests = new GuestMetrics(backend, services);
  }

  private get store() {
    return this.services.store;
  }

  /** Storage and networking plug in through services.storage and services.nics when they run. */
  private get attachers(): Attachers {
    if (this.providers) return { store: this.store, ...this.providers };
    return { store: this.store, disks: this.services.storage, nics: this.services.nics };
  }

  vmByUuid(uuid: string): string | undefined {
    return this.store.byUuid('VM', uuid);
  }

  async domainConfig(ref: string, opts: { incoming?: boolean } = {}): Promise<DomainConfig> {
    await attachNetworksFor(this.services, ref, this.services.hostRef());
    return domainConfig(this.attachers, ref, opts);
  }

  async activateDisks(ref: string): Promise<void> {
    const vm = this.store.get('VM', ref);
    const { disks } = this.attachers;
    if (!vm || !disks) return;
    for (const vbd of vm.VBDs as string[]) {
      const rec = this.store.get('VBD', vbd);
      if (rec && !rec.empty && rec.VDI !== NULL_REF) await disks.activate(String(rec.VDI));
    }
  }

  diskFor(vbdRef: string, index = 0): Promise<DiskConfig | undefined> {
    return diskFor(this.attachers, vbdRef, index);
  }

  freeMemory(): number {
    return freeMemory(this.store, this.services.hostRef());
  }

  assertMemory(vm: DbRecord): void {
    assertMemory(this.store, this.services.hostRef(), vm);
  }

  markRunning(ref: string, info: DomainInfo, opts: { fresh: boolean }): void {
    markRunning(this.services, ref, info, opts);
  }

  /** Records a VM as halted (or suspended) and releases what it held. */
  async markStopped(ref: string, state: 'Halted' | 'Suspended' = 'Halted'): Promise<void> {
    if (!this.store.get('VM', ref)) return;
    await this.releaseDevices(ref, { disks: state === 'Halted' });
    markStoppedRecords(this.services, ref, state);
  }

  /** Lets go of what this host attached for a VM's domain (its disks, its NICs' taps); writes no records (the VM may run on elsewhere). */
  async releaseDevices(ref: string, what: { disks: boolean } = { disks: true }): Promise<void> {
    const vm = this.store.get('VM', ref);
    if (!vm) return;
    const { disks, nics } = this.attachers;
    for (const vbd of vm.VBDs as string[]) {
      const rec = this.store.get('VBD', vbd);
      if (rec && !rec.empty && rec.VDI !== NULL_REF && what.disks) await disks?.detach(String(rec.VDI)).catch(() => undefined);
    }
    for (const vif of vm.VIFs as string[]) await nics?.unplug(vif).catch(() => undefined);
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
    this.assertMemory(this.store.must('VM', ref));
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

  /** The guest is asked to power off (ACPI) and given timeoutS seconds: VM_SHUTDOWN_TIMEOUT after that, the guest left running. */
  async cleanShutdown(ref: string, timeoutS = CLEAN_SHUTDOWN_TIMEOUT_S): Promise<void> {
    const vm = this.store.must('VM', ref);
    await this.timed(ref, timeoutS, () => this.backend.shutdown(String(vm.uuid), 'clean', timeoutS * 1000));
    await this.markStopped(ref);
  }

  async reboot(ref: string, mode: 'clean' | 'hard'): Promise<void> {
    const vm = this.store.must('VM', ref);
    await this.timed(ref, CLEAN_SHUTDOWN_TIMEOUT_S, () => this.backend.reboot(String(vm.uuid), mode, CLEAN_SHUTDOWN_TIMEOUT_S * 1000));
    const info = await this.backend.get(String(vm.uuid));
    if (info) this.markRunning(ref, { ...info, startedAt: Date.now() }, { fresh: true });
  }

  private async timed(ref: string, timeoutS: number, fn: () => Promise<void>): Promise<void> {
    try {
      await this.quietly(ref, fn);
    } catch (e) {
      if (e instanceof Error && e.name === 'OperationTimeout') throw new XenApiError('VM_SHUTDOWN_TIMEOUT', ref, timeoutS);
      throw e;
    }
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
    // a domain that is not where the VM is recorded (left behind by a migration, or still arriving) is not the VM's
    if (vm.resident_on !== this.services.hostRef()) return;
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
   * VM owns are destroyed. Every VM's allowed_operations is recomputed.
   */
  async reconcile(): Promise<{ adopted: number; halted: number; destroyed: number }> {
    return this.reconcileVms(false);
  }

  /**
   * The same for a host that joins in while others run on (a pool member
   * coming back): only its own VMs and domains are looked at.
   */
  reconcileHost(): Promise<{ adopted: number; halted: number; destroyed: number }> {
    return this.reconcileVms(true);
  }

  private async reconcileVms(ownOnly: boolean): Promise<{ adopted: number; halted: number; destroyed: number }> {
    const domains = new Map((await this.backend.list()).map((d) => [d.uuid, d]));
    let adopted = 0;
    let halted = 0;
    let destroyed = 0;
    const host = this.services.hostRef();
    const mine = (v: { resident_on: string; uuid: string }): boolean => !ownOnly || v.resident_on === host || domains.has(v.uuid);
    for (const [ref, vm] of this.store.where('VM', (v) => !v.is_control_domain && mine(v))) {
      const d = domains.get(String(vm.uuid));
      domains.delete(String(vm.uuid));
      if (d && (d.state === 'running' || d.state === 'paused')) {
        adopted++;
        await this.reattachDisks(ref);
        this.markRunning(ref, d, { fresh: false });
        this.store.transact((tx) => tx.update('VM', ref, { current_operations: {} }));
      } else if (d) {
        await this.onDomainEventAfterRestart(ref, d);
        adopted++;
      } else if ((vm.power_state === 'Running' || vm.power_state === 'Paused') && (vm.resident_on === host || vm.resident_on === NULL_REF)) {
        await this.markStopped(ref);
        halted++;
      } else if (Object.keys(vm.current_operations as object).length) {
        this.store.transact((tx) => tx.update('VM', ref, { current_operations: {} }));
      }
      refreshAllowed(this.services, ref);
    }
    for (const d of domains.values()) {
      await this.backend.shutdown(d.uuid, 'hard').catch(() => undefined);
      destroyed++;
    }
    return { adopted, halted, destroyed };
  }

  /** Serves again what a re-adopted guest's disks need from us (NBD exports of VHD chains). */
  private async reattachDisks(ref: string): Promise<void> {
    const { disks } = this.attachers;
    for (const vbdRef of this.store.must('VM', ref).VBDs as string[]) {
      const vbd = this.store.get('VBD', vbdRef);
      if (!vbd || vbd.empty || vbd.VDI === NULL_REF) continue;
      await disks?.attach(String(vbd.VDI), vbd.mode === 'RO' || vbd.type === 'CD').catch((err: unknown) => this.services.log.error({ err, vbd: vbd.uuid }, 'could not re-attach a disk of a running VM'));
    }
  }

  /** A domain that stopped (guest shutdown/reboot/crash) while the daemon was away. */
  private async onDomainEventAfterRestart(ref: string, d: DomainInfo): Promise<void> {
    const kind = d.state === 'crashed' ? 'crash' : d.reason === 'reboot' ? 'reboot' : 'shutdown';
    this.markRunning(ref, d, { fresh: false });
    await this.onDomainEvent({ uuid: d.uuid, kind, reason: d.reason });
  }

  // ------------------------------------------------------------ metrics

  /** Samples guest agents' reports into VM_guest_metrics (VM_metrics are the metrics service's: metrics/service.ts). */
  async sampleMetrics(): Promise<void> {
    const running = [...this.store.where('VM', (v) => !v.is_control_domain && v.power_state === 'Running' && v.resident_on === this.services.hostRef())];
    await this.guests.sample(running);
  }

  listen(): void {
    this.unsubscribe = this.backend.onEvent((e) => void this.onDomainEvent(e));
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    await this.backend.close();
  }
}
