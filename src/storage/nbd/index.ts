/** NBD export of block devices (VHD chains, raw files) over unix sockets; see docs/nbd.md. */
export {
  serveNbd,
  NbdDeviceError,
  type BlockDevice,
  type NbdExport,
  type NbdServeOptions,
  NBD_EPERM,
  NBD_EIO,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_ESHUTDOWN,
} from './server.ts';
export { vhdBlockDevice, type VhdBlockDevice } from './vhd-device.ts';
export { rawFileBlockDevice, memoryBlockDevice } from './raw-device.ts';
