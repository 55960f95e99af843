/** The subsystems a full daemon runs, in start order. */
import { basename, join } from 'node:path';
import { httpActionPath } from './datamodel/http-actions.ts';
import type { Plugin } from './server.ts';
import type { HypervisorBackend } from './xenops/backend.ts';
import { consoleConnect, consoleLog } from './messages/console.ts';
import { Storage } from './messages/sr-drivers.ts';
import { ensureLocalSr, ensureSmRecords } from './messages/storage-setup.ts';
import { exportRawVdi, importRawVdi } from './messages/vdi-http.ts';
import { exportVm, importVm } from './messages/vm-xva.ts';
import { Networking } from './messages/network-bridges.ts';
import { createNetworkBackend } from './network/index.ts';
import { claimNetworkNamespace } from './network/claim.ts';
import { Runner } from './network/exec.ts';
import { Xenops } from './messages/vm-domains/index.ts';
import { consoleSockets, type ConsoleSockets } from './web/console-socket.ts';
import { Metrics } from './metrics/service.ts';
import { hostRrd, rrdUpdates, vmRrd } from './metrics/http.ts';
import { poolPlugin } from './pool/index.ts';
import { haPlugin } from './ha/plugin.ts';
import { metricsHandler, PrometheusExport } from './metrics/prometheus.ts';

export interface PluginOptions {
  backend: 'qemu' | 'sim';
  /** The simulator serves consoles (a ticking serial console and a VNC greeting per domain), labelled with the data directory's name. */
  simConsoles?: boolean;
  /** QEMU acceleration (default auto: KVM only where it really works). */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** How often VM metrics are sampled (ms). */
  metricsIntervalMs?: number;
  /** How often the storage collector looks for chains to coalesce (ms). */
  gcIntervalMs?: number;
  /** Network backend (default: OVS when installed, else Linux bridges); 'none' runs no networking. */
  network?: 'ovs' | 'bridge' | 'none';
  /** Put the host's NICs into their networks' bridges (takes over the host's links: for dedicated hosts and test namespaces). */
  attachUplinks?: boolean;
}

/** Networking: bridges for networks, taps for VIFs, VLANs and bonds, reconciled at start. */
export function networkPlugin(o: { network?: 'ovs' | 'bridge'; attachUplinks?: boolean; metricsIntervalMs?: number } = {}): Plugin {
  let networking: Networking | undefined;
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'network',
    async start(services) {
      const log = services.log.child({ subsystem: 'network' });
      // refuse early, with a message that says what to do, if another data directory networks here
      await claimNetworkNamespace(services.dataDir, new Runner());
      const backend = createNetworkBackend({ dataDir: services.dataDir, prefer: o.network, log: (m) => log.debug(m) });
      await backend.start();
      networking = new Networking(backend, services, o.attachUplinks ?? false);
      services.networking = networking;
      services.nics = networking;
      // a pool member's records are the master's to write
      if (services.member) return;
      await networking.introduceNics();
      const seen = await networking.recordAddresses().catch((err: unknown) => (log.warn({ err }, 'reading the host\'s addresses failed'), []));
      const r = await networking.reconcile();
      log.info({ backend: backend.kind, ...r, addressesRecorded: seen.length }, 'network reconciled');
      timer = setInterval(() => void networking?.sampleMetrics().catch(() => undefined), o.metricsIntervalMs ?? 5000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      // the switch keeps forwarding for running guests while the toolstack is away
      await networking?.backend.detach();
    },
  };
}

/** Storage: SR drivers behind SR/PBD/VDI/VBD, disk snapshots and copies, raw VDI import/export. */
export function storagePlugin(o: Pick<PluginOptions, 'gcIntervalMs'> = {}): Plugin {
  let storage: Storage | undefined;
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'storage',
    async start(services, routes) {
      storage = new Storage(services);
      services.storage = storage;
      if (!services.member) {
        ensureSmRecords(services);
        await ensureLocalSr(services, storage);
      }
      const dataPaths = [
        [httpActionPath('put_import_raw_vdi'), importRawVdi(services, storage)],
        [httpActionPath('get_export_raw_vdi'), exportRawVdi(services, storage)],
        [httpActionPath('get_export'), exportVm(services, storage)],
        [httpActionPath('put_import'), importVm(services, storage)],
      ] as const;
      // Xen Orchestra asks for them with a trailing slash (/import_raw_vdi/), xapi answers both
      for (const [path, handler] of dataPaths) for (const p of [path, `${path}/`]) routes.routes.set(p, handler);
      let running = false;
      timer = setInterval(() => {
        if (running || services.store.isReplica) return;
        running = true;
        storage!.collect().catch((err: unknown) => services.log.warn({ err }, 'storage collector failed')).finally(() => (running = false));
      }, o.gcIntervalMs ?? 30_000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await storage?.close();
    },
  };
}

