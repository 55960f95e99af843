/**
 * Metrics benchmark: 1,000 simulated VMs (2 vCPUs, one disk, one VIF each)
 * on an in-process daemon. Measures the collector's CPU per 5-second step
 * as a fraction of one core (target < 5%), the RRDs' memory, /rrd_updates
 * latency for all of them (Xen Orchestra's query: the last 10 minutes at 5 s,
 * AVERAGE, host and every VM, JSON; and the XML form), /metrics, and saving
 * every RRD.
 *
 * Run: npx tsx bench/rrd/run.ts [--vms N] [--steps N] [--requests N] [--no-write]
 * Writes its figures into docs/benchmarks.md under "## Metrics (bench/rrd)".
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { XenApiClient } from '../../src/client/client.ts';
import type { Metrics } from '../../src/metrics/service.ts';
import { metricsPlugin, storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { exportRows, xportJsonChunks } from '../../src/metrics/xport.ts';
import { startServer, type Plugin } from '../../src/server.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : def; };
const VMS = opt('--vms', 1000);
const STEPS = opt('--steps', 24);
const REQUESTS = opt('--requests', 20);
const WRITE = !argv.includes('--no-write');
const STEP_S = 5;

const unwiredNics: Plugin = { name: 'unwired-nics', start(s) { s.nics = { plug: async () => ({}), unplug: async () => undefined }; } };
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'xbench-rrd-'));
const server = await startServer(
  { dataDir, http: { host: '127.0.0.1', port: 0 }, rootPassword: 'bench', logger: pino({ level: 'warn' }), synchronous: 'NORMAL' },
  [storagePlugin({ gcIntervalMs: 3_600_000 }), unwiredNics, xenopsPlugin({ backend: 'sim', metricsIntervalMs: 3_600_000 }), metricsPlugin({ intervalMs: 3_600_000 })],
);
const c = new XenApiClient(server.httpUrl!);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

try {
  await c.login('root', 'bench');
  const api = c.api;
  const [pool] = await api.pool.get_all();
  const sr = await api.pool.get_default_SR(pool!);
  const net = await api.network.create({ name_label: 'bench', name_description: '', MTU: 1500, other_config: {}, tags: [] } as never);
  const [tpl] = await api.VM.get_by_name_label('Xenon test guest');
  const t0 = performance.now();
  const batch = 25;
  for (let i = 0; i < VMS; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, VMS - i) }, async (_, k) => {
      const vm = await api.VM.clone(tpl!, `bench-${i + k}`);
      await api.VM.set_is_a_template(vm, false);
      await api.VM.set_VCPUs_max(vm, 2);
      await api.VM.set_VCPUs_at_startup(vm, 2);
      await api.VM.set_memory_limits(vm, 16 * 2 ** 20, 16 * 2 ** 20, 16 * 2 ** 20, 16 * 2 ** 20); // 1,000 must fit in the host's memory
      const vdi = await api.VDI.create({ SR: sr, virtual_size: 2 ** 20, name_label: `bench-${i + k}`, type: 'user', sharable: false, read_only: false, other_config: {} } as never);
      await api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false } as never);
      await api.VIF.create({ VM: vm, network: net, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] } as never);
      await api.VM.start(vm, false, false);
    }));
  }
  console.log(`${VMS} sim VMs running after ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const metrics = server.services.metrics as Metrics;
  let clock = Math.floor(Date.now() / 1000);
  // warm-up: RRDs created, sources joined, VM_metrics written once
  for (let i = 0; i < 3; i++) await metrics.collect((clock += STEP_S));
  const cpu: number[] = [];
  const wall: number[] = [];
  // the longest the daemon's event loop waited (ms) during a measured phase
  const loopDelay = async (phase: () => Promise<void>): Promise<number> => {
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    await phase();
    h.disable();
    return h.max / 1e6;
  };
  const stepLoopMax = await loopDelay(async () => { for (let i = 0; i < 3; i++) await metrics.collect((clock += STEP_S)); });
  for (let i = 0; i < STEPS; i++) {
    const u0 = process.cpuUsage();
    const w0 = performance.now();
    await metrics.collect((clock += STEP_S));
    const u = process.cpuUsage(u0);
    wall.push(performance.now() - w0);
    cpu.push((u.user + u.system) / 1000);
  }
  const cpuMs = median(cpu);
  const share = cpuMs / (STEP_S * 1000);
  const columns = metrics.exportable({ host: false }).reduce((n, [, r]) => n + r.dss.length, 0);
  console.log(`collector: ${cpuMs.toFixed(1)} ms CPU per step (median of ${STEPS}), ${(share * 100).toFixed(2)}% of one core at ${STEP_S} s; wall ${median(wall).toFixed(1)} ms; ${columns} VM sources`);

  const rss = process.memoryUsage().rss;
  const session = encodeURIComponent(c.session);
  /** Wall time per request, and the process's CPU time per request (server and in-process client: the figure a loaded host does not inflate). */
  const timed = async (query: string): Promise<{ ms: number[]; cpu: number[]; bytes: number }> => {
    const ms: number[] = [];
    const cpu: number[] = [];
    let bytes = 0;
    for (let i = 0; i < REQUESTS; i++) {
      const s = performance.now();
      const u0 = process.cpuUsage();
      const res = await fetch(`${server.httpUrl}${query}&session_id=${session}`);
      const body = await res.text();
      if (res.status !== 200) throw new Error(`${query}: ${res.status} ${body.slice(0, 200)}`);
      const u = process.cpuUsage(u0);
      ms.push(performance.now() - s);
      cpu.push((u.user + u.system) / 1000);
      bytes = body.length;
    }
    return { ms, cpu, bytes };
  };
  const xoStart = clock - 120 * STEP_S + STEP_S;
  let json = { ms: [] as number[], cpu: [] as number[], bytes: 0 };
  const jsonLoopMax = await loopDelay(async () => { json = await timed(`/rrd_updates?cf=AVERAGE&host=true&interval=5&json=true&start=${xoStart}`); });
  const xml = await timed(`/rrd_updates?cf=AVERAGE&host=true&interval=5&start=${xoStart}`);
  // the longest the export holds the event loop in one piece: its setup, or one row
  let pieceMs = 0;
  for (let k = 0; k < 5; k++) {
    let t = performance.now();
    const e = exportRows(metrics.exportable({ host: true }), xoStart, 5, 'AVERAGE');
    for (const _ of xportJsonChunks(e)) {
      pieceMs = Math.max(pieceMs, performance.now() - t);
      t = performance.now();
    }
  }
  const recent = await timed(`/rrd_updates?cf=AVERAGE&host=true&interval=5&json=true&start=${clock - 10}`);
  const prom = await timed('/metrics?x=1');
  const s0 = performance.now();
  await metrics.saveAll();
  const saveMs = performance.now() - s0;
  for (const [name, r] of [['json', json], ['xml', xml], ['recent', recent], ['prometheus', prom]] as const) {
    console.log(`${name}: median ${median(r.ms).toFixed(0)} ms, p95 ${pct(r.ms, 0.95).toFixed(0)} ms, CPU ${median(r.cpu).toFixed(0)} ms, ${(r.bytes / 2 ** 20).toFixed(2)} MiB`);
  }
  console.log(`longest piece of an export: ${pieceMs.toFixed(0)} ms`);
  console.log(`saving every RRD: ${saveMs.toFixed(0)} ms; rss ${(rss / 2 ** 20).toFixed(0)} MiB; event loop held at most ${stepLoopMax.toFixed(0)} ms by a step, ${jsonLoopMax.toFixed(0)} ms while serving /rrd_updates`);

  if (WRITE) {
    const load = os.loadavg()[0]!;
    const section = [
      '## Metrics (bench/rrd)',
      '',
      `${VMS} simulated VMs (2 vCPUs, one disk, one VIF each: ${columns / VMS} recorded sources a VM) on an in-process daemon with the sim backend,`,
      'the collector driven step by step at 5-second intervals of RRD time. CPU is the daemon process\'s user+system time during a step',
      '(`process.cpuUsage`); HTTP over loopback with `fetch`, one request at a time.',
      '',
      '| measure | value |',
      '| --- | --- |',
      `| collector CPU per 5 s step, median of ${STEPS} | ${cpuMs.toFixed(1)} ms |`,
      `| **as a fraction of one core** (target < 5%) | **${(share * 100).toFixed(2)}%** |`,
      `| collector wall time per step, median | ${median(wall).toFixed(1)} ms |`,
      `| \`/rrd_updates\` as Xen Orchestra asks (10 min at 5 s, AVERAGE, host + all VMs, JSON): median / p95 | ${median(json.ms).toFixed(0)} / ${pct(json.ms, 0.95).toFixed(0)} ms, ${(json.bytes / 2 ** 20).toFixed(1)} MiB |`,
      `| the same: CPU per request (server and the in-process client), median | ${median(json.cpu).toFixed(0)} ms |`,
      `| longest event-loop stall while serving it (streamed a row at a time) | ${jsonLoopMax.toFixed(0)} ms |`,
      `| longest piece of it in one go (the export's setup, or one row), 5 exports | ${pieceMs.toFixed(0)} ms |`,
      `| longest event-loop stall during a collection step | ${stepLoopMax.toFixed(0)} ms |`,
      `| the same as XML: median / p95; CPU | ${median(xml.ms).toFixed(0)} / ${pct(xml.ms, 0.95).toFixed(0)} ms, ${(xml.bytes / 2 ** 20).toFixed(1)} MiB; ${median(xml.cpu).toFixed(0)} ms |`,
      `| the last 10 s only (a poller's refresh), JSON: median | ${median(recent.ms).toFixed(0)} ms, ${(recent.bytes / 1024).toFixed(0)} KiB |`,
      `| \`/metrics\` (Prometheus text, every source): median; CPU | ${median(prom.ms).toFixed(0)} ms, ${(prom.bytes / 2 ** 20).toFixed(1)} MiB; ${median(prom.cpu).toFixed(0)} ms |`,
      `| saving every RRD (hourly and on stop) | ${(saveMs / 1000).toFixed(1)} s |`,
      `| daemon RSS with ${VMS} VMs and their RRDs | ${(rss / 2 ** 20).toFixed(0)} MiB |`,
      '',
      `Each VM RRD holds xapi's archives (120 × 5 s AVERAGE; 120 × 1 min, 168 × 1 h, 366 × 1 day in AVERAGE, MIN and MAX: 2,082 doubles,`,
      `16 KiB a source). Host load average ${load.toFixed(1)} on ${os.cpus().length} CPUs at the end (a machine shared with other suites): wall times and`,
      'event-loop stalls include the time this process waited for a core; the CPU figures do not.',
      '',
      `Measured ${new Date().toISOString().slice(0, 10)}. Reproduce: \`npx tsx bench/rrd/run.ts\` (options: \`--vms N --steps N --requests N --no-write\`).`,
      '',
    ].join('\n');
    console.log(`wrote ${writeBenchmarkSection('## Metrics (bench/rrd)', section)}`);
  }
} finally {
  c.close();
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
}
