/**
 * The data sources, named and measured as xapi's: host `cpu<i>`, `cpu_avg`,
 * `memory_total_kib`, `memory_free_kib`, `loadavg`, `pif_<dev>_rx|tx`,
 * `pif_aggr_rx|tx`; VM `cpu<i>`, `memory`, `memory_target`,
 * `memory_internal_free`, `vbd_<xvdX>_read|write`, `vbd_<xvdX>_iops_read|write|total`,
 * `vif_<n>_rx|tx`. CPU is a fraction of one core or vCPU (0..1), memory in
 * bytes except the `_kib` sources and `memory_internal_free` (KiB, as xapi),
 * derive sources are per second. A reading pairs a definition with its raw
 * value (a counter for derive sources).
 */
import type { DomainCounters } from '../xenops/backend.ts';
import type { DsSpec, DsType } from './rrd.ts';

export interface DsDef extends DsSpec {
  readonly units: string;
  readonly description: string;
  /** Recorded without being asked (xapi's "default"); others wait for record_data_source. */
  readonly standard: boolean;
}

export interface Reading { readonly def: DsDef; readonly value: number }

/** Definitions made once (a step reads thousands of sources), by name and description: host and VM both have a `cpu0`. */
const DEFS = new Map<string, DsDef>();

function def(name: string, type: DsType, units: string, description: string, o: { min?: number; max?: number; standard?: boolean } = {}): DsDef {
  const key = `${name}\n${description}`;
  let d = DEFS.get(key);
  if (!d) DEFS.set(key, (d = Object.freeze({ name, type, units, description, min: o.min ?? 0, max: o.max ?? Infinity, standard: o.standard ?? true })));
  return d;
}

const read = (d: DsDef, value: number): Reading => ({ def: d, value });

export interface HostSample {
  /** Busy seconds of each core (all but idle and iowait). */
  cpuBusySeconds: number[];
  memoryTotalKib: number;
  memoryFreeKib: number;
  loadavg: number;
  pifs: { device: string; rxBytes: number; txBytes: number; rxErrors: number; txErrors: number }[];
}

export function hostReadings(s: HostSample): Reading[] {
  const out: Reading[] = s.cpuBusySeconds.map((sec, i) => read(def(`cpu${i}`, 'derive', '(fraction)', `Use of physical CPU ${i}`, { max: 1 }), sec));
  if (s.cpuBusySeconds.length) {
    const avg = s.cpuBusySeconds.reduce((a, b) => a + b, 0) / s.cpuBusySeconds.length;
    out.push(read(def('cpu_avg', 'derive', '(fraction)', 'Average use of the physical CPUs', { max: 1 }), avg));
  }
  out.push(read(def('memory_total_kib', 'gauge', 'KiB', 'Memory of the host'), s.memoryTotalKib));
  out.push(read(def('memory_free_kib', 'gauge', 'KiB', 'Memory of the host still available'), s.memoryFreeKib));
  out.push(read(def('loadavg', 'gauge', '(fraction)', 'Load average of the host (one minute)'), s.loadavg));
  let rx = 0;
  let tx = 0;
  for (const p of s.pifs) {
    const name = `pif_${p.device}`;
    out.push(read(def(`${name}_rx`, 'derive', 'B/s', `Bytes per second received on physical interface ${p.device}`), p.rxBytes));
    out.push(read(def(`${name}_tx`, 'derive', 'B/s', `Bytes per second sent on physical interface ${p.device}`), p.txBytes));
    out.push(read(def(`${name}_rx_errors`, 'derive', 'err/s', `Receive errors per second on physical interface ${p.device}`, { standard: false }), p.rxErrors));
    out.push(read(def(`${name}_tx_errors`, 'derive', 'err/s', `Transmit errors per second on physical interface ${p.device}`, { standard: false }), p.txErrors));
    rx += p.rxBytes;
    tx += p.txBytes;
  }
  out.push(read(def('pif_aggr_rx', 'derive', 'B/s', 'Bytes per second received on all physical interfaces'), rx));
  out.push(read(def('pif_aggr_tx', 'derive', 'B/s', 'Bytes per second sent on all physical interfaces'), tx));
  return out;
}

/** xapi's name for a disk: `xvd` and a letter from its userdevice (0 = xvda … 25 = xvdz, then xvdaa …). */
export function diskName(userdevice: string): string {
  let n = Number(userdevice);
  if (!Number.isInteger(n) || n < 0) return userdevice.replace(/[^A-Za-z0-9]/g, '');
  let letters = '';
  do {
    letters = String.fromCharCode(97 + (n % 26)) + letters;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `xvd${letters}`;
}

export function vmReadings(c: DomainCounters): Reading[] {
  const out: Reading[] = c.vcpuSeconds.map((sec, i) => read(def(`cpu${i}`, 'derive', '(fraction)', `Use of virtual CPU ${i}`, { max: 1 }), sec));
  out.push(read(def('memory', 'gauge', 'B', 'Memory currently allocated to the VM'), c.memoryBytes));
  out.push(read(def('memory_target', 'gauge', 'B', 'Memory target of the VM'), c.memoryBytes));
  if (c.memoryFreeBytes !== undefined) out.push(read(def('memory_internal_free', 'gauge', 'KiB', 'Memory free as the guest reports it'), c.memoryFreeBytes / 1024));
  for (const d of c.disks) {
    const name = `vbd_${diskName(d.device)}`;
    out.push(read(def(`${name}_read`, 'derive', 'B/s', `Reads from device ${diskName(d.device)} in bytes per second`), d.readBytes));
    out.push(read(def(`${name}_write`, 'derive', 'B/s', `Writes to device ${diskName(d.device)} in bytes per second`), d.writeBytes));
    out.push(read(def(`${name}_iops_read`, 'derive', 'requests/s', `Read requests per second on device ${diskName(d.device)}`), d.readOps));
    out.push(read(def(`${name}_iops_write`, 'derive', 'requests/s', `Write requests per second on device ${diskName(d.device)}`), d.writeOps));
    out.push(read(def(`${name}_iops_total`, 'derive', 'requests/s', `I/O requests per second on device ${diskName(d.device)}`), d.readOps + d.writeOps));
  }
  for (const n of c.nics) {
    const name = `vif_${n.device}`;
    out.push(read(def(`${name}_rx`, 'derive', 'B/s', `Bytes per second received on virtual interface ${n.device}`), n.rxBytes));
    out.push(read(def(`${name}_tx`, 'derive', 'B/s', `Bytes per second sent on virtual interface ${n.device}`), n.txBytes));
    out.push(read(def(`${name}_rx_errors`, 'derive', 'err/s', `Receive errors per second on virtual interface ${n.device}`, { standard: false }), n.rxErrors));
    out.push(read(def(`${name}_tx_errors`, 'derive', 'err/s', `Transmit errors per second on virtual interface ${n.device}`, { standard: false }), n.txErrors));
  }
  return out;
}
