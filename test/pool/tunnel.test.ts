/**
 * Cross-host private networks over tunnels: three daemons (simulated guests,
 * Open vSwitch each) in namespaces of their own, with a second NIC (`eth1`)
 * as the transport network. tunnel.create on each host's transport PIF gives
 * every host's bridge of the private network a VXLAN or GRE port to each
 * other host; addresses on those bridges in the hosts' namespaces ping each
 * other, so frames really cross. xapi's checks, keys that keep networks apart,
 * a host that joins later getting the pool's tunnels, placement, destroy, xe.
 * A fourth daemon with Linux bridges answers OPENVSWITCH_NOT_ACTIVE.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { XenApiClient } from '../../src/client/client.ts';
import { ping, sh } from '../network/helpers.ts';
import { runXe } from '../cli/xe-helpers.ts';
import { allLive, failsWith, hostRefOf, pifOf, PoolLab, ROOT_PASSWORD, type LabHost } from './helpers.ts';

const lab = new PoolLab();
const OVS = ['--backend', 'sim', '--network', 'ovs'];
let h1: LabHost;
let h2: LabHost;
let h3: LabHost;
let h4: LabHost;
let master: XenApiClient;
/** Network refs: private-1 (vxlan), private-2 (gre). */
let net1 = '';
let net2 = '';
let bridge1 = '';
let bridge2 = '';

