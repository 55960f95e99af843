import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lockingFlows, lockingBundle, lockingCookie, normalizeLocking, encodeLocking, decodeLocking } from '../../src/network/ovs/locking.ts';
import { InvalidArgumentError } from '../../src/network/backend.ts';

const mac = '02:00:00:00:00:01';

test('locking flows per mode', () => {
  assert.deepEqual(lockingFlows(3, 'vif1', { mode: 'unlocked', ipv4: [], ipv6: [], mac }), []);
  const dis = lockingFlows(3, 'vif1', { mode: 'disabled', ipv4: [], ipv6: [], mac });
  assert.equal(dis.length, 1);
  assert.match(dis[0]!, /priority=4000,in_port=3,actions=drop/);
  const locked = lockingFlows(3, 'vif1', { mode: 'locked', ipv4: ['10.0.0.5'], ipv6: ['fe80::1'], mac });
  assert.ok(locked.some((f) => f.includes(`dl_src=${mac},arp,arp_sha=${mac},arp_spa=10.0.0.5,actions=NORMAL`)));
  assert.ok(locked.some((f) => f.includes('ip,nw_src=10.0.0.5,actions=NORMAL')));
  assert.ok(locked.some((f) => f.includes('ipv6,ipv6_src=fe80::1,actions=NORMAL')));
  assert.match(locked.at(-1)!, /actions=drop$/);
  // locked with no addresses = only the drop rule
  assert.deepEqual(lockingFlows(3, 'vif1', { mode: 'locked', ipv4: [], ipv6: [], mac }), dis);
});

test('bundle replaces by cookie; cookie is stable and per port', () => {
  const c = lockingCookie('vif1');
  assert.equal(c, lockingCookie('vif1'));
  assert.notEqual(c, lockingCookie('vif2'));
  assert.match(c, /^0x58[0-9a-f]{14}$/);
  const b = lockingBundle(3, 'vif1', { mode: 'disabled', ipv4: [], ipv6: [], mac: '' });
  assert.equal(b.split('\n')[0], `delete cookie=${c}/-1`);
  assert.match(b.split('\n')[1]!, /^add cookie=/);
  assert.equal(lockingBundle(null, 'vif1', null), `delete cookie=${c}/-1\n`);
});

test('validation and round trip', () => {
  assert.throws(() => normalizeLocking({ mode: 'locked', ipv4: ['10.0.0.300'], ipv6: [], mac }), InvalidArgumentError);
  assert.throws(() => normalizeLocking({ mode: 'locked', ipv4: [], ipv6: ['zz::1'], mac }), InvalidArgumentError);
  assert.throws(() => normalizeLocking({ mode: 'locked', ipv4: ['10.0.0.1'], ipv6: [], mac: '' }), InvalidArgumentError);
  const n = normalizeLocking({ mode: 'locked', ipv4: ['10.0.0.1'], ipv6: [], mac: '' }, '02:AA:00:00:00:01');
  assert.equal(n.mac, '02:aa:00:00:00:01');
  assert.deepEqual(decodeLocking(encodeLocking(n)), n);
  assert.equal(decodeLocking('garbage'), null);
});
