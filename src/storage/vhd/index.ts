/**
 * Xenon VHD library — fixed, dynamic and differencing VHD files
 * (Microsoft "Virtual Hard Disk Image Format Specification"), async over
 * node:fs/promises file handles; data is never buffered whole.
 *
 * API (see docs/vhd.md for details):
 *
 *   // creation (all fail if `path` exists; sizes are positive multiples of 512, <= 2040 GiB)
 *   createFixed(path: string, sizeBytes: number): Promise<void>
 *   createDynamic(path: string, sizeBytes: number, opts?: { blockSize?: number }): Promise<void>
 *   createDifferencing(path: string, parentPath: string): Promise<void>
 *
 *   // random access
 *   openVhd(path: string, opts?: { writable?: boolean; parents?: boolean; deferMetadata?: boolean }): Promise<Vhd>
 *   openChain(path: string, opts?: { writable?: boolean }): Promise<Vhd[]>   // top first
 *   class Vhd {
 *     readonly path: string; footer: VhdFooter; header?: VhdHeader; parent?: Vhd
 *     readonly type: 'fixed' | 'dynamic' | 'differencing'
 *     readonly virtualSize: number; readonly blockSize: number; readonly uuid: string
 *     read(offset: number, length: number): Promise<Buffer>            // chain-aware, zeros where unallocated
 *     readInto(target: Buffer, targetOffset: number, offset: number, length: number): Promise<void>
 *     write(offset: number, data: Buffer): Promise<void>                // any alignment; allocates blocks
 *     allocatedBlocks(): number[]; isBlockAllocated(i: number): boolean
 *     blockBitmap(i: number): Promise<Buffer | undefined>
 *     hasData(offset: number, length: number): boolean                 // any layer allocated there?
 *     blockFileOffset(i: number): number | undefined
 *     parentPath(): string | undefined                                 // absolute, from the parent locators
 *     grow(newSize: number): Promise<void>
 *     flush(): Promise<void>; sync(): Promise<void>; close(): Promise<void>  // close() also closes opened parents
 *   }
 *
 *   // chain operations
 *   resize(path: string, newSize: number): Promise<void>                  // grow only
 *   coalesce(childPath: string, opts?: { flushEvery?: number }): Promise<CoalesceResult>  // data into the parent only
 *   verifyChain(path), diskUuid(path), expectedParentUuid(path), setDiskUuid(path, uuid)
 *
 *   // streaming
 *   exportRaw(path: string, opts?: { chunkSize?: number }): Readable      // whole virtual size, chain-aware
 *   exportVhd(path: string, opts?: { base?: string }): Readable           // dynamic VHD stream (sparse / delta)
 *   importRaw(input: Readable | AsyncIterable<Buffer> | string (raw file path), path: string, size: number, opts?: { blockSize?: number }): Promise<void>
 *   importVhd(input: Readable | AsyncIterable<Buffer>, path: string): Promise<void>
 *
 *   // errors
 *   class VhdError extends Error { code: VhdErrorCode }   // 'VHD_CORRUPT' | 'VHD_TRUNCATED' | 'VHD_UNSUPPORTED' | ...
 *   isVhdError(e: unknown, code?: VhdErrorCode): e is VhdError
 */
export { VhdError, isVhdError, type VhdErrorCode } from './errors.ts';
export {
  DEFAULT_BLOCK_SIZE,
  SECTOR,
  type DiskType,
  type VhdFooter,
  type VhdHeader,
  type ParentLocator,
  type Geometry,
  chsGeometry,
  uuidToString,
  dateFromVhdTimestamp,
} from './format.ts';
export { Vhd, type OpenOptions } from './vhd.ts';
export { createFixed, createDynamic, createDifferencing, type CreateDynamicOptions } from './create.ts';
export { openVhd, openChain, resize } from './ops.ts';
export { coalesce, verifyChain, diskUuid, expectedParentUuid, setDiskUuid, type CoalesceResult, type CoalesceOptions } from './coalesce.ts';
export { exportRaw, exportVhd, importRaw, importVhd, type ExportRawOptions, type ExportVhdOptions, type ImportRawOptions } from './stream.ts';
