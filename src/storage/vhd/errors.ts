/**
 * Typed errors for the VHD library. Every validation failure is reported as a
 * `VhdError` carrying a stable `code`; plain I/O errors (ENOENT, EACCES, ...)
 * from node:fs are propagated unchanged.
 */

export type VhdErrorCode =
  /** A structure is inconsistent (bad cookie, checksum, out-of-range BAT entry, ...). */
  | 'VHD_CORRUPT'
  /** The file or stream ended before a structure it announces. */
  | 'VHD_TRUNCATED'
  /** Valid VHD but uses a feature this library does not implement. */
  | 'VHD_UNSUPPORTED'
  /** Bad argument from the caller (size not a multiple of 512, shrink, ...). */
  | 'VHD_INVALID_ARG'
  /** Read/write beyond the virtual size. */
  | 'VHD_OUT_OF_RANGE'
  /** Write attempted on a disk opened read-only. */
  | 'VHD_READONLY'
  /** Operation on a closed disk. */
  | 'VHD_CLOSED'
  /** A differencing disk's parent cannot be located. */
  | 'VHD_PARENT_MISSING'
  /** The parent found does not carry the UUID recorded in the child (or a chain loop). */
  | 'VHD_PARENT_MISMATCH';

export class VhdError extends Error {
  readonly code: VhdErrorCode;
  constructor(code: VhdErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'VhdError';
    this.code = code;
  }
}

export function isVhdError(e: unknown, code?: VhdErrorCode): e is VhdError {
  return e instanceof VhdError && (code === undefined || e.code === code);
}
