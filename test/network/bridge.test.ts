import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BridgeBackend } from '../../src/network/bridge/bridge-backend.ts';
import { NotOwnedError, UnsupportedError, VlanUnsupportedError, BridgeNotFoundError } from '../../src/network/backend.ts';
import { TestNet, ping, sh, must } from './helpers.ts';

const net = new TestNet();
let lb: BridgeBackend;

before(async () => {
  await net.setup();
  lb = new BridgeBackend({ netns: net.ns });
  await lb.start();
});
after(async () => {
  await net.teardown();
});

test('linux bridge: ports ping, stats move, taps, removal', async () => {
  await lb.ensureBridge('xlb0', { mtu: 1500 });
  assert.deepEqual(await lb.listBridges(), ['xlb0']);
  assert.notEqual((await sh('ip', ['link', 'show', 'xlb0'])).code, 0, 'not in the host namespace');
  await net.addHost('h1', '10.70.0.1/24');
  await net.addHost('h2', '10.70.0.2/24');
  await lb.addPort('h1', 'xlb0');
  await lb.addPort('h2', 'xlb0');
  const before = await lb.interfaceStats('h1');
  assert.equal(await ping(net.hostNs('h1'), '10.70.0.2', 3), 3);
  const after = await lb.interfaceStats('h1');
  assert.ok(after.rxPackets - before.rxPackets >= 3);
  assert.ok(after.txBytes > before.txBytes);
  await lb.createTap('xlt1', 'xlb0', { mac: '02:00:00:00:70:01', mtu: 1400 });
  const tap = JSON.parse(await must('ip', ['-n', net.ns, '-d', '-j', 'link', 'show', 'dev', 'xlt1']))[0];
  assert.equal(tap.master, 'xlb0');
  assert.equal(tap.mtu, 1400);
  assert.deepEqual(await lb.listTaps(), [{ name: 'xlt1', bridge: 'xlb0' }]);
  await lb.removeTap('xlt1');
  assert.deepEqual(await lb.listTaps(), []);
});

test('linux bridge: unsupported features throw typed errors', async () => {
  await assert.rejects(lb.ensureBridge('xlbv', { vlan: { parentBridge: 'xlb0', tag: 10 } }), VlanUnsupportedError);
  await assert.rejects(lb.createTap('xlt2', 'xlb0', { vlanTag: 10 }), VlanUnsupportedError);
  await assert.rejects(lb.createTap('xlt2', 'xlb0', { locking: { mode: 'locked', ipv4: ['1.2.3.4'], ipv6: [], mac: '02:00:00:00:00:01' } }), UnsupportedError);
  await assert.rejects(lb.createBond('xlb0', 'bond0', ['a', 'b'], 'active-backup'), UnsupportedError);
  await assert.rejects(lb.createTap('xlt2', 'nosuch0'), BridgeNotFoundError);
});

test('linux bridge: reconcile leaves a foreign bridge alone', async () => {
  await must('ip', ['-n', net.ns, 'link', 'add', 'name', 'foreign0', 'type', 'bridge']);
  await assert.rejects(lb.removeBridge('foreign0'), NotOwnedError);
  await lb.ensureBridge('xlbstale');
  await lb.createTap('xlt3', 'xlbstale');
  const desired = { bridges: [{ name: 'xlb0', ports: ['h1'] }, { name: 'xlb1' }], taps: [{ name: 'xlt4', bridge: 'xlb1' }] };
  const res = await lb.reconcile(desired);
  assert.deepEqual(res.removed.sort(), ['h2', 'xlbstale', 'xlt3']);
  assert.deepEqual(res.created.sort(), ['xlb1', 'xlt4']);
  assert.deepEqual(await lb.listBridges(), ['xlb0', 'xlb1']);
  assert.equal((await sh('ip', ['-n', net.ns, 'link', 'show', 'foreign0'])).code, 0);
  assert.deepEqual(await lb.reconcile(desired), { removed: [], created: [] });
  await lb.removeBridge('xlb1');
  assert.deepEqual(await lb.listTaps(), [{ name: 'xlt4', bridge: '' }]);
});
