/**
 * A PIF shows the address the host really has, and a member's device work is
 * done on the member: two daemons (simulated guests, Open vSwitch each) in
 * namespaces of their own, each with its management address on `eth0` (set
 * by the test, outside Xenon) and a second NIC `eth1`. The management PIFs'
 * records are compared with `ip addr` in the hosts' namespaces;
 * VLAN.create, PIF.unplug/plug and VLAN.destroy on the member's eth1, and a bond of
 * its eth1 and eth2, act on the member's switch (its own OVS database) and not
 * on the master's.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { XenApiClient } from '../../src/client/client.ts';
import { ping, sh } from '../network/helpers.ts';
import { allLive, failsWith, hostRefOf, pifOf, PoolLab, ROOT_PASSWORD, until, type LabHost } from './helpers.ts';

const lab = new PoolLab();
const OVS = ['--backend', 'sim', '--network', 'ovs'];
let h1: LabHost;
let h2: LabHost;
let master: XenApiClient;

before(async () => {
  await lab.setup();
  [h1, h2] = await Promise.all([lab.addHost('h1', OVS, { transportNic: true }), lab.addHost('h2', OVS, { spareNic: true })]);
});
after(() => lab.teardown());

async function ovs(h: LabHost, ...args: string[]): Promise<{ code: number; out: string }> {
  const r = await sh('ovs-vsctl', [`--db=unix:${h.dataDir}/run/ovs/db.sock`, ...args]);
  return { code: r.code, out: r.stdout.trim() };
}



/** What `ip addr` says of a device in a host's namespace: its first IPv4 address and prefix. */
async function kernelAddress(h: LabHost, dev: string): Promise<{ ip: string; prefix: number }> {
  const r = await sh('ip', ['-n', h.ns, '-j', '-4', 'addr', 'show', 'dev', dev]);
  const info = (JSON.parse(r.stdout) as { addr_info: { local: string; prefixlen: number }[] }[])[0]!.addr_info[0]!;
  return { ip: info.local, prefix: info.prefixlen };
}

/** Whether a device in a host's namespace is administratively up. */
async function linkUp(h: LabHost, dev: string): Promise<boolean> {
  const r = await sh('ip', ['-n', h.ns, '-j', 'link', 'show', 'dev', dev]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { flags: string[] }[])[0]!.flags.includes('UP');
}

async function nameservers(h: LabHost): Promise<string> {
  const r = await sh('ip', ['netns', 'exec', h.ns, 'cat', '/etc/resolv.conf']);
  return [...r.stdout.matchAll(/^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]).join(',');
}

const newNetwork = (c: XenApiClient, name: string): Promise<string> =>
  c.api.network.create({ name_label: name, name_description: '', MTU: 1500, other_config: {}, tags: [], managed: true } as never);

test('the management PIF shows the host\'s own address (Static), Xenon leaves it where the admin put it', async () => {
  master = await h1.client();
  const mgmt = await pifOf(master, h1, 'eth0');
  const rec = await master.api.PIF.get_record(mgmt);
  const kernel = await kernelAddress(h1, 'eth0');
  assert.equal(rec.management, true);
  assert.equal(rec.ip_configuration_mode, 'Static');
  assert.equal(rec.IP, kernel.ip);
  assert.equal(rec.IP, h1.ip);
  assert.equal(kernel.prefix, 24);
  assert.equal(rec.netmask, '255.255.255.0');
  assert.equal(rec.gateway, '', 'no default route in the namespace');
  assert.equal(rec.DNS, await nameservers(h1));
  // eth1 has no address: None, as before
  assert.equal(await master.api.PIF.get_ip_configuration_mode(await pifOf(master, h1, 'eth1')), 'None');
  // the address stays on the NIC; the NIC is not made an uplink of its bridge
  const bridge = await master.api.network.get_bridge(rec.network);
  assert.equal((await ovs(h1, 'list-ports', bridge)).out, '');

  // a default route the admin adds shows as the gateway after PIF.scan (xapi's update_pif_addresses)
  assert.equal((await sh('ip', ['-n', h1.ns, 'route', 'add', 'default', 'via', lab.clientIp])).code, 0);
  await master.api.PIF.scan(await hostRefOf(master, h1));
  assert.equal(await master.api.PIF.get_gateway(mgmt), lab.clientIp);
  assert.equal((await sh('ip', ['-n', h1.ns, 'route', 'del', 'default'])).code, 0);
  await master.api.PIF.scan(await hostRefOf(master, h1));
  assert.equal(await master.api.PIF.get_gateway(mgmt), '');
});

