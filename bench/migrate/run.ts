/**
 * Live migration benchmark: VM.pool_migrate of the test guest between two
 * Xenon hosts (two daemons in two network namespaces, a qcow2 disk on the
 * shared SR, QEMU under TCG), beside a bare QEMU-to-QEMU migration of the
 * same guest between the same namespaces in the same run, alternated; then
 * the same with a VHD disk (VDI.create's default on a file SR, served to QEMU
 * by Xenon's NBD export) that the guest writes to all along.
 *
 * Figures per migration:
 * - total: for pool_migrate, the API call's wall time (checks, disks attached
 *   on the destination, its QEMU launched, the state sent, the records moved);
 *   for bare QEMU, from launching the destination QEMU until it runs the guest.
 * - downtime: QEMU's own figure (query-migrate "downtime"), and the longest
 *   pause the guest's serial ticks (one every 100 ms) show, seen from outside.
 * - disk hand-over (VHD): from the source's QEMU done to the destination's
 *   export open (the destination guest's disk I/O waits that long).
 *
 * Run (as root): npx tsx bench/migrate/run.ts [--runs N] [--no-write]
 * Writes its figures into docs/benchmarks.md under "## Live migration (bench/migrate)".
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildQemuArgs } from '../../src/xenops/qemu/args.ts';
import { tcpUri } from '../../src/xenops/qemu/migration.ts';
import { QmpClient } from '../../src/xenops/qemu/qmp.ts';
import type { DomainConfig } from '../../src/xenops/backend.ts';
import { makeTestGuestVm, typeOnConsole } from '../../test/helpers/guest.ts';
import { allLive, PoolLab, ROOT_PASSWORD, type LabHost } from '../../test/pool/helpers.ts';
import { testGuestCmdline, testGuestPaths } from '../../tools/testguest/index.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const RUNS = (() => { const i = argv.indexOf('--runs'); return i >= 0 ? Number(argv[i + 1]) : 4; })();
const WRITE = !argv.includes('--no-write');
const TICK_LOOP = 'sh i=0; while true; do i=$((i+1)); echo TICK $i; sleep 0.1; done &';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const read = (file: string): string => { try { return readFileSync(file, 'utf8'); } catch { return ''; } };

/** Watches serial logs: when each tick was first seen; the longest pause between new ticks in a window. */
class Ticks {
  readonly seen = new Map<number, number>();
  private timer: NodeJS.Timeout;
  constructor(private readonly files: () => string[]) {
    this.timer = setInterval(() => {
      const now = performance.now();
      for (const f of this.files()) for (const m of read(f).matchAll(/TICK (\d+)/g)) if (!this.seen.has(Number(m[1]))) this.seen.set(Number(m[1]), now);
    }, 10);
  }
  get last(): number { return Math.max(0, ...this.seen.keys()); }
  /** Longest time between consecutive tick numbers first seen in (from, to]. */
  longestPause(from: number, to: number): number {
    let worst = 0;
    for (let n = from + 1; n <= to; n++) {
      const a = this.seen.get(n - 1); const b = this.seen.get(n);
      if (a === undefined || b === undefined) return Infinity;
      worst = Math.max(worst, b - a);
    }
    return worst;
  }
  stop(): void { clearInterval(this.timer); }
}

interface Sample { totalMs: number; qemuDowntimeMs: number; pauseMs: number; handoverMs?: number }

// ------------------------------------------------------------------ the pool

const lab = new PoolLab();
const QEMU = ['--backend', 'qemu', '--accel', 'tcg', '--network', 'none'];
const results: { pool: Sample[]; vhd: Sample[]; bare: Sample[] } = { pool: [], vhd: [], bare: [] };
let poolPause = 0;
/** The VHD disk's writer: a sector every 2 MiB (allocating a VHD block each, the first round), fsynced, every 200 ms. */
const DISK_LOOP = 'sh D=; for d in vda vdb; do [ "$(cat /sys/block/$d/size 2>/dev/null)" = 131072 ] && D=$d; done; ( j=0; while true; do j=$((j+1)); echo "REC $j" | dd of=/dev/$D bs=512 seek=$(( (j % 32) * 4096 )) conv=sync,notrunc,fsync 2>/dev/null; sleep 0.2; done ) &';

