/**
 * The one place where a name from the API becomes part of a path on the
 * host: a volume is named only by a well-formed UUID, and an SR's directory
 * is an absolute, normalised path without control characters. Anything else
 * (`..`, `/`, NUL, `%2e%2e` …) is refused before a file is touched.
 */
import { isAbsolute, normalize } from 'node:path';
import { SrDriverError } from './driver.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `s` is a UUID, the only form a volume's file name takes. */
export const isUuid = (s: string): boolean => UUID.test(s);

/** `uuid`, if it is one; a volume name that is not a UUID never reaches the file system. */
export function volumeName(uuid: string): string {
  if (!isUuid(uuid)) throw new SrDriverError('VDI_MISSING', `${JSON.stringify(uuid)} is not a UUID`);
  return uuid.toLowerCase();
}

// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A directory given by an administrator (device-config:path / location), checked. */
export function srDirectory(dir: string, key: string): string {
  const why = !dir ? 'is empty'
    : CONTROL.test(dir) ? 'holds control characters'
    : !isAbsolute(dir) ? 'is not an absolute path'
    : normalize(dir).replace(/\/+$/, '') !== dir.replace(/\/+$/, '') || dir.split('/').includes('..') ? 'is not a normalised path (no . or .. parts)'
    : undefined;
  if (why) throw new SrDriverError('SR_BACKEND_FAILURE', `device-config:${key} ${JSON.stringify(dir)} ${why}`);
  return dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
}
