export { QemuBackend, detectAccel, multibootProbe, type QemuBackendOptions } from './backend.ts';
export { buildQemuArgs, DOMAIN_FILES, type Accel } from './args.ts';
export { QmpClient, QmpError, type QmpEvent } from './qmp.ts';
export { QgaSession, QgaError, queryGuestAgent } from './qga.ts';
