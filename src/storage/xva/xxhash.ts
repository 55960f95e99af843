/**
 * XXH64 (seed 0), which newer xapi writes in `.xxhash` members, from
 * @node-rs/xxhash (native): ~0.1 ms per MiB where our former BigInt version
 * took ~120 ms (docs/xva.md).
 */
import { xxh64 as nativeXxh64 } from '@node-rs/xxhash';

export const xxh64 = (b: Buffer): bigint => nativeXxh64(b);

/** As xapi prints it: 16 upper-case hex digits. */
export const xxh64Hex = (b: Buffer): string => xxh64(b).toString(16).toUpperCase().padStart(16, '0');
