/**
 * VM_guest_metrics from a guest agent: the test guest runs a small agent
 * speaking the QEMU guest agent protocol on org.qemu.guest_agent.0; the
 * metrics tick asks it and fills the VM's guest metrics (os_version,
 * networks keyed by VIF device). Also the simulator's fixed report, and the
 * record outliving the VM's halt until its next start.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Ref, XenApiClient } from '../../src/client/client.ts';
import type { Plugin } from '../../src/server.ts';
import { xenopsPlugin } from '../../src/plugins.ts';
import { networkHandlers, vifHandlers } from '../../src/messages/network.ts';
import { guestMetricsFields, type Xenops } from '../../src/messages/vm-domains/index.ts';
import { SimBackend } from '../../src/xenops/sim/index.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { makeTestGuestVm, MARKER, waitSerial } from '../helpers/guest.ts';

/**
 * VIFs without the network subsystem: the NIC gets no backend (QEMU: a NIC
 * with no peer), enough for the guest to have an eth0 with the VIF's MAC.
 */
const unwiredNics: Plugin = {
  name: 'unwired-nics',
  start(services) {
    services.nics = { plug: async () => ({}), unplug: async () => undefined };
  },
};

async function waitGuestMetrics(c: XenApiClient, vm: Ref<'VM'>, ok: (gm: Awaited<ReturnType<XenApiClient['api']['VM_guest_metrics']['get_record']>>) => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ref = await c.api.VM.get_guest_metrics(vm);
    if (ref !== 'OpaqueRef:NULL') {
      const gm = await c.api.VM_guest_metrics.get_record(ref);
      if (ok(gm)) return { ref, gm };
    }
    if (Date.now() > deadline) throw new Error(`no guest metrics within ${timeoutMs} ms (VM.guest_metrics=${ref})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('the test guest\'s agent fills VM_guest_metrics (QEMU, TCG)', { timeout: 240_000 }, async () => {
  const t: TestServer = await startTestServer({ plugins: [unwiredNics, xenopsPlugin({ backend: 'qemu', accel: 'tcg', metricsIntervalMs: 1000 })] });
  try {
    const c = t.client;
    const vm = await makeTestGuestVm(c, 'guest-agent', 'stay', 'xenon.ip=10.9.8.7/24');
    const net = await c.api.network.create({ name_label: 'unwired', name_description: '', MTU: 1500, other_config: {}, tags: [] } as never);
    const vif = await c.api.VIF.create({ VM: vm, network: net, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] } as never);
    const mac = await c.api.VIF.get_MAC(vif);
    assert.equal(await c.api.VM.get_guest_metrics(vm), 'OpaqueRef:NULL');
    await c.api.VM.start(vm, false, false);
    await waitSerial(c, vm, MARKER);
    const { ref, gm } = await waitGuestMetrics(c, vm, (g) => !!g.os_version.name && !!g.networks['0/ip'], 60_000);
    assert.equal(gm.os_version.name?.startsWith('Xenon test guest'), true, JSON.stringify(gm.os_version));
    assert.equal(gm.os_version.distro, 'xenon-testguest');
    assert.match(gm.os_version.major ?? '', /^\d+$/);
    assert.match(gm.os_version.uname ?? '', /^6\.1\./);
    assert.equal(gm.networks['0/ip'], '10.9.8.7');
    assert.equal(gm.networks['0/ipv4/0'], '10.9.8.7');
    assert.ok(!Object.values(gm.networks).includes('127.0.0.1'), 'loopback is not reported');
    assert.equal(gm.other.hostname, 'xenon-testguest');
    assert.equal(gm.live, true);
    assert.equal(gm.PV_drivers_detected, true);
    assert.equal(gm.PV_drivers_up_to_date, true);
    assert.notEqual(gm.last_updated, '19700101T00:00:00Z');
    assert.ok(mac, 'the VIF has a MAC');
    await c.api.VM.hard_shutdown(vm);
    // as xapi: a halted VM keeps its guest metrics (no longer live) until it next starts
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(await c.api.VM.get_guest_metrics(vm), ref);
    assert.equal(await c.api.VM_guest_metrics.get_live(ref), false);
  } finally {
    for (const vm of await t.client.api.VM.get_all().catch(() => [])) {
      const rec = await t.client.api.VM.get_record(vm).catch(() => undefined);
      if (rec && !rec.is_control_domain && rec.power_state !== 'Halted') await t.client.api.VM.hard_shutdown(vm).catch(() => undefined);
    }
    await t.close();
  }
});

let sim: TestServer;
before(async () => {
  sim = await startTestServer({ plugins: [unwiredNics, xenopsPlugin({ backend: 'sim', metricsIntervalMs: 3_600_000 })] });
});
after(() => sim.close());

test('simulator: a running domain\'s agent report becomes VM_guest_metrics', async () => {
  const c = sim.client;
  const xenops = sim.server.services.xenops!;
  const [tpl] = await c.api.VM.get_by_name_label('Xenon test guest');
  const rec = await c.api.VM.get_record(tpl);
  const vm = await c.api.VM.create({ ...rec, name_label: 'sim-agent', is_a_template: false, is_default_template: false } as never);
  const net = await c.api.network.create({ name_label: 'n', MTU: 1500 } as never);
  const vif = await c.api.VIF.create({ VM: vm, network: net, device: '1', MAC: '' } as never);
  await c.api.VM.start(vm, false, false);
  const uuid = await c.api.VM.get_uuid(vm);
  const info = await xenops.backend.guestInfo!(uuid);
  assert.ok(info);
  assert.equal(info.osName, 'Debian GNU/Linux 12 (bookworm)');
  await xenops.sampleMetrics();
  const ref = await c.api.VM.get_guest_metrics(vm);
  assert.notEqual(ref, 'OpaqueRef:NULL');
  const gm = await c.api.VM_guest_metrics.get_record(ref);
  assert.deepEqual(gm.os_version, { name: 'Debian GNU/Linux 12 (bookworm)', distro: 'debian', major: '12', minor: '7', uname: '6.1.0-25-amd64' });
  const mac = (await c.api.VIF.get_MAC(vif)).toLowerCase();
  const nic = info.interfaces.find((i) => i.mac === mac)!;
  assert.equal(gm.networks['1/ip'], nic.ipv4[0]);
  assert.equal(gm.networks['1/ipv6/0'], nic.ipv6[0]);
  assert.equal(Object.keys(gm.networks).some((k) => k.startsWith('0/')), false, 'no VIF 0, nothing reported for it');
  assert.equal(gm.live, true);
  assert.equal(gm.PV_drivers_detected, true);
  // unchanged report: no write
  const before = gm.last_updated;
  await new Promise((r) => setTimeout(r, 1100));
  await xenops.sampleMetrics();
  assert.equal(await c.api.VM_guest_metrics.get_last_updated(ref), before);
  // paused: not asked, record kept; halted: kept (not live) until the next start
  await c.api.VM.pause(vm);
  assert.equal(await xenops.backend.guestInfo!(uuid), undefined);
  await xenops.sampleMetrics();
  assert.equal(await c.api.VM.get_guest_metrics(vm), ref);
  await c.api.VM.unpause(vm);
  await c.api.VM.hard_shutdown(vm);
  await xenops.sampleMetrics();
  assert.equal(await c.api.VM.get_guest_metrics(vm), ref);
  assert.equal(await c.api.VM_guest_metrics.get_live(ref), false);
  await c.api.VM.start(vm, false, false);
  assert.equal(await c.api.VM.get_guest_metrics(vm), 'OpaqueRef:NULL');
  assert.equal((await c.api.VM_guest_metrics.get_all()).includes(ref), false);
  await c.api.VM.hard_shutdown(vm);
});

test('guestMetricsFields: xapi keys, VIF devices by MAC, no loopback', () => {
  const f = guestMetricsFields({
    osName: 'Ubuntu 24.04 LTS', osVersion: '24.04', distro: 'ubuntu', kernel: '6.8.0-45-generic', hostname: 'web1',
    interfaces: [
      { name: 'lo', mac: '00:00:00:00:00:00', ipv4: ['127.0.0.1'], ipv6: ['::1'] },
      { name: 'ens3', mac: 'AA:BB:CC:00:00:01', ipv4: ['192.0.2.5', '192.0.2.6'], ipv6: ['2001:db8::5'] },
      { name: 'docker0', mac: '02:42:00:00:00:09', ipv4: ['172.17.0.1'], ipv6: [] },
    ],
    agentVersion: '8.2.2',
  }, new Map([['aa:bb:cc:00:00:01', '2']]));
  assert.deepEqual(f.os_version, { name: 'Ubuntu 24.04 LTS', distro: 'ubuntu', major: '24', minor: '04', uname: '6.8.0-45-generic' });
  assert.deepEqual(f.networks, { '2/ip': '192.0.2.5', '2/ipv4/0': '192.0.2.5', '2/ipv4/1': '192.0.2.6', '2/ipv6/0': '2001:db8::5' });
  assert.deepEqual(f.PV_drivers_version, { major: '8', minor: '2', micro: '2' });
  assert.equal(f.live, true);
});

test('simulator without an agent: no answer', async () => {
  const b = new SimBackend({ guestAgent: false });
  await b.start({ uuid: '00000000-0000-0000-0000-0000000000aa', name: 'x', vcpusMax: 1, vcpusAtStartup: 1, memoryBytes: 64 << 20, firmware: 'bios', bootOrder: 'c', platform: {}, disks: [], nics: [] }, { paused: false });
  assert.equal(await b.guestInfo('00000000-0000-0000-0000-0000000000aa'), undefined);
  await b.close();
});
