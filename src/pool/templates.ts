/**
 * Built-in VM templates in the style of XenServer's: each is a halted VM with
 * is_a_template set, memory and CPU defaults, and a disk plan in
 * other_config:disks that VM.provision follows.
 */
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export interface TemplateSpec {
  name: string;
  description: string;
  memory: number;
  vcpus: number;
  diskBytes: number;
  firmware: 'bios' | 'uefi';
  linux: boolean;
  distro?: string;
}

export const BUILTIN_TEMPLATES: readonly TemplateSpec[] = [
  { name: 'Other install media', description: 'Install any operating system from an ISO or the network.', memory: 1 * GiB, vcpus: 1, diskBytes: 32 * GiB, firmware: 'bios', linux: false },
  { name: 'Debian Bookworm 12', description: 'Debian 12 (64-bit).', memory: 2 * GiB, vcpus: 2, diskBytes: 10 * GiB, firmware: 'bios', linux: true, distro: 'debian' },
  { name: 'Ubuntu Jammy Jellyfish 22.04', description: 'Ubuntu 22.04 LTS (64-bit).', memory: 2 * GiB, vcpus: 2, diskBytes: 10 * GiB, firmware: 'bios', linux: true, distro: 'ubuntu' },
  { name: 'Generic Linux BIOS', description: 'Any 64-bit Linux, BIOS boot.', memory: 1 * GiB, vcpus: 1, diskBytes: 10 * GiB, firmware: 'bios', linux: true },
  { name: 'Generic Linux UEFI', description: 'Any 64-bit Linux, UEFI boot.', memory: 1 * GiB, vcpus: 1, diskBytes: 10 * GiB, firmware: 'uefi', linux: true },
  { name: 'Xenon test guest', description: 'A tiny Linux booted straight from a kernel and initrd (set PV_kernel, PV_ramdisk, PV_args).', memory: 256 * MiB, vcpus: 1, diskBytes: 0, firmware: 'bios', linux: true },
];

/** The VM record fields of a template. */
export function templateRecord(t: TemplateSpec): Record<string, unknown> {
  const disks = t.diskBytes > 0 ? `<provision><disk device="0" size="${t.diskBytes}" sr="" bootable="true" type="system"/></provision>` : '<provision></provision>';
  return {
    name_label: t.name,
    name_description: t.description,
    is_a_template: true,
    is_default_template: true,
    power_state: 'Halted',
    user_version: 1,
    memory_static_max: t.memory,
    memory_dynamic_max: t.memory,
    memory_dynamic_min: t.memory,
    memory_static_min: Math.min(t.memory, 256 * MiB),
    VCPUs_max: t.vcpus,
    VCPUs_at_startup: t.vcpus,
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'restart',
    HVM_boot_policy: 'BIOS order',
    HVM_boot_params: { order: 'cdn', ...(t.firmware === 'uefi' ? { firmware: 'uefi' } : {}) },
    platform: { 'device-model': 'qemu-upstream-compat', acpi: '1', apic: 'true', pae: 'true', nx: 'true', viridian: 'false' },
    domain_type: 'hvm',
    other_config: {
      default_template: 'true',
      disks,
      'install-methods': 'cdrom',
      ...(t.linux ? { linux_template: 'true' } : {}),
      ...(t.distro ? { 'install-distro': t.distro } : {}),
    },
    recommendations: '<restrictions><restriction field="memory-static-max" max="137438953472"/><restriction field="vcpus-max" max="32"/></restrictions>',
  };
}
