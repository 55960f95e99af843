/** What this machine is: CPUs, memory, names — read from the OS for the host's records. */
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Memory the host keeps back for itself (its host.memory_overhead): the toolstack, QEMU's own needs, the OS. */
export const HOST_MEMORY_OVERHEAD = 512 * 1024 * 1024;

export interface CpuFacts {
  vendor: string;
  modelname: string;
  family: number;
  model: number;
  stepping: string;
  flags: string;
  speedMHz: number;
}

export interface HostFacts {
  hostname: string;
  cpus: CpuFacts[];
  sockets: number;
  memoryTotal: number;
  memoryFree: number;
}

function parseCpuinfo(text: string): { cpus: CpuFacts[]; sockets: number } {
  const blocks = text.split(/\n\s*\n/).filter((b) => b.includes('processor'));
  const sockets = new Set<string>();
  const cpus = blocks.map((b) => {
    const kv = new Map<string, string>();
    for (const line of b.split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) kv.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
    }
    sockets.add(kv.get('physical id') ?? '0');
    return {
      vendor: kv.get('vendor_id') ?? 'unknown',
      modelname: kv.get('model name') ?? 'unknown',
      family: Number(kv.get('cpu family') ?? 0),
      model: Number(kv.get('model') ?? 0),
      stepping: kv.get('stepping') ?? '',
      flags: kv.get('flags') ?? '',
      speedMHz: Math.round(Number(kv.get('cpu MHz') ?? 0)),
    };
  });
  return { cpus, sockets: Math.max(1, sockets.size) };
}

export function readHostFacts(): HostFacts {
  let parsed: { cpus: CpuFacts[]; sockets: number };
  try {
    parsed = parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    parsed = { cpus: [], sockets: 1 };
  }
  if (parsed.cpus.length === 0) {
    parsed.cpus = os.cpus().map((c) => ({ vendor: 'unknown', modelname: c.model, family: 0, model: 0, stepping: '', flags: '', speedMHz: c.speed }));
  }
  return { hostname: os.hostname(), ...parsed, memoryTotal: os.totalmem(), memoryFree: os.freemem() };
}