try {
  await lab.setup();
  const [h1, h2] = await Promise.all([lab.addHost('b1', QEMU), lab.addHost('b2', QEMU)]);
  await (await h2.client()).api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h2);
  const c = await h1.client();
  await allLive(c);
  const hostOf = async (h: LabHost): Promise<string> => Object.keys(await c.api.host.get_all_records_where(`field "address" = "${h.ip}"`))[0];
  const refs = new Map([[h1, await hostOf(h1)], [h2, await hostOf(h2)]]);
  const sharedDir = path.join(lab.dir, 'shared');
  const sr = await c.api.SR.create(refs.get(h1)!, { location: sharedDir }, 0, 'shared', '', 'file', 'user', true, {});
  await until('the member to plug the shared SR', async () => (await Promise.all((await c.api.SR.get_PBDs(sr)).map((p) => c.api.PBD.get_currently_attached(p)))).every(Boolean));
  /** A pool guest with one 64 MiB disk of the given format on the shared SR, started on h1 and ticking. */
  const poolGuest = async (format: 'qcow2' | 'vhd'): Promise<{ vm: string; uuid: string; logOf: (h: LabHost) => string; ticks: Ticks }> => {
    const vm = await makeTestGuestVm(c, `bench-migrate-${format}`);
    const disk = await c.api.VDI.create({ SR: sr, virtual_size: 64 * 1024 * 1024, name_label: 'bench', type: 'user', sharable: false, read_only: false, other_config: {}, sm_config: format === 'qcow2' ? { type: 'qcow2' } : {} } as never);
    await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false, other_config: {} } as never);
    const uuid = await c.api.VM.get_uuid(vm);
    const logOf = (h: LabHost): string => path.join(h.dataDir, 'run', 'qemu', uuid, 'serial.log');
    await c.api.VM.start_on(vm, refs.get(h1)!, false, false);
    await until('the pool guest to boot', () => read(logOf(h1)).includes('XENON-TESTGUEST-READY'));
    await typeOnConsole(c, vm, TICK_LOOP);
    if (format === 'vhd') await typeOnConsole(c, vm, DISK_LOOP);
    const ticks = new Ticks(() => [logOf(h1), logOf(h2)]);
    await until('ticks', () => ticks.seen.size > 10);
    return { vm, uuid, logOf, ticks };
  };
  let guest = await poolGuest('qcow2');

  // ---------------------------------------------------------------- bare QEMU, same guest, same namespaces
  const guestFiles = await testGuestPaths();
  const bareDisk = path.join(sharedDir, 'bare.qcow2');
  await new Promise<void>((resolve, reject) => spawn('qemu-img', ['create', '-q', '-f', 'qcow2', bareDisk, '64M']).on('exit', (code) => (code === 0 ? resolve() : reject(new Error('qemu-img')))));
  const bareCfg: DomainConfig = {
    uuid: randomUUID(), name: 'bench-bare', vcpusMax: 1, vcpusAtStartup: 1, memoryBytes: 256 * 1024 * 1024, firmware: 'bios', bootOrder: 'c',
    kernel: guestFiles.kernel, initrd: guestFiles.initrd, cmdline: testGuestCmdline({ mode: 'stay' }), platform: {},
    disks: [{ id: randomUUID(), device: '0', path: bareDisk, format: 'qcow2', readOnly: false, kind: 'disk', bootable: false }], nics: [],
  };
  const hostNs = (h: LabHost): string => h.ns;
  let round = 0;
  const launchBare = (h: LabHost, incoming?: string): { dir: string; done: Promise<void> } => {
    const dir = path.join(lab.dir, `bare-${h.name}-${round++}`);
    mkdirSync(dir, { recursive: true });
    const args = buildQemuArgs(bareCfg, { accel: 'tcg', paused: false, incoming, taps: new Map() });
    const log = openSync(path.join(dir, 'qemu.log'), 'a');
    const p = spawn('ip', ['netns', 'exec', hostNs(h), 'qemu-system-x86_64', ...args], { cwd: dir, stdio: ['ignore', log, log] });
    closeSync(log);
    return { dir, done: new Promise((r) => p.on('exit', () => r())) };
  };
  let bareAt = { host: h1, ...launchBare(h1) };
  const bareLogs: string[] = [path.join(bareAt.dir, 'serial.log')];
  await until('the bare guest to boot', () => read(bareLogs[0]).includes('XENON-TESTGUEST-READY'), 300_000).catch((e: unknown) => {
    throw new Error(`${String(e)}: ${read(path.join(bareAt.dir, 'qemu.log')).slice(-500)}`);
  });
  await new Promise<void>((resolve, reject) => {
    const s = net.createConnection(path.join(bareAt.dir, 'serial.sock'), () => s.end(`${TICK_LOOP}\n`, () => resolve()));
    s.on('error', reject);
  });
  const bareTicks = new Ticks(() => bareLogs);
  await until('bare ticks', () => bareTicks.seen.size > 10);

  const bareMigrate = async (to: LabHost): Promise<Sample> => {
    const from = await QmpClient.connect(path.join(bareAt.dir, 'qmp.sock'));
    const startTick = bareTicks.last;
    // the port is found free from this namespace's view of the address: QEMU binds it in the host's namespace
    const uri = tcpUri(to.ip, await portIn(to));
    const t0 = performance.now();
    const dest = launchBare(to, uri);
    bareLogs.push(path.join(dest.dir, 'serial.log'));
    let destQmp: QmpClient | undefined;
    await until('the destination QEMU', async () => {
      destQmp = await QmpClient.connect(path.join(dest.dir, 'qmp.sock'), 200).catch(() => undefined);
      return destQmp !== undefined;
    });
    await from.execute('migrate', { uri });
    let downtime = 0;
    await until('the migration', async () => {
      const m = await from.execute<{ status?: string; downtime?: number }>('query-migrate');
      if (m.status === 'failed') throw new Error('bare migration failed');
      downtime = m.downtime ?? 0;
      return m.status === 'completed';
    });
    await until('the destination to run', async () => (await destQmp!.execute<{ status: string }>('query-status')).status === 'running');
    const totalMs = performance.now() - t0;
    await from.execute('quit').catch(() => undefined);
    from.close();
    destQmp!.close();
    bareAt = { host: to, ...dest };
    await until('ticks after', () => bareTicks.last >= startTick + 10);
    return { totalMs, qemuDowntimeMs: downtime, pauseMs: bareTicks.longestPause(startTick, bareTicks.last) };
  };

  /** A port free on the host's address, asked from inside its namespace. */
  async function portIn(h: LabHost): Promise<number> {
    const script = `const s=require('net').createServer();s.listen(0,'${h.ip}',()=>{console.log(s.address().port);s.close()})`;
    return new Promise((resolve, reject) => {
      let out = '';
      const p = spawn('ip', ['netns', 'exec', hostNs(h), process.execPath, '-e', script]);
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('exit', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error('no port'))));
    });
  }

  const poolMigrate = async (to: LabHost): Promise<Sample> => {
    const { vm, ticks: poolTicks } = guest;
    const startTick = poolTicks.last;
    const before = (h1.daemon.output().match(/"msg":"VM migrated"/g) ?? []).length;
    const t0 = performance.now();
    await c.api.VM.pool_migrate(vm, refs.get(to)!, { live: 'true' });
    const totalMs = performance.now() - t0;
    const lines = h1.daemon.output().split('\n').filter((l) => l.includes('"msg":"VM migrated"'));
    if (lines.length <= before) throw new Error('no migration figures in the master\'s log');
    const stats = JSON.parse(lines[lines.length - 1]) as { downtimeMs: number; handoverMs?: number };
    await until('ticks after', () => poolTicks.last >= startTick + 10);
    return { totalMs, qemuDowntimeMs: stats.downtimeMs, pauseMs: poolTicks.longestPause(startTick, poolTicks.last), handoverMs: stats.handoverMs };
  };

  let poolAt = h1;
  const rounds = async (into: Sample[]): Promise<void> => {
    for (let i = 0; i < RUNS; i++) {
      const poolTo = poolAt === h1 ? h2 : h1;
      into.push(await poolMigrate(poolTo).catch((e: unknown) => {
        // what the guest and the hosts said, to tell why
        process.stderr.write(`serial on ${poolAt.name}: ${read(guest.logOf(poolAt)).slice(-800)}\nqemu.log: ${read(path.join(poolAt.dataDir, 'run', 'qemu', guest.uuid, 'qemu.log')).slice(-800)}\n`);
        for (const h of [h1, h2]) process.stderr.write(`${h.name}: ${h.daemon.output().split('\n').filter((l) => l.includes(guest.uuid) || l.includes('"level":4') || l.includes('"level":5')).slice(-10).join('\n')}\n`);
        throw e;
      }));
      poolAt = poolTo;
      results.bare.push(await bareMigrate(bareAt.host === h1 ? h2 : h1));
      process.stdout.write(`round ${i + 1}: pool ${JSON.stringify(into.at(-1))} bare ${JSON.stringify(results.bare.at(-1))}\n`);
    }
  };
  await rounds(results.pool);
  guest.ticks.stop();
  await c.api.VM.hard_shutdown(guest.vm);
  // the same with a VHD disk the guest writes to all along
  poolAt = h1;
  guest = await poolGuest('vhd');
  await rounds(results.vhd);
  guest.ticks.stop();
  await c.api.VM.hard_shutdown(guest.vm);
  poolPause = Math.max(...results.pool.map((s) => s.pauseMs), ...results.vhd.map((s) => s.pauseMs));
  bareTicks.stop();
  const q = await QmpClient.connect(path.join(bareAt.dir, 'qmp.sock'));
  await q.execute('quit').catch(() => undefined);
  q.close();
} finally {
  await lab.teardown();
}

