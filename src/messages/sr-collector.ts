/**
 * The storage collector (xapi's SR garbage collector): a hidden base copy
 * with one image left on it is folded into that image; a hidden base with
 * none is deleted. It works from what is on disk, one step at a time under
 * the SR's exclusive lock, and says loudly when records and disk disagree or
 * a chain does not open.
 */
import type { Store } from '../db/store.ts';
import type { SrDriver, VolumeInfo } from '../storage/sr/driver.ts';
import type { Services } from './context.ts';
import type { ChainLocks } from './sr-locks.ts';

/** What the collector needs of the record ↔ driver glue (sr-drivers.ts). */
export interface CollectorHost {
  readonly locks: ChainLocks;
  /** VDI uuids handed to a guest. */
  readonly attached: ReadonlySet<string>;
  bareDriver(sr: string): SrDriver;
  /** The plugged SRs whose file work this host's storage does (a member's local SR through the member). */
  pluggedSrs(): string[];
  inUse(vdi: string): boolean;
  relinkParents(sr: string): void;
  volumeFields(v: VolumeInfo): Record<string, unknown>;
  update(sr: string): Promise<void>;
}

/** A chain on disk: each image and what is built on it. */
interface DiskChains {
  byUuid: Map<string, VolumeInfo>;
  children: Map<string, string[]>;
}

function chainsOf(vols: VolumeInfo[]): DiskChains {
  const children = new Map<string, string[]>();
  for (const v of vols) if (v.parent) children.set(v.parent, [...(children.get(v.parent) ?? []), v.uuid]);
  return { byUuid: new Map(vols.map((v) => [v.uuid, v])), children };
}

/** The collector keeps looking at a base it could not fold only this many steps per pass. */
const MAX_STEPS = 10_000;

export class Collector {
  private current: Promise<number> | undefined;
  private next: Promise<number> | undefined;

  constructor(
    private readonly services: Services,
    private readonly host: CollectorHost,
  ) {}

  private get store(): Store {
    return this.services.store;
  }

  /** Runs a pass, or joins the one queued behind the running pass (kicks arriving during a pass are not lost). */
  collect(): Promise<number> {
    if (this.next) return this.next;
    if (!this.current) return (this.current = this.start());
    this.next = this.current
      .then(() => undefined, () => undefined)
      .then(() => {
        this.next = undefined;
        return (this.current = this.start());
      });
    return this.next;
  }

  private start(): Promise<number> {
    const pass: Promise<number> = this.pass().finally(() => {
      if (this.current === pass) this.current = undefined;
    });
    return pass;
  }

  /** Every plugged SR this host's storage works on that keeps chains, until nothing more can be done. */
  private async pass(): Promise<number> {
    let done = 0;
    const plugged = this.host.pluggedSrs();
    for (const sr of plugged) {
      try {
        done += await this.collectSr(sr);
      } catch (err) {
        // one SR (a member's that stopped answering) does not hold up the others
        this.services.log.warn({ err, sr }, 'storage collector: an SR could not be collected');
      }
    }
    return done;
  }

  /** The steps on one SR, until nothing is left to do there. */
  private async collectSr(sr: string): Promise<number> {
    let done = 0;
    if (!this.store.get('SR', sr)) return 0;
    const driver = this.host.bareDriver(sr);
    if (!driver.capabilities.includes('VDI_SNAPSHOT')) return 0;
    const skip = new Set<string>();
    for (let step = 0; step < MAX_STEPS; step++) {
      const acted = await this.host.locks.exclusive(sr, () => this.step(sr, driver, skip, step === 0));
      if (!acted) break;
      done++;
    }
    await this.host.update(sr).catch(() => undefined);
    return done;
  }

