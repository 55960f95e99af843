/**
 * First start: a fresh database becomes a pool of one — this host, its CPUs
 * and metrics, the roles, the control domain with its console, and the
 * built-in templates. Later starts only refresh what the machine says.
 */
import { randomUUID } from 'node:crypto';
import { ROLE_LADDER } from '../datamodel/dsl.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import { HOST_MEMORY_OVERHEAD, type HostFacts } from '../host/facts.ts';
import { API_VERSION, softwareVersion } from '../host/software-version.ts';
import { BUILTIN_TEMPLATES, templateRecord } from './templates.ts';


export interface Identity {
  readonly pool: string;
  readonly host: string;
}

const ROLE_DESCRIPTIONS: Record<string, string> = {
  'pool-admin': 'The Pool Administrator role has full access to all features and settings.',
  'pool-operator': 'The Pool Operator role manages host- and pool-wide resources.',
  'vm-power-admin': 'The VM Power Administrator role has full access to VM and template management.',
  'vm-admin': 'The VM Administrator role can manage VMs and templates.',
  'vm-operator': 'The VM Operator role can use VMs and interact with their consoles.',
  'read-only': 'The Read-Only role can see resources but cannot change them.',
  'client-cert': 'Clients that authenticate with a certificate.',
};

/** `self`: this host's record when the role names it (a member that became master); else the first host's. */
export function firstStart(store: Store, facts: HostFacts, address: string, self?: string): Identity {
  const existing = self ?? store.refs('host')[0];
  if (existing) {
    refreshHost(store, existing, facts);
    return { host: existing, pool: store.refs('pool')[0] };
  }
  return store.transact((tx) => {
    const now = formatDateTime(new Date());
    for (const role of [...ROLE_LADDER, 'client-cert']) {
      tx.create('role', { name_label: role, name_description: ROLE_DESCRIPTIONS[role] ?? role, subroles: [], is_internal: false });
    }
    const metrics = tx.create('host_metrics', { memory_total: facts.memoryTotal, memory_free: facts.memoryFree, live: true, last_updated: now });
    const cpu0 = facts.cpus[0];
    const host = tx.create('host', {
      name_label: facts.hostname,
      name_description: 'Default install',
      hostname: facts.hostname,
      address,
      enabled: true,
      ...versionFields(facts),
      capabilities: ['hvm-3.0-x86_64'],
      cpu_info: {
        cpu_count: String(facts.cpus.length),
        socket_count: String(facts.sockets),
        vendor: cpu0?.vendor ?? '',
        modelname: cpu0?.modelname ?? '',
        family: String(cpu0?.family ?? 0),
        model: String(cpu0?.model ?? 0),
        stepping: cpu0?.stepping ?? '',
        speed: String(cpu0?.speedMHz ?? 0),
        flags: cpu0?.flags ?? '',
      },
      sched_policy: 'credit',
      supported_bootloaders: ['pygrub', 'eliloader'],
      metrics,
      edition: 'xenon',
      editions: ['xenon'],
      power_on_mode: '',
      iscsi_iqn: `iqn.2026-11.org.xenon:${randomUUID().slice(0, 8)}`,
      memory_overhead: HOST_MEMORY_OVERHEAD,
    });
    facts.cpus.forEach((c, number) =>
      tx.create('host_cpu', {
        host, number, vendor: c.vendor, speed: c.speedMHz, modelname: c.modelname, family: c.family, model: c.model,
        stepping: c.stepping, flags: c.flags, features: '', utilisation: 0,
      }),
    );
    const pool = tx.create('pool', { name_label: '', master: host, cpu_info: { cpu_count: String(facts.cpus.length), socket_count: String(facts.sockets), vendor: cpu0?.vendor ?? '' } });
    const dom0Metrics = tx.create('VM_metrics', { memory_actual: facts.memoryTotal, VCPUs_number: facts.cpus.length, start_time: now, install_time: now, state: [], last_updated: now });
    const dom0 = tx.create('VM', {
      name_label: `Control domain on host: ${facts.hostname}`,
      name_description: 'The domain which manages physical devices and manages other domains',
      is_control_domain: true,
      power_state: 'Running',
      resident_on: host,
      domid: 0,
      memory_static_max: facts.memoryTotal,
      memory_dynamic_max: facts.memoryTotal,
      memory_dynamic_min: facts.memoryTotal,
      memory_static_min: facts.memoryTotal,
      memory_target: facts.memoryTotal,
      VCPUs_max: facts.cpus.length,
      VCPUs_at_startup: facts.cpus.length,
      metrics: dom0Metrics,
      domain_type: 'pv',
      user_version: 1,
    });
    tx.update('host', host, { control_domain: dom0 });
    tx.create('console', { protocol: 'vt100', location: `https://${address}/console?ref=`, VM: dom0 });
    for (const t of BUILTIN_TEMPLATES) tx.create('VM', templateRecord(t));
    return { host, pool };
  });
}

/** What the host says about its versions (refreshed at every start: an upgrade changes them). */
function versionFields(facts: HostFacts): Record<string, unknown> {
  return {
    API_version_major: API_VERSION.major,
    API_version_minor: API_VERSION.minor,
    API_version_vendor: 'Xenon',
    software_version: softwareVersion(facts.hostname, 'qemu'),
  };
}

/** Keeps the host's records true to the machine on every start. */
function refreshHost(store: Store, host: string, facts: HostFacts): void {
  const rec = store.must('host', host);
  store.transact((tx) => {
    tx.update('host', host, { ...versionFields(facts), memory_overhead: HOST_MEMORY_OVERHEAD });
    if (store.get('host_metrics', rec.metrics as string)) {
      tx.update('host_metrics', rec.metrics as string, { memory_total: facts.memoryTotal, memory_free: facts.memoryFree, live: true, last_updated: formatDateTime(new Date()) });
    }
  });
}
