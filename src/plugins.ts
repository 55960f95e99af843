/** The subsystems a full daemon runs, in start order. */
import { join } from 'node:path';
import type { Plugin } from './server.ts';
import type { HypervisorBackend } from './xenops/backend.ts';
import { consoleConnect, consoleLog } from './messages/console.ts';
import { vmHandlers } from './messages/vm.ts';
import { Xenops } from './messages/xenops.ts';

export interface PluginOptions {
  backend: 'qemu' | 'sim';
  /** QEMU acceleration (default auto: KVM only where it really works). */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** How often VM metrics are sampled (ms). */
  metricsIntervalMs?: number;
}

async function makeBackend(o: PluginOptions, dataDir: string, log: (m: string) => void): Promise<HypervisorBackend> {
  if (o.backend === 'sim') {
    const { SimBackend } = await import('./xenops/sim/index.ts');
    return new SimBackend({ persistPath: join(dataDir, 'sim-domains.json'), runDir: join(dataDir, 'run', 'sim') });
  }
  const { QemuBackend } = await import('./xenops/qemu/index.ts');
  return new QemuBackend({ runDir: join(dataDir, 'run', 'qemu'), accel: o.accel ?? 'auto', log });
}

/** The domain manager: a hypervisor backend behind the VM messages and /console. */
export function xenopsPlugin(o: PluginOptions): Plugin {
  let xenops: Xenops | undefined;
  let timer: NodeJS.Timeout | undefined;
  return {
    name: 'xenops',
    handlers: { VM: vmHandlers },
    async start(services, routes) {
      const log = services.log.child({ subsystem: 'xenops' });
      const backend = await makeBackend(o, services.dataDir, (m) => log.debug(m));
      xenops = new Xenops(backend, services);
      services.ext.xenops = xenops;
      xenops.listen();
      const r = await xenops.reconcile();
      log.info({ backend: backend.name, ...r }, 'domains reconciled');
      routes.connect.set('/console', consoleConnect(services, xenops));
      routes.routes.set('/console', consoleLog(services, xenops));
      timer = setInterval(() => void xenops?.sampleMetrics(), o.metricsIntervalMs ?? 5000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await xenops?.close();
    },
  };
}

export function defaultPlugins(o: PluginOptions): Plugin[] {
  return [xenopsPlugin(o)];
}
