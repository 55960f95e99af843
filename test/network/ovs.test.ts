import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { OvsBackend } from '../../src/network/ovs/ovs-backend.ts';
import { NotOwnedError, BridgeNotFoundError, ConflictError } from '../../src/network/backend.ts';
import { TestNet, ping, sh, must, sleep } from './helpers.ts';

const net = new TestNet();
let ovs: OvsBackend;
const runDir = () => join(net.dir, 'run', 'ovs');

before(async () => {
  await net.setup();
  ovs = new OvsBackend({ runDir: runDir(), netns: net.ns });
  await ovs.start();
});

after(async () => {
  try {
    await ovs?.stop();
  } finally {
    await net.teardown();
  }
});

test('daemons run in the test namespace from the private run dir', async () => {
  const pid = await ovs.daemons.pid('ovs-vswitchd');
  assert.ok(pid);
  const hostNs = await must('readlink', ['/proc/self/ns/net']);
  const dNs = await must('readlink', [`/proc/${pid}/ns/net`]);
  assert.notEqual(dNs, hostNs);
  // bridges appear in the test namespace, not the host's
  await ovs.ensureBridge('xbr0');
  const inNs = await sh('ip', ['-n', net.ns, 'link', 'show', 'xbr0']);
  assert.equal(inNs.code, 0);
  const inHost = await sh('ip', ['link', 'show', 'xbr0']);
  assert.notEqual(inHost.code, 0);
  assert.deepEqual(await ovs.listBridges(), ['xbr0']);
});

test('VLAN isolation: ports tagged 10,10,20', async () => {
  await ovs.ensureBridge('xbr0');
  await net.addHost('va1', '10.10.0.1/24');
  await net.addHost('va2', '10.10.0.2/24');
  await net.addHost('va3', '10.10.0.3/24');
  await ovs.addPort('va1', 'xbr0', { vlanTag: 10 });
  await ovs.addPort('va2', 'xbr0', { vlanTag: 10 });
  await ovs.addPort('va3', 'xbr0', { vlanTag: 20 });
  assert.equal(await ping(net.hostNs('va1'), '10.10.0.2', 3), 3);
  assert.equal(await ping(net.hostNs('va1'), '10.10.0.3', 2, 0.2, 1), 0);
  assert.equal(await ping(net.hostNs('va3'), '10.10.0.2', 2, 0.2, 1), 0);
});

test('VLAN network as a fake bridge (add-br child parent tag)', async () => {
  await ovs.ensureBridge('xbr0');
  await ovs.ensureBridge('xvl30', { vlan: { parentBridge: 'xbr0', tag: 30 } });
  await ovs.ensureBridge('xvl30', { vlan: { parentBridge: 'xbr0', tag: 30 } }); // idempotent
  assert.deepEqual(await ovs.listBridges(), ['xbr0', 'xvl30']);
  await net.addHost('vf1', '10.30.0.1/24');
  await net.addHost('vf2', '10.30.0.2/24');
  await net.addHost('vf3', '10.30.0.3/24');
  await ovs.addPort('vf1', 'xvl30');
  await ovs.addPort('vf2', 'xbr0', { vlanTag: 30 }); // same VLAN, on the parent
  await ovs.addPort('vf3', 'xbr0'); // untagged
  assert.equal((await ovs.vsctl('get', 'Port', 'vf1', 'tag')).trim(), '30');
  assert.equal(await ping(net.hostNs('vf1'), '10.30.0.2', 3), 3);
  assert.equal(await ping(net.hostNs('vf1'), '10.30.0.3', 2, 0.2, 1), 0);
  // a tap on the VLAN bridge gets the VLAN's tag
  await ovs.createTap('xtap30', 'xvl30', { mac: '02:00:00:00:30:01' });
  assert.equal((await ovs.vsctl('get', 'Port', 'xtap30', 'tag')).trim(), '30');
  assert.deepEqual((await ovs.listTaps()).find((t) => t.name === 'xtap30'), { name: 'xtap30', bridge: 'xvl30' });
  await ovs.removeTap('xtap30');
});

