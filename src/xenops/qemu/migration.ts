/**
 * Live migration between device models: the receiving QEMU listens on a TCP
 * port of its host's address (`-incoming tcp:…`), the sending one runs QMP
 * `migrate` while the guest runs and is polled until done. QEMU's defaults
 * stand (pre-copy, its downtime limit); a failed migration leaves the sender
 * running, as QEMU does.
 */
import net from 'node:net';
import type { MigrationStats } from '../backend.ts';
import { OperationTimeout } from '../backend.ts';
import type { QmpClient } from './qmp.ts';
import { sleep } from './proc.ts';

/** How long one migration may take before it is cancelled. */
export const MIGRATION_TIMEOUT_MS = 600_000;

/** A TCP port free now on `address` (bound and released: QEMU binds it right after). */
export function freePortOn(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, address, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export const tcpUri = (address: string, port: number): string => `tcp:${address.includes(':') ? `[${address}]` : address}:${port}`;

interface MigrateStatus {
  status?: string;
  'error-desc'?: string;
  'total-time'?: number;
  downtime?: number;
  ram?: { transferred?: number };
}

/** Sends the domain's state to `uri` and waits for QEMU to say it is done. */
export async function sendState(uuid: string, qmp: QmpClient, uri: string): Promise<MigrationStats> {
  await qmp.execute('migrate', { uri });
  const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
  for (;;) {
    const m = await qmp.execute<MigrateStatus>('query-migrate');
    if (m.status === 'completed') {
      return { totalMs: m['total-time'] ?? 0, downtimeMs: m.downtime ?? 0, transferredBytes: m.ram?.transferred ?? 0 };
    }
    if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`migration of ${uuid} failed: ${m['error-desc'] ?? m.status}`);
    if (Date.now() > deadline) {
      await qmp.execute('migrate_cancel').catch(() => undefined);
      throw new OperationTimeout(uuid, 'migrate', MIGRATION_TIMEOUT_MS);
    }
    await sleep(10);
  }
}
