/**
 * Writing an upload into an image of this host's: what PUT /import_raw_vdi
 * does with the bytes, and what a member does with those the master relays
 * for an image of its local SR. And the XenAPI error of a failed transfer.
 */
import { randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import type { SrDriver } from '../storage/sr/driver.ts';
import { overwriteRaw, VolumeOverflowError } from '../storage/sr/file.ts';
import { importVhd, isVhdError } from '../storage/vhd/index.ts';
import { UploadCutError } from './http-transfer.ts';
import { storageError } from './sr-drivers.ts';

/** Raw: written over the image from offset 0 (it keeps its size); VHD: a new image put in its place once whole. */
export async function writeImage(driver: SrDriver, uuid: string, format: 'raw' | 'vhd', input: AsyncIterable<Buffer>): Promise<void> {
  if (format === 'raw') {
    await overwriteRaw(driver.path(uuid), input);
    return;
  }
  const tmp = `${driver.path(uuid)}.import-${randomUUID().slice(0, 8)}`;
  try {
    await importVhd(input, tmp);
    await rename(tmp, driver.path(uuid));
  } finally {
    await rm(tmp, { force: true });
  }
}

export function transferError(e: unknown, vdi: string): XenApiError {
  if (e instanceof UploadCutError) return new XenApiError('VDI_IO_ERROR', e.message);
  if (e instanceof VolumeOverflowError) return new XenApiError('VDI_IO_ERROR', `${e.message}: nothing past its end was written`);
  if (isVhdError(e)) return new XenApiError('VDI_IO_ERROR', `${e.code}: ${e.message}`);
  return toApiError(storageError(e, vdi));
}