test('createTap: persistent, owned, up, an OVS port with its tag', async () => {
  await ovs.ensureBridge('xbr0');
  await ovs.createTap('xtap1', 'xbr0', { mac: '02:00:00:00:00:01', vlanTag: 10, mtu: 1400 });
  const link = JSON.parse(await must('ip', ['-n', net.ns, '-d', '-j', 'link', 'show', 'dev', 'xtap1']))[0];
  assert.equal(link.linkinfo.info_kind, 'tun');
  assert.equal(link.ifalias, 'xenon-tap');
  assert.equal(link.mtu, 1400);
  assert.ok(link.flags.includes('UP'));
  assert.equal((await ovs.vsctl('get', 'Port', 'xtap1', 'tag')).trim(), '10');
  const ofport = Number((await ovs.vsctl('get', 'Interface', 'xtap1', 'ofport')).trim());
  assert.ok(ofport > 0, `ofport ${ofport}`);
  assert.ok((await ovs.listTaps()).some((t) => t.name === 'xtap1' && t.bridge === 'xbr0'));
  // idempotent, and can move the tag
  await ovs.createTap('xtap1', 'xbr0', { mac: '02:00:00:00:00:01', vlanTag: 20 });
  assert.equal((await ovs.vsctl('get', 'Port', 'xtap1', 'tag')).trim(), '20');
  await ovs.removeTap('xtap1');
  assert.notEqual((await sh('ip', ['-n', net.ns, 'link', 'show', 'xtap1'])).code, 0);
  assert.ok(!(await ovs.listTaps()).some((t) => t.name === 'xtap1'));
});

test('errors: unknown bridge, foreign bridge', async () => {
  await assert.rejects(ovs.createTap('xtap9', 'nope0'), BridgeNotFoundError);
  await ovs.vsctl('add-br', 'foreign0', '--', 'set', 'Bridge', 'foreign0', 'datapath_type=netdev');
  await assert.rejects(ovs.removeBridge('foreign0'), NotOwnedError);
  await assert.rejects(ovs.ensureBridge('foreign0'), NotOwnedError);
  assert.ok(!(await ovs.listBridges()).includes('foreign0'));
  await ovs.vsctl('del-br', 'foreign0');
});

test('MAC/IP locking: a locked port can only send from its MAC and IPs', async () => {
  await ovs.ensureBridge('xlk');
  const mac1 = '02:00:00:00:40:01';
  const h1 = await net.addHost('lk1', '10.40.0.1/24', { mac: mac1 });
  await net.addHost('lk2', '10.40.0.2/24');
  await must('ip', ['-n', h1, 'addr', 'add', '10.40.0.9/24', 'dev', 'eth0']);
  await ovs.addPort('lk1', 'xlk', { mac: mac1, locking: { mode: 'locked', ipv4: ['10.40.0.1'], ipv6: [], mac: '' } });
  await ovs.addPort('lk2', 'xlk');
  const pingFrom = async (src: string) => {
    await sh('ip', ['-n', h1, 'neigh', 'flush', 'all']);
    const r = await sh('ip', ['netns', 'exec', h1, 'ping', '-c', '2', '-i', '0.2', '-W', '1', '-q', '-I', src, '10.40.0.2']);
    return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
  };
  assert.equal(await pingFrom('10.40.0.1'), 2, 'allowed IP');
  assert.equal(await pingFrom('10.40.0.9'), 0, 'spoofed IP is dropped');
  const flows = await ovs.ofctl('xlk', 'dump-flows');
  assert.match(flows, /priority=4000.*actions=drop/);
  assert.match(flows, /arp_spa=10\.40\.0\.1/);
  // a different MAC from the same port is dropped
  await must('ip', ['-n', h1, 'link', 'set', 'eth0', 'address', '02:00:00:00:40:99']);
  assert.equal(await pingFrom('10.40.0.1'), 0, 'spoofed MAC is dropped');
  await must('ip', ['-n', h1, 'link', 'set', 'eth0', 'address', mac1]);
  assert.equal(await pingFrom('10.40.0.1'), 2);
  await ovs.setLocking('lk1', { mode: 'disabled', ipv4: [], ipv6: [], mac: '' });
  assert.equal(await pingFrom('10.40.0.1'), 0, 'disabled drops all');
  await ovs.setLocking('lk1', { mode: 'unlocked', ipv4: [], ipv6: [], mac: '' });
  assert.equal(await pingFrom('10.40.0.9'), 2, 'unlocked allows anything');
  assert.doesNotMatch(await ovs.ofctl('xlk', 'dump-flows'), /priority=4000/);
  await ovs.setLocking('lk1', { mode: 'locked', ipv4: ['10.40.0.1'], ipv6: [], mac: mac1 });
  assert.equal(await pingFrom('10.40.0.9'), 0);
});

test('TCP bulk transfer through the netdev bridge (needs user-space TSO)', async () => {
  const sink = `require('net').createServer(c=>{let n=0;c.on('data',d=>n+=d.length);c.on('end',()=>{console.log(n);process.exit(0)})}).listen(5301,'10.10.0.2')`;
  const src = `const c=require('net').connect(5301,'10.10.0.2',()=>{c.end(Buffer.alloc(32<<20))})`;
  const server = sh('ip', ['netns', 'exec', net.hostNs('va2'), process.execPath, '-e', sink], { timeoutMs: 30_000 });
  await sleep(400);
  const client = await sh('ip', ['netns', 'exec', net.hostNs('va1'), process.execPath, '-e', src], { timeoutMs: 30_000 });
  assert.equal(client.code, 0, client.stderr);
  const got = await server;
  assert.equal(got.stdout.trim(), String(32 << 20));
});