test('a member\'s management PIF shows its address; a tunnel cannot use an address that is on the NIC itself', async () => {
  const c2 = await h2.client();
  await c2.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h2);
  await allLive(master);
  const m2 = await pifOf(master, h2, 'eth0');
  const rec = await master.api.PIF.get_record(m2);
  assert.equal(rec.ip_configuration_mode, 'Static');
  assert.equal(rec.IP, (await kernelAddress(h2, 'eth0')).ip);
  assert.equal(rec.netmask, '255.255.255.0');
  // PIF.scan of the member reads the member's own configuration (not the master's)
  const host2 = await hostRefOf(master, h2);
  assert.equal((await sh('ip', ['-n', h2.ns, 'route', 'add', 'default', 'via', lab.clientIp])).code, 0);
  await master.api.PIF.scan(host2);
  assert.equal(await master.api.PIF.get_gateway(m2), lab.clientIp);
  assert.equal(await master.api.PIF.get_gateway(await pifOf(master, h1, 'eth0')), '', 'the master\'s has none');
  assert.equal((await sh('ip', ['-n', h2.ns, 'route', 'del', 'default'])).code, 0);
  await master.api.PIF.scan(host2);
  assert.equal(await master.api.PIF.get_gateway(m2), '');
  const priv = await newNetwork(master, 'private');
  // OVS's user-space datapath routes tunnel packets only out of an OVS bridge: the address must be on the PIF's bridge
  await failsWith(master.api.tunnel.create(m2, priv, 'vxlan'), 'TRANSPORT_PIF_NOT_CONFIGURED');
  assert.deepEqual(await master.api.network.get_PIFs(priv), []);
  await master.api.network.destroy(priv);
});

test('VLAN.create, PIF.unplug/plug and VLAN.destroy of a member\'s PIF act on the member, not on the master; xapi\'s NETWORK_ALREADY_CONNECTED', async () => {
  const host2 = await hostRefOf(master, h2);
  const eth1 = await pifOf(master, h2, 'eth1');
  const parent = await master.api.network.get_bridge(await master.api.PIF.get_network(eth1));
  const vnet = await newNetwork(master, 'vlan-77');
  const bridge = await master.api.network.get_bridge(vnet);
  const vlan = await master.api.VLAN.create(eth1, 77, vnet);
  const untagged = await master.api.VLAN.get_untagged_PIF(vlan);
  assert.equal(await master.api.PIF.get_host(untagged), host2);

  // on the member: a fake bridge of tag 77 on eth1's bridge, and its device in the member's namespace
  assert.equal((await ovs(h2, 'br-exists', bridge)).code, 0);
  assert.equal((await ovs(h2, 'br-to-vlan', bridge)).out, '77');
  assert.equal((await ovs(h2, 'br-to-parent', bridge)).out, parent);
  assert.equal((await sh('ip', ['-n', h2.ns, 'link', 'show', bridge])).code, 0);
  // on the master: no VLAN 77 anywhere (network.create made the network's plain, host-internal bridge there)
  assert.notEqual((await ovs(h1, 'br-to-vlan', bridge)).out, '77');
  assert.doesNotMatch((await ovs(h1, '--columns=tag', 'find', 'Port', 'tag=77')).out, /77/);

  // xapi's arguments: [host, the host's PIF on the network]
  assert.deepEqual(await failsWith(master.api.VLAN.create(eth1, 78, vnet), 'NETWORK_ALREADY_CONNECTED'), [host2, untagged]);

  // PIF.plug acts on the member too: its bridge removed behind Xenon's back comes back
  assert.equal((await ovs(h2, 'del-br', bridge)).code, 0);
  await master.api.PIF.plug(untagged);
  assert.equal((await ovs(h2, 'br-to-vlan', bridge)).out, '77');

  // PIF.unplug takes the member's VLAN bridge down (not the master's bridge of that name); PIF.plug up again
  await master.api.PIF.unplug(untagged);
  assert.equal(await linkUp(h2, bridge), false);
  assert.equal(await linkUp(h1, bridge), true);
  assert.equal(await master.api.PIF.get_currently_attached(untagged), false);
  await master.api.PIF.plug(untagged);
  assert.equal(await linkUp(h2, bridge), true);

  // VLAN.destroy: the member's bridge is a plain one again
  await master.api.VLAN.destroy(vlan);
  assert.equal((await ovs(h2, 'br-exists', bridge)).code, 0);
  assert.equal((await ovs(h2, 'br-to-vlan', bridge)).out, '0');
  await master.api.network.destroy(vnet);
});

/** Pings until one answer comes (OVS resolves the remote's MAC for the outer header first), then counts 5. */
async function reaches(from: LabHost, ip: string): Promise<number> {
  await until(`${from.name} reaching ${ip}`, async () => (await ping(from.ns, ip, 1, 0.2, 1)) === 1, 30_000);
  return ping(from.ns, ip, 5, 0.2, 1);
}

