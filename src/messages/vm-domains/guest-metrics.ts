/**
 * VM_guest_metrics from guest agents: asking the agents of running VMs (in
 * parallel, bounded), and keeping each VM's record in step. A VM's guest
 * metrics outlive its halt, as in xapi: they are replaced when it next starts.
 */
import { formatDateTime, NULL_REF } from '../../datamodel/types.ts';
import type { DbRecord } from '../../db/store.ts';
import type { GuestInfo, HypervisorBackend } from '../../xenops/backend.ts';
import type { Services } from '../context.ts';
import { refreshAllowed } from '../vm-operations.ts';

/** How long one guest agent may take to answer. */
const GUEST_AGENT_TIMEOUT_MS = 3000;
/** Guest agent queries run in parallel, this many at a time. */
const GUEST_AGENT_PARALLEL = 16;
/** A guest whose agent never answered is asked at every metrics tick for this long after it started... */
const GUEST_AGENT_GRACE_MS = 120_000;
/** ...and then only this often (most guests run no agent). */
const GUEST_AGENT_BACKOFF_MS = 30_000;

/**
 * What a guest with a live agent can do, as xapi's guest agents report it in
 * VM_guest_metrics.other. A guest that runs an agent is a running OS, and the
 * OSes that run one obey the ACPI power button (Xenon's clean shutdown and
 * reboot) and come back from a suspend (QEMU saves the whole machine); see
 * vm-operations.ts. vCPU hot-plug is not claimed: it needs the guest to bring
 * new CPUs online, which an agent's presence does not show.
 */
const AGENT_FEATURES = { 'feature-shutdown': '1', 'feature-poweroff': '1', 'feature-reboot': '1', 'feature-suspend': '1' } as const;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/**
 * VM_guest_metrics fields from a guest agent's answer, keyed as xapi's guest
 * agent keys them: os_version {name, distro, major, minor, uname}, networks
 * "<vif device>/ip" (first IPv4), "<dev>/ipv4/<n>", "<dev>/ipv6/<n>" for each
 * guest interface whose MAC is one of the VM's VIFs (loopback and interfaces
 * without a VIF are not reported).
 */
export function guestMetricsFields(info: GuestInfo, vifDevices: Map<string, string>): Record<string, unknown> {
  const os: Record<string, string> = {};
  if (info.osName) os.name = info.osName;
  if (info.distro) os.distro = info.distro;
  const [major, minor] = info.osVersion.split('.');
  if (major) os.major = major;
  if (minor) os.minor = minor;
  if (info.kernel) os.uname = info.kernel;
  const networks: Record<string, string> = {};
  for (const nic of info.interfaces) {
    const dev = vifDevices.get(nic.mac.toLowerCase());
    if (dev === undefined) continue;
    if (nic.ipv4[0]) networks[`${dev}/ip`] = nic.ipv4[0];
    nic.ipv4.forEach((a, i) => (networks[`${dev}/ipv4/${i}`] = a));
    nic.ipv6.forEach((a, i) => (networks[`${dev}/ipv6/${i}`] = a));
  }
  const version: Record<string, string> = {};
  const v = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(info.agentVersion);
  if (v) { version.major = v[1]!; version.minor = v[2]!; if (v[3]) version.micro = v[3]; }
  const other: Record<string, string> = { ...AGENT_FEATURES };
  if (info.hostname) other.hostname = info.hostname;
  if (info.agentVersion) other['agent-version'] = info.agentVersion;
  return { os_version: os, networks, PV_drivers_version: version, other, PV_drivers_detected: true, PV_drivers_up_to_date: true, live: true };
}

interface AgentState { domid: string; inFlight: boolean; failedSince?: number; nextAt: number }

export class GuestMetrics {
  /** Per running VM: guest agent bookkeeping (boot identity = domid). */
  private readonly seen = new Map<string, AgentState>();

  constructor(
    private readonly backend: HypervisorBackend,
    private readonly services: Services,
  ) {}

