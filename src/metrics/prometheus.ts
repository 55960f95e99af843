/**
 * GET /metrics: the figures of /rrd_updates (each recorded source's newest
 * 5-second average) in Prometheus' text format, through prom-client. Data
 * source names map to metric families by a table; a source no row names is
 * still exported, as `xenon_data_source{kind,uuid,name}`.
 *
 * Authentication as the other handlers (session_id or its cookie), or HTTP
 * basic credentials, which log in (throttled like any login) for the one
 * request.
 */
import type http from 'node:http';
import type { Gauge, Registry } from 'prom-client';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from '../messages/context.ts';
import { authorize } from '../messages/http-handlers.ts';
import type { Metrics, Owner } from './service.ts';

interface Family {
  readonly kind: Owner['kind'];
  readonly match: RegExp;
  readonly metric: string;
  readonly help: string;
  /** Label name for the first capture group (a CPU, a device). */
  readonly label?: string;
  readonly scale?: number;
}

const FAMILIES: readonly Family[] = [
  { kind: 'host', match: /^cpu(\d+)$/, metric: 'xenon_host_cpu_usage_ratio', help: 'Use of a physical CPU (0..1)', label: 'cpu' },
  { kind: 'host', match: /^cpu_avg$/, metric: 'xenon_host_cpu_average_usage_ratio', help: 'Average use of the physical CPUs (0..1)' },
  { kind: 'host', match: /^memory_total_kib$/, metric: 'xenon_host_memory_total_bytes', help: 'Memory of the host', scale: 1024 },
  { kind: 'host', match: /^memory_free_kib$/, metric: 'xenon_host_memory_free_bytes', help: 'Memory of the host still available', scale: 1024 },
  { kind: 'host', match: /^loadavg$/, metric: 'xenon_host_load1', help: 'Load average of the host over one minute' },
  { kind: 'host', match: /^pif_(.+)_rx$/, metric: 'xenon_host_network_receive_bytes_per_second', help: 'Bytes received per second on a physical interface', label: 'device' },
  { kind: 'host', match: /^pif_(.+)_tx$/, metric: 'xenon_host_network_transmit_bytes_per_second', help: 'Bytes sent per second on a physical interface', label: 'device' },
  { kind: 'vm', match: /^cpu(\d+)$/, metric: 'xenon_vm_vcpu_usage_ratio', help: 'Use of a virtual CPU (0..1)', label: 'vcpu' },
  { kind: 'vm', match: /^memory$/, metric: 'xenon_vm_memory_bytes', help: 'Memory allocated to the VM' },
  { kind: 'vm', match: /^memory_target$/, metric: 'xenon_vm_memory_target_bytes', help: 'Memory target of the VM' },
  { kind: 'vm', match: /^memory_internal_free$/, metric: 'xenon_vm_memory_free_bytes', help: 'Memory free as the guest reports it', scale: 1024 },
  { kind: 'vm', match: /^vbd_(.+)_read$/, metric: 'xenon_vm_disk_read_bytes_per_second', help: 'Bytes read per second from a virtual disk', label: 'device' },
  { kind: 'vm', match: /^vbd_(.+)_write$/, metric: 'xenon_vm_disk_write_bytes_per_second', help: 'Bytes written per second to a virtual disk', label: 'device' },
  { kind: 'vm', match: /^vbd_(.+)_iops_read$/, metric: 'xenon_vm_disk_read_requests_per_second', help: 'Read requests per second on a virtual disk', label: 'device' },
  { kind: 'vm', match: /^vbd_(.+)_iops_write$/, metric: 'xenon_vm_disk_write_requests_per_second', help: 'Write requests per second on a virtual disk', label: 'device' },
  { kind: 'vm', match: /^vif_(.+)_rx$/, metric: 'xenon_vm_network_receive_bytes_per_second', help: 'Bytes the VM received per second on a virtual interface', label: 'device' },
  { kind: 'vm', match: /^vif_(.+)_tx$/, metric: 'xenon_vm_network_transmit_bytes_per_second', help: 'Bytes the VM sent per second on a virtual interface', label: 'device' },
];

