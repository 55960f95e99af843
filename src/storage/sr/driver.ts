/**
 * The storage-repository driver interface, in the spirit of xapi's SMAPI:
 * a driver knows how to keep disk images somewhere (a local directory, a
 * shared mount, an ISO library; later NFS or iSCSI spoken from user space)
 * and nothing about the database. Everything is named by uuid.
 */
import type { SmCapability } from '../../datamodel/sr-types.ts';

export type VdiFormat = 'vpc' | 'qcow2' | 'raw';

/** What a driver knows about one image. */
export interface VolumeInfo {
  uuid: string;
  /** Driver-specific location (xapi's VDI.location). */
  location: string;
  virtualSize: number;
  physicalUtilisation: number;
  format: VdiFormat;
  /** uuid of the parent image in a chain, if any. */
  parent?: string;
  readOnly: boolean;
  /** A name found in the storage itself (ISO file names). */
  label?: string;
}

export interface SrStats {
  physicalSize: number;
  physicalUtilisation: number;
}

export interface SrDriver {
  readonly type: string;
  /** Whether every host of a pool sees the same storage. */
  readonly shared: boolean;
  /** SM capabilities, as the SR type declares them (datamodel/sr-types.ts). */
  readonly capabilities: readonly SmCapability[];
  /** Prepares the storage for a new SR (mkdir, write a marker). */
  create(): Promise<void>;
  /** Checks the storage is there and usable (PBD.plug). */
  attach(): Promise<void>;
  detach(): Promise<void>;
  /** Removes the SR's storage entirely (SR.destroy). */
  destroy(): Promise<void>;
  stats(): Promise<SrStats>;
  /** Every image present, for SR.scan. */
  scan(): Promise<VolumeInfo[]>;
  /** The largest image createVolume makes (0: it makes none). */
  readonly maxVolumeSize: number;
  /** A new empty image; `format` asks for one where the SR offers a choice (sm_config:type). */
  createVolume(uuid: string, size: number, format?: 'vhd' | 'qcow2'): Promise<VolumeInfo>;
  deleteVolume(uuid: string): Promise<void>;
  resizeVolume(uuid: string, size: number): Promise<VolumeInfo>;
  /**
   * Freezes `uuid` as a read-only base and gives it children: `uuid` itself
   * (the new writable leaf) and each of `newLeaves`. O(1) in the disk's size.
   * Returns the base's new uuid.
   */
  branch(uuid: string, newLeaves: string[], baseUuid: string): Promise<void>;
  /** A full, independent copy of an image (its whole chain flattened). */
  copyVolume(uuid: string, into: SrDriver, newUuid: string, progress?: (f: number) => void): Promise<VolumeInfo>;
  /**
   * Folds the hidden base `baseUuid` into its only child `childUuid`: the
   * merged image takes the child's place. Crash-safe: see `recover`. Refuses
   * (SR_BACKEND_FAILURE "chain inconsistent: …") when the images on disk do
   * not form that chain.
   */
  coalesce(childUuid: string, baseUuid: string): Promise<void>;
  /** Finishes or rolls back work a crash interrupted; says what it did. */
  recover(): Promise<string[]>;
  /** Throws if the image's chain does not open as it should (missing or mismatched parents). */
  checkChain(uuid: string): Promise<void>;
  /** Replaces a leaf with an empty child of its parent (on_boot=reset). */
  resetLeaf(uuid: string): Promise<void>;
  /** File path and format to give the hypervisor or the HTTP handlers. */
  path(uuid: string): string;
  info(uuid: string): Promise<VolumeInfo>;
}

export class SrDriverError extends Error {
  constructor(
    readonly code: 'SR_FULL' | 'VDI_MISSING' | 'SR_BACKEND_FAILURE' | 'SR_OPERATION_NOT_SUPPORTED' | 'VDI_READONLY',
    message: string,
  ) {
    super(message);
    this.name = 'SrDriverError';
  }
}
