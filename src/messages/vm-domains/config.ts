/** A VM record as a domain configuration: its settings, and the disks and NICs storage and networking attach for it. */
import { XenApiError } from '../../datamodel/api-error.ts';
import { NULL_REF } from '../../datamodel/types.ts';
import type { Store } from '../../db/store.ts';
import type { DiskConfig, DomainConfig, NicConfig } from '../../xenops/backend.ts';
import type { DiskProvider, NicProvider } from './providers.ts';

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

export interface Attachers {
  readonly store: Store;
  readonly disks?: DiskProvider;
  readonly nics?: NicProvider;
}

/** The domain configuration of a VM, attaching its disks and NICs. */
export async function domainConfig(a: Attachers, ref: string, opts: { incoming?: boolean } = {}): Promise<DomainConfig> {
  const vm = a.store.must('VM', ref);
  const boot = vm.HVM_boot_params as Record<string, string>;
  const disks: DiskConfig[] = [];
  for (const vbdRef of vm.VBDs as string[]) {
    const disk = await diskFor(a, vbdRef, disks.length, opts.incoming === true);
    if (disk) disks.push(disk);
  }
  const nics: NicConfig[] = [];
  for (const vifRef of vm.VIFs as string[]) {
    const vif = a.store.get('VIF', vifRef);
    if (!vif || !a.nics) continue;
    const where = await a.nics.plug(vifRef);
    nics.push({ id: String(vif.uuid), device: str(vif.device) || String(nics.length), mac: str(vif.MAC), ...where, model: 'virtio-net-pci' });
  }
  const kernel = str(vm.PV_kernel);
  return {
    uuid: String(vm.uuid),
    name: String(vm.name_label),
    vcpusMax: Number(vm.VCPUs_max) || 1,
    vcpusAtStartup: Number(vm.VCPUs_at_startup) || 1,
    memoryBytes: Number(vm.memory_static_max) || 256 * 1024 * 1024,
    firmware: boot.firmware === 'uefi' ? 'uefi' : 'bios',
    bootOrder: boot.order || 'cd',
    kernel: kernel || undefined,
    initrd: kernel ? str(vm.PV_ramdisk) || undefined : undefined,
    cmdline: kernel ? str(vm.PV_args) : undefined,
    platform: { ...(vm.platform as Record<string, string>) },
    disks,
    nics,
  };
}

/** The disk a VBD gives the guest (its VDI attached through storage). */
export async function diskFor(a: Attachers, vbdRef: string, index = 0, standby = false): Promise<DiskConfig | undefined> {
  const vbd = a.store.get('VBD', vbdRef);
  if (!vbd) return undefined;
  const cd = vbd.type === 'CD';
  const readOnly = vbd.mode === 'RO' || cd;
  let path: string | undefined;
  let format: DiskConfig['format'] = 'raw';
  if (!vbd.empty && vbd.VDI !== NULL_REF) {
    if (!a.disks) throw new XenApiError('SR_BACKEND_FAILURE', 'no storage', '', 'storage is not available on this host');
    ({ path, format } = await a.disks.attach(String(vbd.VDI), readOnly, { standby }));
  }
  return { id: String(vbd.uuid), device: str(vbd.userdevice) || String(index), path, format, readOnly, kind: cd ? 'cdrom' : 'disk', bootable: vbd.bootable === true };
}