type Prom = typeof import('prom-client');

/** The registry, built on the first scrape (prom-client is loaded then, not at daemon start). */
export class PrometheusExport {
  private registry?: Promise<Registry>;

  constructor(private readonly services: Services, private readonly metrics: Metrics) {}

  private build(prom: Prom): Registry {
    const registry = new prom.Registry();
    const step = this.metrics.step;
    const gauges = new Map<string, Gauge>();
    const gauge = (name: string, help: string, labels: string[]): Gauge => {
      let g = gauges.get(name);
      if (!g) gauges.set(name, (g = new prom.Gauge({ name, help, labelNames: labels, registers: [registry] })));
      return g;
    };
    // registered first, so its collect refills every other gauge before they are written
    new prom.Gauge({ name: 'xenon_metrics_step_seconds', help: 'Collection step of the RRDs', registers: [registry], collect() { refill(); this.set(step); } });
    for (const f of FAMILIES) gauge(f.metric, f.help, f.kind === 'host' ? ['host', ...(f.label ? [f.label] : [])] : ['vm', 'name', ...(f.label ? [f.label] : [])]);
    const other = gauge('xenon_data_source', 'Any other recorded data source, by owner and name, in its units', ['kind', 'uuid', 'name', 'units']);
    // one collect for all: every gauge is refilled from the RRDs at scrape time
    const refill = (): void => {
      for (const g of gauges.values()) g.reset();
      const names = new Map<string, string>();
      for (const [, vm] of this.services.store.where('VM', (v) => !v.is_control_domain && v.power_state !== 'Halted')) names.set(String(vm.uuid), String(vm.name_label));
      for (const { owner, def, value } of this.metrics.latestValues()) {
        const family = FAMILIES.find((f) => f.kind === owner.kind && f.match.test(def.name));
        if (!family) {
          other.set({ kind: owner.kind, uuid: owner.uuid, name: def.name, units: def.units }, value);
          continue;
        }
        const m = family.match.exec(def.name)!;
        const labels: Record<string, string> = owner.kind === 'host' ? { host: owner.uuid } : { vm: owner.uuid, name: names.get(owner.uuid) ?? '' };
        if (family.label) labels[family.label] = m[1]!;
        gauge(family.metric, family.help, []).set(labels, value * (family.scale ?? 1));
      }
    };
    prom.collectDefaultMetrics({ register: registry, prefix: 'xenon_' });
    return registry;
  }

  async text(): Promise<{ type: string; body: string }> {
    this.registry ??= import('prom-client').then((prom) => this.build(prom));
    const registry = await this.registry;
    return { type: registry.contentType, body: await registry.metrics() };
  }
}

/** `Authorization: Basic` credentials, when given. */
function basicCredentials(req: http.IncomingMessage): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]{1,1024})$/i.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon < 0 ? undefined : { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** GET /metrics */
export function metricsHandler(services: Services, exporter: PrometheusExport) {
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> => {
    const basic = url.searchParams.has('session_id') || /(?:^|;\s*)session_id=/.test(req.headers.cookie ?? '') ? undefined : basicCredentials(req);
    let own: string | undefined;
    try {
      if (basic) own = await services.sessions.login(basic.user, basic.password, 'prometheus', { address: req.socket.remoteAddress ?? '', localRoot: false });
      authorize(services, req, url, own);
      const { type, body } = await exporter.text();
      res.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    } catch (e) {
      // a scraper without credentials is told how to give them
      if (e instanceof XenApiError && (e.code === 'SESSION_INVALID' || e.code === 'SESSION_AUTHENTICATION_FAILED') && !res.headersSent) res.setHeader('WWW-Authenticate', 'Basic realm="xenon"');
      throw e;
    } finally {
      if (own) services.sessions.logout(own);
    }
  };
}
