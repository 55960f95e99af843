/** NBD protocol numbers (doc/proto.md of the NBD project) and the errors a device or a peer can cause. */
import type { BlockDevice } from './types.ts';

// ---------------------------------------------------------------------------
// Protocol constants (doc/proto.md)

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
export const IHAVEOPT = Buffer.from('IHAVEOPT', 'latin1');
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;

export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_INFO = 6;
export const OPT_GO = 7;

export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_ERR_UNSUP = 0x80000001;
export const REP_ERR_INVALID = 0x80000003;
export const REP_ERR_UNKNOWN = 0x80000006;

export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_WRITE_ZEROES = 6;

export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_ESHUTDOWN = 108;

/** Options larger than this are a protocol violation here (names are <= 4096 bytes). */
export const MAX_OPTION_LENGTH = 64 * 1024;
export const MAX_NAME_LENGTH = 4096;
export const ZERO_CHUNK = Buffer.alloc(1024 * 1024);
/** Stop reading requests while this much reply data is queued on the socket. */
export const MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024;

/**
 * An error a BlockDevice may throw to choose the NBD error code sent back
 * (otherwise the server maps errno-style `code`s: EPERM/EROFS/EACCES → EPERM,
 * ENOSPC/EDQUOT/EFBIG → ENOSPC, EINVAL → EINVAL, anything else → EIO).
 */
export class NbdDeviceError extends Error {
  readonly nbdErrno: number;
  constructor(nbdErrno: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NbdDeviceError';
    this.nbdErrno = nbdErrno;
  }
}

export function toNbdErrno(e: unknown): number {
  const x = e as { nbdErrno?: unknown; code?: unknown } | null;
  if (x && typeof x.nbdErrno === 'number' && x.nbdErrno > 0) return x.nbdErrno;
  switch (x?.code) {
    case 'EPERM':
    case 'EROFS':
    case 'EACCES':
      return NBD_EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    default:
      return NBD_EIO;
  }
}

export class ProtocolError extends Error {}
export class EndOfStream extends Error {}

