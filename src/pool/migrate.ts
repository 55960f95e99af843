/**
 * VM.pool_migrate, the moving part: the destination builds the domain
 * (attaching the disks and NICs there) and waits for its state; the source
 * device model sends it while the guest runs (QEMU's pre-copy); once it has
 * arrived the source lets go of its devices and the master records the VM
 * resident on the destination. A failure before the switch leaves the guest
 * running where it was and the destination cleaned up.
 *
 * Disks change hands at the switch. QEMU's own images (qcow2, raw) are
 * flushed and inactivated by the sender and activated by the receiver. A VHD
 * chain reaches QEMU through an NBD export of the host that attaches it,
 * which reads the chain's metadata (BAT, bitmaps) when it opens the image:
 * the destination's export is therefore attached in standby (the size for
 * the handshake, the image left closed, I/O held back), and opened only
 * once the source's device model is gone and the source's export, flushed,
 * has closed the image. The guest's CPUs run on meanwhile; only its disk I/O
 * waits for that hand-over (`handoverMs`).
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
  /** Told once the destination's domain exists, waiting for the state (consoles may connect there before the switch). */
  readonly prepared?: () => void;
}

/**
 * A disk another running VM uses too cannot move with this one: letting go of
 * it on the source (releaseDevices) would close the export that VM reads a
 * VHD chain through, and the destination's standby export would hand the
 * chain over while that VM still writes to it.
 */
function assertDisksCanMove(store: Store, vm: string, ends: Ends): void {
  for (const vbd of store.must('VM', vm).VBDs) {
    const rec = store.get('VBD', vbd);
    if (!rec || rec.empty || rec.VDI === NULL_REF) continue;
    const vdi = store.get('VDI', rec.VDI);
    if (!vdi) continue;
    const shared = vdi.VBDs.some((other) => other !== vbd && store.get('VBD', other)?.currently_attached === true);
    if (shared) {
      throw new XenApiError('VM_MIGRATE_FAILED', vm, ends.sourceHost, ends.destinationHost, `VDI ${vdi.uuid} is attached to another running VM too`);
    }
  }
}

export async function liveMigrate(store: Store, vm: string, ends: Ends): Promise<MigrationStats & { handoverMs: number }> {
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
    const cfg = await destination.domainConfig(vm, { incoming: true });
    ({ uri } = await destination.quietly(vm, () => receive.prepareIncoming!(cfg, address)));
  } catch (e) {
    await destination.releaseDevices(vm);
    throw e instanceof XenApiError ? e : failed(e);
  }
  ends.prepared?.();
  let stats: MigrationStats;
  try {
    stats = await source.quietly(vm, () => source.backend.migrateOut!(uuid, uri));
  } catch (e) {
    await destination.quietly(vm, () => receive.shutdown(uuid, 'hard')).catch(() => undefined);
    await destination.releaseDevices(vm);
    throw failed(e);
  }
  // The source's device model has flushed its disks and quit (migrateOut waits for both); its exports flush
  // and close the images on release. Only then may the destination open them: one writer at a time.
  const sent = performance.now();
  await source.releaseDevices(vm);
  try {
    await destination.activateDisks(vm);
  } catch (e) {
    // the guest runs at the destination without its disks, the source's copy is gone: stopped, it is halted
    await destination.quietly(vm, () => receive.shutdown(uuid, 'hard')).catch(() => undefined);
    await destination.releaseDevices(vm);
    await source.markStopped(vm).catch(() => undefined);
    throw failed(e);
  }
  const handoverMs = Math.round(performance.now() - sent);
  const info = await destination.quietly(vm, () => receive.finishIncoming!(uuid)).catch((e: unknown) => {
    throw failed(e);
  });
  destination.markRunning(vm, info, { fresh: false });
  return { ...stats, handoverMs };
}
