/**
 * The metrics daemon inside Xenon (xapi's xcp-rrdd): every step (5 s) it
 * reads the host and each running VM once, feeds one RRD per host and per VM
 * at the same instant, and keeps VM_metrics in step. VM RRDs are archived to
 * disk when their VM stops and reloaded when it runs again here; all are
 * saved on stop and the host's every hour. A pool master keeps the RRDs of
 * every running VM of the pool, reading a member's VMs from that member.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { data_source_record } from '../datamodel/generated/records.ts';
import type { MetricsOwner, Services } from '../messages/context.ts';
import type { DomainCounters, HypervisorBackend } from '../xenops/backend.ts';
import { Alarms } from './alarms.ts';
import { sampleHost } from './host-collector.ts';
import { deserialize, RrdFiles, serialize } from './persist.ts';
import { Rrd, standardRras } from './rrd.ts';
import { hostReadings, vmReadings, type DsDef, type Reading } from './sources.ts';

export const STEP_S = 5;

/** Whose RRD: the host's or a VM's, by uuid. */
export type Owner = MetricsOwner;

interface Tracked {
  rrd: Rrd;
  /** Every source seen at the last step (recorded or not), by name. */
  defs: Map<string, DsDef>;
  /** Non-standard sources a client asked to record. */
  recorded: Set<string>;
}

export interface MetricsOptions {
  stepS?: number;
  /** How often the host RRD (and every VM's) is saved besides stop and archive. */
  saveEveryMs?: number;
}

export class Metrics {
  readonly step: number;
  private readonly files: RrdFiles;
  private host?: Tracked;
  private readonly vms = new Map<string, Tracked>();
  private readonly log: Logger;
  private readonly alarms: Alarms;
  private lastSave = Date.now();
  private running?: Promise<void>;
  /** After each step: alarms, Prometheus, tests. */
  private readonly listeners = new Set<(t: number) => void>();

  constructor(
    private readonly services: Services,
    private readonly backend: () => HypervisorBackend | undefined,
    private readonly opts: MetricsOptions = {},
  ) {
    this.step = opts.stepS ?? STEP_S;
    this.files = new RrdFiles(join(services.dataDir, 'rrd'));
    this.log = services.log.child({ subsystem: 'metrics' });
    this.alarms = new Alarms(services.store, this.log, this.step);
  }

  hostUuid(): string {
    return String(this.services.store.must('host', this.services.hostRef()).uuid);
  }

  async start(): Promise<void> {
    const rrd = await this.files.load(this.hostUuid());
    if (rrd && rrd.step === this.step) this.host = { rrd, defs: new Map(), recorded: new Set(rrd.names()) };
  }

  onStep(l: (t: number) => void): () => void {
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }

  /** One collection; overlapping calls share the one in flight. */
  collect(now = Date.now() / 1000): Promise<void> {
    this.running ??= this.collectOnce(now).finally(() => (this.running = undefined));
    return this.running;
  }

