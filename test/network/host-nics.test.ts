import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listHostNics, parseSysDump } from '../../src/network/host-nics.ts';
import { TestNet, must } from './helpers.ts';

test('parseSysDump', () => {
  const m = parseSysDump('@eth0\naddress=52:54:00:12:34:56\nmtu=1500\ndevice=1\n@lo\ntype=772\n');
  assert.equal(m.get('eth0')?.address, '52:54:00:12:34:56');
  assert.equal(m.get('lo')?.type, '772');
});

test('listHostNics in a test namespace: veth ends yes; lo, bridges, taps no', async () => {
  const net = await new TestNet().setup();
  try {
    await net.addHost('eth7', '10.80.0.1/24'); // "eth7" end in the switch namespace
    await must('ip', ['-n', net.ns, 'link', 'set', 'eth7', 'mtu', '9000']);
    await must('ip', ['-n', net.ns, 'link', 'add', 'name', 'xbrx', 'type', 'bridge']);
    await must('ip', ['-n', net.ns, 'tuntap', 'add', 'dev', 'xtapx', 'mode', 'tap']);
    const nics = await listHostNics({ netns: net.ns });
    assert.deepEqual(nics.map((n) => n.device), ['eth7']);
    const n = nics[0]!;
    assert.equal(n.kind, 'veth');
    assert.equal(n.mtu, 9000);
    assert.equal(n.carrier, true);
    assert.match(n.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.deepEqual(await listHostNics({ netns: net.ns, includeVeth: false }), []);
  } finally {
    await net.teardown();
  }
});

test('listHostNics in the host namespace only reads (never lists lo)', async () => {
  const nics = await listHostNics();
  assert.ok(!nics.some((n) => n.device === 'lo'));
  for (const n of nics) assert.equal(n.kind, 'physical');
});