before(async () => {
  await lab.setup();
  [h1, h2, h3, h4] = await Promise.all([
    lab.addHost('h1', OVS, { transportNic: true }),
    lab.addHost('h2', OVS, { transportNic: true }),
    lab.addHost('h3', OVS, { transportNic: true }),
    lab.addHost('h4', ['--backend', 'sim', '--network', 'bridge'], { transportNic: true }),
  ]);
});
after(() => lab.teardown());

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Pings until one answer comes (OVS resolves the remote's MAC for the outer header on the first packets), then counts 5. */
async function reaches(from: LabHost, ip: string): Promise<number> {
  await until(`${from.name} reaching ${ip}`, async () => (await ping(from.ns, ip, 1, 0.2, 1)) === 1, 30_000);
  return ping(from.ns, ip, 5, 0.2, 1);
}

async function ovs(h: LabHost, ...args: string[]): Promise<string> {
  const r = await sh('ovs-vsctl', [`--db=unix:${h.dataDir}/run/ovs/db.sock`, ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** The tunnel ports of a bridge on a host, with their protocol, remote and key. */
async function tunnelPorts(h: LabHost, bridge: string): Promise<{ type: string; remote: string; key: string }[]> {
  const ports = (await ovs(h, 'list-ports', bridge)).split('\n').filter((p) => p.startsWith('xt'));
  return Promise.all(ports.map(async (p) => ({
    type: await ovs(h, 'get', 'Interface', p, 'type'),
    remote: (await ovs(h, 'get', 'Interface', p, 'options:remote_ip')).replace(/"/g, ''),
    key: (await ovs(h, 'get', 'Interface', p, 'options:key')).replace(/"/g, ''),
  })));
}



const transportIp = (n: number): string => `${lab.transportPrefix}.${n}`;

async function configureTransport(c: XenApiClient, h: LabHost, n: number): Promise<string> {
  const pif = await pifOf(c, h, 'eth1');
  await c.api.PIF.reconfigure_ip(pif, 'Static', transportIp(n), '255.255.255.0', '', '');
  return pif;
}

async function addAddress(h: LabHost, bridge: string, cidr: string): Promise<void> {
  await until(`${bridge} on ${h.name}`, async () => (await sh('ip', ['-n', h.ns, 'link', 'show', bridge])).code === 0);
  const r = await sh('ip', ['-n', h.ns, 'addr', 'add', cidr, 'dev', bridge]);
  assert.equal(r.code, 0, r.stderr);
}

const newNetwork = (c: XenApiClient, name: string, managed = true): Promise<string> =>
  c.api.network.create({ name_label: name, name_description: '', MTU: 1500, other_config: {}, tags: [], managed } as never);

test('tunnel.create: xapi\'s checks, the access PIF and tunnel records, the transport address on the member', async () => {
  master = await h1.client();
  const c2 = await h2.client();
  await c2.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h2);
  await allLive(master);

  const p1 = await pifOf(master, h1, 'eth1');
  net1 = await newNetwork(master, 'private-1');
  bridge1 = await master.api.network.get_bridge(net1);
  await failsWith(master.api.tunnel.create(p1, net1, 'vxlan'), 'TRANSPORT_PIF_NOT_CONFIGURED');
  assert.deepEqual(await master.api.network.get_PIFs(net1), [], 'a refused create leaves no records');

  // the transport addresses: the member's is applied on the member, to its eth1 bridge with eth1 as uplink
  await configureTransport(master, h1, 1);
  const p2 = await configureTransport(master, h2, 2);
  const xenbr1 = await master.api.network.get_bridge(await master.api.PIF.get_network(p2));
  assert.match((await sh('ip', ['-n', h2.ns, '-4', 'addr', 'show', 'dev', xenbr1])).stdout, new RegExp(`${transportIp(2)}/24`));
  assert.match(await ovs(h2, 'list-ports', xenbr1), /^eth1$/m);
  assert.equal(await reaches(h1, transportIp(2)), 5);

  const t1 = await master.api.tunnel.create(p1, net1, 'vxlan');
  const t2 = await master.api.tunnel.create(p2, net1, 'vxlan');
  const [r1, r2] = await Promise.all([master.api.tunnel.get_record(t1), master.api.tunnel.get_record(t2)]);
  assert.equal(r1.transport_PIF, p1);
  assert.equal(r1.protocol, 'vxlan');
  assert.equal(r1.status.active, 'true');
  assert.equal(r2.status.active, 'true');
  assert.ok(Number(r1.status.key) > 0);
  assert.equal(r1.status.key, r2.status.key, 'one key per network');
  const access = await master.api.PIF.get_record(r2.access_PIF);
  assert.equal(access.device, 'tunnel0');
  assert.equal(access.VLAN, -1);
  assert.equal(access.network, net1);
  assert.equal(access.host, await hostRefOf(master, h2));
  assert.equal(access.physical, false);
  assert.equal(access.currently_attached, true);
  assert.deepEqual(access.tunnel_access_PIF_of, [t2]);
  assert.deepEqual(await master.api.PIF.get_tunnel_transport_PIF_of(p2), [t2]);

  // xapi's refusals
  await failsWith(master.api.tunnel.create(p1, net1, 'vxlan'), 'NETWORK_ALREADY_CONNECTED');
  const other = await newNetwork(master, 'other');
  await failsWith(master.api.tunnel.create(r1.access_PIF, other, 'vxlan'), 'IS_TUNNEL_ACCESS_PIF');
  await failsWith(master.api.tunnel.create(p1, await newNetwork(master, 'unmanaged', false), 'vxlan'), 'NETWORK_UNMANAGED');
  await master.api.network.destroy(other);

  // Linux bridges: no tunnels, as xapi without Open vSwitch
  const c4 = await h4.client();
  const p4 = await configureTransport(c4, h4, 4);
  await failsWith(c4.api.tunnel.create(p4, await newNetwork(c4, 'private'), 'gre'), 'OPENVSWITCH_NOT_ACTIVE');
});

test('frames cross: VXLAN and GRE private networks between two hosts, kept apart by their keys', async () => {
  const key1 = (await master.api.tunnel.get_record((await master.api.PIF.get_tunnel_access_PIF_of(await pifOf(master, h1, 'tunnel0')))[0])).status.key;
  assert.deepEqual(await tunnelPorts(h1, bridge1), [{ type: 'vxlan', remote: transportIp(2), key: key1 }]);
  assert.deepEqual(await tunnelPorts(h2, bridge1), [{ type: 'vxlan', remote: transportIp(1), key: key1 }]);
  await addAddress(h1, bridge1, '192.168.71.1/24');
  await addAddress(h2, bridge1, '192.168.71.2/24');
  assert.equal(await reaches(h1, '192.168.71.2'), 5);

  net2 = await newNetwork(master, 'private-2');
  bridge2 = await master.api.network.get_bridge(net2);
  const g1 = await master.api.tunnel.create(await pifOf(master, h1, 'eth1'), net2, 'gre');
  await failsWith(master.api.tunnel.create(await pifOf(master, h2, 'eth1'), net2, 'vxlan'), 'OPERATION_NOT_ALLOWED');
  await master.api.tunnel.create(await pifOf(master, h2, 'eth1'), net2, 'gre');
  const key2 = (await master.api.tunnel.get_record(g1)).status.key;
  assert.notEqual(key2, key1);
  assert.deepEqual(await tunnelPorts(h2, bridge2), [{ type: 'gre', remote: transportIp(1), key: key2 }]);
  await addAddress(h1, bridge2, '192.168.72.1/24');
  await addAddress(h2, bridge2, '192.168.72.2/24');
  assert.equal(await reaches(h1, '192.168.72.2'), 5);

  // one subnet on two networks: h1's private-2 cannot reach h2's private-1 (h2 answers ARP only on the
  // bridge that has the address, as a guest would: else its kernel answers for all its bridges)
  assert.equal((await sh('ip', ['netns', 'exec', h2.ns, 'sysctl', '-qw', 'net.ipv4.conf.all.arp_ignore=1'])).code, 0);
  await addAddress(h1, bridge2, '192.168.73.1/24');
  await addAddress(h2, bridge1, '192.168.73.2/24');
  assert.equal(await ping(h1.ns, '192.168.73.2', 3, 0.2, 1), 0);
  await addAddress(h2, bridge2, '192.168.73.3/24');
  assert.equal(await reaches(h1, '192.168.73.3'), 5);
});

test('a host that joins gets the pool\'s tunnels (plugged once it runs; the others add it) and VLANs', async () => {
  // a VLAN of the pool, which the joining host gets too (xapi's sync_vlans)
  const vnet = await newNetwork(master, 'vlan-42');
  await master.api.VLAN.create(await pifOf(master, h1, 'eth1'), 42, vnet);
  const c3 = await h3.client();
  await configureTransport(c3, h3, 3);
  await c3.api.pool.join(h1.ip, 'root', ROOT_PASSWORD);
  await lab.restarted(h3);
  await allLive(master);
  const host3 = await hostRefOf(master, h3);
  const access = async (net: string): Promise<string | undefined> => {
    const pifs = await Promise.all((await master.api.network.get_PIFs(net)).map(async (p) => [p, await master.api.PIF.get_host(p)] as const));
    return pifs.find(([, h]) => h === host3)?.[0];
  };
  for (const net of [net1, net2]) {
    await until('h3\'s tunnel plugged', async () => {
      const a = await access(net);
      return a !== undefined && (await master.api.PIF.get_currently_attached(a));
    });
  }
  const vlanPif = (await access(vnet))!;
  assert.ok(vlanPif, 'h3 has a PIF on the VLAN network');
  const vlan = await master.api.VLAN.get_record(await master.api.PIF.get_VLAN_master_of(vlanPif));
  assert.equal(vlan.tag, 42);
  assert.equal(vlan.tagged_PIF, await pifOf(master, h3, 'eth1'));
  assert.equal(await master.api.PIF.get_VLAN(vlanPif), 42);
  const a1 = (await access(net1))!;
  const t = (await master.api.PIF.get_tunnel_access_PIF_of(a1))[0];
  assert.equal(await master.api.tunnel.get_protocol(t), 'vxlan');
  assert.equal(await master.api.PIF.get_device(a1), 'tunnel0');
  assert.equal(await master.api.tunnel.get_protocol((await master.api.PIF.get_tunnel_access_PIF_of((await access(net2))!))[0]), 'gre');
  await until('h1 has a port to h3', async () => (await tunnelPorts(h1, bridge1)).length === 2);
  assert.deepEqual((await tunnelPorts(h3, bridge1)).map((p) => p.remote).sort(), [transportIp(1), transportIp(2)]);
  await addAddress(h3, bridge1, '192.168.71.3/24');
  assert.equal(await reaches(h1, '192.168.71.3'), 5);
  assert.equal(await reaches(h3, '192.168.71.2'), 5);
});

test('placement follows the tunnels; a tunnel with a VIF in use stays', async () => {
  const [tref] = Object.keys(await master.api.VM.get_all_records_where('field "is_a_template" = "true"'));
  const vm = await master.api.VM.clone(tref, 'agile');
  await master.api.VM.set_is_a_template(vm, false);
  await master.api.VIF.create({ VM: vm, network: net1, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] } as never);
  const [r1, r2, r3] = await Promise.all([hostRefOf(master, h1), hostRefOf(master, h2), hostRefOf(master, h3)]);
  assert.deepEqual((await master.api.VM.get_possible_hosts(vm)).sort(), [r1, r2, r3].sort());

  // a network with a tunnel on h1 only
  const lonely = await newNetwork(master, 'h1-only');
  await master.api.tunnel.create(await pifOf(master, h1, 'eth1'), lonely, 'vxlan');
  const pinned = await master.api.VM.clone(vm, 'pinned');
  const [vif] = await master.api.VM.get_VIFs(pinned);
  await master.api.VIF.move(vif, lonely);
  assert.deepEqual(await master.api.VM.get_possible_hosts(pinned), [r1]);
  await failsWith(master.api.VM.start_on(pinned, r2, false, false), 'VM_REQUIRES_NETWORK');

  // a VM on h2 with its VIF on private-1: h2's tunnel cannot go while it runs
  await master.api.VM.start_on(vm, r2, false, false);
  const tap = (await ovs(h2, 'list-ports', bridge1)).split('\n').filter((p) => p.startsWith('xv'));
  assert.equal(tap.length, 1, 'the VIF\'s tap is on h2\'s bridge of the private network');
  const t2 = (await master.api.PIF.get_tunnel_access_PIF_of(await pifOf(master, h2, 'tunnel0')))[0];
  await failsWith(master.api.tunnel.destroy(t2), 'VIF_IN_USE');
  await master.api.VM.hard_shutdown(vm);
});

test('tunnel.destroy and PIF.unplug take the ports away, on the host and at the others; a VM starting brings them back', async () => {
  const p2 = await pifOf(master, h2, 'eth1');
  const access2 = await pifOf(master, h2, 'tunnel0');
  const t2 = (await master.api.PIF.get_tunnel_access_PIF_of(access2))[0];
  await master.api.tunnel.destroy(t2);
  assert.equal(await master.api.PIF.get_tunnel_transport_PIF_of(p2).then((l) => l.includes(t2)), false);
  await failsWith(master.api.PIF.get_record(access2), 'HANDLE_INVALID');
  assert.deepEqual(await tunnelPorts(h2, bridge1), []);
  assert.deepEqual((await tunnelPorts(h1, bridge1)).map((p) => p.remote), [transportIp(3)]);
  assert.equal(await ping(h1.ns, '192.168.71.2', 3, 0.2, 1), 0);
  assert.equal(await reaches(h1, '192.168.71.3'), 5);

  // unplugging h3's access PIF: its ports go and the tunnel says inactive; plugging brings them back
  const h3access = await pifOf(master, h3, 'tunnel0');
  const t3 = (await master.api.PIF.get_tunnel_access_PIF_of(h3access))[0];
  await master.api.PIF.unplug(h3access);
  assert.equal((await master.api.tunnel.get_status(t3)).active, 'false');
  assert.deepEqual(await tunnelPorts(h3, bridge1), []);
  assert.equal(await ping(h1.ns, '192.168.71.3', 3, 0.2, 1), 0);
  // a VM with a VIF on the network starting there brings it up (xapi's attach_for_vm)
  const [agile] = await master.api.VM.get_by_name_label('agile');
  await master.api.VM.start_on(agile, await hostRefOf(master, h3), false, false);
  assert.equal(await master.api.PIF.get_currently_attached(h3access), true);
  assert.equal((await master.api.tunnel.get_status(t3)).active, 'true');
  assert.equal(await reaches(h1, '192.168.71.3'), 5);
  await master.api.VM.hard_shutdown(agile);
  // and PIF.unplug / PIF.plug as such
  await master.api.PIF.unplug(h3access);
  await master.api.PIF.plug(h3access);
  assert.equal((await master.api.tunnel.get_status(t3)).active, 'true');
  assert.equal(await reaches(h1, '192.168.71.3'), 5);
});

test('xe tunnel-create, tunnel-list and tunnel-destroy', async () => {
  const xe = (...args: string[]) => runXe(['-s', h1.socket, '-u', 'root', '-pw', ROOT_PASSWORD, ...args]);
  const p2uuid = await master.api.PIF.get_uuid(await pifOf(master, h2, 'eth1'));
  const n1uuid = await master.api.network.get_uuid(net1);
  const created = await xe('tunnel-create', `pif-uuid=${p2uuid}`, `network-uuid=${n1uuid}`, 'protocol=vxlan');
  assert.equal(created.code, 0, created.stderr);
  const accessUuid = created.stdout.trim();
  assert.equal(await master.api.PIF.get_device(await master.api.PIF.get_by_uuid(accessUuid)), 'tunnel0');
  assert.equal(await reaches(h1, '192.168.71.2'), 5);
  const list = await xe('tunnel-list', `access-PIF=${accessUuid}`, '--minimal');
  assert.equal(list.code, 0, list.stderr);
  const uuid = list.stdout.trim();
  assert.match(uuid, /^[0-9a-f-]{36}$/);
  const destroyed = await xe('tunnel-destroy', `uuid=${uuid}`);
  assert.equal(destroyed.code, 0, destroyed.stderr);
  assert.equal((await xe('tunnel-list', `access-PIF=${accessUuid}`, '--minimal')).stdout.trim(), '');
  assert.equal(await ping(h1.ns, '192.168.71.2', 3, 0.2, 1), 0);
});

test('eject: the host\'s tunnels go with it, and the others\' ports to it', async () => {
  assert.deepEqual((await tunnelPorts(h1, bridge1)).map((p) => p.remote), [transportIp(3)]);
  const host3 = await hostRefOf(master, h3);
  await master.api.pool.eject(host3);
  await lab.restarted(h3, 2);
  assert.deepEqual(await tunnelPorts(h1, bridge1), []);
  // no tunnel is left pointing at a PIF that went
  const pifs = await master.api.PIF.get_all_records();
  for (const t of Object.values(await master.api.tunnel.get_all_records())) assert.ok(pifs[t.access_PIF] && pifs[t.transport_PIF]);
  assert.equal(Object.values(pifs).filter((p) => p.host === host3).length, 0);
});
