/**
 * Reading the host's own addresses (network/addresses.ts) and what a PIF
 * record says of them (messages/pif-address.ts), in namespaces the test
 * makes: a static address is Static, one with a lease's lifetime (as a DHCP
 * client sets it) is DHCP, the default route gives the gateway, an address on
 * the bridge wins over one on the NIC.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readHostIpConfig } from '../../src/network/addresses.ts';
import { observedIp, OBSERVED_ON } from '../../src/messages/pif-address.ts';
import type { Row } from '../../src/db/store.ts';
import { must, TestNet } from './helpers.ts';

const net = new TestNet();
let ns = '';

before(async () => {
  await net.setup();
  ns = await net.addHost('hosta', '10.77.0.2/24');
  await must('ip', ['-n', ns, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p']);
  await must('ip', ['-n', ns, 'link', 'set', 'eth1', 'up']);
  await must('ip', ['-n', ns, 'link', 'add', 'xenbr1', 'type', 'veth', 'peer', 'name', 'xenbr1p']);
  await must('ip', ['-n', ns, 'link', 'set', 'xenbr1', 'up']);
  // a lease: what dhclient or systemd-networkd set (finite lifetimes)
  await must('ip', ['-n', ns, 'addr', 'add', '10.78.0.5/16', 'dev', 'eth1', 'valid_lft', '3600', 'preferred_lft', '3600']);
  await must('ip', ['-n', ns, 'route', 'add', 'default', 'via', '10.77.0.1']);
});
after(() => net.teardown());

const pif = (device: string, management = false): Row<'PIF'> =>
  ({ device, management, other_config: { keep: 'x' }, ip_configuration_mode: 'None' }) as unknown as Row<'PIF'>;

test('a static address is Static with the default route\'s gateway; a lease is DHCP; the bridge\'s address wins', async () => {
  const cfg = await readHostIpConfig(ns);
  assert.deepEqual(cfg.defaultRoute, { gateway: '10.77.0.1', device: 'eth0' });
  const eth0 = observedIp(pif('eth0', true), 'xenbr0', cfg);
  assert.equal(eth0?.ip_configuration_mode, 'Static');
  assert.equal(eth0?.IP, '10.77.0.2');
  assert.equal(eth0?.netmask, '255.255.255.0');
  assert.equal(eth0?.gateway, '10.77.0.1');
  assert.equal(eth0?.DNS, cfg.nameservers.join(','));
  assert.deepEqual(eth0?.other_config, { keep: 'x', [OBSERVED_ON]: 'eth0' });

  const eth1 = observedIp(pif('eth1'), 'xenbr1', cfg);
  assert.equal(eth1?.ip_configuration_mode, 'DHCP');
  assert.equal(eth1?.IP, '10.78.0.5');
  assert.equal(eth1?.netmask, '255.255.0.0');
  assert.equal(eth1?.gateway, '', 'the default route leaves by eth0');
  assert.equal(eth1?.DNS, '');

  await must('ip', ['-n', ns, 'addr', 'add', '10.79.0.9/28', 'dev', 'xenbr1']);
  const onBridge = observedIp(pif('eth1'), 'xenbr1', await readHostIpConfig(ns));
  assert.equal(onBridge?.IP, '10.79.0.9');
  assert.equal(onBridge?.netmask, '255.255.255.240');
  assert.equal(onBridge?.ip_configuration_mode, 'Static');
  assert.equal(onBridge?.other_config[OBSERVED_ON], 'xenbr1');
  assert.equal(observedIp(pif('eth9'), 'xenbr9', cfg), undefined);
});
