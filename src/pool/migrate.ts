/**
 * VM.pool_migrate, the moving part: the destination builds the domain
 * (attaching the disks and NICs there) and waits for its state; the source
 * device model sends it while the guest runs (QEMU's pre-copy); once it has
 * arrived the source lets go of its devices and the master records the VM
 * resident on the destination. A failure before the switch leaves the guest
 * running where it was and the destination cleaned up.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import type { XenopsService } from '../messages/context.ts';
import type { MigrationStats } from '../xenops/backend.ts';

export interface Ends {
  readonly source: XenopsService;
  readonly sourceHost: string;
  readonly destination: XenopsService;
  readonly destinationHost: string;
}

/**
 * VHD chains reach QEMU through an NBD export of the host that attaches them,
 * which reads the chain's metadata once: a destination that opened it while
 * the source still allocates blocks would serve stale metadata. Until the
 * export can hand over, such disks refuse to move live; qcow2 and raw images,
 * which QEMU opens itself (and hands over at the switch), move.
 */
function assertDisksCanMove(store: Store, vm: string, ends: Ends): void {
  for (const vbd of store.must('VM', vm).VBDs) {
    const rec = store.get('VBD', vbd);
    if (!rec || rec.empty || rec.VDI === NULL_REF) continue;
    const vdi = store.get('VDI', rec.VDI);
    if (vdi && vdi.sm_config.vdi_type === 'vhd') {
      throw new XenApiError('VM_MIGRATE_FAILED', vm, ends.sourceHost, ends.destinationHost, `VDI ${vdi.uuid} is a VHD chain served over NBD: live migration of those is not supported yet (qcow2 disks move)`);
    }
  }
}

export async function liveMigrate(store: Store, vm: string, ends: Ends): Promise<MigrationStats> {
  const { source, destination } = ends;
  const uuid = store.must('VM', vm).uuid;
  const failed = (e: unknown): XenApiError =>
    new XenApiError('VM_MIGRATE_FAILED', vm, ends.sourceHost, ends.destinationHost, e instanceof Error ? e.message : String(e));
  const receive = destination.backend;
  if (!receive.prepareIncoming || !receive.finishIncoming || !source.backend.migrateOut) {
    throw new XenApiError('NOT_IMPLEMENTED', 'live migration with this hypervisor backend');
  }
  assertDisksCanMove(store, vm, ends);
  const address = store.must('host', ends.destinationHost).address;
  let uri: string;
  try {
    const cfg = await destination.domainConfig(vm);
    ({ uri } = await destination.quietly(vm, () => receive.prepareIncoming!(cfg, address)));
  } catch (e) {
    await destination.releaseDevices(vm);
    throw e instanceof XenApiError ? e : failed(e);
  }
  let stats: MigrationStats;
  try {
    stats = await source.quietly(vm, () => source.backend.migrateOut!(uuid, uri));
  } catch (e) {
    await destination.quietly(vm, () => receive.shutdown(uuid, 'hard')).catch(() => undefined);
    await destination.releaseDevices(vm);
    throw failed(e);
  }
  const info = await destination.quietly(vm, () => receive.finishIncoming!(uuid)).catch((e: unknown) => {
    throw failed(e);
  });
  await source.releaseDevices(vm);
  destination.markRunning(vm, info, { fresh: false });
  return stats;
}