test('interfaceStats counts move', async () => {
  const before = await ovs.interfaceStats('va1');
  const r = await sh('ip', ['netns', 'exec', net.hostNs('va1'), 'ping', '-c', '5', '-i', '0.05', '-s', '1000', '-q', '10.10.0.2']);
  assert.match(r.stdout, /5 received/);
  const after = await ovs.interfaceStats('va1');
  assert.ok(after.rxBytes - before.rxBytes >= 5 * 1000, `rx ${before.rxBytes} -> ${after.rxBytes}`);
  assert.ok(after.txBytes - before.txBytes >= 5 * 1000, `tx ${before.txBytes} -> ${after.txBytes}`);
  assert.ok(after.rxPackets - before.rxPackets >= 5);
  assert.ok(after.txPackets - before.txPackets >= 5);
});

test('uplink and MTU', async () => {
  await net.addHost('upl', '10.60.0.2/24');
  await ovs.ensureBridge('xup', { uplink: 'upl', mtu: 9000 });
  assert.equal((await ovs.vsctl('get', 'Interface', 'xup', 'mtu_request')).trim(), '9000');
  assert.equal((await ovs.vsctl('get', 'Port', 'upl', 'external_ids:xenon-role')).trim(), 'uplink');
  const link = JSON.parse(await must('ip', ['-n', net.ns, '-j', 'link', 'show', 'dev', 'upl']))[0];
  assert.equal(link.mtu, 9000);
  // host IP on the bridge's internal port reaches the uplink's far side
  await must('ip', ['-n', net.ns, 'addr', 'add', '10.60.0.1/24', 'dev', 'xup']);
  assert.equal(await ping(net.ns, '10.60.0.2', 2), 2);
  await ovs.removeBridge('xup');
  assert.notEqual((await sh('ip', ['-n', net.ns, 'link', 'show', 'xup'])).code, 0);
});

