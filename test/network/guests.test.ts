/**
 * Guests on Xenon's networks, all inside a network namespace this test makes
 * (the daemon, its OVS and the guests live there; the test talks to the
 * daemon over a unix socket): a private network, VLAN isolation on one PIF,
 * VIF unplug/plug, and a SIGKILL of the daemon that leaks nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenApiClient, type Ref } from '../../src/client/client.ts';
import { OvsBackend } from '../../src/network/ovs/ovs-backend.ts';
import { spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { makeTestGuestVm, MARKER, typeOnConsole, waitSerial } from '../helpers/guest.ts';
import { must, sh } from './helpers.ts';

const ns = `xenon-test-${randomBytes(3).toString('hex')}`;
const dataDir = mkdtempSync(join(tmpdir(), 'xenon-netguests-'));
const socketPath = join(dataDir, 'api.sock');
let daemon: Daemon;
let c: XenApiClient;

async function startDaemon(): Promise<void> {
  daemon = await spawnDaemon(dataDir, { netns: ns, socketPath, args: ['--backend', 'qemu', '--accel', 'tcg', '--attach-uplinks'] });
  c = new XenApiClient('http://localhost', { socketPath });
  await c.login('root', 'xenon-test-root');
}

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  // the "host NIC" of this namespace
  await must('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'wire0']);
  await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  await must('ip', ['-n', ns, 'link', 'set', 'wire0', 'up']);
  await startDaemon();
});

after(async () => {
  try {
    for (const vm of await c.api.VM.get_all()) {
      const r = await c.api.VM.get_record(vm);
      if (!r.is_control_domain && r.power_state !== 'Halted') await c.api.VM.hard_shutdown(vm).catch(() => undefined);
    }
  } finally {
    c.close();
    daemon.proc.kill('SIGTERM');
    await daemon.exited;
    await new OvsBackend({ runDir: join(dataDir, 'run', 'ovs'), netns: ns }).stop().catch(() => undefined);
    await sh('ip', ['netns', 'del', ns]);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

async function guest(name: string, network: string, ip: string): Promise<{ vm: Ref<'VM'>; vif: Ref<'VIF'> }> {
  const vm = await makeTestGuestVm(c, name, 'stay', `xenon.ip=${ip}/24`);
  const vif = await c.api.VIF.create({ VM: vm, network, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] } as never);
  return { vm, vif };
}

async function pings(vm: Ref<'VM'>, ip: string, nth: number): Promise<boolean> {
  await typeOnConsole(c, vm, `ping ${ip}`);
  const text = await waitSerial(c, vm, `XENON-PING-`, nth, 120_000);
  const results = [...text.matchAll(/XENON-PING-(OK|FAIL) (\S+)/g)];
  return results[nth - 1][1] === 'OK';
}

test('private network, VLANs on one PIF, VIF unplug/plug, and a daemon SIGKILL', { timeout: 900_000 }, async () => {
  const pifs = Object.entries(await c.api.PIF.get_all_records()).filter(([, p]) => p.physical && p.device === 'eth0');
  assert.equal(pifs.length, 1, 'the namespace NIC became a PIF');
  const [pif] = pifs[0];
  const priv = await c.api.network.create({ name_label: 'private', name_description: '', MTU: 1500, other_config: {}, tags: [] } as never);
  const v10 = await c.api.network.create({ name_label: 'vlan10', MTU: 1500 } as never);
  const v20 = await c.api.network.create({ name_label: 'vlan20', MTU: 1500 } as never);
  await c.api.VLAN.create(pif as never, 10, v10);
  await c.api.VLAN.create(pif as never, 20, v20);

  const a = await guest('net-a', v10, '10.0.10.1');
  const b = await guest('net-b', v10, '10.0.10.2');
  const other = await guest('net-c', v20, '10.0.10.3');
  const d = await guest('net-d', priv, '10.0.99.1');
  const e = await guest('net-e', priv, '10.0.99.2');
  for (const g of [a, b, other, d, e]) await c.api.VM.start(g.vm, false, false);
  for (const g of [a, b, other, d, e]) await waitSerial(c, g.vm, MARKER, 1, 180_000);

  assert.ok(await pings(d.vm, '10.0.99.2', 1), 'two guests on a private network reach each other');
  assert.ok(await pings(a.vm, '10.0.10.2', 1), 'two guests on VLAN 10 reach each other');
  assert.ok(!(await pings(other.vm, '10.0.10.1', 1)), 'a guest on VLAN 20 of the same PIF does not reach them');

  await c.api.VIF.unplug(b.vif);
  assert.equal(await c.api.VIF.get_currently_attached(b.vif), false);
  assert.ok(!(await pings(a.vm, '10.0.10.2', 2)), 'unplugging the VIF cuts traffic');
  await c.api.VIF.plug(b.vif);
  // the guest sees a new NIC appear (PCI hot-plug) a moment later; give it its address back
  for (let i = 1; ; i++) {
    await typeOnConsole(c, b.vm, 'sh ip link set eth0 up && ip addr add 10.0.10.2/24 dev eth0 && echo NIC-CONFIGURED');
    const text = await waitSerial(c, b.vm, 'XENON-DONE sh', i);
    if (text.includes('NIC-CONFIGURED')) break;
    assert.ok(i < 30, 'the hot-plugged NIC never appeared in the guest');
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.ok(await pings(a.vm, '10.0.10.2', 3), 'plugging it back restores it');

  const taps = async (): Promise<string[]> => (await sh('ip', ['-n', ns, '-o', 'link', 'show', 'type', 'tun'])).stdout.split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1]).filter((x): x is string => typeof x === 'string' && x.startsWith('xv')).sort();
  const bridges = async (): Promise<string[]> => (await sh('ovs-vsctl', [`--db=unix:${join(dataDir, 'run', 'ovs', 'db.sock')}`, 'list-br'])).stdout.split('\n').filter(Boolean).sort();
  const tapsBefore = await taps();
  const bridgesBefore = await bridges();
  assert.equal(tapsBefore.length, 5, `one tap per running VIF: ${tapsBefore.join(' ')}`);

  c.close();
  daemon.proc.kill('SIGKILL');
  await daemon.exited;
  await startDaemon();
  assert.equal(await c.api.VM.get_power_state(a.vm), 'Running');
  assert.ok(await pings(a.vm, '10.0.10.2', 4), 'after the restart the guests still reach each other');
  assert.ok(await pings(d.vm, '10.0.99.2', 2));
  assert.deepEqual(await taps(), tapsBefore, 'no tap leaked or lost');
  assert.deepEqual(await bridges(), bridgesBefore, 'no bridge leaked or lost');
});