async function makeBackend(o: PluginOptions, dataDir: string, log: (m: string) => void): Promise<HypervisorBackend> {
  if (o.backend === 'sim') {
    const { SimBackend } = await import('./xenops/sim/index.ts');
    const consoles = o.simConsoles ? { label: basename(dataDir) } : undefined;
    return new SimBackend({ persistPath: join(dataDir, 'sim-domains.json'), runDir: join(dataDir, 'run', 'sim'), consoles });
  }
  const { QemuBackend } = await import('./xenops/qemu/index.ts');
  return new QemuBackend({ runDir: join(dataDir, 'run', 'qemu'), accel: o.accel ?? 'auto', log });
}

/** The domain manager: a hypervisor backend behind the VM messages and /console. */
export function xenopsPlugin(o: PluginOptions): Plugin {
  let xenops: Xenops | undefined;
  let timer: NodeJS.Timeout | undefined;
  let sockets: ConsoleSockets | undefined;
  return {
    name: 'xenops',
    async start(services, routes) {
      const log = services.log.child({ subsystem: 'xenops' });
      const backend = await makeBackend(o, services.dataDir, (m) => log.debug(m));
      xenops = new Xenops(backend, services);
      services.xenops = xenops;
      routes.connect.set(httpActionPath('connect_console'), consoleConnect(services, xenops));
      routes.routes.set(httpActionPath('connect_console_ws'), consoleLog(services, xenops));
      // the same path with Upgrade: websocket is the console for browsers (noVNC, xterm)
      sockets = consoleSockets(services, xenops);
      routes.upgrade?.set(httpActionPath('connect_console_ws'), sockets.handler);
      // on a pool member the master keeps the records of these domains
      if (services.member) return;
      xenops.listen();
      const r = await xenops.reconcile();
      log.info({ backend: backend.name, ...r }, 'domains reconciled');
      timer = setInterval(() => void xenops?.sampleMetrics(), o.metricsIntervalMs ?? 5000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      sockets?.close();
      await xenops?.close();
    },
  };
}

/** Metrics: RRDs fed every step from the host and the domain manager's backend; /rrd_updates, /host_rrd, /vm_rrd, /metrics. Starts after xenops. */
export function metricsPlugin(o: { stepS?: number; intervalMs?: number } = {}): Plugin {
  let metrics: Metrics | undefined;
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'metrics',
    async start(services, routes) {
      metrics = new Metrics(services, () => services.xenops?.backend, { stepS: o.stepS });
      await metrics.start();
      services.metrics = metrics;
      routes.routes.set(httpActionPath('get_rrd_updates'), rrdUpdates(services, metrics));
      routes.routes.set(httpActionPath('get_host_rrd'), hostRrd(services, metrics));
      routes.routes.set(httpActionPath('get_vm_rrd'), vmRrd(services, metrics));
      routes.routes.set(httpActionPath('get_metrics'), metricsHandler(services, new PrometheusExport(services, metrics)));
      const m = metrics;
      // on a pool member the RRDs are kept all the same; its records are the master's to write (metrics/service.ts)
      const tick = (): void => void m.collect().catch((err: unknown) => services.log.warn({ err }, 'metrics collection failed'));
      tick();
      timer = setInterval(tick, o.intervalMs ?? (o.stepS ?? 5) * 1000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await metrics?.stop();
    },
  };
}

export function defaultPlugins(o: PluginOptions): Plugin[] {
  const network = o.network === 'none' ? [] : [networkPlugin({ ...o, network: o.network })];
  return [poolPlugin(), storagePlugin(o), ...network, xenopsPlugin(o), metricsPlugin(), haPlugin()];
}