// ------------------------------------------------------------------ report

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '∞');
const row = (name: string, xs: Sample[]): string =>
  `| ${name} | ${f(median(xs.map((s) => s.totalMs)))} | ${f(median(xs.map((s) => s.qemuDowntimeMs)))} | ${f(median(xs.map((s) => s.pauseMs)))} | ${f(Math.max(...xs.map((s) => s.pauseMs)))} | ${xs.some((s) => s.handoverMs !== undefined) ? f(median(xs.map((s) => s.handoverMs ?? 0))) : '–'} |`;
const ratio = (k: 'totalMs' | 'qemuDowntimeMs' | 'pauseMs', of: Sample[] = results.pool): string => (median(of.map((s) => s[k])) / Math.max(1, median(results.bare.map((s) => s[k])))).toFixed(2);
const section = [
  '## Live migration (bench/migrate)',
  '',
  `\`npx tsx bench/migrate/run.ts --runs ${RUNS}\` (${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)}; QEMU under TCG,`,
  'the test guest with 256 MiB and a 64 MiB disk on the shared SR, printing a tick every 100 ms; two daemons in two network namespaces',
  'on a bridge). Pool: `VM.pool_migrate` back and forth, first with a qcow2 disk, then with a VHD disk (served by Xenon\'s NBD export) that the',
  'guest writes a sector to every 200 ms (fsynced); bare: the same guest with a qcow2 disk, two `qemu-system-x86_64` launched by hand in the same',
  'namespaces, QMP `migrate` over TCP; alternated with each pool round. Medians in ms over the runs; "pause" is the longest gap between new serial',
  'ticks seen from outside (polled every 10 ms; 100 ms is the guest\'s own period); "disk hand-over" is from the source QEMU\'s end to the',
  'destination export\'s opening the chain (the destination guest runs meanwhile; only its disk I/O waits).',
  '',
  '| | total | QEMU downtime | pause (median) | pause (worst) | disk hand-over |',
  '| --- | ---: | ---: | ---: | ---: | ---: |',
  row('VM.pool_migrate, qcow2', results.pool),
  row('VM.pool_migrate, VHD', results.vhd),
  row('bare QEMU → QEMU', results.bare),
  '',
  `Ratios to bare: qcow2 total ${ratio('totalMs')}×, QEMU downtime ${ratio('qemuDowntimeMs')}×, guest pause ${ratio('pauseMs')}×; VHD total ${ratio('totalMs', results.vhd)}×, QEMU downtime ${ratio('qemuDowntimeMs', results.vhd)}×, guest pause ${ratio('pauseMs', results.vhd)}× (targets: ≤ 1.2× total, ≤ 1.5× downtime). Worst pool pause ${f(poolPause)} ms.`,
  '',
].join('\n');
process.stdout.write(`\n${section}\n`);
if (WRITE) {
  writeBenchmarkSection('## Live migration (bench/migrate)', section);
}
