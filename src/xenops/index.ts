export * from './backend.ts';
export { QemuBackend, detectAccel, type QemuBackendOptions } from './qemu/index.ts';
export { SimBackend, type SimBackendOptions } from './sim/index.ts';
