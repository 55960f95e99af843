/**
 * The bytes of a VDI export (raw, or VHD with an optional base for a delta)
 * from an image of this host's: what GET /export_raw_vdi sends, and what a
 * member sends the master for an image of its local SR.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { XenApiError } from '../datamodel/api-error.ts';
import type { SrDriver } from '../storage/sr/driver.ts';
import { exportVolumeRaw } from '../storage/sr/file.ts';
import { exportVhd } from '../storage/vhd/index.ts';
import { primed } from './http-transfer.ts';
import { storageError } from './sr-drivers.ts';

export type ExportFormat = 'raw' | 'vhd';

/** The stream and its length, if known; fails before anything is sent. `vdi` names the VDI in errors. */
export async function exportSource(driver: SrDriver, uuid: string, vdi: string, format: ExportFormat, base?: string): Promise<{ stream: Readable; length?: number }> {
  let volume;
  try {
    volume = await driver.info(uuid);
  } catch (e) {
    throw storageError(e, vdi);
  }
  const path = driver.path(uuid);
  if (format === 'raw') {
    const stream = volume.format === 'raw' ? createReadStream(path) : exportVolumeRaw(path);
    return { stream: await primed(stream), length: volume.virtualSize };
  }
  if (volume.format !== 'vpc') throw new XenApiError('VDI_INCOMPATIBLE_TYPE', vdi, `${volume.format === 'qcow2' ? 'qcow2' : 'a raw image'} (export it with format=raw)`);
  return { stream: await primed(exportVhd(path, { base: base ? driver.path(base) : undefined })) };
}
