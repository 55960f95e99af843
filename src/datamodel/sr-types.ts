/**
 * The SR types Xenon offers, declared once: the SM records (what clients see)
 * and the SR drivers (what the code does) both take their capabilities from here.
 */

/** What an SM record says an SR type can do, as xapi names it (`NAME` or `NAME/version`). */
export type SmCapability =
  | 'SR_PROBE' | 'SR_UPDATE' | 'SR_SCAN'
  | 'VDI_CREATE' | 'VDI_DELETE' | 'VDI_ATTACH' | 'VDI_DETACH' | 'VDI_INTRODUCE' | 'VDI_RESIZE'
  | 'VDI_SNAPSHOT' | 'VDI_CLONE' | 'VDI_UPDATE' | 'VDI_GENERATE_CONFIG' | 'VDI_RESET_ON_BOOT/2';

export interface SrTypeDecl {
  /** The SM record's name_label and name_description. */
  readonly name: string;
  readonly description: string;
  /** device-config keys and what they mean. */
  readonly configuration: Readonly<Record<string, string>>;
  readonly capabilities: readonly SmCapability[];
}

const VHD_FILES: readonly SmCapability[] = [
  'SR_PROBE', 'SR_UPDATE', 'SR_SCAN', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_INTRODUCE',
  'VDI_RESIZE', 'VDI_SNAPSHOT', 'VDI_CLONE', 'VDI_UPDATE', 'VDI_GENERATE_CONFIG', 'VDI_RESET_ON_BOOT/2',
];

export const SR_TYPES = {
  ext: {
    name: 'Local EXT3 VHD',
    description: 'VHD files in a local directory',
    configuration: { path: 'directory for the VHD files (default: under the data dir)' },
    capabilities: VHD_FILES,
  },
  file: {
    name: 'Shared file VHD',
    description: 'VHD files in a directory every host mounts (NFS, CephFS, GlusterFS …)',
    configuration: { location: 'the mounted directory' },
    capabilities: VHD_FILES,
  },
  iso: {
    name: 'ISO',
    description: 'A read-only library of ISO images',
    configuration: { location: 'directory of .iso files' },
    capabilities: ['SR_SCAN', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_INTRODUCE'],
  },
} as const satisfies Record<string, SrTypeDecl>;

export type SrType = keyof typeof SR_TYPES;
export const SR_TYPE_NAMES: readonly SrType[] = ['ext', 'file', 'iso'];
export const isSrType = (type: string): type is SrType => SR_TYPE_NAMES.some((t) => t === type);

/** An SM record's `features`: each capability with its version (1 unless it says `/n`). */
export function smFeatures(capabilities: readonly SmCapability[]): Record<string, number> {
  return Object.fromEntries(capabilities.map((c) => {
    const [name, version = '1'] = c.split('/');
    return [name, Number(version)];
  }));
}