test('PIF.reconfigure_ip of the management PIFs with their own addresses moves them to the bridges; a private network over them carries pings', async () => {
  const m1 = await pifOf(master, h1, 'eth0');
  const m2 = await pifOf(master, h2, 'eth0');
  // what an admin does before Xen Orchestra's private network: the management address becomes Xenon's
  for (const [pif, h] of [[m1, h1], [m2, h2]] as const) await master.api.PIF.reconfigure_ip(pif, 'Static', h.ip, '255.255.255.0', '', '');
  for (const [pif, h] of [[m1, h1], [m2, h2]] as const) {
    const bridge = await master.api.network.get_bridge(await master.api.PIF.get_network(pif));
    assert.equal((await kernelAddress(h, bridge)).ip, h.ip, `${h.name}'s address on ${bridge}`);
    assert.doesNotMatch((await sh('ip', ['-n', h.ns, '-4', 'addr', 'show', 'dev', 'eth0'])).stdout, /inet /);
    assert.match((await ovs(h, 'list-ports', bridge)).out, /^eth0$/m);
    assert.equal((await master.api.PIF.get_other_config(pif)).xenon_ip_observed_on, undefined);
    // still reachable from the pool's network
    const r = await lab.runInSwitch('ping', ['-c', '3', '-i', '0.2', '-W', '2', h.ip]);
    assert.equal(r.code, 0, `${h.name} reachable: ${r.stdout}`);
    // the kernel no longer answers from the NIC beside OVS: one answer per ping
    assert.doesNotMatch(r.stdout, /DUP!/);
  }
  await allLive(master);

  const priv = await newNetwork(master, 'private-mgmt');
  const bridge = await master.api.network.get_bridge(priv);
  const t1 = await master.api.tunnel.create(m1, priv, 'vxlan');
  await master.api.tunnel.create(m2, priv, 'vxlan');
  assert.equal((await master.api.tunnel.get_status(t1)).active, 'true');
  for (const [h, cidr] of [[h1, '192.168.81.1/24'], [h2, '192.168.81.2/24']] as const) {
    await until(`${bridge} on ${h.name}`, async () => (await sh('ip', ['-n', h.ns, 'link', 'show', bridge])).code === 0);
    assert.equal((await sh('ip', ['-n', h.ns, 'addr', 'add', cidr, 'dev', bridge])).code, 0);
  }
  assert.equal(await reaches(h1, '192.168.81.2'), 5);
  assert.equal(await reaches(h2, '192.168.81.1'), 5);
  // the pool's own traffic still flows over the management addresses
  await allLive(master);
  assert.equal((await master.api.host.get_all()).length, 2);

  // ovs-vswitchd dies on the member: its watchdog restarts it, and the management address is there again
  const pid = Number(readFileSync(join(h2.dataDir, 'run', 'ovs', 'ovs-vswitchd.pid'), 'utf8').trim());
  assert.ok(pid > 0);
  process.kill(pid, 'SIGKILL');
  const mgmtBridge = await master.api.network.get_bridge(await master.api.PIF.get_network(m2));
  const t0 = Date.now();
  const pidNow = (): number => Number(readFileSync(join(h2.dataDir, 'run', 'ovs', 'ovs-vswitchd.pid'), 'utf8').trim() || 0);
  await until('a new ovs-vswitchd on h2', async () => {
    const now = pidNow();
    return now > 0 && now !== pid && (await sh('kill', ['-0', String(now)])).code === 0;
  }, 60_000, 500);
  await until('h2 reachable again', async () => (await lab.runInSwitch('ping', ['-c', '1', '-W', '1', h2.ip])).code === 0, 60_000, 500);
  console.log(`h2 restarted and reachable again ${Date.now() - t0} ms after ovs-vswitchd was killed`);
  assert.equal((await kernelAddress(h2, mgmtBridge)).ip, h2.ip);
  assert.equal(await reaches(h1, '192.168.81.2'), 5);
  await allLive(master);
});

test('Bond.create of a member\'s PIFs bonds them on the member; Bond.destroy removes it there', async () => {
  const host2 = await hostRefOf(master, h2);
  const [e1, e2] = [await pifOf(master, h2, 'eth1'), await pifOf(master, h2, 'eth2')];
  const bnet = await newNetwork(master, 'bonded');
  const bridge = await master.api.network.get_bridge(bnet);
  const bond = await master.api.Bond.create(bnet, [e1, e2], '', 'active-backup', {});
  const bondPif = await master.api.Bond.get_master(bond);
  assert.equal(await master.api.PIF.get_host(bondPif), host2);
  const device = await master.api.PIF.get_device(bondPif);
  assert.match((await ovs(h2, 'list-ports', bridge)).out, new RegExp(`^${device}$`, 'm'));
  assert.equal((await ovs(h2, 'get', 'Port', device, 'bond_mode')).out, 'active-backup');
  const ifaces = (await ovs(h2, 'get', 'Port', device, 'interfaces')).out;
  assert.equal(ifaces.split(',').length, 2, `two interfaces in the bond: ${ifaces}`);
  assert.doesNotMatch((await ovs(h1, 'list-ports', bridge)).out, new RegExp(device));
  assert.notEqual((await ovs(h1, 'list', 'Port', device)).code, 0, 'no bond port on the master');
  // xapi's assert_no_other_local_pifs
  assert.deepEqual(await failsWith(master.api.Bond.create(bnet, [await pifOf(master, h2, 'eth0')], '', 'active-backup', {}), 'NETWORK_ALREADY_CONNECTED'), [host2, bondPif]);

  await master.api.Bond.destroy(bond);
  assert.notEqual((await ovs(h2, 'list', 'Port', device)).code, 0, 'the bond port is gone on the member');
  assert.equal(await master.api.PIF.get_bond_slave_of(e1), 'OpaqueRef:NULL');
  await master.api.network.destroy(bnet);
});
