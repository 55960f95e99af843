/**
 * VM start benchmark: time from QemuBackend.start() to the test guest's
 * READY marker on the serial console, against the same guest launched by a
 * bare qemu-system-x86_64 with the same options; plus 10 guests at once.
 *
 * Run: npx tsx bench/vm-start/run.ts [--runs N] [--concurrent N] [--no-write]
 * Writes its figures into docs/benchmarks.md under "## VM start (bench/vm-start)".
 */
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { QemuBackend } from '../../src/xenops/qemu/index.ts';
import { buildQemuArgs } from '../../src/xenops/qemu/args.ts';
import type { DomainConfig } from '../../src/xenops/backend.ts';
import { testGuestPaths, testGuestCmdline, waitForText, READY_MARKER } from '../../tools/testguest/index.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : def; };
const RUNS = opt('--runs', 7);
const CONCURRENT = opt('--concurrent', 10);
const WRITE = !argv.includes('--no-write');
const POLL_MS = 5;

const guest = await testGuestPaths();
const tmp = await mkdtemp(path.join(os.tmpdir(), 'xbench-'));
const runDir = path.join(tmp, 'run');
const backend = new QemuBackend({ runDir, accel: 'auto' });
const accel = await backend.accelerator();

function cfg(): DomainConfig {
  return {
    uuid: randomUUID(), name: 'bench', vcpusMax: 1, vcpusAtStartup: 1, memoryBytes: 256 * 1024 * 1024,
    firmware: 'bios', bootOrder: 'c', kernel: guest.kernel, initrd: guest.initrd,
    cmdline: testGuestCmdline({ mode: 'stay' }), platform: {}, disks: [], nics: [],
  };
}

const startCalls: number[] = [];
async function viaBackend(): Promise<number> {
  const c = cfg();
  const t0 = performance.now();
  await backend.start(c, { paused: false });
  startCalls.push(performance.now() - t0);
  await waitForText(backend.serialLog(c.uuid).path, READY_MARKER, { timeoutMs: 120000, intervalMs: POLL_MS });
  const ms = performance.now() - t0;
  await backend.shutdown(c.uuid, 'hard');
  return ms;
}

async function bare(): Promise<number> {
  const c = cfg();
  const dir = path.join(tmp, 'bare', c.uuid);
  await mkdir(dir, { recursive: true });
  const args = buildQemuArgs(c, { accel, paused: false, taps: new Map() });
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', args, { cwd: dir, stdio: 'ignore' });
  try {
    await waitForText(path.join(dir, 'serial.log'), READY_MARKER, { timeoutMs: 120000, intervalMs: POLL_MS });
    return performance.now() - t0;
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

try {
  console.log(`accelerator: ${accel}; ${RUNS} runs each, alternating`);
  await viaBackend(); await bare(); // warm-up (page cache)
  const b: number[] = [], q: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    if (i % 2 === 0) { b.push(await viaBackend()); q.push(await bare()); }
    else { q.push(await bare()); b.push(await viaBackend()); }
    console.log(`run ${i + 1}: backend ${b.at(-1)!.toFixed(0)} ms, bare ${q.at(-1)!.toFixed(0)} ms`);
  }
  const mb = median(b), mq = median(q), ratio = mb / mq;
  const pairRatio = median(b.map((x, i) => x / q[i]!));
  const mStart = median(startCalls);
  const load = os.loadavg()[0]!;
  console.log(`median: backend ${mb.toFixed(0)} ms, bare qemu ${mq.toFixed(0)} ms, ratio ${ratio.toFixed(3)} (target <= 1.10); median of per-pair ratios ${pairRatio.toFixed(3)}`);
  console.log(`start() itself (spawn -> QMP answering): median ${mStart.toFixed(0)} ms; host load average ${load.toFixed(1)}`);

  // N guests at once through the backend
  const cfgs = Array.from({ length: CONCURRENT }, cfg);
  const t0 = performance.now();
  const times = await Promise.all(cfgs.map(async (c) => {
    await backend.start(c, { paused: false });
    await waitForText(backend.serialLog(c.uuid).path, READY_MARKER, { timeoutMs: 600000, intervalMs: 50 });
    return performance.now() - t0;
  }));
  const total = performance.now() - t0;
  await Promise.all(cfgs.map((c) => backend.shutdown(c.uuid, 'hard')));
  console.log(`${CONCURRENT} concurrent: all at the marker after ${(total / 1000).toFixed(1)} s (first ${(Math.min(...times) / 1000).toFixed(1)} s)`);

  if (WRITE) {
    const cpus = os.cpus().length;
    const section = [
      '## VM start (bench/vm-start)',
      '',
      'Time from `QemuBackend.start()` to the test guest\'s `XENON-TESTGUEST-READY` line on the serial log, against the same guest',
      'launched by a bare `qemu-system-x86_64` with the same command line (built by `buildQemuArgs`), same run, alternating order,',
      `after one warm-up each. Guest: Debian 6.1 kernel + busybox initramfs (tools/testguest), 1 vCPU, 256 MiB, accelerator ${accel.toUpperCase()}, ${cpus} host CPUs.`,
      '',
      '| measure | value |',
      '| --- | --- |',
      `| backend start → marker, median of ${RUNS} | ${mb.toFixed(0)} ms |`,
      `| bare qemu → marker, median of ${RUNS} | ${mq.toFixed(0)} ms |`,
      `| ratio backend / bare, medians (target ≤ 1.10) | ${ratio.toFixed(3)} |`,
      `| median of per-run-pair ratios | ${pairRatio.toFixed(3)} |`,
      `| \`start()\` resolving (spawn → QMP answering), median | ${mStart.toFixed(0)} ms |`,
      `| ${CONCURRENT} guests started at once, all at the marker | ${(total / 1000).toFixed(1)} s |`,
      '',
      `Boot time under TCG is CPU-bound, so these figures move with the host's load (1-minute load average ${load.toFixed(1)} at the end of the`,
      'timed runs, on a machine shared with other test suites); the backend adds only the `start()` latency above, the guest then runs as in the bare case.',
      '',
      `Measured ${new Date().toISOString().slice(0, 10)}. Reproduce: \`npx tsx bench/vm-start/run.ts\` (options: \`--runs N --concurrent N --no-write\`).`,
      '',
    ].join('\n');
    console.log(`wrote ${writeBenchmarkSection('## VM start (bench/vm-start)', section)}`);
  }
} finally {
  for (const d of await backend.list()) await backend.shutdown(d.uuid, 'hard').catch(() => {});
  await backend.close();
  await rm(tmp, { recursive: true, force: true });
}
