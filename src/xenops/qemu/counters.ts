/**
 * A QEMU domain's counters for metrics: vCPU busy time from the kernel's
 * per-thread scheduler accounting (/proc/<pid>/task/<tid>/schedstat of each
 * vCPU thread: time on a host CPU plus time runnable and waiting for one —
 * a vCPU the guest keeps busy counts as busy on a crowded host too, as the
 * guest itself sees it; /stat's user+system time where schedstat is missing),
 * disk totals from one QMP `query-blockstats`, NIC totals from the tap's
 * /sys/class/net/<tap>/statistics. The vCPU thread ids come from
 * `query-cpus-fast`, asked once and again only when they stop making sense.
 *
 * /proc and /sys files are read synchronously: the kernel answers them from
 * memory in microseconds, cheaper than a hop through the thread pool.
 */
import { readFileSync } from 'node:fs';
import type { DomainCounters } from '../backend.ts';
import { diskIds } from './args.ts';
import type { Dom } from './domain.ts';

const CLK_TCK = 100;

/** Seconds one thread was busy (running or waiting to run); undefined when the thread is gone. */
function threadBusySeconds(pid: number, tid: number): number | undefined {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ').map(Number);
    if (Number.isFinite(run) && Number.isFinite(wait)) return (run! + wait!) / 1e9;
  } catch {
    return undefined; // the thread is gone
  }
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

function netCounter(dev: string, name: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${dev}/statistics/${name}`, 'latin1'));
  } catch {
    return NaN;
  }
}

interface BlockStats { device?: string; qdev?: string; 'node-name'?: string; stats?: { rd_bytes?: number; wr_bytes?: number; rd_operations?: number; wr_operations?: number } }

async function vcpuThreads(d: Dom): Promise<number[]> {
  const cpus = await d.qmp!.execute<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast');
  const threads: number[] = [];
  for (const c of cpus) threads[c['cpu-index']] = c['thread-id'];
  return threads;
}

/**
 * Per-vCPU busy seconds. Under single-threaded TCG every vCPU runs on one thread:
 * its time is shared evenly among them.
 */
function vcpuSeconds(pid: number, threads: readonly number[]): number[] | undefined {
  const byThread = new Map<number, number>();
  for (const tid of threads) byThread.set(tid, (byThread.get(tid) ?? 0) + 1);
  const out: number[] = [];
  for (const tid of threads) {
    const s = threadBusySeconds(pid, tid);
    if (s === undefined) return undefined;
    out.push(s / byThread.get(tid)!);
  }
  return out;
}

export async function domainCounters(d: Dom): Promise<DomainCounters> {
  const cfg = d.p.config;
  if (!d.vcpuThreads) d.vcpuThreads = await vcpuThreads(d);
  let seconds = vcpuSeconds(d.p.pid, d.vcpuThreads);
  if (!seconds) {
    // a vCPU thread went away (hot-unplug, a rebuilt device model): ask again
    d.vcpuThreads = await vcpuThreads(d);
    seconds = vcpuSeconds(d.p.pid, d.vcpuThreads) ?? [];
  }
  const blocks = cfg.disks.some((x) => x.kind === 'disk' && x.path) ? await d.qmp!.execute<BlockStats[]>('query-blockstats') : [];
  const disks: DomainCounters['disks'] = [];
  for (const disk of cfg.disks) {
    if (disk.kind !== 'disk') continue;
    const ids = diskIds(disk);
    const b = blocks.find((x) => x['node-name'] === ids.fmt || x.qdev?.includes(`/${ids.dev}/`) || x.device === ids.dev);
    if (!b?.stats) continue;
    disks.push({
      device: disk.device,
      readBytes: b.stats.rd_bytes ?? 0, writeBytes: b.stats.wr_bytes ?? 0,
      readOps: b.stats.rd_operations ?? 0, writeOps: b.stats.wr_operations ?? 0,
    });
  }
  const nics: DomainCounters['nics'] = [];
  for (const n of cfg.nics) {
    const tap = n.tap ?? d.p.createdTaps[n.id];
    if (!tap) continue;
    // the tap's receive is what the guest sent, and the other way round
    nics.push({
      device: n.device,
      rxBytes: netCounter(tap, 'tx_bytes'), txBytes: netCounter(tap, 'rx_bytes'),
      rxErrors: netCounter(tap, 'tx_errors'), txErrors: netCounter(tap, 'rx_errors'),
    });
  }
  return { vcpuSeconds: seconds, memoryBytes: cfg.memoryBytes, disks, nics };
}
