/**
 * A byte model of every live VDI of one SR, driven through the XenAPI and
 * the data paths clients use: random snapshot, clone, VM snapshot/revert,
 * destroy, resize, and writes (through a guest's NBD export or qcow2 file
 * while attached, and by PUT /import_raw_vdi), checked byte for byte by
 * GET /export_raw_vdi and chain by chain with libvhdi and qemu-img.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Ref, XenApiClient } from '../../src/client/client.ts';
import { checkChainFile } from './chain-helpers.ts';
import { xorshift } from './helpers.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

export type ChainFormat = 'vhd' | 'qcow2';

export interface ModelTarget {
  url: string;
  client: XenApiClient;
  dataDir: string;
  sr: Ref<'SR'>;
  srDir: string;
  format: ChainFormat;
  /** Where the test keeps its scratch files. */
  scratch: string;
}

type Rng = ReturnType<typeof xorshift>;

export class ChainModel {
  /** Live VDIs and the bytes a client must read from each. */
  readonly disks = new Map<Ref<'VDI'>, Buffer>();
  /** VMs wrapped around a VDI for VM.snapshot / VM.revert, and their snapshots. */
  private readonly vmOf = new Map<Ref<'VDI'>, Ref<'VM'>>();
  private readonly snapshots: { snap: Ref<'VM'>; vm: Ref<'VM'>; disk: Ref<'VDI'> }[] = [];
  readonly log: string[] = [];
  private writer: Ref<'VM'> | undefined;

  constructor(
    private t: ModelTarget,
    private readonly rng: Rng,
  ) {}

  /** The same SR, through another daemon (after a restart). */
  retarget(url: string, client: XenApiClient): void {
    this.t = { ...this.t, url, client };
    this.writer = undefined;
  }

  private get api(): XenApiClient['api'] {
    return this.t.client.api;
  }

  private note(s: string): void {
    this.log.push(s);
    if (this.log.length > 40) this.log.shift();
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[this.rng.int(xs.length)];
  }

  /** Any VDI not wrapped in a VM (revert replaces wrapped ones itself). */
  private freeDisks(): Ref<'VDI'>[] {
    return [...this.disks.keys()];
  }

  async create(size = (1 + this.rng.int(3)) * 2 * MiB + this.rng.int(4) * 512 * 1024): Promise<Ref<'VDI'>> {
    const vdi = await this.api.VDI.create({
      SR: this.t.sr, virtual_size: size, name_label: 'model', type: 'user', sharable: false, read_only: false, other_config: {},
      sm_config: this.t.format === 'qcow2' ? { type: 'qcow2' } : {},
    } as never);
    const data = Buffer.alloc(Number(await this.api.VDI.get_virtual_size(vdi)));
    this.disks.set(vdi, data);
    this.note(`create ${vdi} ${data.length}`);
    await this.writeImport(vdi);
    return vdi;
  }

  /** One random operation; returns its name. */
  async step(): Promise<string> {
    if (this.disks.size === 0) {
      await this.create();
      return 'create';
    }
    if (this.disks.size > 6) {
      // keep verification affordable: past a handful of disks, shed one
      await this.destroy();
      return 'destroy';
    }
    const ops: [number, string, () => Promise<void>][] = [
      [2, 'create', async () => void (await this.create())],
      [4, 'snapshot', async () => void (await this.branch('snapshot'))],
      [3, 'clone', async () => void (await this.branch('clone'))],
      [5, 'destroy', () => this.destroy()],
      [2, 'resize', () => this.resize()],
      [6, 'write-guest', () => this.writeGuest(this.pick(this.freeDisks()))],
      [2, 'write-import', () => this.writeImport(this.pick(this.freeDisks()))],
      [2, 'vm-snapshot', () => this.vmSnapshot()],
      [2, 'vm-revert', () => this.vmRevert()],
      [2, 'vm-snapshot-destroy', () => this.vmSnapshotDestroy()],
    ];
    let r = this.rng.int(ops.reduce((a, [w]) => a + w, 0));
    for (const [w, name, fn] of ops) {
      if ((r -= w) < 0) {
        await fn();
        return name;
      }
    }
    return 'none';
  }

  async branch(kind: 'snapshot' | 'clone', from = this.pick(this.freeDisks())): Promise<Ref<'VDI'>> {
    const made = kind === 'snapshot' ? await this.api.VDI.snapshot(from, {}) : await this.api.VDI.clone(from, {});
    this.disks.set(made, Buffer.from(this.disks.get(from)!));
    this.note(`${kind} ${from} -> ${made}`);
    return made;
  }

