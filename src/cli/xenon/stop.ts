/**
 * `xenon stop --data-dir DIR [--guests]`: stops the daemon of a data
 * directory (its pid file), and with --guests also what outlives it on
 * purpose: its QEMU guests, its Open vSwitch daemons, its bridges and taps.
 * Run it in the daemon's network namespace (`ip netns exec NS xenon stop …`).
 */
import { existsSync, realpathSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CLAIM_DIR, namespaceClaimant, namespaceId } from '../../network/claim.ts';
import { BridgeBackend } from '../../network/bridge/bridge-backend.ts';
import { OvsBackend } from '../../network/ovs/ovs-backend.ts';
import { haConfigured, stopHaProcesses } from '../../ha/etcd-member.ts';
import { daemonPid, processAlive } from './pidfile.ts';

export interface StopOptions {
  dataDir: string;
  /** Also shut down guests and remove bridges, taps and the Open vSwitch daemons. */
  guests: boolean;
  /** How long the daemon, and then each guest, gets to stop cleanly (ms). */
  timeoutMs: number;
  say: (line: string) => void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!processAlive(pid)) return true;
    await sleep(50);
  }
  return !processAlive(pid);
}

/** SIGTERM, then SIGKILL after the timeout. */
async function stopDaemon(o: StopOptions): Promise<void> {
  const pid = daemonPid(o.dataDir);
  if (pid === undefined) {
    o.say(`no daemon is running on ${o.dataDir}`);
    return;
  }
  process.kill(pid, 'SIGTERM');
  if (await waitGone(pid, o.timeoutMs)) {
    o.say(`stopped the daemon (pid ${pid})`);
    return;
  }
  process.kill(pid, 'SIGKILL');
  await waitGone(pid, 5000);
  o.say(`the daemon (pid ${pid}) did not stop within ${o.timeoutMs / 1000} s: killed it`);
}

/** Every QEMU guest of the data directory: ACPI power button, then hard after the timeout. */
async function stopGuests(o: StopOptions): Promise<void> {
  const runDir = join(o.dataDir, 'run', 'qemu');
  if (!existsSync(runDir)) return;
  const { QemuBackend } = await import('../../xenops/qemu/index.ts');
  const qemu = new QemuBackend({ runDir, accel: 'tcg' });
  try {
    for (const d of await qemu.list()) {
      const how = await qemu.shutdown(d.uuid, 'clean', o.timeoutMs).then(() => 'cleanly', async () => {
        await qemu.shutdown(d.uuid, 'hard');
        return 'hard';
      });
      o.say(`shut down guest ${d.name} (${d.uuid}) ${how}`);
    }
  } finally {
    await qemu.close();
  }
}

/** Open vSwitch daemons, bridges and taps of this data directory, in this namespace. */
async function removeNetworking(o: StopOptions): Promise<void> {
  const claimant = await namespaceClaimant();
  const ours = claimant === undefined || claimant === o.dataDir;
  const ovsRun = join(o.dataDir, 'run', 'ovs');
  if (existsSync(join(ovsRun, 'conf.db'))) {
    const ovs = new OvsBackend({ runDir: ovsRun });
    await ovs.start();
    const r = await ovs.reconcile({ bridges: [], taps: [] });
    await ovs.stop();
    o.say(`stopped its Open vSwitch daemons${r.removed.length ? `, removed ${r.removed.join(', ')}` : ''}`);
  }
  if (!ours) {
    o.say(`this network namespace belongs to ${claimant}: its Linux bridges were left alone`);
    return;
  }
  const r = await new BridgeBackend().reconcile({ bridges: [], taps: [] });
  if (r.removed.length) o.say(`removed ${r.removed.join(', ')}`);
  if (claimant !== undefined) rmSync(join(CLAIM_DIR, await namespaceId('self')), { force: true });
}

export async function stopXenon(opts: StopOptions): Promise<void> {
  if (!existsSync(opts.dataDir)) throw new Error(`no data directory ${resolve(opts.dataDir)}`);
  const o = { ...opts, dataDir: realpathSync(opts.dataDir) };
  await stopDaemon(o);
  if (!o.guests) {
    o.say('its guests, bridges and Open vSwitch daemons keep running (stop them too with --guests)');
    // with HA on the fencer keeps the host's lease alive for the grace period, then fences the guests
    if (haConfigured(o.dataDir)) {
      o.say(
        'HA is on: its fencer keeps the host alive for a grace period (the daemon\'s XENON_HA_RESTART_GRACE_S, default 60 s); ' +
          'start the daemon again within it, or its guests are killed and the pool restarts the protected ones elsewhere; its etcd member keeps running',
      );
    }
    return;
  }
  await stopGuests(o);
  await removeNetworking(o);
  const ha = await stopHaProcesses(o.dataDir);
  if (ha.length > 0) o.say(`stopped HA's ${ha.join(' and ')}`);
}