  /**
   * The VMs whose RRDs this host keeps: on a master every running VM of the
   * pool, wherever it runs (a member's are read over the pool channel, and a
   * VM's RRD stays here when it migrates); on a member its own.
   */
  private runningVms(): { ref: string; uuid: string; host: string }[] {
    const { store } = this.services;
    const here = this.services.hostRef();
    const everywhere = !store.isReplica && this.services.pool !== undefined;
    return store
      .where('VM', (v) => !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused') && (v.resident_on === here || (everywhere && v.resident_on !== NULL_REF)))
      .map(([ref, vm]) => ({ ref, uuid: String(vm.uuid), host: String(vm.resident_on) }));
  }

  /** One step's counters of each VM: from this host's backend, or in one call per member from the member that runs it. */
  private async countersOf(vms: readonly { uuid: string; host: string }[]): Promise<(DomainCounters | undefined)[]> {
    const here = this.services.hostRef();
    const backend = this.backend();
    const out: (DomainCounters | undefined)[] = vms.map(() => undefined);
    const elsewhere = new Map<string, number[]>();
    const local: Promise<void>[] = [];
    vms.forEach(({ uuid, host }, i) => {
      if (host === here) local.push((async () => void (out[i] = await backend?.readCounters(uuid).catch(() => undefined)))());
      else elsewhere.set(host, [...(elsewhere.get(host) ?? []), i]);
    });
    const remote = [...elsewhere].map(async ([host, idx]) => {
      const got = (await this.services.pool?.countersOn(host, idx.map((i) => vms[i]!.uuid))) ?? [];
      idx.forEach((i, k) => (out[i] = got[k] ?? undefined));
    });
    await Promise.all([...local, ...remote]);
    return out;
  }

  private pifDevices(): string[] {
    const host = this.services.hostRef();
    return this.services.store.where('PIF', (p) => p.host === host && p.physical === true).map(([, p]) => String(p.device));
  }

  private async collectOnce(now: number): Promise<void> {
    const t = Math.floor(now * 1000) / 1000;
    const hostSample = await sampleHost(this.pifDevices()).catch((err: unknown) => {
      this.log.warn({ err }, 'host sample failed');
      return undefined;
    });
    this.host ??= { rrd: Rrd.create([], standardRras(), t - this.step, this.step), defs: new Map(), recorded: new Set() };
    feed(this.host, hostSample ? hostReadings(hostSample) : [], t);

    const vms = this.runningVms();
    const counters = await this.countersOf(vms);
    const live = new Set<string>();
    for (let i = 0; i < vms.length; i++) {
      const { uuid } = vms[i]!;
      live.add(uuid);
      const tracked = this.vms.get(uuid) ?? (await this.revive(uuid, t));
      const c = counters[i];
      feed(tracked, c ? vmReadings(c) : [], t);
      // thousands of VMs: give the event loop back now and then
      if (i % 200 === 199) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    for (const uuid of [...this.vms.keys()]) if (!live.has(uuid)) await this.archive(uuid);
    this.updateVmMetrics(vms, counters.map((c) => c?.memoryBytes));
    const owners: Owner[] = [{ kind: 'host', uuid: this.hostUuid() }, ...vms.map(({ uuid }) => ({ kind: 'vm' as const, uuid }))];
    try {
      this.alarms.check(owners, (o) => this.latestOf(o), t);
    } catch (err) {
      this.log.warn({ err }, 'alarm check failed');
    }
    if (Date.now() - this.lastSave > (this.opts.saveEveryMs ?? 3600_000)) await this.saveAll();
    for (const l of [...this.listeners]) {
      try {
        l(t);
      } catch (err) {
        this.log.warn({ err }, 'metrics listener failed');
      }
    }
  }

  /** A VM's RRD: its archive when it has one (the gap since shows as unknown), else a fresh one. */
  private async revive(uuid: string, t: number): Promise<Tracked> {
    const saved = await this.files.load(uuid).catch(() => undefined);
    const rrd = saved && saved.step === this.step && saved.lastUpdated < t ? saved : Rrd.create([], standardRras(), t - this.step, this.step);
    const tracked: Tracked = { rrd, defs: new Map(), recorded: new Set() };
    this.vms.set(uuid, tracked);
    return tracked;
  }

  /** The VM stopped here: its RRD goes to disk until it runs again. */
  private async archive(uuid: string): Promise<void> {
    const tracked = this.vms.get(uuid);
    this.vms.delete(uuid);
    if (tracked) await this.files.save(uuid, tracked.rrd).catch((err: unknown) => this.log.warn({ err, vm: uuid }, 'could not archive a VM RRD'));
  }

  async saveAll(): Promise<void> {
    this.lastSave = Date.now();
    if (this.host) await this.files.save(this.hostUuid(), this.host.rrd).catch((err: unknown) => this.log.warn({ err }, 'could not save the host RRD'));
    for (const [uuid, tracked] of this.vms) await this.files.save(uuid, tracked.rrd).catch((err: unknown) => this.log.warn({ err, vm: uuid }, 'could not save a VM RRD'));
    // the archives of VMs that no longer exist go too
    const host = this.hostUuid();
    for (const uuid of await this.files.uuids()) if (uuid !== host && !this.services.store.byUuid('VM', uuid)) await this.files.forget(uuid);
  }

  /**
   * VM_metrics as the step saw them: written only where a figure changed, in
   * one transaction. A pool member writes none (its database is the master's
   * replica): the master, which reads every VM of the pool, writes them.
   */
  private updateVmMetrics(vms: readonly { ref: string; uuid: string }[], memory: readonly (number | undefined)[]): void {
    const { store } = this.services;
    if (store.isReplica) return;
    const changes: [string, Record<string, unknown>][] = [];
    vms.forEach(({ ref, uuid }, i) => {
      const m = String(store.get('VM', ref)?.metrics ?? '');
      const rec = store.get('VM_metrics', m);
      const rrd = this.vms.get(uuid)?.rrd;
      if (!rec || !rrd) return;
      const util: Record<string, number> = {};
      for (let cpu = 0; rrd.has(`cpu${cpu}`); cpu++) {
        const v = rrd.latest(`cpu${cpu}`) ?? NaN;
        util[String(cpu)] = Number.isNaN(v) ? 0 : Math.round(v * 100) / 100;
      }
      const patch: Record<string, unknown> = {};
      const mem = memory[i];
      if (mem !== undefined && Number(rec.memory_actual) !== mem) patch.memory_actual = mem;
      const vcpus = Object.keys(util).length;
      if (vcpus && Number(rec.VCPUs_number) !== vcpus) patch.VCPUs_number = vcpus;
      const before = rec.VCPUs_utilisation as Record<string, number>;
      if (vcpus && Object.entries(util).some(([k, v]) => before[k] !== v)) patch.VCPUs_utilisation = util;
      if (Object.keys(patch).length) changes.push([m, { ...patch, last_updated: formatDateTime(new Date()) }]);
    });
    if (changes.length) store.transact((tx) => { for (const [m, patch] of changes) tx.updateAny('VM_metrics', m, patch); });
  }

  // ------------------------------------------------------------ queries

  private tracked(owner: Owner): Tracked {
    const t = owner.kind === 'host' ? (owner.uuid === this.hostUuid() ? this.host : undefined) : this.vms.get(owner.uuid);
    if (!t) throw new XenApiError('INTERNAL_ERROR', `Rrdd_error(Datasource_missing(${owner.kind === 'host' ? 'No host datasource!' : `VM: ${owner.uuid}`}))`);
    return t;
  }

  /** The RRDs to export, host first, each with its legend prefix. */
  exportable(opts: { host: boolean; vmUuids?: readonly string[] }): [string, Rrd][] {
    const out: [string, Rrd][] = [];
    if (opts.host && this.host) out.push([`host:${this.hostUuid()}:`, this.host.rrd]);
    for (const [uuid, t] of this.vms) if (!opts.vmUuids || opts.vmUuids.includes(uuid)) out.push([`vm:${uuid}:`, t.rrd]);
    return out;
  }

  rrdOf(owner: Owner): Rrd | undefined {
    try {
      return this.tracked(owner).rrd;
    } catch {
      return undefined;
    }
  }

  /** A VM's RRD as text, to hand to the host it moved to (its archive's when it runs nowhere here). */
  async vmRrdText(uuid: string): Promise<string | undefined> {
    const rrd = this.vms.get(uuid)?.rrd ?? (await this.archived(uuid));
    return rrd ? serialize(rrd) : undefined;
  }

  /** A VM's RRD handed over by the master when the VM came here (as xapi's rrdd receives a migrating VM's): fed from now on. */
  adoptVmRrd(uuid: string, text: string): void {
    const rrd = deserialize(text);
    if (!rrd || rrd.step !== this.step) throw new XenApiError('INVALID_VALUE', 'rrd', 'not an RRD of this step');
    this.vms.set(uuid, { rrd, defs: new Map(), recorded: new Set(rrd.names()) });
  }

  /** A stopped VM's archived RRD. */
  archived(uuid: string): Promise<Rrd | undefined> {
    return this.files.load(uuid).catch(() => undefined);
  }

  dataSources(owner: Owner): data_source_record[] {
    const t = this.tracked(owner);
    return [...t.defs.values()].map((d) => {
      const enabled = t.rrd.has(d.name);
      const v = enabled ? t.rrd.latest(d.name) ?? NaN : NaN;
      return {
        name_label: d.name, name_description: d.description, enabled, standard: d.standard, units: d.units,
        // the wire carries no infinities: an unbounded maximum travels as the largest double
        min: d.min, max: Number.isFinite(d.max) ? d.max : Number.MAX_VALUE, value: Number.isNaN(v) ? 0 : v,
      };
    });
  }

  /** The newest AVERAGE of a recorded source. */
  query(owner: Owner, name: string): number {
    const v = this.tracked(owner).rrd.latest(name);
    if (v === undefined) throw new XenApiError('INTERNAL_ERROR', `Rrdd_error(Datasource_missing(${name}))`);
    return v;
  }

  /** Starts recording a source the collectors offer (history from now on). */
  record(owner: Owner, name: string): void {
    const t = this.tracked(owner);
    const d = t.defs.get(name);
    if (!d) throw new XenApiError('INTERNAL_ERROR', `Rrdd_error(Datasource_missing(${name}))`);
    t.recorded.add(name);
    t.rrd.addDs(d);
  }

  /** Drops a source's history; a standard one starts again afresh at the next step. */
  forget(owner: Owner, name: string): void {
    const t = this.tracked(owner);
    t.recorded.delete(name);
    t.rrd.removeDs(name);
  }

  /** Each recorded source's newest 5-second value. */
  private latestOf(owner: Owner): Map<string, number> {
    const rrd = this.rrdOf(owner);
    const out = new Map<string, number>();
    for (const name of rrd?.names() ?? []) out.set(name, rrd!.latest(name) ?? NaN);
    return out;
  }

  /** The latest readings' definitions and RRD values, for Prometheus: every owner, every recorded source. */
  *latestValues(): Generator<{ owner: Owner; def: DsDef; value: number }> {
    const each = function* (owner: Owner, t: Tracked): Generator<{ owner: Owner; def: DsDef; value: number }> {
      for (const d of t.defs.values()) {
        const v = t.rrd.latest(d.name);
        if (v !== undefined && !Number.isNaN(v)) yield { owner, def: d, value: v };
      }
    };
    if (this.host) yield* each({ kind: 'host', uuid: this.hostUuid() }, this.host);
    for (const [uuid, t] of this.vms) yield* each({ kind: 'vm', uuid }, t);
  }

  async stop(): Promise<void> {
    await this.running;
    await this.saveAll();
  }
}

/** One step's readings into an RRD: standard sources (and asked-for ones) that are new join it first. */
function feed(t: Tracked, readings: readonly Reading[], at: number): void {
  const values = new Map<string, number>();
  for (const r of readings) {
    t.defs.set(r.def.name, r.def);
    if (!t.rrd.has(r.def.name) && (r.def.standard || t.recorded.has(r.def.name))) t.rrd.addDs(r.def);
    values.set(r.def.name, r.value);
  }
  t.rrd.update(at, values);
}
