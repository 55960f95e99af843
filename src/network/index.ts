// Network driver layer entry point.
export * from './backend.ts';
export { OvsBackend, type OvsBackendOptions } from './ovs/ovs-backend.ts';
export { BridgeBackend, type BridgeBackendOptions } from './bridge/bridge-backend.ts';
export { listHostNics, type HostNic } from './host-nics.ts';

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { NetworkBackend } from './backend.ts';
import { OvsBackend } from './ovs/ovs-backend.ts';
import { BridgeBackend } from './bridge/bridge-backend.ts';

/** True if Open vSwitch's user-space tools are installed. */
export function ovsAvailable(): boolean {
  return ['/usr/sbin/ovs-vswitchd', '/usr/sbin/ovsdb-server', '/usr/bin/ovs-vsctl', '/usr/bin/ovs-ofctl', '/usr/bin/ovsdb-tool'].every((p) => existsSync(p));
}

/** OVS (run dir `<dataDir>/run/ovs`) when installed, else the Linux bridge backend. */
export function createNetworkBackend(opts: {
  dataDir: string;
  netns?: string;
  prefer?: 'ovs' | 'bridge';
  log?: (m: string) => void;
}): NetworkBackend {
  const kind = opts.prefer ?? (ovsAvailable() ? 'ovs' : 'bridge');
  if (kind === 'ovs') return new OvsBackend({ runDir: join(opts.dataDir, 'run', 'ovs'), netns: opts.netns, watchdogMs: 5000, log: opts.log });
  return new BridgeBackend({ netns: opts.netns, log: opts.log });
}