  /**
   * Asks the guest agents of these running VMs and keeps VM_guest_metrics in
   * step. A guest without an agent is retried at every tick for a while after
   * boot, then every GUEST_AGENT_BACKOFF_MS; a VM whose previous query still
   * runs is skipped.
   */
  async sample(running: [string, DbRecord][]): Promise<void> {
    const backend = this.backend;
    if (!backend.guestInfo) return;
    const now = Date.now();
    const live = new Set(running.map(([ref]) => ref));
    for (const ref of [...this.seen.keys()]) if (!live.has(ref)) this.seen.delete(ref);
    const due: [string, DbRecord][] = [];
    for (const [ref, vm] of running) {
      let st = this.seen.get(ref);
      if (!st || st.domid !== String(vm.domid)) {
        st = { domid: String(vm.domid), inFlight: st?.inFlight ?? false, nextAt: 0 };
        this.seen.set(ref, st);
      }
      if (!st.inFlight && st.nextAt <= now) due.push([ref, vm]);
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < due.length) {
        const [ref, vm] = due[next++]!;
        await this.ask(ref, vm, this.seen.get(ref)!);
      }
    };
    await Promise.all(Array.from({ length: Math.min(GUEST_AGENT_PARALLEL, due.length) }, worker));
  }

  private async ask(ref: string, vm: DbRecord, st: AgentState): Promise<void> {
    st.inFlight = true;
    try {
      const info = await this.backend.guestInfo!(String(vm.uuid), GUEST_AGENT_TIMEOUT_MS).catch(() => undefined);
      const t = Date.now();
      if (info) {
        st.failedSince = undefined;
        st.nextAt = 0;
      } else {
        st.failedSince ??= t;
        st.nextAt = t - st.failedSince < GUEST_AGENT_GRACE_MS ? 0 : t + GUEST_AGENT_BACKOFF_MS;
      }
      this.record(ref, info);
    } catch (err) {
      this.services.log.warn({ err, vm: vm.uuid }, 'recording guest metrics failed');
    } finally {
      st.inFlight = false;
    }
  }

  /** Creates/updates the VM's VM_guest_metrics from an agent's answer (none: live = false if it had answered). */
  private record(ref: string, info: GuestInfo | undefined): void {
    const { store } = this.services;
    const vm = store.get('VM', ref);
    if (!vm || vm.power_state !== 'Running') return;
    const gmRef = String(vm.guest_metrics);
    const gm = gmRef !== NULL_REF ? store.get('VM_guest_metrics', gmRef) : undefined;
    if (!info) {
      if (gm && gm.live === true) this.update(ref, gmRef, { live: false });
      return;
    }
    const fields = guestMetricsFields(info, vifDevicesByMac(this.services, vm));
    if (gm) {
      const changed = Object.entries(fields).some(([k, v]) => JSON.stringify(Object.entries(gm).find(([g]) => g === k)?.[1]) !== JSON.stringify(v));
      if (changed) this.update(ref, gmRef, fields);
      return;
    }
    store.transact((tx) => {
      const created = tx.create('VM_guest_metrics', { ...fields, last_updated: formatDateTime(new Date()), other_config: {} });
      tx.update('VM', ref, { guest_metrics: created });
    });
    refreshAllowed(this.services, ref);
  }

  private update(vm: string, gm: string, fields: Record<string, unknown>): void {
    this.services.store.transact((tx) => tx.update('VM_guest_metrics', gm, { ...fields, last_updated: formatDateTime(new Date()) }));
    refreshAllowed(this.services, vm);
  }
}

/** VIF device number per MAC (lower case) of a VM's VIFs. */
function vifDevicesByMac(services: Services, vm: DbRecord): Map<string, string> {
  const m = new Map<string, string>();
  for (const vifRef of vm.VIFs as string[]) {
    const vif = services.store.get('VIF', vifRef);
    if (vif && str(vif.MAC)) m.set(str(vif.MAC).toLowerCase(), str(vif.device));
  }
  return m;
}