  /** One thing done on an SR (a base deleted or folded), or false when nothing is left to do. */
  private async step(sr: string, driver: SrDriver, skip: Set<string>, report: boolean): Promise<boolean> {
    if (!this.store.get('SR', sr)) return false;
    // decisions follow the disk; records only say which images are hidden bases
    const disk = chainsOf(await driver.scan());
    if (report) this.reportDisagreements(sr, disk);
    for (const [baseRef, base] of this.store.where('VDI', (v) => v.SR === sr && v.managed === false && v.missing !== true)) {
      const uuid = base.uuid;
      if (skip.has(uuid) || base.VBDs.length > 0) continue;
      const kids = disk.children.get(uuid) ?? [];
      if (kids.length === 0) {
        await driver.deleteVolume(uuid);
        this.store.transact((tx) => tx.delete('VDI', baseRef));
        this.services.log.info({ sr, base: uuid }, 'storage collector: deleted a base copy nothing is built on');
        return true;
      }
      if (kids.length > 1) continue;
      const [child] = kids;
      if (!this.mayFold(child, disk)) continue;
      const started = Date.now();
      try {
        await driver.coalesce(child, uuid);
      } catch (err) {
        skip.add(uuid);
        this.services.log.error({ err, sr, base: uuid, child }, `storage collector: could not fold base copy ${uuid} into ${child}; chain left as it was`);
        continue;
      }
      await this.checkAfterFold(sr, driver, child, disk);
      this.recordFold(sr, baseRef, await driver.info(child));
      this.services.log.info({ sr, base: uuid, child, ms: Date.now() - started }, 'storage collector: folded a base copy into its only child');
      return true;
    }
    return false;
  }

  /** Not while any image built on the base is with a guest, nor when the child must keep its base (reset on boot). */
  private mayFold(child: string, disk: DiskChains): boolean {
    const todo = [child];
    for (let u = todo.pop(); u !== undefined; u = todo.pop()) {
      if (this.host.attached.has(u)) return false;
      const ref = this.store.byUuid('VDI', u);
      if (ref && this.host.inUse(ref)) return false;
      todo.push(...(disk.children.get(u) ?? []));
    }
    const childRef = this.store.byUuid('VDI', child);
    return !(childRef && this.store.get('VDI', childRef)?.on_boot === 'reset');
  }

  private recordFold(sr: string, baseRef: string, merged: VolumeInfo): void {
    const childRef = this.store.byUuid('VDI', merged.uuid);
    this.store.transact((tx) => {
      if (childRef) tx.update('VDI', childRef, this.host.volumeFields(merged));
      tx.delete('VDI', baseRef);
    });
    this.host.relinkParents(sr);
  }

  /** The merged image and everything built on it must open as chains; if not, say so as loudly as we can. */
  private async checkAfterFold(sr: string, driver: SrDriver, child: string, disk: DiskChains): Promise<void> {
    for (const u of [child, ...(disk.children.get(child) ?? [])]) {
      await driver.checkChain(u).catch((err: unknown) => {
        this.services.log.error({ err, sr, vdi: u }, `storage: chain inconsistent after folding into ${child}: ${u} does not open`);
      });
    }
  }

  /** Records that say another chain than the disk does are reported, once a pass (SR.scan makes records follow the disk). */
  private reportDisagreements(sr: string, disk: DiskChains): void {
    for (const [, vdi] of this.store.where('VDI', (v) => v.SR === sr && v.missing !== true)) {
      const onDisk = disk.byUuid.get(vdi.uuid);
      const recorded = vdi.sm_config['vhd-parent'];
      if (!onDisk) {
        this.services.log.error({ sr, vdi: vdi.uuid }, `storage: chain inconsistent: VDI ${vdi.uuid} has a record but no image`);
      } else if ((onDisk.parent ?? undefined) !== (recorded || undefined)) {
        this.services.log.error({ sr, vdi: vdi.uuid, recorded, onDisk: onDisk.parent }, `storage: chain inconsistent: VDI ${vdi.uuid} is recorded on ${recorded ?? 'nothing'} but built on ${onDisk.parent ?? 'nothing'} on disk`);
      }
    }
  }
}
