/**
 * The host's figures from /proc and /sys: busy time per core (/proc/stat),
 * memory (/proc/meminfo: MemTotal, MemAvailable), the one-minute load
 * (/proc/loadavg) and each PIF's counters (/sys/class/net/<dev>/statistics).
 * Kernel pseudo-files, read without blocking.
 */
import { readFile } from 'node:fs/promises';
import type { HostSample } from './sources.ts';

const USER_HZ = 100;

/** Busy seconds per core from /proc/stat's `cpuN` lines (everything but idle and iowait). */
export function parseProcStat(text: string): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    out[Number(m[1])] = (total - idle) / USER_HZ;
  }
  return out.filter((x) => x !== undefined);
}

export function parseMeminfo(text: string): { totalKib: number; availableKib: number } {
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  const available = field('MemAvailable');
  return { totalKib: field('MemTotal'), availableKib: Number.isNaN(available) ? field('MemFree') : available };
}

async function counter(dev: string, name: string): Promise<number> {
  if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(dev)) return NaN;
  return Number(await readFile(`/sys/class/net/${dev}/statistics/${name}`, 'latin1').catch(() => 'NaN'));
}

export async function sampleHost(pifDevices: readonly string[]): Promise<HostSample> {
  const [stat, meminfo, loadavg] = await Promise.all([
    readFile('/proc/stat', 'latin1'),
    readFile('/proc/meminfo', 'latin1'),
    readFile('/proc/loadavg', 'latin1'),
  ]);
  const mem = parseMeminfo(meminfo);
  const pifs = await Promise.all(pifDevices.map(async (device) => {
    const [rxBytes, txBytes, rxErrors, txErrors] = await Promise.all(['rx_bytes', 'tx_bytes', 'rx_errors', 'tx_errors'].map((n) => counter(device, n)));
    return { device, rxBytes: rxBytes!, txBytes: txBytes!, rxErrors: rxErrors!, txErrors: txErrors! };
  }));
  return {
    cpuBusySeconds: parseProcStat(stat),
    memoryTotalKib: mem.totalKib,
    memoryFreeKib: mem.availableKib,
    loadavg: Number(loadavg.split(' ')[0]),
    pifs,
  };
}