  async destroy(vdi = this.pick(this.freeDisks())): Promise<void> {
    const vm = this.vmOf.get(vdi);
    if (vm) {
      // the VM goes with its disk, and its snapshots stay (as xapi keeps them)
      for (const vbd of await this.api.VM.get_VBDs(vm)) await this.api.VBD.destroy(vbd);
      await this.api.VM.destroy(vm);
      this.vmOf.delete(vdi);
    }
    await this.api.VDI.destroy(vdi);
    this.disks.delete(vdi);
    this.note(`destroy ${vdi}`);
  }

  private async resize(): Promise<void> {
    const vdi = this.pick(this.freeDisks());
    const old = this.disks.get(vdi)!;
    await this.api.VDI.resize(vdi, old.length + (1 + this.rng.int(8)) * 256 * 1024);
    const now = Number(await this.api.VDI.get_virtual_size(vdi));
    const grown = Buffer.alloc(now);
    old.copy(grown);
    this.disks.set(vdi, grown);
    this.note(`resize ${vdi} ${old.length} -> ${now}`);
  }

  /** Random bytes at a random (unaligned) place, written as a guest writes: through the disk attached to a VM. */
  async writeGuest(vdi: Ref<'VDI'>, len = 1 + this.rng.int(Math.min(this.disks.get(vdi)!.length, 3 * MiB))): Promise<void> {
    const model = this.disks.get(vdi)!;
    const off = this.rng.int(model.length - len + 1);
    const data = this.rng.bytes(len);
    const src = join(this.t.scratch, 'write.bin');
    writeFileSync(src, data);
    const vm = (this.writer ??= await this.api.VM.create({
      name_label: 'writer', memory_static_max: 64 * MiB, memory_dynamic_max: 64 * MiB, memory_dynamic_min: 64 * MiB, memory_static_min: 64 * MiB, VCPUs_max: 1, VCPUs_at_startup: 1,
    } as never));
    const vbd = await this.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
    await this.api.VM.start(vm, false, false);
    try {
      const uuid = await this.api.VDI.get_uuid(vdi);
      const target = this.t.format === 'qcow2'
        ? ['-f', 'qcow2', join(this.t.srDir, `${uuid}.qcow2`)]
        : ['-f', 'raw', `nbd+unix:///?socket=${join(this.t.dataDir, 'run', 'nbd', `${uuid.slice(0, 8)}-${uuid.slice(-12)}.sock`)}`];
      await run('qemu-io', ['-c', `write -q -s ${src} ${off} ${len}`, ...target]);
    } finally {
      await this.api.VM.hard_shutdown(vm);
      await this.api.VBD.destroy(vbd);
    }
    data.copy(model, off);
    this.note(`write-guest ${vdi} ${off}+${len}`);
  }

  /** The whole disk uploaded, with a changed region, as Xen Orchestra uploads. */
  private async writeImport(vdi: Ref<'VDI'>): Promise<void> {
    const model = this.disks.get(vdi)!;
    const len = this.rng.int(Math.min(model.length, 2 * MiB));
    const off = this.rng.int(model.length - len + 1);
    this.rng.bytes(len).copy(model, off);
    const res = await fetch(`${this.t.url}/import_raw_vdi?session_id=${this.t.client.session}&vdi=${vdi}`, {
      method: 'PUT', body: new Uint8Array(model), headers: { 'Content-Length': String(model.length) },
    });
    assert.equal(res.status, 200, await res.text());
    this.note(`write-import ${vdi} ${off}+${len}`);
  }

  private async vmSnapshot(): Promise<void> {
    const vdi = this.pick(this.freeDisks());
    let vm = this.vmOf.get(vdi);
    if (!vm) {
      vm = await this.api.VM.create({
        name_label: 'model-vm', memory_static_max: 64 * MiB, memory_dynamic_max: 64 * MiB, memory_dynamic_min: 64 * MiB, memory_static_min: 64 * MiB, VCPUs_max: 1, VCPUs_at_startup: 1,
      } as never);
      await this.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
      this.vmOf.set(vdi, vm);
    }
    const snap = await this.api.VM.snapshot(vm, 'model-snap', []);
    const [sv] = await this.api.VM.get_VBDs(snap);
    const svdi = await this.api.VBD.get_VDI(sv);
    this.disks.set(svdi, Buffer.from(this.disks.get(vdi)!));
    this.snapshots.push({ snap, vm, disk: svdi });
    this.note(`vm-snapshot ${vm} (${vdi}) -> ${snap} (${svdi})`);
  }