test('bond: active-backup fails over', async () => {
  await ovs.ensureBridge('xbond');
  const peer = net.hostNs('bpeer');
  await must('ip', ['netns', 'add', peer]);
  net.hosts.push(peer);
  await must('ip', ['-n', peer, 'link', 'add', 'name', 'pbr', 'type', 'bridge']);
  for (const i of [1, 2]) {
    await must('ip', ['link', 'add', `bo${i}`, 'netns', net.ns, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', peer]);
    await must('ip', ['-n', peer, 'link', 'set', `p${i}`, 'master', 'pbr', 'up']);
  }
  await must('ip', ['-n', peer, 'addr', 'add', '10.50.0.2/24', 'dev', 'pbr']);
  await must('ip', ['-n', peer, 'link', 'set', 'pbr', 'up']);
  await net.addHost('bh1', '10.50.0.1/24');
  await ovs.addPort('bh1', 'xbond');
  await ovs.createBond('xbond', 'xbond0', ['bo1', 'bo2'], 'active-backup');
  assert.equal((await ovs.vsctl('get', 'Port', 'xbond0', 'bond_mode')).trim(), 'active-backup');
  assert.ok(await ping(net.hostNs('bh1'), '10.50.0.2', 3) >= 2);
  const show = await ovs.bondShow('xbond0');
  const active = /member (bo\d): enabled\s*\n\s*active member/.exec(show)?.[1] ?? /active member mac.*\((bo\d)\)/.exec(show)?.[1];
  assert.ok(active, show);
  await must('ip', ['-n', net.ns, 'link', 'set', active, 'down']);
  await sleep(500);
  assert.ok(await ping(net.hostNs('bh1'), '10.50.0.2', 5, 0.2, 1) >= 3, await ovs.bondShow('xbond0'));
  await must('ip', ['-n', net.ns, 'link', 'set', active, 'up']);
  await assert.rejects(ovs.createBond('xbond', 'xbond1', ['bo1', 'bo2'], 'balance-slb'), ConflictError);
  await ovs.removeBond('xbond', 'xbond0');
  await ovs.createBond('xbond', 'xbond1', ['bo1', 'bo2'], 'balance-slb');
  assert.equal((await ovs.vsctl('get', 'Port', 'xbond1', 'bond_mode')).trim(), 'balance-slb');
  await ovs.removeBond('xbond', 'xbond1');
  assert.equal((await ovs.vsctl('--if-exists', 'get', 'Port', 'xbond1', 'name')).trim(), '');
  await ovs.removeBridge('xbond');
});

test('restart: a new backend instance adopts the running daemons without disrupting traffic', async () => {
  const pidVs = await ovs.daemons.pid('ovs-vswitchd');
  const pidDb = await ovs.daemons.pid('ovsdb-server');
  const flood = sh('ip', ['netns', 'exec', net.hostNs('va1'), 'ping', '-c', '100', '-i', '0.01', '-W', '1', '-q', '10.10.0.2']);
  await sleep(100);
  await ovs.detach();
  ovs = new OvsBackend({ runDir: runDir(), netns: net.ns });
  await ovs.start();
  const r = await flood;
  assert.match(r.stdout, /100 received/, r.stdout);
  assert.equal(await ovs.daemons.pid('ovs-vswitchd'), pidVs);
  assert.equal(await ovs.daemons.pid('ovsdb-server'), pidDb);
  assert.ok((await ovs.listBridges()).includes('xbr0'));
});

test('crash: ovs-vswitchd killed; start() restarts it and re-installs locking flows', async () => {
  const pid = await ovs.daemons.pid('ovs-vswitchd');
  assert.ok(pid);
  process.kill(pid, 'SIGKILL');
  await sleep(200);
  assert.equal(await ovs.daemons.healthy('ovs-vswitchd'), false);
  const fresh = new OvsBackend({ runDir: runDir(), netns: net.ns });
  await fresh.start();
  ovs = fresh;
  assert.notEqual(await ovs.daemons.pid('ovs-vswitchd'), pid);
  assert.match(await ovs.ofctl('xlk', 'dump-flows'), /priority=4000/);
  await sleep(300);
  assert.ok(await ping(net.hostNs('va1'), '10.10.0.2', 3) >= 2);
});

test('watchdog restarts a dead ovs-vswitchd', async () => {
  await ovs.detach();
  ovs = new OvsBackend({ runDir: runDir(), netns: net.ns, watchdogMs: 200, log: (m) => console.log(m) });
  await ovs.start();
  const pid = (await ovs.daemons.pid('ovs-vswitchd'))!;
  process.kill(pid, 'SIGKILL');
  const end = Date.now() + 10_000;
  let back = false;
  while (Date.now() < end && !back) {
    await sleep(200);
    const now = await ovs.daemons.pid('ovs-vswitchd');
    back = now !== null && now !== pid && (await ovs.daemons.healthy('ovs-vswitchd'));
  }
  assert.ok(back);
  // the watchdog re-installs locking rules after the restart (poll: the machine may be loaded)
  let flows = '';
  for (let i = 0; i < 50 && !/priority=4000/.test(flows); i++) {
    await sleep(200);
    flows = await ovs.ofctl('xlk', 'dump-flows').catch(() => '');
  }
  assert.match(flows, /priority=4000/);
});

test('reconcile removes stale Xenon objects, creates missing ones, leaves foreign ones alone', async () => {
  await ovs.ensureBridge('xstale');
  await ovs.createTap('xstaletap', 'xstale');
  await ovs.vsctl('add-br', 'foreign1', '--', 'set', 'Bridge', 'foreign1', 'datapath_type=netdev');
  await must('ip', ['-n', net.ns, 'link', 'add', 'lbr0', 'type', 'bridge']);
  const desired = {
    bridges: [
      { name: 'xbr0', ports: ['va1', 'va2'] },
      { name: 'xnew', mtu: 1500 },
      { name: 'xvl30', vlan: { parentBridge: 'xbr0', tag: 30 } },
    ],
    taps: [{ name: 'xtapr', bridge: 'xnew', vlanTag: 5 }],
  };
  const res = await ovs.reconcile(desired);
  for (const n of ['xstale', 'xstaletap', 'xlk', 'va3', 'vf1']) assert.ok(res.removed.includes(n), `${n} removed: ${res.removed}`);
  assert.deepEqual(res.created.sort(), ['xnew', 'xtapr']);
  assert.deepEqual(await ovs.listBridges(), ['xbr0', 'xnew', 'xvl30']);
  assert.deepEqual(await ovs.listTaps(), [{ name: 'xtapr', bridge: 'xnew' }]);
  assert.notEqual((await sh('ip', ['-n', net.ns, 'link', 'show', 'xstaletap'])).code, 0);
  // foreign objects untouched
  assert.equal((await ovs.vsctl('br-exists', 'foreign1')), '');
  assert.equal((await sh('ip', ['-n', net.ns, 'link', 'show', 'lbr0'])).code, 0);
  assert.equal(await ping(net.hostNs('va1'), '10.10.0.2', 2), 2);
  // second run is a no-op
  assert.deepEqual(await ovs.reconcile(desired), { removed: [], created: [] });
  // removing a bridge keeps the tap device; reconcile then recreates the bridge
  await ovs.removeBridge('xnew');
  assert.deepEqual(await ovs.listTaps(), [{ name: 'xtapr', bridge: '' }]);
  const res2 = await ovs.reconcile(desired);
  assert.deepEqual(res2.created.sort(), ['xnew', 'xtapr']);
  await ovs.vsctl('del-br', 'foreign1');
});
