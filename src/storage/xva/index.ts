/**
 * XVA, xapi's VM archive: an uncompressed tar whose first member `ova.xml`
 * describes the objects (written by messages/vm-xva.ts), followed by each
 * disk in 1 MiB chunks with checksums (see docs/xva.md).
 */
export { TarError, TarReader, tarArchive, type TarEntry, type TarMember } from './tar.ts';
export { CHUNK, XvaError, chunkName, diskMembers, isZero, openDiskSource, receiveDisks, sha1Hex, type DiskSource, type DiskTarget, type XvaErrorCode } from './disk.ts';
export { xxh64, xxh64Hex } from './xxhash.ts';

/** The name of the metadata member, always first. */
export const OVA_XML = 'ova.xml';