  private diskOf = async (vm: Ref<'VM'>): Promise<Ref<'VDI'>> => this.api.VBD.get_VDI((await this.api.VM.get_VBDs(vm))[0]);

  private async vmRevert(): Promise<void> {
    const alive = new Set(this.vmOf.values());
    const live = this.snapshots.filter((s) => this.disks.has(s.disk) && alive.has(s.vm));
    if (live.length === 0) return this.vmSnapshot();
    const { snap, vm, disk } = this.pick(live);
    const before = await this.diskOf(vm);
    await this.api.VM.revert(snap);
    const after = await this.diskOf(vm);
    this.disks.delete(before);
    this.vmOf.delete(before);
    this.disks.set(after, Buffer.from(this.disks.get(disk)!));
    this.vmOf.set(after, vm);
    this.note(`vm-revert ${vm} to ${snap}: ${before} -> ${after}`);
  }

  private async vmSnapshotDestroy(): Promise<void> {
    if (this.snapshots.length === 0) return this.vmSnapshot();
    const i = this.rng.int(this.snapshots.length);
    const { snap } = this.snapshots[i];
    this.snapshots.splice(i, 1);
    for (const vbd of await this.api.VM.get_VBDs(snap)) {
      const vdi = await this.api.VBD.get_VDI(vbd);
      await this.api.VBD.destroy(vbd);
      if (this.disks.has(vdi)) {
        await this.api.VDI.destroy(vdi);
        this.disks.delete(vdi);
      }
    }
    await this.api.VM.destroy(snap);
    this.note(`vm-snapshot-destroy ${snap}`);
  }

  /** Every live VDI reads as modelled; every image's chain is sound to libvhdi and qemu-img. */
  async verify(context: string, opts: { chains?: boolean } = {}): Promise<void> {
    const checked = new Set<string>();
    for (const [vdi, want] of this.disks) {
      const res = await fetch(`${this.t.url}/export_raw_vdi?session_id=${this.t.client.session}&vdi=${vdi}`);
      assert.equal(res.status, 200, `${context}: export of ${vdi}`);
      const got = Buffer.from(await res.arrayBuffer());
      if (!got.equals(want)) {
        let at = 0;
        while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
        assert.fail(`${context}: ${vdi} differs from the model at byte ${at} (got ${got.length} bytes, want ${want.length})\n${this.log.join('\n')}`);
      }
      if (opts.chains === false) continue;
      const uuid = await this.api.VDI.get_uuid(vdi);
      await checkChainFile(join(this.t.srDir, `${uuid}.${this.t.format}`), checked).catch((e: unknown) => assert.fail(`${context}: chain of ${vdi}: ${String(e)}\n${this.log.join('\n')}`));
    }
  }

  /** After a full pass with nothing attached, no hidden base is left with fewer than two images on it. */
  async assertCollected(context: string): Promise<void> {
    const recs = Object.values(await this.api.VDI.get_all_records()).filter((v) => v.SR === this.t.sr);
    const kids = new Map<string, number>();
    for (const v of recs) if (v.sm_config['vhd-parent']) kids.set(v.sm_config['vhd-parent'], (kids.get(v.sm_config['vhd-parent']) ?? 0) + 1);
    const stale = recs.filter((v) => !v.managed && (kids.get(v.uuid) ?? 0) < 2).map((v) => `${v.uuid} (${kids.get(v.uuid) ?? 0} children)`);
    assert.deepEqual(stale, [], `${context}: hidden bases not folded\n${this.log.join('\n')}`);
  }

  /** Everything the model made goes (VMs and VDIs), so the next run starts clean. */
  async dispose(): Promise<void> {
    for (const { snap } of this.snapshots) await this.api.VM.destroy(snap).catch(() => undefined);
    for (const vm of [...this.vmOf.values(), ...(this.writer ? [this.writer] : [])]) await this.api.VM.destroy(vm).catch(() => undefined);
    for (const vdi of this.disks.keys()) await this.api.VDI.destroy(vdi).catch(() => undefined);
  }
}
