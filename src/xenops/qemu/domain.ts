/** A QEMU domain as the backend keeps it: its persisted record, run state, taps, and the checks on re-adoption. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { DomainConfig, GuestInfo, NicConfig, PowerState } from '../backend.ts';
import { DOMAIN_FILES, type Accel } from './args.ts';
import { ip, pidArgv } from './proc.ts';
import type { QmpClient } from './qmp.ts';

/** What is persisted in config.json next to a running domain. */
export interface Persisted {
  config: DomainConfig;
  pid: number;
  startedAt: number;
  accel: Accel;
  /** Taps this backend created (bridge NICs), by NIC id. */
  createdTaps: Record<string, string>;
}

export interface Dom {
  uuid: string;
  dir: string;
  p: Persisted;
  qmp?: QmpClient;
  state: PowerState;
  status: string;
  reason?: string;
  /** >0 while a backend operation runs: guest events are not reported. */
  busy: number;
  /** Set when we asked the process to go away. */
  exiting: boolean;
  /** A guest agent query in flight (the agent socket takes one client at a time). */
  qga?: Promise<GuestInfo | undefined>;
  /** Thread id of each vCPU (by index), learnt from QMP once for metrics. */
  vcpuThreads?: number[];
}

/** Map a QMP run state to a PowerState. */
export function powerStateOf(status: string): { state: PowerState; reason?: string } {
  switch (status) {
    case 'running': return { state: 'running' };
    case 'shutdown': return { state: 'shutdown' };
    case 'guest-panicked': return { state: 'crashed', reason: 'panic' };
    case 'internal-error': return { state: 'crashed', reason: 'internal-error' };
    case 'inmigrate': return { state: 'resuming' };
    case 'finish-migrate': case 'postmigrate': return { state: 'suspending' };
    default: return { state: 'paused' }; // paused, prelaunch, io-error, debug, suspended, ...
  }
}

function tapName(uuid: string, device: string): string {
  return `xn${uuid.replace(/-/g, '').slice(0, 8)}.${device}`.slice(0, 15);
}

export async function createTap(uuid: string, nic: NicConfig): Promise<string> {
  const name = tapName(uuid, nic.device);
  await ip(['link', 'del', name]).catch(() => {});
  await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  if (nic.mtu) await ip(['link', 'set', name, 'mtu', String(nic.mtu)]);
  await ip(['link', 'set', name, 'master', nic.bridge!]);
  await ip(['link', 'set', name, 'up']);
  return name;
}

export async function readPersisted(dir: string): Promise<Persisted | undefined> {
  try { return JSON.parse(await readFile(path.join(dir, DOMAIN_FILES.config), 'utf8')) as Persisted; } catch { return undefined; }
}

/** Guard against pid reuse: the process must be a QEMU started for this uuid. */
export function ownsPid(pid: number, uuid: string): boolean {
  const argv = pidArgv(pid);
  const i = argv.indexOf('-uuid');
  return i >= 0 && argv[i + 1] === uuid;
}

export function shellQuote(s: string): string { return `'${s.replace(/'/g, `'\\''`)}'`; }
